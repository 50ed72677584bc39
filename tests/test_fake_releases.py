"""Tests of the fake-release writers: official file names, decodable videos, colours where stated."""
import csv
import json
import os

import av
import numpy as np
from PIL import Image
import pytest

import fake_releases

_TOLERANCE = 40  # Max per-channel error of a probed colour (yuv420p / JPEG round trips).


def _decode(path: str) -> tuple[np.ndarray, np.ndarray]:
  """All frames [T, H, W, 3] of a video file and their times in seconds."""
  with av.open(path) as container:
    stream = container.streams.video[0]
    decoded = list(container.decode(stream))
    return (np.stack([frame.to_ndarray(format='rgb24') for frame in decoded]),
            np.array([float(frame.pts * stream.time_base) for frame in decoded]))


def _colour_at(image: np.ndarray, point) -> np.ndarray:
  """The pixel of image [H, W, 3] at normalised point (x, y)."""
  height, width = image.shape[:2]
  return image[int(point[1] * height), int(point[0] * width)].astype(int)


def _assert_colour(image, point, colour, what=''):
  error = np.abs(_colour_at(image, point) - np.asarray(colour)).max()
  assert error <= _TOLERANCE, f'{what}: {_colour_at(image, point)} != {colour}'


def _read_csv(path: str) -> list[list[str]]:
  with open(path, newline='') as file:
    return list(csv.reader(file))


def _is_undecodable(path: str, expected_frames: int) -> bool:
  try:
    frames, _ = _decode(path)
  except (av.FFmpegError, OSError, ValueError):
    return True
  return len(frames) < expected_frames


# ---------------------------------------------------------------------------------------------
# Video files.


@pytest.mark.parametrize('ext', ['.mp4', '.mkv', '.webm'])
def test_write_video_keeps_frames_and_colours(tmp_path, ext):
  frames = np.full((12, 48, 64, 3), 128, np.uint8)
  frames[:, 8:24, 8:32] = (255, 0, 0)
  frames[6:, 24:40, 32:56] = (0, 0, 255)
  path = str(tmp_path / f'clip{ext}')
  fake_releases.write_video(path, frames, 10)
  decoded, times = _decode(path)
  assert decoded.shape == frames.shape
  np.testing.assert_allclose(times, np.arange(12) / 10, atol=1e-3)
  # Chroma is subsampled: compare away from colour edges (2 px either side).
  interior = np.ones(frames.shape[:3], bool)
  for axis in (1, 2):
    for shift in (-2, 2):
      interior &= np.all(frames == np.roll(frames, shift, axis), axis=-1)
  assert np.abs(decoded.astype(int) - frames).max(axis=-1)[interior].max() <= 8


@pytest.mark.parametrize('ext', ['.mp4', '.mkv', '.webm'])
def test_write_video_with_a_gap_seeks_past_it(tmp_path, ext):
  times = np.concatenate([[0.0], 899 + np.arange(30) / 10])
  frames = np.full((len(times), 48, 64, 3), 128, np.uint8)
  frames[times >= 900] = (0, 255, 0)
  path = str(tmp_path / f'movie{ext}')
  fake_releases.write_video(path, frames, 10, times=times)
  with av.open(path) as container:
    stream = container.streams.video[0]
    container.seek(int(900 / stream.time_base), stream=stream, backward=True)
    decoded = [(float(frame.pts * stream.time_base), frame.to_ndarray(format='rgb24'))
               for frame in container.decode(stream)]
  after = [(time, image) for time, image in decoded if time >= 900 - 1e-6]
  np.testing.assert_allclose([time for time, _ in after], 900 + np.arange(20) / 10, atol=1e-3)
  _assert_colour(after[0][1], (0.5, 0.5), (0, 255, 0))


def test_write_video_rejects_odd_sizes(tmp_path):
  with pytest.raises(ValueError, match='even'):
    fake_releases.write_video(str(tmp_path / 'x.mp4'), np.zeros((2, 47, 64, 3), np.uint8), 10)


