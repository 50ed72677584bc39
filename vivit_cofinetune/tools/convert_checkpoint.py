"""Converts another project's checkpoint into a directory our trainer can start from.

Formats (--from): big_vision_vit (image-ViT .npz), scenic_vivit (Scenic ViViT train states),
videomae (VideoMAE / VideoMAE V2), vjepa2 (V-JEPA 2 encoders) and hf_vivit (Hugging Face ViViT); the
last three read Hugging Face directories (config.json + model.safetensors) or, for videomae and
vjepa2, the original .pth/.pt files (models/video_checkpoints.py).

  python -m vivit_cofinetune.tools.convert_checkpoint --from=big_vision_vit \
      --input=gs://vit_models/augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz \
      --config=configs/demo_cofinetune.py --output=/tmp/vivit_b16_from_augreg
  python -m vivit_cofinetune.tools.convert_checkpoint --from=scenic_vivit \
      --input=/path/to/scenic/workdir --output=/tmp/vivit_from_scenic [--variant=factorised_dot_product]
  python -m vivit_cofinetune.tools.convert_checkpoint --from=videomae \
      --input=/path/to/videomae-large-finetuned-kinetics --output=/tmp/videomae_L [--input_shape=32,224,224]

Writes OUTPUT/params (an Orbax PyTree checkpoint of {'backbone': ..., 'heads': {name: ...}}) and
OUTPUT/config.json ({'model': the model config, 'heads': {name: {'num_classes', 'pooling'}},
'source': how it was made}); point `config.init_from.path` at OUTPUT. Local paths only (copy a gs://
file down first). The converter prints what it mapped, dropped and initialised fresh, and how the
position embedding fits the clip shape (--input_shape; default the one the checkpoint was trained on).
"""
import json
import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import orbax.checkpoint as ocp

from vivit_cofinetune import logs
from vivit_cofinetune.models import convert
from vivit_cofinetune.models import video_checkpoints
from vivit_cofinetune.models import vivit

_FROM = flags.DEFINE_enum('from', None, ['big_vision_vit', 'scenic_vivit',
                                         *video_checkpoints.FORMATS], 'Checkpoint format.')
_INPUT = flags.DEFINE_string('input', None, 'Checkpoint file or directory.')
_OUTPUT = flags.DEFINE_string('output', None, 'Directory to write (must not hold params yet).')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config (its .model is used) or a model config; required for '
    'big_vision_vit, optional for scenic_vivit (inferred from the checkpoint); videomae, vjepa2 and '
    'hf_vivit infer the model from the checkpoint and keep only the config\'s scan_layers.',
    lock_config=False)
_VARIANT = flags.DEFINE_enum('variant', None, list(vivit.VARIANTS),
                             'Model variant, where a Scenic checkpoint cannot tell.')
_INPUT_SHAPE = flags.DEFINE_list(
    'input_shape', None, 'Clip size T,H,W the converted model is for. big_vision_vit: default '
    'num_frames and crop_size of the config\'s first task; videomae, vjepa2, hf_vivit: default the '
    'clip size the checkpoint was trained on (position embeddings are resized to the new one).')
_NUM_HEADS = flags.DEFINE_integer(
    'num_heads', None, 'Attention heads, for an original .pth whose hidden size is not a standard '
    'S/B/L/H/g width (Hugging Face directories say it in config.json).')
_KERNEL_INIT = flags.DEFINE_enum('kernel_init', 'central_frame', ['central_frame', 'average'],
                                 'Patch-kernel inflation (big_vision_vit).')
_TEMPORAL_ATTENTION_INIT = flags.DEFINE_enum(
    'temporal_attention_init', 'zero', ['zero', 'spatial'],
    'Temporal attention of factorised_self_attention (big_vision_vit).')
_TEMPORAL_ENCODER_INIT = flags.DEFINE_enum(
    'temporal_encoder_init', 'fresh', ['fresh', 'vit'],
    'Temporal encoder of factorised_encoder (big_vision_vit).')
_HEAD_NAME = flags.DEFINE_string('head_name', 'pretrained',
                                 'Task name to file a converted Scenic classification head under.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the fresh params the checkpoint does not supply.')


def _model_config(config: ml_collections.ConfigDict | None) -> ml_collections.ConfigDict | None:
  if config is None:
    return None
  return config.model if 'model' in config else config


def _clip_shape(config: ml_collections.ConfigDict, input_shape) -> tuple[int, int, int]:
  """(T, H, W) from --input_shape or from the first task of an experiment config."""
  if input_shape:
    if len(input_shape) != 3:
      raise ValueError(f'--input_shape: expected T,H,W, got {input_shape}')
    return tuple(int(size) for size in input_shape)
  tasks = config.get('tasks') if 'model' in config else None
  if not tasks:
    raise ValueError('--input_shape=T,H,W is needed: the config has no tasks to take it from')
  task = next(iter(tasks.values()))
  return (task.input.num_frames, task.input.crop_size, task.input.crop_size)


