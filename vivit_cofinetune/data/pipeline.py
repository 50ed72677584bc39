"""Per-task tf.data input pipelines: host-local numpy batches for training and evaluation.

Records come from TFDS builders with these features:
- classification: `video`, `label` int (or multi-hot bool [C] for multi-label sets, whose class names
  are then in the metadata), `video_id` text.
- localisation: `video`, `keyframe_index` int, `video_id` text, `timestamp` int, `gt_boxes` [M, 4]
  (y1, x1, y2, x2 in [0, 1]), `gt_labels` bool multi-hot [M, C], `detector_boxes` [K, 4],
  `detector_scores` [K].
`video` is either a sequence of JPEG-encoded frames (the release builders; only the sampled frames are
decoded, and only their crop) or a uint8 tensor [T, H, W, 3] (the synthetic sets).
Batches follow the data contract of DESIGN.md, except that `video` stays uint8 on the host: the
compiled step normalises it on the device (a quarter of the bytes to move). Training is deterministic
given (seed, dataset, host): every example's augmentation is seeded from its ordinal in the host's
example stream, so resuming at batch n reproduces the uninterrupted stream exactly. How the stream is
read (by index for ArrayRecord, so a resume reads nothing it skips; sequentially for TFRecord) is
data/records.py's job.
"""
import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterator, NamedTuple

from absl import logging
from etils import epath
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune.config_lib import INPUT_DEFAULTS
from vivit_cofinetune.data import concatenated
from vivit_cofinetune.data import records
from vivit_cofinetune.data import sequence_examples
from vivit_cofinetune.data import video_ops
from vivit_cofinetune.data.builders import ava as ava_builders
from vivit_cofinetune.data.builders import synthetic

# The input pipeline runs on the host's CPUs; the accelerators belong to JAX.
tf.config.set_visible_devices([], 'GPU')

Batch = dict[str, np.ndarray]

_EVAL_RESIZES = ('letterbox', 'stretch')
# Builders that render their data on first use (nothing to download or prepare by hand).
_RENDERED_BUILDERS = (synthetic.SyntheticActionsCls, synthetic.SyntheticActionsLoc)


@dataclasses.dataclass(frozen=True)
class _Settings:
  """The fields of a task config that the pipeline reads, with defaults filled in."""
  task: str
  kind: str
  dataset: str
  # SequenceExample files instead of a TFDS dataset (data/sequence_examples.py); None for TFDS.
  sequence_example_files: dict[str, Any] | None
  train_split: str
  eval_split: str
  batch_size: int
  eval_batch_size: int
  num_classes: int | None
  max_boxes: int
  num_frames: int
  frame_stride: int
  crop_size: int
  min_crop_area: float
  max_crop_area: float
  flip: bool
  num_test_clips: int
  num_test_crops: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  shuffle_buffer: int
  temporal_jitter: int
  min_box_visible: float
  detector_score_threshold: float
  eval_resize: str


