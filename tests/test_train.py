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
from vivit_cofinetune import param_paths
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
def trained(data_dir, tmp_path_factory):
  """(config, workdir, results) of one uninterrupted tiny run, shared by the tests below."""
  config = tiny_config(data_dir)
  workdir = tmp_path_factory.mktemp('uninterrupted')
  return config, workdir, train.train_and_evaluate(config, str(workdir))


def test_resumed_run_ends_with_the_params_of_an_uninterrupted_run(trained, tmp_path):
  config, uninterrupted, _ = trained
  # A run killed right after its mid-way checkpoint: its later checkpoint never got written.
  resumed = tmp_path / 'resumed'
  train.train_and_evaluate(config, str(resumed))
  shutil.rmtree(resumed / 'checkpoints' / '8')
  results = train.train_and_evaluate(config, str(resumed))

  flat_expected = param_paths.flatten(checkpoint.read_params(uninterrupted))
  flat_actual = param_paths.flatten(checkpoint.read_params(resumed))
  assert flat_expected.keys() == flat_actual.keys()
  for name, value in flat_expected.items():
    np.testing.assert_array_equal(flat_actual[name], value, err_msg=name)
  # The run did train: the params moved away from the zero-initialised heads.
  assert np.abs(flat_expected['heads/synthetic_cls/output/kernel']).max() > 0

  written = json.loads((resumed / 'eval_results.json').read_text())
  assert set(written) == {'synthetic_loc', 'synthetic_cls'}
  assert 0.0 <= written['synthetic_loc']['mAP'] <= 1.0
  assert 0.0 <= written['synthetic_cls']['top1'] <= 1.0
  assert written == evaluate.results_for_json(results)
  assert (resumed / 'eval' / 'step_8' / 'synthetic_loc_detections.csv').exists()


def test_tensorboard_holds_losses_learning_rate_eval_metrics_and_pictures(trained):
  _, workdir, _ = trained
  events = [str(path) for path in workdir.glob('events.out.tfevents*')]
  assert events
  tags = set()
  for path in events:
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={'tensors': 0})
    accumulator.Reload()
    tags |= set(accumulator.Tags()['tensors'])
  for tag in ('train/synthetic_loc/loss', 'train/synthetic_cls/loss', 'train/learning_rate',
              'steps_per_sec', 'clips_per_sec', 'eval/synthetic_loc/mAP', 'eval/synthetic_cls/top1',
              'eval/synthetic_loc/mAP_head', 'eval/synthetic_loc/mAP_tail',
              'synthetic_loc/per_class_ap', 'synthetic_loc/keyframes'):
    assert tag in tags, (tag, sorted(tags))


def test_eval_mode_reproduces_the_final_evaluation(trained, tmp_path):
  config, workdir, results = trained
  shutil.copytree(workdir / 'checkpoints', tmp_path / 'checkpoints')
  evaluated = evaluate.evaluate_checkpoint(config, str(tmp_path))
  assert evaluate.results_for_json(evaluated) == evaluate.results_for_json(results)
  assert json.loads((tmp_path / 'eval_results.json').read_text()) == json.loads(
      (workdir / 'eval_results.json').read_text())


def test_a_non_finite_loss_stops_the_run_before_a_checkpoint_keeps_it(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=4)
  config.schedule.phases = [dict(steps=4, mixture=dict(synthetic_cls=1.0))]
  # A NaN learning rate makes the params NaN after step 1, so the loss of step 2 is NaN. Progress
  # is reported every 3 steps but checkpoints come every 2: the step-2 checkpoint must not be kept.
  config.optimizer.base_learning_rate = float('nan')
  config.log_every, config.checkpoint_every, config.eval_every = 3, 2, 4
  with pytest.raises(FloatingPointError, match='task synthetic_cls: training loss is nan'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not [path.name for path in (tmp_path / 'checkpoints').iterdir()]
