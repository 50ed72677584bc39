"""The co-finetuning study: every schedule of configs/study_cofinetune.py over seeds, from one backbone.

  python -m vivit_cofinetune.experiments.study --seeds=3 --output=/tmp/study

Renders the study's synthetic sets into OUTPUT/tfds, pretrains the backbone once (OUTPUT/pretrain,
seed 0), trains every schedule x seed from it (OUTPUT/runs/SCHEDULE/seed_N, each an ordinary
workdir that `vivit_cofinetune.main` would write), and writes OUTPUT/results.json (every run's
metrics, curves, final training losses and wall time, and mean / std / min / max over seeds),
OUTPUT/results.md (the table), OUTPUT/study.png (the table as bars) and OUTPUT/study_curves.png
(every metric over training, mean over seeds). Every schedule must train on the same number of
clips: the driver checks it before anything trains. A run whose workdir already holds its results
is not trained again, so a stopped study continues where it stopped.

`--alone=SCHEDULE` also trains each task of SCHEDULE alone for the steps SCHEDULE gives it (seed 0,
OUTPUT/alone/TASK), and the table's last rows give their final training losses and metrics: what
co-finetuning's losses should reach if the model has the capacity for every task.

One pretraining for all seeds: the paper starts every schedule from the same ImageNet checkpoint,
and the spread over seeds is then the spread of the finetuning (its data order, task order and head
initialisation), which is what the schedules differ in. The measured study: docs/results.md.
"""
from collections.abc import Sequence
import json
import os
import pathlib
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune import logs
from vivit_cofinetune import train
from vivit_cofinetune.data import builders  # pylint: disable=unused-import  (registers the builders)
from vivit_cofinetune.experiments import charts
from vivit_cofinetune import schedule as schedule_lib

CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'study_cofinetune.py'
SCHEDULES = ('downstream', 'transfer', 'transfer_continued', 'cofinetune_1', 'cofinetune_2',
             'cofinetune_2_size', 'cofinetune_2_uniform', 'cofinetune_2_mixed',
             'cofinetune_finetune', 'cofinetune_2_control')
# (task, metric key in its eval results, column title).
METRICS = (('loc', 'mAP', 'loc mAP'), ('loc', 'mAP_head', 'head AP'), ('loc', 'mAP_mid', 'mid AP'),
           ('loc', 'mAP_tail', 'tail AP'), ('upstream_a', 'top1', 'upstream A top-1'),
           ('upstream_b', 'top1', 'upstream B top-1'))
# (task, column title): the task's training loss over the last log window of the run.
LOSSES = (('loc', 'loc loss'), ('upstream_a', 'A loss'), ('upstream_b', 'B loss'))


def study_config(schedule: str, *, seed: int = 0, init: str = '', data_dir: str,
                 **args) -> ml_collections.ConfigDict:
  """configs/study_cofinetune.py for one run; `args` are its other :key=value arguments."""
  arg = ','.join(f'{key}={value}' for key, value in dict(schedule=schedule, seed=seed, init=init,
                                                         **args).items() if value is not None)
  config = config_lib.load_config_file(f'{CONFIG}:{arg}')
  config.data_dir = data_dir
  return config


