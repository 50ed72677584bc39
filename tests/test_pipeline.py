"""Tests of the per-task input pipelines on the tiny synthetic datasets."""
import itertools
import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vivit_cofinetune.data import pipeline

_DATASETS = {'classification': 'synthetic_actions_cls/tiny', 'localisation': 'synthetic_actions_loc/tiny'}


def _task(kind: str, **input_overrides) -> ml_collections.ConfigDict:
  inputs = dict(num_frames=8, frame_stride=2, crop_size=32, min_crop_area=0.3, flip=True,
                num_test_clips=1, num_test_crops=1, mean=(0.5,) * 3, std=(0.5,) * 3)
  inputs.update(input_overrides)
  return ml_collections.ConfigDict(dict(
      name=kind[:3], kind=kind, dataset=dict(name=_DATASETS[kind], train_split='train',
                                             eval_split='validation'),
      batch_size=4, eval_batch_size=6, num_classes=12, max_boxes=4, input=inputs))


def _records(data_dir: str, kind: str) -> list[dict]:
  builder = tfds.builder(_DATASETS[kind], data_dir=data_dir)
  return list(builder.as_dataset(split='validation', shuffle_files=False).as_numpy_iterator())


def _assert_batches_equal(first: list[dict], second: list[dict]) -> None:
  assert len(first) == len(second)
  for one, other in zip(first, second):
    assert one.keys() == other.keys()
    for key in one:
      np.testing.assert_array_equal(one[key], other[key], err_msg=key)


_TRAIN_SPECS = {
    'classification': {'video': ((4, 8, 32, 32, 3), np.uint8), 'label': ((4,), np.int32),
                       'mask': ((4,), np.bool_)},
    'localisation': {'video': ((4, 8, 32, 32, 3), np.uint8), 'mask': ((4,), np.bool_),
                     'boxes': ((4, 4, 4), np.float32), 'box_mask': ((4, 4), np.bool_),
                     'labels': ((4, 4, 12), np.float32)},
}


@pytest.mark.parametrize('kind', sorted(_TRAIN_SPECS))
def test_train_batches_follow_the_contract(kind, data_dir):
  batch = next(pipeline.train_iterator(_task(kind), data_dir=data_dir, seed=0))
  assert {key: (value.shape, value.dtype) for key, value in batch.items()} == _TRAIN_SPECS[kind]
  assert batch['mask'].all()
  # Pixels stay uint8 on the host (the step normalises them on the device) and use their range.
  assert batch['video'].min() < 64 and batch['video'].max() > 192
  if kind == 'localisation':
    boxes, box_mask = batch['boxes'], batch['box_mask']
    assert ((boxes >= 0) & (boxes <= 1)).all() and box_mask.any()
    # Every actor still in the crop keeps its labels (at least its motion).
    assert (batch['labels'].sum(axis=-1)[box_mask] >= 1).all()


@pytest.mark.parametrize('kind', sorted(_TRAIN_SPECS))
def test_train_is_deterministic_and_resumes_exactly(kind, data_dir):
  task = _task(kind)
  # 30 or 40 training records at batch 4: batches 6..9 cross an epoch boundary.
  run = list(itertools.islice(pipeline.train_iterator(task, data_dir=data_dir, seed=3), 10))
  again = list(itertools.islice(pipeline.train_iterator(task, data_dir=data_dir, seed=3), 10))
  _assert_batches_equal(run, again)
  resumed = list(itertools.islice(
      pipeline.train_iterator(task, data_dir=data_dir, seed=3, start_batch=6), 4))
  _assert_batches_equal(run[6:], resumed)
  other_seed = next(pipeline.train_iterator(task, data_dir=data_dir, seed=4))
  assert not np.array_equal(run[0]['video'], other_seed['video'])


