"""What every task kind provides to the trainer and the evaluator."""
from collections.abc import Mapping, Sequence

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivit_cofinetune.config_lib import ConfigError
from vivit_cofinetune.data import pipeline


class Task:
  """A dataset with its head, loss and evaluation. Subclasses set `self.head` and the methods below."""

  head: nn.Module

  def __init__(self, name: str, config: ml_collections.ConfigDict, *,
               class_names: Sequence[str] | None = None,
               train_class_counts: Sequence[int] | None = None,
               class_ids: Sequence[int] | None = None,
               evaluation_files: Mapping[str, Sequence[str]] | None = None):
    """`class_ids` are the ids the dataset's files use; `evaluation_files` what evaluation reads."""
    self.name = name
    self.config = config
    self.num_classes = config.num_classes
    self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
    if len(self.class_names) != self.num_classes:
      raise ConfigError(f'config.tasks.{name}.num_classes={self.num_classes} but the dataset has '
                        f'{len(self.class_names)} classes')
    self.train_class_counts = train_class_counts
    self.dataset_class_ids = list(class_ids) if class_ids else None
    self.evaluation_files = dict(evaluation_files or {})
    inputs = config.get('input', {})
    self._mean, self._std = (np.asarray(inputs.get(key, pipeline.INPUT_DEFAULTS[key]), np.float32)
                             for key in ('mean', 'std'))

  def model_input(self, video: jax.Array) -> jax.Array:
    """The backbone's input: uint8 pixels [..., 3] normalised on the device with the task's mean/std.

    Float clips are taken as normalised already (tools and tests that build clips by hand).
    """
    if video.dtype != jnp.uint8:
      return video
    return (video.astype(jnp.float32) / 255.0 - self._mean) / self._std

  def train_batch_shapes(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Shape and dtype of every array of a global training batch (compiling without data)."""
    inputs = self.config.input
    clip = (batch_size, inputs.num_frames, inputs.crop_size, inputs.crop_size, 3)
    return {'video': jax.ShapeDtypeStruct(clip, jnp.uint8),
            'mask': jax.ShapeDtypeStruct((batch_size,), jnp.bool_)}

  def head_args(self, tokens: jax.Array, cls_token: jax.Array | None,
                batch: Mapping[str, jax.Array]) -> tuple:
    """Positional inputs of `self.head` from the backbone outputs and the batch."""
    raise NotImplementedError

  def loss_and_metrics(self, logits: jax.Array, batch: Mapping[str, jax.Array]
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError

  def eval_outputs(self, logits: jax.Array, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-example arrays the evaluation needs, gathered to the host after every eval batch."""
    raise NotImplementedError

  def evaluate(self, outputs: Mapping[str, np.ndarray], *, video_ids: Sequence[str],
               output_dir: epath.Path | None) -> dict[str, float]:
    """Aggregates the outputs of the whole eval split into the task's metrics."""
    raise NotImplementedError

  def pictures(self, examples: Mapping[str, np.ndarray],
               metrics: Mapping[str, float]) -> dict[str, np.ndarray]:
    """TensorBoard images [N, H, W, 3] uint8 by name, from a few eval examples and the metrics.

    `examples` holds the eval outputs of the first examples plus their `keyframe` [K, H, W, 3] in
    [0, 1]. Tasks without pictures return {}.
    """
    del examples, metrics
    return {}
