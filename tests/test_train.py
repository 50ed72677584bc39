"""End to end on the tiny synthetic datasets: train, checkpoint, resume, evaluate."""
import json
import pathlib
import shutil

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_lib
from vivit_cofinetune import evaluate
from vivit_cofinetune import train

pytestmark = pytest.mark.slow
CONFIGS = pathlib.Path(__file__).parent.parent / 'configs'


def tiny_config(data_dir: pathlib.Path, steps: int = 8):
  config = config_lib.load_config_file(f'{CONFIGS}/demo_cofinetune.py:steps={steps}')
  config.data_dir = str(data_dir)
  config.tasks.synthetic_loc.dataset.name = 'synthetic_actions_loc/tiny'
  config.tasks.synthetic_cls.dataset.name = 'synthetic_actions_cls/tiny'
  for task in config.tasks.values():
    task.batch_size, task.eval_batch_size = 4, 8
  config.model.num_layers = 2
  config.optimizer.warmup_steps = 2
  config.log_every, config.eval_every, config.checkpoint_every = 2, steps, steps // 2
  config.async_checkpointing = False
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def final_params(workdir: pathlib.Path):
  return checkpoint.read_params(workdir)


def test_resumed_run_ends_with_the_params_of_an_uninterrupted_run(data_dir, tmp_path):
  config = tiny_config(data_dir)
  uninterrupted = tmp_path / 'uninterrupted'
  train.train_and_evaluate(config, str(uninterrupted))

  # A run killed right after its mid-way checkpoint: its later checkpoint never got written.
  resumed = tmp_path / 'resumed'
  train.train_and_evaluate(config, str(resumed))
  shutil.rmtree(resumed / 'checkpoints' / '8')
  results = train.train_and_evaluate(config, str(resumed))

  expected, actual = final_params(uninterrupted), final_params(resumed)
  flat_expected = checkpoint._flatten(expected)  # pylint: disable=protected-access
  flat_actual = checkpoint._flatten(actual)  # pylint: disable=protected-access
  assert flat_expected.keys() == flat_actual.keys()
  for name, value in flat_expected.items():
    np.testing.assert_array_equal(flat_actual[name], value, err_msg='/'.join(map(str, name)))
  # The run did train: the params moved away from the zero-initialised heads.
  assert np.abs(flat_expected[('heads', 'synthetic_cls', 'output', 'kernel')]).max() > 0

  written = json.loads((resumed / 'eval_results.json').read_text())
  assert set(written) == {'synthetic_loc', 'synthetic_cls'}
  assert 0.0 <= written['synthetic_loc']['mAP'] <= 1.0
  assert 0.0 <= written['synthetic_cls']['top1'] <= 1.0
  assert written == json.loads(json.dumps(results))
  assert list((resumed / 'eval' / 'step_8').glob('synthetic_loc_detections.csv'))


def test_tensorboard_holds_losses_learning_rate_and_eval_metrics(data_dir, tmp_path):
  train.train_and_evaluate(tiny_config(data_dir), str(tmp_path))
  events = [str(path) for path in tmp_path.glob('events.out.tfevents*')]
  assert events
  tags = set()
  for path in events:
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={'tensors': 0})
    accumulator.Reload()
    tags |= set(accumulator.Tags()['tensors']) | set(accumulator.Tags()['scalars'])
  for tag in ('train/synthetic_loc/loss', 'train/synthetic_cls/loss', 'train/learning_rate',
              'steps_per_sec', 'clips_per_sec', 'eval/synthetic_loc/mAP', 'eval/synthetic_cls/top1'):
    assert tag in tags, (tag, sorted(tags))


def test_eval_mode_reproduces_the_final_evaluation(data_dir, tmp_path):
  config = tiny_config(data_dir)
  trained = train.train_and_evaluate(config, str(tmp_path))
  (tmp_path / 'eval_results.json').unlink()
  evaluated = evaluate.evaluate_checkpoint(config, str(tmp_path))
  assert evaluated == trained
  assert (tmp_path / 'eval_results.json').exists()
