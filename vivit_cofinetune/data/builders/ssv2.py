"""Something-Something v2: 174 template actions on objects, from the official release.

  python -m vivit_cofinetune.data.prepare ssv2 --manual_dir=DIR --data_dir=DIR

--manual_dir holds `20bn-something-something-v2/<id>.webm` and `labels/` with
`something-something-v2-{train,validation}.json` and `something-something-v2-labels.json`. Its classes
are not mirror-symmetric ("from left to right"): the metadata says so, and the input pipeline never
flips these clips.
"""
import json

from etils import epath
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import video_builder

_SPLIT_FILES = {'train': 'train', 'validation': 'validation'}


def _read_json(path: epath.Path, what: str):
  if not path.exists():
    raise video_builder.missing_file_error(path, what)
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as error:
    raise ValueError(f'{path}: not valid JSON ({error})') from error


def _template_name(template: str) -> str:
  """The class name of a template: labels.json writes `[something]` as `something`."""
  return template.replace('[', '').replace(']', '')


class Ssv2(video_builder.ClipClassificationBuilder):
  """Something-Something v2: one template class per clip; mirroring changes some classes."""
  name = 'ssv2'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: clips as JPEG frames.'}
  ANNOTATION_PATTERNS = ('labels/*.json',)
  BUILDER_CONFIGS = video_builder.clip_configs(fps=12)
  HOMEPAGE = 'https://developer.qualcomm.com/software/ai-datasets/something-something'
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download Something-Something v2 and unpack it into --manual_dir: '
      '20bn-something-something-v2/ and labels/ (docs/data.md).')
  MIRROR_SYMMETRIC = False

  def _class_names(self, manual_dir: epath.Path) -> list[str]:
    path = manual_dir / 'labels' / 'something-something-v2-labels.json'
    indices = _read_json(path, 'the class list (template -> index)')
    names = {int(index): name for name, index in indices.items()}
    if sorted(names) != list(range(len(names))):
      raise ValueError(f'{path}: class indices must be 0..{len(names) - 1}')
    return [names[index] for index in range(len(names))]

  def _clips(self, manual_dir: epath.Path, split: str) -> list[video_builder.Clip]:
    class_index = {name: index for index, name in enumerate(self._class_names(manual_dir))}
    path = manual_dir / 'labels' / f'something-something-v2-{_SPLIT_FILES[split]}.json'
    videos = video_builder.find_videos(manual_dir / '20bn-something-something-v2')
    clips = []
    for entry in _read_json(path, f'the {split} list'):
      name = _template_name(entry.get('template', ''))
      if 'id' not in entry or name not in class_index:
        raise ValueError(f'{path}: entry {entry!r} needs an id and a template of the class list')
      clip_id = str(entry['id'])
      clips.append(video_builder.Clip(clip_id, videos.get(clip_id), class_index[name]))
    return clips
