"""RoIAlign (Detectron2 / torchvision semantics) on a [B, h, w, D] feature map, as dense einsums.

Bilinear interpolation on a grid of sample points is separable: each output bin is the mean of
sampling_ratio x sampling_ratio bilinear samples, and both the bilinear weights and the mean factor
into a row part and a column part. So a box becomes two small weight matrices, [output_size, h] and
[output_size, w], and pooling is two matmuls: no gathers, static shapes, jit- and shard-friendly.
"""
import jax.numpy as jnp


def _axis_weights(start: jnp.ndarray, end: jnp.ndarray, size: int, output_size: int,
                  sampling_ratio: int, aligned: bool) -> jnp.ndarray:
  """Weights [..., output_size, size] averaging the bilinear samples of each bin along one axis.

  start, end: [...] box edges in feature-map pixels (the map spans [0, size]).
  """
  if aligned:  # pixel centres sit at integer + 0.5
    start, end = start - 0.5, end - 0.5
    extent = end - start
  else:  # torchvision forces boxes to be at least one pixel wide when not aligned
    extent = jnp.maximum(end - start, 1.0)
  bin_size = extent / output_size
  # Sample k of bin i sits at start + (i + (k + 0.5) / sampling_ratio) * bin_size.
  offsets = (jnp.arange(output_size)[:, None] +
             (jnp.arange(sampling_ratio)[None, :] + 0.5) / sampling_ratio)
  points = start[..., None, None] + offsets * bin_size[..., None, None]  # [..., out, ratio]
  # torchvision: samples more than one pixel outside the map contribute zero; others are clamped.
  inside = (points >= -1.0) & (points <= size)
  points = jnp.clip(points, 0.0, size - 1)
  low = jnp.floor(points)
  fraction = points - low
  low = low.astype(jnp.int32)
  high = jnp.minimum(low + 1, size - 1)
  cells = jnp.arange(size)
  weights = ((cells == low[..., None]) * (1.0 - fraction[..., None]) +
             (cells == high[..., None]) * fraction[..., None])  # [..., out, ratio, size]
  weights = jnp.where(inside[..., None], weights, 0.0)
  return weights.mean(axis=-2)


def roi_align(features: jnp.ndarray, boxes: jnp.ndarray, output_size: int, sampling_ratio: int,
              aligned: bool = True) -> jnp.ndarray:
  """Pools features [B, h, w, D] inside boxes [B, N, 4] -> [B, N, output_size, output_size, D].

  Boxes are (y1, x1, y2, x2) normalised to [0, 1] of the map (multiplied by h and w).
  sampling_ratio (> 0) bilinear samples per bin side are averaged (torchvision's adaptive
  sampling_ratio <= 0 is not offered: it would make shapes depend on the boxes).
  """
  if features.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
    raise ValueError(f'roi_align: expected features [B, h, w, D] and boxes [B, N, 4], '
                     f'got {features.shape} and {boxes.shape}')
  if sampling_ratio <= 0:
    raise ValueError(f'roi_align: sampling_ratio must be positive, got {sampling_ratio}')
  _, h, w, _ = features.shape
  boxes = boxes.astype(jnp.float32)
  row_weights = _axis_weights(boxes[..., 0] * h, boxes[..., 2] * h, h, output_size, sampling_ratio,
                              aligned)
  column_weights = _axis_weights(boxes[..., 1] * w, boxes[..., 3] * w, w, output_size,
                                 sampling_ratio, aligned)
  rows = jnp.einsum('bnyh,bhwd->bnywd', row_weights.astype(features.dtype), features)
  return jnp.einsum('bnxw,bnywd->bnyxd', column_weights.astype(features.dtype), rows)