def _settings(task_config: Any) -> _Settings:
  """Reads and checks the task config; errors name the config field."""
  task = task_config.get('name', '<name>')
  where = f'config.tasks.{task}'

  def required(config, field, prefix):
    value = config.get(field)
    if value is None:
      raise ValueError(f'{prefix}.{field} is required by the input pipeline but is not set.')
    return value

  kind = required(task_config, 'kind', where)  # a known kind: config_checks.validate_config
  dataset = required(task_config, 'dataset', where)
  inputs = required(task_config, 'input', where)
  optional = {field: inputs.get(field, default) for field, default in INPUT_DEFAULTS.items()}
  frame_stride = int(required(inputs, 'frame_stride', f'{where}.input'))
  if optional['temporal_jitter'] is None:
    optional['temporal_jitter'] = frame_stride
  batch_size = int(required(task_config, 'batch_size', where))
  # Only localisation batches carry boxes; their count per example is fixed by the config.
  max_boxes = int(required(task_config, 'max_boxes', where)) if kind == 'localisation' else 0
  return _Settings(
      task=task, kind=kind,
      dataset=required(dataset, 'name', f'{where}.dataset'),
      sequence_example_files=_sequence_example_files(dataset, task_config, where),
      train_split=dataset.get('train_split', 'train'),
      eval_split=dataset.get('eval_split', 'validation'),
      batch_size=batch_size,
      eval_batch_size=int(task_config.get('eval_batch_size', None) or batch_size),
      num_classes=task_config.get('num_classes', None),
      max_boxes=max_boxes,
      num_frames=int(required(inputs, 'num_frames', f'{where}.input')),
      frame_stride=frame_stride,
      crop_size=int(required(inputs, 'crop_size', f'{where}.input')),
      min_crop_area=float(optional['min_crop_area']),
      max_crop_area=float(optional['max_crop_area']),
      flip=bool(optional['flip']),
      num_test_clips=int(optional['num_test_clips']),
      num_test_crops=int(optional['num_test_crops']),
      mean=tuple(optional['mean']), std=tuple(optional['std']),
      shuffle_buffer=int(optional['shuffle_buffer']),
      temporal_jitter=int(optional['temporal_jitter']),
      min_box_visible=float(optional['min_box_visible']),
      detector_score_threshold=float(optional['detector_score_threshold']),
      eval_resize=_choice(optional['eval_resize'], _EVAL_RESIZES, f'{where}.input.eval_resize'))


def _sequence_example_files(dataset: Any, task_config: Any, where: str) -> dict[str, Any] | None:
  """The fields of a SequenceExample dataset, or None for a TFDS one; errors name the field."""
  dataset_format = dataset.get('format', 'tfds')
  if dataset_format == 'tfds':
    return None
  if dataset_format != sequence_examples.FORMAT:
    raise ValueError(f"{where}.dataset.format={dataset_format!r}: expected 'tfds' or "
                     f"'{sequence_examples.FORMAT}'")
  files = dataset.get('files')
  if not files:
    raise ValueError(f'{where}.dataset.files: expected split -> file pattern for format '
                     f'{sequence_examples.FORMAT!r}')
  return dict(files=dict(files), num_examples=dict(dataset.get('num_examples', None) or {}),
              class_names=dataset.get('class_names', None),
              num_classes=int(task_config.get('num_classes')))


def _choice(value: str, choices: tuple[str, ...], field: str) -> str:
  if value not in choices:
    raise ValueError(f'{field}={value!r}: expected one of {choices}')
  return value


def _builder(settings: _Settings, data_dir: str) -> Any:
  """The task's TFDS builder, its data prepared (a no-op when it already is), or its SequenceExamples."""
  if settings.sequence_example_files:
    return _sequence_example_dataset(settings.dataset, **settings.sequence_example_files)
  builders = []
  for name in settings.dataset.split(concatenated.SEPARATOR):
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
      raise ValueError(f'config.tasks.{settings.task}.dataset.name={settings.dataset!r}: {name!r} is '
                       f'not a known TFDS builder: {error}') from error
    builder.download_and_prepare()
    builders.append(builder)
  return builders[0] if len(builders) == 1 else concatenated.ConcatenatedDatasets(builders)


def _sequence_example_dataset(name: str, *, files: dict, num_examples: dict,
                              class_names: Any, num_classes: int
                              ) -> sequence_examples.SequenceExampleFiles:
  # One object per dataset and process, so that counted file sizes are counted once.
  key = (name, tuple(sorted(files.items())), tuple(sorted(num_examples.items())),
         tuple(class_names or ()), num_classes)
  if key not in _SEQUENCE_EXAMPLE_DATASETS:
    _SEQUENCE_EXAMPLE_DATASETS[key] = sequence_examples.SequenceExampleFiles(
        name, files, num_classes=num_classes, class_names=class_names, num_examples=num_examples)
  return _SEQUENCE_EXAMPLE_DATASETS[key]


_SEQUENCE_EXAMPLE_DATASETS = {}


