"""Checkpoints: the train state plus the data position, and `init_from` loading.

A checkpoint holds two items: `state` (params, optimizer states, step) and `data` (how many batches of
each task were consumed), so a resumed run reads exactly the batches an uninterrupted run would.
Restoring takes an abstract state carrying the current shardings, so a checkpoint written on one mesh
restores onto another. A checkpoint that does not restore (half-written, corrupt) gives way to the one
before it.
"""
from collections.abc import Mapping, Sequence
import os
import re
import time

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vivit_cofinetune import param_paths
from vivit_cofinetune.config_lib import ConfigError


def resolve_path(path: str | os.PathLike) -> epath.Path:
  """A local path made absolute (orbax needs that), or a remote one (gs://...) as it is."""
  path = os.fspath(path)
  return epath.Path(path if '://' in path else os.path.abspath(path))


def make_manager(workdir: str | os.PathLike, config: ml_collections.ConfigDict,
                 read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.get('keep_checkpoints', 3),
      enable_async_checkpointing=config.get('async_checkpointing', True),
      read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(resolve_path(workdir) / 'checkpoints', options=options)


def save(manager: ocp.CheckpointManager, step: int, state, batches_consumed: Mapping[str, int]):
  """Starts an (asynchronous) save of the state and the data position at `step`."""
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data=ocp.args.JsonSave({'batches_consumed': dict(batches_consumed)})))


class NoCheckpointRestoresError(RuntimeError):
  """The workdir has checkpoints, but none of them restores."""


class NoCheckpointError(FileNotFoundError):
  """The workdir has no checkpoint at all (e.g. `--mode=eval` on a run that never saved)."""


