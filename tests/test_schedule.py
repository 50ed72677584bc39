"""The co-finetuning schedule: determinism and task frequencies."""
import ml_collections
import numpy as np
import pytest

from vivit_cofinetune import schedule as schedule_lib


def test_step_counts_split_exactly_in_proportion():
  assert schedule_lib.step_counts({'a': 1.0, 'b': 3.0}, 100) == {'a': 25, 'b': 75}
  # 10 * (1/3, 1/3, 1/3) = 3.33 each: the one remaining step goes to the earliest task.
  assert schedule_lib.step_counts({'a': 1, 'b': 1, 'c': 1}, 10) == {'a': 4, 'b': 3, 'c': 3}
  # Remainders .6 and .4 (7 * 0.8 = 5.6, 7 * 0.2 = 1.4): the larger remainder wins.
  assert schedule_lib.step_counts({'a': 4, 'b': 1}, 7) == {'a': 6, 'b': 1}


def test_schedule_is_a_pure_function_of_seed_phase_and_step():
  phases = [dict(steps=50, mixture={'cls': 2.0, 'loc': 1.0}),
            dict(steps=30, mixture={'loc': 1.0})]
  first = schedule_lib.task_schedule(phases, seed=3)
  second = schedule_lib.task_schedule(phases, seed=3)
  other_seed = schedule_lib.task_schedule(phases, seed=4)
  np.testing.assert_array_equal(first.group_ids, second.group_ids)
  assert not np.array_equal(first.group_ids, other_seed.group_ids)
  assert [first.task_of_step(s) for s in range(50, 80)] == ['loc'] * 30
  assert first.phase_starts == (0, 50)
  assert first.phase_of_step(49) == 0 and first.phase_of_step(50) == 1


def test_empirical_frequencies_match_weights():
  weights = {'kinetics': 5.0, 'ava': 2.0, 'ssv2': 3.0}
  schedule = schedule_lib.task_schedule([dict(steps=10_000, mixture=weights)], seed=0)
  tasks = np.array([schedule.task_of_step(s) for s in range(10_000)])
  for name, weight in weights.items():
    assert (tasks == name).mean() == pytest.approx(weight / 10.0, abs=1e-12)
  # Shuffled, not blocked: every window of 1000 steps holds every task in about its share.
  for start in range(0, 10_000, 1000):
    window = tasks[start:start + 1000]
    for name, weight in weights.items():
      assert abs((window == name).mean() - weight / 10.0) < 0.06


def test_steps_rule_uses_transfer_steps_and_size_rule_uses_dataset_sizes():
  phases = [dict(steps=90, mixture={'ava': 'steps', 'kinetics': 'size'})]
  schedule = schedule_lib.task_schedule(phases, seed=0, transfer_steps={'ava': 100},
                                   train_sizes={'kinetics': 200})
  assert schedule.batches_before(90) == {'ava': 30, 'kinetics': 60}


def test_uniform_rule_gives_every_task_the_same_steps_whatever_its_size():
  phases = [dict(steps=90, mixture={'ava': 'uniform', 'kinetics': 'uniform', 'ssv2': 'uniform'})]
  schedule = schedule_lib.task_schedule(phases, seed=0, transfer_steps={'ava': 100},
                                   train_sizes={'kinetics': 200, 'ssv2': 7})
  assert schedule.batches_before(90) == {'ava': 30, 'kinetics': 30, 'ssv2': 30}


def test_batches_before_counts_each_tasks_steps():
  schedule = schedule_lib.task_schedule([dict(steps=40, mixture={'a': 1, 'b': 1})], seed=1)
  by_hand = {'a': 0, 'b': 0}
  for step in range(40):
    assert schedule.batches_before(step) == by_hand
    by_hand[schedule.task_of_step(step)] += 1


def test_a_mixed_batch_phase_trains_every_task_at_every_step_with_weights_summing_to_the_tasks():
  phases = [dict(steps=6, mixture={'loc': 1.0}),
            dict(steps=4, mixture={'loc': 3.0, 'cls': 1.0}, mixed_batches=True),
            dict(steps=5, mixture={'cls': 1.0, 'loc': 1.0})]
  schedule = schedule_lib.task_schedule(phases, seed=0)
  assert [schedule.tasks_of_step(s) for s in range(6, 10)] == [('loc', 'cls')] * 4
  # Loss weights 3 : 1, scaled to sum to 2 (the number of tasks): 1.5 and 0.5.
  assert schedule.groups[schedule.group_ids[6]] == (('loc', 1.5), ('cls', 0.5))
  assert {schedule.tasks_of_step(s) for s in range(10, 15)} == {('loc',), ('cls',)}
  with pytest.raises(ValueError, match='step 7 trains a mixed batch'):
    schedule.task_of_step(7)
  # Counted by hand: 6 loc; then 4 of each; the last phase's 5 split 3 / 2 (earlier task first).
  assert schedule.batches_before(6) == {'loc': 6, 'cls': 0}
  assert schedule.batches_before(10) == {'loc': 10, 'cls': 4}
  assert schedule.batches_before(15) == {'loc': 12, 'cls': 7}


def test_learning_rates_scale_every_part_a_task_trains_by_its_factor():
  config = ml_collections.ConfigDict(dict(
      seed=0,
      tasks=dict(a=dict(learning_rate_factor=0.5), b=dict(), c=dict(learning_rate_factor=2.0)),
      optimizer=dict(base_learning_rate=0.1, warmup_steps=0),
      schedule=dict(phases=[dict(steps=4, mixture=dict(a=1.0, b=1.0)),
                            dict(steps=2, mixture=dict(a=3.0, c=1.0), mixed_batches=True)])))
  run = schedule_lib.make_schedule(config)
  for step in range(4):  # one task per step: its factor scales backbone and head alike
    name, = run.tasks.tasks_of_step(step)
    rate = run.learning_rate(step)
    factor = {'a': 0.5, 'b': 1.0}[name]
    rates = run.learning_rates(step)
    assert rates['backbone'] == pytest.approx(rate * factor)
    assert rates['heads'] == {name: pytest.approx(rate * factor)}
  # A mixed step: each head at its own factor, the backbone at the loss-weighted mean factor.
  # Weights 3:1 scaled to sum to 2 tasks: a 1.5, c 0.5 -> (1.5 * 0.5 + 0.5 * 2.0) / 2 = 0.875.
  rate = run.learning_rate(4)
  rates = run.learning_rates(4)
  assert rates['backbone'] == pytest.approx(rate * 0.875)
  assert rates['heads'] == {'a': pytest.approx(rate * 0.5), 'c': pytest.approx(rate * 2.0)}
