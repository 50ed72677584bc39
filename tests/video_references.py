"""Tiny VideoMAE, V-JEPA 2 and Hugging Face ViViT checkpoints in their own formats, and numpy
statements of their forward passes, for the video-checkpoint converter tests.

The names, shapes and maths were read from the public sources (Hugging Face transformers'
modeling_videomae.py, modeling_vjepa2.py and modeling_vivit.py; the VideoMAE and V-JEPA 2
repositories); nothing here is copied from them. Weights are torch-layout: Linear [out, in],
Conv3d [D, 3, pt, ph, pw], videos [B, T, H, W, 3] as our clips (the references take
[B, T, 3, H, W] or [B, 3, T, H, W]; the permutation is stated in `patch_tokens`).
"""
import collections
import contextlib
import io
import json
import math
import os
import pickle
import sys
import types
import zipfile

import numpy as np

WIDTH, HEADS, MLP, DEPTH, PATCH = 32, 2, 48, 2, (2, 4, 4)


# ---------------------------------------------------------------------------------------------
# Weights, named as each reference names them.


def _draw(rng, shape, scale):
  return (scale * rng.standard_normal(shape)).astype(np.float32)


def vit_blocks(seed: int, *, width=WIDTH, depth=DEPTH, mlp=MLP, key_bias=True):
  """Per-block torch-layout tensors (neutral names), plus the patch embedding and a final norm."""
  rng = np.random.default_rng(seed)
  blocks = []
  for _ in range(depth):
    block = {}
    for name in ('norm1', 'norm2'):
      block[f'{name}.weight'] = 1 + _draw(rng, (width,), 0.1)
      block[f'{name}.bias'] = _draw(rng, (width,), 0.1)
    for name in ('q', 'k', 'v', 'proj'):
      block[f'{name}.weight'] = _draw(rng, (width, width), width ** -0.5)
      block[f'{name}.bias'] = (_draw(rng, (width,), 0.1) if name != 'k' or key_bias
                               else np.zeros(width, np.float32))
    block['fc1.weight'], block['fc1.bias'] = _draw(rng, (mlp, width), width ** -0.5), _draw(rng, (mlp,), 0.1)
    block['fc2.weight'], block['fc2.bias'] = _draw(rng, (width, mlp), mlp ** -0.5), _draw(rng, (width,), 0.1)
    blocks.append(block)
  common = {'patch.weight': _draw(rng, (width, 3, *PATCH), 0.2), 'patch.bias': _draw(rng, (width,), 0.1),
            'norm.weight': 1 + _draw(rng, (width,), 0.1), 'norm.bias': _draw(rng, (width,), 0.1),
            'cls': _draw(rng, (1, 1, width), 0.5), 'head.weight': _draw(rng, (5, width), 0.3),
            'head.bias': _draw(rng, (5,), 0.1)}
  return blocks, common


def hf_videomae_state(blocks, common, *, model: str, bias_names: str = 'new') -> dict:
  """VideoMAEModel / VideoMAEForVideoClassification / VideoMAEForPreTraining names."""
  prefix = '' if model == 'base' else 'videomae.'
  state = {f'{prefix}embeddings.patch_embeddings.projection.weight': common['patch.weight'],
           f'{prefix}embeddings.patch_embeddings.projection.bias': common['patch.bias']}
  for index, block in enumerate(blocks):
    layer = f'{prefix}encoder.layer.{index}.'
    attention = layer + 'attention.attention.'
    for ours, theirs in (('q', 'query'), ('k', 'key'), ('v', 'value')):
      state[f'{attention}{theirs}.weight'] = block[f'{ours}.weight']
    if bias_names == 'new':  # transformers 5
      state[f'{attention}query.bias'], state[f'{attention}value.bias'] = block['q.bias'], block['v.bias']
    else:
      state[f'{attention}q_bias'], state[f'{attention}v_bias'] = block['q.bias'], block['v.bias']
    for ours, theirs in (('proj', 'attention.output.dense'), ('norm1', 'layernorm_before'),
                         ('norm2', 'layernorm_after'), ('fc1', 'intermediate.dense'),
                         ('fc2', 'output.dense')):
      state[f'{layer}{theirs}.weight'], state[f'{layer}{theirs}.bias'] = (
          block[f'{ours}.weight'], block[f'{ours}.bias'])
  if model == 'classification':
    state['fc_norm.weight'], state['fc_norm.bias'] = common['norm.weight'], common['norm.bias']
    state['classifier.weight'], state['classifier.bias'] = common['head.weight'], common['head.bias']
  if model == 'pretraining':  # no mean pooling: a final layernorm; the decoder is dropped
    state['videomae.layernorm.weight'], state['videomae.layernorm.bias'] = (
        common['norm.weight'], common['norm.bias'])
    state['encoder_to_decoder.weight'] = np.ones((8, WIDTH), np.float32)
    state['mask_token'] = np.ones((1, 1, 8), np.float32)
    state['decoder.decoder_layers.0.attention.attention.query.weight'] = np.ones((8, 8), np.float32)
    state['decoder.norm.weight'] = np.ones(8, np.float32)
  return state


