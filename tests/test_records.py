"""Reading by index (ArrayRecord): seeded epochs, disjoint host shares, resumes that read nothing skipped."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.data import records

_DATASET = 'synthetic_actions_cls/tiny'  # 40 training clips


@pytest.fixture(scope='module')
def array_record_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('array_record'))
  tfds.builder(_DATASET, data_dir=data_dir, file_format='array_record').download_and_prepare()
  return data_dir


def _video_ids(dataset, count: int) -> list[tuple[int, str]]:
  return [(int(position), example['video_id'].decode())
          for position, example in dataset.take(count).as_numpy_iterator()]


def test_host_ranges_are_disjoint_and_cover_the_split():
  for total, hosts in ((40, 3), (7, 4), (5, 5)):
    ranges = [records.host_range(total, host, hosts) for host in range(hosts)]
    covered = np.concatenate([np.arange(start, end) for start, end in ranges])
    np.testing.assert_array_equal(covered, np.arange(total))
    sizes = [end - start for start, end in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_each_epoch_is_a_fresh_permutation_of_the_host_share(array_record_dir):
  builder = tfds.builder(_DATASET, data_dir=array_record_dir)
  assert records.is_random_access(builder)
  all_ids = [example['video_id'].decode() for _, example in records.read_indices(
      builder, 'train', 0, 40).as_numpy_iterator()]
  shares = []
  for host in range(2):
    start, end = records.host_range(40, host, 2)
    stream = _video_ids(records.read_shuffled_epochs(builder, 'train', seed=7, host=host,
                                                     num_hosts=2, start_position=0), 60)
    assert [position for position, _ in stream] == list(range(60))
    epochs = [[video for _, video in stream[:20]], [video for _, video in stream[20:40]]]
    for epoch in epochs:
      assert sorted(epoch) == sorted(all_ids[start:end])
    assert epochs[0] != epochs[1]
    shares.append(set(epochs[0]))
  assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == 40


def test_resume_starts_at_its_position_and_fetches_nothing_before_it(array_record_dir, monkeypatch):
  builder = tfds.builder(_DATASET, data_dir=array_record_dir)
  uninterrupted = _video_ids(records.read_shuffled_epochs(
      builder, 'train', seed=3, host=0, num_hosts=1, start_position=0), 70)
  fetched = []
  source_class = type(builder.as_data_source(split='train'))
  original = source_class.__getitems__
  monkeypatch.setattr(source_class, '__getitems__',
                      lambda self, keys: fetched.extend(keys) or original(self, keys))
  resumed = _video_ids(records.read_shuffled_epochs(
      builder, 'train', seed=3, host=0, num_hosts=1, start_position=45), 25)
  assert resumed == uninterrupted[45:70]
  # Only records of positions 45.. were read: the second epoch's (5..) and the third's first ones.
  index_of = {video: index for index, video in enumerate(
      example['video_id'].decode() for _, example in records.read_indices(
          builder, 'train', 0, 40).as_numpy_iterator())}
  assert fetched[:25] == [index_of[video] for _, video in uninterrupted[45:70]]


def test_training_batches_resume_exactly_on_array_record(array_record_dir):
  config = config_lib.task_config(
      'classification', _DATASET, num_classes=12, batch_size=4,
      input=config_lib.input_config(num_frames=4, crop_size=16, frame_stride=2))
  stream = pipeline.train_iterator(config, data_dir=array_record_dir, seed=1)
  uninterrupted = [next(stream) for _ in range(13)]
  resumed = pipeline.train_iterator(config, data_dir=array_record_dir, seed=1, start_batch=11)
  for expected in uninterrupted[11:]:
    batch = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)
