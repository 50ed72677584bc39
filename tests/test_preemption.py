"""Preemption and damaged checkpoints, end to end on the tiny synthetic datasets.

SIGTERM makes a run save the step it reached and exit 0, and the same command resumes there; a time
interval saves between step intervals; a damaged newest checkpoint gives way to the one before, and
when none restores the run stops with one line.
"""
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vivit_cofinetune import train
from test_scale import CONFIG_FILE, OVERRIDES, REPO, SUBPROCESS_TIMEOUT_S, scale_config, saved_params
from test_scale import _free_port

pytestmark = pytest.mark.slow
ONE_DEVICE = dict(data=-1, fsdp=1, model=1)
# Far more steps than a test waits for: only SIGTERM ends these runs.
ENDLESS_CONFIG_FILE = CONFIG_FILE.replace('steps=4', 'steps=100000')
ENDLESS_OVERRIDES = dict(OVERRIDES, log_every=1, eval_every=100_000, checkpoint_every=100_000)
# Saves at step 4 by the step interval and at step 2 by the clock, whose interval any step exceeds.
SAVE_OVERRIDES = {'checkpoint_every': 4, 'checkpoint_every_minutes': 1e-6}


def trainer_command(workdir: pathlib.Path, data_dir, config_file: str, overrides: dict) -> list[str]:
  return [sys.executable, '-m', 'vivit_cofinetune.main', f'--config={config_file}',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          *[f'--config.{key}={value}' for key, value in overrides.items()]]


def checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  return sorted(int(path.name) for path in (workdir / 'checkpoints').iterdir() if path.name.isdigit())


def run_until_then_sigterm(command: list[str], pattern: str) -> tuple[re.Match, int, str]:
  """Runs `command`, sends SIGTERM once a log line matches `pattern`; (match, exit code, log)."""
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
  try:
    lines = []
    for line in process.stderr:  # absl logs to stderr
      lines.append(line)
      match = re.search(pattern, line)
      if match:
        process.send_signal(signal.SIGTERM)
        break
    _, rest = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
  finally:
    process.kill()
  log = ''.join(lines) + rest
  assert match, log[-5000:]
  return match, process.returncode, log


def test_sigterm_saves_the_step_reached_exits_0_and_the_rerun_resumes_there(data_dir, tmp_path):
  # Two processes, the notice to one of them: both stop at one step. Then one process (another host
  # count) resumes there, and a SIGTERM to it alone saves a later step.
  command = trainer_command(tmp_path / 'workdir', data_dir, ENDLESS_CONFIG_FILE, ENDLESS_OVERRIDES)
  command += [f'--coordinator_address=127.0.0.1:{_free_port()}', '--num_processes=2']
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  logs = [tmp_path / f'process_{index}.log' for index in range(2)]
  log_files = [log.open('w') for log in logs]
  processes = [subprocess.Popen(command + [f'--process_id={index}'], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=log_file)
               for index, log_file in enumerate(log_files)]
  try:
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while not re.search(r'step \d+/100000 ', logs[0].read_text()):
      assert time.monotonic() < deadline and processes[0].poll() is None, logs[0].read_text()[-5000:]
      time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)  # only one host gets the notice
    for process in processes:
      process.wait(timeout=SUBPROCESS_TIMEOUT_S)
  finally:
    for process, log_file in zip(processes, log_files):
      process.kill()
      log_file.close()
  texts = [log.read_text() for log in logs]
  for process, text in zip(processes, texts):
    assert process.returncode == 0, text[-5000:]
  stops = [re.search(r'Preempted: saved checkpoint at step (\d+)', text) for text in texts]
  assert all(stops), [text[-3000:] for text in texts]
  assert stops[0].group(1) == stops[1].group(1)
  stop = int(stops[0].group(1))
  assert checkpoint_steps(tmp_path / 'workdir') == [stop]

  # docs/architecture.md says what another host count does to the data order.
  single = trainer_command(tmp_path / 'workdir', data_dir, ENDLESS_CONFIG_FILE, ENDLESS_OVERRIDES)
  resumed, returncode, log = run_until_then_sigterm(single, r'Resumed from step (\d+) ')
  assert int(resumed.group(1)) == stop
  assert returncode == 0, log[-5000:]
  second_stop = re.search(r'Preempted: saved checkpoint at step (\d+); rerun the same command', log)
  assert second_stop, log[-5000:]
  assert int(second_stop.group(1)) > stop
  assert checkpoint_steps(tmp_path / 'workdir') == [stop, int(second_stop.group(1))]


