"""Tests of the video ops against indices, windows and boxes worked out by hand."""
import numpy as np
import pytest
import tensorflow as tf

from vivit_cofinetune.data import video_ops


def _seed(value: int) -> tf.Tensor:
  return tf.constant([value, 7], tf.int64)


@pytest.mark.parametrize('pad_mode, expected', [('loop', [6, 8, 0, 2]), ('clamp', [6, 8, 9, 9])])
def test_clip_indices_pad_short_videos(pad_mode, expected):
  # Frames 6, 8, 10, 12 of a 10-frame video: the last two are past the end.
  indices = video_ops.clip_indices(10, 6, num_frames=4, stride=2, pad_mode=pad_mode)
  np.testing.assert_array_equal(indices.numpy(), expected)


def test_clip_indices_rejects_unknown_pad_mode():
  with pytest.raises(ValueError, match='pad_mode'):
    video_ops.clip_indices(10, 0, num_frames=4, stride=2, pad_mode='mirror')


def test_random_clip_start_stays_in_range_and_is_seeded():
  # 30 frames, clip of 8 at stride 2 spans 15 frames: starts 0..15.
  starts = [int(video_ops.random_clip_start(_seed(s), 30, 8, 2)) for s in range(200)]
  assert min(starts) == 0 and max(starts) == 15
  assert starts == [int(video_ops.random_clip_start(_seed(s), 30, 8, 2)) for s in range(200)]
  # Shorter than the span: the only start is 0 (the clip then loops).
  assert {int(video_ops.random_clip_start(_seed(s), 10, 8, 2)) for s in range(20)} == {0}


def test_keyframe_clip_start_puts_keyframe_in_the_middle():
  start = video_ops.keyframe_clip_start(8, num_frames=8, stride=2)
  indices = video_ops.clip_indices(16, start, 8, 2, 'clamp').numpy()
  assert int(start) == 0 and indices[4] == 8
  assert int(video_ops.keyframe_clip_start(8, 8, 2, jitter=-3)) == -3
  jitters = {int(video_ops.random_jitter(_seed(s), 2)) for s in range(100)}
  assert jitters == {-2, -1, 0, 1, 2}


@pytest.mark.parametrize('length, num_clips, expected', [
    (30, 3, [0, 7, 15]),  # last start 30 - 15 = 15; 7.5 floors to 7
    (30, 1, [7]),  # the centre clip
    (30, 2, [0, 15]),
    (10, 3, [0, 0, 0]),  # shorter than a clip: all start at 0
])
def test_evenly_spaced_clip_starts(length, num_clips, expected):
  starts = video_ops.evenly_spaced_clip_starts(length, num_frames=8, stride=2, num_clips=num_clips)
  np.testing.assert_array_equal(starts.numpy(), expected)


@pytest.mark.parametrize('height, width, num_crops, expected', [
    (40, 60, 3, [[0, 0, 40, 40], [0, 10, 40, 40], [0, 20, 40, 40]]),
    (40, 60, 1, [[0, 10, 40, 40]]),
    (60, 40, 3, [[0, 0, 40, 40], [10, 0, 40, 40], [20, 0, 40, 40]]),
])
def test_spatial_crop_windows(height, width, num_crops, expected):
  windows = video_ops.spatial_crop_windows(height, width, num_crops)
  np.testing.assert_array_equal(windows.numpy(), expected)


def test_crop_video_matches_numpy_slicing():
  video = np.arange(2 * 40 * 60 * 3, dtype=np.float32).reshape(2, 40, 60, 3)
  cropped = video_ops.crop_video(tf.constant(video), tf.constant([10, 20, 20, 30]))
  np.testing.assert_array_equal(cropped.numpy(), video[:, 10:30, 20:50])


def test_crop_boxes_by_hand():
  # Frame 40 x 60 pixels, crop window rows 10..30, columns 20..50.
  pixel_boxes = np.array([
      [12, 26, 22, 41],  # inside
      [5, 40, 15, 56],  # partly outside: 31% of its area visible
      [0, 0, 12, 24],  # mostly outside: 3% visible
      [32, 25, 38, 35],  # below the crop
  ], np.float32)
  boxes = pixel_boxes / np.array([40, 60, 40, 60], np.float32)
  cropped, keep = video_ops.crop_boxes(tf.constant(boxes), tf.constant([10, 20, 20, 30]), 40, 60,
                                       min_visible_fraction=0.25)
  expected = np.array([
      [2 / 20, 6 / 30, 12 / 20, 21 / 30],
      [0, 20 / 30, 5 / 20, 1],
      [0, 0, 2 / 20, 4 / 30],
      [1, 5 / 30, 1, 15 / 30],
  ])
  np.testing.assert_allclose(cropped.numpy(), expected, atol=1e-6)
  np.testing.assert_array_equal(keep.numpy(), [True, True, False, False])
  # The partly visible box is dropped once more than its visible fraction is required.
  _, strict = video_ops.crop_boxes(tf.constant(boxes), tf.constant([10, 20, 20, 30]), 40, 60,
                                   min_visible_fraction=0.35)
  np.testing.assert_array_equal(strict.numpy(), [True, False, False, False])


