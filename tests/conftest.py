"""Shared pytest set-up: TensorFlow off any GPU and quiet; the tiny synthetic datasets, built once;
one compilation cache for the whole session.

The cache: many tests compile the same tiny programs (the demo's steps at the tests' size, in this
process and in the subprocesses of the multi-device and multi-host tests, which inherit the
environment). jax reads these variables when it is first imported, so they are set before that;
runs whose config sets compilation_cache=False use this cache (train.py).
"""
import os
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      tempfile.mkdtemp(prefix='vivit_tests_compilation_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

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
