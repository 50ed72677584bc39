"""The co-finetuning study: every schedule of configs/study_cofinetune.py over seeds, from one backbone.

  python -m vivit_cofinetune.experiments.study --seeds=3 --output=/tmp/study

Renders the study's synthetic sets into OUTPUT/tfds, pretrains the backbone once (OUTPUT/pretrain,
seed 0), trains every schedule x seed from it (OUTPUT/runs/SCHEDULE/seed_N, each an ordinary
workdir that `vivit_cofinetune.main` would write), and writes OUTPUT/results.json (every run's
metrics and wall time, and mean / std / min / max over seeds), OUTPUT/results.md (the table) and
OUTPUT/study.png (the chart). A run whose workdir already holds its results is not trained again,
so a stopped study continues where it stopped.

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
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune import pictures
from vivit_cofinetune import train
from vivit_cofinetune.data import builders  # pylint: disable=unused-import  (registers the builders)
from vivit_cofinetune import schedule as schedule_lib

CONFIG = pathlib.Path(__file__).resolve().parents[2] / 'configs' / 'study_cofinetune.py'
SCHEDULES = ('downstream', 'transfer', 'transfer_continued', 'cofinetune_1', 'cofinetune_2',
             'cofinetune_finetune')
# (task, metric key in its eval_results.json, column title).
METRICS = (('loc', 'mAP', 'loc mAP'), ('loc', 'mAP_head', 'head AP'), ('loc', 'mAP_mid', 'mid AP'),
           ('loc', 'mAP_tail', 'tail AP'), ('upstream_a', 'top1', 'upstream A top-1'))

def study_config(schedule: str, *, seed: int = 0, init: str = '', data_dir: str,
                 **args) -> ml_collections.ConfigDict:
  """configs/study_cofinetune.py for one run; `args` are its other :key=value arguments."""
  arg = ','.join(f'{key}={value}' for key, value in dict(schedule=schedule, seed=seed, init=init,
                                                         **args).items() if value is not None)
  config = config_lib.load_config_file(f'{CONFIG}:{arg}')
  config.data_dir = data_dir
  return config


def training_examples(config: ml_collections.ConfigDict) -> int:
  """Clips the run's schedule trains on, all tasks together."""
  schedule = schedule_lib.task_schedule(config.schedule.phases, seed=config.seed)
  return sum(count * config.tasks[name].batch_size
             for name, count in schedule.batches_before(schedule.num_steps).items())


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
  """{'results': eval metrics by task, 'seconds': wall time}; reuses a finished workdir's."""
  record = workdir / 'study_run.json'
  if record.exists():
    logging.info('Reusing the finished run in %s', workdir)
    return json.loads(record.read_text())
  start = time.monotonic()
  train.train_and_evaluate(config, str(workdir))
  # eval_results.json holds the metrics as JSON writes them (an undefined metric is null).
  run = {'results': json.loads((workdir / 'eval_results.json').read_text()),
         'seconds': time.monotonic() - start}
  record.write_text(json.dumps(run, indent=2) + '\n')
  return run


def summarise(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict]]:
  """schedule -> metric title -> {mean, std, min, max, values} over the seeds."""
  summary = {}
  for schedule, by_seed in runs.items():
    summary[schedule] = {}
    for task, key, title in METRICS:
      values = [by_seed[seed]['results'].get(task, {}).get(key) for seed in sorted(by_seed)]
      finite = np.array([v for v in values if v is not None], np.float64)
      summary[schedule][title] = dict(
          values=values,
          mean=float(finite.mean()) if finite.size else None,
          # Sample standard deviation over seeds (0 for a single seed).
          std=float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
          min=float(finite.min()) if finite.size else None,
          max=float(finite.max()) if finite.size else None)
  return summary


