"""Localisation examples: the clip around a keyframe; ground-truth boxes for training, every
confident detector box of the whole (letterboxed) frame for evaluation.

Record fields: `keyframe_index`, `timestamp`, `gt_boxes` [M, 4] (y1, x1, y2, x2 in [0, 1]),
`gt_labels` multi-hot [M, C], `detector_boxes` [K, 4], `detector_scores` [K].
"""
from absl import logging
import tensorflow as tf

from vivit_cofinetune.data import video_ops
from vivit_cofinetune.tasks import examples


def eval_frames(frames: tf.Tensor, *, crop_size: int, mean: tuple[float, ...],
                eval_resize: str = 'letterbox') -> tuple[tf.Tensor, tf.Tensor]:
  """Whole eval frames uint8 [T, crop_size, crop_size, 3], and where the picture lies on them.

  'letterbox' keeps the aspect ratio (the long side fits, the rest is the mean colour, which the
  device normalises to 0); 'stretch' resizes to the square. The placement [4] (y0, x0, h, w) in [0, 1]
  maps frame boxes onto the model input. tools/visualise.py prepares a video's frames with it, exactly
  as evaluation does.
  """
  if eval_resize == 'stretch':
    return video_ops.resize_uint8(frames, crop_size), tf.constant([0.0, 0.0, 1.0, 1.0])
  pad_value = tuple(255.0 * value for value in mean)
  video, placement = video_ops.letterbox(frames, crop_size, pad_value)
  return tf.cast(tf.round(tf.clip_by_value(video, 0.0, 255.0)), tf.uint8), placement


class LocalisationExamples(examples.TaskExamples):
  """Clips are centred on the keyframe (frames past either end repeat the end frame)."""

  counts_train_classes = True

  def __init__(self, settings, task_config, source):
    super().__init__(settings, task_config, source)
    if not task_config.get('max_boxes'):
      raise ValueError(f'config.tasks.{settings.task}.max_boxes is required by the input pipeline '
                       f'of a localisation task but is not set.')
    # Boxes per training example are fixed by the config.
    self.max_boxes = int(task_config.max_boxes)

  def train_frame_indices(self, example, time_seed, length):
    settings = self.settings
    jitter = video_ops.random_jitter(time_seed, settings.temporal_jitter)
    start = video_ops.keyframe_clip_start(example['keyframe_index'], settings.num_frames,
                                          settings.frame_stride, jitter)
    return video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride, 'clamp')

  def train_targets(self, example, *, flip, window, height, width):
    boxes, keep = video_ops.crop_boxes(example['gt_boxes'], window, height, width,
                                       self.settings.min_box_visible)
    boxes = tf.cond(flip, lambda: video_ops.flip_boxes(boxes), lambda: boxes)
    labels = self.flipped_classes(tf.cast(example['gt_labels'], tf.float32), flip, axis=1)
    return {'boxes': examples.pad_rows(boxes, self.max_boxes),
            'box_mask': examples.pad_rows(keep, self.max_boxes),
            'labels': examples.pad_rows(labels, self.max_boxes)}

  def describe_training_set(self):
    """Says how many training keyframes hold more people than max_boxes (their extra boxes are cut)."""
    people = self.source.split_metadata(self.settings.train_split).get('people_per_keyframe')
    crowded = sum(people[self.max_boxes + 1:]) if people else 0
    if crowded:
      logging.warning('config.tasks.%s: %d of %d training keyframes have more than max_boxes=%d '
                      'people (up to %d); training sees only the first %d boxes of each.',
                      self.settings.task, crowded, sum(people), self.max_boxes, len(people) - 1,
                      self.max_boxes)

  def _eval_boxes(self) -> int:
    """Box rows per eval example: enough for every detection and person of any keyframe."""
    stored = self.source.split_metadata(self.settings.eval_split)
    people = len(stored.get('people_per_keyframe', [])) - 1
    return max(self.max_boxes, stored.get('max_detections', 0), people)

  def eval_views(self, video_index, example):
    """One view: every detection above the score threshold, `boxes` on the model input and
    `frame_boxes` on the original frame (for the CSV)."""
    settings, reader = self.settings, self.source.reader
    rows = self._eval_boxes()
    video = reader.open(example['video'])
    length, height, width = reader.size(video)
    start = video_ops.keyframe_clip_start(example['keyframe_index'], settings.num_frames,
                                          settings.frame_stride)
    indices = video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride,
                                     'clamp')
    # The whole frame goes in (no crop), so that no detection is cut off.
    video, placement = eval_frames(reader.read(video, indices, tf.stack([0, 0, height, width])),
                                   crop_size=settings.crop_size, mean=settings.mean,
                                   eval_resize=settings.eval_resize)
    confident = example['detector_scores'] >= settings.detector_score_threshold
    scores = tf.boolean_mask(example['detector_scores'], confident)
    order = tf.argsort(scores, direction='DESCENDING', stable=True)
    frame_boxes = tf.gather(tf.boolean_mask(example['detector_boxes'], confident), order)
    scores = tf.gather(scores, order)
    view = {'video': video, 'mask': tf.constant(True),
            'video_index': tf.cast(video_index, tf.int32),
            'timestamp': tf.cast(example['timestamp'], tf.int32),
            'boxes': examples.pad_rows(video_ops.place_boxes(frame_boxes, placement), rows),
            'frame_boxes': examples.pad_rows(frame_boxes, rows),
            'box_mask': examples.pad_rows(tf.ones_like(scores, tf.bool), rows),
            'box_scores': examples.pad_rows(scores, rows),
            'gt_boxes': examples.pad_rows(example['gt_boxes'], rows),
            'gt_box_mask': examples.pad_rows(tf.ones(tf.shape(example['gt_boxes'])[:1], tf.bool),
                                             rows),
            'gt_labels': examples.pad_rows(tf.cast(example['gt_labels'], tf.float32), rows)}
    return {key: value[None] for key, value in view.items()}
