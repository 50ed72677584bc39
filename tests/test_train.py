"""End to end on the tiny synthetic datasets: train, checkpoint, resume, evaluate."""
import json
import math
import pathlib
import shutil

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_lib
from vivit_cofinetune import evaluate
from vivit_cofinetune import optim
from vivit_cofinetune import param_paths
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import train
from vivit_cofinetune import trainer_setup
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.tools import predict

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
  config.compilation_cache = False  # the session's cache (conftest.py)
  return config


# The shared run's localisation steps take half the scheduled learning rate.
LOC_LEARNING_RATE_FACTOR = 0.5


def shared_run_config(data_dir: pathlib.Path):
  """tiny_config with every dropout mechanism on (so resuming must continue the dropout
  randomness), a learning-rate factor on one task and a learning-rate floor."""
  config = tiny_config(data_dir)
  config.model.update(dropout_rate=0.1, attention_dropout_rate=0.1, stochastic_depth=0.2)
  for task in config.tasks.values():
    task.head.dropout_rate = 0.2
  config.tasks.synthetic_loc.learning_rate_factor = LOC_LEARNING_RATE_FACTOR
  config.optimizer.end_learning_rate_factor = 0.1
  return config


def scheduled_learning_rate(step: int) -> float:
  """The shared run's schedule written out: AdamW at 1e-3, 2 warm-up steps, then a cosine over the
  remaining 6 steps down to the floor 0.1 x 1e-3."""
  if step < 2:
    return 1e-3 * (step + 1) / 2
  return 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 2) / 6)))


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """(config, workdir, results) of one uninterrupted tiny run, shared by the tests below."""
  config = shared_run_config(data_dir)
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


def scalars(workdir: pathlib.Path) -> dict[str, dict[int, float]]:
  """Every TensorBoard scalar of the workdir: tag -> {step: value}."""
  values = {}
  for path in workdir.glob('events.out.tfevents*'):
    accumulator = event_accumulator.EventAccumulator(str(path), size_guidance={'tensors': 0})
    accumulator.Reload()
    for tag in accumulator.Tags()['tensors']:
      for event in accumulator.Tensors(tag):
        value = tf.make_ndarray(event.tensor_proto)
        if value.ndim == 0:
          values.setdefault(tag, {})[event.step] = float(value)
        else:
          values.setdefault(tag, {})[event.step] = None  # an image
  return values


def test_tensorboard_values_match_the_schedule_and_the_results(trained):
  config, workdir, _ = trained
  assert not (workdir / 'profile').exists()  # profiled only when config.profile_steps asks
  written = scalars(workdir)
  for tag in ('synthetic_loc/per_class_ap', 'synthetic_loc/keyframes'):
    assert tag in written, (tag, sorted(written))
  # Logged every 2 steps: the learning rate of the step just done, as the schedule gives it.
  learning_rates = written['train/learning_rate']
  assert sorted(learning_rates) == [2, 4, 6, 8]
  for done, value in learning_rates.items():
    assert value == pytest.approx(scheduled_learning_rate(done - 1), rel=1e-6), done
  for task in config.tasks:
    losses = written[f'train/{task}/loss']
    assert losses and all(math.isfinite(value) and value > 0 for value in losses.values()), losses
  for tag in ('steps_per_sec', 'clips_per_sec'):
    assert all(value > 0 for value in written[tag].values()), tag
  # The eval scalars are eval_results.json, at the final step.
  results = json.loads((workdir / 'eval_results.json').read_text())
  expected = {f'eval/{task}/{key}': value for task, metrics in results.items()
              for key, value in metrics.items()}
  assert {'eval/synthetic_loc/mAP_head', 'eval/synthetic_cls/top1'} <= set(expected)
  logged = {tag: steps for tag, steps in written.items() if tag.startswith('eval/')}
  assert set(logged) == set(expected)
  for tag, value in expected.items():
    assert set(logged[tag]) == {8}, tag
    if value is None:  # JSON's null for an undefined metric
      assert math.isnan(logged[tag][8]), tag
    else:
      assert logged[tag][8] == pytest.approx(value, rel=1e-6), tag


