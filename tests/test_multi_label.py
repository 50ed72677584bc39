"""A multi-label classification set through the pipeline, the task's loss and its evaluation."""
import numpy as np
import ml_collections
import pytest
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.tasks import base as tasks_base

CLASS_NAMES = ('left', 'right', 'red')


class MultiLabelClips(tfds.core.GeneratorBasedBuilder):
  """Six 4-frame clips with multi-hot labels; 'left' and 'right' swap under a flip.

  Channel 0 ramps up from left to right, so a batch shows whether its clip was mirrored; channel 1
  holds index * 40, naming the clip.
  """
  name = 'test_multi_label_clips'
  VERSION = tfds.core.Version('1.0.0')
  url_infos = None

  def _info(self):
    # DatasetInfo directly: dataset_info_from_configs looks for files beside a package module.
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'video': tfds.features.Tensor(shape=(4, 16, 16, 3), dtype=np.uint8),
            'label': tfds.features.Tensor(shape=(3,), dtype=np.bool_),
            'video_id': tfds.features.Text()}),
        metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES),
                                        flip_label_pairs=[['left', 'right']]))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(), 'validation': self._generate_examples()}

  def _generate_examples(self):
    for index in range(6):
      label = np.array([index % 2 == 0, index % 2 == 1, index % 3 == 0])
      video = np.zeros((4, 16, 16, 3), np.uint8)
      video[..., 0] = np.arange(16, dtype=np.uint8) * 16
      video[..., 1] = index * 40
      yield index, {'video': video, 'label': label, 'video_id': f'clip{index}'}


@pytest.fixture(scope='module')
def task_config(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('multi_label')
  tfds.builder('test_multi_label_clips', data_dir=str(data_dir)).download_and_prepare()
  config = config_lib.task_config(
      'classification', 'test_multi_label_clips', num_classes=3, batch_size=6, eval_batch_size=4,
      # Crops at least half the frame wide keep enough of the ramp to show its direction.
      input=config_lib.input_config(num_frames=2, crop_size=8, frame_stride=1, flip=True,
                                    min_crop_area=0.5, num_test_clips=2),
      multi_label=True)
  return config, str(data_dir)


def test_training_labels_are_multi_hot_and_swap_exactly_when_the_clip_is_mirrored(task_config):
  config, data_dir = task_config
  mirrored_draws = plain_draws = 0
  for batch in [next(pipeline.train_iterator(config, data_dir=data_dir, seed=seed))
                for seed in range(6)]:
    assert batch['label'].shape == (6, 3) and batch['label'].dtype == np.float32
    for video, label in zip(batch['video'], batch['label']):
      index = int(round(video[0, 0, 0, 1] / 40))
      ramp = video[0, 0, :, 0].astype(int)
      assert ramp[-1] != ramp[0], 'the crop lost the ramp'
      mirrored = ramp[-1] < ramp[0]
      # The 'red' bit never moves; 'left' and 'right' trade places exactly when the clip is mirrored.
      assert label[2] == (index % 3 == 0)
      left, right = (index % 2 == 1, index % 2 == 0) if mirrored else (index % 2 == 0, index % 2 == 1)
      np.testing.assert_array_equal(label[:2], [left, right], err_msg=f'clip {index}, mirrored={mirrored}')
      mirrored_draws += mirrored
      plain_draws += not mirrored
  assert mirrored_draws and plain_draws, (mirrored_draws, plain_draws)


def test_evaluation_gives_every_view_the_multi_hot_label_and_scores_map(task_config):
  config, data_dir = task_config
  evaluation = pipeline.eval_input(config, data_dir=data_dir)
  batches = list(evaluation.batches())
  label = np.concatenate([batch['label'] for batch in batches])
  mask = np.concatenate([batch['mask'] for batch in batches])
  video_index = np.concatenate([batch['video_index'] for batch in batches])
  assert label.shape[1:] == (3,) and mask.sum() == 12  # 6 videos x 2 clips
  task = tasks_lib.make_task('multi', ml_collections.ConfigDict(config), tasks_base.DatasetInfo(
      num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES), num_train_examples=0,
      train_class_counts=None))
  # Logits that rank every video's true classes above its false ones: mAP 1.
  logits = np.where(label > 0, 2.0, -2.0).astype(np.float32)
  outputs = {'logits': logits, 'label': label, 'mask': mask, 'video_index': video_index,
             'view_index': np.concatenate([batch['view_index'] for batch in batches])}
  metrics = task.evaluate(outputs, video_ids=evaluation.video_ids, output_dir=None)
  assert metrics == {'mAP': 1.0, 'num_videos': 6.0}
