"""TensorBoard pictures: bars and boxes land where the numbers say."""
import numpy as np

from vivit_cofinetune import pictures


def coloured_rows(image: np.ndarray, column: int, colour) -> np.ndarray:
  """Rows of `column` painted `colour`, below the legend (whose swatches use the same colours)."""
  below_legend = 16
  return below_legend + np.flatnonzero(np.all(image[below_legend:, column] == colour, axis=-1))


def test_bars_are_ordered_by_training_count_and_as_tall_as_the_ap():
  # Given in the order tail, head: the chart must put the head class (count 50) first.
  image = pictures.per_class_ap_chart(['rare', 'common'], [0.25, 1.0], [2, 50], ['tail', 'head'])
  # Layout: margin 30, gap 6, bar width 28, plot 200 px tall from y=20 (AP 1) to y=220 (AP 0).
  first_bar_middle, second_bar_middle = 30 + 6 + 14, 30 + 6 + 34 + 14
  head_rows = coloured_rows(image, first_bar_middle, pictures.GROUP_COLOURS['head'])
  tail_rows = coloured_rows(image, second_bar_middle, pictures.GROUP_COLOURS['tail'])
  assert (head_rows.min(), head_rows.max()) == (20, 220)
  assert (tail_rows.min(), tail_rows.max()) == (20 + 150, 220)


def test_keyframe_boxes_are_drawn_at_their_scaled_position():
  frame = np.zeros((10, 20, 3), np.float32)
  boxes = np.array([[0.1, 0.25, 0.5, 0.75]])  # y1, x1, y2, x2
  image = pictures.annotated_keyframe(frame, boxes, [''], np.zeros((0, 4)), scale=4)
  assert image.shape == (40, 80, 3)
  green = np.all(image == (0, 220, 0), axis=-1)
  rows, columns = np.nonzero(green)
  # Box corners at y = 0.1 * 40 = 4 .. 0.5 * 40 = 20, x = 0.25 * 80 = 20 .. 0.75 * 80 = 60.
  assert (rows.min(), rows.max(), columns.min(), columns.max()) == (4, 20, 20, 60)