def original_videomae_state(blocks, common, *, finetuned: bool) -> dict:
  """VideoMAE / VideoMAE V2 .pth names: finetuned (fc_norm, head) or the pre-training encoder."""
  prefix = '' if finetuned else 'encoder.'
  state = {f'{prefix}patch_embed.proj.weight': common['patch.weight'],
           f'{prefix}patch_embed.proj.bias': common['patch.bias']}
  for index, block in enumerate(blocks):
    layer = f'{prefix}blocks.{index}.'
    state[f'{layer}attn.qkv.weight'] = np.concatenate([block['q.weight'], block['k.weight'],
                                                       block['v.weight']])
    state[f'{layer}attn.q_bias'], state[f'{layer}attn.v_bias'] = block['q.bias'], block['v.bias']
    for name, theirs in (('proj', 'attn.proj'), ('norm1', 'norm1'), ('norm2', 'norm2'),
                         ('fc1', 'mlp.fc1'), ('fc2', 'mlp.fc2')):
      state[f'{layer}{theirs}.weight'], state[f'{layer}{theirs}.bias'] = (
          block[f'{name}.weight'], block[f'{name}.bias'])
  if finetuned:
    state['fc_norm.weight'], state['fc_norm.bias'] = common['norm.weight'], common['norm.bias']
    state['head.weight'], state['head.bias'] = common['head.weight'], common['head.bias']
  else:
    state['encoder.norm.weight'], state['encoder.norm.bias'] = common['norm.weight'], common['norm.bias']
    state['decoder.blocks.0.norm1.weight'] = np.ones(8, np.float32)
    state['encoder_to_decoder.weight'] = np.ones((8, WIDTH), np.float32)
    state['mask_token'] = np.ones((1, 1, 8), np.float32)
  return state


def hf_vjepa2_state(blocks, common) -> dict:
  """VJEPA2Model names (encoder; the predictor is dropped)."""
  state = {'encoder.embeddings.patch_embeddings.proj.weight': common['patch.weight'],
           'encoder.embeddings.patch_embeddings.proj.bias': common['patch.bias'],
           'encoder.layernorm.weight': common['norm.weight'],
           'encoder.layernorm.bias': common['norm.bias'],
           'predictor.layernorm.weight': np.ones(8, np.float32)}
  for index, block in enumerate(blocks):
    layer = f'encoder.layer.{index}.'
    for ours, theirs in (('q', 'attention.query'), ('k', 'attention.key'), ('v', 'attention.value'),
                         ('proj', 'attention.proj'), ('norm1', 'norm1'), ('norm2', 'norm2'),
                         ('fc1', 'mlp.fc1'), ('fc2', 'mlp.fc2')):
      state[f'{layer}{theirs}.weight'], state[f'{layer}{theirs}.bias'] = (
          block[f'{ours}.weight'], block[f'{ours}.bias'])
  return state


