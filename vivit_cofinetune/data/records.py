"""Reading a split's records: by index (ArrayRecord), sequentially (TFRecord), or SequenceExample files.

`prepare` writes the release datasets as ArrayRecord, which can be read by index. Training then reads
host h's contiguous share of the split in a fresh seeded permutation every epoch, so the example at
position p of the host's stream is a pure function of (seed, host, p): a resume at position p starts
there without reading anything before it, and every epoch is a full shuffle. Datasets in TFRecord (the
synthetic sets, or a `tfds build` without `--file_format=array_record`) are read sequentially through
TFDS, and a resume skips the consumed records (read, never decoded).

DMVR/Scenic SequenceExample files (data/sequence_examples.py) are read like TFRecords, each host its
own files. Records come back with the video left encoded, parsed exactly as `builder.as_dataset` would.
The pipeline asks for a training stream, evaluation shares and video ids; only this module knows the
formats.
"""
import functools
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune.data import sequence_examples

# Records fetched per call into Python: amortises the call, small enough to keep the stream flowing.
_FETCH_BATCH = 32


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # No autotuning model: its thread backs off to sleeping up to a minute between rounds, and
  # destroying an iterator waits for it, so every run stalled for up to 60 s on exit. The pipeline's
  # maps use the host's cores instead.
  options.autotune.enabled = False
  return options


def is_random_access(builder: tfds.core.DatasetBuilder) -> bool:
  return builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD


def host_range(num_examples: int, host: int, num_hosts: int) -> tuple[int, int]:
  """[start, end) of host's contiguous share of a split; shares differ in size by at most one."""
  return num_examples * host // num_hosts, num_examples * (host + 1) // num_hosts


def read_sequential(builder: tfds.core.DatasetBuilder, split: Any, *, shuffle_seed: int | None,
                    decoders: Any = None) -> tf.data.Dataset:
  """Records of `split` through TFDS, by default with the video left encoded."""
  # The release builders write in order (so example i's video id is known); training still shuffles.
  read_config = tfds.ReadConfig(options=_options(), try_autocache=False, shuffle_seed=shuffle_seed,
                                shuffle_reshuffle_each_iteration=True, enable_ordering_guard=False)
  return builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None,
                            read_config=read_config,
                            decoders=decoders or {'video': tfds.decode.SkipDecoding()})


def _parse(builder: tfds.core.DatasetBuilder, serialized: tf.Tensor,
           decoders: Any) -> dict[str, tf.Tensor]:
  features = builder.info.features
  parser = tfds.core.example_parser.ExampleParser(features.get_serialized_info())
  return features.decode_example(parser.parse_example(serialized), decoders=decoders)


def _fetch(builder: tfds.core.DatasetBuilder, split: str, positions: tf.data.Dataset,
           index_of, decoders: Any) -> tf.data.Dataset:
  """(position, record) for every position, the record read at index_of(positions) of `split`."""
  source = builder.as_data_source(split=split,
                                  deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)

  def read(batch: np.ndarray) -> np.ndarray:
    return np.asarray(source.__getitems__(index_of(batch).tolist()), dtype=object)

  def fetch(batch):
    serialized = tf.numpy_function(read, [batch], tf.string, stateful=False)
    return batch, tf.ensure_shape(serialized, batch.shape)

  pairs = positions.batch(_FETCH_BATCH).map(fetch).unbatch()
  return pairs.map(lambda position, serialized: (position, _parse(builder, serialized, decoders))
                   ).with_options(_options())


def read_indices(builder: tfds.core.DatasetBuilder, split: str, start: int, end: int, *,
                 decoders: Any = None) -> tf.data.Dataset:
  """(index, record) for records [start, end) of `split`, in order."""
  positions = tf.data.Dataset.range(start, end)
  return _fetch(builder, split, positions, lambda batch: batch,
                decoders or {'video': tfds.decode.SkipDecoding()})


