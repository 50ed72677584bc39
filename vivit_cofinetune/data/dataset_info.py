"""What a prepared localisation dataset says about its own evaluation, as its builder recorded it.

The AVA builders (`ava_v2_2`, `ava_kinetics`) and `prepare ava_format` read the label maps and the
evaluation files of the release at build time, copy the files into the prepared dataset and write
into its metadata the class ids and names, the ids the official metric averages over and, per split,
the files that split is scored against. A run reads them from here instead of restating them, so a
user's own dataset (its own classes, its own evaluation list) needs no code.

  info = dataset_info.localisation_info('ava_v2_2', data_dir)
  info.eval_class_ids        # the 60 ids of ava_action_list_v2.2_for_activitynet_2019.pbtxt
  info.evaluation_files['validation']['groundtruth']  # one path per part of the dataset
"""
import dataclasses
import os

from etils import epath
import tensorflow_datasets as tfds

from vivit_cofinetune.data import concatenated


@dataclasses.dataclass(frozen=True)
class LocalisationInfo:
  """Classes and evaluation files of a prepared localisation dataset.

  class_ids: the ids its CSVs use, in the order of the records' label columns.
  class_names: the name of each of class_ids.
  eval_class_ids: the classes the official frame-mAP averages over (all classes unless the release
    names fewer, as AVA's 60-class list does).
  evaluation_files: split -> kind ('groundtruth', 'exclusions', 'label_map', 'eval_label_map') ->
    absolute paths, one per part of a combined dataset such as 'ava_v2_2+ava_kinetics'; {} for
    datasets that store none (the synthetic sets, scored against their records' boxes).
  """
  class_ids: list[int]
  class_names: list[str]
  eval_class_ids: list[int]
  evaluation_files: dict[str, dict[str, list[str]]]

  @property
  def eval_labelmap(self) -> dict[int, str]:
    """Evaluated class id -> name, the label map `metrics.ava.evaluate` takes."""
    names = dict(zip(self.class_ids, self.class_names))
    return {class_id: names[class_id] for class_id in self.eval_class_ids}


def localisation_info(name: str, data_dir: str) -> LocalisationInfo:
  """The classes and evaluation files recorded in the prepared dataset `name` (a task's
  `dataset.name`, parts joined by '+') under `data_dir`; errors name the dataset and the fix."""
  parts = [_part_info(part, data_dir) for part in name.split(concatenated.SEPARATOR)]
  first = parts[0]
  for part_name, part in zip(name.split(concatenated.SEPARATOR)[1:], parts[1:]):
    if (part.class_ids, part.eval_class_ids) != (first.class_ids, first.eval_class_ids):
      raise ValueError(f'dataset {name!r}: {part_name!r} has other classes or evaluated classes '
                       f'than {name.split(concatenated.SEPARATOR)[0]!r}; parts must share them')
  splits = set.intersection(*(set(part.evaluation_files) for part in parts))
  files = {split: {kind: [path for part in parts for path in part.evaluation_files[split][kind]]
                   for kind in first.evaluation_files[split]} for split in sorted(splits)}
  return dataclasses.replace(first, evaluation_files=files)


def _part_info(name: str, data_dir: str) -> LocalisationInfo:
  """One prepared dataset's record: registered builders and `prepare ava_format` sets alike (TFDS
  reads an unregistered name from its prepared folder)."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as error:
    raise FileNotFoundError(f'dataset {name!r}: not prepared in {data_dir} (python -m '
                            'vivit_cofinetune.data.prepare writes it there)') from error
  if not builder.is_prepared():
    raise FileNotFoundError(f'dataset {name!r}: version {builder.version} is not prepared in '
                            f'{data_dir}; run python -m vivit_cofinetune.data.prepare {name} '
                            '--manual_dir=... --data_dir=...')
  metadata = builder.info.metadata or {}
  if 'class_names' not in metadata:
    raise ValueError(f'dataset {name!r} ({builder.data_dir}): its metadata names no classes')
  class_names = list(metadata['class_names'])
  class_ids = [int(i) for i in metadata.get('class_ids') or range(1, len(class_names) + 1)]
  eval_class_ids = [int(i) for i in metadata.get('eval_class_ids') or class_ids]
  folder = epath.Path(builder.data_dir)
  files = {split: {kind: [os.fspath(folder / file)] for kind, file in kinds.items()}
           for split, kinds in metadata.get('evaluation_files', {}).items()}
  return LocalisationInfo(class_ids=class_ids, class_names=class_names,
                          eval_class_ids=eval_class_ids, evaluation_files=files)