def original_vjepa2_checkpoint(blocks, common) -> dict:
  """A V-JEPA 2 training checkpoint: {'encoder', 'target_encoder', 'predictor', 'epoch'}."""
  encoder = {'module.backbone.patch_embed.proj.weight': common['patch.weight'],
             'module.backbone.patch_embed.proj.bias': common['patch.bias'],
             'module.backbone.norm.weight': common['norm.weight'],
             'module.backbone.norm.bias': common['norm.bias']}
  for index, block in enumerate(blocks):
    layer = f'module.backbone.blocks.{index}.'
    encoder[f'{layer}attn.qkv.weight'] = np.concatenate([block[f'{n}.weight'] for n in 'qkv'])
    encoder[f'{layer}attn.qkv.bias'] = np.concatenate([block[f'{n}.bias'] for n in 'qkv'])
    for name, theirs in (('proj', 'attn.proj'), ('norm1', 'norm1'), ('norm2', 'norm2'),
                         ('fc1', 'mlp.fc1'), ('fc2', 'mlp.fc2')):
      encoder[f'{layer}{theirs}.weight'], encoder[f'{layer}{theirs}.bias'] = (
          block[f'{name}.weight'], block[f'{name}.bias'])
  decoy = {name: np.zeros_like(value) for name, value in encoder.items()}  # the online encoder
  return {'encoder': decoy, 'target_encoder': encoder,
          'predictor': {'module.predictor_embed.weight': np.ones((8, WIDTH), np.float32)},
          'epoch': 10}


def hf_vivit_state(blocks, common, *, grid, classification: bool) -> dict:
  """VivitModel / VivitForVideoClassification names."""
  prefix = 'vivit.' if classification else ''
  rng = np.random.default_rng(7)
  state = {f'{prefix}embeddings.cls_token': common['cls'],
           f'{prefix}embeddings.position_embeddings': _draw(rng, (1, 1 + int(np.prod(grid)), WIDTH), 0.5),
           f'{prefix}embeddings.patch_embeddings.projection.weight': common['patch.weight'],
           f'{prefix}embeddings.patch_embeddings.projection.bias': common['patch.bias'],
           f'{prefix}layernorm.weight': common['norm.weight'],
           f'{prefix}layernorm.bias': common['norm.bias']}
  for index, block in enumerate(blocks):
    layer = f'{prefix}encoder.layer.{index}.'
    for ours, theirs in (('q', 'attention.attention.query'), ('k', 'attention.attention.key'),
                         ('v', 'attention.attention.value'), ('proj', 'attention.output.dense'),
                         ('norm1', 'layernorm_before'), ('norm2', 'layernorm_after'),
                         ('fc1', 'intermediate.dense'), ('fc2', 'output.dense')):
      state[f'{layer}{theirs}.weight'], state[f'{layer}{theirs}.bias'] = (
          block[f'{ours}.weight'], block[f'{ours}.bias'])
  if classification:
    state['classifier.weight'], state['classifier.bias'] = common['head.weight'], common['head.bias']
  else:
    state['pooler.dense.weight'] = np.ones((WIDTH, WIDTH), np.float32)
    state['pooler.dense.bias'] = np.zeros(WIDTH, np.float32)
  return state


# ---------------------------------------------------------------------------------------------
# Files.


def write_hf_directory(directory: str, state: dict, config: dict):
  # pylint: disable-next=g-import-not-at-top
  from safetensors.numpy import save_file
  os.makedirs(directory, exist_ok=True)
  save_file({name: np.ascontiguousarray(value) for name, value in state.items()},
            os.path.join(directory, 'model.safetensors'))
  with open(os.path.join(directory, 'config.json'), 'w') as file:
    json.dump(config, file)


