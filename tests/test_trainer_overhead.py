"""bench/trainer_overhead.py at a tiny size: the trainer compiles nothing after its warm-up."""
import pathlib

import pytest

from bench import trainer_overhead

pytestmark = pytest.mark.slow


def test_four_task_run_compiles_nothing_after_warm_up_and_batches_cross_as_uint8(data_dir, tmp_path):
  config = trainer_overhead.four_task_config(steps=32)
  config.data_dir = str(data_dir)
  for task in config.tasks.values():
    task.dataset.name += '/tiny'
    task.batch_size, task.eval_batch_size = 4, 8
  config.model.num_layers = 2
  # Every task steps in the first window (the bench checks); evaluations at 16 and 32.
  config.log_every, config.eval_every, config.checkpoint_every = 4, 16, 8

  result = trainer_overhead.run(config, str(tmp_path))

  assert result['compiles_after_warm_up'] == 0, result['compiled_after_warm_up']
  # Each task's step, the state's initialisation and the evaluation compiled in the warm-up.
  assert result['compiles_warm_up'] >= 4 + 1 + 2
  assert result['video_dtype_to_device'] == 'uint8'
  assert result['timed_steps'] == 24  # windows (4, 16] and (20, 32]
  assert result['trainer_steps_per_s'] > 0 and result['bare_steps_per_s'] > 0
  assert 0 < result['ratio_bound_by_host_cpu'] <= 1 and result['checkpoint_every'] == 8
  assert sorted(path.name for path in (tmp_path / 'checkpoints').iterdir()
                if path.name.isdigit()) == ['24', '32']
  assert any(pathlib.Path(tmp_path, 'compilation_cache').iterdir())
