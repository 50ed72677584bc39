"""Other projects' checkpoints -> our ViViT params.

Two sources:
  * image ViTs as .npz (big_vision, and the ViT / AugReg releases of google-research/
    vision_transformer): `load_big_vision_vit` reads one, `init_from_image_vit` inflates it into a
    video backbone of any variant, as the ViViT paper initialises from an ImageNet-21k ViT;
  * Scenic ViViT train states written by flax.training.checkpoints: `load_scenic_checkpoint` reads
    one, `infer_config_from_scenic` recovers the model config, `scenic_vivit_to_ours` renames.

Our layout is in models/vivit.py's module docstring. Everything here works on nested dicts of numpy
arrays; the converted tree is float32.
"""
from collections.abc import Mapping
import copy
import os
import re

from absl import logging
from flax import serialization
import flax.linen as nn
from flax.training import checkpoints as flax_checkpoints
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vivit_cofinetune import param_paths
from vivit_cofinetune.models import vivit

# Names inside one encoder block: the ViT / Scenic (Linen) names -> ours.
_BLOCK_NAMES = {'LayerNorm_0': 'attention_norm', 'MultiHeadDotProductAttention_0': 'attention',
                'LayerNorm_1': 'mlp_norm', 'MlpBlock_0': 'mlp'}
# Scenic's factorised self-attention block (temporal attention first, its default order).
_FACTORISED_BLOCK_NAMES = {
    'LayerNorm_time': 'temporal_attention_norm',
    'MultiHeadDotProductAttention_time': 'temporal_attention',
    'LayerNorm_space': 'spatial_attention_norm',
    'MultiHeadDotProductAttention_space': 'spatial_attention',
    'LayerNorm_mlp': 'mlp_norm', 'MlpBlock': 'mlp'}
_MLP_NAMES = {'Dense_0': 'hidden', 'Dense_1': 'output'}
_SCENIC_ENCODERS = {'Transformer': 'encoder', 'SpatialTransformer': 'spatial_encoder',
                    'TemporalTransformer': 'temporal_encoder'}
_CHECKPOINT_STEP = re.compile(r'^checkpoint_(-?\d+(?:\.\d+)?)$')


class ConversionError(ValueError):
  """A checkpoint does not fit the layout or the model it is converted to."""


# ---------------------------------------------------------------------------------------------
# Small tree helpers.


def plain_params(tree):
  """Nested plain dicts of arrays (boxed logical-partitioning metadata removed)."""
  tree = nn.meta.unbox(tree)
  if hasattr(tree, 'items'):
    return {key: plain_params(value) for key, value in tree.items()}
  return tree


def _to_numpy_tree(tree) -> dict:
  """Nested plain dicts of float32 numpy arrays (unboxes flax partitioning metadata)."""
  return _map_leaves(lambda leaf: np.asarray(leaf, np.float32), plain_params(tree))


def _map_leaves(fn, tree):
  if isinstance(tree, Mapping):
    return {key: _map_leaves(fn, value) for key, value in tree.items()}
  return fn(tree)


def _get(tree: Mapping, name: str, source: str):
  """tree['a']['b'] for name 'a/b', or a ConversionError naming the checkpoint and the param."""
  node = tree
  for part in name.split('/'):
    if not isinstance(node, Mapping) or part not in node:
      available = sorted(node) if isinstance(node, Mapping) else type(node).__name__
      raise ConversionError(f'{source}: missing parameter {name!r} (at {part!r}, found {available})')
    node = node[part]
  return node


def _rename(tree: Mapping, names: Mapping[str, str], source: str) -> dict:
  """Renames the keys of `tree` exactly: every key must be known and every name present."""
  unknown = sorted(set(tree) - set(names))
  missing = sorted(set(names) - set(tree))
  if unknown or missing:
    raise ConversionError(f'{source}: expected entries {sorted(names)}, found {sorted(tree)} '
                          f'(unexpected {unknown}, missing {missing})')
  return {ours: tree[theirs] for theirs, ours in names.items()}


