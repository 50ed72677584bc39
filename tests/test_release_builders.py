"""The release builders on fake releases in every official layout (tests/fake_releases.py).

Expected values come from the fake release's manifest (what was written into the CSVs and drawn into
the frames), never from the builders' own output.
"""
import csv
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import fake_releases
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.data import dataset_info
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.data import prepare
from vivit_cofinetune.data import records
from vivit_cofinetune.data.builders import video_builder

_SPLITS = {'train': 'train', 'val': 'validation', 'test': 'test'}


def _records(builder, split: str) -> list[dict]:
  """The split's records in file order, frames left as JPEG bytes."""
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD  # what prepare writes
  count = builder.info.splits[split].num_examples
  return [example for _, example in records.read_indices(builder, split, 0, count).as_numpy_iterator()]


def _prepare(tmp_path, dataset: str, manual_dir: str, **kwargs):
  return prepare.prepare(dataset, manual_dir=manual_dir, data_dir=str(tmp_path / 'tfds'), **kwargs)


def _expected_ava_examples(manifest: dict, split: str) -> list[dict]:
  """Non-excluded keyframes: the annotated ones, and for validation those only the detector saw."""
  by_key = {(e['video_id'], e['timestamp']): e for e in manifest['examples'][split]
            if not e['excluded']}
  detections = {}
  for row in manifest['detections'][split]:
    detections.setdefault((row['video_id'], row['timestamp']), []).append(row)
  excluded = {(e['video_id'], e['timestamp']) for e in manifest['examples'][split] if e['excluded']}
  keys = set(by_key) | ((set(detections) - excluded) if split == 'val' else set())
  return [dict(by_key.get(key, dict(video_id=key[0], timestamp=key[1], boxes=[], actions=[],
                                     person_ids=[])), detections=detections.get(key, []))
          for key in sorted(keys)]


@pytest.mark.parametrize('layout,ext', [('videos', '.mp4'), ('videos_15min', '.mkv'),
                                        ('frames', None)])
def test_ava_examples_round_trip_in_every_layout(layout, ext, tmp_path):
  manifest = fake_releases.write_ava_release(str(tmp_path / 'ava'), layout=layout,
                                             ext=ext or '.mp4', keyframes_per_video=5)
  builder = _prepare(tmp_path, 'ava_v2_2/tiny', manifest['root'])
  class_ids = builder.info.metadata['class_ids']
  assert class_ids == list(range(1, 81)) and len(builder.info.metadata['eval_class_ids']) == 60
  for split in ('train', 'val'):
    expected = _expected_ava_examples(manifest, split)
    records = _records(builder, _SPLITS[split])
    assert len(records) == len(expected)
    stored = builder.info.metadata['splits'][_SPLITS[split]]
    assert stored['example_video_ids'] == [e['video_id'] for e in expected]
    for record, example in zip(records, expected):
      assert (record['video_id'].decode(), record['timestamp']) == (example['video_id'],
                                                                   example['timestamp'])
      # The CSV's x1, y1, x2, y2 as y1, x1, y2, x2, to float32 exactly.
      boxes = np.asarray(example['boxes'], np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]
      np.testing.assert_array_equal(record['gt_boxes'], boxes)
      labels = np.zeros((len(boxes), 80), bool)
      for row, actions in enumerate(example['actions']):
        labels[row, [class_ids.index(action) for action in actions]] = True
      np.testing.assert_array_equal(record['gt_labels'], labels)
      np.testing.assert_array_equal(record['gt_person_ids'], example['person_ids'])
      detected = np.asarray([d['box'] for d in example['detections']], np.float32).reshape(-1, 4)
      np.testing.assert_array_equal(record['detector_boxes'], detected[:, [1, 0, 3, 2]])
      np.testing.assert_array_equal(record['detector_scores'],
                                    np.asarray([d['score'] for d in example['detections']],
                                               np.float32))
      # tiny: 4 fps, 2 s around the keyframe, the keyframe in the middle, short side 32.
      assert len(record['video']) == 9 and record['keyframe_index'] == 4
      assert tf.image.extract_jpeg_shape(record['video'][0]).numpy().tolist() == [32, 56, 3]
  # The official evaluation files travel with the dataset, byte for byte.
  annotations = os.path.join(manifest['root'], 'annotations')
  for stored, official in (('groundtruth_validation.csv', 'ava_val_v2.2.csv'),
                           ('excluded_timestamps_validation.csv',
                            'ava_val_excluded_timestamps_v2.2.csv'),
                           ('eval_label_map.pbtxt',
                            'ava_action_list_v2.2_for_activitynet_2019.pbtxt')):
    with open(os.path.join(builder.data_dir, stored), 'rb') as copy, open(
        os.path.join(annotations, official), 'rb') as original:
      assert copy.read() == original.read(), stored


