"""Task kinds by name: a task owns its head, loss, metrics and evaluation aggregation.

Users add a task kind by writing a module like classification.py and registering its class here.
"""
from collections.abc import Mapping, Sequence

import ml_collections

from vivit_cofinetune.data import pipeline
from vivit_cofinetune.tasks import classification
from vivit_cofinetune.tasks import localisation

TASK_KINDS = {
    'classification': classification.ClassificationTask,
    'localisation': localisation.LocalisationTask,
}


def make_task(name: str, config: ml_collections.ConfigDict, *,
              class_names: Sequence[str] | None = None,
              train_class_counts: Sequence[int] | None = None,
              class_ids: Sequence[int] | None = None,
              evaluation_files: Mapping[str, Sequence[str]] | None = None):
  """Builds the task `config.tasks.<name>` (its kind was checked by config_checks.validate_config)."""
  return TASK_KINDS[config.kind](name, config, class_names=class_names,
                                 train_class_counts=train_class_counts, class_ids=class_ids,
                                 evaluation_files=evaluation_files)


def dataset_infos(config: ml_collections.ConfigDict) -> dict[str, pipeline.DatasetInfo]:
  """Each task's dataset info (read once per run: it prepares the dataset and may count classes)."""
  return {name: pipeline.dataset_info(task_config, config.data_dir)
          for name, task_config in config.tasks.items()}


def make_tasks(config: ml_collections.ConfigDict,
               infos: Mapping[str, pipeline.DatasetInfo] | None = None) -> dict:
  """Every task of the config, with class names and training class counts from its dataset.

  Without `infos` the tasks know only their config (enough to build and compile the model, as the
  memory estimate and the benchmarks do), and no dataset is read.
  """
  if infos is None:
    return {name: make_task(name, task_config) for name, task_config in config.tasks.items()}
  return {name: make_task(name, task_config, class_names=infos[name].class_names,
                          train_class_counts=infos[name].train_class_counts,
                          class_ids=infos[name].class_ids,
                          evaluation_files=infos[name].evaluation_files)
          for name, task_config in config.tasks.items()}
