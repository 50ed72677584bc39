"""Checks a whole config before anything heavy starts: each mistake is one ConfigError naming the
field and what was expected, which main prints as one `Config error:` line.

What a task must agree with in its dataset (the class count, AVA's class ids) is checked where the
task meets the dataset's metadata, in tasks/, with the same error.
"""
from collections.abc import Mapping
import math
import numbers

import ml_collections

from vivit_cofinetune import checkpoint
from vivit_cofinetune import optim
from vivit_cofinetune import sharding
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.config_lib import ConfigError

# Mixture weights may be numbers or one of these rules (see schedule.py).
WEIGHT_RULES = ('steps', 'size', 'uniform')
# What one learning-rate warm-up and cosine spans (see schedule.learning_rate_at).
SCHEDULE_SPANS = ('phase', 'run')
# Step counts of the loop's cadences: every one of them divides the step number.
CADENCES = ('log_every', 'eval_every', 'checkpoint_every')


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1,
                    known_datasets: Mapping[str, bool] | None = None) -> None:
  """Raises ConfigError naming the first field that cannot work.

  Args:
    config: the experiment config.
    num_devices: the global device count, which config.mesh must cover.
    num_processes: the host count; every global batch splits evenly over the hosts (each reads its
      part) and over data x fsdp of the mesh (the 'model' devices of a batch part share it).
    known_datasets: dataset name -> whether it can be loaded; None skips the checks that read
      storage (the datasets, and that config.init_from.path exists).
  """
  if not config.get('tasks'):
    raise ConfigError('config.tasks: expected at least one task')
  try:
    batch_shards = sharding.batch_shards(config.get('mesh', {}), num_devices)
  except ValueError as error:
    raise ConfigError(str(error)) from error
  batch_multiple = math.lcm(batch_shards, num_processes)
  batch_rule = f'data x fsdp of config.mesh ({batch_shards})' + (
      f' and of the host count ({num_processes})' if batch_multiple != batch_shards else '')
  for name, task in config.tasks.items():
    field = f'config.tasks.{name}'
    if task.get('kind') not in tasks_lib.TASK_KINDS:
      raise ConfigError(f'{field}.kind={task.get("kind")!r}: expected one of '
                        f'{sorted(tasks_lib.TASK_KINDS)}')
    dataset = task.get('dataset', {}).get('name')
    if not dataset:
      raise ConfigError(f'{field}.dataset.name: missing; expected a TFDS dataset name')
    if known_datasets is not None and not known_datasets.get(dataset, False):
      raise ConfigError(
          f'{field}.dataset.name={dataset!r}: dataset not found; prepare it as described in '
          f'docs/data.md, or point config.data_dir at a directory that holds it')
    for batch_field in ('batch_size', 'eval_batch_size'):
      size = task.get(batch_field)
      if not isinstance(size, numbers.Integral) or size <= 0 or size % batch_multiple:
        raise ConfigError(f'{field}.{batch_field}={size!r}: expected a positive multiple of '
                          f'{batch_rule}')
    if not isinstance(task.get('num_classes'), numbers.Integral) or task.num_classes <= 0:
      raise ConfigError(f'{field}.num_classes={task.get("num_classes")!r}: expected a positive int')
    _check_clip_fits_patches(config, name, task)
    factor = task.get('learning_rate_factor', 1.0)
    if not isinstance(factor, numbers.Real) or factor < 0:
      raise ConfigError(f'{field}.learning_rate_factor={factor!r}: expected a number >= 0')
    try:  # the fields only this task's kind reads
      tasks_lib.TASK_KINDS[task.kind].check_config(field, task)
    except ValueError as error:
      raise ConfigError(str(error)) from error

  phases = config.get('schedule', {}).get('phases')
  if not phases:
    raise ConfigError('config.schedule.phases: expected a list of dict(steps=..., mixture=...)')
  span = config.get('optimizer', {}).get('schedule_span', 'phase')
  if span not in SCHEDULE_SPANS:
    raise ConfigError(f'config.optimizer.schedule_span={span!r}: expected one of '
                      f'{list(SCHEDULE_SPANS)}')
  for index, phase in enumerate(phases):
    field = f'config.schedule.phases[{index}]'
    for override in ('base_learning_rate', 'warmup_steps'):
      if span == 'run' and override in phase:
        raise ConfigError(f"{field}.{override}: a phase has no learning-rate schedule of its own "
                          "with config.optimizer.schedule_span='run'; set it in config.optimizer")
    steps = phase.get('steps')
    if not isinstance(steps, numbers.Integral) or steps <= 0:
      raise ConfigError(f'{field}.steps={steps!r}: expected a positive int')
    mixture = phase.get('mixture')
    if not mixture:
      raise ConfigError(f'{field}.mixture: expected a non-empty dict task -> weight')
    mixed_batches = phase.get('mixed_batches', False)
    if not isinstance(mixed_batches, bool):
      raise ConfigError(f'{field}.mixed_batches={mixed_batches!r}: expected True or False')
    if mixed_batches and len(mixture) < 2:
      raise ConfigError(f'{field}.mixed_batches=True: a mixed batch needs at least two tasks in '
                        f'{field}.mixture, which has {list(mixture)}')
    for task_name, weight in mixture.items():
      if task_name not in config.tasks:
        raise ConfigError(f'{field}.mixture names unknown task {task_name!r}; expected one of '
                          f'{sorted(config.tasks)}')
      if isinstance(weight, str):
        if weight not in WEIGHT_RULES:
          raise ConfigError(f'{field}.mixture.{task_name}={weight!r}: expected a positive number '
                            f'or one of {list(WEIGHT_RULES)}')
        if weight == 'steps' and not config.tasks[task_name].get('transfer_steps'):
          raise ConfigError(f"{field}.mixture.{task_name}='steps' needs "
                            f'config.tasks.{task_name}.transfer_steps (its steps in the transfer '
                            'learning schedule)')
      elif not isinstance(weight, numbers.Real) or isinstance(weight, bool) or weight <= 0:
        raise ConfigError(f'{field}.mixture.{task_name}={weight!r}: expected a positive weight')

  _check_optimizer(config, phases)
  _check_trainer(config, check_storage=known_datasets is not None)


