"""Preemption: a SIGTERM becomes a checkpoint at a step every process agrees on, then a clean exit.

A distributed job (`jax.distributed.initialize()` was called) already has jax's preemption service:
it catches SIGTERM on any host and, through the coordination service, makes
`reached_preemption_sync_point(step)` true on every host at the same step (one past the furthest
step any host had reached). A single process has no such service, so `catch_sigterm` records the
signal here; it must not do so in a distributed job, where a Python handler would replace jax's.
"""
import signal

import jax
import orbax.checkpoint as ocp

_sigterm_received = False


def catch_sigterm() -> None:
  """From now on, SIGTERM asks the training loop to checkpoint and stop instead of killing it."""
  if jax.distributed.is_initialized():
    return  # jax's preemption service already turns SIGTERM into a sync point.
  signal.signal(signal.SIGTERM, _record_sigterm)


def _record_sigterm(signum, frame):
  del signum, frame
  global _sigterm_received
  _sigterm_received = True


def reached(step: int, manager: ocp.CheckpointManager) -> bool:
  """Whether to checkpoint `step` and stop: the same answer on every process of the job.

  Must be asked at every step, on every process: jax's sync point counts on it.
  """
  return _sigterm_received or manager.reached_preemption(step)
