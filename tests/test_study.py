"""The co-finetuning study: equal clips across schedules, the control's stopped gradient, the
long-tailed split, the charts, the driver end to end."""
import json

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vivit_cofinetune import config_checks
from vivit_cofinetune import optim
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import steps as steps_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.data.builders import synthetic
from vivit_cofinetune.experiments import charts
from vivit_cofinetune.experiments import study
import test_training_glue as glue

DATASETS = {'synthetic_actions_loc/study': True, 'synthetic_actions_cls/study_pretrain': True,
            'synthetic_actions_cls/study_upstream_a': True,
            'synthetic_actions_cls/study_upstream_b': True}


def configs(steps: int) -> dict:
  return {schedule: study.study_config(schedule, seed=0, steps=steps, data_dir='unused')
          for schedule in study.SCHEDULES}


@pytest.mark.parametrize('steps', [400, 4000, 8])
def test_every_schedule_trains_on_the_same_clips_and_the_steps_schedules_on_the_same_per_set(steps):
  by_schedule = configs(steps)
  batch = study_batch_size()
  assert study.check_same_examples(by_schedule) == steps * batch
  for name, config in by_schedule.items():
    config_checks.validate_config(config, num_devices=1, known_datasets=DATASETS)
    schedule = schedule_lib.make_schedule(config, train_sizes=study.train_sizes(config))
    clips = {task: count * config.tasks[task].batch_size
             for task, count in schedule.tasks.batches_before(schedule.num_steps).items()}
    upstream = sum(count for task, count in clips.items() if task != 'loc')
    if name == 'downstream':
      assert clips == {'loc': steps * batch}
    elif name == 'cofinetune_2_size':  # 80 localisation clips against 1,600 + 1,600 upstream
      assert clips['loc'] == round(steps * 80 / 3280) * batch, clips
    elif name == 'cofinetune_2_uniform':
      assert max(clips.values()) - min(clips.values()) <= batch, clips
    else:
      assert (clips['loc'], upstream) == (steps // 2 * batch, steps // 2 * batch), name
    if name.startswith('cofinetune_2'):
      assert set(clips) == {'loc', 'upstream_a', 'upstream_b'}, name


def study_batch_size() -> int:
  return study.study_config('downstream', data_dir='unused').tasks.loc.batch_size


def test_the_mixed_schedule_trains_every_set_at_every_step_on_a_split_batch():
  config = configs(400)['cofinetune_2_mixed']
  assert config.schedule.phases[0]['mixed_batches']
  assert {name: task.batch_size for name, task in config.tasks.items()} == {
      'loc': 8, 'upstream_a': 4, 'upstream_b': 4}


def test_the_control_is_cofinetune_2_with_the_upstream_gradients_stopped():
  by_schedule = configs(400)
  control, plain = by_schedule['cofinetune_2_control'], by_schedule['cofinetune_2']
  assert [control.tasks[name].trains_backbone for name in ('upstream_a', 'upstream_b')] == [
      False, False]
  assert 'trains_backbone' not in control.tasks.loc
  for name in ('upstream_a', 'upstream_b'):
    del control.tasks[name].trains_backbone
  assert control.to_dict() == plain.to_dict()


def test_alone_trains_one_task_for_the_steps_its_schedule_gives_it():
  for task, steps in (('loc', 200), ('upstream_a', 100), ('upstream_b', 100)):
    config = study.study_config('cofinetune_2', steps=400, alone=task, data_dir='unused')
    assert list(config.tasks) == [task]
    assert config.schedule.phases == [dict(steps=steps, mixture={task: 1.0})]
  config = study.study_config('cofinetune_finetune', steps=400, alone='loc', data_dir='unused')
  assert [phase['steps'] for phase in config.schedule.phases] == [150, 50]
  with pytest.raises(ValueError, match="alone='upstream_b': the schedule has no such task"):
    study.study_config('transfer', steps=400, alone='upstream_b', data_dir='unused')


def test_unequal_schedules_are_refused():
  by_schedule = configs(400)
  by_schedule['transfer'].schedule.phases[1]['steps'] += 8
  with pytest.raises(AssertionError, match='different numbers of clips'):
    study.check_same_examples(by_schedule)


def test_transfer_continued_differs_from_transfer_in_the_learning_rate_schedule_only():
  transfer, continued = (configs(400)[name] for name in ('transfer', 'transfer_continued'))
  assert (transfer.optimizer.schedule_span, continued.optimizer.schedule_span) == ('phase', 'run')
  continued.optimizer.schedule_span = 'phase'
  assert continued.to_dict() == transfer.to_dict()


@pytest.fixture(scope='module')
def study_loc_counts(tmp_path_factory) -> np.ndarray:
  """Actors per class in the train split of the study's localisation set (rendered here)."""
  builder = tfds.builder('synthetic_actions_loc/study', data_dir=str(tmp_path_factory.mktemp('loc')))
  builder.download_and_prepare()
  labels = builder.as_dataset(split='train', decoders=tfds.decode.PartialDecoding(
      {'gt_labels': True}))
  return sum(record['gt_labels'].sum(0) for record in labels.as_numpy_iterator())


def test_study_localisation_set_is_small_and_long_tailed(study_loc_counts):
  counts = study_loc_counts
  actors = counts[[synthetic.LOC_CLASS_NAMES.index(m) for m in synthetic.MOTIONS]].sum()
  assert 130 <= actors <= 190  # 80 clips of 1-3 actors, each with exactly one motion
  # Each class close to its intended share, r**-1.5 by frequency rank (4 binomial sigmas).
  expected = actors * np.array([synthetic._class_frequency(name)  # pylint: disable=protected-access
                                for name in synthetic.LOC_CLASS_NAMES])
  sigma = np.sqrt(expected * (1 - expected / actors))
  assert np.all(np.abs(counts - expected) <= 4 * sigma + 1), (counts, expected)
  ranked = np.sort(counts)[::-1]
  assert ranked[0] >= 70 and ranked[-4:].max() <= 8  # a head of >70 actors, a tail of a few each


def test_upstream_sets_are_balanced_and_hold_the_rare_concepts(study_loc_counts):
  tail = {synthetic.LOC_CLASS_NAMES[i] for i in np.argsort(study_loc_counts, kind='stable')[:4]}
  for config in ('study_upstream_a', 'study_upstream_b'):
    builder = tfds.builder(f'synthetic_actions_cls/{config}')
    classes = builder.info.features['label'].names
    assert tail <= set(classes), (config, tail, classes)
    # Balanced: a uniform draw per clip, and many more clips than the localisation set.
    assert builder.builder_config.num_train >= 10 * 80
  pretrain = tfds.builder('synthetic_actions_cls/study_pretrain').info.features['label'].names
  assert not set(pretrain) & set(synthetic.ACTION_NAMES)  # appearance only, like images


def test_pretraining_clips_are_static_and_one_colour(tmp_path):
  builder = tfds.builder('synthetic_actions_cls/study_pretrain', data_dir=str(tmp_path))
  rng = np.random.default_rng(0)
  record = builder._render('train', 0, rng)  # pylint: disable=protected-access
  video = record['video'].astype(np.float32)
  # Only the background's sensor noise changes between frames: the actor stands still.
  assert np.abs(np.diff(video, axis=0)).mean() < 8


def test_the_control_moves_an_upstream_head_but_never_the_backbone():
  """An upstream task of the control: its step moves its head by the hand-computed SGD step and
  the backbone not at all; in a mixed step with localisation the backbone moves by localisation's
  gradient alone."""
  backbone, tasks, optimizer, config, params = glue.tiny_setup()
  control = study.study_config('cofinetune_2_control', data_dir='unused').tasks.upstream_a
  config.tasks.cls.trains_backbone = control.trains_backbone
  tasks['cls'] = tasks_lib.make_task('cls', config.tasks.cls)
  data = glue.batches()
  state = state_lib.init_state(params, optimizer)
  trainable = optim.trainable_mask(state.params, ())
  learning_rate = 0.1
  parts = {name: {'backbone': params['backbone'], 'head': params['heads'][name]}
           for name in tasks}
  grads = {name: jax.tree.map(lambda g: np.asarray(g, np.float64), glue.reference_loss_and_grad(
      backbone, tasks[name])(parts[name], data[name])[1]) for name in tasks}
  # The gradient the control stops is not zero: the backbone would move without the stop.
  assert max(np.abs(g).max() for g in jax.tree.leaves(grads['cls']['backbone'])) > 1e-4

  for group in ((('cls', 1.0),), (('loc', 1.0), ('cls', 1.0))):
    step = jax.jit(steps_lib.make_train_step(
        backbone, [(tasks[name], weight) for name, weight in group], optimizer, trainable,
        seed=0, grad_clip_norm=None))
    new_state, _ = step(state, {name: data[name] for name, _ in group},
                        schedule_lib.part_learning_rates(learning_rate, group,
                                                         {'loc': 1.0, 'cls': 1.0}))
    # First SGD momentum step from a zero trace: the update is -lr * gradient.
    glue.assert_update_close(new_state.params['heads']['cls'], state.params['heads']['cls'],
                             jax.tree.map(lambda g: -learning_rate * g, grads['cls']['head']),
                             f'{group}: cls head')
    if len(group) == 1:
      glue.assert_bit_identical(new_state.params['backbone'], state.params['backbone'],
                                'backbone after a control step')
      glue.assert_bit_identical(new_state.opt_state['backbone'], state.opt_state['backbone'],
                                'backbone optimizer state after a control step')
    else:
      glue.assert_update_close(new_state.params['backbone'], state.params['backbone'],
                               jax.tree.map(lambda g: -learning_rate * g, grads['loc']['backbone']),
                               'backbone after a mixed step with the control task')


@pytest.mark.slow
def test_study_runs_end_to_end_and_writes_its_table_charts_curves_and_json(data_dir, tmp_path):
  schedules = ['cofinetune_2_mixed', 'cofinetune_2_control']
  result = study.run_study(tmp_path, seeds=1, schedules=schedules, data_dir=str(data_dir),
                           steps=8, pretrain_steps=4, tiny=True, alone='transfer')
  written = json.loads((tmp_path / 'results.json').read_text())
  assert list(written['summary']) == schedules + ['loc alone', 'upstream_a alone']
  assert list(result['summary']) == list(written['summary'])
  assert written['training_examples_per_schedule'] == 8 * 4
  for schedule in schedules:
    metrics = written['summary'][schedule]
    assert 0.0 <= metrics['loc mAP']['mean'] <= 1.0
    assert metrics['loc loss']['mean'] > 0 and metrics['B loss']['mean'] > 0
    # Evaluated over training (a tiny run: at steps 4 and 8), every task.
    curves = written['curves'][schedule]
    assert [step for step, _ in curves['eval/loc/mAP']] == [4, 8]
    assert [step for step, _ in curves['eval/upstream_b/top1']] == [4, 8]
    run = written['runs'][schedule]['0']
    assert run['curves']['eval/loc/mAP'][-1][1] == pytest.approx(run['results']['loc']['mAP'])
  alone = written['summary']['upstream_a alone']
  assert alone['A loss']['mean'] > 0 and alone['loc loss']['mean'] is None
  table = (tmp_path / 'results.md').read_text()
  assert table.startswith('| schedule | loc mAP | head AP | mid AP | tail AP |')
  assert table.count('\n| ') == 1 + len(schedules) + 2  # separator, schedules, alone runs
  for chart in ('study.png', 'study_curves.png'):
    assert Image.open(tmp_path / chart).size[0] > 400, chart
  # The runs started from the pretraining run's backbone; the control's upstream tasks stop there.
  config = json.loads((tmp_path / 'runs' / schedules[1] / 'seed_0' / 'config.json').read_text())
  assert config['init_from']['path'] == str(tmp_path / 'pretrain')
  assert config['tasks']['upstream_a']['trains_backbone'] is False
  # A second call reuses the finished runs.
  again = study.run_study(tmp_path, seeds=1, schedules=schedules, data_dir=str(data_dir),
                          steps=8, pretrain_steps=4, tiny=True, alone='transfer')
  assert again['runs'] == result['runs']


def test_charts_draw_bars_as_tall_as_the_means_and_a_line_per_schedule():
  summary = {'transfer': {'loc mAP': dict(mean=0.5, std=0.1), 'tail AP': dict(mean=1.0, std=0.0)},
             'cofinetune_2': {'loc mAP': dict(mean=0.25, std=0.0),
                              'tail AP': dict(mean=None, std=0.0)}}
  figure = charts.bar_chart(summary, ['loc mAP', 'tail AP'])
  bars = [(patch.get_x() + patch.get_width() / 2, patch.get_height())
          for patch in figure.axes[0].patches]
  # Groups at x = 0, 1; two schedules, bars 0.4 wide: transfer left of centre, cofinetune_2 right.
  assert bars == [(pytest.approx(-0.2), 0.5), (pytest.approx(0.8), 1.0), (pytest.approx(0.2), 0.25)]
  curves = {'transfer': {'eval/loc/mAP': [[1, 0.1], [2, 0.3]]}, 'cofinetune_2': {}}
  figure = charts.curves_chart(curves, [('eval/loc/mAP', 'loc mAP')])
  (line,) = figure.axes[0].get_lines()
  assert (list(line.get_xdata()), list(line.get_ydata())) == ([1, 2], [0.1, 0.3])
