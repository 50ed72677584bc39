"""What every task kind provides to the trainer, the evaluator and the tools (the model side).

Nothing here imports TensorFlow: the train and eval steps, predict and the benchmarks run where it is
absent. The data side of a kind is its `TaskExamples` (tasks/examples.py).
"""
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from etils import epath
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivit_cofinetune.config_lib import ConfigError

# Normalisation of uint8 pixels when config.tasks.<name>.input sets no mean/std.
DEFAULT_MEAN = DEFAULT_STD = (0.5, 0.5, 0.5)


class DatasetInfo(NamedTuple):
  """What configs and tasks need to know about a task's dataset (data/pipeline.py reads it)."""
  num_classes: int
  class_names: list[str]
  num_train_examples: int
  train_class_counts: list[int] | None  # examples (localisation: actors) of each class
  class_ids: list[int] | None = None  # class ids as the dataset's CSVs write them (AVA: 1..80)
  # Files stored with the dataset that the eval split is scored against: 'groundtruth',
  # 'exclusions', ... -> their paths (one per part of a combined dataset such as
  # 'ava_v2_2+ava_kinetics'), as its builder recorded them.
  evaluation_files: dict[str, list[str]] | None = None
  # The class ids the official metric averages over, as the dataset records them (AVA: the 60 of
  # the frame-mAP list); None: every class.
  eval_class_ids: list[int] | None = None


class Forward(NamedTuple):
  """One forward pass: the head's logits and the backbone's tokens [B, t, h, w, D] and pooled
  token [B, D] (None for a backbone without one)."""
  logits: jax.Array
  tokens: jax.Array
  pooled: jax.Array | None


class Task:
  """A dataset with its head, loss and evaluation. Subclasses set `self.head` and the methods below."""

  head: nn.Module
  # Inputs besides the clip that the head reads (tools.predict asks for them): name -> the shape
  # expected, as a user reads it.
  PREDICTION_INPUTS: Mapping[str, str] = {}

  def __init__(self, name: str, config: ml_collections.ConfigDict, info: DatasetInfo | None = None):
    """Without `info` (no dataset read) the task knows only its config: enough to compile."""
    self.name = name
    self.config = config
    self.num_classes = config.num_classes
    # False: the task trains its head on the backbone's features but sends no gradient into the
    # backbone (a probe of frozen features, and the study's control for shared knowledge).
    self.trains_backbone = bool(config.get('trains_backbone', True))
    if info is not None:
      self.check_dataset(info)
    self.class_names = (list(info.class_names) if info and info.class_names
                        else [str(i) for i in range(self.num_classes)])
    self.train_class_counts = info.train_class_counts if info else None
    self.dataset_class_ids = list(info.class_ids) if info and info.class_ids else None
    self.evaluation_files = dict(info.evaluation_files or {}) if info else {}
    self.dataset_eval_class_ids = list(info.eval_class_ids) if info and info.eval_class_ids else None
    inputs = config.get('input', {})
    self._mean = np.asarray(inputs.get('mean', DEFAULT_MEAN), np.float32)
    self._std = np.asarray(inputs.get('std', DEFAULT_STD), np.float32)

  # Fields of config.tasks.<name> that only some kinds read: a task of another kind that sets one
  # is told so (field -> the kinds that read it, for the message).
  KIND_FIELDS: Mapping[str, str] = {'class_reduction': 'localisation',
                                    'eval_protocol': 'localisation'}

  @classmethod
  def check_config(cls, field: str, config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming `field`.<key> for a value this kind cannot use (before anything
    compiles); the base class rejects the fields of other kinds."""
    for key, kinds in cls.KIND_FIELDS.items():
      if key in config and key not in cls.OWN_FIELDS:
        raise ValueError(f'{field}.{key}: only {kinds} tasks have it; this task is '
                         f'{config.get("kind")!r}')

  # The kind-specific fields this kind reads (subclasses list theirs).
  OWN_FIELDS: tuple[str, ...] = ()

  def check_dataset(self, info: DatasetInfo) -> None:
    """Raises ConfigError naming the config field when the dataset does not fit the task."""
    if info.class_names and len(info.class_names) != self.num_classes:
      raise ConfigError(f'config.tasks.{self.name}.num_classes={self.num_classes} but the dataset '
                       f'has {len(info.class_names)} classes')

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

  def init_batch(self) -> dict[str, jax.Array]:
    """A batch of one example holding what `head_args` reads besides the backbone's outputs
    (zeros: only its shapes matter), to initialise the head."""
    return {}

  def head_args(self, tokens: jax.Array, cls_token: jax.Array | None,
                batch: Mapping[str, jax.Array]) -> tuple:
    """Positional inputs of `self.head` from the backbone outputs and the batch."""
    raise NotImplementedError

  def forward(self, backbone: nn.Module, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
              *, train: bool, rng: jax.Array | None = None) -> Forward:
    """The backbone, then this task's head, on `batch['video']`; params = {'backbone', 'head'}.

    The one forward pass of the train step, the eval step, tools.predict and tools.visualise.
    `rng` (training) seeds the backbone's and the head's dropout.
    """
    backbone_rngs = head_rngs = None
    if rng is not None:
      backbone_rng, head_rng = jax.random.split(rng)
      backbone_rngs, head_rngs = {'dropout': backbone_rng}, {'dropout': head_rng}
    tokens, pooled = backbone.apply({'params': params['backbone']},
                                    self.model_input(batch['video']), train=train,
                                    rngs=backbone_rngs)
    if not self.trains_backbone:
      tokens, pooled = jax.lax.stop_gradient((tokens, pooled))
    logits = self.head.apply({'params': params['head']}, *self.head_args(tokens, pooled, batch),
                             train=train, rngs=head_rngs)
    return Forward(logits, tokens, pooled)

  def loss_and_metrics(self, logits: jax.Array, batch: Mapping[str, jax.Array]
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
    raise NotImplementedError

  def probabilities(self, logits: jax.Array) -> jax.Array:
    """Class probabilities from logits [..., C] (softmax over the classes by default)."""
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

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
