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
  <encoder>/layers_<i>/<block> one subtree per layer (scan_layers=False); `stack_layers` and
                              `unstack_layers` convert between the two.
  <encoder>/encoder_norm/{scale, bias}  [D]

  <block> for 'spatio_temporal', 'factorised_encoder' and 'factorised_dot_product':
    attention_norm/{scale, bias}              [D]
    attention/{query, key, value}/kernel      [D, H, K];  .../bias [H, K]
    attention/out/kernel                      [H, K, D];  attention/out/bias [D]
    mlp_norm/{scale, bias}                    [D]
    mlp/hidden/kernel [D, M], mlp/hidden/bias [M], mlp/output/kernel [M, D], mlp/output/bias [D]
  <block> for 'factorised_self_attention': attention_norm/attention replaced by
    temporal_attention_norm, temporal_attention, spatial_attention_norm, spatial_attention
    (same shapes; temporal first), then mlp_norm and mlp as above.

  <encoder> is 'encoder' (N = t*h*w) for every variant except 'factorised_encoder', which has
  'spatial_encoder' (N = h*w, shared by all frames, L layers) and 'temporal_encoder' (N = t, Lt layers).
  'sinusoidal_3d' position embeddings have no params (added once to the [t, h, w] patch grid).

Numerics follow Scenic's ViViT so converted checkpoints agree: LayerNorm epsilon 1e-6, tanh-approximate
GELU, xavier-uniform attention and MLP kernels, MLP biases normal(1e-6), learned position embeddings
normal(0.02), CLS zeros, dropout after the position embedding, on attention outputs, after the GELU and
after the MLP output; attention-weight dropout inside attention; stochastic depth drops each residual
branch per example without rescaling (as Scenic does), its rate rising linearly from 0 at the first
layer to `stochastic_depth` at the last ('linear') or equal in all layers ('constant'); the factorised
encoder's two encoders each have their own schedule. Unlike Scenic, the factorised self-attention block
has stochastic depth too (training only; inference numerics are unaffected).

Outputs, all variants: (tokens [B, t, h, w, D] after the final LayerNorm, float32; pooled [B, D] or None).
  spatio_temporal, factorised_self_attention, factorised_dot_product: tokens = the encoder's output
    grid; pooled = the CLS output when classifier == 'token', else None.
  factorised_encoder: tokens = the spatial encoder's output grid (per-frame features, after its
    encoder_norm); pooled = the temporal encoder's video representation (its CLS output, or the mean of
    its outputs when classifier == 'mean'), always present, since the temporal encoder only feeds it.
  The factorised self-attention and dot-product variants have no CLS token (as in Scenic): use 'mean'.