def _check_clip_fits_patches(config: ml_collections.ConfigDict, name: str,
                             task: ml_collections.ConfigDict) -> None:
  """Clips must split into whole patches: the patch embedding would silently drop the rest."""
  patch = config.get('model', {}).get('patch_size')
  inputs = task.get('input', {})
  clip = (inputs.get('num_frames'), inputs.get('crop_size'), inputs.get('crop_size'))
  if patch is None or not all(isinstance(size, numbers.Integral) for size in clip):
    return
  if any(size % step for size, step in zip(clip, patch)):
    raise ConfigError(
        f'config.tasks.{name}.input: num_frames={clip[0]}, crop_size={clip[1]} do not split into '
        f'config.model.patch_size={tuple(patch)} patches (T, H, W); the model would drop the '
        f'remainder. Use num_frames a multiple of {patch[0]} and crop_size a multiple of '
        f'{patch[1]}')




def _check_optimizer(config: ml_collections.ConfigDict, phases) -> None:
  """The optimizer's name and learning-rate schedule (a negative rate would climb the loss)."""
  optimizer = config.get('optimizer', {})
  name = optimizer.get('name', 'sgd')
  if name not in optim.OPTIMIZERS:
    raise ConfigError(f'config.optimizer.name={name!r}: expected one of {list(optim.OPTIMIZERS)}')
  fields = [('config.optimizer', optimizer)] + [
      (f'config.schedule.phases[{index}]', phase) for index, phase in enumerate(phases)]
  for where, holder in fields:
    if where == 'config.optimizer' or 'base_learning_rate' in holder:
      rate = holder.get('base_learning_rate')
      if not _is_number(rate) or rate < 0:
        raise ConfigError(f'{where}.base_learning_rate={rate!r}: expected a number >= 0')
    warmup = holder.get('warmup_steps', 0)
    if not _is_int(warmup) or warmup < 0:
      raise ConfigError(f'{where}.warmup_steps={warmup!r}: expected an int >= 0')


def _check_trainer(config: ml_collections.ConfigDict, *, check_storage: bool) -> None:
  """The loop's cadences, the checkpoints kept, and where the backbone starts from."""
  for cadence in CADENCES:
    every = config.get(cadence)
    if not _is_int(every) or every <= 0:
      raise ConfigError(f'config.{cadence}={every!r}: expected a positive int (steps)')
  minutes = config.get('checkpoint_every_minutes', 0.0)
  if minutes is not None and (not _is_number(minutes) or minutes < 0):
    raise ConfigError(f'config.checkpoint_every_minutes={minutes!r}: expected a number >= 0 '
                      '(0: by steps only)')
  keep = config.get('keep_checkpoints', 3)
  if keep is not None and (not _is_int(keep) or keep <= 0):
    raise ConfigError(f'config.keep_checkpoints={keep!r}: expected a positive int (the newest '
                      'checkpoints kept; 0 would delete the final one, the trained model) or None '
                      '(keep all)')
  path = config.get('init_from', {}).get('path')
  if path and check_storage and not checkpoint.resolve_path(path).exists():
    raise ConfigError(f'config.init_from.path={path!r}: not found; expected a training workdir '
                      '(with checkpoints/) or a converted checkpoint (params/, from '
                      "tools.convert_checkpoint), or '' to start from scratch")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

