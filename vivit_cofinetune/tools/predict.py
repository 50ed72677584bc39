"""Runs a trained or converted ViViT and one of its heads on a preprocessed clip.

  python -m vivit_cofinetune.tools.predict --checkpoint=/tmp/vivit_from_scenic \
      --clip=clip.npy --output=/tmp/prediction.npz
  python -m vivit_cofinetune.tools.predict --checkpoint=/tmp/vivit_demo \
      --config=configs/demo_cofinetune.py --task=synthetic_loc --clip=clip.npy --boxes=boxes.npy \
      --output=/tmp/prediction.npz

--checkpoint is a converted-checkpoint directory (params/ and config.json, from
tools.convert_checkpoint) or a training workdir (its latest checkpoint, and the experiment config
the trainer saved as config.json). With --config, the model and the heads come from the config
(config.model, config.tasks); otherwise from DIR/config.json.
The clip is [T, H, W, 3] or [B, T, H, W, 3]: uint8 pixels (normalised with the task's mean/std, as
the train and eval steps do) or floats already normalised as in training; a
localisation head also takes --boxes [N, 4] (the same boxes for every clip) or [B, N, 4], y1, x1,
y2, x2 in [0, 1].
OUTPUT.npz holds `logits` ([B, C], or [B, N, C] per box), `tokens` (the [B, t, h, w, D] grid) and
`pooled` ([B, D], when the backbone has a pooled output).
"""
import functools
import json
import pathlib
import sys

from absl import app
from absl import flags
import flax
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np

from vivit_cofinetune import checkpoint
from vivit_cofinetune import cli
from vivit_cofinetune import config_lib
from vivit_cofinetune import logs
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.tasks import base as tasks_base
from vivit_cofinetune.models import vivit


class PredictError(ValueError):
  """A flag, file or checkpoint does not fit what the tool expects."""


def _converted_description(checkpoint_dir: pathlib.Path) -> tuple[ml_collections.ConfigDict, dict]:
  """(model config, {head name: task config}) from DIR/config.json of tools.convert_checkpoint."""
  path = checkpoint_dir / 'config.json'
  if not path.is_file():
    raise PredictError(f'--checkpoint={checkpoint_dir}: no config.json there (a training '
                       'workdir?); pass --config=<the experiment config it was trained with>')
  description = _read_json(path)
  try:
    model = ml_collections.ConfigDict(dict(description['model'],
                                           patch_size=tuple(description['model']['patch_size'])))
  except (KeyError, TypeError) as error:
    raise PredictError(f'{path}: expected a "model" entry with a "patch_size" (as '
                       'tools.convert_checkpoint writes), got no {error}') from error
  task_configs = {}
  for name, head in description.get('heads', {}).items():
    head = dict(head)
    # The converter writes classification heads; 'kind' lets a config.json name other kinds.
    kind, num_classes = head.pop('kind', 'classification'), head.pop('num_classes')
    task_configs[name] = ml_collections.ConfigDict(dict(kind=kind, num_classes=num_classes,
                                                        head=head))
  return model, task_configs


def _choose_task(task: str | None, task_configs: dict, source: str) -> str:
  if not task_configs:
    raise PredictError(f'{source} defines no heads; predict needs a checkpoint with a trained or '
                       'converted head')
  if task is None:
    if len(task_configs) > 1:
      raise PredictError(f'{source} has several heads {sorted(task_configs)}: choose one with '
                         '--task')
    task = next(iter(task_configs))
  if task not in task_configs:
    raise PredictError(f'--task={task}: unknown task; {source} has heads {sorted(task_configs)}')
  return task


def _clips(clip: np.ndarray) -> np.ndarray:
  """[T, H, W, 3] or [B, T, H, W, 3] -> [B, T, H, W, 3]: uint8 pixels as they are, else float32."""
  clip = np.asarray(clip)
  clip = clip if clip.dtype == np.uint8 else clip.astype(np.float32)
  if clip.ndim == 4:
    clip = clip[None]
  if clip.ndim != 5 or clip.shape[-1] != 3:
    raise PredictError(f'--clip: expected [T, H, W, 3] or [B, T, H, W, 3] float pixels, got shape '
                       f'{clip.shape}')
  return clip


def _boxes(boxes: np.ndarray | None, num_clips: int, head_task: tasks_base.Task
           ) -> np.ndarray | None:
  """[N, 4] or [B, N, 4] -> float32 [B, N, 4]; None for heads that take no boxes."""
  task, kind = head_task.name, head_task.config.kind
  if 'boxes' not in head_task.PREDICTION_INPUTS:
    if boxes is not None:
      raise PredictError(f'--boxes: task {task} has a {kind} head, which takes no boxes')
    return None
  if boxes is None:
    raise PredictError(f'--boxes: task {task} has a {kind} head; give boxes '
                       f'{head_task.PREDICTION_INPUTS["boxes"]}')
  boxes = np.asarray(boxes, np.float32)
  if boxes.ndim == 2:
    boxes = np.broadcast_to(boxes[None], (num_clips, *boxes.shape))
  if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != num_clips:
    raise PredictError(f'--boxes: expected [N, 4] or [{num_clips}, N, 4] for {num_clips} clips, '
                       f'got shape {boxes.shape}')
  if boxes.min() < 0 or boxes.max() > 1:
    raise PredictError('--boxes: expected y1, x1, y2, x2 normalised to [0, 1] of the clip, got '
                       f'values in [{boxes.min()}, {boxes.max()}]')
  return boxes


