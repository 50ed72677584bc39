"""tools.estimate_memory prints per-device params, optimizer and activation bytes for the AVA config."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).parent.parent
# The AVA + Kinetics config's local variant: the same two task kinds and code path, a tiny model.
AVA_CONFIG = f'{REPO}/configs/ava_kinetics_cofinetune.py:local=True'


def estimate_memory(*args: str) -> str:
  """The tool's stdout, run on this checkout's code (whatever copy of the package is installed)."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  completed = subprocess.run(
      [sys.executable, '-m', 'vivit_cofinetune.tools.estimate_memory', f'--config={AVA_CONFIG}',
       *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert completed.returncode == 0, completed.stderr[-5000:]
  return completed.stdout


@pytest.fixture(scope='module')
def table() -> dict[str, tuple[int, int, int, int]]:
  """Task -> (params, optimizer, activations, sum) bytes as printed for mesh 1,2,1."""
  out = estimate_memory('--mesh=1,2,1')
  assert 'on mesh data=1 fsdp=2 model=1 (2 devices)' in out
  rows = {}
  for task in ('ava', 'kinetics700'):
    assert re.search(rf'^{task} +([\d.]+) GiB +([\d.]+) GiB +([\d.]+) GiB +([\d.]+) GiB$', out,
                     re.M), out
    exact = re.search(rf'^{task} .*\n +(\d+) +(\d+) +(\d+) +(\d+)  bytes$', out, re.M)
    rows[task] = tuple(int(value) for value in exact.groups())
  return rows


@pytest.mark.slow
def test_prints_three_numbers_per_task_for_the_ava_config(table):
  for params, optimizer, activations, total in table.values():
    # SGD with momentum: one float32 buffer per param, as the params are.
    assert params > 0 and abs(optimizer - params) < 1000 and activations > 0
    assert total == params + optimizer + activations


@pytest.mark.slow
def test_json_for_one_task_and_params_halved_by_fsdp_2(table):
  replicated = json.loads(estimate_memory('--mesh=2,1,1', '--task=ava', '--json').splitlines()[-1])
  assert replicated['mesh'] == dict(data=2, fsdp=1, model=1)
  assert set(replicated['tasks']) == {'ava'}
  ratio = table['ava'][0] / replicated['tasks']['ava']['params']
  # Above a half by the params no rule splits over fsdp (biases of attention, MLP and heads).
  assert 0.5 <= ratio < 0.55, ratio
