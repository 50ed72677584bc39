"""bench/train_step.py's model flags: the config they build and the JSON of a tiny run."""
import argparse
import json
import sys

import pytest

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