@pytest.mark.parametrize('how', ['truncate', 'garbage'])
@pytest.mark.parametrize('ext', ['.mp4', '.mkv', '.webm'])
def test_corrupt_video_fails_to_decode(tmp_path, ext, how):
  path = str(tmp_path / f'clip{ext}')
  fake_releases.write_video(path, np.full((20, 48, 64, 3), 128, np.uint8), 10)
  size = os.path.getsize(path)
  fake_releases.corrupt_video(path, how)
  assert os.path.getsize(path) == (int(0.3 * size) if how == 'truncate' else size)
  assert _is_undecodable(path, 20)


# ---------------------------------------------------------------------------------------------
# AVA v2.2.


@pytest.fixture(scope='module')
def ava_releases(tmp_path_factory) -> dict[str, dict]:
  """One release per layout (and extension), written once for the module."""
  root = tmp_path_factory.mktemp('ava')
  return {
      'videos': fake_releases.write_ava_release(str(root / 'videos'), layout='videos'),
      'videos_15min': fake_releases.write_ava_release(str(root / 'cuts'), ext='.mkv'),
      'frames': fake_releases.write_ava_release(str(root / 'frames'), layout='frames'),
  }


def _ava_file(manifest: dict, name: str) -> str:
  return os.path.join(manifest['root'], 'annotations', name)


def _group_rows(rows: list[list[str]]) -> dict[tuple[str, int], dict]:
  """AVA CSV rows -> {(video, second): {'boxes', 'actions', 'person_ids'}}, boxes in row order."""
  grouped = {}
  for video_id, stamp, *coords, action, person in rows:
    keyframe = grouped.setdefault((video_id, int(stamp)),
                                  {'boxes': [], 'actions': [], 'person_ids': []})
    box = [float(value) for value in coords]
    if box not in keyframe['boxes']:
      keyframe['boxes'].append(box)
      keyframe['actions'].append([])
      keyframe['person_ids'].append(int(person.rstrip('_')))
    keyframe['actions'][keyframe['boxes'].index(box)].append(int(action))
  return grouped


def test_ava_annotation_files_have_official_names(ava_releases):
  for manifest in ava_releases.values():
    for name in ['ava_train_v2.2.csv', 'ava_val_v2.2.csv', 'ava_train_excluded_timestamps_v2.2.csv',
                 'ava_val_excluded_timestamps_v2.2.csv', 'ava_action_list_v2.2.pbtxt',
                 'ava_action_list_v2.2_for_activitynet_2019.pbtxt', 'ava_train_predicted_boxes.csv',
                 'ava_val_predicted_boxes.csv']:
      assert os.path.isfile(_ava_file(manifest, name)), name
    for name in fake_releases.AVA_LABEL_MAPS:
      with open(_ava_file(manifest, name), 'rb') as copy, open(
          os.path.join(fake_releases.FIXTURES_AVA, name), 'rb') as original:
        assert copy.read() == original.read()


def test_ava_csvs_parse_to_the_manifest(ava_releases):
  manifest = ava_releases['videos_15min']
  for split in ('train', 'val'):
    rows = _read_csv(_ava_file(manifest, f'ava_{split}_v2.2.csv'))
    assert all(len(row) == 8 and len(row[1]) == 4 for row in rows)
    grouped = _group_rows(rows)
    examples = manifest['examples'][split]
    assert list(grouped) == [(e['video_id'], e['timestamp']) for e in examples]
    for example in examples:
      assert grouped[example['video_id'], example['timestamp']] == {
          key: example[key] for key in ('boxes', 'actions', 'person_ids')}
    excluded = _read_csv(_ava_file(manifest, f'ava_{split}_excluded_timestamps_v2.2.csv'))
    assert excluded == [[e['video_id'], f"{e['timestamp']:04d}"] for e in examples if e['excluded']]
    assert excluded, 'an annotated keyframe must be excluded in every split'
  train = manifest['examples']['train']
  assert all(1 <= len(e['boxes']) <= 3 and all(1 <= len(a) <= 3 for a in e['actions'])
             for e in train)
  assert all(len(video_id) == 11 for video_id in manifest['videos']['train'])


