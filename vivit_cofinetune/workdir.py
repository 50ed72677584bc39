"""The training run's claim on its workdir: a directory it can write, and a lock that keeps a second
run out.

Two runs on one workdir would interleave their checkpoints, summaries and results. A training run
holds WORKDIR/run.lock (host, pid and start time of its process 0) from start to exit; another run
finds it and stops with one line naming the holder. A lock whose holder was killed (SIGKILL, an OOM
kill, a crash of the machine) stays behind: on the same host a dead pid shows it is stale, and the
next run takes it over; a lock from another host cannot be checked from here, so the message says
which file to delete once that run is known to be gone.

On a multi-host job only process 0 (the one that writes checkpoint metadata and results) takes the
lock; every process learns whether it got it, so all of them stop together.
"""
from collections.abc import Iterator
import contextlib
import errno
import json
import os
import socket
import time

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from vivit_cofinetune import checkpoint

LOCK_FILE = 'run.lock'


class WorkdirError(RuntimeError):
  """The workdir cannot be used: not a directory, not writable, or held by another run."""


@contextlib.contextmanager
def claimed(workdir: str | os.PathLike) -> Iterator[epath.Path]:
  """Makes `workdir` if needed, holds its lock while inside, and yields its resolved path.

  Raises WorkdirError (on every process) if process 0 cannot make, write or lock it.
  """
  path = checkpoint.resolve_path(workdir)
  lock, error = None, ''
  if jax.process_index() == 0:
    try:
      _make_directory(path)
      lock = _take_lock(path / LOCK_FILE)
    except WorkdirError as workdir_error:
      error = str(workdir_error)
  failed = bool(multihost_utils.broadcast_one_to_all(np.bool_(bool(error))))
  if failed:
    raise WorkdirError(error or f'--workdir={path}: process 0 could not claim it (see its log)')
  try:
    yield path
  finally:
    if lock is not None:
      _release_lock(lock)


def _make_directory(path: epath.Path) -> None:
  if path.exists() and not path.is_dir():
    raise WorkdirError(f'--workdir={path}: is a file, not a directory; pass a directory (it is '
                       'created if missing)')
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise WorkdirError(f'--workdir={path}: cannot create it ({_reason(error)})') from error


def _holder() -> dict:
  return dict(host=socket.gethostname(), pid=os.getpid(),
              started=time.strftime('%Y-%m-%d %H:%M:%S %Z'))


def _take_lock(lock: epath.Path) -> epath.Path:
  """Creates `lock` holding this process's identity; takes over a stale one; else WorkdirError."""
  holder = _holder()
  for _ in range(2):  # a second try after removing a stale lock
    try:
      _create_exclusively(lock, json.dumps(holder) + '\n')
      return lock
    except FileExistsError:
      pass
    except OSError as error:
      raise WorkdirError(f'--workdir={lock.parent}: not writable ({_reason(error)}); pass a '
                         'directory this user can write') from error
    other = _read_holder(lock)
    if not _is_stale(other):
      described = (f'pid {other["pid"]} on host {other["host"]}, started {other["started"]}'
                   if other else 'its lock file is unreadable')
      raise WorkdirError(f'--workdir={lock.parent}: another run is using it ({described}); wait for '
                         f'it to end or pass another --workdir. If that run is gone, delete {lock}')
    logging.warning('Taking over %s: its run (pid %d on this host) is no longer running.', lock,
                    other['pid'])
    lock.unlink(missing_ok=True)
  raise WorkdirError(f'--workdir={lock.parent}: could not take {lock}; another run took it first')


def _create_exclusively(lock: epath.Path, text: str) -> None:
  """Writes a new file; FileExistsError if it exists (atomic on a local or NFS file system)."""
  if '://' in os.fspath(lock):
    # Object stores have no exclusive create: check, then write (a race of seconds, not minutes).
    if lock.exists():
      raise FileExistsError(errno.EEXIST, 'exists', os.fspath(lock))
    lock.write_text(text)
    return
  descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  with os.fdopen(descriptor, 'w') as file:
    file.write(text)


def _read_holder(lock: epath.Path) -> dict | None:
  try:
    holder = json.loads(lock.read_text())
    return holder if {'host', 'pid', 'started'} <= set(holder) else None
  except (OSError, ValueError):
    return None


def _is_stale(holder: dict | None) -> bool:
  """Whether the lock's process is known to be gone: on this host, and its pid not running."""
  if not holder or holder['host'] != socket.gethostname():
    return False
  try:
    os.kill(int(holder['pid']), 0)
  except ProcessLookupError:
    return True
  except PermissionError:
    return False  # running, as another user
  return False


def _release_lock(lock: epath.Path) -> None:
  """Removes the lock if it is still this process's."""
  holder = _read_holder(lock)
  if holder and holder['host'] == socket.gethostname() and holder['pid'] == os.getpid():
    lock.unlink(missing_ok=True)


def _reason(error: OSError) -> str:
  return error.strerror or str(error)
