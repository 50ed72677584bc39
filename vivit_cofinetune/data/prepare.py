"""Prepares a dataset from its official release: `python -m vivit_cofinetune.data.prepare DATASET`.

  python -m vivit_cofinetune.data.prepare ava_v2_2 --manual_dir=~/ava --data_dir=~/tensorflow_datasets
  python -m vivit_cofinetune.data.prepare kinetics700/tiny --manual_dir=DIR --data_dir=DIR

DATASET is one of ava_v2_2, ava_kinetics, kinetics400, kinetics600, kinetics700, moments_in_time, ssv2,
optionally with a builder config (`/default`, `/tiny`, AVA also `/fps15`). Videos are decoded in
parallel (--num_workers, default the host's cores) with a progress bar; bad videos are skipped and
listed in skipped.csv in the prepared dataset's folder. Records are ArrayRecord files, which the input
pipeline reads by index. `tfds build --imports=vivit_cofinetune.data.builders DATASET --manual_dir=...
--file_format=array_record` builds the same thing (without the flag: TFRecord, read sequentially).
docs/data.md gives each release's layout, disk size and time.
"""
import argparse
import os
import sys
import time
from collections.abc import Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune.data import builders  # registers the builders
from vivit_cofinetune.data.builders import video_builder

DATASETS = ('ava_v2_2', 'ava_kinetics', 'kinetics400', 'kinetics600', 'kinetics700',
            'moments_in_time', 'ssv2')


def prepare(dataset: str, *, manual_dir: str, data_dir: str, num_workers: int | None = None,
            max_skipped_fraction: float = 0.1) -> tfds.core.DatasetBuilder:
  """Builds `dataset` (name[/config]) from the release in `manual_dir` into `data_dir`."""
  name = dataset.partition('/')[0]
  if name not in DATASETS:
    raise ValueError(f'DATASET={dataset!r}: expected one of {", ".join(DATASETS)} '
                     '(optionally /config)')
  manual_dir, data_dir = (os.path.abspath(os.path.expanduser(path)) for path in (manual_dir, data_dir))
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f'--manual_dir={manual_dir}: not a directory')
  # ArrayRecord: the input pipeline reads it by index, so a resumed run reads nothing it skips.
  builder = tfds.builder(dataset, data_dir=data_dir, num_workers=num_workers,
                         max_skipped_fraction=max_skipped_fraction, file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog='\n'.join(__doc__.splitlines()[1:]))
  parser.add_argument('dataset', help=f'one of {", ".join(DATASETS)}, optionally /config')
  parser.add_argument('--manual_dir', required=True, help='the official release, as downloaded')
  parser.add_argument('--data_dir', required=True, help='where TFDS datasets live (config.data_dir)')
  parser.add_argument('--num_workers', type=int, default=None,
                      help='decoding threads (default: the host cores)')
  parser.add_argument('--max_skipped_fraction', type=float, default=0.1,
                      help='fail when more of a split\'s videos than this are missing or bad')
  args = parser.parse_args(argv)
  tf.config.set_visible_devices([], 'GPU')
  start = time.monotonic()
  try:
    builder = prepare(args.dataset, manual_dir=args.manual_dir, data_dir=args.data_dir,
                      num_workers=args.num_workers, max_skipped_fraction=args.max_skipped_fraction)
  except (FileNotFoundError, ValueError, video_builder.SkippedVideos) as error:
    sys.exit(f'prepare {args.dataset}: {error}')
  sizes = ', '.join(f'{split} {info.num_examples}' for split, info in builder.info.splits.items())
  print(f'Prepared {builder.info.full_name} in {builder.data_dir} ({sizes} examples) in '
        f'{time.monotonic() - start:.0f} s', flush=True)


if __name__ == '__main__':
  main()
