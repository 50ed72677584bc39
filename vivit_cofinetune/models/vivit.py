"""ViViT video transformer backbone: four encoder variants, one token-grid output.

Parameter tree (what `models/convert.py` maps checkpoints onto). D = hidden_size, M = mlp_dim,
H = num_heads, K = D // H, L = num_layers, Lt = num_temporal_layers, (pt, ph, pw) = patch_size,
(t, h, w) = token grid = (T // pt, H_in // ph, W_in // pw), c = 1 if classifier == 'token' else 0.

  embedding/kernel            [pt, ph, pw, 3, D]  ('tubelet': 3D conv, kernel = stride = patch)
                              [ph, pw, 3, D]      ('frame_2d': 2D conv on every frame; needs pt == 1)
  embedding/bias              [D]
  <encoder>/cls               [1, 1, D]           (only when classifier == 'token'; zeros init)
  <encoder>/pos_embedding     [1, c + N, D]       (only when position_embedding == 'learned'; the CLS
                                                   position comes first, as in Scenic's ViViT)
  <encoder>/layers/<block>    every leaf with a leading [L] axis (scan_layers=True), or
  <encoder>/layers_<i>/<block> one subtree per layer (scan_layers=False); models/convert.py's `stack_layers`
                              and `unstack_layers` convert between the two.
  <encoder>/encoder_norm/{scale, bias}  [D]  (absent when final_norm == 'pooled')
  fc_norm/{scale, bias}       [D]                 (only when final_norm == 'pooled')

  <block> for 'spatio_temporal', 'factorised_encoder' and 'factorised_dot_product':
    attention_norm/{scale, bias}              [D]
    attention/{query, key, value}/kernel      [D, H, K];  .../bias [H, K] (no key bias when
                                              key_bias is False)
    attention/out/kernel                      [H, K, D];  attention/out/bias [D]
    mlp_norm/{scale, bias}                    [D]
    mlp/hidden/kernel [D, M], mlp/hidden/bias [M], mlp/output/kernel [M, D], mlp/output/bias [D]
  <block> for 'factorised_self_attention': attention_norm/attention replaced by
    temporal_attention_norm, temporal_attention, spatial_attention_norm, spatial_attention
    (same shapes; temporal first), then mlp_norm and mlp as above.

  <encoder> is 'encoder' (N = t*h*w) for every variant except 'factorised_encoder', which has
  'spatial_encoder' (N = h*w, shared by all frames, L layers) and 'temporal_encoder' (N = t, Lt layers).
  'sinusoidal_3d' position embeddings have no params (added once to the [t, h, w] patch grid), nor
  does 'rope_3d' (V-JEPA 2's rotary code, applied to queries and keys in every layer).

Numerics follow Scenic's ViViT by default so converted checkpoints agree (layer_norm_epsilon, gelu,
key_bias and final_norm reproduce VideoMAE's and V-JEPA 2's): LayerNorm epsilon 1e-6, tanh-approximate
GELU, xavier-uniform attention and MLP kernels, MLP biases normal(1e-6), learned position embeddings
normal(0.02), CLS zeros, dropout after the position embedding, on attention outputs, after the GELU and
after the MLP output; attention-weight dropout inside attention; stochastic depth drops each residual
branch per example without rescaling (as Scenic does), its rate rising linearly from 0 at the first
layer to `stochastic_depth` at the last ('linear') or equal in all layers ('constant'); the factorised
encoder's two encoders each have their own schedule. Unlike Scenic, the factorised self-attention block
has stochastic depth too (training only; inference numerics are unaffected).

Outputs, all variants: (tokens [B, t, h, w, D] after the final LayerNorm, float32; pooled [B, D] or None).
  spatio_temporal, factorised_self_attention, factorised_dot_product: tokens = the encoder's output
    grid; pooled = the CLS output when classifier == 'token', fc_norm(mean of the tokens) when
    final_norm == 'pooled', else None.
  factorised_encoder: tokens = the spatial encoder's output grid (per-frame features, after its
    encoder_norm); pooled = the temporal encoder's video representation (its CLS output, or the mean of
    its outputs when classifier == 'mean'), always present, since the temporal encoder only feeds it.
  The factorised self-attention and dot-product variants have no CLS token (as in Scenic): use 'mean'.
"""
import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivit_cofinetune.models import attention as attention_kernels

