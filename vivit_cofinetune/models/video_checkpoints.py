"""Video-pretrained PyTorch checkpoints -> our spatio-temporal ViViT: VideoMAE (V1 and V2), V-JEPA 2
and Hugging Face ViViT.

Each is a plain ViT over 2x16x16 (or 2x14x14) tubelets, so it maps onto our spatio_temporal variant
with the numerics options of models/vivit.py:
  videomae  no CLS token, a fixed 1D sinusoid table over the flattened (t, h, w) token index (it
            becomes our learned position embedding's initial value), no key bias, exact GELU,
            LayerNorm epsilon 1e-12 (Hugging Face configs) or 1e-6 (original files), and either
            mean pooling with `fc_norm` (final_norm='pooled') or a final `norm` on every token;
  vjepa2    no CLS token, 3D rotary position code (position_embedding='rope_3d'), exact GELU;
  hf_vivit  CLS token, learned position embedding with the CLS slot first, tanh GELU ('gelu_fast').

Inputs: a Hugging Face directory (config.json + model.safetensors, or sharded safetensors, or
pytorch_model.bin) or an original .pth/.pt file (read by models/torch_files.py, never unpickling
code). Hugging Face layouts: VideoMAEModel / VideoMAEForVideoClassification /
VideoMAEForPreTraining (its encoder), VJEPA2Model / VJEPA2ForVideoClassification (its encoder),
VivitModel / VivitForVideoClassification. Original layouts: VideoMAE and VideoMAE V2 state dicts
(`patch_embed.proj`, `blocks.N.attn.qkv` with `q_bias`/`v_bias`), optionally under 'model' or
'module' and with pre-training 'encoder.' prefixes; V-JEPA 2 checkpoints ({'encoder',
'target_encoder', ...}, names under 'module.backbone.').

`convert` returns our backbone params, a classification head where the checkpoint has one our
heads can run, the model config, and a report of what was mapped, dropped and initialised fresh.
"""
from collections.abc import Mapping
import dataclasses
import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivit_cofinetune.models import convert as convert_lib
from vivit_cofinetune.models import torch_files
from vivit_cofinetune.models import vivit

FORMATS = ('videomae', 'vjepa2', 'hf_vivit')
# hidden size -> heads, for original files whose shapes cannot tell the head count (S/B/L/H/g).
_HEADS_BY_WIDTH = {'videomae': {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16},
                   'vjepa2': {1024: 16, 1280: 16, 1408: 22}}
# Clip size an original file is assumed to be made for when --input_shape is not given.
_ORIGINAL_CLIP = {'videomae': (16, 224, 224), 'vjepa2': (64, 256, 256)}
_HF_GELUS = {'gelu': 'exact', 'gelu_fast': 'tanh', 'gelu_new': 'tanh', 'gelu_pytorch_tanh': 'tanh'}


class MissingField(convert_lib.ConversionError):
  """The checkpoint cannot tell a model field; the message names the flag to pass."""


@dataclasses.dataclass
class Conversion:
  """What `convert` made: params in our layout, the model config and a report."""
  backbone: dict
  head: dict | None  # {'output': {'kernel' [D, C], 'bias' [C]}} or None
  head_pooling: str | None  # ClassificationHead pooling that reproduces the checkpoint's logits
  model_config: ml_collections.ConfigDict
  clip_shape: tuple[int, int, int]
  mapped: list[str]  # 'their name -> our name'
  dropped: list[str]
  fresh: list[str]
  position: str  # how the position code fits the clip shape

  def report(self) -> dict:
    return dict(mapped=self.mapped, dropped=self.dropped, initialised_fresh=self.fresh,
                position_embedding=self.position)


