"""Softmax attention kernels on [B, N, H, K] query, key and value (plain XLA, cuDNN and splash), and
the 3D rotary position code that V-JEPA 2 applies to queries and keys.

`attend` picks the kernel; `attend_along` runs it over one axis of a [B, t, s, H, K] token grid, as
the factorised ViViT variants need. The model (models/vivit.py) owns the projections around them.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

# 'xla': plain XLA softmax attention (any backend). 'cudnn': cuDNN's fused flash attention (NVIDIA
# GPUs, bfloat16, head dim a multiple of 8). 'splash': the Pallas splash (flash) attention kernel for
# TPUs. The fused ones never build the [N, N] weights, which at ViViT-L's 3,137 tokens per clip are
# most of the activation memory.
ATTENTION_IMPLEMENTATIONS = ('xla', 'cudnn', 'splash')
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
  _, n, heads, k = query.shape
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


def attend(query, key, value, *, implementation: str, dropout_rate: float = 0.0,
           dropout_rng: Callable[[], jax.Array] | None = None) -> jnp.ndarray:
  """Softmax attention on [B, N, H, K] -> [B, N, H, K].

  dropout_rng: None at inference; in training a function returning a fresh key for the
  attention-weight dropout, which only the plain XLA kernel can apply (the fused ones are used
  whenever the weights are not dropped).
  """
  fused = dropout_rng is None or dropout_rate == 0.0
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
    keep = jax.random.bernoulli(dropout_rng(), 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  return jnp.einsum('bhqv,bhvk->bhqk', weights.astype(value.dtype), value).transpose(0, 2, 1, 3)


def attend_along(query, key, value, axis: str, **kwargs) -> jnp.ndarray:
  """`attend` over one axis of [B, t, s, H, K] tensors: 'time' (t) or 'space' (s)."""
  b, t, s, heads, k = query.shape
  if axis == 'time':
    fold = lambda x: x.transpose(0, 2, 1, 3, 4).reshape(b * s, t, heads, k)
    out = attend(fold(query), fold(key), fold(value), **kwargs)
    return out.reshape(b, s, t, heads, k).transpose(0, 2, 1, 3, 4)
  fold = lambda x: x.reshape(b * t, s, heads, k)
  return attend(fold(query), fold(key), fold(value), **kwargs).reshape(b, t, s, heads, k)


def rope_3d_tables(grid: tuple[int, int, int], head_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin) [t*h*w, 3 * part] of the 3D rotary position code, part = 2 * (head_dim // 6).

  V-JEPA 2's layout: the first `part` channels of a head rotate with the token's frame index, the
  next `part` with its row, the next with its column, and the rest (head_dim - 3 * part) are left
  alone. Within one part, channel pair (2i, 2i + 1) rotates by position * omega_{i mod part/2},
  omega_j = 10000^(-j / (part / 2)): the frequencies repeat over the part's two halves.
  """
  part = 2 * ((head_dim // 3) // 2)
  omega = 1.0 / 10_000 ** (np.arange(part // 2, dtype=np.float64) / (part / 2))
  positions = np.stack(np.meshgrid(*(np.arange(size) for size in grid), indexing='ij'), -1)
  positions = positions.reshape(-1, 3).astype(np.float64)
  angles = np.concatenate([np.tile(positions[:, axis:axis + 1] * omega, 2) for axis in range(3)],
                          axis=1)
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope_3d(x: jnp.ndarray, grid: tuple[int, int, int]) -> jnp.ndarray:
  """Rotates queries or keys [B, N, H, K] (N = t*h*w tokens, time-major) by their 3D position."""
  cos, sin = rope_3d_tables(grid, x.shape[-1])
  rotated, rest = x[..., :cos.shape[1]], x[..., cos.shape[1]:]
  # (x_2i, x_2i+1) -> (-x_2i+1, x_2i): the quarter turn of every channel pair.
  turned = jnp.stack([-rotated[..., 1::2], rotated[..., 0::2]], axis=-1).reshape(rotated.shape)
  cos, sin = (jnp.asarray(table[:, None, :], x.dtype) for table in (cos, sin))
  return jnp.concatenate([rotated * cos + turned * sin, rest], axis=-1)
