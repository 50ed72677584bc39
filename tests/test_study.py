"""The co-finetuning study: equal data across schedules, the long-tailed split, the driver end to end."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vivit_cofinetune import config_checks
from vivit_cofinetune.data.builders import synthetic
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune.experiments import study

DATASETS = {'synthetic_actions_loc/study': True, 'synthetic_actions_cls/study_pretrain': True,
            'synthetic_actions_cls/study_upstream_a': True,
            'synthetic_actions_cls/study_upstream_b': True}


def configs(steps: int) -> dict:
  return {schedule: study.study_config(schedule, seed=0, steps=steps, data_dir='unused')
          for schedule in study.SCHEDULES}


@pytest.mark.parametrize('steps', [400, 1600, 8])
def test_every_schedule_sees_the_same_examples_and_all_but_downstream_the_same_per_dataset(steps):
  by_schedule = configs(steps)
  assert study.check_same_examples(by_schedule) == steps * study_batch_size()
  for name, config in by_schedule.items():
    config_checks.validate_config(config, num_devices=1, known_datasets=DATASETS)
    schedule = schedule_lib.task_schedule(config.schedule.phases, seed=0)
    batches = schedule.batches_before(schedule.num_steps)
    if name == 'downstream':
      assert batches == {'loc': steps}
    else:
      upstream = sum(count for task, count in batches.items() if task != 'loc')
      assert (batches['loc'], upstream) == (steps // 2, steps // 2), name


def study_batch_size() -> int:
  return study.study_config('downstream', data_dir='unused').tasks.loc.batch_size


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


@pytest.mark.slow
def test_study_runs_end_to_end_and_writes_its_table_chart_and_json(data_dir, tmp_path):
  schedules = ['transfer_continued', 'cofinetune_finetune']
  result = study.run_study(tmp_path, seeds=1, schedules=schedules, data_dir=str(data_dir),
                           steps=8, pretrain_steps=4, tiny=True)
  written = json.loads((tmp_path / 'results.json').read_text())
  assert list(written['summary']) == schedules == list(result['summary'])
  assert written['training_examples_per_schedule'] == 8 * 4
  for schedule in schedules:
    metrics = written['summary'][schedule]
    assert set(metrics) == {title for _, _, title in study.METRICS}
    assert 0.0 <= metrics['loc mAP']['mean'] <= 1.0
  table = (tmp_path / 'results.md').read_text()
  assert table.startswith('| schedule | loc mAP | head AP | mid AP | tail AP |')
  assert table.count('\n| ') == 1 + len(schedules)  # separator row and one row per schedule
  assert Image.open(tmp_path / 'study.png').size[0] > 400
  # The runs started from the pretraining run's backbone.
  config = json.loads((tmp_path / 'runs' / schedules[0] / 'seed_0' / 'config.json').read_text())
  assert config['init_from']['path'] == str(tmp_path / 'pretrain')
  # A second call reuses the finished runs.
  again = study.run_study(tmp_path, seeds=1, schedules=schedules, data_dir=str(data_dir),
                          steps=8, pretrain_steps=4, tiny=True)
  assert again['runs'] == result['runs']
