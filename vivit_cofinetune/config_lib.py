"""What config files are made of: task and input builders with the input defaults, `:key=value`
arguments, and loading a config file. Checking a whole config is config_checks.py's job.

Nothing here imports the rest of the package, so config files and the input pipeline can use it.
"""
import importlib.util
import pathlib

import ml_collections


class ConfigError(ValueError):
  """A config field is missing or has a value the framework cannot use."""


# Defaults of the optional fields of config.tasks.<name>.input (read by data/pipeline.py and the tasks).
INPUT_DEFAULTS = dict(min_crop_area=0.3, max_crop_area=1.0, flip=True, num_test_clips=1,
                      num_test_crops=1,
                      # Pixels to [-1, 1], as big_vision's ViTs and Scenic's ViViTs were trained.
                      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                      shuffle_buffer=1024, temporal_jitter=None, min_box_visible=0.25,
                      detector_score_threshold=0.8, eval_resize='letterbox')
# The defaults input_config writes into every config, so that config.json shows them.
_WRITTEN_INPUT_DEFAULTS = ('min_crop_area', 'flip', 'num_test_clips', 'num_test_crops', 'mean',
                           'std')


def input_config(*, num_frames: int, crop_size: int, frame_stride: int = 2,
                 **fields) -> ml_collections.ConfigDict:
  """Clip sampling and augmentation of a task (see data/video_ops.py and data/pipeline.py).

  `fields` sets any field of INPUT_DEFAULTS (e.g. min_crop_area, detector_score_threshold).
  """
  unknown = sorted(set(fields) - set(INPUT_DEFAULTS))
  if unknown:
    raise ConfigError(f'input_config: unknown fields {unknown}; expected num_frames, crop_size, '
                      f'frame_stride or one of {sorted(INPUT_DEFAULTS)}')
  written = {field: INPUT_DEFAULTS[field] for field in _WRITTEN_INPUT_DEFAULTS}
  return ml_collections.ConfigDict(dict(num_frames=num_frames, frame_stride=frame_stride,
                                        crop_size=crop_size, **dict(written, **fields)))


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
  for kind, name in ((int, 'an integer'), (float, 'a number')):
    if isinstance(default, kind):
      try:
        return kind(value)
      except ValueError:
        raise ConfigError(f'config argument {key}={value!r}: expected {name}') from None
  return value


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """Loads 'path/to/config.py[:args]' the way --config does, for tools and tests."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  if module_spec is None or not pathlib.Path(path).is_file():
    raise ConfigError(f'config file {path!r} not found')
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()
