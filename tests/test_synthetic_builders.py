"""Tests of the synthetic TFDS builders: deterministic records, valid boxes, a long-tailed label set."""
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import synthetic

_NAMES = ('synthetic_actions_cls/tiny', 'synthetic_actions_loc/tiny')


def _build(name: str, data_dir: pathlib.Path) -> tfds.core.DatasetBuilder:
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> pathlib.Path:
  path = tmp_path_factory.mktemp('synthetic')
  for name in _NAMES:
    _build(name, path)
  return path


def _records(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
  return list(builder.as_dataset(split=split, shuffle_files=False).as_numpy_iterator())


def test_importing_the_package_registers_both_builders():
  registered = tfds.list_builders()
  assert 'synthetic_actions_cls' in registered and 'synthetic_actions_loc' in registered


@pytest.mark.parametrize('name', _NAMES)
def test_rebuild_gives_identical_bytes(name, data_dir, tmp_path):
  rebuilt = _build(name, tmp_path)
  original = tfds.builder(name, data_dir=str(data_dir))
  rebuilt_files = sorted(pathlib.Path(rebuilt.data_dir).glob('*.tfrecord*'))
  assert len(rebuilt_files) == 2
  for path in rebuilt_files:
    assert path.read_bytes() == (pathlib.Path(original.data_dir) / path.name).read_bytes(), path.name


def test_classification_records(data_dir):
  builder = tfds.builder('synthetic_actions_cls/tiny', data_dir=str(data_dir))
  assert builder.info.features['label'].names == list(synthetic.CLS_CLASS_NAMES)
  records = _records(builder, 'train')
  assert len(records) == builder.builder_config.num_train
  for record in records:
    assert record['video'].shape == (16, 40, 40, 3) and record['video'].dtype == np.uint8
    assert 0 <= record['label'] < len(synthetic.CLS_CLASS_NAMES)
  ids = [record['video_id'] for record in records]
  assert len(set(ids)) == len(ids)


def test_localisation_records_have_valid_boxes_and_labels(data_dir):
  builder = tfds.builder('synthetic_actions_loc/tiny', data_dir=str(data_dir))
  assert builder.info.metadata['class_names'] == list(synthetic.LOC_CLASS_NAMES)
  motions = np.isin(synthetic.LOC_CLASS_NAMES, synthetic.MOTIONS)
  for split in ('train', 'validation'):
    for record in _records(builder, split):
      boxes, labels = record['gt_boxes'], record['gt_labels']
      assert 1 <= len(boxes) <= 3 and labels.shape == (len(boxes), len(synthetic.LOC_CLASS_NAMES))
      assert ((boxes >= 0) & (boxes <= 1)).all()
      assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
      # Every actor does exactly one motion.
      np.testing.assert_array_equal(labels[:, motions].sum(axis=1), 1)
      scores = record['detector_scores']
      assert len(record['detector_boxes']) in (len(boxes), len(boxes) + 1)
      assert (np.diff(scores) <= 0).all() and ((scores > 0) & (scores <= 1)).all()
      # Every actor is detected: its best detection overlaps it well.
      for box in boxes:
        assert max(_iou(box, detection) for detection in record['detector_boxes']) > 0.5
      assert record['keyframe_index'] == 8 and record['video_id'].startswith(b'synthloc_')


def _iou(a: np.ndarray, b: np.ndarray) -> float:
  height = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  width = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  intersection = height * width
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
  return intersection / union


def test_localisation_labels_are_long_tailed():
  rng = np.random.default_rng(0)
  draws = 20000
  counts = np.zeros(len(synthetic.LOC_CLASS_NAMES))
  for _ in range(draws):
    motion, changes = synthetic.sample_actor_actions(rng)
    counts += np.isin(synthetic.LOC_CLASS_NAMES, [motion] + changes)
  frequency = counts / draws
  # Independent target: rank r has r**-1.5 over the sum of that for the motion ranks (1,2,3,5,7,9,11).
  ranks = np.arange(1, 13)
  expected = ranks**-1.5 / sum(r**-1.5 for r in (1, 2, 3, 5, 7, 9, 11))
  np.testing.assert_allclose(frequency, expected, rtol=0.2, atol=0.003)
  assert frequency[0] / frequency[-1] > 25
  assert (np.diff(frequency) < 0.01).all()  # non-increasing with rank, up to sampling noise


def test_actor_trajectories_show_their_motion():
  rng = np.random.default_rng(1)
  for motion, axis, sign in [('move_right', 'dx', 1), ('move_left', 'dx', -1), ('move_up', 'dy', -1),
                             ('move_down', 'dy', 1)]:
    track = synthetic._trajectory(motion, [], 16, 40, rng)  # pylint: disable=protected-access
    assert np.sign(track[axis][-1] - track[axis][0]) == sign and track[axis][-1] * sign > 10
  grow = synthetic._trajectory('stand_still', ['grow'], 16, 40, rng)  # pylint: disable=protected-access
  shrink = synthetic._trajectory('stand_still', ['shrink'], 16, 40, rng)  # pylint: disable=protected-access
  assert grow['height'][-1] > 1.5 * grow['height'][0]
  assert shrink['height'][-1] < 0.6 * shrink['height'][0]


_HEAD_COLOUR = (235, 190, 150)


def _observed_actions(video: np.ndarray) -> set[str]:
  """The actions a one-actor clip [T, S, S, 3] shows, read off its pixels alone.

  The renderer paints the actor without noise, so its head is exactly the head colour and its body
  the most frequent exact colour of a frame (the background is noisy); the actor's extent, area and
  colour per frame then give its motion and appearance changes. A blink dims the head off-colour.
  Thresholds separate the classes with margin over 4,000 clips rendered at the tiny size.
  """
  head = (np.abs(video.astype(int) - _HEAD_COLOUR) <= 1).all(axis=-1)
  frames = np.nonzero(head.any(axis=(1, 2)))[0]
  boxes, areas, colours = [], [], []
  for t in frames:
    values, counts = np.unique(video[t][~head[t]], axis=0, return_counts=True)
    colour = values[np.argmax(counts)]
    actor = head[t] | (video[t] == colour).all(axis=-1)
    rows, cols = np.nonzero(actor.any(axis=1))[0], np.nonzero(actor.any(axis=0))[0]
    boxes.append([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1])
    areas.append(actor.sum())
    colours.append(colour.astype(int))
  boxes = np.array(boxes, float)
  centre_y, centre_x = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
  height, width = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
  dx, dy = centre_x[-1] - centre_x[0], centre_y[-1] - centre_y[0]
  still_x, still_y = np.ptp(centre_x) < 1.5, np.ptp(centre_y) < 1.5
  rise = np.max(centre_x - np.minimum.accumulate(centre_x))
  fall = np.max(np.maximum.accumulate(centre_x) - centre_x)
  height_ratio, width_ratio = height[-1] / height[0], width[-1] / width[0]
  seen = {
      'move_right': abs(dy) < 2 and dx > 6,
      'move_left': abs(dy) < 2 and dx < -6,
      'move_up': abs(dx) < 2 and dy < -6,
      'move_down': abs(dx) < 2 and dy > 6,
      # Up and back down: highest above the start, and level again half way (a hop lasts 8 frames).
      'jump': (still_x and centre_y.min() < centre_y[0] - 3
               and abs(centre_y[list(frames).index(8)] - centre_y[0]) < 1.5),
      'shake': still_y and min(rise, fall) >= 2,
      'stand_still': still_x and still_y,
      'grow': areas[-1] / areas[0] > 2,
      'shrink': height_ratio < 0.7 and width_ratio < 0.76,
      'crouch': height_ratio < 0.7 and width_ratio >= 0.76,
      'blink': len(frames) < len(video),
      'change_colour': np.abs(colours[-1] - colours[0]).max() > 60,
  }
  return {name for name, shown in seen.items() if shown}


@pytest.mark.parametrize('split', ['train', 'validation'])
def test_classification_labels_match_what_the_clips_show(split, data_dir):
  builder = tfds.builder('synthetic_actions_cls/tiny', data_dir=str(data_dir))
  labels = set()
  for record in _records(builder, split):
    label = synthetic.CLS_CLASS_NAMES[record['label']]
    labels.add(label)
    seen = _observed_actions(record['video'])
    if label in synthetic.MOTIONS:
      assert seen == {label}, record['video_id']
    else:
      # An appearance change rides on one plain motion, which the label does not name.
      motions = seen & set(synthetic.MOTIONS)
      assert seen - motions == {label} and len(motions) == 1, (record['video_id'], seen)
      assert motions <= {'stand_still', 'move_right', 'move_left', 'move_up', 'move_down'}
  if split == 'train':
    assert labels == set(synthetic.CLS_CLASS_NAMES)