def _workdir_config(workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The experiment config a training run saved as WORKDIR/config.json."""
  path = workdir / 'config.json'
  config = ml_collections.ConfigDict(_read_json(path))
  if 'model' not in config or 'tasks' not in config:
    raise PredictError(f'{path}: expected the experiment config a training run saves (with model '
                       'and tasks)')
  config.model.patch_size = tuple(config.model.patch_size)  # JSON has no tuples
  return config


def _read_json(path: pathlib.Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as error:
    raise PredictError(f'{path}: cannot read it as JSON ({error})') from error


def load_config(checkpoint_dir: str | pathlib.Path,
                config: ml_collections.ConfigDict | None = None
                ) -> tuple[ml_collections.ConfigDict | None, ml_collections.ConfigDict, dict, str]:
  """(experiment config or None, model config, {head name: task config}, where they came from).

  The experiment config is `config`, else a training workdir's config.json; a converted checkpoint
  without `config` has none, only the model and heads of its config.json.
  """
  checkpoint_dir = pathlib.Path(checkpoint_dir)
  if not ((checkpoint_dir / 'params').is_dir() or (checkpoint_dir / 'checkpoints').is_dir()):
    raise PredictError(f'--checkpoint={checkpoint_dir}: expected a converted checkpoint (params/, '
                       'config.json) or a training workdir (checkpoints/)')
  if config is None and (checkpoint_dir / 'checkpoints').is_dir() and (
      checkpoint_dir / 'config.json').is_file():
    config = _workdir_config(checkpoint_dir)
    source = f'{checkpoint_dir / "config.json"}'
  else:
    source = 'config.tasks'
  if config is not None:
    return config, config.model, dict(config.tasks), source
  model_config, task_configs = _converted_description(checkpoint_dir)
  return None, model_config, task_configs, f'{checkpoint_dir / "config.json"}'


class Predictor:
  """Backbone and one head (train=False) of a checkpoint, for predicting on many clips.

  The params are read, and the forward pass compiled, on the first call. `config` (an experiment
  config) is needed for a training workdir without config.json; `task` where there are several
  heads.
  Attributes: task, kind, head_task (the tasks/ object), task_config, and config (the experiment
  config, None for a converted checkpoint used without one).
  """

  def __init__(self, checkpoint_dir: str | pathlib.Path, *,
               config: ml_collections.ConfigDict | None = None, task: str | None = None):
    self.checkpoint_dir = pathlib.Path(checkpoint_dir)
    self.config, self.model_config, task_configs, source = load_config(checkpoint_dir, config)
    self.task = _choose_task(task, task_configs, source)
    self.task_config = task_configs[self.task]
    self.kind = self.task_config.get('kind')
    if self.kind not in tasks_lib.TASK_KINDS:
      raise PredictError(f'{source}: task {self.task} has kind {self.kind!r}; expected one of '
                         f'{sorted(tasks_lib.TASK_KINDS)}')
    self.head_task = tasks_lib.make_task(self.task, self.task_config)
    self._params = None
    self._forward = None

  def _load(self):
    try:
      params = checkpoint.read_params(self.checkpoint_dir)
    except Exception as error:  # pylint: disable=broad-except
      # orbax, tensorstore and the file system each raise their own types for a damaged checkpoint.
      reason = str(error).splitlines()[0] if str(error) else type(error).__name__
      raise PredictError(f'--checkpoint={self.checkpoint_dir}: cannot read its params '
                         f'({reason})') from error
    if self.task not in params.get('heads', {}):
      raise PredictError(f'--task={self.task}: the checkpoint has no params for this head (it has '
                         f'{sorted(params.get("heads", {}))})')
    backbone, head_task = vivit.ViViT(**self.model_config), self.head_task

    @jax.jit
    def forward(params, clips, batch):
      # The train and eval steps' own forward pass (uint8 pixels normalised the same way).
      return head_task.forward(backbone, params, dict(batch, video=clips), train=False)

    self._params = {'backbone': params['backbone'], 'head': params['heads'][self.task]}
    self._forward = forward

  def __call__(self, clip: np.ndarray, boxes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Outputs on clip [T, H, W, 3] or [B, T, H, W, 3] (normalised floats); see `predict`."""
    clips = _clips(clip)
    boxes = _boxes(boxes, clips.shape[0], self.head_task)
    batch = {} if boxes is None else {'boxes': jnp.asarray(boxes)}
    if self._forward is None:
      self._load()
    try:
      logits, tokens, pooled = self._forward(self._params, clips, batch)
    except flax.errors.FlaxError as error:  # a param of the wrong shape, or one the model lacks
      grid = tuple(size // patch
                   for size, patch in zip(clips.shape[1:4], self.model_config.patch_size))
      raise PredictError(
          f'--clip: clips [T, H, W] = {list(clips.shape[1:4])} (token grid {grid}) do not fit '
          f'--checkpoint={self.checkpoint_dir} with this model config: {error}. Learned position '
          'embeddings fix the frame count and crop size to those the checkpoint was made for.'
      ) from error
    outputs = {'task': self.task, 'kind': self.kind, 'logits': np.asarray(logits),
               'probabilities': np.asarray(self.head_task.probabilities(logits)),
               'tokens': np.asarray(tokens)}
    if pooled is not None:
      outputs['pooled'] = np.asarray(pooled)
    return outputs


def predict(checkpoint_dir: str | pathlib.Path, clip: np.ndarray, *,
            config: ml_collections.ConfigDict | None = None, boxes: np.ndarray | None = None,
            task: str | None = None) -> dict[str, np.ndarray]:
  """Backbone and one head (train=False) on clip [T, H, W, 3] or [B, T, H, W, 3].

  Returns {'task', 'kind', 'logits' [B, C] or [B, N, C], 'probabilities' (the task's: softmax, or a
  sigmoid per class), 'tokens' [B, t, h, w, D], and 'pooled'
  [B, D] where the backbone has one}. `config` (an experiment config) is needed for a training
  workdir without config.json; `boxes` ([N, 4] or [B, N, 4]) for a localisation head.
  """
  return Predictor(checkpoint_dir, config=config, task=task)(clip, boxes)


def summary(outputs: dict, top_k: int = 3) -> str:
  """One line: task, output shapes and the top classes of the first clip (first box)."""
  logits = outputs['logits']
  shapes = ', '.join(f'{key} {list(outputs[key].shape)}' for key in ('logits', 'tokens', 'pooled')
                     if key in outputs)
  # The first clip's (and, for a head that scores boxes, its first box's) class scores.
  first = logits.reshape(-1, logits.shape[-1])[0]
  where = 'clip 0' + ' box 0' * (logits.ndim == 3)
  scores = np.asarray(outputs['probabilities']).reshape(-1, logits.shape[-1])[0]
  top = np.argsort(-first)[:top_k]
  classes = ', '.join(f'{index} ({float(scores[index]):.3f})' for index in top)
  return f'{outputs["task"]} ({outputs["kind"]}): {shapes}; top classes of {where}: {classes}'


def _load_npy(path: str | None, flag: str) -> np.ndarray | None:
  if path is None:
    return None
  try:
    return np.load(path)
  except (OSError, ValueError) as error:
    raise PredictError(f'--{flag}={path}: cannot read a .npy array ({error})') from error


def _define_flags() -> dict:
  """The command-line flags; defined only when run as a tool, so other tools' flags may coexist."""
  return dict(
      checkpoint=flags.DEFINE_string('checkpoint', None,
                                     'Converted-checkpoint directory or training workdir.'),
      config=config_flags.DEFINE_config_file(
          'config', None, 'Experiment config (config.model, config.tasks); default: the '
          'checkpoint\'s config.json (a training workdir saves its experiment config there).',
          lock_config=False),
      clip=flags.DEFINE_string('clip', None,
                               '.npy file of a clip [T, H, W, 3] or clips [B, T, H, W, 3].'),
      boxes=flags.DEFINE_string('boxes', None, '.npy file of boxes [N, 4] or [B, N, 4] (y1, x1, '
                                'y2, x2 in [0, 1]); needed by a localisation head.'),
      task=flags.DEFINE_string('task', None,
                               'Head to run; may be left out when there is only one.'),
      output=flags.DEFINE_string('output', None, '.npz file to write.'),
  )


def _output_path(output: str) -> pathlib.Path:
  """--output, checked before any work: its folder must exist (nothing is created silently)."""
  path = pathlib.Path(output)
  if path.is_dir():
    raise PredictError(f'--output={output}: is a directory; expected a .npz file name')
  if not path.parent.is_dir():
    raise PredictError(f'--output={output}: folder {path.parent} does not exist; create it or '
                       'choose another')
  return path


def main(argv, flag_values: dict):
  """Runs the tool; every error it can name ends the process with one `predict:` line."""
  logs.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  value = {name: holder.value for name, holder in flag_values.items()}
  try:
    output = _output_path(value['output'])
    outputs = predict(value['checkpoint'], _load_npy(value['clip'], 'clip'),
                      config=value['config'], boxes=_load_npy(value['boxes'], 'boxes'),
                      task=value['task'])
    try:
      np.savez(output, **{key: array for key, array in outputs.items()
                          if isinstance(array, np.ndarray)})
    except OSError as error:
      raise PredictError(f'--output={output}: cannot write it ({error.strerror or error})'
                         ) from error
  except (PredictError, config_lib.ConfigError) as error:
    sys.exit(f'predict: {error}')
  print(summary(outputs))


if __name__ == '__main__':
  _FLAGS = _define_flags()
  flags.mark_flags_as_required(['checkpoint', 'clip', 'output'])
  app.run(functools.partial(main, flag_values=_FLAGS),
          flags_parser=functools.partial(cli.parse_flags, config_flag=_FLAGS['config']))
