"""DMVR/Scenic SequenceExample TFRecords as a task's dataset, selected by file patterns."""
import jax
import numpy as np
import pytest

import fake_releases
from vivit_cofinetune import config_lib
from vivit_cofinetune.data import pipeline


@pytest.fixture(scope='module')
def task(tmp_path_factory):
  root = tmp_path_factory.mktemp('dmvr')
  train = fake_releases.write_dmvr_tfrecords(str(root / 'train'), num_files=3, examples_per_file=4)
  validation = fake_releases.write_dmvr_tfrecords(str(root / 'val'), num_files=2,
                                                  examples_per_file=3)
  config = config_lib.task_config(
      'classification', 'kinetics_dmvr', num_classes=3, batch_size=4, eval_batch_size=4,
      input=config_lib.input_config(num_frames=4, crop_size=16, frame_stride=1))
  config.dataset.format = 'sequence_example'
  config.dataset.files = dict(train=str(root / 'train-*'), validation=str(root / 'val-*'))
  config.dataset.class_names = train['class_names']
  return config, train, validation


def _label_from_pixels(video: np.ndarray, colours: dict, names: list) -> int:
  centre = video[0, video.shape[1] // 2, video.shape[2] // 2].astype(int)
  distances = [np.abs(centre - colours[name]).max() for name in names]
  return int(np.argmin(distances))


def test_training_reads_frames_and_labels(task):
  config, train, _ = task
  info = pipeline.dataset_info(config, data_dir='')
  assert info.class_names == train['class_names'] and info.num_train_examples == 12
  batch = next(pipeline.train_iterator(config, data_dir='', seed=0))
  assert batch['video'].shape == (4, 4, 16, 16, 3) and batch['video'].dtype == np.uint8
  for video, label in zip(batch['video'], batch['label']):
    assert label == _label_from_pixels(video, train['colours'], train['class_names'])


def test_training_resumes_exactly(task):
  config, _, _ = task
  stream = pipeline.train_iterator(config, data_dir='', seed=5)
  batches = [next(stream) for _ in range(5)]
  resumed = pipeline.train_iterator(config, data_dir='', seed=5, start_batch=3)
  for expected in batches[3:]:
    np.testing.assert_array_equal(next(resumed)['video'], expected['video'])


@pytest.mark.parametrize('hosts', [1, 2])
def test_evaluation_covers_every_example_once_across_hosts(hosts, task, monkeypatch):
  config, _, validation = task
  monkeypatch.setattr(jax, 'process_count', lambda: hosts)
  seen, num_batches = [], set()
  for host in range(hosts):
    monkeypatch.setattr(jax, 'process_index', lambda host=host: host)
    evaluation = pipeline.eval_input(config, data_dir='')
    batches = list(evaluation.batches())
    num_batches.add(len(batches))
    for batch in batches:
      for row in np.nonzero(batch['mask'])[0]:
        seen.append(int(batch['video_index'][row]))
        expected = _label_from_pixels(batch['video'][row], validation['colours'],
                                      validation['class_names'])
        assert batch['label'][row] == expected
  assert len(num_batches) == 1  # every host runs the same number of batches
  assert sorted(seen) == list(range(len(validation['examples'])))


def test_missing_files_are_reported_by_the_config_check(task):
  config, _, _ = task
  experiment = config_lib.ml_collections.ConfigDict(dict(data_dir='', tasks=dict(k=config)))
  experiment.tasks.k.dataset.files = dict(train='/nonexistent/train-*', validation='/nonexistent/v-*')
  assert pipeline.known_datasets(experiment) == {'kinetics_dmvr': False}