def _class_names(builder: tfds.core.DatasetBuilder) -> list[str]:
  """Class names from the dataset's metadata, else from its `label` ClassLabel."""
  if 'class_names' in builder.info.metadata:
    return list(builder.info.metadata['class_names'])
  return list(builder.info.features['label'].names)


def _split_metadata(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, Any]:
  """What the builder wrote about a whole split at build time ({} for a slice like 'train[:10%]')."""
  if '[' in split:
    return {}
  return dict(builder.info.metadata.get('splits', {}).get(split, {}))


class DatasetInfo(NamedTuple):
  """What configs and tasks need to know about a task's dataset."""
  num_classes: int
  class_names: list[str]
  num_train_examples: int
  train_class_counts: list[int] | None  # actors carrying each class (localisation only)
  class_ids: list[int] | None = None  # class ids as the dataset's CSVs write them (AVA: 1..80)
  # Files stored with the dataset that evaluation scores against: 'groundtruth', 'exclusions' ->
  # their paths (one per part of a combined dataset such as 'ava_v2_2+ava_kinetics').
  evaluation_files: dict[str, list[str]] | None = None


def _evaluation_files(builder: Any, split: str) -> dict[str, list[str]]:
  """The official evaluation files the release builders store beside dataset_info.json."""
  if isinstance(builder, concatenated.ConcatenatedDatasets):
    parts = builder.builders
  elif isinstance(builder, tfds.core.DatasetBuilder):
    parts = [builder]
  else:
    parts = []  # SequenceExample files carry none
  files = {}
  for key, template in (('groundtruth', ava_builders.GROUNDTRUTH_FILE),
                        ('exclusions', ava_builders.EXCLUSIONS_FILE)):
    paths = [epath.Path(part.data_dir) / template.format(split=split) for part in parts]
    if paths and all(path.exists() for path in paths):
      files[key] = [os.fspath(path) for path in paths]
  return files


def dataset_info(task_config: Any, data_dir: str) -> DatasetInfo:
  """Classes, training-set sizes and evaluation files of the task's dataset (prepares it if needed).

  Release builders store all of it at build time; only the synthetic sets' class counts are counted
  here, by reading the split's labels.
  """
  settings = _settings(task_config)
  builder = _builder(settings, data_dir)
  names = _class_names(builder)
  counts = None
  if settings.kind == 'localisation':
    counts = _split_metadata(builder, settings.train_split).get('class_counts') or _class_counts(
        settings.dataset, data_dir, settings.train_split, len(names))
  evaluation_files = _evaluation_files(builder, settings.eval_split.partition('[')[0])
  class_ids = builder.info.metadata.get('class_ids')
  return DatasetInfo(num_classes=len(names), class_names=names,
                     num_train_examples=builder.info.splits[settings.train_split].num_examples,
                     train_class_counts=counts, class_ids=list(class_ids) if class_ids else None,
                     evaluation_files=evaluation_files or None)


@functools.lru_cache(maxsize=None)
def _class_counts(dataset: str, data_dir: str, split: str, num_classes: int) -> list[int]:
  """Examples (or actors) per class in `split`, reading the labels only (cached: it reads a split)."""
  builder = tfds.builder(dataset, data_dir=data_dir)
  label_key = 'gt_labels' if 'gt_labels' in builder.info.features else 'label'
  labels = records.read_sequential(builder, split, shuffle_seed=None,
                                   decoders=tfds.decode.PartialDecoding({label_key: True}))
  counts = np.zeros(num_classes, np.int64)
  for example in labels.as_numpy_iterator():
    labels = example[label_key]
    counts += labels.sum(axis=0) if labels.ndim else np.bincount([labels], minlength=num_classes)
  return counts.tolist()