def check_shapes(converted: Mapping, template: Mapping, source: str):
  """Every param of `template` present with the same shape in `converted`, and nothing else."""
  converted_flat, template_flat = param_paths.flatten(converted), param_paths.flatten(template)
  missing = sorted(set(template_flat) - set(converted_flat))
  extra = sorted(set(converted_flat) - set(template_flat))
  if missing or extra:
    raise ConversionError(f'{source}: converted params do not match the model: missing {missing}, '
                          f'unexpected {extra}')
  for name, value in template_flat.items():
    if converted_flat[name].shape != value.shape:
      raise ConversionError(f'{source}: parameter {name!r} converts to shape '
                            f'{converted_flat[name].shape}, the model expects {value.shape}')


def _layer_subtrees(params: dict, stacked: bool):
  """Yields the dicts (at any depth) holding scanned 'layers' or unrolled 'layers_<i>' entries."""
  if not isinstance(params, dict):
    return
  if ('layers' in params) if stacked else ('layers_0' in params):
    yield params
  for value in params.values():
    yield from _layer_subtrees(value, stacked)


def stack_layers(params: Mapping) -> dict:
  """Params of a scan_layers=False model -> the same params for scan_layers=True (plain dicts).

  Every 'layers_<i>' family, at any depth, becomes one 'layers' entry whose leaves have a leading
  layer axis.
  """
  params = plain_params(params)
  for tree in list(_layer_subtrees(params, stacked=False)):
    names = sorted((key for key in tree if re.fullmatch(r'layers_\d+', key)),
                   key=lambda key: int(key[len('layers_'):]))
    flat = [param_paths.flatten(tree.pop(name)) for name in names]
    tree['layers'] = param_paths.unflatten({path: np.stack([layer[path] for layer in flat])
                                            for path in flat[0]})
  return params


def unstack_layers(params: Mapping) -> dict:
  """Params of a scan_layers=True model -> the same params for scan_layers=False (plain dicts)."""
  params = plain_params(params)
  for tree in list(_layer_subtrees(params, stacked=True)):
    flat = param_paths.flatten(tree.pop('layers'))
    count = next(iter(flat.values())).shape[0]
    for index in range(count):
      tree[f'layers_{index}'] = param_paths.unflatten(
          {path: value[index] for path, value in flat.items()})
  return params


def _stack(layers: list[dict], scan_layers: bool) -> dict:
  """Per-layer trees -> our 'layers' (leading layer axis) or 'layers_<i>' entries."""
  unrolled = {f'layers_{index}': layer for index, layer in enumerate(layers)}
  return stack_layers(unrolled) if scan_layers else unrolled


def _unstack(encoder: Mapping, source: str) -> list[dict]:
  """Our encoder's layers, stacked or not, as a list of per-layer trees."""
  unrolled = unstack_layers({name: value for name, value in encoder.items()
                             if name == 'layers' or name.startswith('layers_')})
  if not unrolled:
    raise ConversionError(f'{source}: model encoder has no layers (entries {sorted(encoder)})')
  return [unrolled[f'layers_{index}'] for index in range(len(unrolled))]


def _replace_layers(encoder: dict, layers: list[dict], scan_layers: bool):
  """Puts `layers` into our encoder tree in place of whatever layers it had."""
  for name in [key for key in encoder if key.startswith('layers')]:
    del encoder[name]
  encoder.update(_stack(layers, scan_layers))


def _numbered(tree: Mapping, prefix: str) -> list:
  """tree[prefix + '0'], tree[prefix + '1'], ... (all of them, in order)."""
  count = sum(re.fullmatch(re.escape(prefix) + r'\d+', key) is not None for key in tree)
  return [tree[f'{prefix}{index}'] for index in range(count)]


# ---------------------------------------------------------------------------------------------
# Shared numerics: patch-kernel inflation and position-embedding resizing.


