"""Classification examples: a random clip of the video for training; evenly spaced clips times
spatial crops (the views, clip-major) for evaluation. `label` is an int, or multi-hot [C]."""
import tensorflow as tf

from vivit_cofinetune.data import video_ops
from vivit_cofinetune.tasks import examples


class ClassificationExamples(examples.TaskExamples):
  """Videos shorter than a clip loop; a flip maps each class to its mirror pair."""

  def train_frame_indices(self, example, time_seed, length):
    settings = self.settings
    start = video_ops.random_clip_start(time_seed, length, settings.num_frames, settings.frame_stride)
    return video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride, 'loop')

  def train_targets(self, example, *, flip, window, height, width):
    del window, height, width  # A clip's label does not depend on the crop.
    if example['label'].shape.rank == 1:  # multi-hot [C]
      return {'label': self.flipped_classes(tf.cast(example['label'], tf.float32), flip)}
    permutation = tf.constant(self.source.flip_permutation, tf.int32)
    label = tf.cast(example['label'], tf.int32)
    return {'label': tf.where(flip, tf.gather(permutation, label), label)}

  @property
  def num_eval_views(self):
    return self.settings.num_test_clips * self.settings.num_test_crops

  def eval_views(self, video_index, example):
    num_views = self.num_eval_views
    if example['label'].shape.rank == 1:  # multi-hot [C]
      label = tf.tile(tf.cast(example['label'], tf.float32)[None], [num_views, 1])
    else:
      label = tf.fill([num_views], tf.cast(example['label'], tf.int32))
    return {'video': self._views(example),
            'label': label,
            'video_index': tf.fill([num_views], tf.cast(video_index, tf.int32)),
            'view_index': tf.range(num_views, dtype=tf.int32),
            'mask': tf.ones([num_views], tf.bool)}

  def _views(self, example):
    """The evaluation views [clips * crops, T, crop, crop, 3] of one video, clip-major."""
    settings, reader = self.settings, self.source.reader
    video = reader.open(example['video'])
    length, height, width = reader.size(video)
    starts = video_ops.evenly_spaced_clip_starts(length, settings.num_frames, settings.frame_stride,
                                                 settings.num_test_clips)
    windows = video_ops.spatial_crop_windows(height, width, settings.num_test_crops)
    views = []
    for clip in range(settings.num_test_clips):
      indices = video_ops.clip_indices(length, starts[clip], settings.num_frames,
                                       settings.frame_stride, 'loop')
      for crop in range(settings.num_test_crops):
        views.append(video_ops.resize_uint8(reader.read(video, indices, windows[crop]),
                                            settings.crop_size))
    return tf.stack(views)
