"""Trainer overhead: the full training loop against its bare compiled steps on the same batches.

  python bench/trainer_overhead.py [--steps=100] [--checkpoint_every=N] [--json] [--workdir=DIR]

Runs `train.train_and_evaluate` on the demo with four tasks (the demo's two and a copy of each under
another name, equal steps each): input pipelines, prefetch to the devices, the step, metrics and
progress lines, async checkpoints every `steps // 5` steps, evaluation at half-way and at the end.
Its rate is timed by its own progress lines (one every `steps // 10` steps; the host waits for the
devices there): every window after the first, except the one holding the half-way evaluation. The
same process builds the same steps from a fresh state and runs them bare on the very batches those
windows trained on (read again from the same pipelines, already on the devices), in one pass before
the trainer and one after, so load that comes and goes on a shared machine falls on both. Host CPU
seconds per step (all threads) are reported beside the rates, with the input pipelines' own per
batch (timed while reading the batches again): the trainer's extra work shows there even where idle
cores hide it from the rate.

Compilations are counted by jax's compile event (a persistent-cache hit counts too): warm-up is the
first window (every task's first step; the schedule is checked to hold them) and the first
evaluation; everything after must compile nothing.
"""
import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from absl import logging as absl_logging
import jax
import ml_collections
import numpy as np

from vivit_cofinetune import config_lib
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune import sharding
from vivit_cofinetune import train
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.data import pipeline

# XLA reports every compilation (or persistent-cache load) under this event.
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def four_task_config(steps: int, config_file: str = 'configs/demo_cofinetune.py'
                     ) -> ml_collections.ConfigDict:
  """The demo with a copy of each task under another name, `steps` steps, windows of steps // 10."""
  config = config_lib.load_config_file(f'{config_file}:steps={steps}')
  for name in list(config.tasks):
    config.tasks[f'{name}_copy'] = ml_collections.ConfigDict(config.tasks[name].to_dict())
  config.schedule.phases[0]['mixture'] = {name: 'steps' for name in config.tasks}
  config.log_every = steps // 10
  config.eval_every = steps // 2
  config.checkpoint_every = steps // 5
  config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, steps // 4)
  return config


class _Timeline(logging.Handler):
  """Times of the trainer's progress lines and evaluation lines, and of every compilation."""

  def __init__(self):
    super().__init__(logging.INFO)
    self.lines = []  # (time, process CPU time, 'step' or 'eval', step)
    self.compiles = []  # (time, function name)

  def emit(self, record):
    message = str(record.msg)  # orbax logs dicts
    if message.startswith('step %d/%d'):
      self.lines.append((record.created, time.process_time(), 'step', record.args[0]))
    elif message.startswith('eval %s at step %d'):
      self.lines.append((record.created, time.process_time(), 'eval', record.args[1]))

  def on_event(self, event: str, duration: float, **kwargs):
    del duration
    if event == _COMPILE_EVENT:
      self.compiles.append((time.time(), kwargs.get('fun_name', '?')))


def _host_batches(config: ml_collections.ConfigDict, schedule,
                  steps: list[int]) -> tuple[list[dict], float]:
  """The host batches the trainer took at `steps` (increasing), read again from the same pipelines,
  and the host CPU seconds per batch read from `steps[0]` on (every pipeline has started by then)."""
  iterators = {name: pipeline.train_iterator(config.tasks[name], data_dir=config.data_dir,
                                             seed=config.seed)
               for name in schedule.task_names}
  wanted, batches = set(steps), []
  for step in range(steps[-1] + 1):
    if step == steps[0]:
      cpu = time.process_time()
    batch = next(iterators[schedule.task_of_step(step)])
    if step in wanted:
      batches.append(batch)
  return batches, (time.process_time() - cpu) / (steps[-1] + 1 - steps[0])


