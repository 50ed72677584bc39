"""workdir.claimed: one training run per workdir, a stale lock does not block a restart, and a
workdir that cannot be used is named in one line."""
import json
import os
import socket
import subprocess
import sys

import pytest

from vivit_cofinetune import workdir as workdir_lib


def dead_pid() -> int:
  """The pid of a process that has exited (and been reaped)."""
  done = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  return int(done.stdout)


def write_lock(directory, host: str, pid: int):
  directory.mkdir(parents=True, exist_ok=True)
  lock = directory / workdir_lib.LOCK_FILE
  lock.write_text(json.dumps(dict(host=host, pid=pid, started='2026-12-01 10:00:00 UTC')))
  return lock


def test_the_lock_is_held_inside_and_released_after(tmp_path):
  workdir = tmp_path / 'run'
  with workdir_lib.claimed(workdir) as path:
    holder = json.loads((workdir / 'run.lock').read_text())
    assert (holder['host'], holder['pid']) == (socket.gethostname(), os.getpid())
    assert str(path) == str(workdir)
  assert not (workdir / 'run.lock').exists()
  with pytest.raises(RuntimeError, match='the run failed'):  # released on an error too
    with workdir_lib.claimed(workdir):
      raise RuntimeError('the run failed')
  assert not (workdir / 'run.lock').exists()


def test_a_second_run_stops_with_one_line_and_leaves_the_first_runs_files(tmp_path):
  workdir = tmp_path / 'run'
  with workdir_lib.claimed(workdir):
    (workdir / 'checkpoints').mkdir()
    with pytest.raises(workdir_lib.WorkdirError) as error:
      with workdir_lib.claimed(workdir):
        pytest.fail('the second run must not start')
    message = str(error.value)
    assert message.startswith(f'--workdir={workdir}: another run is using it (pid {os.getpid()} '
                              f'on host {socket.gethostname()}, started ')
    assert '\n' not in message
    # The first run's lock and files are untouched.
    assert json.loads((workdir / 'run.lock').read_text())['pid'] == os.getpid()
    assert (workdir / 'checkpoints').is_dir()


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
  workdir = tmp_path / 'run'
  write_lock(workdir, socket.gethostname(), dead_pid())
  with workdir_lib.claimed(workdir):
    assert json.loads((workdir / 'run.lock').read_text())['pid'] == os.getpid()
  assert not (workdir / 'run.lock').exists()


def test_a_lock_from_another_host_is_not_taken_and_the_message_names_the_file(tmp_path):
  workdir = tmp_path / 'run'
  lock = write_lock(workdir, 'some-other-host', dead_pid())
  with pytest.raises(workdir_lib.WorkdirError) as error:
    with workdir_lib.claimed(workdir):
      pass
  assert 'on host some-other-host' in str(error.value)
  assert str(error.value).endswith(f'If that run is gone, delete {lock}')
  assert json.loads(lock.read_text())['host'] == 'some-other-host'


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  (tmp_path / 'file').write_text('data')
  with pytest.raises(workdir_lib.WorkdirError, match='is a file, not a directory'):
    with workdir_lib.claimed(tmp_path / 'file'):
      pass
  assert (tmp_path / 'file').read_text() == 'data'


def test_a_workdir_that_is_not_writable_is_named(tmp_path, monkeypatch):
  # Tests may run as root, whom file modes do not stop: the file system's refusal is simulated.
  def refuse(path, *args, **kwargs):
    raise PermissionError(13, 'Permission denied', os.fspath(path))

  monkeypatch.setattr(os, 'open', refuse)
  with pytest.raises(workdir_lib.WorkdirError) as error:
    with workdir_lib.claimed(tmp_path):
      pass
  assert str(error.value) == (f'--workdir={tmp_path}: not writable (Permission denied); pass a '
                              'directory this user can write')


def test_only_process_0_takes_the_lock(tmp_path, monkeypatch):
  # Another host's process of the same job: it neither writes nor checks the lock file.
  monkeypatch.setattr(workdir_lib.jax, 'process_index', lambda: 1)
  write_lock(tmp_path, 'host-of-process-0', 1)
  with workdir_lib.claimed(tmp_path):
    assert json.loads((tmp_path / 'run.lock').read_text())['host'] == 'host-of-process-0'
  assert (tmp_path / 'run.lock').exists()
