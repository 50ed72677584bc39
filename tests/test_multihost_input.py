"""Every host of a multi-host job reads its own share of each dataset: disjoint, and together complete.

Two real processes joined by jax.distributed read each format (TFRecord, ArrayRecord, DMVR
SequenceExample files) for training and for evaluation, as the pipeline does, and report which
examples they got; three hosts (an uneven split) are checked in-process through the same function.
Run as a program, this file is one of those processes.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

import fake_releases
from vivit_cofinetune.data import records
from vivit_cofinetune.data import sequence_examples

_TIMEOUT_S = 300


def _builders(spec: dict) -> dict:
  """Format name -> the dataset the pipeline would read, from a JSON-able spec."""
  return {'tfrecord_cls': tfds.builder('synthetic_actions_cls/tiny', data_dir=spec['data_dir']),
          'tfrecord_loc': tfds.builder('synthetic_actions_loc/tiny', data_dir=spec['data_dir']),
          'array_record': tfds.builder('synthetic_actions_cls/tiny',
                                       data_dir=spec['array_record_dir']),
          'sequence_example': sequence_examples.SequenceExampleFiles(
              'dmvr', spec['dmvr_files'], num_classes=spec['dmvr_classes'])}


def _example_id(example: dict) -> str:
  # The DMVR files the test writes give every example its own label.
  return example['video_id'].decode() if 'video_id' in example else str(int(example['label']))


def read_shares(spec: dict, host: int, num_hosts: int) -> dict:
  """Per format: ids of this host's first training epoch, and (global index, id) of its eval share."""
  shares = {}
  for name, builder in _builders(spec).items():
    train_size = records.eval_sizes(builder, 'train', num_hosts)[host]
    train = records.train_stream(builder, 'train', seed=host + 1, host=host, num_hosts=num_hosts,
                                 start_position=0, shuffle_buffer=64)
    evaluation = records.eval_stream(builder, 'validation', host=host, num_hosts=num_hosts)
    shares[name] = {
        'train': [_example_id(example) for _, example in train.take(train_size).as_numpy_iterator()],
        'eval': [[int(index), _example_id(example)]
                 for index, example in evaluation.as_numpy_iterator()]}
  return shares


def _all_ids(builder, split: str) -> list[str]:
  """Every example id of the split, in file order, read on one host."""
  return [_example_id(example)
          for _, example in records.eval_stream(builder, split, host=0, num_hosts=1).as_numpy_iterator()]


@pytest.fixture(scope='module')
def spec(data_dir, tmp_path_factory) -> dict:
  root = tmp_path_factory.mktemp('multihost')
  tfds.builder('synthetic_actions_cls/tiny', data_dir=str(root / 'array_record'),
               file_format='array_record').download_and_prepare()
  # 5 training files for 2 or 3 hosts: unequal file counts per host; unique labels name examples.
  fake_releases.write_dmvr_tfrecords(str(root / 'dmvr' / 'train'), num_files=5, examples_per_file=3,
                                     num_classes=15, num_frames=2)
  fake_releases.write_dmvr_tfrecords(str(root / 'dmvr' / 'val'), num_files=3, examples_per_file=2,
                                     num_classes=15, num_frames=2)
  return {'data_dir': str(data_dir), 'array_record_dir': str(root / 'array_record'),
          'dmvr_files': {'train': str(root / 'dmvr' / 'train-*'),
                         'validation': str(root / 'dmvr' / 'val-*')},
          'dmvr_classes': 15}


def _check_shares(spec: dict, shares: list[dict]) -> None:
  for name, builder in _builders(spec).items():
    for split, key in (('train', 'train'), ('validation', 'eval')):
      expected = _all_ids(builder, split)
      if key == 'train':
        per_host = [host_shares[name]['train'] for host_shares in shares]
      else:
        per_host = [[example_id for _, example_id in host_shares[name]['eval']]
                    for host_shares in shares]
        # Global eval indices number the split's examples once each; for TFDS datasets they are the
        # examples' places in the split, which the stored video ids are listed by.
        indexed = sorted(pair for host_shares in shares for pair in host_shares[name]['eval'])
        assert [index for index, _ in indexed] == list(range(len(expected))), name
        if name != 'sequence_example':  # host h reads files h, h + hosts, ...: indices go host-major
          assert indexed == [[index, example_id] for index, example_id in enumerate(expected)], name
      for host, ids in enumerate(per_host):
        assert len(set(ids)) == len(ids), f'{name} {split}: host {host} reads an example twice'
      for host, ids in enumerate(per_host):
        for other in range(host):
          assert not set(ids) & set(per_host[other]), f'{name} {split}: hosts {other}, {host} overlap'
      assert sorted(sum(per_host, [])) == sorted(expected), f'{name} {split}: shares miss examples'


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_read_disjoint_complete_shares(spec, tmp_path):
  address = f'127.0.0.1:{_free_port()}'
  spec_file = tmp_path / 'spec.json'
  spec_file.write_text(json.dumps(spec))
  processes = [subprocess.Popen(
      [sys.executable, __file__, address, str(index), str(spec_file), str(tmp_path / f'{index}.json')],
      cwd=pathlib.Path(__file__).parent, stderr=subprocess.PIPE, text=True) for index in range(2)]
  for process in processes:
    _, error = process.communicate(timeout=_TIMEOUT_S)
    assert process.returncode == 0, error[-5000:]
  _check_shares(spec, [json.loads((tmp_path / f'{index}.json').read_text()) for index in range(2)])


def test_three_hosts_read_disjoint_complete_shares(spec):
  _check_shares(spec, [read_shares(spec, host, 3) for host in range(3)])


if __name__ == '__main__':
  coordinator, process_id, spec_path, output_path = sys.argv[1:]
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(coordinator, num_processes=2, process_id=int(process_id))
  result = read_shares(json.loads(pathlib.Path(spec_path).read_text()), jax.process_index(),
                       jax.process_count())
  pathlib.Path(output_path).write_text(json.dumps(result))
  jax.distributed.shutdown()
