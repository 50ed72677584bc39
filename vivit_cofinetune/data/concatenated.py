"""Several prepared datasets of one example format read as one: `dataset.name='ava_v2_2+ava_kinetics'`.

The official AVA-Kinetics set is AVA v2.2 plus the AVA-Kinetics clips; both builders write the same
examples, so a task names both and trains and evaluates on their union. Each split is the parts'
splits one after the other (index i < n0 is part 0's example i), so reading by index, the per-epoch
permutations and the per-host shares work as for one dataset. Parts must be prepared as ArrayRecord
(what `data.prepare` writes) and share their class list. The metadata is merged: class counts and
keyframe histograms add up, example video ids follow one another.
"""
from collections.abc import Sequence
import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

SEPARATOR = '+'


@dataclasses.dataclass(frozen=True)
class _SplitInfo:
  num_examples: int


@dataclasses.dataclass
class _Info:
  features: Any
  metadata: dict[str, Any]
  splits: dict[str, _SplitInfo]
  file_format: Any


class _ConcatenatedSource(Sequence):
  """Random access over the parts' data sources, in order."""

  def __init__(self, sources: list[Sequence]):
    self._sources = sources
    self._starts = np.cumsum([0] + [len(source) for source in sources])

  def __len__(self) -> int:
    return int(self._starts[-1])

  def __getitem__(self, index):
    part = int(np.searchsorted(self._starts, index, side='right') - 1)
    return self._sources[part][int(index - self._starts[part])]

  def __getitems__(self, indices: Sequence[int]) -> list:
    return [self[index] for index in indices]


def _merge_split_metadata(parts: list[dict[str, Any]]) -> dict[str, Any]:
  merged = {}
  for key in ('class_counts', 'people_per_keyframe'):
    if all(key in part for part in parts):
      length = max(len(part[key]) for part in parts)
      merged[key] = np.sum([np.pad(part[key], (0, length - len(part[key]))) for part in parts],
                           axis=0).tolist()
  if all('example_video_ids' in part for part in parts):
    merged['example_video_ids'] = [video for part in parts for video in part['example_video_ids']]
  for key in ('max_detections',):
    if all(key in part for part in parts):
      merged[key] = max(part[key] for part in parts)
  for key in ('num_examples', 'num_videos', 'num_skipped_videos'):
    if all(key in part for part in parts):
      merged[key] = sum(part[key] for part in parts)
  return merged


class ConcatenatedDatasets:
  """The prepared datasets `names` of `data_dir` as one, with what the pipeline asks of a builder."""

  def __init__(self, builders: list[tfds.core.DatasetBuilder]):
    self.builders = builders
    self.name = SEPARATOR.join(builder.name for builder in builders)
    for builder in builders:
      if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise ValueError(f'{self.name}: {builder.name} is not prepared as ArrayRecord; combined '
                         'datasets are read by index (prepare it with python -m '
                         'vivit_cofinetune.data.prepare)')
      if builder.info.metadata.get('class_names') != builders[0].info.metadata.get('class_names'):
        raise ValueError(f'{self.name}: {builder.name} and {builders[0].name} have different '
                         'classes; only datasets of one label space can be combined')
    metadata = {key: value for key, value in builders[0].info.metadata.items() if key != 'splits'}
    split_names = set.intersection(*(set(builder.info.splits) for builder in builders))
    metadata['splits'] = {split: _merge_split_metadata(
        [builder.info.metadata.get('splits', {}).get(split, {}) for builder in builders])
        for split in split_names}
    self.info = _Info(
        features=builders[0].info.features, metadata=metadata, file_format=tfds.core.FileFormat.ARRAY_RECORD,
        splits={split: _SplitInfo(sum(builder.info.splits[split].num_examples
                                      for builder in builders)) for split in split_names})

  def as_data_source(self, split: str, **kwargs) -> _ConcatenatedSource:
    return _ConcatenatedSource([builder.as_data_source(split=split, **kwargs)
                                for builder in self.builders])
