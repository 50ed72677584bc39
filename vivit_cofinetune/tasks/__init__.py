"""Task kinds by name: each kind is a `Task` (model side: head, loss, evaluation; tasks/base.py) and
a `TaskExamples` (data side: training and evaluation examples; tasks/examples.py).

A new kind is two classes and one call, from any module (a test file, a user's package):

    tasks.register('tagging', TaggingTask, TaggingExamples)

after which `config.tasks.<name>.kind='tagging'` trains and evaluates through the same code as the
built-in kinds. The data side may be given as 'module:Class' so that importing the model side (for
a benchmark on a machine without TensorFlow) imports no TensorFlow. A kind that tools.visualise
draws also names its video report ('module:function' taking a tools.visualise.ReportRequest).
"""
from collections.abc import Callable, Mapping
import importlib

import ml_collections

from vivit_cofinetune.tasks import base
from vivit_cofinetune.tasks import classification
from vivit_cofinetune.tasks import localisation

TASK_KINDS: dict[str, type[base.Task]] = {}
_EXAMPLES: dict[str, type | str] = {}
_VIDEO_REPORTS: dict[str, Callable | str] = {}


def register(kind: str, task_class: type[base.Task], examples_class: type | str,
             video_report: Callable | str | None = None) -> None:
  """Makes `kind` a value of config.tasks.<name>.kind; `examples_class` and `video_report` may be
  given as 'module:name', imported on first use."""
  TASK_KINDS[kind] = task_class
  _EXAMPLES[kind] = examples_class
  if video_report is not None:
    _VIDEO_REPORTS[kind] = video_report


def _resolve(table: dict, kind: str, what: str):
  if kind not in table:
    raise ValueError(f'task kind {kind!r} has no {what}; kinds that have one: {sorted(table)}')
  value = table[kind]
  if isinstance(value, str):
    module, _, name = value.partition(':')
    value = table[kind] = getattr(importlib.import_module(module), name)
  return value


def examples_for(kind: str) -> type:
  """The data-side class of `kind`."""
  return _resolve(_EXAMPLES, kind, 'registered data side')


def video_report_for(kind: str) -> Callable:
  """The function tools.visualise draws a video of `kind` with."""
  return _resolve(_VIDEO_REPORTS, kind, 'video report for tools.visualise')


register('classification', classification.ClassificationTask,
         'vivit_cofinetune.tasks.classification_examples:ClassificationExamples',
         'vivit_cofinetune.tools.visualise:classification_report')
register('localisation', localisation.LocalisationTask,
         'vivit_cofinetune.tasks.localisation_examples:LocalisationExamples',
         'vivit_cofinetune.tools.visualise:localisation_report')


def make_task(name: str, config: ml_collections.ConfigDict,
              info: base.DatasetInfo | None = None) -> base.Task:
  """Builds the task `config.tasks.<name>` (its kind was checked by config_checks.validate_config),
  knowing its dataset from `info` where given."""
  return TASK_KINDS[config.kind](name, config, info)


def make_tasks(config: ml_collections.ConfigDict,
               infos: Mapping[str, base.DatasetInfo] | None = None) -> dict[str, base.Task]:
  """Every task of the config, with class names and training class counts from its dataset.

  Without `infos` the tasks know only their config (enough to build and compile the model, as the
  memory estimate and the benchmarks do), and no dataset is read.
  """
  return {name: make_task(name, task_config, (infos or {}).get(name))
          for name, task_config in config.tasks.items()}
