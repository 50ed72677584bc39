"""The user's own datasets: `prepare ava_format` and `prepare video_folder` on layouts written here.

Each writer returns what it wrote (boxes, labels, timestamps, class names), and the tests compare the
prepared records with that, never with the builders' own output.
"""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import fake_releases
from vivit_cofinetune.data import dataset_info
from vivit_cofinetune.data import prepare
from vivit_cofinetune.data import records
from vivit_cofinetune.metrics import ava

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FPS = 8
_SIZE = (32, 48)  # (H, W) of every video
_SECONDS = 5  # every video; keyframes at seconds 1..3, so the tiny config's +-1 s windows fit
ACTIONS = {1: 'wave', 2: 'jump', 5: 'sit down'}  # ids need not be contiguous
AVA_VIDEOS = {'train': ('walk_a', 'walk_b'), 'val': ('walk_c',)}
EXCLUDED = {'train': ('walk_a', 2), 'val': ('walk_c', 3)}
CLASSES = ('bird', 'cat', 'dog')
_COLOURS = {'bird': (255, 0, 0), 'cat': (0, 255, 0), 'dog': (0, 0, 255)}


def _frames(colour=None, seconds: float = _SECONDS) -> np.ndarray:
  """Grey frames with a central rectangle: `colour`, or else grey level `_level(k)` in frame k, so
  a stored frame says which source frame it came from."""
  frames = np.full((int(seconds * _FPS), *_SIZE, 3), 128, np.uint8)
  for index, frame in enumerate(frames):
    frame[8:24, 12:36] = _level(index) if colour is None else colour
  return frames


def _level(frame_index: int) -> int:
  return 10 + 5 * frame_index


