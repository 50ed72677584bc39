"""What a run prints and writes while it trains: our log lines without the libraries' chatter, the
TensorBoard writer, and the progress line with its ETA (docs/monitoring.md).
"""
import contextlib
import logging as python_logging
import math
import os
import time
import typing

from absl import logging
import jax
import numpy as np

if typing.TYPE_CHECKING:
  from clu import metric_writers

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# WARNING-level notices of a library that say nothing the user can act on.
_NOISE = ('FeatureConnector.dtype` is deprecated',)


def quiet_library_logs() -> None:
  """Shows the libraries' INFO lines (TFDS "Load dataset info", "Reusing dataset", "Constructing
  tf.data.Dataset", jax's backend probing, orbax's saves, clu's...) only at --verbosity=1 or more;
  this package's lines, and every library's warnings and errors, always."""
  logging.get_absl_handler().addFilter(_is_shown)


def _is_shown(record: python_logging.LogRecord) -> bool:
  if record.levelno >= python_logging.WARNING:
    return not any(noise in record.getMessage() for noise in _NOISE)
  return record.pathname.startswith(_PACKAGE_DIR) or logging.get_verbosity() >= 1


def make_writer(workdir) -> 'metric_writers.MetricWriter':
  """TensorBoard summaries in `workdir`, written by process 0 only (one logdir for the job).

  No logging writer: the progress line and the evaluation headlines are the log's; clu's default
  writer would log every scalar a second time. clu (and with it TensorFlow) is imported here, not
  with the module: the log filter above also serves predict and estimate_memory, which run where
  TensorFlow is absent.
  """
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(os.fspath(workdir)))


class Progress:
  """Per-task training metrics averaged since the last report, steps/s, clips/s and the ETA.

  Steps/s, clips/s and the ETA count the steps whose time is the devices' and the input's: the first
  call of each compiled step (its compilation) and the time inside `paused` are left out.
  """

  def __init__(self, total_steps: int):
    self.total_steps = total_steps
    self._last_step_timed = True
    self._reset()

  def _reset(self):
    self.window_start = time.monotonic()
    self.window_steps = 0  # timed steps only
    self.window_clips = 0
    # Each step's metrics stay on the device until the report, so a step never waits for the one
    # before; they are averaged on the host there, where summing on the device would compile an
    # addition whenever a window first repeats a task, long after warm-up.
    self.metrics = {}

  @contextlib.contextmanager
  def timed(self, *, first_call: bool):
    """Runs one train step; with `first_call` (the call that compiles it) its time is left out."""
    if not first_call:
      self._last_step_timed = True
      yield
      return
    with self.paused():
      yield
    self._last_step_timed = False

  def step_done(self, metrics_by_task: dict, clips: int) -> None:
    """One step done: {task: its metrics} (several for a mixed batch), clips of all of them."""
    if self._last_step_timed:
      self.window_steps += 1
      self.window_clips += clips
    for task_name, metrics in metrics_by_task.items():
      self.metrics.setdefault(task_name, []).append(metrics)

  def _means(self, key: str | None = None) -> dict[str, dict[str, float]]:
    """{task: {metric: mean over the window's steps}}, of `key` only if given."""
    means = {}
    for task, steps in self.metrics.items():
      keys = [key] if key else steps[0].keys()
      values = jax.device_get([[step[name] for name in keys] for step in steps])
      means[task] = dict(zip(keys, np.mean(np.asarray(values, np.float64), axis=0).tolist()))
    return means

  @contextlib.contextmanager
  def paused(self):
    """Leaves the time spent inside (evaluation, checkpointing) out of steps/s and the ETA."""
    start = time.monotonic()
    yield
    self.window_start += time.monotonic() - start

  def check_finite(self, step: int) -> None:
    """Raises FloatingPointError if a task's loss since the last report is not finite."""
    for task, means in self._means('loss').items():
      loss = means['loss']
      if not math.isfinite(loss):
        raise FloatingPointError(f'task {task}: training loss is {loss} at step {step}; lower the '
                                 'learning rate or check the data')

  def report(self, step: int) -> dict[str, float]:
    """Scalars of the window since the previous report; logs the progress line and resets.

    Stops the run on a non-finite loss, before a checkpoint could keep the broken state.
    """
    self.check_finite(step)
    scalars = {f'train/{task}/{key}': value
               for task, means in self._means().items() for key, value in means.items()}
    losses = ' '.join(f'{task}={scalars[f"train/{task}/loss"]:.3f}' for task in sorted(self.metrics))
    if not self.window_steps:  # every step of the window compiled: no rate to report yet
      logging.info('step %d/%d | compiled | loss %s', step, self.total_steps, losses)
      self._reset()
      return scalars
    elapsed = max(time.monotonic() - self.window_start, 1e-9)
    steps_per_sec = self.window_steps / elapsed
    clips_per_sec = self.window_clips / elapsed
    logging.info('step %d/%d | %.2f steps/s | %.1f clips/s | ETA %s | loss %s', step,
                 self.total_steps, steps_per_sec, clips_per_sec,
                 eta_text((self.total_steps - step) / steps_per_sec), losses)
    self._reset()
    return dict(scalars, steps_per_sec=steps_per_sec, clips_per_sec=clips_per_sec)


def eta_text(seconds: float) -> str:
  """'HH:MM:SS', with 'Nd ' in front past a day."""
  eta = int(seconds)
  return f'{eta // 86400}d ' * (eta >= 86400) + time.strftime('%H:%M:%S', time.gmtime(eta))