def markdown_table(summary: dict[str, dict[str, dict]], num_seeds: int) -> str:
  """One row per schedule, one column per METRICS entry: mean ± std (min–max) over seeds."""
  titles = [title for _, _, title in METRICS]
  lines = [f'| schedule | {" | ".join(titles)} |', '| --- |' + ' --- |' * len(titles)]
  for schedule, metrics in summary.items():
    cells = []
    for title in titles:
      value = metrics[title]
      cells.append('n/a' if value['mean'] is None else
                   f'{value["mean"]:.3f} ± {value["std"]:.3f} ({value["min"]:.3f}–{value["max"]:.3f})')
    lines.append(f'| {schedule} | {" | ".join(cells)} |')
  lines.append(f'\nmean ± sample std (min–max) over {num_seeds} seed(s).')
  return '\n'.join(lines) + '\n'


def chart(summary: dict[str, dict[str, dict]], num_seeds: int) -> np.ndarray:
  """uint8 [H, W, 3]: the table as bars (mean) with whiskers (± std), grouped by metric."""
  titles = [title for _, _, title in METRICS]
  means = np.array([[metrics[t]['mean'] or 0.0 for t in titles] for metrics in summary.values()])
  errors = np.array([[metrics[t]['std'] for t in titles] for metrics in summary.values()])
  return pictures.grouped_bar_chart(
      [title.replace('upstream A ', 'cls ') for title in titles], list(summary), means, errors,
      title=f'Co-finetuning study: mean ± std over {num_seeds} seed(s)')


def run_study(output: pathlib.Path, *, seeds: int, schedules: Sequence[str], data_dir: str,
              steps: int | None = None, pretrain_steps: int | None = None,
              tiny: bool = False) -> dict:
  """Runs the study (see the module docstring); returns what results.json holds."""
  start = time.monotonic()
  sizes = dict(steps=steps, pretrain_steps=pretrain_steps, tiny=tiny)
  pretrain_dir = output / 'pretrain'
  # Seed by seed, so that a study stopped early has every schedule for the seeds it finished.
  configs = {(schedule, seed): study_config(schedule, seed=seed, init=str(pretrain_dir),
                                            data_dir=data_dir, **sizes)
             for seed in range(seeds) for schedule in schedules}
  examples = check_same_examples({schedule: configs[schedule, 0] for schedule in schedules})
  pretrain_config = study_config('pretrain', data_dir=data_dir, **sizes)
  prepare_datasets([pretrain_config, *configs.values()], data_dir)

  pretrain = train_once(pretrain_config, pretrain_dir)
  runs = {schedule: {} for schedule in schedules}
  for (schedule, seed), config in configs.items():
    logging.info('Study: schedule %s, seed %d', schedule, seed)
    runs[schedule][seed] = train_once(config, output / 'runs' / schedule / f'seed_{seed}')

  summary = summarise(runs)
  study = dict(seeds=seeds, training_examples_per_schedule=examples,
               pretrain=pretrain, runs=runs, summary=summary,
               wall_seconds=time.monotonic() - start)
  (output / 'results.json').write_text(json.dumps(study, indent=2) + '\n')
  (output / 'results.md').write_text(markdown_table(summary, seeds))
  Image.fromarray(chart(summary, seeds)).save(output / 'study.png')
  return study


def main(argv):
  del argv
  tf.config.set_visible_devices([], 'GPU')  # tf.data runs on the host, as in main.py.
  output = pathlib.Path(_OUTPUT.value).expanduser().resolve()
  output.mkdir(parents=True, exist_ok=True)
  unknown = set(_SCHEDULES.value) - set(SCHEDULES)
  if unknown:
    raise app.UsageError(f'--schedules: unknown {sorted(unknown)}; expected some of {SCHEDULES}')
  study = run_study(output, seeds=_SEEDS.value, schedules=_SCHEDULES.value,
                    data_dir=_DATA_DIR.value or str(output / 'tfds'), steps=_STEPS.value,
                    pretrain_steps=_PRETRAIN_STEPS.value, tiny=_TINY.value)
  print((output / 'results.md').read_text(), flush=True)
  print(f'Study took {study["wall_seconds"] / 60:.1f} min; wrote {output}/results.json, results.md, '
        'study.png', flush=True)


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
  flags.mark_flag_as_required('output')
  app.run(main)