def known_datasets(config: Any) -> dict[str, bool]:
  """Dataset name -> whether it can be loaded: registered with TFDS, and prepared or self-rendering."""
  known = {}
  for task_config in config.tasks.values():
    name = task_config.dataset.name
    if task_config.dataset.get('format', 'tfds') == sequence_examples.FORMAT:
      known[name] = all(tf.io.gfile.glob(pattern)
                        for pattern in task_config.dataset.get('files', {}).values())
      continue
    known[name] = True
    for part in name.split(concatenated.SEPARATOR):
      try:
        builder = tfds.builder(part, data_dir=config.data_dir)
      except tfds.core.registered.DatasetNotFoundError:
        known[name] = False
        continue
      known[name] &= builder.is_prepared() or isinstance(builder, _RENDERED_BUILDERS)
  return known


def _flips(builder: tfds.core.DatasetBuilder, settings: '_Settings') -> bool:
  """Whether training flips clips: the config asks, and the dataset's classes are mirror-symmetric
  (Something-Something's "from left to right" are not: its metadata says so)."""
  return settings.flip and builder.info.metadata.get('mirror_symmetric', True)


def _flip_permutation(builder: tfds.core.DatasetBuilder) -> list[int]:
  """Class c of a flipped clip is class permutation[c]: datasets may name left/right pairs to swap."""
  names = _class_names(builder)
  permutation = list(range(len(names)))
  for pair in builder.info.metadata.get('flip_label_pairs', []):
    left, right = (names.index(name) for name in pair)
    permutation[left], permutation[right] = right, left
  return permutation


class _FrameReader(NamedTuple):
  """How a dataset stores its frames: open a record's video, its (T, H, W), and read cropped frames.

  read(video, indices, window) -> uint8 [len(indices), h, w, 3] for the pixel window (y0, x0, h, w).
  """
  open: Callable[[tf.Tensor], tf.Tensor]
  size: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]
  read: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def _frame_reader(builder: tfds.core.DatasetBuilder) -> _FrameReader:
  feature = builder.info.features['video']
  if isinstance(feature, tfds.features.Sequence):
    # JPEG frames: only the sampled frames are decoded, and of those only the crop window.
    def jpeg_size(frames):
      shape = tf.image.extract_jpeg_shape(frames[0])
      return tf.shape(frames)[0], shape[0], shape[1]

    def jpeg_read(frames, indices, window):
      return tf.map_fn(lambda frame: tf.image.decode_and_crop_jpeg(frame, window, channels=3),
                       tf.gather(frames, indices),
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))

    return _FrameReader(open=lambda frames: frames, size=jpeg_size, read=jpeg_read)
  # A uint8 tensor (the synthetic sets, a few KB a clip) is decoded whole.
  return _FrameReader(
      open=feature.decode_example,
      size=lambda video: (tf.shape(video)[0], tf.shape(video)[1], tf.shape(video)[2]),
      read=lambda video, indices, window: video_ops.crop_video(tf.gather(video, indices), window))


def _host_batch_size(global_batch: int) -> int:
  # config_checks.validate_config made every global batch a multiple of the host count.
  return global_batch // jax.process_count()


def _pad_rows(values: tf.Tensor, rows: int) -> tf.Tensor:
  """First `rows` rows of values [N, ...], zero-padded to exactly `rows`."""
  values = values[:rows]
  padding = [[0, rows - tf.shape(values)[0]]] + [[0, 0]] * (len(values.shape) - 1)
  padded = tf.pad(values, padding)
  return tf.ensure_shape(padded, [rows] + values.shape[1:])


def _to_crop(video: tf.Tensor, settings: _Settings) -> tf.Tensor:
  """Video uint8 [T, crop, crop, 3], bilinearly resized (normalised later, on the device)."""
  return video_ops.resize_uint8(video, settings.crop_size)


def _round_to_uint8(video: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.round(tf.clip_by_value(video, 0.0, 255.0)), tf.uint8)