# ---------------------------------------------------------------------------------------------
# Reading files.


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict | None]:
  """(flat state dict {torch name: float32 array}, Hugging Face config.json or None)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file or directory')
  if os.path.isdir(path):
    config_path = os.path.join(path, 'config.json')
    if not os.path.isfile(config_path):
      raise convert_lib.ConversionError(f'{path}: a Hugging Face directory needs config.json')
    with open(config_path) as file:
      hf_config = json.load(file)
    return _read_hf_weights(path), hf_config
  if path.endswith('.safetensors'):
    return _safetensors(path), None
  return _state_dict(torch_files.load(path), path), None


def _safetensors(path: str) -> dict[str, np.ndarray]:
  # pylint: disable-next=g-import-not-at-top (only the Hugging Face formats need it)
  from safetensors import numpy as safetensors_numpy
  return {name: np.asarray(value, np.float32)
          for name, value in safetensors_numpy.load_file(path).items()}


def _read_hf_weights(directory: str) -> dict[str, np.ndarray]:
  """model.safetensors, its shards (model.safetensors.index.json) or pytorch_model.bin."""
  single = os.path.join(directory, 'model.safetensors')
  index = os.path.join(directory, 'model.safetensors.index.json')
  legacy = os.path.join(directory, 'pytorch_model.bin')
  if os.path.isfile(single):
    return _safetensors(single)
  if os.path.isfile(index):
    with open(index) as file:
      shards = sorted(set(json.load(file)['weight_map'].values()))
    weights = {}
    for shard in shards:
      weights.update(_safetensors(os.path.join(directory, shard)))
    return weights
  if os.path.isfile(legacy):
    return _state_dict(torch_files.load(legacy), legacy)
  raise convert_lib.ConversionError(f'{directory}: expected model.safetensors, '
                                    'model.safetensors.index.json or pytorch_model.bin')


def _state_dict(loaded, source: str) -> dict[str, np.ndarray]:
  """The tensors of a torch.save'd object: a state dict, or one under 'model'/'module'/... keys."""
  if not isinstance(loaded, Mapping):
    raise convert_lib.ConversionError(f'{source}: expected a dict of tensors, got '
                                      f'{type(loaded).__name__}')
  # V-JEPA 2 saves {'encoder', 'predictor', 'target_encoder', 'opt', ...}; its evaluations read
  # the target encoder (the EMA weights).
  for key in ('target_encoder', 'encoder', 'model', 'module', 'state_dict'):
    if key in loaded and isinstance(loaded[key], Mapping):
      return _state_dict(loaded[key], source)
  weights = {name: np.asarray(value, np.float32) for name, value in loaded.items()
             if isinstance(value, np.ndarray)}
  if not weights:
    raise convert_lib.ConversionError(f'{source}: no tensors found (entries {sorted(loaded)[:10]})')
  return weights


# ---------------------------------------------------------------------------------------------
# Their blocks -> ours.


def _take(weights: dict, name: str, source: str, mapped: list, ours: str) -> np.ndarray:
  if name not in weights:
    raise convert_lib.ConversionError(f'{source}: missing parameter {name!r}')
  mapped.append(f'{name} -> {ours}')
  return weights.pop(name)


# Our names (inside one layer) of the torch modules `_block` reads.
_LAYER_PATHS = {'attention_norm': 'attention_norm', 'query': 'attention/query',
                'key': 'attention/key', 'value': 'attention/value', 'out': 'attention/out',
                'mlp_norm': 'mlp_norm', 'hidden': 'mlp/hidden', 'output': 'mlp/output'}


def _take_modules(take, names: Mapping[str, str]) -> dict:
  """{our module: (their 'NAME.weight', their 'NAME.bias')} for names {our module: their NAME}."""
  modules = {}
  for ours, theirs in names.items():
    path = _LAYER_PATHS[ours]
    weight = 'scale' if path.endswith('_norm') else 'kernel'
    modules[ours] = (take(f'{theirs}.weight', f'{path}/{weight}'), take(f'{theirs}.bias', f'{path}/bias'))
  return modules


def _strip(weights: dict, prefixes: tuple[str, ...]) -> dict:
  """Removes each of `prefixes`, in order, from the names that start with it (the wrappers and
  model prefixes: 'module.', 'videomae.', ...)."""
  for prefix in prefixes:
    if any(name.startswith(prefix) for name in weights):
      weights = {(name[len(prefix):] if name.startswith(prefix) else name): value
                 for name, value in weights.items()}
  return weights