@contextlib.contextmanager
def _fake_torch():
  """Stand-ins for the torch globals torch.save's pickles name, so the test writes one without
  torch installed: pickle stores a global by module and name, which these carry."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  class FloatStorage:  # pylint: disable=too-few-public-methods
    pass

  def _rebuild_tensor_v2(*args):
    raise AssertionError('never called when writing')

  FloatStorage.__module__, FloatStorage.__qualname__ = 'torch', 'FloatStorage'
  _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = 'torch._utils', '_rebuild_tensor_v2'
  torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2  # pylint: disable=protected-access
  torch._utils = utils  # pylint: disable=protected-access
  saved = {name: sys.modules.get(name) for name in ('torch', 'torch._utils')}
  sys.modules['torch'], sys.modules['torch._utils'] = torch, utils
  try:
    yield FloatStorage, _rebuild_tensor_v2
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name)
      else:
        sys.modules[name] = module


class _StorageRef:
  def __init__(self, key: str, buffer: np.ndarray):
    self.key, self.buffer = key, buffer


class _Tensor:
  """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, grad, hooks)."""

  def __init__(self, rebuild, storage, offset, size, stride):
    self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())
    self.rebuild = rebuild

  def __reduce__(self):
    return self.rebuild, self.args


def write_torch_file(path: str, obj, *, transpose_some: bool = False):
  """torch.save's zip layout for obj (nested dicts of float32 arrays and plain values).

  With transpose_some, every 2D array is stored as a transposed (non-contiguous) view of its
  storage, and pairs of 1D arrays share one storage at an offset, as torch does for views.
  """
  storages = {}
  with _fake_torch() as (float_storage, rebuild):

    def tensor(array):
      array = np.asarray(array, np.float32)
      key = str(len(storages))
      if transpose_some and array.ndim == 2:
        buffer = np.ascontiguousarray(array.T).reshape(-1)
        stride = (1, array.shape[0])
        offset = 0
      elif transpose_some and array.ndim == 1:
        buffer = np.concatenate([np.full(3, 99.0, np.float32), array])
        offset, stride = 3, (1,)
      else:
        buffer, offset = array.reshape(-1), 0
        stride = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
      storages[key] = _StorageRef(key, buffer)
      return _Tensor(rebuild, storages[key], offset, array.shape, stride)

    def convert(value):
      if isinstance(value, dict):
        return collections.OrderedDict((k, convert(v)) for k, v in value.items())
      if isinstance(value, np.ndarray):
        return tensor(value)
      return value

    class Pickler(pickle.Pickler):
      def persistent_id(self, obj):  # pylint: disable=redefined-outer-name
        if isinstance(obj, _StorageRef):
          return ('storage', float_storage, obj.key, 'cpu', obj.buffer.size)
        return None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump(convert(obj))
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as archive:
    archive.writestr('archive/data.pkl', data.getvalue())
    archive.writestr('archive/byteorder', 'little')
    archive.writestr('archive/version', '3\n')
    for key, storage in storages.items():
      archive.writestr(f'archive/data/{key}', storage.buffer.astype('<f4').tobytes())


# ---------------------------------------------------------------------------------------------
# The reference forward passes, stated in numpy.


def layer_norm(x, weight, bias, epsilon):
  mean = x.mean(-1, keepdims=True)
  variance = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(variance + epsilon) * weight + bias


_erf = np.vectorize(math.erf)


def gelu(x, kind):
  if kind == 'exact':
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def patch_tokens(video, weight, bias):
  """Conv3d with stride = kernel on [B, 3, T, H, W] (the references permute [B, T, 3, H, W] to it),
  flattened to [B, t*h*w, D] in (t, h, w) order."""
  x = video.transpose(0, 4, 1, 2, 3).astype(np.float64)  # [B, 3, T, H, W]
  b, c, frames, height, width = x.shape
  d, _, pt, ph, pw = weight.shape
  t, h, w = frames // pt, height // ph, width // pw
  out = np.zeros((b, d, t, h, w))
  for i in range(t):
    for j in range(h):
      for k in range(w):
        window = x[:, :, i * pt:(i + 1) * pt, j * ph:(j + 1) * ph, k * pw:(k + 1) * pw]
        out[:, :, i, j, k] = np.einsum('bcxyz,dcxyz->bd', window, weight) + bias
  return out.reshape(b, d, t * h * w).transpose(0, 2, 1), (t, h, w)


def vjepa2_rotate(x, positions):
  """V-JEPA 2's rotation of [B, heads, N, part] by one coordinate of each token."""
  part = x.shape[-1]
  omega = 1.0 / 10000 ** (np.arange(part // 2) / (part / 2.0))
  freq = positions[:, None] * omega  # [N, part/2]
  sin, cos = np.concatenate([np.sin(freq)] * 2, -1), np.concatenate([np.cos(freq)] * 2, -1)
  pairs = x.reshape(*x.shape[:-1], part // 2, 2)
  turned = np.stack([-pairs[..., 1], pairs[..., 0]], -1).reshape(x.shape)
  return x * cos + turned * sin


def vjepa2_rope(x, grid):
  """[B, heads, N, K] rotated on frame, row and column; the channels left over kept."""
  _, gh, gw = grid
  ids = np.arange(x.shape[2])
  frame = ids // (gh * gw)
  row = (ids - frame * gh * gw) // gw
  column = ids - frame * gh * gw - row * gw
  part = 2 * ((x.shape[-1] // 3) // 2)
  pieces = [vjepa2_rotate(x[..., i * part:(i + 1) * part], position)
            for i, position in enumerate((frame, row, column))]
  return np.concatenate(pieces + [x[..., 3 * part:]], -1)


def encoder_forward(tokens, blocks, *, heads, epsilon, gelu_kind, rope_grid=None):
  """Pre-LN blocks: x + proj(attention(norm1 x)); x + fc2(gelu(fc1(norm2 x)))."""
  x = tokens
  b, n, d = x.shape
  k = d // heads
  for block in blocks:
    y = layer_norm(x, block['norm1.weight'], block['norm1.bias'], epsilon)
    q, key, v = ((y @ block[f'{name}.weight'].T + block[f'{name}.bias']).reshape(b, n, heads, k)
                 .transpose(0, 2, 1, 3) for name in ('q', 'k', 'v'))
    if rope_grid is not None:
      q, key = vjepa2_rope(q, rope_grid), vjepa2_rope(key, rope_grid)
    logits = q @ key.transpose(0, 1, 3, 2) * k ** -0.5
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
    x = x + attended @ block['proj.weight'].T + block['proj.bias']
    y = layer_norm(x, block['norm2.weight'], block['norm2.bias'], epsilon)
    x = x + gelu(y @ block['fc1.weight'].T + block['fc1.bias'], gelu_kind) @ block['fc2.weight'].T + block['fc2.bias']
  return x


def sinusoid_table(num_tokens, width):
  """VideoMAE's get_sinusoid_encoding_table, restated: position / 10000^(2 (j // 2) / D)."""
  table = np.array([[position / np.power(10000, 2 * (j // 2) / width) for j in range(width)]
                    for position in range(num_tokens)])
  table[:, 0::2], table[:, 1::2] = np.sin(table[:, 0::2]), np.cos(table[:, 1::2])
  return table[None]


def videomae_forward(video, blocks, common, *, epsilon, mean_pooling: bool):
  """(last_hidden_state, pooled fc_norm(mean) or None, logits or None)."""
  tokens, _ = patch_tokens(video, common['patch.weight'], common['patch.bias'])
  tokens = tokens + sinusoid_table(tokens.shape[1], tokens.shape[2])
  x = encoder_forward(tokens, blocks, heads=HEADS, epsilon=epsilon, gelu_kind='exact')
  if not mean_pooling:
    return layer_norm(x, common['norm.weight'], common['norm.bias'], epsilon), None, None
  pooled = layer_norm(x.mean(1), common['norm.weight'], common['norm.bias'], epsilon)
  return x, pooled, pooled @ common['head.weight'].T + common['head.bias']


def vjepa2_forward(video, blocks, common, *, epsilon=1e-6):
  tokens, grid = patch_tokens(video, common['patch.weight'], common['patch.bias'])
  x = encoder_forward(tokens, blocks, heads=HEADS, epsilon=epsilon, gelu_kind='exact', rope_grid=grid)
  return layer_norm(x, common['norm.weight'], common['norm.bias'], epsilon)


def vivit_forward(video, blocks, common, position_embeddings, *, epsilon=1e-6):
  """(last_hidden_state [B, 1 + N, D] after the final layernorm, logits from token 0)."""
  tokens, _ = patch_tokens(video, common['patch.weight'], common['patch.bias'])
  cls = np.broadcast_to(common['cls'], (tokens.shape[0], 1, tokens.shape[2]))
  x = np.concatenate([cls, tokens], 1) + position_embeddings
  x = encoder_forward(x, blocks, heads=HEADS, epsilon=epsilon, gelu_kind='tanh')
  x = layer_norm(x, common['norm.weight'], common['norm.bias'], epsilon)
  return x, x[:, 0] @ common['head.weight'].T + common['head.bias']
