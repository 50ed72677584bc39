"""Per-task tf.data input pipelines: host-local numpy batches for training and evaluation.

Records come from TFDS builders (or SequenceExample files) with a `video` feature and `video_id`
text, plus what the task's kind reads: what becomes an example of each kind is its `TaskExamples`
(tasks/examples.py; classification: `label`; localisation: keyframe, boxes and detections).
`video` is either a sequence of JPEG-encoded frames (the release builders; only the sampled frames are
decoded, and only their crop) or a uint8 tensor [T, H, W, 3] (the synthetic sets).
A batch is a dict of numpy arrays with a leading batch axis and a boolean `mask` (False on padding);
`video` stays uint8 on the host: the compiled step normalises it on the device (a quarter of the bytes
to move). Training is deterministic
given (seed, dataset, host): every example's augmentation is seeded from its ordinal in the host's
example stream, so resuming at batch n reproduces the uninterrupted stream exactly. How the stream is
read (by index for ArrayRecord, so a resume reads nothing it skips; sequentially for TFRecord) is
data/records.py's job.
"""
import dataclasses
import functools
import math
import os
from typing import Any, Callable, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune.config_lib import INPUT_DEFAULTS
from vivit_cofinetune.data import concatenated
from vivit_cofinetune.data import records
from vivit_cofinetune.data import sequence_examples
from vivit_cofinetune.data import video_ops
from vivit_cofinetune.data import dataset_info as dataset_info_lib
from vivit_cofinetune.data.builders import synthetic
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.tasks import base as tasks_base
from vivit_cofinetune.tasks import examples as examples_lib

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
  return _Settings(
      task=task, kind=kind,
      dataset=required(dataset, 'name', f'{where}.dataset'),
      sequence_example_files=_sequence_example_files(dataset, task_config, where),
      train_split=dataset.get('train_split', 'train'),
      eval_split=dataset.get('eval_split', 'validation'),
      batch_size=batch_size,
      eval_batch_size=int(task_config.get('eval_batch_size', None) or batch_size),
      num_classes=task_config.get('num_classes', None),
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


def _recorded_evaluation(builder: Any, settings: _Settings,
                         data_dir: str) -> tuple[dict[str, list[str]], list[int] | None]:
  """(evaluation files of the eval split, evaluated class ids) as the dataset's builder recorded
  them in its metadata (data/dataset_info.py); ({}, None) for datasets that record none."""
  if not isinstance(builder, (tfds.core.DatasetBuilder, concatenated.ConcatenatedDatasets)):
    return {}, None  # SequenceExample files record nothing
  parts = builder.builders if isinstance(builder, concatenated.ConcatenatedDatasets) else [builder]
  if not all('evaluation_files' in part.info.metadata for part in parts):
    return {}, None
  recorded = dataset_info_lib.localisation_info(settings.dataset, data_dir)
  files = recorded.evaluation_files.get(settings.eval_split.partition('[')[0], {})
  return files, recorded.eval_class_ids


DatasetInfo = tasks_base.DatasetInfo


def dataset_info(task_config: Any, data_dir: str) -> DatasetInfo:
  """Classes, training-set sizes and evaluation files of the task's dataset (prepares it if needed).

  Release builders store all of it at build time; only the synthetic sets' class counts are counted
  here, by reading the split's labels.
  """
  settings = _settings(task_config)
  builder = _builder(settings, data_dir)
  names = _class_names(builder)
  counts = None
  if tasks_lib.examples_for(settings.kind).counts_train_classes:
    counts = _split_metadata(builder, settings.train_split).get('class_counts') or _class_counts(
        settings.dataset, data_dir, settings.train_split, len(names))
  evaluation_files, eval_class_ids = _recorded_evaluation(builder, settings, data_dir)
  class_ids = builder.info.metadata.get('class_ids')
  return DatasetInfo(num_classes=len(names), class_names=names,
                     num_train_examples=builder.info.splits[settings.train_split].num_examples,
                     train_class_counts=counts, class_ids=list(class_ids) if class_ids else None,
                     evaluation_files=evaluation_files or None, eval_class_ids=eval_class_ids)


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


def dataset_infos(config: Any) -> dict[str, DatasetInfo]:
  """Each task's dataset info (read once per run: it prepares the dataset and may count classes)."""
  return {name: dataset_info(task_config, config.data_dir)
          for name, task_config in config.tasks.items()}


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


def _flip_permutation(builder: tfds.core.DatasetBuilder) -> list[int]:
  """Class c of a flipped clip is class permutation[c]: datasets may name left/right pairs to swap."""
  names = _class_names(builder)
  permutation = list(range(len(names)))
  for pair in builder.info.metadata.get('flip_label_pairs', []):
    left, right = (names.index(name) for name in pair)
    permutation[left], permutation[right] = right, left
  return permutation


def _frame_reader(builder: tfds.core.DatasetBuilder) -> examples_lib.FrameReader:
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

    return examples_lib.FrameReader(open=lambda frames: frames, size=jpeg_size, read=jpeg_read)
  # A uint8 tensor (the synthetic sets, a few KB a clip) is decoded whole.
  return examples_lib.FrameReader(
      open=feature.decode_example,
      size=lambda video: (tf.shape(video)[0], tf.shape(video)[1], tf.shape(video)[2]),
      read=lambda video, indices, window: video_ops.crop_video(tf.gather(video, indices), window))


def _host_batch_size(global_batch: int) -> int:
  # config_checks.validate_config made every global batch a multiple of the host count.
  return global_batch // jax.process_count()


def _task_examples(settings: _Settings, task_config: Any,
                   builder: tfds.core.DatasetBuilder) -> examples_lib.TaskExamples:
  """The task kind's example maker for this dataset."""
  metadata = builder.info.metadata
  source = examples_lib.DatasetSource(
      reader=_frame_reader(builder), flip_permutation=tuple(_flip_permutation(builder)),
      # Something-Something's "from left to right" classes are not mirror-symmetric: its
      # metadata says so, and its clips are never flipped.
      mirror_symmetric=metadata.get('mirror_symmetric', True),
      split_metadata=functools.partial(_split_metadata, builder))
  return tasks_lib.examples_for(settings.kind)(settings, task_config, source)


def _parallel_calls() -> int:
  """tf.data map parallelism: the host's cores (autotuning is off: data/records._options)."""
  return max(1, len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else
             os.cpu_count() or 1)


def train_iterator(task_config: Any, *, data_dir: str, seed: int,
                   start_batch: int = 0) -> Iterator[Batch]:
  """Infinite iterator of this host's training batches, starting at batch `start_batch`.

  Per-host batch = task_config.batch_size // jax.process_count(); each host reads its own shard.
  """
  settings = _settings(task_config)
  builder = _builder(settings, data_dir)
  task_examples = _task_examples(settings, task_config, builder)
  task_examples.describe_training_set()
  host_batch = _host_batch_size(settings.batch_size)
  host_seed = int(np.random.SeedSequence([seed, jax.process_index()]).generate_state(1)[0] >> 1)
  ordered = records.train_stream(builder, settings.train_split, seed=host_seed,
                                 host=jax.process_index(), num_hosts=jax.process_count(),
                                 start_position=start_batch * host_batch,
                                 shuffle_buffer=settings.shuffle_buffer)

  def preprocess(ordinal, example):
    example_seed = tf.stack([tf.constant(host_seed, tf.int64), ordinal])
    return task_examples.train_example(example, example_seed)

  batches = ordered.map(preprocess, num_parallel_calls=_parallel_calls(), deterministic=True)
  batches = batches.batch(host_batch, drop_remainder=True).prefetch(2)
  return batches.as_numpy_iterator()


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


def eval_input(task_config: Any, *, data_dir: str) -> EvalInput:
  """The task's evaluation input: every view of every example once, padded."""
  settings = _settings(task_config)
  builder = _builder(settings, data_dir)
  task_examples = _task_examples(settings, task_config, builder)
  host_batch = _host_batch_size(settings.eval_batch_size)
  host, num_hosts = jax.process_index(), jax.process_count()
  sizes = records.eval_sizes(builder, settings.eval_split, num_hosts)
  num_batches = math.ceil(max(sizes) * task_examples.num_eval_views / host_batch)

  def batches() -> Iterator[Batch]:
    share = records.eval_stream(builder, settings.eval_split, host=host, num_hosts=num_hosts)
    examples = share.map(task_examples.eval_views, num_parallel_calls=_parallel_calls(),
                         deterministic=True).unbatch()
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