def read_shuffled_epochs(builder: tfds.core.DatasetBuilder, split: str, *, seed: int, host: int,
                         num_hosts: int, start_position: int) -> tf.data.Dataset:
  """(position, record) from `start_position` on, forever: epoch after epoch of this host's share.

  Position p is record permutation_e[p mod n] of the share, e = p // n, with a permutation seeded by
  (seed, e): nothing before start_position is read.
  """
  first, end = host_range(builder.info.splits[split].num_examples, host, num_hosts)
  size = end - first
  if size == 0:
    raise ValueError(f'{builder.name} {split}: no example for host {host} of {num_hosts}')

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    return first + np.random.default_rng([seed, epoch]).permutation(size)

  def index_of(batch: np.ndarray) -> np.ndarray:
    return np.array([permutation(int(p) // size)[int(p) % size] for p in batch], np.int64)

  positions = tf.data.Dataset.counter(start_position)
  return _fetch(builder, split, positions, index_of, {'video': tfds.decode.SkipDecoding()})


def _read_sequence_examples(dataset: sequence_examples.SequenceExampleFiles, split: str, *,
                            host: int, num_hosts: int, shuffle_seed: int | None) -> tf.data.Dataset:
  files = dataset.host_files(split, host, num_hosts)
  if not files:
    raise ValueError(f'{dataset.name} {split}: {len(dataset.files[split])} files cannot feed '
                     f'{num_hosts} hosts; give it at least one file per host')
  paths = tf.data.Dataset.from_tensor_slices(files)
  if shuffle_seed is not None:
    paths = paths.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=True)
  serialized = paths.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                deterministic=True)
  return serialized.map(sequence_examples.parse).with_options(_options())


def train_stream(builder: Any, split: str, *, seed: int, host: int, num_hosts: int,
                 start_position: int, shuffle_buffer: int) -> tf.data.Dataset:
  """(position, record) of this host's training stream from `start_position` on, forever."""
  if is_random_access(builder):
    # Every epoch a fresh permutation of this host's share; a resume reads nothing before it.
    return read_shuffled_epochs(builder, split, seed=seed, host=host, num_hosts=num_hosts,
                                start_position=start_position)
  if isinstance(builder, sequence_examples.SequenceExampleFiles):
    ordered = _read_sequence_examples(builder, split, host=host, num_hosts=num_hosts,
                                      shuffle_seed=seed)
  else:
    share = tfds.even_splits(split, n=num_hosts)[host]
    ordered = read_sequential(builder, share, shuffle_seed=seed)
  ordered = ordered.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  # Skipping before decoding keeps a resume cheap; positions (hence augmentations) are unchanged.
  return ordered.repeat().enumerate().skip(start_position)


def eval_sizes(builder: Any, split: str, num_hosts: int) -> list[int]:
  """Examples each host evaluates; host shares are contiguous, so host h starts at sum(sizes[:h])."""
  if isinstance(builder, sequence_examples.SequenceExampleFiles):
    return builder.host_sizes(split, num_hosts)
  if is_random_access(builder):
    total = builder.info.splits[split].num_examples
    return [end - start for start, end in (host_range(total, host, num_hosts)
                                           for host in range(num_hosts))]
  return [builder.info.splits[share].num_examples for share in tfds.even_splits(split, n=num_hosts)]


def eval_stream(builder: Any, split: str, *, host: int, num_hosts: int) -> tf.data.Dataset:
  """(global index, record) of this host's evaluation share, in order."""
  start = sum(eval_sizes(builder, split, num_hosts)[:host])
  if isinstance(builder, sequence_examples.SequenceExampleFiles):
    return _read_sequence_examples(builder, split, host=host, num_hosts=num_hosts,
                                   shuffle_seed=None).enumerate(start=start)
  if is_random_access(builder):
    return read_indices(builder, split, *host_range(builder.info.splits[split].num_examples, host,
                                                    num_hosts))
  share = tfds.even_splits(split, n=num_hosts)[host]
  return read_sequential(builder, share, shuffle_seed=None).enumerate(start=start)


def example_video_ids(builder: Any, split: str, num_hosts: int) -> list[str]:
  """Global eval index -> video id, read the way eval_stream reads (SequenceExamples: the index)."""
  if isinstance(builder, sequence_examples.SequenceExampleFiles):
    return [str(index) for index in range(sum(eval_sizes(builder, split, num_hosts)))]
  if is_random_access(builder):
    streams = [eval_stream(builder, split, host=host, num_hosts=num_hosts)
               for host in range(num_hosts)]
  else:
    only_ids = tfds.decode.PartialDecoding({'video_id': True})
    streams = [read_sequential(builder, share, shuffle_seed=None, decoders=only_ids).enumerate()
               for share in tfds.even_splits(split, n=num_hosts)]
  return [example['video_id'].decode() for stream in streams
          for _, example in stream.as_numpy_iterator()]