def _train_example(example: dict[str, tf.Tensor], seed: tf.Tensor, settings: _Settings,
                   reader: _FrameReader, flips: bool,
                   flip_permutation: list[int]) -> dict[str, tf.Tensor]:
  """One augmented training example of either task kind; a flip also swaps left/right classes."""
  time_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  video = reader.open(example['video'])
  length, height, width = reader.size(video)
  if settings.kind == 'classification':
    start = video_ops.random_clip_start(time_seed, length, settings.num_frames, settings.frame_stride)
    pad_mode = 'loop'
  else:
    jitter = video_ops.random_jitter(time_seed, settings.temporal_jitter)
    start = video_ops.keyframe_clip_start(example['keyframe_index'], settings.num_frames,
                                          settings.frame_stride, jitter)
    pad_mode = 'clamp'
  indices = video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride, pad_mode)
  window = video_ops.random_crop_window(crop_seed, height, width,
                                        (settings.min_crop_area, settings.max_crop_area))
  video = _to_crop(reader.read(video, indices, window), settings)
  flip = video_ops.random_flip(flip_seed) if flips else tf.constant(False)
  video = tf.cond(flip, lambda: video_ops.flip_video(video), lambda: video)
  flip_permutation = tf.constant(flip_permutation, tf.int32)
  if settings.kind == 'classification':
    if example['label'].shape.rank == 1:  # multi-hot [C]: a flip moves each class to its pair
      label = tf.cast(example['label'], tf.float32)
      label = tf.cond(flip, lambda: tf.gather(label, flip_permutation), lambda: label)
    else:
      label = tf.cast(example['label'], tf.int32)
      label = tf.where(flip, tf.gather(flip_permutation, label), label)
    return {'video': video, 'label': label, 'mask': tf.constant(True)}
  boxes, keep = video_ops.crop_boxes(example['gt_boxes'], window, height, width,
                                     settings.min_box_visible)
  boxes = tf.cond(flip, lambda: video_ops.flip_boxes(boxes), lambda: boxes)
  labels = tf.cast(example['gt_labels'], tf.float32)
  labels = tf.cond(flip, lambda: tf.gather(labels, flip_permutation, axis=1), lambda: labels)
  return {'video': video, 'mask': tf.constant(True),
          'boxes': _pad_rows(boxes, settings.max_boxes),
          'box_mask': _pad_rows(keep, settings.max_boxes),
          'labels': _pad_rows(labels, settings.max_boxes)}


def _parallel_calls() -> int:
  """tf.data map parallelism: the host's cores (autotuning is off, see _read)."""
  return max(1, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else
             os.cpu_count() or 1)


def _log_crowded_keyframes(builder: tfds.core.DatasetBuilder, settings: _Settings) -> None:
  """Says how many training keyframes hold more people than max_boxes (their extra boxes are cut)."""
  people = _split_metadata(builder, settings.train_split).get('people_per_keyframe')
  if settings.kind != 'localisation' or not people:
    return
  crowded = sum(people[settings.max_boxes + 1:])
  if crowded:
    logging.warning('config.tasks.%s: %d of %d training keyframes have more than max_boxes=%d '
                    'people (up to %d); training sees only the first %d boxes of each.',
                    settings.task, crowded, sum(people), settings.max_boxes, len(people) - 1,
                    settings.max_boxes)


def train_iterator(task_config: Any, *, data_dir: str, seed: int,
                   start_batch: int = 0) -> Iterator[Batch]:
  """Infinite iterator of this host's training batches, starting at batch `start_batch`.

  Per-host batch = task_config.batch_size // jax.process_count(); each host reads its own shard.
  """
  settings = _settings(task_config)
  builder = _builder(settings, data_dir)
  _log_crowded_keyframes(builder, settings)
  host_batch = _host_batch_size(settings.batch_size)
  host_seed = int(np.random.SeedSequence([seed, jax.process_index()]).generate_state(1)[0] >> 1)
  ordered = records.train_stream(builder, settings.train_split, seed=host_seed,
                                 host=jax.process_index(), num_hosts=jax.process_count(),
                                 start_position=start_batch * host_batch,
                                 shuffle_buffer=settings.shuffle_buffer)
  reader = _frame_reader(builder)
  flips, flip_permutation = _flips(builder, settings), _flip_permutation(builder)

  def preprocess(ordinal, example):
    example_seed = tf.stack([tf.constant(host_seed, tf.int64), ordinal])
    return _train_example(example, example_seed, settings, reader, flips, flip_permutation)

  batches = ordered.map(preprocess, num_parallel_calls=_parallel_calls(), deterministic=True)
  batches = batches.batch(host_batch, drop_remainder=True).prefetch(2)
  return batches.as_numpy_iterator()


