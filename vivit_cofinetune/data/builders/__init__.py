"""TFDS builders of this project; importing the package registers them all with TFDS.

Synthetic sets render themselves; the others read an official release from --manual_dir
(`python -m vivit_cofinetune.data.prepare DATASET ...` or `tfds build`). The user's own datasets
(ava_format.py, video_folder.py) are prepared under the user's names by `data.prepare` alone, so
they are not registered; once prepared, TFDS reads them by name like the others.
"""
# pylint: disable=unused-import
from vivit_cofinetune.data.builders import ava
from vivit_cofinetune.data.builders import kinetics
from vivit_cofinetune.data.builders import moments_in_time
from vivit_cofinetune.data.builders import ssv2
from vivit_cofinetune.data.builders import synthetic