def test_each_part_keeps_its_own_learning_rate_and_step_count(trained):
  """The final optimizer states: the last learning rate each part was given, scheduled rate times
  the task's learning_rate_factor, and how many steps each part was updated."""
  config, workdir, _ = trained
  final = workdir / 'checkpoints' / '8' / 'state'
  state = checkpoint._restore_as_numpy(final)  # pylint: disable=protected-access
  schedule = schedule_lib.task_schedule(
      config.schedule.phases, seed=config.seed,
      transfer_steps={name: task.transfer_steps for name, task in config.tasks.items()})
  tasks_of_steps = [schedule.task_of_step(step) for step in range(8)]
  factor = {'synthetic_loc': LOC_LEARNING_RATE_FACTOR, 'synthetic_cls': 1.0}
  assert set(tasks_of_steps) == set(factor)
  backbone = state['opt_state']['backbone']
  assert int(backbone['count']) == 8
  assert float(backbone['hyperparams']['learning_rate']) == pytest.approx(
      scheduled_learning_rate(7) * factor[tasks_of_steps[7]], rel=1e-6)
  for task, task_factor in factor.items():
    head = state['opt_state']['heads'][task]
    last = max(step for step, name in enumerate(tasks_of_steps) if name == task)
    assert int(head['count']) == tasks_of_steps.count(task), task
    assert float(head['hyperparams']['learning_rate']) == pytest.approx(
        scheduled_learning_rate(last) * task_factor, rel=1e-6), task


def numpy_top1(logits, labels, video_index, view_index, mask) -> tuple[float, np.ndarray]:
  """Top-1 over videos from per-view logits: softmax, mean over each video's views, argmax.

  Returns (top-1, the predicted class of each video).
  """
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  views, label_of = {}, {}
  for row in np.flatnonzero(mask):
    views.setdefault(int(video_index[row]), {})[int(view_index[row])] = probabilities[row]
    label_of[int(video_index[row])] = int(labels[row])
  predicted = {video: int(np.argmax(np.mean(list(by_view.values()), axis=0)))
               for video, by_view in views.items()}
  hits = [predicted[video] == label_of[video] for video in predicted]
  return float(np.mean(hits)), np.array(list(predicted.values()))


def test_eval_mode_reproduces_the_final_evaluation(trained, tmp_path):
  config, workdir, results = trained
  shutil.copytree(workdir / 'checkpoints', tmp_path / 'checkpoints')
  evaluated = evaluate.evaluate_checkpoint(config, str(tmp_path))
  assert evaluate.results_for_json(evaluated) == evaluate.results_for_json(results)
  assert json.loads((tmp_path / 'eval_results.json').read_text()) == json.loads(
      (workdir / 'eval_results.json').read_text())


def write_random_checkpoint(config, workdir: pathlib.Path) -> None:
  """A workdir whose checkpoint holds random params, heads included, as the trainer saves it:
  unlike a few training steps, they give different videos different top classes."""
  setup = trainer_setup.build(config, pipeline.dataset_infos(config))
  abstract, optimizer = setup.abstract_state, setup.optimizer
  rng = np.random.default_rng(0)

  def value(path, leaf):
    names = [str(getattr(key, 'key', key)) for key in path]
    if names[-2].endswith('norm'):  # LayerNorms as initialised: random ones would swamp the input
      return np.full(leaf.shape, float(names[-1] == 'scale'), np.float32)
    return 0.3 * rng.standard_normal(leaf.shape).astype(np.float32)

  params = jax.tree_util.tree_map_with_path(value, abstract.params)
  manager = checkpoint.make_manager(workdir, config)
  checkpoint.save(manager, 3, state_lib.init_state(params, optimizer), {})
  manager.wait_until_finished()