def test_ava_val_rows_are_the_fixtures_rows(ava_releases):
  with open(os.path.join(fake_releases.FIXTURES_AVA, 'ava_val_v2.2_subset.csv')) as file:
    fixture_lines = file.read().splitlines()
  written = open(_ava_file(ava_releases['frames'], 'ava_val_v2.2.csv')).read().splitlines()
  keyframes = {tuple(line.split(',')[:2]) for line in written}
  assert keyframes == {(video_id, f'{stamp:04d}') for video_id in fake_releases.AVA_VAL_VIDEO_IDS
                       for stamp in (902, 903, 904)}
  assert written == [line for line in fixture_lines if tuple(line.split(',')[:2]) in keyframes]


def test_ava_irregular_person_id_is_kept_and_reported(tmp_path):
  manifest = fake_releases.write_ava_release(str(tmp_path), layout='frames', keyframes_per_video=5,
                                             num_train_videos=1, missing=('train/0', 'val/0',
                                                                          'val/1'))
  line = '1j20qq1JyX4,0906,0.175,0.001,0.995,1.000,80,3_'
  assert line in open(_ava_file(manifest, 'ava_val_v2.2.csv')).read().splitlines()
  assert manifest['irregular_person_ids'] == [
      {'video_id': '1j20qq1JyX4', 'timestamp': 906, 'line': line, 'person_id': '3_'}]
  assert not os.path.exists(os.path.join(str(tmp_path), 'frames'))


def test_ava_detections_jitter_the_ground_truth(ava_releases):
  manifest = ava_releases['videos']
  for split, action in (('train', ''), ('val', '-1')):
    rows = _read_csv(_ava_file(manifest, f'ava_{split}_predicted_boxes.csv'))
    assert all(len(row) == 8 and row[6] == action for row in rows)
    scores = np.array([float(row[7]) for row in rows])
    examples = manifest['examples'][split]
    assert np.sum(scores < 0.5) == len(examples)  # One false positive per keyframe.
    assert len(rows) == sum(len(e['boxes']) for e in examples) + len(examples)
    for example in examples:
      found = [[float(v) for v in row[2:6]] for row in rows
               if (row[0], int(row[1])) == (example['video_id'], example['timestamp'])
               and float(row[7]) >= 0.85]
      np.testing.assert_allclose(found, example['boxes'], atol=0.0105)


_DECODED = {}  # path -> _decode(path), for the AVA files read many times.


def _ava_frame(manifest: dict, video_id: str, movie_second: float) -> np.ndarray:
  """The picture a release shows at a movie second (nearest earlier frame)."""
  path = os.path.join(manifest['root'], manifest['paths'][video_id])
  cut_second = movie_second - fake_releases.AVA_CUT_START
  if manifest['layout'] == 'frames':
    number = int(np.floor(cut_second * fake_releases.AVA_FRAMES_FPS + 1e-6)) + 1
    return np.asarray(Image.open(os.path.join(path, f'{video_id}_{number:06d}.jpg')))
  if path not in _DECODED:
    _DECODED[path] = _decode(path)
  frames, times = _DECODED[path]
  second = movie_second if manifest['layout'] == 'videos' else cut_second
  return frames[np.searchsorted(times, second + 1e-6) - 1]


@pytest.mark.parametrize('layout', fake_releases.AVA_LAYOUTS)
def test_ava_files_hold_the_stated_frames(ava_releases, layout):
  manifest = ava_releases[layout]
  for video_id, relative in manifest['paths'].items():
    path = os.path.join(manifest['root'], relative)
    if layout == 'frames':
      names = sorted(os.listdir(path))
      assert len(names) == manifest['num_frames'][video_id]
      assert names[0] == f'{video_id}_000001.jpg'
      assert Image.open(os.path.join(path, names[0])).size == (128, 72)
      continue
    frames, times = _decode(path)
    assert frames.shape == (manifest['num_frames'][video_id], 72, 128, 3)
    end = times[-1] + 1 / manifest['fps']
    assert end == pytest.approx(manifest['durations'][video_id], abs=1e-3)
    if layout == 'videos':  # One frame at 0 s, then a gap to 899 s.
      assert times[0] == 0 and times[1] == pytest.approx(899)
  if layout == 'frames':
    lines = open(os.path.join(manifest['root'], 'frame_lists', 'val.csv')).read().splitlines()
    assert lines[0] == 'original_vido_id video_idx frame_id path labels'
    assert lines[1] == '1j20qq1JyX4 0 0 1j20qq1JyX4/1j20qq1JyX4_000001.jpg ""'