def _bare_steps(config: ml_collections.ConfigDict, schedule, steps: list[int],
                host_batches: list[dict]):
  """A function that runs the trainer's compiled steps alone over `steps`, their batches already on
  the devices, and returns its (wall, CPU) seconds; each task's step is compiled here."""
  setup = trainer_setup.build(config)
  mesh = setup.mesh
  state = setup.initial_state()
  train_steps = {name: setup.train_step([(name, 1.0)]) for name in schedule.task_names}
  names = [schedule.task_of_step(step) for step in steps]
  run_schedule = schedule_lib.make_schedule(config)
  learning_rates = [run_schedule.learning_rates(step) for step in steps]
  batches = jax.block_until_ready([sharding.put_batch({name: batch}, mesh)
                                   for name, batch in zip(names, host_batches)])
  for name in schedule.task_names:
    index = names.index(name)
    state, _ = train_steps[name](state, batches[index], learning_rates[index])

  def timed_pass() -> tuple[float, float]:
    nonlocal state
    wall, cpu = time.perf_counter(), time.process_time()
    for name, batch, learning_rate in zip(names, batches, learning_rates):
      state, metrics = train_steps[name](state, batch, learning_rate)
    jax.block_until_ready((state, metrics))
    return time.perf_counter() - wall, time.process_time() - cpu

  return timed_pass


def _cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1


