"""Prepares a dataset: `python -m vivit_cofinetune.data.prepare DATASET --manual_dir=DIR --data_dir=DIR`.

  python -m vivit_cofinetune.data.prepare ava_v2_2 --manual_dir=~/ava --data_dir=~/tensorflow_datasets
  python -m vivit_cofinetune.data.prepare kinetics700/tiny --manual_dir=DIR --data_dir=DIR
  python -m vivit_cofinetune.data.prepare ava_format --name=NAME --manual_dir=DIR --data_dir=DIR
  python -m vivit_cofinetune.data.prepare video_folder --name=NAME --manual_dir=DIR --data_dir=DIR

DATASET is an official release (ava_v2_2, ava_kinetics, kinetics400, kinetics600, kinetics700,
moments_in_time, ssv2) or the user's own data: `ava_format` (localisation in AVA's format with its own
classes) or `video_folder` (labelled clips in class folders or list files), prepared under --name,
the name a task's `dataset.name` then gives. Each takes a builder config (`/default`, `/tiny`, AVA and
ava_format also `/fps15`). Videos are decoded in parallel (--num_workers, default the host's cores)
with a progress bar; bad videos are skipped and listed in skipped.csv in the prepared dataset's
folder. Records are ArrayRecord files, which the input pipeline reads by index.

A prepared dataset keeps a fingerprint of the annotation files it was built from: running prepare
again on a changed release stops and says which files changed (--overwrite rebuilds). The official
releases also build with `tfds build --imports=vivit_cofinetune.data.builders DATASET --manual_dir=...
--file_format=array_record` (without the flag: TFRecord, read sequentially). docs/data.md gives each
layout, disk size and time.
"""
import argparse
import os
import re
import sys
import time
from collections.abc import Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune.data import builders  # registers the builders
from vivit_cofinetune.data.builders import ava_format
from vivit_cofinetune.data.builders import video_builder
from vivit_cofinetune.data.builders import video_folder

DATASETS = ('ava_v2_2', 'ava_kinetics', 'kinetics400', 'kinetics600', 'kinetics700',
            'moments_in_time', 'ssv2')
# The user's own data, prepared under a name of the user's.
CUSTOM_BUILDERS = {'ava_format': ava_format.AvaFormat, 'video_folder': video_folder.VideoFolder}


class StaleDataset(RuntimeError):
  """The prepared dataset was built from other annotation files than the release holds now."""


