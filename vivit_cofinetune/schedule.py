"""The training schedule: which task each step trains, and the learning rate of every part at it.

Tasks of a step. A phase of N steps with task weights w_t becomes a multiset holding N * w_t / sum(w) copies of each
task, rounded down and the remaining steps given to the largest remainders (so the counts add up to
N), shuffled with a seed derived from (seed, phase index). With 'steps' weights this is the paper's
recipe: each dataset gets exactly the number of steps it would get in the transfer-learning schedule,
in a random order. The task of step s
is therefore a pure function of (seed, phase, s), and a restarted run sees the same tasks.

Sampling strategies, as mixture weights: 'steps' (the task's transfer-learning steps; the default of
the paper configs), 'size' (its training-set size: with equal batch sizes every example is seen about
equally often), 'uniform' (every task of the phase gets the same number of steps), or a positive
number.

Mixed batches: a phase with `mixed_batches=True` trains every task of its mixture at every step,
each on a batch of its own batch_size, and minimises the weighted sum of their losses; the weights
(resolved as above) are scaled to sum to the number of tasks, so equal weights sum the losses.

Learning rates. Linear warm-up then cosine decay (`learning_rate_at`), per phase or over the run.
A task's `learning_rate_factor` scales the learning rate of everything its loss trains: its head, and
the shared backbone in proportion to the task's share of the step's loss weight. A step of one task
therefore trains backbone and head at rate * factor; a mixed step trains each head at rate * its
task's factor and the backbone at rate * (the loss-weighted mean of the factors).
"""
from collections.abc import Mapping, Sequence
import dataclasses
import math
from typing import Any

import numpy as np


def resolve_weights(mixture: Mapping[str, float | str], *, transfer_steps: Mapping[str, int],
                    train_sizes: Mapping[str, int]) -> dict[str, float]:
  """Turns mixture entries ('steps', 'size', 'uniform' or a number) into positive numeric weights."""
  weights = {}
  for task, weight in mixture.items():
    if weight == 'steps':
      weights[task] = float(transfer_steps[task])
    elif weight == 'size':
      weights[task] = float(train_sizes[task])
    elif weight == 'uniform':
      weights[task] = 1.0
    else:
      weights[task] = float(weight)
  return weights


def step_counts(weights: Mapping[str, float], num_steps: int) -> dict[str, int]:
  """Splits num_steps over tasks in proportion to weights, exactly (largest remainder)."""
  names = list(weights)
  raw = np.array([weights[name] for name in names], np.float64)
  exact = raw / raw.sum() * num_steps
  counts = np.floor(exact).astype(np.int64)
  # Ties in the remainder go to the earlier task, so the result depends only on the mixture order.
  order = np.argsort(-(exact - counts), kind='stable')
  counts[order[:num_steps - counts.sum()]] += 1
  return dict(zip(names, counts.tolist()))


@dataclasses.dataclass(frozen=True)
class TaskSchedule:
  """What every training step trains, over all phases: one task, or several (a mixed batch)."""
  task_names: tuple[str, ...]
  # groups[g]: the tasks a step of group g trains, and their loss weights (1.0 for a single task);
  # group_ids[s] is step s's group; phase_starts[p] is the first step of phase p.
  groups: tuple[tuple[tuple[str, float], ...], ...]
  group_ids: np.ndarray
  phase_starts: tuple[int, ...]

  @property
  def num_steps(self) -> int:
    return len(self.group_ids)

  def tasks_of_step(self, step: int) -> tuple[str, ...]:
    return tuple(name for name, _ in self.groups[self.group_ids[step]])

  def task_of_step(self, step: int) -> str:
    """The one task of `step`; ValueError if it trains a mixed batch."""
    tasks = self.tasks_of_step(step)
    if len(tasks) != 1:
      raise ValueError(f'step {step} trains a mixed batch of {tasks}')
    return tasks[0]

  def phase_of_step(self, step: int) -> int:
    return int(np.searchsorted(self.phase_starts, step, side='right')) - 1

  def batches_before(self, step: int) -> dict[str, int]:
    """How many batches of each task the steps before `step` consumed."""
    group_counts = np.bincount(self.group_ids[:step], minlength=len(self.groups))
    counts = dict.fromkeys(self.task_names, 0)
    for group, count in zip(self.groups, group_counts):
      for name, _ in group:
        counts[name] += int(count)
    return counts


