"""The co-finetuning loop: one shared ViViT backbone, one head per task, one task per step (or, in a
mixed-batch phase, every task of the phase at each step).

The set-up is trainer_setup.py's, the steps steps.py's, the schedule schedule.py's; this module reads
the data, runs the loop, and writes summaries, checkpoints and evaluations.
"""
from collections.abc import Sequence
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental.compilation_cache import compilation_cache
import ml_collections

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_checks
from vivit_cofinetune import evaluate
from vivit_cofinetune import logs
from vivit_cofinetune import preemption
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune import sharding
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.data import pipeline


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every task of the config's schedule; returns the final eval metrics per task.

  On preemption (see preemption.py) it checkpoints the step every process agreed on and returns
  early, with the metrics of the last evaluation so far (if any).
  """
  workdir = checkpoint.resolve_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)

  # Config, devices, set-up
  config_checks.validate_config(config, num_devices=jax.device_count(),
                                num_processes=jax.process_count(),
                                known_datasets=pipeline.known_datasets(config))
  _use_compilation_cache(workdir / 'compilation_cache' if config.get('compilation_cache', True)
                         else _PROCESS_COMPILATION_CACHE)
  infos = pipeline.dataset_infos(config)
  setup = trainer_setup.build(config, infos)
  writer = logs.make_writer(workdir)
  logging.info('Mesh %s over %d devices on %d processes', dict(setup.mesh.shape),
               jax.device_count(), jax.process_count())

  # Schedule
  schedule = schedule_lib.make_schedule(
      config, train_sizes={name: info.num_train_examples for name, info in infos.items()})
  task_schedule = schedule.tasks
  trained = [name for name in setup.tasks if name in task_schedule.task_names]
  for name in set(setup.tasks) - set(trained):
    logging.warning('config.tasks.%s is in no phase of config.schedule.phases: its head is '
                    'evaluated as initialised, never trained', name)

  # State: restored, else fresh
  manager = checkpoint.make_manager(workdir, config)
  restored = checkpoint.restore(manager, setup.abstract_state, set_aside_unreadable=True)
  if restored:
    state, batches_consumed = restored
    logging.info('Resumed from step %d at data position %s', int(state.step), batches_consumed)
    if batches_consumed != task_schedule.batches_before(int(state.step)):
      logging.warning('The checkpoint read %s batches per task, but this config\'s schedule would '
                      'have read %s: was the schedule changed?', batches_consumed,
                      task_schedule.batches_before(int(state.step)))
  else:
    state = setup.initial_state()
    batches_consumed = {}
  # A task the checkpoint does not know (added to the config since) starts at its first batch.
  batches_consumed = {name: batches_consumed.get(name, 0) for name in trained}
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
  start_step = int(state.step)

  # Steps: one compiled train step per group of tasks (a task, or a mixed-batch phase's tasks)
  trainable = setup.trainable()
  train_steps = {group_id: setup.train_step(task_schedule.groups[group_id], trainable)
                 for group_id in sorted(set(task_schedule.group_ids.tolist()))}
  evaluator = evaluate.Evaluator(setup)

  # Input pipelines, resumed at the data position of the checkpoint
  iterators = {name: pipeline.train_iterator(config.tasks[name], data_dir=config.data_dir,
                                             seed=config.seed, start_batch=batches_consumed[name])
               for name in trained}

  # Loop
  total_steps = schedule.num_steps
  progress = logs.Progress(total_steps)
  compiled = set()
  save_clock = checkpoint.SaveClock(config.get('checkpoint_every_minutes'))
  profiler = Profiler(config.get('profile_steps'), workdir / 'profile', start_step)
  results = {}
  # Each step's batch is read from its tasks' pipelines in schedule order and put on the devices
  # while the steps before it run; batches_consumed counts only the batches trained on.
  batches = sharding.prefetch_to_mesh(
      ({name: next(iterators[name]) for name in task_schedule.tasks_of_step(step)}
       for step in range(start_step, total_steps)), setup.mesh)
  for step in range(start_step, total_steps):
    names = task_schedule.tasks_of_step(step)
    batch = next(batches)
    group_id = int(task_schedule.group_ids[step])
    profiler.step_starts(step)
    with progress.timed(first_call=group_id not in compiled):  # compiling is left out of the ETA
      state, metrics = train_steps[group_id](state, batch, schedule.learning_rates(step))
    compiled.add(group_id)
    profiler.step_done(step, state)
    for name in names:
      batches_consumed[name] += 1
    done = step + 1
    progress.step_done(metrics, sum(config.tasks[name].batch_size for name in names))

    if done % config.log_every == 0 or done == total_steps:
      writer.write_scalars(done, dict(progress.report(done),
                                      **{'train/learning_rate': schedule.learning_rate(step)}))
    preempted = preemption.reached(done, manager)
    if not preempted and (done % config.eval_every == 0 or done == total_steps):
      with progress.paused():
        results, images = evaluator.evaluate(state.params, step=done, output_dir=workdir / 'eval')
      writer.write_scalars(done, evaluate.flatten_for_summary(results))
      writer.write_images(done, images)
    # The clock is asked at log steps only: there the hosts already wait for the devices.
    if (done % config.checkpoint_every == 0 or done == total_steps or preempted
        or (done % config.log_every == 0 and save_clock.due())):
      progress.check_finite(done)  # log_every need not divide checkpoint_every
      with progress.paused():
        checkpoint.save(manager, done, state, batches_consumed)
      save_clock.restart()
    if preempted:
      manager.wait_until_finished()
      writer.flush()
      logging.info('Preempted: saved checkpoint at step %d; rerun the same command to resume.', done)
      return results

  if not results:  # Resumed at the very end: evaluate what was restored.
    results, _ = evaluator.evaluate(state.params, step=total_steps, output_dir=workdir / 'eval')
  manager.wait_until_finished()
  writer.flush()
  evaluate.write_results(workdir, results)
  return results


# The process's own cache (jax's setting when this module was imported, e.g. from
# $JAX_COMPILATION_CACHE_DIR), which a run with compilation_cache=False uses: a test suite or a
# sweep then shares one cache over all its runs.
_PROCESS_COMPILATION_CACHE = jax.config.jax_compilation_cache_dir


def _use_compilation_cache(directory: epath.Path | str | None) -> None:
  """Keeps every compiled program in `directory` (None: nowhere), so a rerun (a resume after
  preemption, the next run of a config) loads its steps instead of compiling them again."""
  directory = directory and str(directory)
  if directory == jax.config.jax_compilation_cache_dir:
    return
  jax.config.update('jax_compilation_cache_dir', directory)
  # By default only programs that took a second to compile are kept; the eval steps and the small
  # programs around the loop are worth keeping too.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  # jax opens the cache at its first compilation and keeps it for the process: another directory
  # (the next train_and_evaluate of a process, as in the tests) needs it opened again.
  compilation_cache.reset_cache()


class Profiler:
  """A jax.profiler trace of `config.profile_steps = (first step, number of steps)` into
  WORKDIR/profile (TensorBoard's profile tab opens it); None profiles nothing.

  The first step of a run compiles: profile later steps to see the steady state.
  """

  def __init__(self, profile_steps: Sequence[int] | None, directory: epath.Path, start_step: int):
    self.first, self.last = -1, -1
    if profile_steps:
      first, count = profile_steps
      self.first, self.last = max(first, start_step), first + count - 1
    self.directory = directory
    self.active = False

  def step_starts(self, step: int) -> None:
    if step == self.first and not self.active:
      jax.profiler.start_trace(str(self.directory))
      self.active = True

  def step_done(self, step: int, state: Any) -> None:
    if self.active and step >= self.last:
      jax.block_until_ready(state)  # the trace holds the steps' device work, not just dispatch
      jax.profiler.stop_trace()
      self.active = False
      logging.info('Profiled steps %d-%d into %s', self.first, self.last, self.directory)