def prepare(dataset: str, *, manual_dir: str, data_dir: str, num_workers: int | None = None,
            max_skipped_fraction: float = 0.1, name: str | None = None,
            frames_fps: float | None = None, overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds `dataset` (name[/config]) from the release in `manual_dir` into `data_dir`.

  `name` names an `ava_format` or `video_folder` dataset; `frames_fps` is the rate of an
  `ava_format` release's frame folders; `overwrite` rebuilds a dataset that is already prepared.
  """
  kind, _, config = dataset.partition('/')
  if kind not in DATASETS and kind not in CUSTOM_BUILDERS:
    raise ValueError(f'DATASET={dataset!r}: expected one of '
                     f'{", ".join(DATASETS + tuple(CUSTOM_BUILDERS))} (optionally /config)')
  manual_dir, data_dir = (os.path.abspath(os.path.expanduser(path)) for path in (manual_dir, data_dir))
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'--manual_dir={manual_dir}: not a directory')
  # ArrayRecord: the input pipeline reads it by index, so a resumed run reads nothing it skips.
  options = dict(data_dir=data_dir, num_workers=num_workers,
                 max_skipped_fraction=max_skipped_fraction, file_format='array_record')
  if kind in CUSTOM_BUILDERS:
    _check_name(name, kind)
    if kind == 'ava_format':
      options['frames_fps'] = frames_fps
    elif frames_fps:
      raise ValueError('--frames_fps: only ava_format reads frame folders')
    builder = CUSTOM_BUILDERS[kind](name=name, manual_dir=manual_dir, config=config or None,
                                    **options)
  else:
    if name or frames_fps:
      raise ValueError(f'--name and --frames_fps are for ava_format and video_folder; {kind} is '
                       'an official release with its own name and layout')
    builder = tfds.builder(dataset, **options)
  mode = _build_mode(builder, epath.Path(manual_dir), overwrite)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir, download_mode=mode))
  return builder


def _check_name(name: str | None, kind: str) -> None:
  if not name:
    raise ValueError(f'give the {kind} dataset a name with --name=NAME (a task then reads it with '
                     'dataset.name=NAME)')
  if not re.fullmatch(r'[a-z][a-z0-9_]*', name):
    raise ValueError(f'--name={name!r}: expected lower-case letters, digits and underscores, '
                     'starting with a letter (a TFDS dataset name)')
  if name in tfds.core.registered.list_imported_builders() or name in CUSTOM_BUILDERS:
    raise ValueError(f'--name={name!r} is the name of a registered dataset; choose another')


def _build_mode(builder: tfds.core.DatasetBuilder, manual_dir: epath.Path,
                overwrite: bool) -> tfds.download.GenerateMode:
  """Rebuild on --overwrite; reuse a dataset built from the same annotations; stop on others."""
  if not builder.is_prepared():
    return tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
  if overwrite:
    print(f'Rebuilding {builder.info.full_name} in {builder.data_dir} (--overwrite)', flush=True)
    return tfds.download.GenerateMode.FORCE_REDOWNLOAD
  stored = builder.info.metadata.get('annotation_fingerprints')
  current = builder.annotation_fingerprints(manual_dir)
  if stored is None:
    print(f'{builder.info.full_name} in {builder.data_dir} holds no fingerprint of its annotations, '
          'so a changed release cannot be detected; --overwrite rebuilds it', flush=True)
  elif dict(stored) != current:
    changed = sorted(path for path in set(stored) | set(current)
                     if stored.get(path) != current.get(path))
    raise StaleDataset(f'{builder.data_dir} was prepared from other annotations than {manual_dir} '
                       f'holds now ({", ".join(changed)} changed); rerun with --overwrite to '
                       'rebuild it')
  return tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog='\n'.join(__doc__.splitlines()[1:]))
  parser.add_argument('dataset', help=f'one of {", ".join(DATASETS + tuple(CUSTOM_BUILDERS))}, '
                      'optionally /config')
  parser.add_argument('--manual_dir', required=True, help='the release, as downloaded or made')
  parser.add_argument('--data_dir', required=True, help='where TFDS datasets live (config.data_dir)')
  parser.add_argument('--name', default=None,
                      help='ava_format and video_folder: the dataset\'s name (a task\'s dataset.name)')
  parser.add_argument('--frames_fps', type=float, default=None,
                      help='ava_format: frames per second of the frames/<video_id>/ folders')
  parser.add_argument('--overwrite', action='store_true',
                      help='rebuild the dataset if it is already prepared')
  parser.add_argument('--num_workers', type=int, default=None,
                      help='decoding threads (default: the host cores)')
  parser.add_argument('--max_skipped_fraction', type=float, default=0.1,
                      help='fail when more of a split\'s videos than this are missing or bad')
  args = parser.parse_args(argv)
  tf.config.set_visible_devices([], 'GPU')
  start = time.monotonic()
  try:
    builder = prepare(args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir,
                      num_workers=args.num_workers, max_skipped_fraction=args.max_skipped_fraction,
                      name=args.name, frames_fps=args.frames_fps, overwrite=args.overwrite)
  except (FileNotFoundError, ValueError, video_builder.SkippedVideos, StaleDataset) as error:
    sys.exit(f'prepare {args.dataset}: {error}')
  sizes = ', '.join(f'{split} {info.num_examples}' for split, info in builder.info.splits.items())
  print(f'Prepared {builder.info.full_name} in {builder.data_dir} ({sizes} examples) in '
        f'{time.monotonic() - start:.0f} s', flush=True)
  if builder.info.metadata.get('multi_label'):
    print(f'{builder.name} is multi-label: its task needs multi_label=True', flush=True)


if __name__ == '__main__':
  main()
