"""bench/train_step.py's model flags: the config they build and the JSON of a tiny run."""
import argparse
import json
import os
import pathlib
import subprocess
import sys

import pytest

from bench import op_profile
from bench import train_step


def _run_main(monkeypatch, capsys, *flags: str) -> dict:
  monkeypatch.setattr(sys, 'argv', ['train_step.py', *flags])
  train_step.main()
  return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('task, variant, pooling', [
    ('classification', 'spatio_temporal', 'token'),
    ('classification', 'factorised_dot_product', 'mean'),
    ('localisation', 'factorised_encoder', None)])
def test_flag_config_builds_one_task_of_the_kind(task, variant, pooling):
  config = train_step.flag_config(argparse.Namespace(
      model='B/16x2', variant=variant, dtype='bfloat16', remat='dots', scan=False, attention='xla',
      task=task, frames=8, resolution=112, batch_size=4, optimizer='adamw'))
  assert list(config.tasks) == [task] and config.tasks[task].kind == task
  assert config.tasks[task].input.num_frames == 8 and config.tasks[task].input.crop_size == 112
  assert config.tasks[task].batch_size == 4 and config.optimizer.name == 'adamw'
  assert config.model.variant == variant and config.model.hidden_size == 768
  assert config.model.remat_policy == 'dots_with_no_batch_dims_saveable'
  assert not config.model.scan_layers and config.model.dtype == 'bfloat16'
  if pooling:
    assert config.tasks[task].head.pooling == pooling


def test_model_flags_print_the_json_with_compiled_memory(monkeypatch, capsys):
  result = _run_main(monkeypatch, capsys, '--model=Ti/16x2', '--frames=2', '--resolution=16',
                     '--batch_size=1', '--steps=1', '--remat=full', '--json')
  assert result['model'] == 'Ti/16x2' and result['remat'] == 'full'
  assert result['clip_shape'] == [2, 16, 16, 3] and result['batch_size'] == 1
  for key in ('compiled_temp_bytes', 'compiled_argument_bytes', 'compiled_output_bytes'):
    assert isinstance(result[key], int) and result[key] > 0, key
  for key in ('step_s_median', 'backend_compile_s', 'mfu', 'loss'):
    assert result[key] > 0, key


def test_model_and_config_flags_exclude_each_other(monkeypatch, capsys):
  with pytest.raises(SystemExit):
    _run_main(monkeypatch, capsys, '--model=B/16x2', '--config=configs/demo_cofinetune.py')
  assert 'not both' in capsys.readouterr().err


@pytest.mark.parametrize('op_name, kind', [
    ('ynn_fusion.40', 'matmul'),  # XLA:CPU's YNNPACK dot, with ops fused around it
    ('dot.132', 'matmul'),
    ('cublas-gemm.3', 'matmul'),
    ('bitcast_dynamic-update-slice_fusion.1', 'scan writes (dynamic-update-slice)'),
    ('dynamic-slice_bitcast_fusion', 'scan reads (dynamic-slice)'),
    ('wrapped_broadcast.8', 'buffer initialisation (broadcast)'),
    ('transpose_copy_fusion.2', 'copies and transposes'),
    ('copy.374', 'copies and transposes'),
    ('multiply_add_fusion.14', 'other fusions'),
    ('while.3', 'other'),
    ('dotted_line_fusion', 'other fusions'),  # 'dot' only as a whole word
])
def test_op_kinds_from_hlo_names(op_name, kind):
  assert op_profile.kind_of(op_name) == kind


def test_profile_reports_where_the_step_time_goes(monkeypatch, capsys):
  result = _run_main(monkeypatch, capsys, '--model=Ti/16x2', '--frames=2', '--resolution=16',
                     '--batch_size=1', '--steps=1', '--profile', '--json')
  seconds = result['op_seconds_per_step']
  # The scanned layers' matmuls, their stacked per-layer buffers and the optimizer's fusions.
  for kind in ('matmul', 'scan writes (dynamic-update-slice)', 'scan reads (dynamic-slice)',
               'other fusions'):
    assert seconds.get(kind, 0) > 0, (kind, seconds)
  assert set(seconds) <= {kind for kind, _ in op_profile.KINDS} | {op_profile.OTHER}
  assert result['cpu_s_per_step_median'] > 0 and result['minor_page_faults_per_step_median'] >= 0


_BLOCKER = '''
import sys


class _Absent:
  """Imports of what the GPU machine lacks fail, as they would there."""
  ABSENT = ('tensorflow', 'tensorflow_datasets', 'av', 'clu', 'PIL')

  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in self.ABSENT:
      raise ImportError(f'{name} is not installed on this machine')
    return None


sys.meta_path.insert(0, _Absent())
'''


@pytest.mark.slow
def test_the_gpu_bench_runs_without_tensorflow_tfds_pyav_clu_or_pillow(tmp_path):
  # sitecustomize runs at interpreter start-up in the bench and in every child it starts.
  (tmp_path / 'sitecustomize.py').write_text(_BLOCKER)
  repo = pathlib.Path(__file__).resolve().parent.parent
  environment = dict(os.environ, PYTHONPATH=str(tmp_path))
  blocked = subprocess.run([sys.executable, '-c', 'import tensorflow'], env=environment,
                           capture_output=True, text=True, check=False)
  assert blocked.returncode and 'not installed' in blocked.stderr  # the blocker works
  done = subprocess.run(
      [sys.executable, 'bench/gpu_step.py', '--models=Ti/16x2', '--frames=2', '--resolution=32',
       '--attention=xla', '--batch_size=2'],
      cwd=repo, env=environment, capture_output=True, text=True, check=False, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result['model'] == 'Ti/16x2' and result['batch_size'] == 2 and result['step_s'] > 0
  # predict and estimate_memory (with the log filter they share with main) import without them too.
  imported = subprocess.run(
      [sys.executable, '-c', 'import vivit_cofinetune.tools.predict, vivit_cofinetune.tools.estimate_memory'],
      cwd=repo, env=environment, capture_output=True, text=True, check=False, timeout=600)
  assert imported.returncode == 0, imported.stderr[-2000:]