def _write(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as file:
    file.write(text)


def write_ava_format(root: str, *, layout: str = 'videos', label_map: str = 'pbtxt',
                     eval_ids: tuple[int, ...] | None = (1, 5), predicted_boxes: bool = True,
                     exclusions: bool = True) -> dict:
  """An AVA-format release with ACTIONS as its classes; returns {split: [keyframe dicts]} of every
  annotated keyframe (video_id, timestamp, boxes [[x1, y1, x2, y2]], actions [[ids]], person_ids,
  excluded, detections [(box, score)])."""
  rng = np.random.default_rng(7)
  keyframes = {}
  for split, videos in AVA_VIDEOS.items():
    keyframes[split] = []
    for video_id in videos:
      for second in (1, 2, 3):
        people = int(rng.integers(1, 3))
        corners = np.round(rng.uniform(0.05, 0.45, (people, 2)), 3)
        sizes = np.round(rng.uniform(0.2, 0.5, (people, 2)), 3)
        boxes = [[float(x), float(y), float(x + w), float(y + h)]
                 for (x, y), (w, h) in zip(corners, sizes)]
        actions = [sorted(rng.choice(sorted(ACTIONS), int(rng.integers(1, 3)), replace=False)
                          .tolist()) for _ in range(people)]
        detections = [([round(v + 0.01, 3) for v in box], round(float(rng.uniform(0.5, 1)), 3))
                      for box in boxes]
        keyframes[split].append(dict(
            video_id=video_id, timestamp=second, boxes=boxes, actions=actions,
            person_ids=list(range(people)), detections=detections,
            excluded=exclusions and (video_id, second) == EXCLUDED[split]))
  annotations = os.path.join(root, 'annotations')
  for split, frames in keyframes.items():
    _write(os.path.join(annotations, f'{split}.csv'), ''.join(
        f'{k["video_id"]},{k["timestamp"]},{",".join(f"{v:.3f}" for v in box)},{action},{person}\n'
        for k in frames for box, actions, person in zip(k['boxes'], k['actions'], k['person_ids'])
        for action in actions))
    if exclusions:
      _write(os.path.join(annotations, f'{split}_excluded_timestamps.csv'),
             '{},{}\n'.format(*EXCLUDED[split]))
    if predicted_boxes:
      _write(os.path.join(annotations, f'{split}_predicted_boxes.csv'), ''.join(
          f'{k["video_id"]},{k["timestamp"]},{",".join(f"{v:.3f}" for v in box)},,{score}\n'
          for k in frames for box, score in k['detections']))
  if label_map == 'pbtxt':
    _write(os.path.join(annotations, 'label_map.pbtxt'), ''.join(
        f'item {{\n  name: "{name}"\n  id: {class_id}\n}}\n' for class_id, name in ACTIONS.items()))
  else:
    _write(os.path.join(annotations, 'label_map.csv'),
           'id,name\n' + ''.join(f'{class_id},{name}\n' for class_id, name in ACTIONS.items()))
  if eval_ids:
    _write(os.path.join(annotations, 'eval_label_map.pbtxt'), ''.join(
        f'item {{ name: "{ACTIONS[class_id]}" id: {class_id} }}\n' for class_id in eval_ids))
  for video_id in (video for videos in AVA_VIDEOS.values() for video in videos):
    if layout == 'videos':
      fake_releases.write_video(os.path.join(root, 'videos', f'{video_id}.mp4'), _frames(), _FPS)
    else:
      folder = os.path.join(root, 'frames', video_id)
      os.makedirs(folder)
      for index, pixels in enumerate(_frames()):
        Image.fromarray(pixels).save(os.path.join(folder, f'img_{index + 1:05d}.jpg'))
  return keyframes


def write_class_folders(root: str) -> dict[str, dict[str, str]]:
  """train/<class>/<class>_<i>.mp4 (2 a class) and val/ (1 a class); {split: {clip id: class}}."""
  clips = {}
  for split, count in (('train', 2), ('val', 1)):
    clips[split] = {}
    for name in CLASSES:
      for index in range(count):
        fake_releases.write_video(os.path.join(root, split, name, f'{name}_{index}.mp4'),
                                  _frames(_COLOURS[name], seconds=1), _FPS)
        clips[split][f'{name}/{name}_{index}'] = name
  return clips


def write_list_files(root: str, *, multi_label: bool) -> dict[str, dict[str, list[int]]]:
  """MMAction2 list files over clips/<split>_<i>.mp4 with classes.txt; {split: {clip id: labels}}."""
  _write(os.path.join(root, 'classes.txt'), ''.join(name + '\n' for name in CLASSES))
  labels = {'train': [[0], [1, 2] if multi_label else [1], [2], [0]],
            'val': [[1], [2, 0] if multi_label else [2]]}
  clips = {}
  for split, split_labels in labels.items():
    clips[split] = {}
    lines = []
    for index, clip_labels in enumerate(split_labels):
      relative = f'clips/{split}_{index}.mp4'
      fake_releases.write_video(os.path.join(root, relative),
                                _frames(_COLOURS[CLASSES[clip_labels[0]]], seconds=1), _FPS)
      lines.append(' '.join([relative, *map(str, clip_labels)]))
      clips[split][f'clips/{split}_{index}'] = clip_labels
    _write(os.path.join(root, f'{split}.txt'), ''.join(line + '\n' for line in lines))
  return clips


def _prepare(tmp_path, dataset: str, root: str, name: str, **kwargs):
  return prepare.prepare(dataset, manual_dir=root, data_dir=str(tmp_path / 'tfds'), name=name,
                         **kwargs)


def _records(builder, split: str) -> list[dict]:
  count = builder.info.splits[split].num_examples
  return [example for _, example in records.read_indices(builder, split, 0, count).as_numpy_iterator()]


def tf_decode(jpeg: bytes) -> np.ndarray:
  return tf.io.decode_jpeg(jpeg).numpy()


def _y1x1y2x2(boxes) -> np.ndarray:
  return np.asarray(boxes, np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]


# ------------------------------------------------------------------------------- ava_format ---


@pytest.mark.parametrize('layout,label_map', [('videos', 'pbtxt'), ('frames', 'csv')])
def test_ava_format_round_trips_boxes_labels_and_timestamps(layout, label_map, tmp_path):
  keyframes = write_ava_format(str(tmp_path / 'release'), layout=layout, label_map=label_map)
  builder = _prepare(tmp_path, 'ava_format/tiny', str(tmp_path / 'release'), 'my_actions',
                     frames_fps=_FPS if layout == 'frames' else None)
  class_ids = sorted(ACTIONS)
  assert builder.info.metadata['class_ids'] == class_ids
  assert builder.info.metadata['class_names'] == [ACTIONS[i] for i in class_ids]
  assert builder.info.metadata['eval_class_ids'] == [1, 5]
  for split, tfds_split in (('train', 'train'), ('val', 'validation')):
    expected = sorted((k for k in keyframes[split] if not k['excluded']),
                      key=lambda k: (k['video_id'], k['timestamp']))
    stored = _records(builder, tfds_split)
    assert builder.info.splits[tfds_split].num_examples == len(expected) == len(stored)
    for record, keyframe in zip(stored, expected):
      assert (record['video_id'].decode(), record['timestamp']) == (keyframe['video_id'],
                                                                   keyframe['timestamp'])
      np.testing.assert_array_equal(record['gt_boxes'], _y1x1y2x2(keyframe['boxes']))
      labels = np.zeros((len(keyframe['boxes']), len(class_ids)), bool)
      for person, actions in enumerate(keyframe['actions']):
        labels[person, [class_ids.index(action) for action in actions]] = True
      np.testing.assert_array_equal(record['gt_labels'], labels)
      np.testing.assert_array_equal(record['gt_person_ids'], keyframe['person_ids'])
      np.testing.assert_array_equal(record['detector_boxes'],
                                    _y1x1y2x2([box for box, _ in keyframe['detections']]))
      np.testing.assert_array_equal(record['detector_scores'], np.asarray(
          [score for _, score in keyframe['detections']], np.float32))
      # tiny: 4 fps, 1 s either side of the keyframe, which is video time `timestamp`.
      assert len(record['video']) == 9 and record['keyframe_index'] == 4
      centre = tf_decode(record['video'][4])[16, 24].astype(int)
      np.testing.assert_allclose(centre, _level(keyframe['timestamp'] * _FPS), atol=2)
  # What evaluation reads is recorded and readable by the metrics CLI's readers.
  info = dataset_info.localisation_info('my_actions/tiny', str(tmp_path / 'tfds'))
  assert info.eval_labelmap == {1: 'wave', 5: 'sit down'}
  files = info.evaluation_files['validation']
  with open(files['groundtruth'][0]) as copy, open(tmp_path / 'release/annotations/val.csv') as original:
    assert copy.read() == original.read()
  with open(files['exclusions'][0]) as file:
    assert file.read() == '{},{}\n'.format(*EXCLUDED['val'])


def test_ava_format_without_predicted_boxes_scores_the_ground_truth_and_says_so(tmp_path, capsys):
  keyframes = write_ava_format(str(tmp_path / 'release'), predicted_boxes=False, eval_ids=None,
                               exclusions=False)
  builder = _prepare(tmp_path, 'ava_format/tiny', str(tmp_path / 'release'), 'my_actions')
  assert 'evaluation will score the ground-truth boxes' in capsys.readouterr().out
  assert builder.info.metadata['scored_boxes'] == {'validation': 'groundtruth'}
  assert builder.info.metadata['eval_class_ids'] == sorted(ACTIONS)  # no eval list: every class
  for record, keyframe in zip(_records(builder, 'validation'), keyframes['val']):
    np.testing.assert_array_equal(record['detector_boxes'], _y1x1y2x2(keyframe['boxes']))
    np.testing.assert_array_equal(record['detector_scores'], np.ones(len(keyframe['boxes'])))


def test_dataset_info_of_an_unprepared_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    dataset_info.localisation_info('my_actions', str(tmp_path))
  assert 'my_actions' in str(error.value) and 'vivit_cofinetune.data.prepare' in str(error.value)


def test_frame_folders_need_frames_fps(tmp_path):
  write_ava_format(str(tmp_path / 'release'), layout='frames')
  with pytest.raises(SystemExit) as error:
    prepare.main(['ava_format/tiny', '--name=my_actions', f'--manual_dir={tmp_path / "release"}',
                  f'--data_dir={tmp_path / "tfds"}'])
  assert '--frames_fps' in str(error.value) and '\n' not in str(error.value)


@pytest.mark.parametrize('row,complaint', [
    ('walk_a,1,0.600,0.100,0.400,0.500,1,0', 'x1,y1,x2,y2 = 0.600,0.100,0.400,0.500'),
    ('walk_a,1,0.100,0.100,1.634,0.500,1,0', 'x1,y1,x2,y2 = 0.100,0.100,1.634,0.500'),
])
def test_invalid_groundtruth_box_is_rejected_with_file_and_line(row, complaint, tmp_path):
  write_ava_format(str(tmp_path / 'release'))
  path = tmp_path / 'release' / 'annotations' / 'train.csv'
  lines = path.read_text().splitlines()
  path.write_text('\n'.join(lines[:2] + [row] + lines[2:]) + '\n')
  with pytest.raises(SystemExit) as error:
    prepare.main(['ava_format/tiny', '--name=my_actions', f'--manual_dir={tmp_path / "release"}',
                  f'--data_dir={tmp_path / "tfds"}'])
  message = str(error.value)
  assert f'{path}:3:' in message and complaint in message and '\n' not in message


def test_prepare_names_a_missing_or_taken_dataset_name(tmp_path):
  write_ava_format(str(tmp_path / 'release'))
  for flags, complaint in (([], '--name=NAME'), (['--name=ava_v2_2'], 'registered dataset'),
                           (['--name=My-Set'], 'lower-case')):
    with pytest.raises(SystemExit) as error:
      prepare.main(['ava_format/tiny', *flags, f'--manual_dir={tmp_path / "release"}',
                    f'--data_dir={tmp_path / "tfds"}'])
    assert complaint in str(error.value) and '\n' not in str(error.value)


# ----------------------------------------------------------------------------- video_folder ---


def test_class_folders_round_trip(tmp_path):
  clips = write_class_folders(str(tmp_path / 'release'))
  builder = _prepare(tmp_path, 'video_folder/tiny', str(tmp_path / 'release'), 'my_clips')
  assert builder.info.metadata['class_names'] == list(CLASSES)
  assert not builder.info.metadata['multi_label']
  for split, tfds_split in (('train', 'train'), ('val', 'validation')):
    stored = _records(builder, tfds_split)
    assert {r['video_id'].decode(): CLASSES[r['label']] for r in stored} == clips[split]
    assert builder.info.metadata['splits'][tfds_split]['class_counts'] == [
        list(clips[split].values()).count(name) for name in CLASSES]
    for record in stored:  # the clip's own pixels: its class's colour in the centre
      frame = tf_decode(record['video'][0])
      centre = frame[frame.shape[0] // 2, frame.shape[1] // 2].astype(int)
      assert np.abs(centre - _COLOURS[CLASSES[record['label']]]).max() < 60


@pytest.mark.parametrize('multi_label', [False, True])
def test_list_files_round_trip_and_several_labels_make_a_multi_label_set(multi_label, tmp_path):
  clips = write_list_files(str(tmp_path / 'release'), multi_label=multi_label)
  builder = _prepare(tmp_path, 'video_folder/tiny', str(tmp_path / 'release'), 'my_clips')
  assert builder.info.metadata['class_names'] == list(CLASSES)
  assert builder.info.metadata['multi_label'] == multi_label
  for split, tfds_split in (('train', 'train'), ('val', 'validation')):
    stored = {r['video_id'].decode(): r['label'] for r in _records(builder, tfds_split)}
    assert sorted(stored) == sorted(clips[split])
    for clip_id, labels in clips[split].items():
      if multi_label:
        np.testing.assert_array_equal(stored[clip_id], np.isin(np.arange(len(CLASSES)), labels))
      else:
        assert stored[clip_id] == labels[0]


def test_list_file_label_outside_classes_is_rejected_with_file_and_line(tmp_path):
  write_list_files(str(tmp_path / 'release'), multi_label=False)
  path = tmp_path / 'release' / 'val.txt'
  path.write_text(path.read_text() + 'clips/val_0.mp4 3\n')
  with pytest.raises(SystemExit) as error:
    prepare.main(['video_folder/tiny', '--name=my_clips', f'--manual_dir={tmp_path / "release"}',
                  f'--data_dir={tmp_path / "tfds"}'])
  assert f'{path}:3:' in str(error.value) and '\n' not in str(error.value)


def test_a_missing_listed_clip_is_skipped_and_listed_like_a_bad_release_video(tmp_path):
  clips = write_list_files(str(tmp_path / 'release'), multi_label=False)
  os.remove(tmp_path / 'release' / 'clips' / 'train_1.mp4')
  builder = _prepare(tmp_path, 'video_folder/tiny', str(tmp_path / 'release'), 'my_clips',
                     max_skipped_fraction=0.5)
  assert builder.info.splits['train'].num_examples == len(clips['train']) - 1
  with open(os.path.join(builder.data_dir, 'skipped.csv')) as file:
    assert [(row['split'], row['video_id'], row['reason']) for row in csv.DictReader(file)] == [
        ('train', 'clips/train_1', 'missing file')]


# ----------------------------------------------------------------------- a changed release ---


@pytest.mark.parametrize('dataset', ['ava_format', 'video_folder'])
def test_preparing_again_after_the_release_changed_stops_until_overwrite(dataset, tmp_path):
  root = tmp_path / 'release'
  if dataset == 'ava_format':
    write_ava_format(str(root))
    changed, name = root / 'annotations' / 'train.csv', 'annotations/train.csv'
  else:
    write_class_folders(str(root))
    changed, name = None, 'clip list'
  arguments = [f'{dataset}/tiny', '--name=mine', f'--manual_dir={root}',
               f'--data_dir={tmp_path / "tfds"}']
  prepare.main(arguments)
  first = tfds.builder('mine/tiny', data_dir=str(tmp_path / 'tfds')).info.splits['train'].num_examples
  prepare.main(arguments)  # unchanged: reused
  if changed:  # the rows of one keyframe removed
    changed.write_text(''.join(line for line in changed.read_text().splitlines(keepends=True)
                               if not line.startswith('walk_b,3,')))
  else:
    os.remove(root / 'train' / 'cat' / 'cat_1.mp4')
  with pytest.raises(SystemExit) as error:
    prepare.main(arguments)
  assert name in str(error.value) and '--overwrite' in str(error.value)
  assert '\n' not in str(error.value)
  prepare.main(arguments + ['--overwrite'])
  rebuilt = tfds.builder('mine/tiny', data_dir=str(tmp_path / 'tfds'))
  assert rebuilt.info.splits['train'].num_examples < first
  prepare.main(arguments)  # the new build's fingerprint matches


# --------------------------------------------------------------------- the worked example ---


@pytest.mark.slow
def test_worked_example_cofinetunes_and_its_map_equals_the_cli_on_its_csv(tmp_path):
  """docs/data.md's worked example as written: prepare both sets, run its config, score the CSV."""
  keyframes = write_ava_format(str(tmp_path / 'actions'), eval_ids=None)
  write_class_folders(str(tmp_path / 'clips'))
  data_dir = str(tmp_path / 'tfds')
  prepare.main(['ava_format', '--name=my_actions', f'--manual_dir={tmp_path / "actions"}',
                f'--data_dir={data_dir}'])
  prepare.main(['video_folder', '--name=my_clips', f'--manual_dir={tmp_path / "clips"}',
                f'--data_dir={data_dir}'])
  with open(os.path.join(_ROOT, 'docs', 'data.md')) as file:
    config = re.search(r'```python\n(# my_cofinetune.py\n.*?)```', file.read(), re.S).group(1)
  (tmp_path / 'my_cofinetune.py').write_text(config)
  workdir = tmp_path / 'my_run'
  command = [sys.executable, '-m', 'vivit_cofinetune.main',
             f'--config={tmp_path / "my_cofinetune.py"}:steps=6', f'--workdir={workdir}',
             f'--config.data_dir={data_dir}']
  run = subprocess.run(command, cwd=_ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((workdir / 'eval_results.json').read_text())
  assert set(results) == {'my_actions', 'my_clips'}
  # The files the docs' CLI command names, scored as the run scored them.
  files = dataset_info.localisation_info('my_actions', data_dir).evaluation_files['validation']
  dataset = os.path.join(data_dir, 'my_actions', 'default', '1.0.0')
  assert files['groundtruth'] == [os.path.join(dataset, 'groundtruth_validation.csv')]
  detections = workdir / 'eval' / 'step_6' / 'my_actions_detections.csv'
  cli = ava.main(['--groundtruth', files['groundtruth'][0], '--detections', str(detections),
                  '--labelmap', files['eval_label_map'][0], '--exclusions', files['exclusions'][0]])
  assert not np.isnan(results['my_actions']['mAP'])
  assert abs(cli['mAP'] - results['my_actions']['mAP']) <= 1e-6
  # Every confident detector box of every kept val keyframe is scored for the 3 classes.
  confident = [score for k in keyframes['val'] if not k['excluded'] for _, score in k['detections']
               if score >= 0.8]
  with open(detections) as file:
    assert len(file.read().splitlines()) == len(ACTIONS) * len(confident) > 0
