"""Shared pytest set-up: TensorFlow off any GPU and quiet; the tiny synthetic datasets, built once."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import pathlib

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

tf.config.set_visible_devices([], 'GPU')

from vivit_cofinetune.data import builders  # pylint: disable=unused-import,g-bad-import-order

TINY_DATASETS = ('synthetic_actions_cls/tiny', 'synthetic_actions_loc/tiny')


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> pathlib.Path:
  """A TFDS data_dir holding the tiny synthetic datasets, shared by every test of the session."""
  path = tmp_path_factory.mktemp('tfds')
  for name in TINY_DATASETS:
    tfds.builder(name, data_dir=str(path)).download_and_prepare()
  return path