@pytest.fixture(scope='module')
def two_checkpoints(data_dir, tmp_path_factory):
  """A finished 4-step run with checkpoints at steps 2 (by the clock) and 4 (by the step interval)."""
  workdir = tmp_path_factory.mktemp('two_checkpoints')
  config = scale_config(data_dir, ONE_DEVICE)
  config.update(SAVE_OVERRIDES)
  train.train_and_evaluate(config, str(workdir))
  return config, workdir


def test_time_interval_saves_between_step_intervals(two_checkpoints):
  _, workdir = two_checkpoints
  assert checkpoint_steps(workdir) == [2, 4]


def damage(step_dir: pathlib.Path) -> dict[str, bytes]:
  """Truncates every file of a checkpoint to half its length, as a copy cut short would leave it."""
  damaged = {}
  for path in sorted(step_dir.rglob('*')):
    if path.is_file():
      content = path.read_bytes()[:path.stat().st_size // 2]
      path.write_bytes(content)
      damaged[str(path.relative_to(step_dir))] = content
  return damaged


def test_damaged_newest_checkpoint_gives_way_to_the_one_before(two_checkpoints, tmp_path, caplog):
  config, finished = two_checkpoints
  shutil.copytree(finished / 'checkpoints', tmp_path / 'checkpoints')
  damaged = damage(tmp_path / 'checkpoints' / '4')

  # absl's logger keeps its own level (an earlier test on this worker may have set its verbosity).
  with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger='absl'):
    train.train_and_evaluate(config, str(tmp_path))
  assert re.search(r'Checkpoint at step 4 does not restore \(\w+.*\); trying the one before',
                   caplog.text), caplog.text
  assert 'Resumed from step 2 ' in caplog.text
  # Nothing deleted: the damaged files are kept, byte for byte, out of the way of the new step 4.
  set_aside = tmp_path / 'unreadable_checkpoints' / '4'
  assert {str(path.relative_to(set_aside)): path.read_bytes()
          for path in set_aside.rglob('*') if path.is_file()} == damaged
  assert checkpoint_steps(tmp_path) == [2, 4]
  # The rerun wrote step 4 again, the same as the undamaged run's.
  expected = saved_params(finished, 4)
  actual = saved_params(tmp_path, 4)
  assert actual.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_array_equal(actual[name], value, err_msg=name)


def test_no_checkpoint_restores_stops_with_one_line(two_checkpoints, data_dir, tmp_path):
  _, finished = two_checkpoints
  shutil.copytree(finished / 'checkpoints', tmp_path / 'checkpoints')
  for step in (2, 4):
    damage(tmp_path / 'checkpoints' / str(step))

  completed = subprocess.run(
      trainer_command(tmp_path, data_dir, CONFIG_FILE, dict(OVERRIDES, **SAVE_OVERRIDES)), cwd=REPO,
      capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)
  assert completed.returncode != 0
  last_line = completed.stderr.strip().splitlines()[-1]
  assert last_line.startswith('Checkpoint error: none of the checkpoints under '), completed.stderr[-5000:]
  assert 'step 4: ' in last_line and 'step 2: ' in last_line
  assert 'Traceback' not in completed.stderr
  assert checkpoint_steps(tmp_path) == [2, 4]  # nothing moved or deleted when nothing restored
