"""Helpers for config files: `:key=value` arguments and validation before anything heavy starts."""
from collections.abc import Mapping
import importlib.util
import math
import numbers
import pathlib

import ml_collections

from vivit_cofinetune import sharding
from vivit_cofinetune import tasks as tasks_lib

# Mixture weights may be numbers or one of these rules (see schedule.py).
WEIGHT_RULES = ('steps', 'size', 'uniform')
# What one learning-rate warm-up and cosine spans (see schedule.learning_rate_at).
SCHEDULE_SPANS = ('phase', 'run')


class ConfigError(ValueError):
  """A config field is missing or has a value the framework cannot use."""


def config_args(arg: str, **defaults) -> ml_collections.ConfigDict:
  """Parses the `a=1,b=True` string after `config.py:` with types taken from the defaults."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (part.strip() for part in (arg or '').split(','))):
    key, sep, value = item.partition('=')
    if not sep:
      raise ConfigError(f'config argument {item!r}: expected key=value (known keys: {sorted(defaults)})')
    if key not in defaults:
      raise ConfigError(f'config argument {key!r} is unknown; expected one of {sorted(defaults)}')
    parsed[key] = _parse_like(value, defaults[key], key)
  return parsed


def _parse_like(value: str, default, key: str):
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ConfigError(f'config argument {key}={value!r}: expected True or False')
    return value.lower() in ('true', '1')
  if isinstance(default, int):
    return int(value)
  if isinstance(default, float):
    return float(value)
  return value


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1,
                    known_datasets: Mapping[str, bool] | None = None) -> None:
  """Raises ConfigError naming the first field that cannot work.

  Args:
    config: the experiment config.
    num_devices: the global device count, which config.mesh must cover.
    num_processes: the host count; every global batch splits evenly over the hosts (each reads its
      part) and over data x fsdp of the mesh (the 'model' devices of a batch part share it).
    known_datasets: dataset name -> whether it can be loaded; None skips the dataset check.
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


def input_config(*, num_frames: int, crop_size: int, frame_stride: int = 2,
                 min_crop_area: float = 0.3, flip: bool = True, num_test_clips: int = 1,
                 num_test_crops: int = 1, **fields) -> ml_collections.ConfigDict:
  """Clip sampling and augmentation of a task (see data/video_ops.py and data/pipeline.py).

  `fields` sets the other fields of pipeline.INPUT_DEFAULTS (e.g. detector_score_threshold).
  """
  return ml_collections.ConfigDict(dict(
      num_frames=num_frames, frame_stride=frame_stride, crop_size=crop_size,
      min_crop_area=min_crop_area, flip=flip, num_test_clips=num_test_clips,
      num_test_crops=num_test_crops,
      # Pixels to [-1, 1], as big_vision's ViTs and Scenic's ViViTs were trained.
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), **fields))


def task_config(kind: str, dataset: str, *, num_classes: int, batch_size: int,
                input: ml_collections.ConfigDict, eval_batch_size: int | None = None,  # pylint: disable=redefined-builtin
                train_split: str = 'train', eval_split: str = 'validation',
                transfer_steps: int = 0, learning_rate_factor: float = 1.0,
                **fields) -> ml_collections.ConfigDict:
  """`config.tasks.<name>`; `fields` adds kind-specific entries (head, max_boxes, label_smoothing)."""
  return ml_collections.ConfigDict(dict(
      kind=kind, dataset=dict(name=dataset, train_split=train_split, eval_split=eval_split),
      num_classes=num_classes, batch_size=batch_size,
      eval_batch_size=eval_batch_size or batch_size, input=input, transfer_steps=transfer_steps,
      learning_rate_factor=learning_rate_factor, **fields))


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:args]' the way --config does, for tools and tests."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  if module_spec is None or not pathlib.Path(path).is_file():
    raise ConfigError(f'config file {path!r} not found')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