def run(config: ml_collections.ConfigDict, workdir: str, verbose: bool = False) -> dict:
  """Trains `config` in `workdir` between two bare passes over its timed steps; the measurements.

  The trainer's log lines reach the usual handlers only if `verbose`.
  """
  schedule = schedule_lib.task_schedule(
      config.schedule.phases, seed=config.seed,
      transfer_steps={n: t.get('transfer_steps', 0) for n, t in config.tasks.items()})
  total, window = schedule.num_steps, config.log_every
  first_steps = {}
  for step in range(total):
    first_steps.setdefault(schedule.task_of_step(step), step)
  if max(first_steps.values()) >= window or config.eval_every % window:
    raise ValueError(f'every task must step in the first window of {window} steps {first_steps}, '
                     f'and evaluations ({config.eval_every}) fall on window ends')
  # Windows (a, b] after the first, leaving out those whose start evaluated.
  timed = [(a, a + window) for a in range(window, total, window) if a % config.eval_every]
  timed_steps = [step for a, b in timed for step in range(a, b)]
  host_batches, pipeline_cpu = _host_batches(config, schedule, timed_steps)
  video_dtypes = sorted({str(batch['video'].dtype) for batch in host_batches})
  if video_dtypes != ['uint8']:
    raise AssertionError(f'batches should cross to the devices as uint8 video, got {video_dtypes}')
  bare_pass = _bare_steps(config, schedule, timed_steps, host_batches)
  bare_before = bare_pass()

  timeline = _Timeline()
  absl_logger = absl_logging.get_absl_logger()
  previous_level = absl_logger.level
  absl_logger.setLevel(logging.INFO)
  absl_logger.addHandler(timeline)
  print_logs, absl_logger.propagate = absl_logger.propagate, verbose
  jax.monitoring.register_event_duration_secs_listener(timeline.on_event)
  try:
    start = time.time()
    # The final metrics table goes to stderr: stdout is the bench's own.
    with contextlib.redirect_stdout(sys.stderr):
      train.train_and_evaluate(config, workdir)
  finally:
    absl_logger.removeHandler(timeline)
    absl_logger.setLevel(previous_level)
    absl_logger.propagate = print_logs
    jax.monitoring.unregister_event_duration_listener(timeline.on_event)
  bare_after = bare_pass()

  progress = {step: (when, cpu) for when, cpu, kind, step in timeline.lines if kind == 'step'}
  first_eval = config.eval_every
  first_eval_end = max(when for when, _, kind, step in timeline.lines
                       if kind == 'eval' and step == first_eval)
  # The first evaluation starts right after the progress line of its step.
  warm_up = [(start, progress[window][0]), (progress[first_eval][0], first_eval_end)]
  after_warm_up = [name for when, name in timeline.compiles
                   if not any(begin <= when <= end for begin, end in warm_up)]
  trainer_wall, trainer_cpu = (sum(progress[b][i] - progress[a][i] for a, b in timed)
                               for i in (0, 1))
  bare_wall, bare_cpu = (bare_before[i] + bare_after[i] for i in (0, 1))
  steps = len(timed_steps)
  return {
      'tasks': list(schedule.task_names), 'steps': total, 'timed_steps': steps,
      'batch_size': {name: config.tasks[name].batch_size for name in schedule.task_names},
      'video_dtype_to_device': video_dtypes[0],
      'batch_bytes_to_device': int(np.mean([sum(value.nbytes for value in batch.values())
                                            for batch in host_batches])),
      'trainer_steps_per_s': steps / trainer_wall,
      # Two passes, before and after the trainer, so load that comes and goes falls on both.
      'bare_steps_per_s': 2 * steps / bare_wall,
      'bare_passes_s': [bare_before[0], bare_after[0]],
      'trainer_over_bare': bare_wall / (2 * trainer_wall),
      # Host CPU seconds per step, all threads (the input pipeline's, orbax's): the trainer's extra
      # work, which slows it down only where the cores are all busy.
      'trainer_cpu_s_per_step': trainer_cpu / steps,
      'bare_cpu_s_per_step': bare_cpu / (2 * steps),
      # The input pipelines' part of the trainer's extra work: reading a batch and nothing else.
      'pipeline_cpu_s_per_batch': pipeline_cpu,
      # The best trainer / bare the host's cores allow: the trainer needs at least its CPU seconds
      # over the core count of wall time per step.
      'ratio_bound_by_host_cpu': min(1.0, bare_wall / (2 * steps) * _cores() / (trainer_cpu / steps)),
      'checkpoint_every': config.checkpoint_every,
      'compiles_warm_up': len(timeline.compiles) - len(after_warm_up),
      'compiles_after_warm_up': len(after_warm_up),
      'compiled_after_warm_up': after_warm_up,
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})',
      'host': f'{platform.machine()}, {os.cpu_count()} CPUs, '
              f'load average {os.getloadavg()[0]:.2f} at end',
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/demo_cofinetune.py', help='path/to/config.py')
  parser.add_argument('--steps', type=int, default=100, help='training steps (a multiple of 10)')
  parser.add_argument('--checkpoint_every', type=int, default=None,
                      help='steps between async checkpoints (default: steps // 5)')
  parser.add_argument('--workdir', default=None, help='default: a fresh temporary directory')
  parser.add_argument('--json', action='store_true', help='print one JSON line instead of text')
  parser.add_argument('--verbose', action='store_true', help="also print the trainer's log")
  args = parser.parse_args()
  config = four_task_config(args.steps, args.config)
  config.checkpoint_every = args.checkpoint_every or config.checkpoint_every
  with tempfile.TemporaryDirectory() as temporary:
    result = run(config, args.workdir or temporary, args.verbose)
  if args.json:
    print(json.dumps(result))
    return
  print(f'trainer {result["trainer_steps_per_s"]:.2f} steps/s, bare step '
        f'{result["bare_steps_per_s"]:.2f} steps/s, ratio {result["trainer_over_bare"]:.3f} '
        f'over {result["timed_steps"]} steps of {result["tasks"]}')
  print(f'host CPU per step: trainer {result["trainer_cpu_s_per_step"] * 1e3:.1f} ms, bare step '
        f'{result["bare_cpu_s_per_step"] * 1e3:.1f} ms, input pipelines alone '
        f'{result["pipeline_cpu_s_per_batch"] * 1e3:.1f} ms a batch; the cores allow a ratio of '
        f'{result["ratio_bound_by_host_cpu"]:.3f} at most')
  print(f'compilations: {result["compiles_warm_up"]} in warm-up, '
        f'{result["compiles_after_warm_up"]} after {result["compiled_after_warm_up"]}')
  print(f'batches cross as {result["video_dtype_to_device"]} video, '
        f'{result["batch_bytes_to_device"]:,} bytes each; {result["device"]}; {result["host"]}')


if __name__ == '__main__':
  main()
