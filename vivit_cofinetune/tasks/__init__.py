"""Task kinds by name: a task owns its head, loss, metrics and evaluation aggregation.

Users add a task kind by writing a module like classification.py and registering its class here.
"""
from collections.abc import Mapping, Sequence

import ml_collections

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
  """Builds the task `config.tasks.<name>` (its kind was checked by config_lib.validate_config)."""
  return TASK_KINDS[config.kind](name, config, class_names=class_names,
                                 train_class_counts=train_class_counts, class_ids=class_ids,
                                 evaluation_files=evaluation_files)
