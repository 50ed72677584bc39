"""Moments in Time: 3-second clips of 339 everyday events, from the official release.

  python -m vivit_cofinetune.data.prepare moments_in_time --manual_dir=DIR --data_dir=DIR

--manual_dir holds `moments_categories.txt` (`name,index` lines), `trainingSet.csv` and
`validationSet.csv` (rows `label/file.mp4,label,agreement,disagreement`) and the clips under
`training/` and `validation/` at the paths the CSVs give.
"""
import os

from etils import epath
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import video_builder

_SPLITS = {'train': ('trainingSet.csv', 'training'), 'validation': ('validationSet.csv', 'validation')}


class MomentsInTime(video_builder.ClipClassificationBuilder):
  """Moments in Time v1: one event class per clip."""
  name = 'moments_in_time'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: clips as JPEG frames.'}
  ANNOTATION_PATTERNS = ('moments_categories.txt', '*Set.csv')
  BUILDER_CONFIGS = video_builder.clip_configs(fps=25)
  HOMEPAGE = 'http://moments.csail.mit.edu/'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download Moments in Time (http://moments.csail.mit.edu/) and unpack it into --manual_dir: '
      'moments_categories.txt, trainingSet.csv, validationSet.csv, training/, validation/.')

  def _class_names(self, manual_dir: epath.Path) -> list[str]:
    path = manual_dir / 'moments_categories.txt'
    rows = video_builder.read_csv_rows(path, 'the Moments in Time class list')
    names = {}
    for line_number, row in enumerate(rows, start=1):
      if len(row) != 2 or not row[1].strip().isdigit():
        raise ValueError(f'{path}:{line_number}: expected `name,index`, got {row!r}')
      names[int(row[1])] = row[0]
    if sorted(names) != list(range(len(names))):
      raise ValueError(f'{path}: class indices must be 0..{len(names) - 1}')
    return [names[index] for index in range(len(names))]

  def _clips(self, manual_dir: epath.Path, split: str) -> list[video_builder.Clip]:
    class_index = {name: index for index, name in enumerate(self._class_names(manual_dir))}
    csv_name, folder = _SPLITS[split]
    path = manual_dir / csv_name
    clips = []
    for line_number, row in enumerate(video_builder.read_csv_rows(path, f'the {split} list'), 1):
      if len(row) < 2 or row[1] not in class_index:
        raise ValueError(f'{path}:{line_number}: expected `label/file,label,...` with a label of '
                         f'moments_categories.txt, got {row!r}')
      file = manual_dir / folder / row[0]
      clips.append(video_builder.Clip(os.path.splitext(row[0])[0],
                                      os.fspath(file) if file.exists() else None,
                                      class_index[row[1]]))
    return clips