def convert_checkpoint(from_format: str, input_path: str, output_dir: str, *,
                       config: ml_collections.ConfigDict | None = None,
                       variant: str | None = None,
                       input_shape: tuple[int, int, int] | None = None,
                       kernel_init: str = 'central_frame', temporal_attention_init: str = 'zero',
                       temporal_encoder_init: str = 'fresh', head_name: str = 'pretrained',
                       num_heads: int | None = None, seed: int = 0) -> dict[str, Any]:
  """Converts and writes output_dir/params and output_dir/config.json; returns the config.json dict."""
  model_config = _model_config(config)
  heads, head_info = {}, {}
  if from_format == 'big_vision_vit':
    if model_config is None:
      raise ValueError('--from=big_vision_vit needs --config (the model to initialise)')
    shape = _clip_shape(config, input_shape)
    video = jnp.zeros((1, *shape, 3), jnp.float32)
    template = vivit.ViViT(**model_config).init(jax.random.PRNGKey(seed), video, train=False)['params']
    patch = model_config.patch_size
    grid = tuple(size // step for size, step in zip(shape, patch))
    backbone = convert.init_from_image_vit(
        convert.load_big_vision_vit(input_path), template, model_config, kernel_init=kernel_init,
        temporal_attention_init=temporal_attention_init, temporal_encoder_init=temporal_encoder_init,
        token_grid=grid, source=input_path)
    options = dict(kernel_init=kernel_init, temporal_attention_init=temporal_attention_init,
                   temporal_encoder_init=temporal_encoder_init, input_shape=list(shape))
  elif from_format == 'scenic_vivit':
    scenic_params = convert.load_scenic_checkpoint(input_path)
    if model_config is None:
      model_config = convert.infer_config_from_scenic(scenic_params, variant, source=input_path)
    elif variant is not None and variant != model_config.variant:
      raise ValueError(f'--variant={variant} disagrees with the config variant {model_config.variant}')
    backbone, head = convert.scenic_vivit_to_ours(scenic_params, model_config, source=input_path)
    if head is not None:
      heads[head_name] = head
      pooled = model_config.classifier == 'token' or model_config.variant == 'factorised_encoder'
      head_info[head_name] = dict(num_classes=int(head['output']['bias'].shape[0]),
                                  pooling='token' if pooled else 'mean')
    options = dict(variant=model_config.variant)
  elif from_format in video_checkpoints.FORMATS:
    shape = tuple(int(size) for size in input_shape) if input_shape else None
    if shape is not None and len(shape) != 3:
      raise ValueError(f'--input_shape: expected T,H,W, got {input_shape}')
    scan_layers = model_config.get('scan_layers', True) if model_config is not None else True
    conversion = video_checkpoints.convert(from_format, input_path, clip_shape=shape,
                                           num_heads=num_heads, scan_layers=scan_layers)
    model_config, backbone = conversion.model_config, conversion.backbone
    if conversion.head is not None:
      heads[head_name] = conversion.head
      head_info[head_name] = dict(num_classes=int(conversion.head['output']['bias'].shape[0]),
                                  pooling=conversion.head_pooling)
    options = dict(input_shape=list(conversion.clip_shape), **conversion.report())
  else:
    raise ValueError(f'--from: expected big_vision_vit, scenic_vivit or one of '
                     f'{video_checkpoints.FORMATS}, got {from_format!r}')

  output_dir = os.path.abspath(output_dir)
  params = {'backbone': backbone, 'heads': heads}
  ocp.PyTreeCheckpointer().save(os.path.join(output_dir, 'params'),
                                jax.tree.map(np.asarray, params))
  description = {'model': model_config.to_dict(), 'heads': head_info,
                 'source': dict(format=from_format, input=str(input_path), **options)}
  with open(os.path.join(output_dir, 'config.json'), 'w') as file:
    json.dump(description, file, indent=2, default=list)
  return description


def main(argv):
  logs.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  description = convert_checkpoint(
      _FROM.value, _INPUT.value, _OUTPUT.value, config=_CONFIG.value, variant=_VARIANT.value,
      input_shape=_INPUT_SHAPE.value, kernel_init=_KERNEL_INIT.value,
      temporal_attention_init=_TEMPORAL_ATTENTION_INIT.value,
      temporal_encoder_init=_TEMPORAL_ENCODER_INIT.value, head_name=_HEAD_NAME.value,
      num_heads=_NUM_HEADS.value, seed=_SEED.value)
  print(json.dumps(description, indent=2, default=list))


if __name__ == '__main__':
  flags.mark_flags_as_required(['from', 'input', 'output'])
  app.run(main)
