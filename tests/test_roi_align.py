"""RoIAlign against a loop-by-loop numpy transcription of torchvision's documented algorithm."""
import jax
import numpy as np
import pytest

from vivit_cofinetune.models.roi_align import roi_align


def _bilinear(feature, y, x):
  """One bilinear sample of feature [h, w, D] with torchvision's border rules."""
  h, w, _ = feature.shape
  if y < -1.0 or y > h or x < -1.0 or x > w:
    return np.zeros(feature.shape[-1])
  y, x = max(y, 0.0), max(x, 0.0)
  y0, x0 = int(y), int(x)
  if y0 >= h - 1:
    y0 = y1 = h - 1
    y = float(y0)
  else:
    y1 = y0 + 1
  if x0 >= w - 1:
    x0 = x1 = w - 1
    x = float(x0)
  else:
    x1 = x0 + 1
  ly, lx = y - y0, x - x0
  return ((1 - ly) * (1 - lx) * feature[y0, x0] + (1 - ly) * lx * feature[y0, x1] +
          ly * (1 - lx) * feature[y1, x0] + ly * lx * feature[y1, x1])


def _reference(features, boxes, size, ratio, aligned):
  b, h, w, d = features.shape
  out = np.zeros((b, boxes.shape[1], size, size, d))
  offset = 0.5 if aligned else 0.0
  for i in range(b):
    for n in range(boxes.shape[1]):
      y1, x1, y2, x2 = boxes[i, n] * np.array([h, w, h, w])
      y1, x1, y2, x2 = y1 - offset, x1 - offset, y2 - offset, x2 - offset
      height, width = y2 - y1, x2 - x1
      if not aligned:
        height, width = max(height, 1.0), max(width, 1.0)
      for py in range(size):
        for px in range(size):
          total = np.zeros(d)
          for iy in range(ratio):
            for ix in range(ratio):
              y = y1 + py * height / size + (iy + 0.5) * height / size / ratio
              x = x1 + px * width / size + (ix + 0.5) * width / size / ratio
              total += _bilinear(features[i], y, x)
          out[i, n, py, px] = total / ratio**2
  return out


@pytest.mark.parametrize('aligned', [True, False])
def test_matches_reference_on_non_square_map_with_border_boxes(aligned):
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
  boxes = np.array([
      [[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.6, 0.9], [0.9, 0.95, 1.0, 1.0]],
      [[0.0, 0.0, 0.05, 0.05], [0.3, 0.3, 0.3, 0.3], [-0.2, 0.5, 1.3, 1.2]],  # tiny, empty, outside
  ], np.float32)
  got = jax.jit(roi_align, static_argnums=(2, 3, 4))(features, boxes, 3, 2, aligned)
  np.testing.assert_allclose(got, _reference(features, boxes, 3, 2, aligned), atol=1e-5)


def test_box_on_one_cell_with_one_sample_reads_that_cell():
  features = np.arange(4 * 6 * 2, dtype=np.float32).reshape(1, 4, 6, 2)
  # Cell (2, 3) spans [2, 3] x [3, 4] in pixels: its centre sample is exactly the cell value.
  boxes = np.array([[[2 / 4, 3 / 6, 3 / 4, 4 / 6]]], np.float32)
  got = roi_align(features, boxes, output_size=1, sampling_ratio=1)
  np.testing.assert_allclose(got[0, 0, 0, 0], features[0, 2, 3])


def test_rejects_bad_shapes():
  with pytest.raises(ValueError, match='boxes'):
    roi_align(np.zeros((1, 4, 4, 2)), np.zeros((1, 4)), 2, 2)