def _block(linear: dict, num_heads: int, hidden_size: int) -> dict:
  """Our layer tree from torch-layout tensors of one pre-LN block.

  linear: {'attention_norm': (w, b), 'query'/'key'/'value': (w [D, D], b or None), 'out': (w, b),
  'mlp_norm': (w, b), 'hidden': (w [M, D], b), 'output': (w [D, M], b)}; torch Linear weights are
  [out, in], ours [in, ...].
  """
  head_dim = hidden_size // num_heads

  def projection(name):
    weight, bias = linear[name]
    entry = {'kernel': weight.T.reshape(hidden_size, num_heads, head_dim)}
    if bias is not None:
      entry['bias'] = bias.reshape(num_heads, head_dim)
    return entry

  out_weight, out_bias = linear['out']
  norm = lambda name: {'scale': linear[name][0], 'bias': linear[name][1]}
  dense = lambda name: {'kernel': linear[name][0].T, 'bias': linear[name][1]}
  return {
      'attention_norm': norm('attention_norm'),
      'attention': {'query': projection('query'), 'key': projection('key'),
                    'value': projection('value'),
                    'out': {'kernel': out_weight.T.reshape(num_heads, head_dim, hidden_size),
                            'bias': out_bias}},
      'mlp_norm': norm('mlp_norm'),
      'mlp': {'hidden': dense('hidden'), 'output': dense('output')},
  }


def _patch_kernel(weight: np.ndarray) -> np.ndarray:
  """Conv3d weight [D, 3, pt, ph, pw] -> our tubelet kernel [pt, ph, pw, 3, D]."""
  if weight.ndim != 5:
    raise convert_lib.ConversionError(f'patch embedding weight has shape {weight.shape}, expected '
                                      'a Conv3d weight [D, 3, pt, ph, pw]')
  return weight.transpose(2, 3, 4, 1, 0)


def _layer_count(weights: dict, pattern: str) -> int:
  indices = {int(match.group(1)) for name in weights if (match := re.match(pattern, name))}
  if not indices:
    raise convert_lib.ConversionError(f'no transformer blocks found (names like {pattern!r})')
  return max(indices) + 1


def _num_heads(fmt: str, hf_config: dict | None, num_heads: int | None, width: int) -> int:
  """Number of heads: from config.json, the flag, or the standard size of that width."""
  if hf_config and 'num_attention_heads' in hf_config:
    return int(hf_config['num_attention_heads'])
  if num_heads:
    return num_heads
  if width in _HEADS_BY_WIDTH.get(fmt, {}):
    return _HEADS_BY_WIDTH[fmt][width]
  raise MissingField(f'{fmt}: hidden size {width} is not a standard size; pass --num_heads')


# ---------------------------------------------------------------------------------------------
# Position embeddings at another clip shape.