def _classification_views(example: dict[str, tf.Tensor], settings: _Settings,
                          reader: _FrameReader) -> tf.Tensor:
  """The evaluation views [clips * crops, T, crop, crop, 3] of one video, clip-major."""
  video = reader.open(example['video'])
  length, height, width = reader.size(video)
  starts = video_ops.evenly_spaced_clip_starts(length, settings.num_frames, settings.frame_stride,
                                               settings.num_test_clips)
  windows = video_ops.spatial_crop_windows(height, width, settings.num_test_crops)
  views = []
  for clip in range(settings.num_test_clips):
    indices = video_ops.clip_indices(length, starts[clip], settings.num_frames,
                                     settings.frame_stride, 'loop')
    for crop in range(settings.num_test_crops):
      views.append(_to_crop(reader.read(video, indices, windows[crop]), settings))
  return tf.stack(views)


def eval_frames(frames: tf.Tensor, *, crop_size: int, mean: tuple[float, ...],
                eval_resize: str = 'letterbox') -> tuple[tf.Tensor, tf.Tensor]:
  """Whole eval frames uint8 [T, crop_size, crop_size, 3], and where the picture lies on them.

  'letterbox' keeps the aspect ratio (the long side fits, the rest is the mean colour, which the
  device normalises to 0); 'stretch' resizes to the square. The placement [4] (y0, x0, h, w) in [0, 1]
  maps frame boxes onto the model input. Public so that tools/visualise.py prepares a video's frames
  exactly as localisation evaluation does.
  """
  if eval_resize == 'stretch':
    return video_ops.resize_uint8(frames, crop_size), tf.constant([0.0, 0.0, 1.0, 1.0])
  pad_value = tuple(255.0 * value for value in mean)
  video, placement = video_ops.letterbox(frames, crop_size, pad_value)
  return _round_to_uint8(video), placement


def _eval_example(video_index: tf.Tensor, example: dict[str, tf.Tensor], settings: _Settings,
                  reader: _FrameReader, eval_boxes: int) -> dict[str, tf.Tensor]:
  """One evaluation example; classification examples carry a leading view axis [V, ...].

  Localisation keeps every detection above the score threshold (eval_boxes is the most any keyframe
  of the split has): `boxes` on the model input, `frame_boxes` on the original frame for the CSV.
  """
  video_index = tf.cast(video_index, tf.int32)
  if settings.kind == 'classification':
    num_views = settings.num_test_clips * settings.num_test_crops
    if example['label'].shape.rank == 1:  # multi-hot [C]
      label = tf.tile(tf.cast(example['label'], tf.float32)[None], [num_views, 1])
    else:
      label = tf.fill([num_views], tf.cast(example['label'], tf.int32))
    return {'video': _classification_views(example, settings, reader),
            'label': label,
            'video_index': tf.fill([num_views], video_index),
            'view_index': tf.range(num_views, dtype=tf.int32),
            'mask': tf.ones([num_views], tf.bool)}
  video = reader.open(example['video'])
  length, height, width = reader.size(video)
  start = video_ops.keyframe_clip_start(example['keyframe_index'], settings.num_frames,
                                        settings.frame_stride)
  indices = video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride, 'clamp')
  # The whole frame goes in (no crop), so that no detection is cut off.
  video, placement = eval_frames(reader.read(video, indices, tf.stack([0, 0, height, width])),
                                 crop_size=settings.crop_size, mean=settings.mean,
                                 eval_resize=settings.eval_resize)
  confident = example['detector_scores'] >= settings.detector_score_threshold
  scores = tf.boolean_mask(example['detector_scores'], confident)
  order = tf.argsort(scores, direction='DESCENDING', stable=True)
  frame_boxes = tf.gather(tf.boolean_mask(example['detector_boxes'], confident), order)
  scores = tf.gather(scores, order)
  return {'video': video, 'mask': tf.constant(True), 'video_index': video_index,
          'timestamp': tf.cast(example['timestamp'], tf.int32),
          'boxes': _pad_rows(video_ops.place_boxes(frame_boxes, placement), eval_boxes),
          'frame_boxes': _pad_rows(frame_boxes, eval_boxes),
          'box_mask': _pad_rows(tf.ones_like(scores, tf.bool), eval_boxes),
          'box_scores': _pad_rows(scores, eval_boxes),
          'gt_boxes': _pad_rows(example['gt_boxes'], eval_boxes),
          'gt_box_mask': _pad_rows(tf.ones(tf.shape(example['gt_boxes'])[:1], tf.bool), eval_boxes),
          'gt_labels': _pad_rows(tf.cast(example['gt_labels'], tf.float32), eval_boxes)}


