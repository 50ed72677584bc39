"""The data side of a task kind: how a dataset's records become training and evaluation examples.

data/pipeline.py reads records, batches them and shards them over hosts; everything that differs by
kind (which frames a training clip takes, its targets and how a flip moves them, the evaluation views,
what the training set is described by) is a method of the kind's `TaskExamples`. The model side of a
kind (tasks/base.py) imports no TensorFlow; this module and its subclasses run inside tf.data.
"""
from collections.abc import Mapping
import dataclasses
from typing import Any, Callable, NamedTuple

import tensorflow as tf

from vivit_cofinetune.data import video_ops

Example = dict[str, tf.Tensor]


class FrameReader(NamedTuple):
  """How a dataset stores its frames: open a record's video, its (T, H, W), and read cropped frames.

  read(video, indices, window) -> uint8 [len(indices), h, w, 3] for the pixel window (y0, x0, h, w).
  """
  open: Callable[[tf.Tensor], tf.Tensor]
  size: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]
  read: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class DatasetSource:
  """What a task's examples know about its dataset: how to read frames, and what it stored.

  split_metadata(split) is what the builder wrote about a whole split at build time ({} for a slice).
  """
  reader: FrameReader
  flip_permutation: tuple[int, ...]
  mirror_symmetric: bool
  split_metadata: Callable[[str], Mapping[str, Any]]


def pad_rows(values: tf.Tensor, rows: int) -> tf.Tensor:
  """First `rows` rows of values [N, ...], zero-padded to exactly `rows`."""
  values = values[:rows]
  padding = [[0, rows - tf.shape(values)[0]]] + [[0, 0]] * (len(values.shape) - 1)
  padded = tf.pad(values, padding)
  return tf.ensure_shape(padded, [rows] + values.shape[1:])


class TaskExamples:
  """Training and evaluation examples of one task; subclasses implement the kind-specific parts.

  `settings` is the pipeline's reading of config.tasks.<name> (common input fields, defaults filled);
  `task_config` the task's config itself, for the fields only this kind reads.
  """

  # Whether dataset_info counts the training split's examples per class (stored at build time, else
  # read from the labels): kinds whose evaluation reports by class frequency need them.
  counts_train_classes: bool = False

  def __init__(self, settings: Any, task_config: Any, source: DatasetSource):
    self.settings = settings
    self.task_config = task_config
    self.source = source
    self.flips = settings.flip and source.mirror_symmetric

  # Training

  def train_frame_indices(self, example: Example, time_seed: tf.Tensor,
                          length: tf.Tensor) -> tf.Tensor:
    """Indices [num_frames] of the frames a training clip takes from its video of `length`."""
    raise NotImplementedError

  def train_targets(self, example: Example, *, flip: tf.Tensor, window: tf.Tensor,
                    height: tf.Tensor, width: tf.Tensor) -> Example:
    """The targets of a training clip cropped to `window` of its (height, width) frames, and
    mirrored when `flip`: whatever the kind's loss reads besides `video` and `mask`."""
    raise NotImplementedError

  def train_example(self, example: Example, seed: tf.Tensor) -> Example:
    """One augmented training example: a clip in time, a random crop, a random flip that also
    moves every target (boxes, left/right classes)."""
    settings, reader = self.settings, self.source.reader
    time_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    video = reader.open(example['video'])
    length, height, width = reader.size(video)
    indices = self.train_frame_indices(example, time_seed, length)
    window = video_ops.random_crop_window(crop_seed, height, width,
                                          (settings.min_crop_area, settings.max_crop_area))
    video = video_ops.resize_uint8(reader.read(video, indices, window), settings.crop_size)
    flip = video_ops.random_flip(flip_seed) if self.flips else tf.constant(False)
    video = tf.cond(flip, lambda: video_ops.flip_video(video), lambda: video)
    targets = self.train_targets(example, flip=flip, window=window, height=height, width=width)
    return dict(targets, video=video, mask=tf.constant(True))

  def flipped_classes(self, labels: tf.Tensor, flip: tf.Tensor, axis: int = -1) -> tf.Tensor:
    """Multi-hot `labels` with each left/right class moved to its pair where `flip`."""
    permutation = tf.constant(self.source.flip_permutation, tf.int32)
    return tf.cond(flip, lambda: tf.gather(labels, permutation, axis=axis), lambda: labels)

  def describe_training_set(self) -> None:
    """Logs what a user should know about the training split before training (nothing by default)."""

  # Evaluation

  @property
  def num_eval_views(self) -> int:
    """Evaluation examples per record (each a view the kind's evaluation aggregates)."""
    return 1

  def eval_views(self, video_index: tf.Tensor, example: Example) -> Example:
    """The evaluation examples of one record, each array with a leading axis of num_eval_views."""
    raise NotImplementedError