"""
import argparse
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

VARIANTS = ('spatio_temporal', 'factorised_encoder', 'factorised_self_attention',
            'factorised_dot_product')
SIZES = {  # name: (hidden_size, num_layers, mlp_dim, num_heads)
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'H': (1280, 32, 5120, 16),
}
# 'xla': plain XLA softmax attention (any backend). 'cudnn': cuDNN's fused flash attention (NVIDIA
# GPUs, bfloat16, head dim a multiple of 8). 'splash': the Pallas splash (flash) attention kernel for
# TPUs. The fused ones never build the [N, N] weights, which at ViViT-L's 3,137 tokens per clip are
# most of the activation memory.
ATTENTION_IMPLEMENTATIONS = ('xla', 'cudnn', 'splash')
REMAT_POLICIES = {
    'full': None,  # save nothing: recompute the whole block in the backward pass
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_with_no_batch_dims_saveable': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
LAYER_NORM_EPSILON = 1e-6
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
  variant = overrides.get('variant', 'spatio_temporal')
  config = dict(
      variant=variant,
      hidden_size=hidden_size,
      num_layers=num_layers,
      mlp_dim=mlp_dim,
      num_heads=num_heads,
      patch_size=(patch_t, patch_hw, patch_hw),
      num_temporal_layers=4,
      # Scenic's factorised self-attention and dot-product variants have no CLS token.
      classifier='token' if variant in ('spatio_temporal', 'factorised_encoder') else 'mean',
      position_embedding='learned',
      patch_embedding='tubelet',
      dropout_rate=0.0,
      attention_dropout_rate=0.0,
      stochastic_depth=0.0,
      stochastic_depth_schedule='linear',
      # Saves the matmuls' outputs and recomputes LayerNorm, softmax and GELU in the backward pass:
      # with scanned layers every saved tensor is also stacked, zeroed and copied per layer, so
      # saving less made the ViViT-B step 5-9% faster than 'none' and its temporaries 32% smaller
      # (docs/benchmarks.md).
      remat_policy='dots_saveable',
      scan_layers=True,
      attention_implementation='xla',  # one of ATTENTION_IMPLEMENTATIONS
      dtype='float32',
  )
  unknown = set(overrides) - set(config)
  if unknown:
    raise ValueError(f'vivit_config: unknown fields {sorted(unknown)}; known: {sorted(config)}')
  config.update(overrides)
  config['patch_size'] = tuple(config['patch_size'])
  return ml_collections.ConfigDict(config)


def _param_init(init, *axes):
  return nn.with_logical_partitioning(init, axes)


def _layer_norm(name: str, dtype) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, name=name,
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


# Splash attention's tile: sequences are padded to a whole number of these.
SPLASH_BLOCK = 128


def splash_attention(query, key, value, *, interpret: bool = False) -> jnp.ndarray:
  """Softmax attention on [B, N, H, K] with the Pallas TPU splash (flash) attention kernel.

  N is padded to whole SPLASH_BLOCK tiles; the padding is a second segment, so real tokens never
  attend to it. `interpret` runs the kernel in the Pallas interpreter (any backend; tests only).
  One kernel call per device: under a mesh that shards the batch, XLA gathers its inputs (a
  shard_map over the batch axes would keep them sharded).
  """
  # pylint: disable-next=g-import-not-at-top (Pallas TPU pulls in Mosaic; only this option needs it)
  from jax.experimental.pallas.ops.tpu import splash_attention as splash
  b, n, heads, k = query.shape
  padded = -(-n // SPLASH_BLOCK) * SPLASH_BLOCK
  blocks = splash.BlockSizes(**{field: SPLASH_BLOCK for field in (
      'block_q', 'block_kv', 'block_kv_compute', 'block_q_dkv', 'block_kv_dkv',
      'block_kv_dkv_compute', 'block_q_dq', 'block_kv_dq')})
  kernel = splash.make_splash_mha_single_device(
      splash.MultiHeadMask([splash.FullMask((padded, padded))] * heads), block_sizes=blocks,
      interpret=interpret)
  segment = (jnp.arange(padded) >= n).astype(jnp.int32)

  def heads_first(x):  # [B, N, H, K] -> [B, H, padded, K]
    return jnp.pad(x, ((0, 0), (0, padded - n), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  # The kernel does not scale the logits.
  query = query / np.sqrt(k).astype(query.dtype)
  out = jax.vmap(kernel, in_axes=(0, 0, 0, None))(
      heads_first(query), heads_first(key), heads_first(value), splash.SegmentIds(segment, segment))
  return out.transpose(0, 2, 1, 3)[:, :n]


def _attend(query, key, value, dropout_rate: float, deterministic: bool, implementation: str,
            module: nn.Module):
  """Softmax attention on [B, N, H, K] -> [B, N, H, K]; fused kernel unless attention dropout is on."""
  fused = deterministic or dropout_rate == 0.0
  if fused and implementation == 'splash':
    if jax.default_backend() != 'tpu':
      raise ValueError(f"ViViT attention_implementation='splash' needs a TPU; this backend is "
                       f"{jax.default_backend()!r} (use 'xla', or 'cudnn' on NVIDIA GPUs)")
    return splash_attention(query, key, value)
  if fused and implementation == 'cudnn':
    return jax.nn.dot_product_attention(query, key, value, implementation='cudnn')
  # Heads first, so both batched matmuls take contiguous [B, H] batches: on XLA's CPU backend
  # jax.nn.dot_product_attention's [B, N, H, K] einsums made their own transposes and ran slower
  # (2-7% of a ViViT-B step, docs/benchmarks.md).
  query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))
  logits = jnp.einsum('bhqk,bhvk->bhqv', query, key) / np.sqrt(query.shape[-1]).astype(query.dtype)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  if not fused:
    keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum('bhqv,bhvk->bhqk', weights.astype(value.dtype), value).transpose(0, 2, 1, 3)


def _attend_along(query, key, value, axis: str, **kwargs):
  """Attention over one axis of [B, t, s, H, K] tensors: 'time' (t) or 'space' (s)."""
  b, t, s, heads, k = query.shape
  if axis == 'time':
    fold = lambda x: x.transpose(0, 2, 1, 3, 4).reshape(b * s, t, heads, k)
    out = _attend(fold(query), fold(key), fold(value), **kwargs)
    return out.reshape(b, s, t, heads, k).transpose(0, 2, 1, 3, 4)
  fold = lambda x: x.reshape(b * t, s, heads, k)
  return _attend(fold(query), fold(key), fold(value), **kwargs).reshape(b, t, s, heads, k)


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

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_shape = x.shape[x.ndim - self.contract:]

    def kernel_init(rng, shape, dtype=jnp.float32):
      flat = (int(np.prod(in_shape)), int(np.prod(self.features)))
      return nn.initializers.xavier_uniform()(rng, flat, dtype).reshape(shape)

    kernel = self.param('kernel', _param_init(kernel_init, *self.kernel_axes),
                        (*in_shape, *self.features), jnp.float32)
    bias = self.param('bias', _param_init(nn.initializers.zeros, *self.bias_axes), self.features,
                      jnp.float32)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    contracted = tuple(range(x.ndim - self.contract, x.ndim))
    y = jax.lax.dot_general(x, kernel, ((contracted, tuple(range(self.contract))), ((), ())))
    return y + bias


class SelfAttention(nn.Module):
  """Multi-head self-attention on [B, N, D] tokens.

  axis: 'joint' (all N tokens), 'time' or 'space' (tokens form a [t, s] grid, N = t * s), or
  'time_and_space' (first half of the heads attend over time, second half over space).
  """
  num_heads: int
  axis: str
  grid: tuple[int, int] | None
  dropout_rate: float
  deterministic: bool
  implementation: str
  dtype: Any

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, n, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'ViViT: hidden_size {d} must be divisible by num_heads {self.num_heads}')
    head_dim = d // self.num_heads
    project = functools.partial(
        _DenseGeneral, features=(self.num_heads, head_dim), contract=1, dtype=self.dtype,
        kernel_axes=('embed', 'heads', 'kv'), bias_axes=('heads', 'kv'))
    query, key, value = (nn.with_logical_constraint(project(name=name)(x), HEADS)
                         for name in ('query', 'key', 'value'))
    kwargs = dict(dropout_rate=self.dropout_rate, deterministic=self.deterministic,
                  implementation=self.implementation, module=self)
    if self.axis == 'joint':
      out = _attend(query, key, value, **kwargs)
    else:
      as_grid = lambda y: y.reshape(b, *self.grid, *y.shape[2:])
      query, key, value = as_grid(query), as_grid(key), as_grid(value)
      if self.axis in ('time', 'space'):
        out = _attend_along(query, key, value, self.axis, **kwargs)
      else:
        if self.num_heads % 2:
          raise ValueError(f'ViViT factorised_dot_product needs an even num_heads, got {self.num_heads}')
        half = self.num_heads // 2
        out = jnp.concatenate([
            _attend_along(query[..., :half, :], key[..., :half, :], value[..., :half, :], 'time', **kwargs),
            _attend_along(query[..., half:, :], key[..., half:, :], value[..., half:, :], 'space', **kwargs),
        ], axis=-2)
      out = out.reshape(b, n, self.num_heads, head_dim)
    out = nn.with_logical_constraint(out, HEADS)
    return _DenseGeneral((d,), contract=2, kernel_axes=('heads', 'kv', 'embed'), bias_axes=('embed',),
                         dtype=self.dtype, name='out')(out)


# Recomputed in the backward pass from its input: saving tanh-GELU's intermediates keeps three more
# [B, N, mlp_dim] buffers per layer, which scanned layers also stack and copy (docs/benchmarks.md).
_gelu = jax.checkpoint(nn.gelu)


class Mlp(nn.Module):
  """Transformer MLP: Dense(M) -> GELU -> dropout -> Dense(D) -> dropout."""
  mlp_dim: int
  dropout_rate: float
  deterministic: bool
  dtype: Any

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    y = dense(self.mlp_dim, name='hidden',
              kernel_init=_param_init(nn.initializers.xavier_uniform(), 'embed', 'mlp'),
              bias_init=_param_init(nn.initializers.normal(stddev=1e-6), 'mlp'))(x)
    y = nn.with_logical_constraint(_gelu(y), HIDDEN)
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
                               implementation=self.attention_implementation, dtype=self.dtype)
    if self.attention == 'factorised_self_attention':
      stages = [('temporal_', 'time'), ('spatial_', 'space')]
    else:
      stages = [('', 'time_and_space' if self.attention == 'factorised_dot_product' else 'joint')]
    for prefix, axis in stages:
      y = _layer_norm(f'{prefix}attention_norm', self.dtype)(x)
      y = attend(axis=axis, name=f'{prefix}attention')(y)
      y = nn.Dropout(self.dropout_rate)(y, self.deterministic)
      x = x + self._drop_path(y, drop_rate)
    y = _layer_norm('mlp_norm', self.dtype)(x)
    y = Mlp(self.mlp_dim, self.dropout_rate, self.deterministic, self.dtype, name='mlp')(y)
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
                      attention_implementation=self.attention_implementation, dtype=self.dtype)
    drop_rates = self.drop_rates()
    if self.scan_layers:
      scanned = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                        in_axes=0, length=self.num_layers,
                        metadata_params={nn.PARTITION_NAME: 'layers'})
      x, _ = scanned(**block_args, name='layers')(x, jnp.asarray(drop_rates))
    else:
      for index in range(self.num_layers):
        x, _ = block(**block_args, name=f'layers_{index}')(x, drop_rates[index])
    return _layer_norm('encoder_norm', jnp.float32)(x)


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
  remat_policy: str = 'none'
  scan_layers: bool = True
  attention_implementation: str = 'xla'
  dtype: str = 'float32'

  def _check(self):
    choices = dict(variant=VARIANTS, classifier=('token', 'mean'),
                   position_embedding=('learned', 'sinusoidal_3d', 'none'),
                   patch_embedding=('tubelet', 'frame_2d'), dtype=('float32', 'bfloat16'),
                   attention_implementation=ATTENTION_IMPLEMENTATIONS)
    for field, allowed in choices.items():
      if getattr(self, field) not in allowed:
        raise ValueError(f'ViViT {field}: expected one of {allowed}, got {getattr(self, field)!r}')
    if self.classifier == 'token' and self.variant in ('factorised_self_attention',
                                                       'factorised_dot_product'):
      raise ValueError(f"ViViT variant {self.variant!r} has no CLS token: set classifier='mean'")
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
        dtype=dtype)
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
      out = encoder(num_layers=self.num_layers, attention=attention, grid=(t, h * w),
                    name='encoder')(x.reshape(b, t * h * w, d), train=train)
      tokens = out[:, int(has_cls):].reshape(b, t, h, w, d)
      pooled = out[:, 0] if has_cls else None
    tokens = nn.with_logical_constraint(tokens, GRID)
    return tokens, pooled


def _layer_subtrees(params: dict, stacked: bool):
  """Yields the dicts (at any depth) holding scanned 'layers' or unrolled 'layers_<i>' entries."""
  if not isinstance(params, dict):
    return
  if ('layers' in params) if stacked else ('layers_0' in params):
    yield params
  for value in params.values():
    yield from _layer_subtrees(value, stacked)


def stack_layers(params: dict) -> dict:
  """Params of a scan_layers=False model -> the same params for scan_layers=True (plain dicts)."""
  params = plain_params(params)
  for tree in list(_layer_subtrees(params, stacked=False)):
    names = sorted((k for k in tree if k.startswith('layers_')), key=lambda k: int(k[7:]))
    tree['layers'] = jax.tree.map(lambda *xs: jnp.stack(xs), *[tree.pop(k) for k in names])
  return params


def unstack_layers(params: dict) -> dict:
  """Params of a scan_layers=True model -> the same params for scan_layers=False (plain dicts)."""
  params = plain_params(params)
  for tree in list(_layer_subtrees(params, stacked=True)):
    stacked = tree.pop('layers')
    count = jax.tree.leaves(stacked)[0].shape[0]
    for index in range(count):
      tree[f'layers_{index}'] = jax.tree.map(lambda x, i=index: x[i], stacked)
  return params


def plain_params(tree):
  """Nested plain dicts of arrays (boxed logical-partitioning metadata removed)."""
  tree = nn.meta.unbox(tree)
  if hasattr(tree, 'items'):
    return {key: plain_params(value) for key, value in tree.items()}
  return tree


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
  model = ViViT(**model_config)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, *input_shape, 3)), train=False))
  return num_params(shapes)


def num_params(tree) -> int:
  """Elements over every leaf of a param tree (arrays or jax.ShapeDtypeStructs)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _print_table(sizes: Sequence[str], input_shape: Sequence[int]):
  """Markdown table of params and GFLOPs per clip for every variant and size."""
  print(f'| model | variant | params (M) | GFLOPs per clip ({"x".join(map(str, input_shape))}) |')
  print('|---|---|---|---|')
  for size in sizes:
    for variant in VARIANTS:
      config = vivit_config(f'{size}/16x2', variant=variant)
      print(f'| {size}/16x2 | {variant} | {count_params(config, input_shape) / 1e6:.1f} | '
            f'{flops_per_clip(config, input_shape) / 1e9:.0f} |')


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description='ViViT parameter counts and FLOPs per clip.')
  parser.add_argument('--count', action='store_true', help='print the table for docs/models.md')
  parser.add_argument('--sizes', default='B,L')
  parser.add_argument('--input_shape', default='32,224,224')
  args = parser.parse_args()
  if args.count:
    _print_table(args.sizes.split(','), [int(v) for v in args.input_shape.split(',')])