@pytest.mark.parametrize('layout', fake_releases.AVA_LAYOUTS)
def test_ava_boxes_are_drawn_around_their_keyframes(ava_releases, layout):
  manifest = ava_releases[layout]
  for split in ('train', 'val'):
    for example in manifest['examples'][split]:
      low, high = example['drawn_seconds']
      seconds = [example['timestamp']] + ([low, high - 0.1] if split == 'train' else [])
      for second in seconds:
        image = _ava_frame(manifest, example['video_id'], second)
        for colour, probe in zip(example['colours'], example['probes']):
          _assert_colour(image, probe, colour, f"{example['video_id']} {second}")
  # Train keyframes are 5 s apart: between windows the picture is plain grey.
  first = manifest['examples']['train'][0]
  image = _ava_frame(manifest, first['video_id'], first['timestamp'] + 2.5)
  assert np.abs(image.astype(int) - fake_releases.BACKGROUND).max() <= 16  # mpeg4 P-frame noise.


def test_ava_full_movie_seeks_into_a_keyframe_window(ava_releases):
  manifest = ava_releases['videos']
  example = manifest['examples']['val'][-1]
  path = os.path.join(manifest['root'], manifest['paths'][example['video_id']])
  with av.open(path) as container:
    stream = container.streams.video[0]
    container.seek(int((example['timestamp'] - 2) / stream.time_base), stream=stream, backward=True)
    for frame in container.decode(stream):
      if frame.pts * stream.time_base >= example['timestamp'] - 1e-6:
        break
  assert float(frame.pts * stream.time_base) == pytest.approx(example['timestamp'])
  image = frame.to_ndarray(format='rgb24')
  for colour, probe in zip(example['colours'], example['probes']):
    _assert_colour(image, probe, colour)


def test_ava_short_cut_ends_inside_its_last_window(ava_releases):
  manifest = ava_releases['videos_15min']
  last = [e for e in manifest['examples']['train'] if e['video_id'] == manifest['videos']['train'][-1]]
  cut_end = manifest['durations'][last[-1]['video_id']] + fake_releases.AVA_CUT_START
  assert cut_end < last[-1]['timestamp'] + fake_releases.AVA_WINDOW


def test_ava_missing_and_corrupt_videos(tmp_path):
  manifest = fake_releases.write_ava_release(
      str(tmp_path), keyframes_per_video=1, missing=('val/0',), corrupt={'-fake_trn00': 'garbage'})
  assert manifest['missing'] == ['1j20qq1JyX4'] and manifest['corrupt'] == {'-fake_trn00': 'garbage'}
  assert not os.path.exists(os.path.join(str(tmp_path), manifest['paths']['1j20qq1JyX4']))
  assert _is_undecodable(os.path.join(str(tmp_path), manifest['paths']['-fake_trn00']), 1)
  json.dumps(manifest)


# ---------------------------------------------------------------------------------------------
# AVA-Kinetics.


def test_ava_kinetics_release(tmp_path):
  manifest = fake_releases.write_ava_kinetics_release(str(tmp_path))
  for split, count in (('train', 3), ('val', 2)):
    rows = _read_csv(os.path.join(str(tmp_path), 'annotations', f'kinetics_{split}_v1.0.csv'))
    grouped = _group_rows(rows)
    examples = manifest['examples'][split]
    assert len(examples) == count == len(grouped)
    for example in examples:
      youtube_id, start, end = example['clip_id'].rsplit('_', 2)
      assert (youtube_id, int(end) - int(start)) == (example['video_id'], 4)
      assert int(start) < example['timestamp'] < int(end)
      assert grouped[youtube_id, example['timestamp']]['boxes'] == example['boxes']
      frames, times = _decode(os.path.join(str(tmp_path), manifest['paths'][example['clip_id']]))
      assert frames.shape == (40, 72, 128, 3)
      image = frames[np.searchsorted(times, example['keyframe_in_clip'] - 1e-6)]
      for colour, probe in zip(example['colours'], example['probes']):
        _assert_colour(image, probe, colour, example['clip_id'])
  json.dumps(manifest)