def test_ava_keyframe_frames_show_the_drawn_boxes_and_edges_repeat(tmp_path):
  manifest = fake_releases.write_ava_release(str(tmp_path / 'ava'), layout='videos_15min')
  builder = _prepare(tmp_path, 'ava_v2_2/tiny', manifest['root'])
  expected = {(e['video_id'], e['timestamp']): e for e in manifest['examples']['train']}
  for record in _records(builder, 'train'):
    example = expected[(record['video_id'].decode(), record['timestamp'])]
    keyframe = tf.io.decode_jpeg(record['video'][record['keyframe_index']]).numpy()
    height, width = keyframe.shape[:2]
    for (x, y), colour in zip(example['probes'], example['colours']):
      pixel = keyframe[int(y * height), int(x * width)].astype(int)
      assert np.abs(pixel - colour).max() < 60, (record['video_id'], pixel, colour)
  # The last train cut ends 1 s after its last keyframe: the window's last frames repeat.
  last = _records(builder, 'train')[-1]
  assert last['video'][-1] == last['video'][-2]


def test_ava_kinetics_examples_round_trip(tmp_path):
  manifest = fake_releases.write_ava_kinetics_release(str(tmp_path / 'avak'))
  builder = _prepare(tmp_path, 'ava_kinetics/tiny', manifest['root'])
  for split in ('train', 'val'):
    expected = sorted(manifest['examples'][split], key=lambda e: (e['video_id'], e['timestamp']))
    records = _records(builder, _SPLITS[split])
    assert [(r['video_id'].decode(), r['timestamp']) for r in records] == [
        (e['video_id'], e['timestamp']) for e in expected]
    for record, example in zip(records, expected):
      boxes = np.asarray(example['boxes'], np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]
      np.testing.assert_array_equal(record['gt_boxes'], boxes)