def test_train_reshuffles_each_epoch(data_dir):
  task = _task('classification', min_crop_area=1.0, flip=False)
  batches = list(itertools.islice(pipeline.train_iterator(task, data_dir=data_dir, seed=0), 20))
  labels = np.concatenate([batch['label'] for batch in batches])
  first_epoch, second_epoch = labels[:40], labels[40:80]
  # Each epoch holds every record once (same label counts), in a different order.
  np.testing.assert_array_equal(np.bincount(first_epoch, minlength=12),
                                np.bincount(second_epoch, minlength=12))
  assert not np.array_equal(first_epoch, second_epoch)


@pytest.mark.parametrize('clips, crops', [(1, 1), (2, 3)])
def test_classification_eval_covers_every_view_once(clips, crops, data_dir):
  task = _task('classification', num_test_clips=clips, num_test_crops=crops)
  evaluation = pipeline.eval_input(task, data_dir=data_dir)
  batches = list(evaluation.batches())
  records = _records(data_dir, 'classification')
  views = len(records) * clips * crops
  assert evaluation.num_batches == len(batches) == -(-views // 6)
  mask = np.concatenate([batch['mask'] for batch in batches])
  video_index = np.concatenate([batch['video_index'] for batch in batches])[mask]
  view_index = np.concatenate([batch['view_index'] for batch in batches])[mask]
  labels = np.concatenate([batch['label'] for batch in batches])[mask]
  assert mask.sum() == views
  pairs = set(zip(video_index.tolist(), view_index.tolist()))
  assert pairs == set(itertools.product(range(len(records)), range(clips * crops)))
  # video_ids maps each index back to its record.
  label_of = {record['video_id'].decode(): record['label'] for record in records}
  assert sorted(evaluation.video_ids) == sorted(label_of)
  for index, label in zip(video_index, labels):
    assert label_of[evaluation.video_ids[index]] == label
  assert batches[0]['video'].shape == (6, 8, 32, 32, 3)


@pytest.mark.parametrize('threshold', [0.0, 0.8])
def test_localisation_eval_carries_detections_and_ground_truth(threshold, data_dir):
  evaluation = pipeline.eval_input(_task('localisation', detector_score_threshold=threshold),
                                   data_dir=data_dir)
  batches = list(evaluation.batches())
  records = {record['video_id'].decode(): record for record in _records(data_dir, 'localisation')}
  assert evaluation.num_batches == len(batches) == -(-len(records) // 6)
  seen = []
  for batch in batches:
    assert batch['video'].shape == (6, 8, 32, 32, 3) and batch['gt_labels'].shape == (6, 4, 12)
    for row in np.nonzero(batch['mask'])[0]:
      record = records[evaluation.video_ids[batch['video_index'][row]]]
      seen.append(batch['video_index'][row])
      assert batch['timestamp'][row] == record['timestamp']
      # Detections at or above the threshold, by decreasing score (the records are sorted so).
      confident = record['detector_scores'] >= threshold
      detections, scores = record['detector_boxes'][confident], record['detector_scores'][confident]
      num_gt, num_detections = len(record['gt_boxes']), len(detections)
      np.testing.assert_array_equal(batch['gt_box_mask'][row], np.arange(4) < num_gt)
      np.testing.assert_allclose(batch['gt_boxes'][row][:num_gt], record['gt_boxes'])
      np.testing.assert_array_equal(batch['gt_labels'][row][:num_gt], record['gt_labels'])
      np.testing.assert_array_equal(batch['box_mask'][row], np.arange(4) < num_detections)
      np.testing.assert_allclose(batch['frame_boxes'][row][:num_detections], detections)
      # Square frames letterbox onto the whole input: model boxes are the frame boxes.
      np.testing.assert_allclose(batch['boxes'][row][:num_detections], detections, atol=1e-6)
      np.testing.assert_allclose(batch['box_scores'][row][:num_detections], scores)
  assert sorted(seen) == list(range(len(records)))


@pytest.mark.parametrize('kind', sorted(_DATASETS))
def test_eval_hosts_run_the_same_number_of_batches(kind, data_dir, monkeypatch):
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  task = _task(kind)
  task.eval_batch_size = 4
  records = {record['video_id'].decode(): record for record in _records(data_dir, kind)}
  check_key = 'label' if kind == 'classification' else 'timestamp'
  indices, num_batches = [], set()
  for host in range(2):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    evaluation = pipeline.eval_input(task, data_dir=data_dir)
    batches = list(evaluation.batches())
    num_batches.add(len(batches))
    assert len(batches) == evaluation.num_batches
    for batch in batches:
      assert batch['video'].shape[0] == 2  # per-host share of the global eval batch
      for row in np.nonzero(batch['mask'])[0]:
        index = batch['video_index'][row]
        indices.append(index)
        assert records[evaluation.video_ids[index]][check_key] == batch[check_key][row]
  assert len(num_batches) == 1
  assert sorted(indices) == list(range(len(records)))


@pytest.mark.parametrize('kind', sorted(_DATASETS))
def test_dataset_info_counts_training_classes_of_localisation_only(kind, data_dir):
  info = pipeline.dataset_info(_task(kind), data_dir)
  assert info.num_classes == len(info.class_names) == 12 and info.class_names[0] == 'stand_still'
  builder = tfds.builder(_DATASETS[kind], data_dir=data_dir)
  records = list(builder.as_dataset(split='train').as_numpy_iterator())
  assert info.num_train_examples == len(records)
  if kind == 'classification':
    # Counting reads the whole split; only the localisation frequency groups need it.
    assert info.train_class_counts is None
  else:
    counts = sum(record['gt_labels'].sum(axis=0) for record in records)
    assert info.train_class_counts == counts.tolist()


def test_known_datasets(data_dir):
  config = ml_collections.ConfigDict(dict(data_dir=data_dir, tasks=dict(
      loc=_task('localisation'), missing=_task('classification'))))
  config.tasks.missing.dataset.name = 'no_such_dataset'
  assert pipeline.known_datasets(config) == {_DATASETS['localisation']: True,
                                             'no_such_dataset': False}


def test_bad_config_errors_name_the_field(data_dir):
  task = _task('classification')
  task.dataset.name = 'no_such_dataset'
  with pytest.raises(ValueError, match=r'config\.tasks\.cla\.dataset\.name'):
    pipeline.train_iterator(task, data_dir=data_dir, seed=0)
  # A class count that disagrees with the dataset is the task's error (tests/test_config.py).
  task = _task('classification')
  del task.input['crop_size']
  with pytest.raises(ValueError, match=r'config\.tasks\.cla\.input\.crop_size'):
    pipeline.train_iterator(task, data_dir=data_dir, seed=0)


@pytest.mark.parametrize('kind', sorted(_TRAIN_SPECS))
def test_flip_swaps_left_and_right_classes(kind, data_dir):
  right, left = 1, 2  # move_right, move_left
  swap = np.arange(12)
  swap[[right, left]] = [left, right]
  plain_task, flip_task = _task(kind, flip=False), _task(kind, flip=True)
  plain = itertools.islice(pipeline.train_iterator(plain_task, data_dir=data_dir, seed=5), 8)
  flipped = itertools.islice(pipeline.train_iterator(flip_task, data_dir=data_dir, seed=5), 8)
  label_key = 'label' if kind == 'classification' else 'labels'
  swapped_examples = 0
  for plain_batch, flip_batch in zip(plain, flipped):
    for row in range(4):
      plain_labels, flip_labels = plain_batch[label_key][row], flip_batch[label_key][row]
      if np.array_equal(flip_batch['video'][row], plain_batch['video'][row]):
        np.testing.assert_array_equal(flip_labels, plain_labels)
        continue
      # Same example, same crop, mirrored: left and right motions trade places.
      np.testing.assert_allclose(flip_batch['video'][row], plain_batch['video'][row][:, :, ::-1])
      expected = swap[plain_labels] if kind == 'classification' else plain_labels[..., swap]
      np.testing.assert_array_equal(flip_labels, expected)
      swapped_examples += int(not np.array_equal(flip_labels, plain_labels))
      if kind == 'localisation':
        # The boxes are mirrored with the pixels: (y1, x1, y2, x2) -> (y1, 1 - x2, y2, 1 - x1).
        valid = plain_batch['box_mask'][row]
        np.testing.assert_array_equal(flip_batch['box_mask'][row], valid)
        y1, x1, y2, x2 = plain_batch['boxes'][row][valid].T
        np.testing.assert_allclose(flip_batch['boxes'][row][valid],
                                   np.stack([y1, 1 - x2, y2, 1 - x1], axis=-1), atol=1e-6)
  assert swapped_examples > 0


# Detections of one keyframe, in the order a detector file may list them: not by score.
_UNSORTED_SCORES = np.array([0.3, 0.95, 0.85, 0.99, 0.5, 0.9, 0.81], np.float32)


def _box_of_score(scores: np.ndarray) -> np.ndarray:
  """A square box [N, 4] per score, with its top-left corner at (score / 2, score / 2)."""
  corner = np.repeat(scores[:, None] / 2, 2, axis=1)
  return np.concatenate([corner, corner + 0.4], axis=1).astype(np.float32)


class UnsortedDetections(tfds.core.GeneratorBasedBuilder):
  """One localisation keyframe whose 7 detections (5 of them confident) arrive unsorted.

  Each detection's box encodes its score, so a test can tell which box kept which score. Config
  'counted' records the split's max_detections at build time, as the release builders do;
  'uncounted' does not (a source that cannot know it), so evaluation has max_boxes rows.
  """
  name = 'test_unsorted_detections'
  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='counted'), tfds.core.BuilderConfig(name='uncounted')]
  url_infos = None

  def _info(self):
    splits = {'validation': {'max_detections': 5}} if self.builder_config.name == 'counted' else {}
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(4, 16, 16, 3), dtype=np.uint8),
            'keyframe_index': np.int32, 'video_id': tfds.features.Text(), 'timestamp': np.int32,
            'gt_boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'gt_labels': tfds.features.Tensor(shape=(None, 12), dtype=np.bool_),
            'detector_boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'detector_scores': tfds.features.Tensor(shape=(None,), dtype=np.float32)}),
        metadata=tfds.core.MetadataDict(class_names=[f'class{c}' for c in range(12)], splits=splits))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(), 'validation': self._generate_examples()}

  def _generate_examples(self):
    yield 0, {'video': np.zeros((4, 16, 16, 3), np.uint8), 'keyframe_index': 2, 'video_id': 'v',
              'timestamp': 902, 'gt_boxes': np.array([[0.1, 0.1, 0.5, 0.5]], np.float32),
              'gt_labels': np.eye(12, dtype=bool)[:1],
              'detector_boxes': _box_of_score(_UNSORTED_SCORES),
              'detector_scores': _UNSORTED_SCORES}


@pytest.mark.parametrize('config_name, kept', [('counted', 5), ('uncounted', 3)])
def test_unsorted_detections_keep_the_highest_scores_with_their_boxes(config_name, kept, tmp_path):
  tfds.builder(f'test_unsorted_detections/{config_name}', data_dir=str(tmp_path)).download_and_prepare()
  task = _task('localisation', crop_size=16, num_frames=2, detector_score_threshold=0.8)
  task.dataset.name = f'test_unsorted_detections/{config_name}'
  task.max_boxes, task.eval_batch_size = 3, 1
  batch, = pipeline.eval_input(task, data_dir=str(tmp_path)).batches()
  expected = np.array([0.99, 0.95, 0.9, 0.85, 0.81], np.float32)[:kept]  # by hand
  assert batch['box_scores'].shape == (1, kept) and batch['box_mask'].all()
  np.testing.assert_array_equal(batch['box_scores'][0], expected)
  np.testing.assert_allclose(batch['frame_boxes'][0], _box_of_score(expected), atol=1e-6)
  # A square frame fills the model's input, so the model sees the same boxes.
  np.testing.assert_allclose(batch['boxes'][0], _box_of_score(expected), atol=1e-6)
