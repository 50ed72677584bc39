"""A classification dataset from the user's own labelled clips: `prepare video_folder`.

  python -m vivit_cofinetune.data.prepare video_folder --name=NAME --manual_dir=DIR --data_dir=DIR

DIR is laid out in one of two ways (docs/data.md, "Your own dataset"):
- class folders: `DIR/train/<class name>/<video>` and `DIR/val/<class name>/<video>`; the classes are
  the sorted folder names of train/, a clip's id is `<class name>/<file stem>`;
- list files (MMAction2's): `DIR/train.txt` and `DIR/val.txt` with one clip a line,
  `relative/path label_index [label_index ...]` (the path relative to DIR, no spaces), and
  `DIR/classes.txt` with one class name a line, line i naming index i (from 0). A clip's id is its
  path without the extension. A line with several indices makes the whole dataset multi-label
  (records hold a multi-hot `label`; set the task's `multi_label=True`).

Clips are stored like Kinetics' (the ClipClassificationBuilder's frames, configs and bad-video
handling). The dataset is named NAME, so a task trains on it with `dataset.name = NAME`.
"""
import dataclasses
import hashlib
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import video_builder

_SPLITS = {'train': 'train', 'validation': 'val'}
CLASSES_FILE = 'classes.txt'


@dataclasses.dataclass(frozen=True)
class _Release:
  """What the release's files say: its classes and each split's clips."""
  class_names: list[str]
  clips: dict[str, list[video_builder.Clip]]
  multi_label: bool


class VideoFolder(video_builder.ClipClassificationBuilder, skip_registration=True):
  """The user's labelled clips, prepared under the user's name for them.

  Not registered with TFDS: it needs its name and release to exist. Once prepared, TFDS reads the
  dataset by its name from the data dir like any other.
  """
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: clips as JPEG frames.'}
  BUILDER_CONFIGS = video_builder.clip_configs(fps=25)
  HOMEPAGE = ''
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put train/ and val/ class folders, or list files, into --manual_dir.'
  ANNOTATION_PATTERNS = ('train.txt', 'val.txt', CLASSES_FILE)

  def __init__(self, *, name: str, manual_dir: str, **kwargs):
    """`name`: the dataset's name; `manual_dir`: the release (multi-label or not shapes records)."""
    self.name = name
    self._release = _read_release(epath.Path(manual_dir))
    super().__init__(**kwargs)

  def _label_feature(self):
    if self._release.multi_label:
      return tfds.features.Tensor(shape=(len(self._release.class_names),), dtype=np.bool_)
    return super()._label_feature()

  def _info(self) -> tfds.core.DatasetInfo:
    info = super()._info()
    info.metadata['multi_label'] = self._release.multi_label
    return info

  def annotation_fingerprints(self, manual_dir: epath.Path) -> dict[str, str]:
    """The list files' hashes, or for class folders a hash of every clip's path and class."""
    fingerprints = super().annotation_fingerprints(manual_dir)
    if not fingerprints:
      listing = '\n'.join(f'{split} {clip.clip_id} {clip.path is not None}'
                          for split, clips in sorted(self._release.clips.items()) for clip in clips)
      fingerprints['train/ and val/ (clip list)'] = hashlib.sha256(listing.encode()).hexdigest()
    return fingerprints

  def _class_names(self, manual_dir: epath.Path) -> list[str]:
    del manual_dir
    return self._release.class_names

  def _clips(self, manual_dir: epath.Path, split: str) -> list[video_builder.Clip]:
    del manual_dir
    return self._release.clips[split]


def _read_release(root: epath.Path) -> _Release:
  if (root / 'train.txt').exists():
    return _read_list_files(root)
  if (root / 'train').is_dir():
    return _read_class_folders(root)
  raise FileNotFoundError(f'{root}: expected class folders train/<class>/<video> and val/... or list '
                          'files train.txt, val.txt with classes.txt (see docs/data.md)')


def _read_class_folders(root: epath.Path) -> _Release:
  class_names = sorted(path.name for path in (root / 'train').iterdir() if path.is_dir())
  if not class_names:
    raise ValueError(f'{root / "train"}: no class folders')
  clips = {}
  for split, folder in _SPLITS.items():
    if not (root / folder).is_dir():
      raise video_builder.missing_file_error(root / folder, f'the {folder} class folders')
    clips[split] = []
    for class_folder in sorted(path for path in (root / folder).iterdir() if path.is_dir()):
      if class_folder.name not in class_names:
        raise ValueError(f'{class_folder}: class {class_folder.name!r} has no folder in train/')
      videos = video_builder.find_videos(class_folder)
      clips[split] += [video_builder.Clip(f'{class_folder.name}/{stem}', videos[stem],
                                          class_names.index(class_folder.name))
                       for stem in sorted(videos)]
  return _Release(class_names, clips, multi_label=False)


def _read_list_files(root: epath.Path) -> _Release:
  classes = root / CLASSES_FILE
  if not classes.exists():
    raise video_builder.missing_file_error(classes, 'the class names, one a line')
  class_names = [line.strip() for line in classes.read_text().splitlines() if line.strip()]
  if len(set(class_names)) != len(class_names):
    raise ValueError(f'{classes}: class names must be unique')
  lines = {}
  for split, stem in _SPLITS.items():
    path = root / f'{stem}.txt'
    if not path.exists():
      raise video_builder.missing_file_error(path, f'the {stem} list: `relative/path label` lines')
    lines[split] = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
      fields = line.split()
      if not fields:
        continue
      labels = fields[1:]
      if not labels or not all(label.isdigit() and int(label) < len(class_names)
                               for label in labels):
        raise ValueError(f'{path}:{line_number}: expected `relative/path label_index ...` with '
                         f'indices 0..{len(class_names) - 1} of {CLASSES_FILE}, got {line!r}')
      lines[split].append((fields[0], [int(label) for label in labels]))
  multi_label = any(len(labels) > 1 for split_lines in lines.values() for _, labels in split_lines)
  clips = {}
  for split, split_lines in lines.items():
    clips[split] = []
    for relative_path, labels in split_lines:
      path = root / relative_path
      label = int(labels[0])
      if multi_label:
        label = np.zeros(len(class_names), bool)
        label[labels] = True
      clips[split].append(video_builder.Clip(os.path.splitext(relative_path)[0],
                                             os.fspath(path) if path.is_file() else None, label))
  return _Release(class_names, clips, multi_label)
