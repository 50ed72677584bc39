"""A localisation dataset in AVA's format with the user's own classes: `prepare ava_format`.

  python -m vivit_cofinetune.data.prepare ava_format --name=NAME --manual_dir=DIR --data_dir=DIR

DIR holds (docs/data.md, "Your own dataset", gives every field):
- `annotations/train.csv`, `annotations/val.csv`: AVA's 8 columns, no header:
  `video_id,keyframe_second,x1,y1,x2,y2,action_id,person_id`, the box in [0, 1] of the frame;
- `annotations/label_map.pbtxt` (`item { name: "..." id: N }`) or `annotations/label_map.csv`
  (`id,name` rows), ids >= 1;
- optional: `annotations/eval_label_map.pbtxt` (the classes evaluated; default all),
  `annotations/{train,val}_excluded_timestamps.csv` (`video_id,second`),
  `annotations/{train,val}_predicted_boxes.csv` (a person detector's boxes,
  `video_id,second,x1,y1,x2,y2,,score`; without them evaluation scores the ground-truth boxes);
- the videos: `videos/<video_id>.<ext>` (keyframe second t is video time t) or frame folders
  `frames/<video_id>/<frame files in name order>` shown at `--frames_fps`.

Everything else is the AVA v2.2 builder's: the examples, the frame storage and builder configs, the
bad-video handling, the evaluation files and the metadata (`data/dataset_info.py` reads it back).
The dataset is named NAME, so a task trains on it with `dataset.name = NAME`.
"""
import os

from etils import epath
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import ava
from vivit_cofinetune.data.builders import video_builder
from vivit_cofinetune.metrics import ava_files

FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png')


class AvaFormat(ava.AvaV22, skip_registration=True):
  """The user's AVA-format release, prepared under the user's name for it.

  Not registered with TFDS: it needs its name and release to exist. Once prepared, TFDS reads the
  dataset by its name from the data dir like any other.
  """
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release, in the example format of ava_v2_2 1.1.0.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'Put annotations/ and videos/ or frames/ into --manual_dir.'
  VIDEO_LAYOUTS = 'videos/ or frames/'
  HOMEPAGE = ''
  CITATION = ''

  def __init__(self, *, name: str, manual_dir: str, frames_fps: float | None = None, **kwargs):
    """`name`: the dataset's name; `manual_dir`: the release (its label map sizes the records)."""
    self.name = name
    self._release = epath.Path(manual_dir)
    self._frames_fps = frames_fps
    super().__init__(**kwargs)

  def _annotation_file(self, split: str, kind: str) -> str:
    prefix = {'train': 'train', 'validation': 'val'}[split]
    return {'groundtruth': f'{prefix}.csv', 'exclusions': f'{prefix}_excluded_timestamps.csv',
            'detections': f'{prefix}_predicted_boxes.csv'}[kind]

  def _label_map_files(self, annotations: epath.Path) -> tuple[epath.Path, epath.Path | None]:
    candidates = [annotations / 'label_map.pbtxt', annotations / 'label_map.csv']
    label_map = next((path for path in candidates if path.exists()), None)
    if label_map is None:
      raise video_builder.missing_file_error(candidates[0], 'the label map (or label_map.csv)')
    eval_label_map = annotations / 'eval_label_map.pbtxt'
    return label_map, eval_label_map if eval_label_map.exists() else None

  def _check_label_map(self, path: epath.Path, label_map: dict[int, str]) -> None:
    if min(label_map) < 1:
      raise ValueError(f'{path}: class ids must be >= 1 (AVA numbers its classes from 1), found '
                       f'{min(label_map)}')

  def _num_classes(self) -> int:
    label_map, _ = self._label_map_files(self._annotations_dir(self._release))
    return len(ava_files.read_labelmap(os.fspath(label_map))[0])

  def _video_sources(self, manual_dir: epath.Path,
                     video_ids: list[str]) -> dict[str, ava.VideoSource]:
    """`videos/<id>.<ext>`, else the frame folder `frames/<id>/` at --frames_fps; time 0 is second 0."""
    videos = video_builder.find_videos(manual_dir / 'videos')
    sources = {}
    for video_id in video_ids:
      folder = manual_dir / 'frames' / video_id
      if video_id in videos:
        sources[video_id] = ava.VideoSource(videos[video_id], time_zero=0.0)
      elif folder.is_dir():
        if not self._frames_fps:
          raise ValueError(f'{folder}: frame folders need --frames_fps (the rate they were '
                           'extracted at)')
        files = sorted(os.fspath(path) for path in folder.iterdir()
                       if path.suffix.lower() in FRAME_EXTENSIONS)
        sources[video_id] = ava.VideoSource(os.fspath(folder), time_zero=0.0,
                                            frame_files=tuple(files), frames_fps=self._frames_fps)
    return sources
