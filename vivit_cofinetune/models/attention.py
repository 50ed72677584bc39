"""Softmax attention kernels on [B, N, H, K] query, key and value: plain XLA, cuDNN and splash.

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
