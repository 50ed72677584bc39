"""A task kind defined here, in the test file, trains and evaluates through the trainer's code path.

The kind, 'brightness', regresses each clip's mean pixel value (a target the data side computes from
the video itself, so any video dataset serves): a Dense head on the pooled tokens, squared-error
loss, mean absolute error against predicting the eval set's mean. No package file knows it: one
`tasks.register` call makes `kind='brightness'` a valid config value.
"""
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from test_train import tiny_config
from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_checks
from vivit_cofinetune import config_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune import train
from vivit_cofinetune.data import video_ops
from vivit_cofinetune.tasks import base
from vivit_cofinetune.tasks import examples

KIND = 'brightness'


class BrightnessHead(nn.Module):
  @nn.compact
  def __call__(self, tokens, pooled, train: bool = False):
    del train
    features = pooled if pooled is not None else tokens.mean(axis=(1, 2, 3))
    return nn.Dense(1, kernel_init=nn.initializers.zeros, name='output')(features)[:, 0]


class BrightnessTask(base.Task):
  """Model side: head, loss, evaluation."""

  def __init__(self, name, config, info=None):
    super().__init__(name, config, info)
    self.head = BrightnessHead()

  def train_batch_shapes(self, batch_size):
    return dict(super().train_batch_shapes(batch_size),
                brightness=jax.ShapeDtypeStruct((batch_size,), jnp.float32))

  def head_args(self, tokens, cls_token, batch):
    return (tokens, cls_token)

  def loss_and_metrics(self, logits, batch):
    mask = batch['mask'].astype(jnp.float32)
    loss = (((logits - batch['brightness']) ** 2) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return loss, {'loss': loss}

  def eval_outputs(self, logits, batch):
    return {'prediction': logits, 'brightness': batch['brightness'], 'mask': batch['mask']}

  def evaluate(self, outputs, *, video_ids, output_dir):
    del video_ids, output_dir
    real = outputs['mask']
    truth, prediction = outputs['brightness'][real], outputs['prediction'][real]
    return {'mean_absolute_error': float(np.abs(prediction - truth).mean()),
            'chance_mean_absolute_error': float(np.abs(truth.mean() - truth).mean()),
            'num_clips': float(real.sum())}


def _brightness(video: tf.Tensor) -> tf.Tensor:
  """Mean pixel value in [0, 1] of uint8 frames."""
  return tf.reduce_mean(tf.cast(video, tf.float32)) / 255.0


class BrightnessExamples(examples.TaskExamples):
  """Data side: a random clip for training, the centre clip for evaluation, target from pixels."""

  def train_frame_indices(self, example, time_seed, length):
    settings = self.settings
    start = video_ops.random_clip_start(time_seed, length, settings.num_frames, settings.frame_stride)
    return video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride, 'loop')

  def train_targets(self, example, *, flip, window, height, width):
    return {}  # computed from the augmented clip in train_example

  def train_example(self, example, seed):
    augmented = super().train_example(example, seed)
    return dict(augmented, brightness=_brightness(augmented['video']))

  def eval_views(self, video_index, example):
    settings, reader = self.settings, self.source.reader
    video = reader.open(example['video'])
    length, height, width = reader.size(video)
    start = video_ops.evenly_spaced_clip_starts(length, settings.num_frames, settings.frame_stride,
                                                1)[0]
    indices = video_ops.clip_indices(length, start, settings.num_frames, settings.frame_stride,
                                     'loop')
    clip = video_ops.resize_uint8(reader.read(video, indices, tf.stack([0, 0, height, width])),
                                  settings.crop_size)
    view = {'video': clip, 'brightness': _brightness(clip), 'mask': tf.constant(True),
            'video_index': tf.cast(video_index, tf.int32)}
    return {key: value[None] for key, value in view.items()}


@pytest.fixture(scope='module', autouse=True)
def registered():
  tasks_lib.register(KIND, BrightnessTask, BrightnessExamples)
  yield
  del tasks_lib.TASK_KINDS[KIND]


def brightness_config(data_dir: pathlib.Path, steps: int = 8):
  """The tiny demo run with its classification task turned into a brightness task."""
  config = tiny_config(data_dir, steps=steps)
  task = config.tasks.synthetic_cls
  task.kind = KIND
  del task['label_smoothing']
  return config


def test_an_unregistered_kind_is_one_config_error(data_dir):
  config = brightness_config(data_dir)
  config.tasks.synthetic_cls.kind = 'brightnes'
  with pytest.raises(config_lib.ConfigError, match=r"config.tasks.synthetic_cls.kind='brightnes'"):
    config_checks.validate_config(config, num_devices=1)


@pytest.mark.slow
def test_a_kind_defined_in_a_test_file_trains_and_evaluates_through_the_trainer(data_dir, tmp_path):
  config = brightness_config(data_dir)
  results = train.train_and_evaluate(config, str(tmp_path))
  metrics = results['synthetic_cls']
  # Every eval clip was scored once (padding left out), and the head trained away from its zero init.
  num_eval = tfds.builder('synthetic_actions_cls/tiny', data_dir=str(data_dir)).info.splits[
      'validation'].num_examples
  assert metrics['num_clips'] == num_eval
  assert np.isfinite(metrics['mean_absolute_error'])
  kernel = checkpoint.read_params(tmp_path)['heads']['synthetic_cls']['output']['kernel']
  assert np.abs(kernel).max() > 0.0
  # The built-in kind beside it still trained and evaluated.
  assert 'mAP' in results['synthetic_loc']
  written = json.loads((tmp_path / 'eval_results.json').read_text())
  assert written['synthetic_cls']['num_clips'] == num_eval
