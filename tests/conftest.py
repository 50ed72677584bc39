"""Shared pytest set-up: keep TensorFlow off any GPU and quiet."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # pylint: disable=g-import-not-at-top

tf.config.set_visible_devices([], 'GPU')
