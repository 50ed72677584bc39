"""ViViT parameter counts and analytic FLOPs per clip, and the table of them in docs/models.md.

  python -m vivit_cofinetune.models.flops --sizes=B,L --input_shape=32,224,224
"""
import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivit_cofinetune.models import vivit


def flops_per_clip(model_config: ml_collections.ConfigDict | dict, input_shape: Sequence[int]) -> float:
  """Analytic forward FLOPs (2 x multiply-adds) for one clip of input_shape (T, H, W).

  Counts the patch embedding, attention projections, attention matmuls (QK^T and AV) and MLPs;
  ignores LayerNorm, softmax, GELU and bias adds (well under 1% for Ti and larger).
  """
  config = dict(model_config)
  d, m, layers = config['hidden_size'], config['mlp_dim'], config['num_layers']
  pt, ph, pw = config['patch_size']
  t, h, w = (size // patch for size, patch in zip(input_shape, (pt, ph, pw)))
  cls = 1 if config.get('classifier', 'token') == 'token' else 0
  grid = t * h * w
  embedding = 2 * grid * pt * ph * pw * 3 * d

  def dense_per_token(num_attention_layers: int) -> float:
    return 2 * (num_attention_layers * 4 * d * d + 2 * d * m)

  def attention_matmuls(queries: int, keys: int, width: int) -> float:
    return 2 * 2 * queries * keys * width  # QK^T and weights x V

  variant = config.get('variant', 'spatio_temporal')
  if variant == 'spatio_temporal':
    n = grid + cls
    per_layer = n * dense_per_token(1) + attention_matmuls(n, n, d)
    return embedding + layers * per_layer
  if variant == 'factorised_encoder':
    frame = h * w + cls
    spatial = t * (frame * dense_per_token(1) + attention_matmuls(frame, frame, d))
    n = t + cls
    temporal = n * dense_per_token(1) + attention_matmuls(n, n, d)
    return embedding + layers * spatial + config['num_temporal_layers'] * temporal
  if variant == 'factorised_self_attention':
    per_layer = (grid * dense_per_token(2) + attention_matmuls(grid, t, d)
                 + attention_matmuls(grid, h * w, d))
    return embedding + layers * per_layer
  if variant == 'factorised_dot_product':
    per_layer = (grid * dense_per_token(1) + attention_matmuls(grid, t, d / 2)
                 + attention_matmuls(grid, h * w, d / 2))
    return embedding + layers * per_layer
  raise ValueError(f'flops_per_clip: unknown variant {variant!r}')


def count_params(model_config: ml_collections.ConfigDict, input_shape: Sequence[int]) -> int:
  """Number of backbone parameters for clips of input_shape (T, H, W) (abstract init, no memory)."""
  model = vivit.ViViT(**model_config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *input_shape, 3)), train=False))
  return num_params(shapes)


def num_params(tree) -> int:
  """Elements over every leaf of a param tree (arrays or jax.ShapeDtypeStructs)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def print_table(sizes: Sequence[str], input_shape: Sequence[int]):
  """Markdown table of params and GFLOPs per clip for every variant and size."""
  print(f'| model | variant | params (M) | GFLOPs per clip ({"x".join(map(str, input_shape))}) |')
  print('|---|---|---|---|')
  for size in sizes:
    for variant in vivit.VARIANTS:
      config = vivit.vivit_config(f'{size}/16x2', variant=variant)
      print(f'| {size}/16x2 | {variant} | {count_params(config, input_shape) / 1e6:.1f} | '
            f'{flops_per_clip(config, input_shape) / 1e9:.0f} |')


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description='ViViT parameter counts and FLOPs per clip '
                                   '(the table in docs/models.md).')
  parser.add_argument('--sizes', default='B,L', help='comma-separated sizes of vivit.SIZES')
  parser.add_argument('--input_shape', default='32,224,224', help='clip size T,H,W')
  args = parser.parse_args()
  print_table(args.sizes.split(','), [int(v) for v in args.input_shape.split(',')])