def videomae_sinusoid_table(num_tokens: int, width: int) -> np.ndarray:
  """VideoMAE's fixed position table [1, N, D] over the flattened token index.

  Channel j of token n: sin(n / 10000^(2 (j // 2) / D)) for even j, cos(...) for odd j.
  """
  exponent = 2 * (np.arange(width) // 2) / width
  angles = np.arange(num_tokens)[:, None] / np.power(10_000.0, exponent)[None]
  table = np.where(np.arange(width) % 2 == 0, np.sin(angles), np.cos(angles))
  return table[None].astype(np.float32)


def _resize_learned(embedding: np.ndarray, old_grid, new_grid, has_cls: bool) -> np.ndarray:
  """[1, c + t*h*w, D] learned embedding -> the new grid, interpolated over t, h and w."""
  cls, tokens = embedding[:, :int(has_cls)], embedding[:, int(has_cls):]
  if tuple(old_grid) != tuple(new_grid):
    grid = tokens[0].reshape(*old_grid, -1)
    tokens = convert_lib.resize_grid(grid, new_grid).reshape(1, -1, embedding.shape[-1])
  return np.concatenate([cls, tokens], axis=1)


def _grid(clip_shape, patch_size) -> tuple[int, int, int]:
  grid = tuple(size // patch for size, patch in zip(clip_shape, patch_size))
  if min(grid) < 1:
    raise convert_lib.ConversionError(f'clip {clip_shape} is smaller than one tubelet {patch_size}')
  return grid


# ---------------------------------------------------------------------------------------------
# The three formats.


def _videomae(weights: dict, hf_config: dict | None, clip_shape, num_heads, source):
  mapped, fresh = [], []
  weights = _strip(weights, ('module.', 'videomae.', 'encoder.') if hf_config is None else
                   ('videomae.',))
  dropped = sorted(name for name in weights if name.startswith(('decoder.', 'encoder_to_decoder.'))
                   or name in ('mask_token',))
  if hf_config is not None:
    patch = 'embeddings.patch_embeddings.projection'
    layer = 'encoder.layer.{}.'
    count = _layer_count(weights, r'encoder\.layer\.(\d+)\.')
    epsilon = float(hf_config.get('layer_norm_eps', 1e-12))
    gelu = _HF_GELUS.get(hf_config.get('hidden_act', 'gelu'))
    if gelu is None:
      raise convert_lib.ConversionError(f"{source}: hidden_act {hf_config['hidden_act']!r} is not "
                                        f'one of {sorted(_HF_GELUS)}')
  else:
    patch, layer = 'patch_embed.proj', 'blocks.{}.'
    count = _layer_count(weights, r'blocks\.(\d+)\.')
    epsilon, gelu = 1e-6, 'exact'
    if any('gamma_1' in name for name in weights):
      raise convert_lib.ConversionError(f'{source}: layer-scale (gamma_1/gamma_2) blocks are not '
                                        'supported')
  kernel = _patch_kernel(_take(weights, f'{patch}.weight', source, mapped, 'embedding/kernel'))
  width = kernel.shape[-1]
  heads = _num_heads('videomae', hf_config, num_heads, width)
  layers = []
  for index in range(count):
    prefix = layer.format(index)
    ours = f'encoder/layers_{index}/'
    take = lambda name, our, prefix=prefix, ours=ours: _take(weights, prefix + name, source, mapped,
                                                              ours + our)
    if hf_config is not None:
      attention = 'attention.attention.'
      query_w, key_w, value_w = (take(f'{attention}{name}.weight', f'attention/{name}/kernel')
                                 for name in ('query', 'key', 'value'))
      # transformers 5 saves the q and v biases as query.bias/value.bias, older ones q_bias/v_bias.
      new_names = f'{prefix}{attention}query.bias' in weights
      query_b = take(f'{attention}{"query.bias" if new_names else "q_bias"}', 'attention/query/bias')
      value_b = take(f'{attention}{"value.bias" if new_names else "v_bias"}', 'attention/value/bias')
      names = dict(attention_norm='layernorm_before', out='attention.output.dense',
                   mlp_norm='layernorm_after', hidden='intermediate.dense', output='output.dense')
    else:
      qkv = take('attn.qkv.weight', 'attention/{query,key,value}/kernel')
      query_w, key_w, value_w = np.split(qkv, 3, axis=0)
      query_b = take('attn.q_bias', 'attention/query/bias')
      value_b = take('attn.v_bias', 'attention/value/bias')
      names = dict(attention_norm='norm1', out='attn.proj', mlp_norm='norm2', hidden='mlp.fc1',
                   output='mlp.fc2')
    linear = {'query': (query_w, query_b), 'key': (key_w, None), 'value': (value_w, value_b),
              **_take_modules(take, names)}
    layers.append(_block(linear, heads, width))

  backbone = {'embedding': {'kernel': kernel, 'bias': _take(weights, f'{patch}.bias', source,
                                                            mapped, 'embedding/bias')}}
  encoder = {f'layers_{index}': layer_tree for index, layer_tree in enumerate(layers)}
  final_names = ('layernorm', 'fc_norm') if hf_config is not None else ('norm', 'fc_norm')
  if hf_config is not None:
    pooled = bool(hf_config.get('use_mean_pooling', True))
  else:
    pooled = f'{final_names[1]}.weight' in weights or f'{final_names[0]}.weight' not in weights
  if pooled:
    if f'{final_names[1]}.weight' in weights:
      backbone['fc_norm'] = {'scale': _take(weights, 'fc_norm.weight', source, mapped, 'fc_norm/scale'),
                             'bias': _take(weights, 'fc_norm.bias', source, mapped, 'fc_norm/bias')}
    else:
      backbone['fc_norm'] = {'scale': np.ones(width, np.float32), 'bias': np.zeros(width, np.float32)}
      fresh.append('fc_norm (ones/zeros: the checkpoint has no fc_norm; its base model leaves '
                   'tokens unnormalised and pools by mean)')
  else:
    encoder['encoder_norm'] = {
        'scale': _take(weights, f'{final_names[0]}.weight', source, mapped, 'encoder/encoder_norm/scale'),
        'bias': _take(weights, f'{final_names[0]}.bias', source, mapped, 'encoder/encoder_norm/bias')}

  patch_size = tuple(int(size) for size in kernel.shape[:3])
  if hf_config is not None:
    trained_clip = (int(hf_config.get('num_frames', 16)), int(hf_config.get('image_size', 224)),
                    int(hf_config.get('image_size', 224)))
  else:
    trained_clip = _ORIGINAL_CLIP['videomae']
  clip_shape = tuple(clip_shape or trained_clip)
  grid = _grid(clip_shape, patch_size)
  num_tokens = int(np.prod(grid))
  if 'pos_embed' in weights:  # learnable position embeddings (use_learnable_pos_emb)
    learned = _take(weights, 'pos_embed', source, mapped, 'encoder/pos_embedding')
    encoder['pos_embedding'] = _resize_learned(learned, _grid(trained_clip, patch_size), grid, False)
    position = (f'learned, interpolated over (t, h, w) from {_grid(trained_clip, patch_size)} to '
                f'{grid}' if _grid(trained_clip, patch_size) != grid else 'learned, as trained')
  else:
    encoder['pos_embedding'] = videomae_sinusoid_table(num_tokens, width)
    position = (f'fixed sinusoid table regenerated for {num_tokens} tokens (grid {grid}, clip '
                f'{clip_shape}; pretrained on {trained_clip}); it is the initial value of our '
                'learned position embedding')
  backbone['encoder'] = encoder

  head, head_pooling = None, None
  head_name = 'classifier' if hf_config is not None else 'head'
  if f'{head_name}.weight' in weights and pooled:
    head = {'output': {
        'kernel': _take(weights, f'{head_name}.weight', source, mapped, 'heads/<name>/output/kernel').T,
        'bias': _take(weights, f'{head_name}.bias', source, mapped, 'heads/<name>/output/bias')}}
    head_pooling = 'token'  # our pooled vector is fc_norm(mean of the tokens), as theirs
  elif f'{head_name}.weight' in weights:  # without mean pooling their head reads token 0
    dropped += [f'{head_name}.weight', f'{head_name}.bias']
  overrides = dict(classifier='mean', position_embedding='learned', layer_norm_epsilon=epsilon,
                   gelu=gelu, key_bias=False, final_norm='pooled' if pooled else 'tokens')
  return _finish(backbone, head, head_pooling, width, count, heads, layers, patch_size, overrides,
                 clip_shape, weights, mapped, dropped, fresh, position, source)


def _vjepa2(weights: dict, hf_config: dict | None, clip_shape, num_heads, source):
  mapped, fresh = [], []
  weights = _strip(weights, ('vjepa2.',) if hf_config is not None else ('module.', 'backbone.'))
  dropped = sorted(name for name in weights if name.startswith(('predictor.', 'pooler.',
                                                                'classifier.')))
  if hf_config is not None:
    patch, layer, final = 'encoder.embeddings.patch_embeddings.proj', 'encoder.layer.{}.', 'encoder.layernorm'
    count = _layer_count(weights, r'encoder\.layer\.(\d+)\.')
    epsilon = float(hf_config.get('layer_norm_eps', 1e-6))
    gelu = _HF_GELUS.get(hf_config.get('hidden_act', 'gelu'), 'exact')
    trained_clip = (int(hf_config.get('frames_per_clip', 64)), int(hf_config.get('crop_size', 256)),
                    int(hf_config.get('crop_size', 256)))
  else:
    patch, layer, final = 'patch_embed.proj', 'blocks.{}.', 'norm'
    count = _layer_count(weights, r'blocks\.(\d+)\.')
    epsilon, gelu, trained_clip = 1e-6, 'exact', _ORIGINAL_CLIP['vjepa2']
  kernel = _patch_kernel(_take(weights, f'{patch}.weight', source, mapped, 'embedding/kernel'))
  width = kernel.shape[-1]
  heads = _num_heads('vjepa2', hf_config, num_heads, width)
  layers = []
  for index in range(count):
    prefix, ours = layer.format(index), f'encoder/layers_{index}/'
    take = lambda name, our, prefix=prefix, ours=ours: _take(weights, prefix + name, source, mapped,
                                                              ours + our)
    names = dict(attention_norm='norm1', mlp_norm='norm2', hidden='mlp.fc1', output='mlp.fc2')
    if hf_config is not None:
      names.update(query='attention.query', key='attention.key', value='attention.value',
                   out='attention.proj')
      linear = _take_modules(take, names)
    else:
      qkv_w = np.split(take('attn.qkv.weight', 'attention/{query,key,value}/kernel'), 3, axis=0)
      qkv_b = np.split(take('attn.qkv.bias', 'attention/{query,key,value}/bias'), 3, axis=0)
      linear = dict(zip(('query', 'key', 'value'), zip(qkv_w, qkv_b)),
                    **_take_modules(take, dict(names, out='attn.proj')))
    layers.append(_block(linear, heads, width))
  encoder = {f'layers_{index}': layer_tree for index, layer_tree in enumerate(layers)}
  encoder['encoder_norm'] = {
      'scale': _take(weights, f'{final}.weight', source, mapped, 'encoder/encoder_norm/scale'),
      'bias': _take(weights, f'{final}.bias', source, mapped, 'encoder/encoder_norm/bias')}
  backbone = {'embedding': {'kernel': kernel, 'bias': _take(weights, f'{patch}.bias', source,
                                                            mapped, 'embedding/bias')},
              'encoder': encoder}
  patch_size = tuple(int(size) for size in kernel.shape[:3])
  clip_shape = tuple(clip_shape or trained_clip)
  position = (f'3D rotary position code (no parameters) on the grid {_grid(clip_shape, patch_size)} '
              f'of clip {clip_shape}; pretrained on {trained_clip}; nothing to resize')
  overrides = dict(classifier='mean', position_embedding='rope_3d', layer_norm_epsilon=epsilon,
                   gelu=gelu, final_norm='tokens')
  return _finish(backbone, None, None, width, count, heads, layers, patch_size, overrides,
                 clip_shape, weights, mapped, dropped, fresh, position, source)


def _hf_vivit(weights: dict, hf_config: dict | None, clip_shape, num_heads, source):
  if hf_config is None:
    raise convert_lib.ConversionError(f'{source}: --from=hf_vivit reads Hugging Face directories '
                                      '(config.json + model.safetensors)')
  mapped, fresh = [], []
  weights = _strip(weights, ('vivit.',))
  dropped = sorted(name for name in weights if name.startswith('pooler.'))
  count = _layer_count(weights, r'encoder\.layer\.(\d+)\.')
  kernel = _patch_kernel(_take(weights, 'embeddings.patch_embeddings.projection.weight', source,
                               mapped, 'embedding/kernel'))
  width = kernel.shape[-1]
  heads = _num_heads('hf_vivit', hf_config, num_heads, width)
  gelu = _HF_GELUS.get(hf_config.get('hidden_act', 'gelu_fast'))
  if gelu is None:
    raise convert_lib.ConversionError(f"{source}: hidden_act {hf_config['hidden_act']!r} is not one "
                                      f'of {sorted(_HF_GELUS)}')
  layers = []
  for index in range(count):
    prefix, ours = f'encoder.layer.{index}.', f'encoder/layers_{index}/'
    take = lambda name, our, prefix=prefix, ours=ours: _take(weights, prefix + name, source, mapped,
                                                              ours + our)
    layers.append(_block(_take_modules(take, dict(
        query='attention.attention.query', key='attention.attention.key',
        value='attention.attention.value', attention_norm='layernorm_before',
        out='attention.output.dense', mlp_norm='layernorm_after', hidden='intermediate.dense',
        output='output.dense')), heads, width))
  patch_size = tuple(int(size) for size in kernel.shape[:3])
  trained_clip = (int(hf_config.get('num_frames', 32)), int(hf_config.get('image_size', 224)),
                  int(hf_config.get('image_size', 224)))
  clip_shape = tuple(clip_shape or trained_clip)
  old_grid, grid = _grid(trained_clip, patch_size), _grid(clip_shape, patch_size)
  learned = _take(weights, 'embeddings.position_embeddings', source, mapped, 'encoder/pos_embedding')
  encoder = {f'layers_{index}': layer_tree for index, layer_tree in enumerate(layers)}
  encoder.update(
      cls=_take(weights, 'embeddings.cls_token', source, mapped, 'encoder/cls'),
      pos_embedding=_resize_learned(learned, old_grid, grid, has_cls=True),
      encoder_norm={'scale': _take(weights, 'layernorm.weight', source, mapped,
                                   'encoder/encoder_norm/scale'),
                    'bias': _take(weights, 'layernorm.bias', source, mapped,
                                  'encoder/encoder_norm/bias')})
  position = (f'learned, interpolated over (t, h, w) from {old_grid} to {grid} (CLS slot kept)'
              if old_grid != grid else f'learned, as trained (grid {grid})')
  backbone = {'embedding': {'kernel': kernel, 'bias': _take(
      weights, 'embeddings.patch_embeddings.projection.bias', source, mapped, 'embedding/bias')},
              'encoder': encoder}
  head, head_pooling = None, None
  if 'classifier.weight' in weights:
    head = {'output': {'kernel': _take(weights, 'classifier.weight', source, mapped,
                                       'heads/<name>/output/kernel').T,
                       'bias': _take(weights, 'classifier.bias', source, mapped,
                                     'heads/<name>/output/bias')}}
    head_pooling = 'token'
  overrides = dict(classifier='token', position_embedding='learned',
                   layer_norm_epsilon=float(hf_config.get('layer_norm_eps', 1e-6)), gelu=gelu,
                   final_norm='tokens')
  return _finish(backbone, head, head_pooling, width, count, heads, layers, patch_size, overrides,
                 clip_shape, weights, mapped, dropped, fresh, position, source)


def _finish(backbone, head, head_pooling, width, count, heads, layers, patch_size, overrides,
            clip_shape, weights, mapped, dropped, fresh, position, source) -> Conversion:
  """Stacks the layers, builds the config and accounts for every checkpoint tensor."""
  dropped = sorted(set(dropped))
  left = sorted(set(weights) - set(dropped))
  if left:
    raise convert_lib.ConversionError(f'{source}: parameters not understood: {left[:10]}'
                                      f'{" ..." if len(left) > 10 else ""}')
  mlp_dim = layers[0]['mlp']['hidden']['kernel'].shape[1]
  model_config = vivit.vivit_config(
      'B/16x2', variant='spatio_temporal', hidden_size=int(width), num_layers=count,
      mlp_dim=int(mlp_dim), num_heads=int(heads), patch_size=patch_size, **overrides)
  backbone = convert_lib.stack_layers(backbone)
  return Conversion(backbone=backbone, head=head, head_pooling=head_pooling,
                    model_config=model_config, clip_shape=tuple(int(s) for s in clip_shape),
                    mapped=mapped, dropped=dropped, fresh=fresh, position=position)


_CONVERTERS = {'videomae': _videomae, 'vjepa2': _vjepa2, 'hf_vivit': _hf_vivit}


def convert(fmt: str, path: str, *, clip_shape: tuple[int, int, int] | None = None,
            num_heads: int | None = None, scan_layers: bool = True) -> Conversion:
  """Reads a `fmt` checkpoint (see the module docstring) and converts it for clips of clip_shape
  (T, H, W; default: the clip size it was trained on)."""
  if fmt not in _CONVERTERS:
    raise ValueError(f'--from: expected one of {FORMATS}, got {fmt!r}')
  weights, hf_config = read_checkpoint(path)
  conversion = _CONVERTERS[fmt](dict(weights), hf_config, clip_shape, num_heads, path)
  conversion.model_config.scan_layers = scan_layers
  if not scan_layers:
    conversion.backbone = convert_lib.unstack_layers(conversion.backbone)
  video = jax.ShapeDtypeStruct((1, *conversion.clip_shape, 3), jnp.float32)
  template = jax.eval_shape(lambda clip: vivit.ViViT(**conversion.model_config).init(
      jax.random.PRNGKey(0), clip, train=False), video)['params']
  convert_lib.check_shapes(conversion.backbone, convert_lib.plain_params(template), path)
  return conversion
