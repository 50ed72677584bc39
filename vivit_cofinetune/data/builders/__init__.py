"""TFDS builders of this project; importing the package registers them with TFDS."""
from vivit_cofinetune.data.builders import synthetic  # pylint: disable=unused-import