VARIANTS = ('spatio_temporal', 'factorised_encoder', 'factorised_self_attention',
            'factorised_dot_product')
SIZES = {  # name: (hidden_size, num_layers, mlp_dim, num_heads)
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'H': (1280, 32, 5120, 16),
}
REMAT_POLICIES = {
    'full': None,  # save nothing: recompute the whole block in the backward pass
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# Logical axes of activations (sharding.DEFAULT_RULES maps them, apart from the params' axes).
TOKENS = ('act_batch', 'act_len', 'act_embed')  # [B, N, D]
GRID = ('act_batch', 'act_time', 'act_height', 'act_width', 'act_embed')  # [B, t, h, w, D]
HEADS = ('act_batch', 'act_len', 'act_heads', 'act_kv')  # [B, N, H, K]
HIDDEN = ('act_batch', 'act_len', 'act_mlp')  # [B, N, M]


def vivit_config(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """Model config for `ViViT(**config)`; name is '<size>/<patch>x<tubelet frames>', e.g. 'B/16x2'."""
  try:
    size, patch = name.split('/')
    patch_hw, patch_t = (int(part) for part in patch.split('x'))
    hidden_size, num_layers, mlp_dim, num_heads = SIZES[size]
  except (ValueError, KeyError) as error:
    raise ValueError(f'vivit_config: name {name!r} should look like "B/16x2" with size in '
                     f'{sorted(SIZES)}') from error
  variant = overrides.get('variant', ViViT.variant)
  # Every field's default is the ViViT field's, so a field is defaulted in one place.
  config = {field.name: field.default for field in dataclasses.fields(ViViT)
            if field.name not in ('parent', 'name')}
  config.update(
      variant=variant, hidden_size=hidden_size, num_layers=num_layers, mlp_dim=mlp_dim,
      num_heads=num_heads, patch_size=(patch_t, patch_hw, patch_hw),
      # Scenic's factorised self-attention and dot-product variants have no CLS token.
      classifier='token' if variant in ('spatio_temporal', 'factorised_encoder') else 'mean')
  unknown = set(overrides) - set(config)
  if unknown:
    raise ValueError(f'vivit_config: unknown fields {sorted(unknown)}; known: {sorted(config)}')
  config.update(overrides)
  config['patch_size'] = tuple(config['patch_size'])
  return ml_collections.ConfigDict(config)


def _param_init(init, *axes):
  return nn.with_logical_partitioning(init, axes)


def _layer_norm(name: str, dtype, epsilon: float) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=epsilon, dtype=dtype, name=name,
                      scale_init=_param_init(nn.initializers.ones, 'embed'),
                      bias_init=_param_init(nn.initializers.zeros, 'embed'))


def sinusoidal_3d_embedding(grid: Sequence[int], channels: int) -> jnp.ndarray:
  """Fixed sin-cos position code [t, h, w, channels]: sin/cos of time, width, height in sixths.

  Channels beyond the largest multiple of 6 are zero (Scenic requires a multiple of 6).
  """
  t, h, w = grid
  part = channels // 6
  frequencies = 1.0 / (10_000 ** (np.arange(part, dtype=np.float32) / part))
  time, height, width = np.meshgrid(np.arange(t), np.arange(h), np.arange(w), indexing='ij')
  codes = []
  for position in (time, width, height):
    angles = position.reshape(-1, 1).astype(np.float32) * frequencies
    codes += [np.sin(angles), np.cos(angles)]
  code = np.concatenate(codes + [np.zeros((t * h * w, channels - 6 * part), np.float32)], axis=1)
  return jnp.asarray(code.reshape(t, h, w, channels))


class _DenseGeneral(nn.Module):
  """nn.DenseGeneral (xavier-uniform kernel on its flat [in, out] shape, zero bias) for the attention
  projections, with the logical axes on the params' real shapes.

  nn.DenseGeneral applies the kernel's logical constraint to the flat init value, which fails under
  the rules and mesh the steps are traced with; params, init values and maths are the same here.
  """
  features: tuple[int, ...]
  contract: int  # how many trailing input axes are contracted
  kernel_axes: tuple[str, ...]
  bias_axes: tuple[str, ...]
  dtype: Any
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_shape = x.shape[x.ndim - self.contract:]

    def kernel_init(rng, shape, dtype=jnp.float32):
      flat = (int(np.prod(in_shape)), int(np.prod(self.features)))
      return nn.initializers.xavier_uniform()(rng, flat, dtype).reshape(shape)

    kernel = self.param('kernel', _param_init(kernel_init, *self.kernel_axes),
                        (*in_shape, *self.features), jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    contracted = tuple(range(x.ndim - self.contract, x.ndim))
    y = jax.lax.dot_general(x, kernel, ((contracted, tuple(range(self.contract))), ((), ())))
    if not self.use_bias:
      return y
    bias = self.param('bias', _param_init(nn.initializers.zeros, *self.bias_axes), self.features,
                      jnp.float32)
    return y + bias.astype(y.dtype)


class SelfAttention(nn.Module):
  """Multi-head self-attention on [B, N, D] tokens.

  axis: 'joint' (all N tokens), 'time' or 'space' (tokens form a [t, s] grid, N = t * s), or
  'time_and_space' (first half of the heads attend over time, second half over space).
  key_bias: False leaves the key projection without a bias (VideoMAE's); rope_grid: the (t, h, w)
  token grid whose 3D rotary position code rotates queries and keys ('joint' only), or None.
  """
  num_heads: int
  axis: str
  grid: tuple[int, int] | None
  dropout_rate: float
  deterministic: bool
  implementation: str
  dtype: Any
  key_bias: bool = True
  rope_grid: tuple[int, int, int] | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, n, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'ViViT: hidden_size {d} must be divisible by num_heads {self.num_heads}')
    head_dim = d // self.num_heads
    project = functools.partial(
        _DenseGeneral, features=(self.num_heads, head_dim), contract=1, dtype=self.dtype,
        kernel_axes=('embed', 'heads', 'kv'), bias_axes=('heads', 'kv'))
    query, key, value = (
        nn.with_logical_constraint(project(name=name, use_bias=name != 'key' or self.key_bias)(x), HEADS)
        for name in ('query', 'key', 'value'))
    if self.rope_grid is not None:
      query, key = (attention_kernels.rope_3d(y, self.rope_grid) for y in (query, key))
    kwargs = dict(implementation=self.implementation, dropout_rate=self.dropout_rate,
                  dropout_rng=None if self.deterministic else lambda: self.make_rng('dropout'))
    if self.axis == 'joint':
      out = attention_kernels.attend(query, key, value, **kwargs)
    else:
      as_grid = lambda y: y.reshape(b, *self.grid, *y.shape[2:])
      query, key, value = as_grid(query), as_grid(key), as_grid(value)
      along = functools.partial(attention_kernels.attend_along, **kwargs)
      if self.axis in ('time', 'space'):
        out = along(query, key, value, self.axis)
      else:
        if self.num_heads % 2:
          raise ValueError(f'ViViT factorised_dot_product needs an even num_heads, got {self.num_heads}')
        half = self.num_heads // 2
        out = jnp.concatenate([
            along(query[..., :half, :], key[..., :half, :], value[..., :half, :], 'time'),
            along(query[..., half:, :], key[..., half:, :], value[..., half:, :], 'space'),
        ], axis=-2)
      out = out.reshape(b, n, self.num_heads, head_dim)
    out = nn.with_logical_constraint(out, HEADS)
    return _DenseGeneral((d,), contract=2, kernel_axes=('heads', 'kv', 'embed'), bias_axes=('embed',),
                         dtype=self.dtype, name='out')(out)


# Recomputed in the backward pass from its input: saving tanh-GELU's intermediates keeps three more
# [B, N, mlp_dim] buffers per layer, which scanned layers also stack and copy (docs/benchmarks.md).
GELUS = {'tanh': jax.checkpoint(functools.partial(nn.gelu, approximate=True)),
         'exact': jax.checkpoint(functools.partial(nn.gelu, approximate=False))}


class Mlp(nn.Module):
  """Transformer MLP: Dense(M) -> GELU ('tanh' approximation or 'exact' erf) -> dropout -> Dense(D)
  -> dropout."""
  mlp_dim: int
  dropout_rate: float
  deterministic: bool
  dtype: Any
  gelu: str = 'tanh'

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    y = dense(self.mlp_dim, name='hidden',
              kernel_init=_param_init(nn.initializers.xavier_uniform(), 'embed', 'mlp'),
              bias_init=_param_init(nn.initializers.normal(stddev=1e-6), 'mlp'))(x)
    y = nn.with_logical_constraint(GELUS[self.gelu](y), HIDDEN)
    y = nn.Dropout(self.dropout_rate)(y, self.deterministic)
    y = dense(x.shape[-1], name='output',
              kernel_init=_param_init(nn.initializers.xavier_uniform(), 'mlp', 'embed'),
              bias_init=_param_init(nn.initializers.normal(stddev=1e-6), 'embed'))(y)
    return nn.Dropout(self.dropout_rate)(y, self.deterministic)


class EncoderBlock(nn.Module):
  """Pre-LN transformer block on [B, N, D]; called as (x, drop_rate) -> (x, None) to suit nn.scan.

  attention: 'joint', 'factorised_self_attention' (temporal then spatial attention, one MLP) or
  'factorised_dot_product' (heads split between time and space).
  """
  attention: str
  grid: tuple[int, int] | None
  mlp_dim: int
  num_heads: int
  dropout_rate: float
  attention_dropout_rate: float
  drop_path: bool  # whether any layer has a non-zero stochastic-depth rate
  deterministic: bool
  attention_implementation: str
  dtype: Any
  layer_norm_epsilon: float
  gelu: str
  key_bias: bool
  rope_grid: tuple[int, int, int] | None

  def _drop_path(self, branch: jnp.ndarray, rate) -> jnp.ndarray:
    # Scenic drops a residual branch per example and does not rescale the kept ones.
    if self.deterministic or not self.drop_path:
      return branch
    dropped = jax.random.bernoulli(self.make_rng('dropout'), rate, (branch.shape[0], 1, 1))
    return jnp.where(dropped, jnp.zeros_like(branch), branch)

  @nn.compact
  def __call__(self, x: jnp.ndarray, drop_rate) -> tuple[jnp.ndarray, None]:
    x = nn.with_logical_constraint(x, TOKENS)
    attend = functools.partial(SelfAttention, num_heads=self.num_heads, grid=self.grid,
                               dropout_rate=self.attention_dropout_rate,
                               deterministic=self.deterministic,
                               implementation=self.attention_implementation, dtype=self.dtype,
                               key_bias=self.key_bias, rope_grid=self.rope_grid)
    norm = functools.partial(_layer_norm, dtype=self.dtype, epsilon=self.layer_norm_epsilon)
    if self.attention == 'factorised_self_attention':
      stages = [('temporal_', 'time'), ('spatial_', 'space')]
    else:
      stages = [('', 'time_and_space' if self.attention == 'factorised_dot_product' else 'joint')]
    for prefix, axis in stages:
      y = norm(f'{prefix}attention_norm')(x)
      y = attend(axis=axis, name=f'{prefix}attention')(y)
      y = nn.Dropout(self.dropout_rate)(y, self.deterministic)
      x = x + self._drop_path(y, drop_rate)
    y = norm('mlp_norm')(x)
    y = Mlp(self.mlp_dim, self.dropout_rate, self.deterministic, self.dtype, self.gelu, name='mlp')(y)
    return nn.with_logical_constraint(x + self._drop_path(y, drop_rate), TOKENS), None


class Encoder(nn.Module):
  """CLS token, learned position embedding, dropout, L blocks, final LayerNorm on [B, N, D].

  Returns [B, c + N, D] in float32 (the CLS output first when classifier == 'token').
  """
  num_layers: int
  attention: str
  grid: tuple[int, int] | None
  mlp_dim: int
  num_heads: int
  classifier: str
  position_embedding: str
  dropout_rate: float
  attention_dropout_rate: float
  stochastic_depth: float
  stochastic_depth_schedule: str
  remat_policy: str
  scan_layers: bool
  attention_implementation: str
  dtype: Any
  layer_norm_epsilon: float
  gelu: str
  key_bias: bool
  final_norm: bool  # False: the output is left unnormalised (the pooled vector gets fc_norm)
  rope_grid: tuple[int, int, int] | None = None

  def drop_rates(self) -> np.ndarray:
    """Per-layer stochastic-depth rate [num_layers]."""
    if self.stochastic_depth_schedule == 'constant':
      return np.full(self.num_layers, self.stochastic_depth, np.float32)
    if self.stochastic_depth_schedule == 'linear':
      return (np.arange(self.num_layers) / max(self.num_layers - 1, 1) *
              self.stochastic_depth).astype(np.float32)
    raise ValueError(f'ViViT stochastic_depth_schedule: expected linear|constant, '
                     f'got {self.stochastic_depth_schedule!r}')

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    b, _, d = x.shape
    if self.classifier == 'token':
      cls = self.param('cls', _param_init(nn.initializers.zeros, None, None, 'embed'), (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
    if self.position_embedding == 'learned':
      position = self.param('pos_embedding',
                            _param_init(nn.initializers.normal(stddev=0.02), None, 'position', 'embed'),
                            (1, x.shape[1], d))
      x = x + position.astype(x.dtype)
    x = nn.Dropout(self.dropout_rate)(x, not train)

    block = EncoderBlock
    if self.remat_policy != 'none':
      if self.remat_policy not in REMAT_POLICIES:
        raise ValueError(f'ViViT remat_policy: expected one of {["none", *REMAT_POLICIES]}, '
                         f'got {self.remat_policy!r}')
      block = nn.remat(block, policy=REMAT_POLICIES[self.remat_policy],
                       prevent_cse=not self.scan_layers)
    block_args = dict(attention=self.attention, grid=self.grid, mlp_dim=self.mlp_dim,
                      num_heads=self.num_heads, dropout_rate=self.dropout_rate,
                      attention_dropout_rate=self.attention_dropout_rate,
                      drop_path=self.stochastic_depth > 0, deterministic=not train,
                      attention_implementation=self.attention_implementation, dtype=self.dtype,
                      layer_norm_epsilon=self.layer_norm_epsilon, gelu=self.gelu,
                      key_bias=self.key_bias, rope_grid=self.rope_grid)
    drop_rates = self.drop_rates()
    if self.scan_layers:
      scanned = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                        in_axes=0, length=self.num_layers,
                        metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = scanned(**block_args, name='layers')(x, jnp.asarray(drop_rates))
    else:
      for index in range(self.num_layers):
        x, _ = block(**block_args, name=f'layers_{index}')(x, drop_rates[index])
    if not self.final_norm:
      return x.astype(jnp.float32)
    return _layer_norm('encoder_norm', jnp.float32, self.layer_norm_epsilon)(x)


class PatchEmbedding(nn.Module):
  """[B, T, H, W, C] -> [B, t, h, w, D]: a convolution whose stride is its kernel, as one matmul.

  The params are nn.Conv's (kernel [*kernel_size, C, D], lecun-normal, and bias [D]); a kernel of
  rank 2 ('frame_2d') applies to every frame. Computed on the patches rather than by
  nn.Conv because XLA's CPU backend has no fast 3D convolution: there the conv and its kernel
  gradient took ~1.4x the time of this matmul (docs/benchmarks.md); on TPUs and GPUs it is the same
  dot either way.
  """
  features: int
  kernel_size: tuple[int, ...]
  dtype: Any

  @nn.compact
  def __call__(self, video: jnp.ndarray) -> jnp.ndarray:
    b, _, _, _, c = video.shape
    kernel = self.param('kernel', _param_init(nn.initializers.lecun_normal(),
                                              *([None] * len(self.kernel_size)), None, 'embed'),
                        (*self.kernel_size, c, self.features), jnp.float32)
    bias = self.param('bias', _param_init(nn.initializers.zeros, 'embed'), (self.features,),
                      jnp.float32)
    pt, ph, pw = (1,) * (3 - len(self.kernel_size)) + self.kernel_size
    t, h, w = (size // patch for size, patch in zip(video.shape[1:4], (pt, ph, pw)))
    patches = video[:, :t * pt, :h * ph, :w * pw].reshape(b, t, pt, h, ph, w, pw, c)
    patches = patches.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, t, h, w, pt * ph * pw * c)
    patches, kernel, bias = nn.dtypes.promote_dtype(patches, kernel, bias, dtype=self.dtype)
    return patches @ kernel.reshape(-1, self.features) + bias


class ViViT(nn.Module):
  """Video transformer: video [B, T, H, W, 3] -> (tokens [B, t, h, w, D], pooled [B, D] or None).

  Fields are those of `vivit_config`; see the module docstring for variants and outputs.
  """
  variant: str = 'spatio_temporal'
  hidden_size: int = 768
  num_layers: int = 12
  mlp_dim: int = 3072
  num_heads: int = 12
  patch_size: Sequence[int] = (2, 16, 16)
  num_temporal_layers: int = 4
  classifier: str = 'token'
  position_embedding: str = 'learned'
  patch_embedding: str = 'tubelet'
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  stochastic_depth: float = 0.0
  stochastic_depth_schedule: str = 'linear'
  # Saves the matmuls' outputs and recomputes LayerNorm, softmax and GELU in the backward pass:
  # with scanned layers every saved tensor is also stacked, zeroed and copied per layer, so saving
  # less made the ViViT-B step 5-9% faster than 'none' and its temporaries 32% smaller
  # (docs/benchmarks.md). 'none' saves everything; REMAT_POLICIES lists the others.
  remat_policy: str = 'dots_saveable'
  scan_layers: bool = True
  attention_implementation: str = 'xla'  # one of attention.ATTENTION_IMPLEMENTATIONS
  dtype: str = 'float32'
  # Numerics of other checkpoints (models/convert.py sets them): Scenic's are the defaults;
  # Hugging Face VideoMAE uses epsilon 1e-12, VideoMAE and V-JEPA 2 the exact GELU.
  layer_norm_epsilon: float = 1e-6
  gelu: str = 'tanh'  # 'tanh' approximation or 'exact' (erf)
  key_bias: bool = True  # False: no key-projection bias (VideoMAE's is fixed at zero)
  # 'tokens': the encoder's final LayerNorm normalises every token (Scenic, ViViT, V-JEPA 2).
  # 'pooled': tokens stay unnormalised and pooled = fc_norm(mean of the tokens) (VideoMAE's mean
  # pooling); spatio_temporal with classifier='mean' only.
  final_norm: str = 'tokens'

  def _check(self):
    choices = dict(variant=VARIANTS, classifier=('token', 'mean'),
                   position_embedding=('learned', 'sinusoidal_3d', 'rope_3d', 'none'),
                   patch_embedding=('tubelet', 'frame_2d'), dtype=('float32', 'bfloat16'),
                   attention_implementation=attention_kernels.ATTENTION_IMPLEMENTATIONS,
                   gelu=tuple(GELUS), final_norm=('tokens', 'pooled'))
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise ValueError(f'ViViT {field}: expected one of {allowed}, got {getattr(self, field)!r}')
    if self.classifier == 'token' and self.variant in ('factorised_self_attention',
                                                       'factorised_dot_product'):
      raise ValueError(f"ViViT variant {self.variant!r} has no CLS token: set classifier='mean'")
    plain_mean = self.variant == 'spatio_temporal' and self.classifier == 'mean'
    if self.position_embedding == 'rope_3d' and not plain_mean:
      raise ValueError("ViViT position_embedding='rope_3d' needs variant='spatio_temporal' and "
                       f"classifier='mean', got {self.variant!r} and {self.classifier!r}")
    if self.final_norm == 'pooled' and not plain_mean:
      raise ValueError("ViViT final_norm='pooled' needs variant='spatio_temporal' and "
                       f"classifier='mean', got {self.variant!r} and {self.classifier!r}")
    if self.patch_embedding == 'frame_2d' and self.patch_size[0] != 1:
      raise ValueError(f"ViViT patch_embedding='frame_2d' needs patch_size[0] == 1, "
                       f'got patch_size {tuple(self.patch_size)}')

  def _embed(self, video: jnp.ndarray, dtype) -> jnp.ndarray:
    """Patch tokens [B, t, h, w, D] (trailing pixels that do not fill a patch are dropped)."""
    if any(size < patch for size, patch in zip(video.shape[1:4], self.patch_size)):
      raise ValueError(f'ViViT: video {video.shape} is smaller than one patch {tuple(self.patch_size)}')
    kernel = tuple(self.patch_size) if self.patch_embedding == 'tubelet' else tuple(self.patch_size[1:])
    return PatchEmbedding(self.hidden_size, kernel, dtype, name='embedding')(video)

  @nn.compact
  def __call__(self, video: jnp.ndarray, *, train: bool):
    self._check()
    if video.ndim != 5 or video.shape[-1] != 3:
      raise ValueError(f'ViViT: expected video [B, T, H, W, 3], got {video.shape}')
    dtype = jnp.dtype(self.dtype)
    x = self._embed(video, dtype)
    b, t, h, w, d = x.shape
    if self.position_embedding == 'sinusoidal_3d':
      x = x + sinusoidal_3d_embedding((t, h, w), d).astype(dtype)
    x = nn.with_logical_constraint(x, GRID)
    encoder = functools.partial(
        Encoder, mlp_dim=self.mlp_dim, num_heads=self.num_heads, classifier=self.classifier,
        position_embedding=self.position_embedding, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, stochastic_depth=self.stochastic_depth,
        stochastic_depth_schedule=self.stochastic_depth_schedule, remat_policy=self.remat_policy,
        scan_layers=self.scan_layers, attention_implementation=self.attention_implementation,
        dtype=dtype, layer_norm_epsilon=self.layer_norm_epsilon, gelu=self.gelu,
        key_bias=self.key_bias, final_norm=self.final_norm == 'tokens')
    has_cls = self.classifier == 'token'

    if self.variant == 'factorised_encoder':
      frames = encoder(num_layers=self.num_layers, attention='joint', grid=None,
                       name='spatial_encoder')(x.reshape(b * t, h * w, d), train=train)
      tokens = frames[:, int(has_cls):].reshape(b, t, h, w, d)
      per_frame = frames[:, 0] if has_cls else frames.mean(axis=1)
      video_tokens = encoder(num_layers=self.num_temporal_layers, attention='joint', grid=None,
                             name='temporal_encoder')(per_frame.reshape(b, t, d).astype(dtype),
                                                      train=train)
      pooled = video_tokens[:, 0] if has_cls else video_tokens.mean(axis=1)
    else:
      attention = 'joint' if self.variant == 'spatio_temporal' else self.variant
      rope_grid = (t, h, w) if self.position_embedding == 'rope_3d' else None
      out = encoder(num_layers=self.num_layers, attention=attention, grid=(t, h * w),
                    rope_grid=rope_grid, name='encoder')(x.reshape(b, t * h * w, d), train=train)
      tokens = out[:, int(has_cls):].reshape(b, t, h, w, d)
      pooled = out[:, 0] if has_cls else None
      if self.final_norm == 'pooled':
        pooled = _layer_norm('fc_norm', jnp.float32, self.layer_norm_epsilon)(out.mean(axis=1))
    tokens = nn.with_logical_constraint(tokens, GRID)
    return tokens, pooled