def train_sizes(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Training clips of each task's dataset (the study's sets are synthetic: known unrendered)."""
  return {name: tfds.builder(task.dataset.name, data_dir=config.data_dir).builder_config.num_train
          for name, task in config.tasks.items()}


def training_examples(config: ml_collections.ConfigDict) -> int:
  """Clips the run's schedule trains on, all tasks together (a mixed step: each task's batch)."""
  schedule = schedule_lib.make_schedule(config, train_sizes=train_sizes(config))
  return sum(count * config.tasks[name].batch_size
             for name, count in schedule.tasks.batches_before(schedule.num_steps).items())


def check_same_examples(configs: dict[str, ml_collections.ConfigDict]) -> int:
  """Raises unless every schedule trains on the same number of clips (the paper's comparison)."""
  examples = {name: training_examples(config) for name, config in configs.items()}
  if len(set(examples.values())) != 1:
    raise AssertionError(f'schedules train on different numbers of clips: {examples}')
  return next(iter(examples.values()))


def prepare_datasets(configs: Sequence[ml_collections.ConfigDict], data_dir: str) -> None:
  """Renders every dataset the configs read (TFDS skips those already prepared)."""
  names = sorted({task.dataset.name for config in configs for task in config.tasks.values()})
  for name in names:
    tfds.builder(name, data_dir=data_dir).download_and_prepare()


def train_once(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict:
  """{'results': final eval metrics by task, 'curves', 'final_losses', 'seconds'}; reuses a
  finished workdir's."""
  record = workdir / 'study_run.json'
  if record.exists():
    logging.info('Reusing the finished run in %s', workdir)
    return json.loads(record.read_text())
  start = time.monotonic()
  train.train_and_evaluate(config, str(workdir))
  curves = read_curves(workdir)
  # eval_results.json holds the metrics as JSON writes them (an undefined metric is null).
  run = {'results': json.loads((workdir / 'eval_results.json').read_text()),
         'curves': curves,
         'final_losses': {tag.split('/')[1]: points[-1][1] for tag, points in curves.items()
                          if tag.startswith('train/') and tag.endswith('/loss')},
         'seconds': time.monotonic() - start}
  record.write_text(json.dumps(run, indent=2) + '\n')
  return run


def read_curves(workdir: pathlib.Path) -> dict[str, list[list[float]]]:
  """{tag: [[step, value], ...]} of the run's evaluations ('eval/TASK/METRIC') and training losses
  ('train/TASK/loss'), read back from its TensorBoard events."""
  curves = {}
  for path in sorted(workdir.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if not (value.tag.startswith('eval/') or
                (value.tag.startswith('train/') and value.tag.endswith('/loss'))):
          continue
        if value.HasField('tensor') and value.tensor.dtype == tf.string.as_datatype_enum:
          continue  # an image summary
        number = (float(tf.make_ndarray(value.tensor)) if value.HasField('tensor')
                  else value.simple_value)
        # JSON has no NaN: an undefined metric (a class group without examples) becomes null.
        curves.setdefault(value.tag, []).append([int(event.step),
                                                 None if np.isnan(number) else number])
  return {tag: sorted(points) for tag, points in curves.items()}


def summarise(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict]]:
  """schedule -> column title -> {mean, std, min, max, values} over the seeds; a metric of a task
  the schedule does not train has mean None."""
  summary = {}
  for schedule, by_seed in runs.items():
    columns = {title: [by_seed[seed]['results'].get(task, {}).get(key) for seed in sorted(by_seed)]
               for task, key, title in METRICS}
    columns.update({title: [by_seed[seed]['final_losses'].get(task) for seed in sorted(by_seed)]
                    for task, title in LOSSES})
    summary[schedule] = {title: _statistics(values) for title, values in columns.items()}
  return summary


def _statistics(values: list[float | None]) -> dict:
  finite = np.array([value for value in values if value is not None], np.float64)
  return dict(values=values,
              mean=float(finite.mean()) if finite.size else None,
              # Sample standard deviation over seeds (0 for a single seed).
              std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
              min=float(finite.min()) if finite.size else None,
              max=float(finite.max()) if finite.size else None)


def mean_curves(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, list[list[float]]]]:
  """schedule -> tag -> [[step, mean over seeds], ...] at the steps every seed evaluated."""
  means = {}
  for schedule, by_seed in runs.items():
    means[schedule] = {}
    tags = set.intersection(*(set(run['curves']) for run in by_seed.values()))
    for tag in sorted(tags):
      by_step = {}
      for run in by_seed.values():
        for step, value in run['curves'][tag]:
          if value is not None:
            by_step.setdefault(step, []).append(value)
      means[schedule][tag] = [[step, float(np.mean(values))]
                              for step, values in sorted(by_step.items())
                              if len(values) == len(by_seed)]
  return means


def markdown_table(summary: dict[str, dict[str, dict]], num_seeds: int) -> str:
  """One row per schedule, one column per metric and final loss: mean ± std (min–max) over seeds
  (the mean alone for one seed)."""
  titles = [title for _, _, title in METRICS] + [title for _, title in LOSSES]
  lines = [f'| schedule | {" | ".join(titles)} |', '| --- |' + ' --- |' * len(titles)]
  for schedule, metrics in summary.items():
    cells = []
    for title in titles:
      value = metrics[title]
      if value['mean'] is None:
        cells.append('n/a')
      elif num_seeds == 1:
        cells.append(f'{value["mean"]:.3f}')
      else:
        cells.append(f'{value["mean"]:.3f} ± {value["std"]:.3f} '
                     f'({value["min"]:.3f}–{value["max"]:.3f})')
    lines.append(f'| {schedule} | {" | ".join(cells)} |')
  lines.append(f'\nmean ± sample std (min–max) over {num_seeds} seed(s); losses: each task\'s '
               'training loss over the run\'s last eighth.')
  return '\n'.join(lines) + '\n'


def run_study(output: pathlib.Path, *, seeds: int, schedules: Sequence[str], data_dir: str,
              steps: int | None = None, pretrain_steps: int | None = None,
              tiny: bool = False, alone: str = '', backbone_state: str | None = None) -> dict:
  """Runs the study (see the module docstring); returns what results.json holds."""
  start = time.monotonic()
  sizes = dict(steps=steps, pretrain_steps=pretrain_steps, tiny=tiny)
  pretrain_dir = output / 'pretrain'
  # Seed by seed, so that a study stopped early has every schedule for the seeds it finished.
  configs = {(schedule, seed): study_config(schedule, seed=seed, init=str(pretrain_dir),
                                            data_dir=data_dir, backbone_state=backbone_state,
                                            **sizes)
             for seed in range(seeds) for schedule in schedules}
  examples = check_same_examples({schedule: configs[schedule, 0] for schedule in schedules})
  alone_configs = {}
  if alone:
    tasks = study_config(alone, data_dir=data_dir, **sizes).tasks
    alone_configs = {f'{name} alone': study_config(
        alone, init=str(pretrain_dir), data_dir=data_dir, backbone_state=backbone_state,
        alone=name, **sizes) for name in tasks}
  pretrain_config = study_config('pretrain', data_dir=data_dir, **sizes)
  prepare_datasets([pretrain_config, *configs.values()], data_dir)

  pretrain = train_once(pretrain_config, pretrain_dir)
  runs = {schedule: {} for schedule in schedules}
  for (schedule, seed), config in configs.items():
    logging.info('Study: schedule %s, seed %d', schedule, seed)
    runs[schedule][seed] = train_once(config, output / 'runs' / schedule / f'seed_{seed}')
  alone_runs = {name: {0: train_once(config, output / 'alone' / name.split()[0])}
                for name, config in alone_configs.items()}

  summary = summarise({**runs, **alone_runs})
  curves = mean_curves(runs)
  study = dict(seeds=seeds, training_examples_per_schedule=examples,
               pretrain=pretrain, runs=runs, alone=alone_runs, summary=summary,
               curves=curves, wall_seconds=time.monotonic() - start)
  (output / 'results.json').write_text(json.dumps(study, indent=2) + '\n')
  (output / 'results.md').write_text(markdown_table(summary, seeds))
  titles = [title for _, _, title in METRICS]
  charts.bar_chart(summary, titles, title=f'Co-finetuning study: mean ± std over {seeds} seed(s)'
                   ).savefig(output / 'study.png', dpi=100)
  charts.curves_chart(curves, [(f'eval/{task}/{key}', title) for task, key, title in METRICS] +
                      [(f'train/{task}/loss', f'{title} (training)') for task, title in LOSSES]
                      ).savefig(output / 'study_curves.png', dpi=100)
  return study


def main(argv):
  del argv
  logs.quiet_library_logs()
  tf.config.set_visible_devices([], 'GPU')  # tf.data runs on the host, as in main.py.
  output = pathlib.Path(_OUTPUT.value).expanduser().resolve()
  output.mkdir(parents=True, exist_ok=True)
  unknown = set(_SCHEDULES.value + [_ALONE.value] * bool(_ALONE.value)) - set(SCHEDULES)
  if unknown:
    raise app.UsageError(f'--schedules/--alone: unknown {sorted(unknown)}; expected some of '
                         f'{SCHEDULES}')
  study = run_study(output, seeds=_SEEDS.value, schedules=_SCHEDULES.value,
                    data_dir=_DATA_DIR.value or str(output / 'tfds'), steps=_STEPS.value,
                    pretrain_steps=_PRETRAIN_STEPS.value, tiny=_TINY.value, alone=_ALONE.value,
                    backbone_state=_BACKBONE_STATE.value)
  print((output / 'results.md').read_text(), flush=True)
  print(f'Study took {study["wall_seconds"] / 60:.1f} min; wrote {output}/results.json, '
        'results.md, study.png, study_curves.png', flush=True)


if __name__ == '__main__':
  # Flags only when run as a program: tests import this module beside tools that define --output.
  _SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds per schedule (0, 1, ...).')
  _OUTPUT = flags.DEFINE_string('output', None, 'Directory for the datasets, runs and results.')
  _SCHEDULES = flags.DEFINE_list('schedules', list(SCHEDULES), 'Schedules to run.')
  _STEPS = flags.DEFINE_integer('steps', None, "Steps of every schedule (default: the config's).")
  _PRETRAIN_STEPS = flags.DEFINE_integer('pretrain_steps', None,
                                         "Pretraining steps (default: the config's).")
  _DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir (default: OUTPUT/tfds).')
  _TINY = flags.DEFINE_bool('tiny', False, 'The tests\' tiny datasets and model (a code-path check).')
  _ALONE = flags.DEFINE_string('alone', 'cofinetune_2', 'Also train each task of this schedule '
                               'alone, for the steps the schedule gives it (seed 0); empty: none.')
  _BACKBONE_STATE = flags.DEFINE_enum('backbone_state', None, ['shared', 'per_task'],
                                      "config.optimizer.backbone_state (default: the config's).")
  flags.mark_flag_as_required('output')
  app.run(main)