def restore(manager: ocp.CheckpointManager, abstract_state, step: int | None = None, *,
            set_aside_unreadable: bool = False):
  """Returns (state, batches_consumed) of `step`, by default of the newest checkpoint that restores.

  A checkpoint that fails to restore on any host (half-written, corrupt files, unreadable storage)
  gets a warning naming its step and the error, and the one before it is tried; every host ends on
  the same step. Nothing is deleted: with `set_aside_unreadable` the failed checkpoints move to
  WORKDIR/unreadable_checkpoints/STEP, because orbax will not save a step at or below its newest
  one, so left in place they would silently swallow the resumed run's saves up to their step.
  Returns None if there is no checkpoint; raises NoCheckpointRestoresError if none restores.
  """
  steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
  if not steps:
    return None
  unreadable = []
  for candidate in steps:
    try:
      restored = manager.restore(candidate, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      error = None
    except Exception as restore_error:  # pylint: disable=broad-except
      # Damage shows up as orbax's, tensorstore's, json's or the file system's errors alike.
      error = f'{type(restore_error).__name__}: {restore_error}'
    if _true_on_every_host(error is None):
      break
    error = error or 'it failed on another host'
    logging.warning('Checkpoint at step %d does not restore (%s); trying the one before.',
                    candidate, error)
    unreadable.append((candidate, error))
  else:
    # One line: the warnings above hold each error in full.
    raise NoCheckpointRestoresError(
        f'none of the checkpoints under {manager.directory} restores; newest first: '
        + '; '.join(f'step {failed}: {error.splitlines()[0]}' for failed, error in unreadable))
  if set_aside_unreadable and unreadable:
    _set_aside(manager, [failed for failed, _ in unreadable])
  return restored.state, restored.data['batches_consumed']


def _true_on_every_host(value: bool) -> bool:
  return bool(np.all(multihost_utils.process_allgather(np.bool_(value))))


def _set_aside(manager: ocp.CheckpointManager, steps: Sequence[int]) -> None:
  """Moves checkpoints out of the manager's sight into WORKDIR/unreadable_checkpoints/."""
  target = manager.directory.parent / 'unreadable_checkpoints'
  if jax.process_index() == 0:
    target.mkdir(parents=True, exist_ok=True)
    for step in steps:
      (manager.directory / str(step)).rename(target / str(step))
      logging.warning('Moved the unreadable checkpoint of step %d to %s', step, target / str(step))
  multihost_utils.sync_global_devices('checkpoint: unreadable checkpoints set aside')
  manager.reload()


class SaveClock:
  """Time-based saves: says when `minutes` have passed since the last save (0 or None: never).

  Process 0's clock decides and every process gets its answer, so that all of them save the same
  step. On several hosts that is a small collective: ask where the hosts wait for the devices anyway.
  """

  def __init__(self, minutes: float | None):
    self.seconds = 60 * minutes if minutes else None
    self.restart()

  def restart(self) -> None:
    self.last_save = time.monotonic()

  def due(self) -> bool:
    if self.seconds is None:
      return False
    due = time.monotonic() - self.last_save >= self.seconds
    return bool(multihost_utils.broadcast_one_to_all(np.bool_(due)))


def read_params(path: str | os.PathLike, step: int | None = None) -> dict:
  """Params as numpy from a workdir (checkpoint `step`, default the latest) or a converted checkpoint.

  Read as plain numpy, whatever mesh wrote them, so a pod's workdir initialises a 1-device run.
  """
  path = resolve_path(path)
  if (path / 'checkpoints').is_dir():
    if step is None:
      manager = ocp.CheckpointManager(path / 'checkpoints',
                                      options=ocp.CheckpointManagerOptions(read_only=True))
      step = manager.latest_step()
    if step is None:
      raise ConfigError(f'config.init_from.path={path}: the workdir has no checkpoint')
    return _restore_as_numpy(path / 'checkpoints' / str(step) / 'state')['params']
  if (path / 'params').is_dir():
    return _restore_as_numpy(path / 'params')
  raise ConfigError(f'config.init_from.path={path}: expected a workdir with checkpoints/ or a '
                          'converted checkpoint directory with params/ (tools.convert_checkpoint)')


def _restore_as_numpy(path: epath.Path) -> dict:
  checkpointer = ocp.PyTreeCheckpointer()
  tree = checkpointer.metadata(path).item_metadata.tree
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def merge_params(fresh: dict, loaded: dict, *, reinit: Sequence[str] = (),
                 source: str = 'init_from') -> tuple[dict, list[str]]:
  """Takes every param of `loaded` whose '/' path and shape match, except paths matching `reinit`.

  `fresh` may hold jax Arrays (only their shape and dtype are read). Returns the merged params (numpy
  where loaded, the fresh leaf otherwise) and the paths that kept their fresh initialisation. A
  backbone param missing from the checkpoint, or of another shape, is an error unless re-initialised:
  silently training it from scratch would hide the mistake.
  """
  patterns = [re.compile(pattern) for pattern in reinit]
  flat_loaded = param_paths.flatten(loaded)
  kept_fresh = []

  def choose(path, fresh_value):
    name = param_paths.name(path)
    if any(pattern.search(name) for pattern in patterns):
      kept_fresh.append(name)
      return fresh_value
    if name not in flat_loaded:
      # A new head may start fresh; a backbone param missing from the checkpoint means the layouts
      # differ (e.g. scanned vs unrolled layers), and training from scratch would hide that.
      if name.startswith('backbone/'):
        raise ValueError(f'{source}: param {name} is not in the checkpoint; list it in '
                         'config.init_from.reinit to initialise it fresh')
      kept_fresh.append(name)
      return fresh_value
    value = np.asarray(flat_loaded[name])
    if value.shape != fresh_value.shape:
      raise ValueError(f'{source}: param {name} has shape {value.shape} in the checkpoint but '
                       f'{fresh_value.shape} in the model; list it in config.init_from.reinit to '
                       'initialise it fresh')
    return value.astype(fresh_value.dtype)

  merged = jax.tree_util.tree_map_with_path(choose, fresh)
  return merged, kept_fresh