def _padding_example(element_spec: dict[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
  """An example to fill the last batches: zeros, mask False, indices -1 (never a real example)."""
  padding = {key: tf.zeros(spec.shape, spec.dtype) for key, spec in element_spec.items()}
  for key in ('video_index', 'view_index'):
    if key in padding:
      padding[key] = tf.fill(element_spec[key].shape, -1)
  return padding


@dataclasses.dataclass(frozen=True)
class EvalInput:
  """A task's evaluation input on this host.

  num_batches: batches per host, the same on every host (short hosts pad with mask=False examples).
  batches(): a fresh iterator over them.
  video_ids: video_index -> the example's video_id, over the whole eval split (all hosts).
  """
  num_batches: int
  batches: Callable[[], Iterator[Batch]]
  _read_video_ids: Callable[[], list[str]]

  @functools.cached_property
  def video_ids(self) -> list[str]:
    return self._read_video_ids()


def _eval_boxes(builder: tfds.core.DatasetBuilder, settings: _Settings) -> int:
  """Box rows per eval example: enough for every detection and person of any keyframe of the split."""
  stored = _split_metadata(builder, settings.eval_split)
  people = len(stored.get('people_per_keyframe', [])) - 1
  return max(settings.max_boxes, stored.get('max_detections', 0), people)


def eval_input(task_config: Any, *, data_dir: str) -> EvalInput:
  """The task's evaluation input: every example once (classification: once per view), padded."""
  settings = _settings(task_config)
  builder = _builder(settings, data_dir)
  host_batch = _host_batch_size(settings.eval_batch_size)
  host, num_hosts = jax.process_index(), jax.process_count()
  sizes = records.eval_sizes(builder, settings.eval_split, num_hosts)
  num_views = settings.num_test_clips * settings.num_test_crops if settings.kind == 'classification' else 1
  num_batches = math.ceil(max(sizes) * num_views / host_batch)
  reader = _frame_reader(builder)
  eval_boxes = _eval_boxes(builder, settings)

  def batches() -> Iterator[Batch]:
    share = records.eval_stream(builder, settings.eval_split, host=host, num_hosts=num_hosts)
    examples = share.map(
        lambda index, example: _eval_example(index, example, settings, reader, eval_boxes),
        num_parallel_calls=_parallel_calls(), deterministic=True)
    if settings.kind == 'classification':
      examples = examples.unbatch()
    padding = tf.data.Dataset.from_tensors(_padding_example(examples.element_spec)).repeat()
    padded = examples.concatenate(padding).take(num_batches * host_batch)
    return padded.batch(host_batch, drop_remainder=True).prefetch(2).as_numpy_iterator()

  def read_video_ids() -> list[str]:
    # The release builders store them in example order; otherwise they are read as batches() reads.
    stored = _split_metadata(builder, settings.eval_split).get('example_video_ids')
    if stored is not None:
      return list(stored)
    return records.example_video_ids(builder, settings.eval_split, num_hosts)

  return EvalInput(num_batches=num_batches, batches=batches, _read_video_ids=read_video_ids)