def test_eval_mode_top1_is_numpy_view_averaging_of_predict_logits(data_dir, tmp_path):
  config = tiny_config(data_dir)
  config.tasks.synthetic_cls.input = ml_collections.ConfigDict(
      dict(config.tasks.synthetic_cls.input.to_dict(), num_test_clips=2))
  write_random_checkpoint(config, tmp_path)
  evaluated = evaluate.evaluate_checkpoint(config, str(tmp_path))['synthetic_cls']

  # Independently of the Evaluator: every eval clip through tools.predict, then numpy.
  eval_input = pipeline.eval_input(config.tasks.synthetic_cls, data_dir=config.data_dir)
  batches = list(eval_input.batches())
  columns = {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
  assert not columns['mask'].all()  # the last batch is padded: padding must not count
  assert set(columns['view_index'][columns['mask']]) == {0, 1}  # two views per video
  clips = columns['video']
  if clips.dtype == np.uint8:  # pixels as stored: predict takes clips normalised as in training
    inputs = config.tasks.synthetic_cls.input
    clips = (clips / 255.0 - np.asarray(inputs.mean)) / np.asarray(inputs.std)
  outputs = predict.predict(tmp_path, clips, config=config, task='synthetic_cls')
  top1, predicted = numpy_top1(outputs['logits'], columns['label'], columns['video_index'],
                               columns['view_index'], columns['mask'])
  assert len(predicted) == evaluated['num_videos'] == len(eval_input.video_ids)
  assert len(set(predicted.tolist())) > 1  # videos get different answers: a slip would show
  assert evaluated['top1'] == pytest.approx(top1, abs=1e-9)


def test_a_non_finite_loss_stops_the_run_before_a_checkpoint_keeps_it(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=4)
  config.schedule.phases = [dict(steps=4, mixture=dict(synthetic_cls=1.0))]
  # A learning rate of 1e30 (a valid config) throws the params to ~1e30 at step 1, so the loss of
  # step 2 overflows. Progress is reported every 3 steps but checkpoints come every 2: the step-2
  # checkpoint must not be kept.
  config.optimizer.base_learning_rate = 1e30
  config.log_every, config.checkpoint_every, config.eval_every = 3, 2, 4
  with pytest.raises(FloatingPointError,
                     match='task synthetic_cls: training loss is (nan|inf) at step 2'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not [path.name for path in (tmp_path / 'checkpoints').iterdir()]


def test_a_mixed_batch_run_advances_every_task_each_step_and_resumes_exactly(data_dir, tmp_path):
  """Two steps of one task each, then a mixed-batch phase of 4 steps over both tasks."""
  config = tiny_config(data_dir, steps=6)
  config.schedule.phases = [dict(steps=2, mixture=dict(synthetic_loc=1.0, synthetic_cls=1.0)),
                            dict(steps=4, mixture=dict(synthetic_loc=1.0, synthetic_cls=1.0),
                                 mixed_batches=True)]
  config.log_every, config.checkpoint_every, config.eval_every = 2, 4, 6
  uninterrupted, resumed = tmp_path / 'uninterrupted', tmp_path / 'resumed'
  train.train_and_evaluate(config, str(uninterrupted))
  train.train_and_evaluate(config, str(resumed))
  shutil.rmtree(resumed / 'checkpoints' / '6')
  train.train_and_evaluate(config, str(resumed))  # from step 4, inside the mixed phase

  # One batch of each task in the first phase, then one of both at each mixed step.
  for step, consumed in ((4, 3), (6, 5)):
    data = json.loads((uninterrupted / 'checkpoints' / str(step) / 'data' / 'metadata').read_text())
    assert data['batches_consumed'] == {'synthetic_loc': consumed, 'synthetic_cls': consumed}
  expected = param_paths.flatten(checkpoint.read_params(uninterrupted))
  actual = param_paths.flatten(checkpoint.read_params(resumed))
  for name, value in expected.items():
    np.testing.assert_array_equal(actual[name], value, err_msg=name)
  # Both losses are logged at the log steps inside the mixed phase.
  logged = scalars(uninterrupted)
  assert {4, 6} <= set(logged['train/synthetic_loc/loss']) and {4, 6} <= set(
      logged['train/synthetic_cls/loss'])