def inflate_patch_kernel(kernel: np.ndarray, frames: int, method: str) -> np.ndarray:
  """Image patch kernel [ph, pw, 3, D] -> tubelet kernel [frames, ph, pw, 3, D].

  'central_frame': the image kernel on the central slice (index frames // 2), zeros elsewhere;
  'average': kernel / frames on every slice. Both give the image features on a static video.
  """
  if method == 'central_frame':
    inflated = np.zeros((frames, *kernel.shape), kernel.dtype)
    inflated[frames // 2] = kernel
    return inflated
  if method == 'average':
    return np.repeat(kernel[None] / frames, frames, axis=0)
  raise ValueError(f"kernel_init: expected 'central_frame' or 'average', got {method!r}")


def resize_grid(grid: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
  """Linear resize of [*axes, D] (e.g. [h, w, D] or [t, h, w, D]) to [*size, D], corners aligned.

  Corner-aligned linear interpolation is what big_vision and Scenic use (scipy.ndimage.zoom with
  order=1) for position embeddings; written here in numpy because scipy is not a dependency. It is
  separable: one interpolation matrix per axis.
  """
  def weights(old: int, new: int):
    """Interpolation matrix [new, old] along one axis."""
    position = np.arange(new) * ((old - 1) / (new - 1)) if new > 1 else np.zeros(1)
    low = np.clip(np.floor(position).astype(int), 0, old - 1)
    high = np.minimum(low + 1, old - 1)
    fraction = position - low
    matrix = np.zeros((new, old))
    np.add.at(matrix, (np.arange(new), low), 1 - fraction)
    np.add.at(matrix, (np.arange(new), high), fraction)
    return matrix

  resized = grid.astype(np.float64)
  for axis, new in enumerate(size):
    resized = np.moveaxis(np.tensordot(weights(grid.shape[axis], new), resized, axes=(1, axis)),
                          0, axis)
  return resized.astype(grid.dtype)


def _square(num_tokens: int, what: str) -> tuple[int, int]:
  side = int(round(np.sqrt(num_tokens)))
  if side * side != num_tokens:
    raise ConversionError(f'{what}: {num_tokens} position embeddings do not form a square grid; '
                          'pass token_grid=(t, h, w)')
  return side, side


# ---------------------------------------------------------------------------------------------
# Image ViT .npz files.


def load_big_vision_vit(path: str) -> dict:
  """Reads an image-ViT .npz into big_vision's current layout (nested numpy dict).

  Accepts big_vision files (unrolled 'encoderblock_<i>' or scanned 'encoderblock'; bare params or
  nested under 'params/' or 'opt/target/') and the ViT / AugReg releases (pre-Linen block names,
  position embedding at Transformer/posembed_input with a slot for the class token). A suffix
  'file.npz:img' selects a sub-model, as big_vision does for two-tower checkpoints.
  Returns {'embedding': {'kernel' [ph, pw, 3, D], 'bias'}, 'pos_embedding' [1, gh*gw, D] (no
  class-token slot: it is folded into 'cls'), 'cls' [1, 1, D] (if any), 'Transformer':
  {'encoderblock_<i>': {LayerNorm_0, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0},
  'encoder_norm'}, and 'head' / 'pre_logits' if present}, all float32.
  """
  match = re.fullmatch(r'(.*?\.npz)(?::([\w/]+))?', str(path))
  file, submodel = (match.group(1), match.group(2)) if match else (str(path), None)
  if not os.path.exists(file):
    raise FileNotFoundError(f'load_big_vision_vit: no such file {file}')
  with np.load(file, allow_pickle=False) as npz:
    flat = {name: _recover_dtype(npz[name]) for name in npz.files}
  params = param_paths.unflatten(flat)
  for prefix in ('params', 'opt/target'):
    if _has_path(params, prefix):
      params = _get(params, prefix, file)
      break
  if submodel:
    params = _get(params, submodel, f'{file}:{submodel}')
  return _normalise_vit(params, file)


def _recover_dtype(array: np.ndarray) -> np.ndarray:
  """numpy saves bfloat16 as 2-byte void; read it back, then work in float32."""
  if array.dtype.type is np.void and array.dtype.itemsize == 2:
    array = array.view(jnp.bfloat16)
  return np.asarray(array, np.float32)


def _has_path(tree: Mapping, name: str) -> bool:
  node = tree
  for part in name.split('/'):
    if not isinstance(node, Mapping) or part not in node:
      return False
    node = node[part]
  return True


def _normalise_vit(params: dict, source: str) -> dict:
  """Any supported ViT layout -> big_vision's current one (see load_big_vision_vit)."""
  params = dict(flax_checkpoints.convert_pre_linen(params))  # no-op on Linen names
  if 'Transformer' not in params or 'embedding' not in params:
    raise ConversionError(f'{source}: not an image ViT checkpoint: expected entries '
                          f"'Transformer' and 'embedding', found {sorted(params)}")
  transformer = dict(params['Transformer'])
  if 'encoderblock' in transformer:  # scanned: every leaf has a leading layer axis
    flat = param_paths.flatten(transformer.pop('encoderblock'))
    depth = next(iter(flat.values())).shape[0]
    for index in range(depth):
      transformer[f'encoderblock_{index}'] = param_paths.unflatten(
          {name: value[index] for name, value in flat.items()})
  had_token_slot = 'posembed_input' in transformer  # the old layout adds it after the token
  if had_token_slot:
    params['pos_embedding'] = transformer.pop('posembed_input')['pos_embedding']
  elif 'pos_embedding' in transformer:  # big_vision files of 2021 kept it in the Transformer
    params['pos_embedding'] = transformer.pop('pos_embedding')
  params['Transformer'] = transformer
  if 'pos_embedding' not in params:
    raise ConversionError(f'{source}: no learned position embedding (pos_embedding); sin-cos '
                          'position embeddings cannot be converted to learned ones')
  posemb = params['pos_embedding']
  grid_tokens = posemb.shape[1] - 1
  if 'cls' in params and (had_token_slot or int(np.sqrt(grid_tokens)) ** 2 == grid_tokens):
    params['cls'] = params['cls'] + posemb[:, :1]
    params['pos_embedding'] = posemb[:, 1:]
  for index, block in enumerate(_numbered(transformer, 'encoderblock_')):
    _rename(block, _BLOCK_NAMES, f'{source}: Transformer/encoderblock_{index}')  # checks names
  return params


def init_from_image_vit(vit_params: Mapping, our_params_template: Mapping,
                        model_config: Mapping, *, kernel_init: str = 'central_frame',
                        temporal_attention_init: str = 'zero',
                        temporal_encoder_init: str = 'fresh',
                        token_grid: tuple[int, int, int] | None = None,
                        source: str = 'image ViT') -> dict:
  """Video backbone params initialised from an image ViT (from load_big_vision_vit).

  our_params_template: our backbone params (a fresh init: arrays) for the clip size used,
    e.g. `ViViT(**config).init(rng, video, train=False)['params']`; it supplies the shapes and the
    params the ViT has no counterpart for (which keep their fresh values).
  kernel_init: 'central_frame' or 'average' inflation of the patch kernel (see inflate_patch_kernel).
  temporal_attention_init ('factorised_self_attention'): 'spatial' copies the ViT attention (and its
    LayerNorm) into the temporal attention; 'zero' zeroes the temporal attention's output projection,
    so each block starts as the image block (query/key/value keep their fresh values: with the
    value projection zero too, neither would get a gradient).
  temporal_encoder_init ('factorised_encoder'): 'fresh' keeps the template's temporal encoder;
    'vit' copies the ViT's first num_temporal_layers blocks and final LayerNorm into it.
  token_grid: the (t, h, w) token grid of the template; inferred when the template's position
    embedding has the ViT's spatial grid or a square one.
  The ViT position embeddings are resized (corner-aligned bilinear) to the spatial grid and repeated
  over time; the class token is kept if both have one, dropped if only the ViT has one, and left
  fresh if only we have one. The classification head is not converted (heads start fresh).
  """
  config = dict(model_config)
  template = _to_numpy_tree(our_params_template)
  vit_params = _map_leaves(lambda leaf: np.asarray(leaf, np.float32), vit_params)
  variant = config['variant']
  if temporal_attention_init not in ('spatial', 'zero'):
    raise ValueError(f"temporal_attention_init: expected 'spatial' or 'zero', "
                     f'got {temporal_attention_init!r}')
  if temporal_encoder_init not in ('fresh', 'vit'):
    raise ValueError(f"temporal_encoder_init: expected 'fresh' or 'vit', got {temporal_encoder_init!r}")
  vit_blocks = [_rename(block, _BLOCK_NAMES, f'{source}: Transformer/encoderblock_{index}')
                for index, block in enumerate(_numbered(vit_params['Transformer'], 'encoderblock_'))]
  vit_blocks = [{**block, 'mlp': _rename(block['mlp'], _MLP_NAMES, f'{source}: MlpBlock_0')}
                for block in vit_blocks]
  if len(vit_blocks) != config['num_layers']:
    raise ConversionError(f'{source}: the ViT has {len(vit_blocks)} layers, the model '
                          f"num_layers={config['num_layers']}")

  converted = copy.deepcopy(template)
  kernel = _get(vit_params, 'embedding/kernel', source)
  template_kernel = _get(template, 'embedding/kernel', 'model')
  if template_kernel.ndim == 5:
    kernel = inflate_patch_kernel(kernel, template_kernel.shape[0], kernel_init)
  converted['embedding'] = {'kernel': kernel, 'bias': _get(vit_params, 'embedding/bias', source)}

  encoder_name = 'spatial_encoder' if variant == 'factorised_encoder' else 'encoder'
  encoder = converted[encoder_name]
  if variant == 'factorised_self_attention':
    template_layers = _unstack(template[encoder_name], 'model')
    layers = [_factorised_layer_from_vit(vit_block, template_layer, temporal_attention_init)
              for vit_block, template_layer in zip(vit_blocks, template_layers)]
  else:
    layers = vit_blocks
  _replace_layers(encoder, layers, config.get('scan_layers', True))
  encoder['encoder_norm'] = _get(vit_params, 'Transformer/encoder_norm', source)
  if 'cls' in encoder and 'cls' in vit_params:
    encoder['cls'] = vit_params['cls']
  if 'pos_embedding' in encoder:
    encoder['pos_embedding'] = _video_position_embedding(
        vit_params['pos_embedding'], encoder['pos_embedding'], has_cls='cls' in encoder,
        spatial_only=variant == 'factorised_encoder', token_grid=token_grid,
        vit_has_cls='cls' in vit_params, source=source)

  if variant == 'factorised_encoder' and temporal_encoder_init == 'vit':
    temporal = converted['temporal_encoder']
    count = len(_unstack(template['temporal_encoder'], 'model'))
    _replace_layers(temporal, copy.deepcopy(vit_blocks[:count]), config.get('scan_layers', True))
    temporal['encoder_norm'] = copy.deepcopy(encoder['encoder_norm'])
  check_shapes(converted, template, source)
  return converted


def _factorised_layer_from_vit(vit_block: dict, template_layer: dict,
                               temporal_attention_init: str) -> dict:
  """A factorised self-attention layer whose spatial half is the ViT block (see init_from_image_vit)."""
  layer = dict(template_layer, spatial_attention_norm=vit_block['attention_norm'],
               spatial_attention=vit_block['attention'], mlp_norm=vit_block['mlp_norm'],
               mlp=vit_block['mlp'])
  if temporal_attention_init == 'spatial':
    # The attention weights were trained on the output of this LayerNorm: copy both.
    layer['temporal_attention_norm'] = copy.deepcopy(vit_block['attention_norm'])
    layer['temporal_attention'] = copy.deepcopy(vit_block['attention'])
  else:
    out = layer['temporal_attention']['out']
    layer['temporal_attention'] = dict(
        layer['temporal_attention'],
        out={'kernel': np.zeros_like(out['kernel']), 'bias': np.zeros_like(out['bias'])})
  return layer


def _video_position_embedding(vit_posemb: np.ndarray, template_posemb: np.ndarray, *,
                              has_cls: bool, spatial_only: bool, token_grid, vit_has_cls: bool,
                              source: str) -> np.ndarray:
  """ViT posemb [1, gh*gw, D] -> ours [1, c + t*h*w, D] (resized to h, w; repeated t times).

  The class-token slot is zero when the ViT had a token (its slot is already folded into 'cls'), and
  keeps the template's fresh value when only we have a token.
  """
  vit_grid = _square(vit_posemb.shape[1], source)
  num_tokens = template_posemb.shape[1] - int(has_cls)
  if token_grid is not None:
    t, h, w = token_grid
    if spatial_only:
      t = 1
  elif spatial_only:
    t, (h, w) = 1, _square(num_tokens, 'model spatial position embedding')
  elif num_tokens % (vit_grid[0] * vit_grid[1]) == 0:
    t, (h, w) = num_tokens // (vit_grid[0] * vit_grid[1]), vit_grid
  else:
    raise ConversionError(f'{source}: cannot tell the model token grid from its {num_tokens} '
                          f'position embeddings (the ViT grid is {vit_grid}); pass token_grid=(t, h, w)')
  if t * h * w != num_tokens:
    raise ConversionError(f'{source}: token_grid {(t, h, w)} has {t * h * w} tokens, the model '
                          f'position embedding {num_tokens}')
  grid = vit_posemb[0].reshape(*vit_grid, -1)
  if (h, w) != vit_grid:
    logging.info('%s: resizing position embeddings from %s to %s', source, vit_grid, (h, w))
    grid = resize_grid(grid, (h, w))
  tokens = np.tile(grid.reshape(1, h * w, -1), (1, t, 1))
  if has_cls:
    slot = np.zeros_like(template_posemb[:, :1]) if vit_has_cls else template_posemb[:, :1]
    tokens = np.concatenate([slot, tokens], axis=1)
  return tokens


# ---------------------------------------------------------------------------------------------
# Scenic ViViT checkpoints.


def load_scenic_checkpoint(path: str) -> dict:
  """Params (nested numpy dict) of a Scenic train state written by flax.training.checkpoints.

  path: a 'checkpoint_<step>' file (msgpack) or directory (Orbax), or a directory holding them (the
  latest step is read). Train-state layouts: current {'params': ...} (optax) and older
  {'optimizer': {'target': ...}} (flax.optim, whose oldest form nests 'params' and uses pre-Linen
  names).
  """
  path = str(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'load_scenic_checkpoint: no such file or directory {path}')
  if os.path.isdir(path) and not _is_orbax_directory(path):
    steps = [(float(match.group(1)), name) for name in os.listdir(path)
             if (match := _CHECKPOINT_STEP.match(name))]
    if not steps:
      raise FileNotFoundError(f'load_scenic_checkpoint: no checkpoint_<step> in {path}')
    path = os.path.join(path, max(steps)[1])
  if os.path.isdir(path):
    state = ocp.PyTreeCheckpointer().restore(os.path.abspath(path))
  else:
    with open(path, 'rb') as file:
      state = serialization.msgpack_restore(file.read())
  if not isinstance(state, Mapping):
    raise ConversionError(f'{path}: not a train state (got {type(state).__name__})')
  if 'params' in state:
    params = state['params']
  elif _has_path(state, 'optimizer/target'):
    params = state['optimizer']['target']
    if 'params' in params:
      params = flax_checkpoints.convert_pre_linen(params['params'])
  else:
    raise ConversionError(f"{path}: expected a train state with 'params' or 'optimizer/target', "
                          f'found entries {sorted(state)}')
  return _map_leaves(lambda leaf: np.asarray(leaf, np.float32), dict(params))


def _is_orbax_directory(path: str) -> bool:
  return any(os.path.exists(os.path.join(path, name))
             for name in ('_METADATA', '_CHECKPOINT_METADATA', 'manifest.ocdbt', 'checkpoint'))


def infer_config_from_scenic(scenic_params: Mapping, variant: str | None = None,
                             source: str = 'Scenic checkpoint') -> ml_collections.ConfigDict:
  """Our model config for a Scenic ViViT: sizes from shapes, variant and classifier from names.

  The spatio-temporal and factorised dot-product models have identical parameter names (without a
  class token); for those pass `variant`.
  """
  named_variant = _scenic_variant_from_names(scenic_params, source)
  if variant is None:
    if named_variant is None:
      raise ConversionError(f'{source}: the parameter names fit both spatio_temporal and '
                            'factorised_dot_product; pass --variant (variant=...)')
    variant = named_variant
  elif variant not in vivit.VARIANTS:
    raise ValueError(f'variant: expected one of {vivit.VARIANTS}, got {variant!r}')
  elif named_variant not in (None, variant) or (named_variant is None and variant not in (
      'spatio_temporal', 'factorised_dot_product')):
    raise ConversionError(f'{source}: variant {variant!r} was asked for but the parameter names '
                          f'are those of {named_variant or "spatio_temporal/factorised_dot_product"}')
  encoder_key = 'SpatialTransformer' if variant == 'factorised_encoder' else 'Transformer'
  encoder = _get(scenic_params, encoder_key, source)
  blocks = _numbered(encoder, 'encoderblock_')
  if not blocks:
    raise ConversionError(f'{source}: {encoder_key} has no encoderblock_<i> entries')
  attention_key = ('MultiHeadDotProductAttention_space' if variant == 'factorised_self_attention'
                   else 'MultiHeadDotProductAttention_0')
  mlp_key = 'MlpBlock' if variant == 'factorised_self_attention' else 'MlpBlock_0'
  hidden_size, num_heads, _ = _get(blocks[0], f'{attention_key}/query/kernel', source).shape
  mlp_dim = _get(blocks[0], f'{mlp_key}/Dense_0/kernel', source).shape[1]
  kernel = _get(scenic_params, 'embedding/kernel', source)
  patch_size = kernel.shape[:3] if kernel.ndim == 5 else (1, *kernel.shape[:2])
  has_cls = any(key in scenic_params for key in ('cls', 'cls_SpatialTransformer'))
  if 'posembed_input' not in encoder:
    raise ConversionError(f'{source}: no learned position embeddings; Scenic sin-cos or absent ones '
                          'cannot be told apart from the params: pass --config with the model')
  overrides = dict(
      variant=variant, hidden_size=int(hidden_size), num_layers=len(blocks), mlp_dim=int(mlp_dim),
      num_heads=int(num_heads), patch_size=tuple(int(size) for size in patch_size),
      classifier='token' if has_cls else 'mean', position_embedding='learned',
      patch_embedding='tubelet' if kernel.ndim == 5 else 'frame_2d')
  if variant == 'factorised_encoder':
    overrides['num_temporal_layers'] = len(_numbered(
        _get(scenic_params, 'TemporalTransformer', source), 'encoderblock_'))
  return vivit.vivit_config('B/16x2', **overrides)


def _scenic_variant_from_names(scenic_params: Mapping, source: str) -> str | None:
  """Our variant from Scenic's names, or None where they cannot tell (see infer_config_from_scenic)."""
  if 'SpatialTransformer' in scenic_params:
    return 'factorised_encoder'
  blocks = _numbered(_get(scenic_params, 'Transformer', source), 'encoderblock_')
  if blocks and 'MultiHeadDotProductAttention_time' in blocks[0]:
    return 'factorised_self_attention'
  if 'cls' in scenic_params:  # Scenic's factorised dot-product model has no class token
    return 'spatio_temporal'
  return None


def scenic_vivit_to_ours(scenic_params: Mapping, model_config: Mapping,
                         source: str = 'Scenic checkpoint') -> tuple[dict, dict | None]:
  """(backbone params, classification-head params {'output': {kernel, bias}} or None).

  Shapes are kept (position embeddings fit the clip size the checkpoint was trained on). The head is
  None when the checkpoint has none or has a 'pre_logits' layer, which our heads lack.
  """
  config = dict(model_config)
  variant = config['variant']
  scan_layers = config.get('scan_layers', True)
  unknown = sorted(set(scenic_params) - {'embedding', 'cls', 'cls_SpatialTransformer',
                                         'cls_TemporalTransformer', 'output_projection',
                                         'pre_logits', *_SCENIC_ENCODERS})
  if unknown:
    raise ConversionError(f'{source}: unexpected top-level entries {unknown}')
  backbone = {'embedding': _rename(_get(scenic_params, 'embedding', source),
                                   {'kernel': 'kernel', 'bias': 'bias'}, f'{source}: embedding')}
  encoders = ({'SpatialTransformer': 'spatial_encoder', 'TemporalTransformer': 'temporal_encoder'}
              if variant == 'factorised_encoder' else {'Transformer': 'encoder'})
  for theirs, ours in encoders.items():
    encoder_source = f'{source}: {theirs}'
    encoder = _get(scenic_params, theirs, source)
    blocks = _numbered(encoder, 'encoderblock_')
    expected = {'encoder_norm', 'posembed_input', *(f'encoderblock_{i}' for i in range(len(blocks)))}
    if set(encoder) - expected:
      raise ConversionError(f'{encoder_source}: unexpected entries {sorted(set(encoder) - expected)}')
    names = _FACTORISED_BLOCK_NAMES if variant == 'factorised_self_attention' else _BLOCK_NAMES
    layers = []
    for index, block in enumerate(blocks):
      block_source = f'{encoder_source}/encoderblock_{index}'
      layer = _rename(block, names, block_source)
      layer['mlp'] = _rename(layer['mlp'], _MLP_NAMES, f'{block_source}/mlp')
      layers.append(layer)
    converted = _stack(layers, scan_layers)
    converted['encoder_norm'] = _get(encoder, 'encoder_norm', encoder_source)
    if 'posembed_input' in encoder:
      converted['pos_embedding'] = _get(encoder, 'posembed_input/pos_embedding', encoder_source)
    cls_name = 'cls' if theirs == 'Transformer' else f'cls_{theirs}'
    if cls_name in scenic_params:
      converted['cls'] = scenic_params[cls_name]
    backbone[ours] = converted
  _check_against_config(backbone, config, source)

  head = None
  if 'pre_logits' in scenic_params:
    logging.warning('%s: has a pre_logits layer, which our heads lack; the head is not converted',
                    source)
  elif 'output_projection' in scenic_params:
    head = {'output': _rename(scenic_params['output_projection'], {'kernel': 'kernel', 'bias': 'bias'},
                              f'{source}: output_projection')}
  return backbone, head


def _check_against_config(backbone: Mapping, config: Mapping, source: str):
  """Compares the converted params with the sizes the config asks for."""
  width = config['hidden_size']
  kernel = backbone['embedding']['kernel']
  expected_kernel = ((*config['patch_size'], 3, width) if config.get('patch_embedding', 'tubelet')
                     == 'tubelet' else (*config['patch_size'][1:], 3, width))
  if tuple(kernel.shape) != tuple(expected_kernel):
    raise ConversionError(f'{source}: embedding/kernel has shape {kernel.shape}, the config '
                          f'(patch_size {tuple(config["patch_size"])}, hidden_size {width}) expects '
                          f'{tuple(expected_kernel)}')
  head_dim = width // config['num_heads']
  for name, encoder in backbone.items():
    if name == 'embedding':
      continue
    layers = _unstack(encoder, f'{source}: {name}')
    num_layers = config['num_temporal_layers'] if name == 'temporal_encoder' else config['num_layers']
    if len(layers) != num_layers:
      raise ConversionError(f'{source}: {name} has {len(layers)} layers, the config asks for '
                            f'{num_layers}')
    expected = {'attention_norm/scale': (width,), 'mlp/hidden/kernel': (width, config['mlp_dim']),
                'attention/query/kernel': (width, config['num_heads'], head_dim)}
    if config['variant'] == 'factorised_self_attention':
      expected = {name.replace('attention', 'spatial_attention', 1) if name.startswith('attention')
                  else name: shape for name, shape in expected.items()}
    flat = param_paths.flatten(layers[0])
    for param, shape in expected.items():
      if param not in flat or tuple(flat[param].shape) != shape:
        found = tuple(flat[param].shape) if param in flat else 'missing'
        raise ConversionError(f'{source}: {name} layer parameter {param!r} is {found}, the config '
                              f'(hidden_size {width}, mlp_dim {config["mlp_dim"]}, num_heads '
                              f'{config["num_heads"]}) expects {shape}')
    if ('cls' in encoder) != (config['classifier'] == 'token'):
      raise ConversionError(f"{source}: {name} {'has' if 'cls' in encoder else 'has no'} class "
                            f"token but the config says classifier={config['classifier']!r}")
    if ('pos_embedding' in encoder) != (config['position_embedding'] == 'learned'):
      raise ConversionError(f'{source}: {name} learned position embedding present='
                            f"{'pos_embedding' in encoder}, but the config says "
                            f"position_embedding={config['position_embedding']!r}")
