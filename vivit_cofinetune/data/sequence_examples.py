"""DMVR/Scenic SequenceExample TFRecords as a dataset, read in place (Scenic users already have them).

A task selects them with file patterns instead of a TFDS name:

  config.tasks.kinetics700.dataset = dict(
      name='kinetics700_dmvr', format='sequence_example',
      files=dict(train='gs://BUCKET/k700/train-*', validation='gs://BUCKET/k700/val-*'),
      num_examples=dict(train=545_317, validation=34_142))  # optional: else counted at start-up

Each record is a tf.train.SequenceExample with the feature list `image/encoded` (one JPEG per frame)
and the context `clip/label/index` (int64; the first is the class) and optionally `clip/label/text`.
Hosts read disjoint sets of files (file i goes to host i mod hosts). Class names come from
`dataset.class_names` when given, else they are the indices as text. This class offers the part of a
TFDS builder that the input pipeline uses (`name`, `info.features`, `info.metadata`, `info.splits`).
"""
from collections.abc import Mapping, Sequence
import dataclasses
import functools
from typing import Any

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

FORMAT = 'sequence_example'
FRAMES_KEY = 'image/encoded'
LABEL_KEY = 'clip/label/index'
TEXT_KEY = 'clip/label/text'


@dataclasses.dataclass(frozen=True)
class _SplitInfo:
  num_examples: int


class _Splits(Mapping):
  """split -> _SplitInfo, counting a split's records only when asked and no count is configured."""

  def __init__(self, dataset: 'SequenceExampleFiles'):
    self._dataset = dataset

  def __getitem__(self, split: str) -> _SplitInfo:
    return _SplitInfo(self._dataset.num_examples(split))

  def __iter__(self):
    return iter(self._dataset.files)

  def __len__(self) -> int:
    return len(self._dataset.files)


@dataclasses.dataclass
class _Info:
  features: dict[str, Any]
  metadata: dict[str, Any]
  splits: _Splits
  file_format: str = FORMAT


class SequenceExampleFiles:
  """SequenceExample TFRecord files per split, with what the pipeline asks of a TFDS builder."""

  def __init__(self, name: str, files: Mapping[str, str], *, num_classes: int,
               class_names: Sequence[str] | None = None,
               num_examples: Mapping[str, int] | None = None):
    self.name = name
    self.files = {split: sorted(tf.io.gfile.glob(pattern)) for split, pattern in files.items()}
    for split, paths in self.files.items():
      if not paths:
        raise ValueError(f'dataset {name!r}: files.{split}={files[split]!r} matches no file')
    self._num_examples = dict(num_examples or {})
    names = list(class_names) if class_names else [str(index) for index in range(num_classes)]
    self.info = _Info(
        features={'video': tfds.features.Sequence(tfds.features.Image(encoding_format='jpeg'))},
        metadata={'class_names': names}, splits=_Splits(self))

  @functools.lru_cache(maxsize=None)
  def file_sizes(self, split: str) -> tuple[int, ...]:
    """Records per file of `split`, counted by reading the files."""
    paths = self.files[split]
    logging.warning('%s: counting the records of %d %s files (a read pass; per-file counts are '
                    'needed to shard evaluation evenly)', self.name, len(paths), split)
    return tuple(int(tf.data.TFRecordDataset(path).reduce(0, lambda count, _: count + 1))
                 for path in paths)

  def num_examples(self, split: str) -> int:
    """The split's size; the configured one, else counted."""
    if split in self._num_examples:
      return int(self._num_examples[split])
    return sum(self.file_sizes(split))

  def host_files(self, split: str, host: int, num_hosts: int) -> list[str]:
    return self.files[split][host::num_hosts]

  def host_sizes(self, split: str, num_hosts: int) -> list[int]:
    """Records each host reads; one host needs no count when the config gives the split's size."""
    if num_hosts == 1:
      return [self.num_examples(split)]
    sizes = self.file_sizes(split)
    return [sum(sizes[host::num_hosts]) for host in range(num_hosts)]


def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """One SequenceExample -> {'video': JPEG frames [T], 'label': int64, 'label_text': text}."""
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={LABEL_KEY: tf.io.VarLenFeature(tf.int64),
                        TEXT_KEY: tf.io.VarLenFeature(tf.string)},
      sequence_features={FRAMES_KEY: tf.io.FixedLenSequenceFeature([], tf.string)})
  labels = tf.sparse.to_dense(context[LABEL_KEY])
  texts = tf.sparse.to_dense(context[TEXT_KEY])
  label = tf.cond(tf.size(labels) > 0, lambda: labels[0], lambda: tf.constant(-1, tf.int64))
  text = tf.cond(tf.size(texts) > 0, lambda: texts[0], lambda: tf.constant(''))
  return {'video': sequence[FRAMES_KEY], 'label': label, 'label_text': text}
