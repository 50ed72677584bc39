"""Writes tiny checkpoints in the layouts other projects use, for the converter tests.

The layouts were read from the public sources (nothing here is copied from them):
  big_vision .npz (big_vision/models/vit.py, big_vision/utils.py): `np.savez` of the params flattened
    with '/'-joined names; blocks 'Transformer/encoderblock_{i}' with LayerNorm_0,
    MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0/Dense_{0,1}, or one scanned
    'Transformer/encoderblock' whose leaves carry a leading layer axis; top-level 'pos_embedding'
    [1, gh*gw, D] added before the 'cls' token [1, 1, D] is prepended; 'embedding' kernel
    [ph, pw, 3, D]; 'head'. Training checkpoints nest this under 'params/' or 'opt/target/'.
  ViT / AugReg .npz (google-research/vision_transformer, vit_jax/models_vit.py): pre-Linen block
    names LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3 and the position
    embedding at 'Transformer/posembed_input/pos_embedding' [1, 1 + gh*gw, D] added after the
    'cls' token is prepended (so it has a slot for the token).
  Scenic ViViT (scenic/projects/vivit/model.py) in a flax.training.checkpoints msgpack file
    'checkpoint_<step>': the current train state {'opt_state', 'params', 'global_step',
    'model_state', 'rng', 'metadata'} or the older flax.optim one {'optimizer': {'target': params,
    'state': ...}, 'global_step', 'model_state', 'rng', 'accum_train_time'}.
"""
import os

from flax import serialization
import numpy as np

SCENIC_VARIANT_NAMES = {
    'spatio_temporal': 'spacetime',
    'factorised_encoder': 'factorized_encoder',
    'factorised_self_attention': 'factorized_self_attention_block',
    'factorised_dot_product': 'factorized_dot_product_attention',
}


class _Random:
  """Draws parameters of a readable scale, so that numeric tests are not trivially passed."""

  def __init__(self, seed: int):
    self._rng = np.random.default_rng(seed)

  def normal(self, shape, scale: float) -> np.ndarray:
    return (scale * self._rng.standard_normal(shape)).astype(np.float32)

  def dense(self, fan_in_shape, fan_out_shape) -> dict:
    fan_in = int(np.prod(fan_in_shape))
    return {'kernel': self.normal((*fan_in_shape, *fan_out_shape), 1 / np.sqrt(fan_in)),
            'bias': self.normal(fan_out_shape, 0.1)}

  def layer_norm(self, width: int) -> dict:
    return {'scale': 1 + self.normal((width,), 0.1), 'bias': self.normal((width,), 0.1)}

  def attention(self, width: int, num_heads: int) -> dict:
    head_dim = width // num_heads
    params = {name: self.dense((width,), (num_heads, head_dim)) for name in ('query', 'key', 'value')}
    params['out'] = self.dense((num_heads, head_dim), (width,))
    return params

  def mlp(self, width: int, mlp_dim: int) -> dict:
    return {'Dense_0': self.dense((width,), (mlp_dim,)), 'Dense_1': self.dense((mlp_dim,), (width,))}

  def encoder_block(self, width: int, mlp_dim: int, num_heads: int) -> dict:
    """A Linen-named ViT / Scenic encoder block."""
    return {'LayerNorm_0': self.layer_norm(width),
            'MultiHeadDotProductAttention_0': self.attention(width, num_heads),
            'LayerNorm_1': self.layer_norm(width),
            'MlpBlock_0': self.mlp(width, mlp_dim)}

  def factorised_self_attention_block(self, width: int, mlp_dim: int, num_heads: int) -> dict:
    return {'LayerNorm_time': self.layer_norm(width),
            'MultiHeadDotProductAttention_time': self.attention(width, num_heads),
            'LayerNorm_space': self.layer_norm(width),
            'MultiHeadDotProductAttention_space': self.attention(width, num_heads),
            'LayerNorm_mlp': self.layer_norm(width),
            'MlpBlock': self.mlp(width, mlp_dim)}