def task_schedule(phases: Sequence[Mapping], *, seed: int,
                  transfer_steps: Mapping[str, int] | None = None,
                  train_sizes: Mapping[str, int] | None = None) -> TaskSchedule:
  """Builds the schedule for `config.schedule.phases` (a list of dict(steps, mixture[,
  mixed_batches]))."""
  task_names = tuple(dict.fromkeys(name for phase in phases for name in phase['mixture']))
  # Single-task groups first, in task order, so a schedule without mixed phases numbers its groups
  # as its tasks.
  groups = [((name, 1.0),) for name in task_names]
  group_ids, phase_starts, start = [], [], 0
  for phase_index, phase in enumerate(phases):
    weights = resolve_weights(phase['mixture'], transfer_steps=transfer_steps or {},
                              train_sizes=train_sizes or {})
    if phase.get('mixed_batches', False):
      total = sum(weights.values())
      groups.append(tuple((name, weight * len(weights) / total) for name, weight in weights.items()))
      ids = np.full(phase['steps'], len(groups) - 1)
    else:
      counts = step_counts(weights, phase['steps'])
      ids = np.repeat([task_names.index(name) for name in counts], list(counts.values()))
      np.random.default_rng([seed, phase_index]).shuffle(ids)
    group_ids.append(ids)
    phase_starts.append(start)
    start += phase['steps']
  return TaskSchedule(task_names, tuple(groups), np.concatenate(group_ids).astype(np.int32),
                      tuple(phase_starts))


def learning_rate_at(step: int, *, phases: Sequence[Mapping], schedule: TaskSchedule,
                     config: Any) -> float:
  """Linear warm-up then cosine decay, restarted at the start of every phase or spanning the run.

  `config` is config.optimizer. With `schedule_span='phase'` (the default) every phase has its own
  warm-up and cosine, and may override `base_learning_rate` and `warmup_steps`; the cosine decays to
  `end_learning_rate_factor * base` at the end of the phase. With 'run' one warm-up and cosine span
  all phases, so a later phase continues the decay where the one before left it (config_lib rejects
  per-phase overrides there).
  """
  base, warmup = config.get('base_learning_rate'), config.get('warmup_steps', 0)
  if config.get('schedule_span', 'phase') == 'run':
    step_in_span, span_steps = step, schedule.num_steps
  else:
    phase_index = schedule.phase_of_step(step)
    phase = phases[phase_index]
    base = phase.get('base_learning_rate', base)
    warmup = phase.get('warmup_steps', warmup)
    step_in_span, span_steps = step - schedule.phase_starts[phase_index], phase['steps']
  end_factor = config.get('end_learning_rate_factor', 0.0)
  if step_in_span < warmup:
    return base * (step_in_span + 1) / warmup
  progress = (step_in_span - warmup) / max(1, span_steps - warmup)
  cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
  return base * (end_factor + (1.0 - end_factor) * cosine)


def part_learning_rates(rate: float, group: Sequence[tuple[str, float]],
                        factors: Mapping[str, float]) -> dict[str, Any]:
  """{'backbone': rate, 'heads': {task: rate}} of a step training `group` ((task, loss weight), ...)
  at schedule rate `rate`, with each task's learning_rate_factor (see the module docstring)."""
  total_weight = sum(weight for _, weight in group)
  backbone_factor = sum(weight * factors[name] for name, weight in group) / total_weight
  return {'backbone': np.float32(rate * backbone_factor),
          'heads': {name: np.float32(rate * factors[name]) for name, _ in group}}


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A run's schedule: the tasks of each step and the learning rate of each part at it."""
  tasks: TaskSchedule
  phases: Sequence[Mapping]
  optimizer: Any  # config.optimizer
  learning_rate_factors: Mapping[str, float]

  @property
  def num_steps(self) -> int:
    return self.tasks.num_steps

  def learning_rate(self, step: int) -> float:
    """The schedule's rate at `step`, before any task's factor (what TensorBoard plots)."""
    return learning_rate_at(step, phases=self.phases, schedule=self.tasks, config=self.optimizer)

  def learning_rates(self, step: int) -> dict[str, Any]:
    """The rates the step's update uses: {'backbone': float32, 'heads': {task: float32}}."""
    group = self.tasks.groups[self.tasks.group_ids[step]]
    return part_learning_rates(self.learning_rate(step), group, self.learning_rate_factors)


def make_schedule(config: Any, train_sizes: Mapping[str, int] | None = None) -> Schedule:
  """The schedule of `config` (train_sizes: training examples per task, for 'size' weights)."""
  tasks = task_schedule(
      config.schedule.phases, seed=config.seed,
      transfer_steps={name: task.get('transfer_steps', 0) for name, task in config.tasks.items()},
      train_sizes=train_sizes)
  factors = {name: float(task.get('learning_rate_factor', 1.0))
             for name, task in config.tasks.items()}
  return Schedule(tasks=tasks, phases=config.schedule.phases, optimizer=config.optimizer,
                  learning_rate_factors=factors)