def test_flip_keeps_boxes_on_the_flipped_pixels():
  video = np.zeros((1, 10, 20, 3), np.float32)
  video[0, 2:6, 3:8] = 1  # box rows 2..6, columns 3..8
  box = np.array([[2 / 10, 3 / 20, 6 / 10, 8 / 20]], np.float32)
  flipped_box = video_ops.flip_boxes(tf.constant(box)).numpy()
  np.testing.assert_allclose(flipped_box, [[0.2, 12 / 20, 0.6, 17 / 20]], atol=1e-6)
  flipped = video_ops.flip_video(tf.constant(video)).numpy()
  rows, cols = np.nonzero(flipped[0, ..., 0])
  np.testing.assert_allclose([rows.min() / 10, cols.min() / 20, (rows.max() + 1) / 10,
                              (cols.max() + 1) / 20], flipped_box[0], atol=1e-6)


def test_random_crop_window_is_seeded_and_inside_the_frame():
  windows = np.stack([video_ops.random_crop_window(_seed(s), 40, 60, (0.3, 1.0)).numpy()
                      for s in range(100)])
  again = video_ops.random_crop_window(_seed(3), 40, 60, (0.3, 1.0)).numpy()
  np.testing.assert_array_equal(windows[3], again)
  y0, x0, height, width = windows.T
  assert (y0 >= 0).all() and (x0 >= 0).all()
  assert (y0 + height <= 40).all() and (x0 + width <= 60).all()
  area = height * width / (40 * 60)
  # Rounding to pixels can take a crop a little under the smallest area asked for.
  assert area.min() >= 0.27 and area.max() <= 1.0
  assert len({tuple(w) for w in windows}) > 50


def test_random_flip_is_a_seeded_fair_coin():
  flips = [bool(video_ops.random_flip(_seed(s))) for s in range(400)]
  assert flips == [bool(video_ops.random_flip(_seed(s))) for s in range(400)]
  assert 150 < sum(flips) < 250


def test_resize_and_normalise():
  video = np.full((2, 10, 14, 3), 204, np.uint8)
  resized = video_ops.resize(tf.constant(video), 8).numpy()
  assert resized.shape == (2, 8, 8, 3) and resized.dtype == np.float32
  np.testing.assert_allclose(resized, 204)
  normalised = video_ops.normalise(tf.constant(resized), (0.5, 0.4, 0.3), (0.5, 0.2, 0.1)).numpy()
  np.testing.assert_allclose(normalised[0, 0, 0], [(0.8 - 0.5) / 0.5, (0.8 - 0.4) / 0.2,
                                                   (0.8 - 0.3) / 0.1], rtol=1e-5)


def _numpy_bilinear(image: np.ndarray, size: int) -> np.ndarray:
  """Half-pixel-centre bilinear resize of image [H, W] to [size, size], by hand."""
  def weights(length: int):
    centres = (np.arange(size) + 0.5) * length / size - 0.5
    low = np.clip(np.floor(centres).astype(int), 0, length - 1)
    high = np.clip(low + 1, 0, length - 1)
    fraction = np.clip(centres - np.floor(centres), 0, 1) * (centres >= 0)
    return low, high, fraction
  row_low, row_high, row_fraction = weights(image.shape[0])
  column_low, column_high, column_fraction = weights(image.shape[1])
  rows = (image[row_low] * (1 - row_fraction[:, None]) + image[row_high] * row_fraction[:, None])
  return (rows[:, column_low] * (1 - column_fraction) + rows[:, column_high] * column_fraction)


@pytest.mark.parametrize('height,width,size', [(12, 20, 8), (5, 7, 16), (30, 30, 30)])
def test_uint8_resize_of_a_ramp_matches_numpy_bilinear(height, width, size):
  ramp = (np.add.outer(np.arange(height) * 7.0, np.arange(width) * 3.0) % 256).astype(np.uint8)
  video = np.repeat(ramp[None, :, :, None], 3, axis=-1)[[0, 0]]  # [2, H, W, 3]
  resized = video_ops.resize_uint8(tf.constant(video), size).numpy()
  assert resized.dtype == np.uint8 and resized.shape == (2, size, size, 3)
  expected = np.floor(_numpy_bilinear(ramp.astype(np.float64), size) + 0.5)
  np.testing.assert_array_equal(resized[0, ..., 0], expected)
  np.testing.assert_array_equal(resized[1, ..., 2], expected)


def test_letterbox_keeps_the_aspect_ratio_and_boxes_stay_on_their_pixels():
  # A 20 x 40 frame (1:2) with a white box at rows 5-10, columns 20-30, on black.
  frame = np.zeros((1, 20, 40, 3), np.uint8)
  frame[0, 5:10, 20:30] = 255
  video, placement = video_ops.letterbox(tf.constant(frame), 32, pad_value=(100.0, 100.0, 100.0))
  video, placement = video.numpy(), placement.numpy()
  # The long side fills the square; the picture is 16 rows high, centred: rows 8..23.
  np.testing.assert_allclose(placement, [8 / 32, 0.0, 16 / 32, 1.0])
  assert (video[0, :8] == 100).all() and (video[0, 24:] == 100).all()
  assert (video[0, 8:24] != 100).any(axis=-1).all()
  box = np.array([[5 / 20, 20 / 40, 10 / 20, 30 / 40]], np.float32)  # y1, x1, y2, x2 of the frame
  y1, x1, y2, x2 = video_ops.place_boxes(tf.constant(box), tf.constant(placement)).numpy()[0] * 32
  np.testing.assert_allclose([y1, x1, y2, x2], [8 + 4, 16, 8 + 8, 24])
  assert video[0, int(y1) + 1:int(y2) - 1, int(x1) + 1:int(x2) - 1].min() > 200