# ---------------------------------------------------------------------------------------------
# Classification releases.


def _check_clips(manifest: dict, splits=('train', 'val', 'test'), id_key='video_id'):
  """Every written clip decodes to its frame count and shows its class colour at the probe."""
  for split in splits:
    for example in manifest['examples'][split]:
      path = os.path.join(manifest['root'], manifest['paths'][example[id_key]])
      if example[id_key] in manifest['missing']:
        assert not os.path.exists(path)
        continue
      if example[id_key] in manifest['corrupt']:
        assert _is_undecodable(path, example['num_frames'])
        continue
      frames, times = _decode(path)
      assert frames.shape == (example['num_frames'], *manifest['frame_size'], 3)
      assert times[-1] + 1 / manifest['fps'] == pytest.approx(example['seconds'], abs=1e-3)
      _assert_colour(frames[len(frames) // 2], manifest['probe'], example['colour'], path)
      _assert_colour(frames[0], (0.02, 0.02), [fake_releases.BACKGROUND] * 3, path)


def test_kinetics_release_default_layout(tmp_path):
  manifest = fake_releases.write_kinetics_release(
      str(tmp_path), missing=('val/0',), corrupt={'train/1': 'truncate'})
  root = str(tmp_path)
  assert sorted(os.listdir(os.path.join(root, 'annotations'))) == [
      'test.csv', 'train.csv', 'validate.csv']
  for split, name in (('train', 'train.csv'), ('val', 'validate.csv'), ('test', 'test.csv')):
    with open(os.path.join(root, 'annotations', name), newline='') as file:
      rows = list(csv.DictReader(file))
    examples = manifest['examples'][split]
    assert [(r.get('label'), r['youtube_id'], int(r['time_start']), int(r['time_end']), r['split'])
            for r in rows] == [(e['label'], e['youtube_id'], e['time_start'], e['time_end'], split)
                               for e in examples]
    for example in examples:
      assert manifest['paths'][example['video_id']] == (
          f"{'val' if split == 'val' else split}/{example['youtube_id']}_"
          f"{example['time_start']:06d}_{example['time_end']:06d}.mp4")
  assert len(manifest['examples']['train']) == 6 and len(manifest['examples']['test']) == 3
  assert '-' in manifest['examples']['train'][0]['youtube_id']
  assert '_' in manifest['examples']['train'][1]['youtube_id']
  _check_clips(manifest)
  json.dumps(manifest)


def test_kinetics_release_variants(tmp_path):
  manifest = fake_releases.write_kinetics_release(
      str(tmp_path), num_classes=2, clips_per_class=(1, 1, 1), per_label_folders=True,
      val_dir='validate', val_csv='val.csv', ext='.webm', test_labels='empty', with_is_cc=True)
  root = str(tmp_path)
  header, *rows = _read_csv(os.path.join(root, 'annotations', 'test.csv'))
  assert header == ['label', 'youtube_id', 'time_start', 'time_end', 'split', 'is_cc']
  assert all(row[0] == '' for row in rows)
  header, *rows = _read_csv(os.path.join(root, 'annotations', 'val.csv'))
  assert [row[0] for row in rows] == manifest['class_names'] == ['abseiling', 'air drumming']
  val_example = manifest['examples']['val'][1]
  assert manifest['paths'][val_example['video_id']] == (
      f"validate/air drumming/{val_example['video_id']}.webm")
  assert os.path.dirname(manifest['paths'][manifest['videos']['test'][0]]) == 'test'
  _check_clips(manifest)


def test_moments_release(tmp_path):
  manifest = fake_releases.write_moments_release(str(tmp_path), corrupt={'val/2': 'garbage'})
  root = str(tmp_path)
  categories = _read_csv(os.path.join(root, 'moments_categories.txt'))
  assert categories == [[name, str(index)] for index, name in enumerate(manifest['class_names'])]
  for split, name, folder in (('train', 'trainingSet.csv', 'training'),
                              ('val', 'validationSet.csv', 'validation')):
    rows = _read_csv(os.path.join(root, name))
    examples = manifest['examples'][split]
    assert rows == [[e['file_id'], e['label'], str(e['agreement']), str(e['disagreement'])]
                    for e in examples]
    for file_id, label, _, _ in rows:
      assert file_id.startswith(label + '/') and file_id.endswith('.mp4')
      assert manifest['paths'][file_id] == f'{folder}/{file_id}'
  _check_clips(manifest, ('train', 'val'), id_key='file_id')


def test_ssv2_release(tmp_path):
  manifest = fake_releases.write_ssv2_release(str(tmp_path))
  labels_dir = os.path.join(str(tmp_path), 'labels')
  labels = json.load(open(os.path.join(labels_dir, 'something-something-v2-labels.json')))
  assert labels == {name: str(index) for index, name in enumerate(manifest['class_names'])}
  assert manifest['flip_pairs'] == [['Pushing something from left to right',
                                     'Pushing something from right to left']]
  for split, name in (('train', 'train'), ('val', 'validation')):
    entries = json.load(open(os.path.join(labels_dir, f'something-something-v2-{name}.json')))
    assert [entry['id'] for entry in entries] == manifest['videos'][split]
    for entry, example in zip(entries, manifest['examples'][split]):
      assert set(entry) == {'id', 'label', 'template', 'placeholders'}
      assert fake_releases.ssv2_label_name(entry['template']) == example['label']
      assert example['label'] in labels and '[' not in entry['label']
      assert os.path.isfile(os.path.join(str(tmp_path), '20bn-something-something-v2',
                                         entry['id'] + '.webm'))
  test_entries = json.load(open(os.path.join(labels_dir, 'something-something-v2-test.json')))
  assert test_entries == [{'id': clip_id} for clip_id in manifest['videos']['test']]
  _check_clips(manifest)
  # The pushed square moves the way its label says.
  for example in manifest['examples']['train']:
    if example['motion'] != 'none':
      frames, _ = _decode(os.path.join(str(tmp_path), manifest['paths'][example['video_id']]))
      start, end = (0.25, 0.75) if example['motion'] == 'left_to_right' else (0.75, 0.25)
      _assert_colour(frames[0], (start, 0.5), example['colour'], 'first frame')
      _assert_colour(frames[-1], (end, 0.5), example['colour'], 'last frame')
      _assert_colour(frames[-1], (start, 0.5), [fake_releases.BACKGROUND] * 3, 'last frame')


# ---------------------------------------------------------------------------------------------
# DMVR TFRecords.


def test_dmvr_tfrecords(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  manifest = fake_releases.write_dmvr_tfrecords(str(tmp_path / 'train.tfrecord'))
  assert [os.path.basename(path) for path in manifest['files']] == [
      'train.tfrecord-00000-of-00002', 'train.tfrecord-00001-of-00002']
  examples = iter(manifest['examples'])
  for path in manifest['files']:
    for record in tf.data.TFRecordDataset(path):
      context, sequence = tf.io.parse_single_sequence_example(
          record, context_features={'clip/label/index': tf.io.VarLenFeature(tf.int64),
                                    'clip/label/text': tf.io.VarLenFeature(tf.string)},
          sequence_features={'image/encoded': tf.io.FixedLenSequenceFeature([], tf.string)})
      expected = next(examples)
      assert context['clip/label/index'].values.numpy().tolist() == [expected['label']]
      assert context['clip/label/text'].values.numpy().tolist() == [expected['label_text'].encode()]
      assert sequence['image/encoded'].shape == (expected['num_frames'],)
      image = tf.io.decode_jpeg(sequence['image/encoded'][0]).numpy()
      assert image.shape == (48, 64, 3)
      _assert_colour(image, manifest['probe'], expected['colour'])
  assert next(examples, None) is None
  json.dumps(manifest)


def test_writers_are_deterministic(tmp_path):
  first = fake_releases.write_kinetics_release(str(tmp_path / 'a'), num_classes=1)
  second = fake_releases.write_kinetics_release(str(tmp_path / 'b'), num_classes=1)
  assert {**first, 'root': ''} == {**second, 'root': ''}
  for name in ('train.csv', 'validate.csv', 'test.csv'):
    assert ((tmp_path / 'a' / 'annotations' / name).read_bytes()
            == (tmp_path / 'b' / 'annotations' / name).read_bytes())
