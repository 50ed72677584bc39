"""The error exits users meet: each stops with a message naming what to change, before any work."""
import pathlib
import subprocess
import sys

import jax
import pytest

from vivit_cofinetune import config_checks
from vivit_cofinetune import config_lib
from vivit_cofinetune import sharding

REPO = pathlib.Path(__file__).parent.parent


@pytest.mark.parametrize('mesh, message', [
    (dict(data=-1, fsdp=-1), r"config.mesh=\{'data': -1, 'fsdp': -1\}: at most one axis may be -1"),
    (dict(data=-1, fsdp=3), r'8 devices do not split over the fixed axes \(product 3\)'),
    (dict(data=2, fsdp=2, model=1), r'has 4 devices; 8 are present'),
])
def test_bad_mesh_sizes_are_config_errors(mesh, message):
  # validate_config checks the mesh before anything starts, so main prints one line.
  config = config_lib.load_config_file(str(REPO / 'configs' / 'demo_cofinetune.py'))
  config.mesh = mesh
  with pytest.raises(config_lib.ConfigError, match=message):
    config_checks.validate_config(config, num_devices=8, known_datasets=None)
  eight_devices = [object()] * 8  # the sizes are checked before any device is touched
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(mesh, devices=eight_devices)
  # -1 takes what the other axes leave.
  assert dict(sharding.make_mesh(dict(data=-1, fsdp=1)).shape) == dict(
      data=jax.device_count(), fsdp=1, model=1)


def last_line_of_failed_main(workdir, data_dir, *flags: str) -> str:
  """Runs `main` on the tiny demo with `flags`; asserts it failed without a traceback and returns
  the last line it wrote to stderr."""
  command = [sys.executable, '-m', 'vivit_cofinetune.main',
             f'--config={REPO}/configs/demo_cofinetune.py:steps=4', f'--workdir={workdir}',
             f'--config.data_dir={data_dir}',
             '--config.tasks.synthetic_loc.dataset.name=synthetic_actions_loc/tiny',
             '--config.tasks.synthetic_cls.dataset.name=synthetic_actions_cls/tiny', *flags]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
  assert done.returncode == 1, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  return done.stderr.strip().splitlines()[-1]


def test_eval_mode_without_a_checkpoint_stops_with_one_line_naming_the_workdir(data_dir, tmp_path):
  workdir = tmp_path / 'never_trained'
  assert last_line_of_failed_main(workdir, data_dir, '--mode=eval') == (
      f'Checkpoint error: --workdir={workdir}: no checkpoint under {workdir}/checkpoints')
  assert not (workdir / 'checkpoints').exists() and not (workdir / 'eval_results.json').exists()


def test_main_prints_a_config_error_as_one_line_without_traceback(data_dir, tmp_path):
  workdir = tmp_path / 'workdir'
  assert last_line_of_failed_main(workdir, data_dir, '--config.tasks.synthetic_cls.batch_size=0') == (
      'Config error: config.tasks.synthetic_cls.batch_size=0: expected a positive multiple of '
      'data x fsdp of config.mesh (1)')
  assert not (workdir / 'checkpoints').exists()  # stopped before anything was set up
