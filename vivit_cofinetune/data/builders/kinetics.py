"""Kinetics-400, -600 and -700-2020 from the official CSVs and the downloaded clips.

  python -m vivit_cofinetune.data.prepare kinetics700 --manual_dir=DIR --data_dir=DIR

--manual_dir holds `annotations/{train,validate,test}.csv` (`val.csv` is accepted; columns
`label,youtube_id,time_start,time_end,split[,is_cc]`, the test CSV without labels) and the clips
`<youtube_id>_<start:06d>_<end:06d>.<ext>` under `train/`, `val/` (or `validate/`) and `test/`, flat or
in per-label folders. Class ids are the positions of the label names in the sorted train CSV labels.
"""
import csv
import os

from etils import epath
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import video_builder

_SPLITS = {  # split -> (CSV names, clip folders), first found wins
    'train': (('train.csv',), ('train',)),
    'validation': (('validate.csv', 'val.csv'), ('val', 'validate')),
    'test': (('test.csv',), ('test',)),
}


class _Kinetics(video_builder.ClipClassificationBuilder, skip_registration=True):
  """Kinetics clips of 10 s from YouTube, one human action class each."""
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: clips as JPEG frames.'}
  ANNOTATION_PATTERNS = ('annotations/*.csv',)
  BUILDER_CONFIGS = video_builder.clip_configs(fps=25)
  HOMEPAGE = 'https://github.com/cvdfoundation/kinetics-dataset'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download the Kinetics annotations and clips (for example with the CVDF mirror) into '
      '--manual_dir: annotations/{train,validate,test}.csv and train/, val/, test/ (docs/data.md).')

  def _split_names(self, manual_dir: epath.Path) -> list[str]:
    has_test = (manual_dir / 'annotations' / 'test.csv').exists()
    return ['train', 'validation'] + ['test'] * has_test

  def _csv(self, manual_dir: epath.Path, split: str) -> list[dict[str, str]]:
    names, _ = _SPLITS[split]
    paths = [manual_dir / 'annotations' / name for name in names]
    path = next((path for path in paths if path.exists()), paths[0])
    video_builder.read_csv_rows(path, f'the Kinetics {split} CSV')  # a clear error when missing
    with open(os.fspath(path), newline='') as file:
      rows = list(csv.DictReader(file))
    for column in ('youtube_id', 'time_start', 'time_end'):
      if rows and column not in rows[0]:
        raise ValueError(f'{path}: expected a header with label,youtube_id,time_start,time_end,'
                         f'split; column {column!r} is missing')
    return rows

  def _class_names(self, manual_dir: epath.Path) -> list[str]:
    return sorted({row['label'] for row in self._csv(manual_dir, 'train')})

  def _clips(self, manual_dir: epath.Path, split: str) -> list[video_builder.Clip]:
    class_index = {name: index for index, name in enumerate(self._class_names(manual_dir))}
    _, folders = _SPLITS[split]
    videos = {}
    for folder in folders:
      videos.update(video_builder.find_videos(manual_dir / folder))
    clips = []
    for row in self._csv(manual_dir, split):
      clip_id = (f'{row["youtube_id"]}_{int(float(row["time_start"])):06d}_'
                 f'{int(float(row["time_end"])):06d}')
      label = row.get('label') or ''
      if label and label not in class_index:
        raise ValueError(f'Kinetics {split} CSV: label {label!r} of {clip_id} is not a train label')
      clips.append(video_builder.Clip(clip_id, videos.get(clip_id),
                                      class_index[label] if label else -1))
    return clips


class Kinetics400(_Kinetics):
  name = 'kinetics400'


class Kinetics600(_Kinetics):
  name = 'kinetics600'


class Kinetics700(_Kinetics):
  name = 'kinetics700'