@pytest.mark.parametrize('dataset,writer,options', [
    ('kinetics400/tiny', fake_releases.write_kinetics_release, dict(per_label_folders=True,
                                                                     val_dir='validate')),
    ('kinetics700/tiny', fake_releases.write_kinetics_release, dict(val_csv='val.csv', ext='.webm')),
    ('moments_in_time/tiny', fake_releases.write_moments_release, {}),
    ('ssv2/tiny', fake_releases.write_ssv2_release, {}),
])
def test_classification_releases_round_trip(dataset, writer, options, tmp_path):
  manifest = writer(str(tmp_path / 'release'), **options)
  builder = _prepare(tmp_path, dataset, manifest['root'])
  names = builder.info.metadata['class_names']
  assert names == sorted(names) if dataset.startswith('kinetics') else len(names) > 1
  examples = manifest['examples']
  examples = examples if isinstance(examples, list) else [e for split in examples.values()
                                                         for e in split]
  for split in ('train', 'val'):
    # Moments in Time names a clip by its path below the split folder, without the extension.
    expected = {e.get('video_id') or os.path.splitext(e['file_id'])[0]: e['label']
                for e in examples if e['split'] == split}
    records = _records(builder, _SPLITS[split])
    assert {r['video_id'].decode(): names[r['label']] for r in records} == expected
    for record in records if 'motions' not in manifest else []:  # colour fills the centre
      frame = tf.io.decode_jpeg(record['video'][0]).numpy()
      colour = manifest['colours'][names[record['label']]]
      centre = frame[frame.shape[0] // 2, frame.shape[1] // 2].astype(int)
      assert np.abs(centre - colour).max() < 60
  assert builder.info.metadata['mirror_symmetric'] == (not dataset.startswith('ssv2'))


def test_ssv2_clips_are_never_flipped(tmp_path):
  manifest = fake_releases.write_ssv2_release(str(tmp_path / 'ssv2'))
  _prepare(tmp_path, 'ssv2/tiny', manifest['root'])
  task = _task('classification', 'ssv2/tiny', num_classes=len(manifest['class_names']))
  # A left-to-right square keeps moving right in every training clip (it would move left if flipped).
  moves_right = manifest['class_names'].index('Pushing something from left to right')
  for seed in range(3):
    batch = next(pipeline.train_iterator(task, data_dir=str(tmp_path / 'tfds'), seed=seed))
    for video, label in zip(batch['video'], batch['label']):
      if label == moves_right:
        frames = video.astype(int)
        saturated = frames.max(axis=-1) - frames.min(axis=-1) > 100  # the square, not the grey
        columns = [np.nonzero(saturated[index].any(axis=0))[0].mean() for index in (0, -1)]
        assert columns[1] > columns[0]


def _task(kind: str, dataset: str, *, num_classes: int, **inputs):
  from vivit_cofinetune import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.task_config(
      kind, dataset, num_classes=num_classes, batch_size=2, max_boxes=3,
      input=config_lib.input_config(num_frames=4, crop_size=32, frame_stride=1, **inputs))


def test_bad_videos_are_skipped_listed_and_fail_the_build_past_the_limit(tmp_path):
  manifest = fake_releases.write_kinetics_release(
      str(tmp_path / 'k'), clips_per_class=(3, 1, 1), missing=['train/0'],
      corrupt={'train/1': 'truncate', 'train/2': 'garbage'})
  with pytest.raises(video_builder.SkippedVideos) as error:
    _prepare(tmp_path, 'kinetics600/tiny', manifest['root'])
  bad = manifest['videos']['train'][:3]
  assert all(video_id in str(error.value) for video_id in bad)
  builder = _prepare(tmp_path, 'kinetics600/tiny', manifest['root'], max_skipped_fraction=0.5)
  assert builder.info.splits['train'].num_examples == len(manifest['videos']['train']) - 3
  with open(os.path.join(builder.data_dir, video_builder.SKIPPED_FILE)) as file:
    rows = list(csv.DictReader(file))
  assert sorted(row['video_id'] for row in rows) == sorted(bad)
  reasons = {row['video_id']: row['reason'] for row in rows}
  assert reasons[bad[0]] == 'missing file'
  assert all(reasons[video_id].startswith('undecodable') for video_id in bad[1:])


def test_prepare_command_names_an_unknown_dataset(tmp_path):
  with pytest.raises(SystemExit) as error:
    prepare.main(['kinetics1000', '--manual_dir', str(tmp_path), '--data_dir', str(tmp_path)])
  assert 'kinetics1000' in str(error.value) and 'kinetics700' in str(error.value)


def test_crop_and_flip_keep_each_box_on_its_pixels(tmp_path):
  manifest = fake_releases.write_ava_release(str(tmp_path / 'ava'), layout='videos_15min')
  _prepare(tmp_path, 'ava_v2_2/tiny', manifest['root'])
  task = _task('localisation', 'ava_v2_2/tiny', num_classes=80, min_crop_area=0.3)
  checked = 0
  for seed in range(10):
    batch = next(pipeline.train_iterator(task, data_dir=str(tmp_path / 'tfds'), seed=seed))
    for video, boxes, box_mask in zip(batch['video'], batch['boxes'], batch['box_mask']):
      keyframe = video[len(video) // 2].astype(int)
      for y1, x1, y2, x2 in boxes[box_mask]:
        if min(y1, x1) <= 0.0 or max(y2, x2) >= 1.0:
          continue  # cut by the crop: its centre need not be the person's centre
        pixel = keyframe[int((y1 + y2) / 2 * 32), int((x1 + x2) / 2 * 32)]
        # The centre of a box lies on a drawn person (a saturated colour), not the grey background.
        assert int(pixel.max()) - int(pixel.min()) > 100, pixel
        checked += 1
  assert checked >= 4


def test_ava_and_ava_kinetics_train_and_evaluate_as_one_task(tmp_path):
  ava_release = fake_releases.write_ava_release(str(tmp_path / 'ava'))
  kinetics_release = fake_releases.write_ava_kinetics_release(str(tmp_path / 'avak'))
  parts = [_prepare(tmp_path, 'ava_v2_2/tiny', ava_release['root']),
           _prepare(tmp_path, 'ava_kinetics/tiny', kinetics_release['root'])]
  data_dir = str(tmp_path / 'tfds')
  task = _task('localisation', 'ava_v2_2/tiny+ava_kinetics/tiny', num_classes=80)
  info = pipeline.dataset_info(task, data_dir)
  assert info.num_train_examples == sum(part.info.splits['train'].num_examples for part in parts)
  np.testing.assert_array_equal(info.train_class_counts, np.sum(
      [part.info.metadata['splits']['train']['class_counts'] for part in parts], axis=0))
  assert [os.path.dirname(path) for path in info.evaluation_files['groundtruth']] == [
      part.data_dir for part in parts]
  evaluation = pipeline.eval_input(task, data_dir=data_dir)
  indices = np.concatenate([batch['video_index'][batch['mask']] for batch in evaluation.batches()])
  expected_ids = [example['video_id'].decode() for part in parts
                  for example in _records(part, 'validation')]
  assert sorted(indices.tolist()) == list(range(len(expected_ids)))
  assert evaluation.video_ids == expected_ids
  batch = next(pipeline.train_iterator(task, data_dir=data_dir, seed=0))
  assert batch['box_mask'].any()
  # Evaluation scores against both official val CSVs, one after the other.
  task.eval_class_ids = list(range(1, 81))
  localisation = tasks_lib.make_task('ava', task, info)
  groundtruth = localisation.groundtruth({}, [])
  rows = [row for path in info.evaluation_files['groundtruth'] for row in csv.reader(open(path))]
  assert len(groundtruth) == len(rows)
  assert groundtruth.video_id.tolist() == [row[0] for row in rows]


def _pbtxt_items(path: str) -> dict[int, str]:
  """id -> name of a label map (`name: "..."` then `id: N` or `label_id: N`), parsed independently."""
  with open(path) as file:
    return {int(number): name for name, number in
            re.findall(r'name:\s*"([^"]*)"\s*(?:label_)?id:\s*(\d+)', file.read())}


def test_prepared_ava_records_its_classes_and_evaluation_files(tmp_path):
  ava_release = fake_releases.write_ava_release(str(tmp_path / 'ava'))
  kinetics_release = fake_releases.write_ava_kinetics_release(str(tmp_path / 'avak'))
  parts = [_prepare(tmp_path, 'ava_v2_2/tiny', ava_release['root']),
           _prepare(tmp_path, 'ava_kinetics/tiny', kinetics_release['root'])]
  recorded = dataset_info.localisation_info('ava_v2_2/tiny+ava_kinetics/tiny',
                                            str(tmp_path / 'tfds'))
  annotations = os.path.join(ava_release['root'], 'annotations')
  label_map = _pbtxt_items(os.path.join(annotations, fake_releases.AVA_LABEL_MAPS[0]))
  eval_label_map = _pbtxt_items(os.path.join(annotations, fake_releases.AVA_LABEL_MAPS[1]))
  assert recorded.class_ids == sorted(label_map) == list(range(1, 81))
  assert recorded.class_names == [label_map[i] for i in sorted(label_map)]
  assert recorded.eval_class_ids == sorted(eval_label_map) and len(eval_label_map) == 60
  assert recorded.eval_labelmap == {i: label_map[i] for i in sorted(eval_label_map)}
  files = recorded.evaluation_files['validation']
  originals = {'groundtruth': ['ava_val_v2.2.csv', 'kinetics_val_v1.0.csv'],
               'eval_label_map': [fake_releases.AVA_LABEL_MAPS[1]] * 2}
  roots = [ava_release['root'], kinetics_release['root']]
  for kind, names in originals.items():
    assert [os.path.dirname(path) for path in files[kind]] == [part.data_dir for part in parts]
    for path, root, name in zip(files[kind], roots, names):
      with open(path, 'rb') as copy, open(os.path.join(root, 'annotations', name), 'rb') as original:
        assert copy.read() == original.read(), (kind, path)
  assert set(recorded.evaluation_files) == {'train', 'validation'}
