"""Task heads on the ViViT token grid: clip classification and per-box (RoI) action classification.

Each head's output layer is zero-initialised (kernel and bias), so a new head starts at zero logits.
Params: {'output': {'kernel': [D, C], 'bias': [C]}}.
"""
import flax.linen as nn
import jax.numpy as jnp

from vivit_cofinetune.models.roi_align import roi_align


def _output_layer(num_classes: int) -> nn.Dense:
  return nn.Dense(
      num_classes, name='output',
      kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ('embed', 'classes')),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ('classes',)))


class ClassificationHead(nn.Module):
  """(tokens [B, t, h, w, D], cls_token [B, D] | None) -> logits [B, C].

  pooling: 'mean' over all tokens, or 'token' (the backbone's pooled vector: CLS output, or the
  temporal encoder's video representation for the factorised encoder).
  """
  num_classes: int
  pooling: str = 'mean'
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, cls_token: jnp.ndarray | None, *, train: bool) -> jnp.ndarray:
    if self.pooling == 'mean':
      pooled = tokens.mean(axis=(1, 2, 3))
    elif self.pooling == 'token':
      if cls_token is None:
        raise ValueError("ClassificationHead pooling='token' needs a backbone with classifier='token'")
      pooled = cls_token
    else:
      raise ValueError(f"ClassificationHead pooling: expected 'mean' or 'token', got {self.pooling!r}")
    pooled = nn.Dropout(self.dropout_rate)(pooled.astype(jnp.float32), deterministic=not train)
    return _output_layer(self.num_classes)(pooled)


class RoIActionHead(nn.Module):
  """(tokens [B, t, h, w, D], boxes [B, N, 4] y1x1y2x2 in [0, 1]) -> logits [B, N, C].

  Temporal mean, aligned RoIAlign (roi_size x roi_size bins, sampling_ratio^2 bilinear samples
  each), spatial max over the bins, dropout, linear.
  """
  num_classes: int
  roi_size: int = 7
  sampling_ratio: int = 2
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, tokens: jnp.ndarray, boxes: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if tokens.ndim != 5:
      raise ValueError(f'RoIActionHead: expected tokens [B, t, h, w, D], got {tokens.shape}')
    frame = tokens.astype(jnp.float32).mean(axis=1)
    regions = roi_align(frame, boxes, self.roi_size, self.sampling_ratio, aligned=True)
    pooled = regions.max(axis=(2, 3))
    pooled = nn.Dropout(self.dropout_rate)(pooled, deterministic=not train)
    return _output_layer(self.num_classes)(pooled)
