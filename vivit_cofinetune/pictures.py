"""Images for TensorBoard and the docs: per-class AP by training frequency and annotated evaluation
keyframes. (The study's charts are matplotlib figures: experiments/charts.py.)"""
from collections.abc import Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

GROUP_COLOURS = {'head': (66, 133, 244), 'mid': (251, 188, 5), 'tail': (234, 67, 53)}
_BACKGROUND = (255, 255, 255)
_TEXT = (30, 30, 30)


def per_class_ap_chart(names: Sequence[str], average_precision: Sequence[float],
                       train_counts: Sequence[int], groups: Sequence[str]) -> np.ndarray:
  """Bar chart uint8 [H, W, 3]: one bar per class, most frequent in training on the left.

  Bar height is the class's AP, colour its frequency group; the training count is written under it.
  """
  order = np.argsort(-np.asarray(train_counts), kind='stable')
  bar_width, gap, plot_height, margin, name_length = 28, 6, 200, 30, 110
  plot_top = 20  # below the legend
  width = margin * 2 + len(order) * (bar_width + gap)
  height = plot_top + plot_height + 32 + name_length
  image = Image.new('RGB', (max(width, 240), height), _BACKGROUND)
  draw = ImageDraw.Draw(image)
  for slot, (group, colour) in enumerate(GROUP_COLOURS.items()):
    draw.rectangle([margin + 20 + 60 * slot, 4, margin + 30 + 60 * slot, 14], fill=colour)
    draw.text((margin + 34 + 60 * slot, 3), group, fill=_TEXT)
  draw.line([(margin, plot_top), (margin, plot_top + plot_height)], fill=_TEXT)
  draw.text((2, plot_top), 'AP 1', fill=_TEXT)
  draw.text((2, plot_top + plot_height - 10), '0', fill=_TEXT)
  for slot, index in enumerate(order):
    left = margin + gap + slot * (bar_width + gap)
    ap = average_precision[index]
    if np.isfinite(ap):
      top = plot_top + plot_height * (1.0 - float(np.clip(ap, 0.0, 1.0)))
      draw.rectangle([left, top, left + bar_width, plot_top + plot_height],
                     fill=GROUP_COLOURS.get(groups[index], (150, 150, 150)))
    draw.text((left, plot_top + plot_height + 4), str(train_counts[index]), fill=_TEXT)
    # Names are written vertically (rotated text) so that long AVA class names fit.
    label = Image.new('RGB', (name_length, 12), _BACKGROUND)
    ImageDraw.Draw(label).text((0, 0), names[index][:18], fill=_TEXT)
    image.paste(label.rotate(90, expand=True), (left + 8, plot_top + plot_height + 18))
  return np.asarray(image)


def annotated_keyframe(frame: np.ndarray, boxes: np.ndarray, captions: Sequence[str],
                       truth_boxes: np.ndarray, scale: int = 6) -> np.ndarray:
  """Keyframe uint8 [H*scale, W*scale, 3] with predicted boxes (green, captioned) and truth (white).

  frame: float [H, W, 3] in [0, 1]; boxes, truth_boxes: [N, 4] (y1, x1, y2, x2) in [0, 1].
  """
  pixels = (np.clip(frame, 0.0, 1.0) * 255).astype(np.uint8)
  image = Image.fromarray(pixels).resize((frame.shape[1] * scale, frame.shape[0] * scale),
                                         Image.NEAREST)
  draw = ImageDraw.Draw(image)
  size = np.array([image.height, image.width, image.height, image.width], np.float64)
  for box in truth_boxes:
    y1, x1, y2, x2 = box * size
    draw.rectangle([x1, y1, x2, y2], outline=(255, 255, 255), width=1)
  for box, caption in zip(boxes, captions):
    y1, x1, y2, x2 = box * size
    draw.rectangle([x1, y1, x2, y2], outline=(0, 220, 0), width=2)
    for line_index, line in enumerate(caption.split('\n')):
      draw.text((x1 + 2, y1 + 2 + 11 * line_index), line, fill=(0, 255, 0))
  return np.asarray(image)