def flatten(tree: dict, prefix: str = '') -> dict[str, np.ndarray]:
  """{'a': {'b': x}} -> {'a/b': x}, the naming of big_vision's npz files."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten(value, f'{name}/'))
    else:
      flat[name] = value
  return flat


# ---------------------------------------------------------------------------------------------
# Image ViT (big_vision, AugReg).


def image_vit_params(*, width: int = 16, depth: int = 2, mlp_dim: int = 32, num_heads: int = 2,
                     patch: tuple[int, int] = (4, 4), grid: tuple[int, int] = (3, 3),
                     classifier: str = 'token', num_classes: int = 7, seed: int = 0) -> dict:
  """Params of a big_vision ViT (Linen names, unrolled blocks, posemb without a token slot)."""
  rand = _Random(seed)
  params = {
      'embedding': rand.dense((*patch, 3), (width,)),
      'pos_embedding': rand.normal((1, grid[0] * grid[1], width), 0.5),
      'Transformer': {f'encoderblock_{i}': rand.encoder_block(width, mlp_dim, num_heads)
                      for i in range(depth)},
      'head': rand.dense((width,), (num_classes,)),
  }
  params['Transformer']['encoder_norm'] = rand.layer_norm(width)
  if classifier == 'token':
    params['cls'] = rand.normal((1, 1, width), 0.5)
  return params


def write_big_vision_npz(path: str, params: dict, *, layout: str = 'big_vision',
                         prefix: str = '', seed: int = 1) -> dict[str, np.ndarray]:
  """Writes `params` (from image_vit_params) as an .npz in one of the released layouts.

  layout: 'big_vision' (unrolled blocks), 'big_vision_scan' (one stacked 'encoderblock'), or
  'vit_augreg' (pre-Linen block names, posemb in the Transformer with a slot for the token; the
  token and its slot are split at random, only their sum is defined by `params`).
  prefix: '' (released params), 'params/' or 'opt/target/' (big_vision training checkpoints).
  Returns the flat dict written.
  """
  params = {key: value for key, value in params.items()}
  transformer = dict(params['Transformer'])
  depth = sum(key.startswith('encoderblock_') for key in transformer)
  if layout == 'big_vision_scan':
    blocks = [flatten(transformer.pop(f'encoderblock_{i}')) for i in range(depth)]
    transformer['encoderblock'] = {name: np.stack([block[name] for block in blocks])
                                   for name in blocks[0]}
  elif layout == 'vit_augreg':
    pre_linen = {'LayerNorm_0': 'LayerNorm_0', 'MultiHeadDotProductAttention_0':
                 'MultiHeadDotProductAttention_1', 'LayerNorm_1': 'LayerNorm_2',
                 'MlpBlock_0': 'MlpBlock_3'}
    for i in range(depth):
      block = transformer[f'encoderblock_{i}']
      transformer[f'encoderblock_{i}'] = {pre_linen[name]: value for name, value in block.items()}
    posemb = params.pop('pos_embedding')
    if 'cls' in params:
      token_slot = _Random(seed).normal((1, 1, posemb.shape[-1]), 0.5)
      params['cls'] = params['cls'] - token_slot
      posemb = np.concatenate([token_slot, posemb], axis=1)
    transformer['posembed_input'] = {'pos_embedding': posemb}
  elif layout != 'big_vision':
    raise ValueError(f'Unknown layout {layout!r}.')
  params['Transformer'] = transformer
  flat = flatten(params, prefix)
  np.savez(path, **flat)
  return flat


# ---------------------------------------------------------------------------------------------
# Scenic ViViT.


def scenic_vivit_params(variant: str, *, width: int = 16, depth: int = 2, mlp_dim: int = 32,
                        num_heads: int = 2, patch: tuple[int, int, int] = (2, 4, 4),
                        tokens: tuple[int, int, int] = (2, 3, 3), classifier: str = 'token',
                        num_classes: int = 5, temporal_depth: int = 1, temporal_mlp_dim: int = 24,
                        temporal_num_heads: int = 4, seed: int = 0) -> dict:
  """Params of a Scenic ViViT model of our `variant` name ('spatio_temporal', ...).

  patch is (t, h, w) (Scenic's config says (h, w, t); its conv kernel is [t, h, w, 3, D]); tokens
  is the (t, h, w) token grid the learned position embeddings were made for.
  """
  rand = _Random(seed)
  t, h, w = tokens
  has_token = classifier == 'token'
  params = {'embedding': rand.dense((*patch, 3), (width,)),
            'output_projection': rand.dense((width,), (num_classes,))}

  def encoder(num_tokens, make_block, encoder_depth):
    tree = {'posembed_input': {'pos_embedding': rand.normal((1, num_tokens + has_token, width),
                                                            0.5)}}
    tree.update({f'encoderblock_{i}': make_block() for i in range(encoder_depth)})
    tree['encoder_norm'] = rand.layer_norm(width)
    return tree

  if variant == 'factorised_encoder':
    params['SpatialTransformer'] = encoder(
        h * w, lambda: rand.encoder_block(width, mlp_dim, num_heads), depth)
    params['TemporalTransformer'] = encoder(
        t, lambda: rand.encoder_block(width, temporal_mlp_dim, temporal_num_heads),
        temporal_depth)
    if has_token:
      params['cls_SpatialTransformer'] = rand.normal((1, 1, width), 0.5)
      params['cls_TemporalTransformer'] = rand.normal((1, 1, width), 0.5)
    return params
  if has_token and variant != 'spatio_temporal':
    raise ValueError(f'Scenic has no token classifier for {variant}.')
  if variant == 'factorised_self_attention':
    make_block = lambda: rand.factorised_self_attention_block(width, mlp_dim, num_heads)
  elif variant in ('spatio_temporal', 'factorised_dot_product'):
    make_block = lambda: rand.encoder_block(width, mlp_dim, num_heads)
  else:
    raise ValueError(f'Unknown variant {variant!r}.')
  params['Transformer'] = encoder(t * h * w, make_block, depth)
  if has_token:
    params['cls'] = rand.normal((1, 1, width), 0.5)
  return params


def write_scenic_checkpoint(directory: str, params: dict, *, layout: str = 'params',
                            step: int = 100) -> str:
  """Writes `params` as flax.training.checkpoints does for a Scenic train state; returns the file.

  layout: 'params' (optax train state) or 'optimizer' (flax.optim train state).
  """
  momentum_tree = _map_leaves(np.zeros_like, params)
  rng = np.array([0, 42], np.uint32)
  if layout == 'params':
    state = {'opt_state': {'0': {'trace': momentum_tree}, '1': {}},
             'params': params, 'global_step': step, 'model_state': {}, 'rng': rng,
             'metadata': {'chrono': {'accum_train_time': 12.5}}}
  elif layout == 'optimizer':
    param_states = _map_leaves(lambda leaf: {'momentum': leaf}, momentum_tree)
    state = {'optimizer': {'target': params,
                           'state': {'step': step, 'param_states': param_states}},
             'global_step': step, 'model_state': {}, 'rng': rng, 'accum_train_time': 12.5}
  else:
    raise ValueError(f'Unknown layout {layout!r}.')
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'checkpoint_{step}')
  with open(path, 'wb') as file:
    file.write(serialization.msgpack_serialize(state))
  return path


def _map_leaves(fn, tree: dict) -> dict:
  return {key: _map_leaves(fn, value) if isinstance(value, dict) else fn(value)
          for key, value in tree.items()}
