"""AVA v2.2 and AVA-Kinetics: one example per annotated keyframe, from the official releases.

  python -m vivit_cofinetune.data.prepare ava_v2_2 --manual_dir=DIR --data_dir=DIR
  python -m vivit_cofinetune.data.prepare ava_kinetics --manual_dir=DIR --data_dir=DIR

An example holds the frames of `window_seconds` of video centred on the keyframe (JPEG, at the config's
fps and short side), every person box of the keyframe with its multi-hot labels over the 80 classes and
its person id, and the person detector's boxes with scores (all of them: the input pipeline keeps those
above its score threshold). Excluded keyframes are left out. The official validation ground truth, the
exclusions and both label maps are copied into the prepared dataset, so training evaluates against the
exact files `python -m vivit_cofinetune.metrics.ava` reads; the metadata names them with the class
ids and names and the evaluated ids (`data/dataset_info.py` reads them back). Without the person
detector's boxes of a split, evaluation scores its ground-truth boxes (printed at build time).

Layouts of --manual_dir (docs/data.md):
- AVA v2.2: `annotations/` with the official names, and videos as full movies `videos/<id>.<ext>`
  (keyframe second t is movie time t), 15-minute cuts `videos_15min/<id>.<ext>` (cut time 0 is movie
  second 900) or PySlowFast frames `frames/<id>/<id>_%06d.jpg` (30 fps of the 15-minute cut).
- AVA-Kinetics: `annotations/kinetics_{train,val}_v1.0.csv` (AVA's columns, seconds of the YouTube
  video) with the AVA label maps, and the Kinetics-700 clips `<youtube_id>_<start:06d>_<end:06d>.<ext>`
  anywhere below (train/, val/, per-label folders).
"""
import collections
import csv
import dataclasses
import os
import re
import shutil
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vivit_cofinetune.data.builders import video_builder
from vivit_cofinetune.data.builders import video_io
from vivit_cofinetune.metrics import ava_files

LABEL_MAP = 'ava_action_list_v2.2.pbtxt'
EVAL_LABEL_MAP = 'ava_action_list_v2.2_for_activitynet_2019.pbtxt'
# Names of the files a prepared dataset holds next to dataset_info.json.
GROUNDTRUTH_FILE = 'groundtruth_{split}.csv'
EXCLUSIONS_FILE = 'excluded_timestamps_{split}.csv'
LABEL_MAP_FILE = 'label_map.pbtxt'
EVAL_LABEL_MAP_FILE = 'eval_label_map.pbtxt'

NUM_CLASSES = 80  # the v2.2 label map (AVA-Kinetics uses the same)
_CUT_START_SECONDS = 900  # the 15-minute cuts and PySlowFast's frames start at movie second 900
_FRAMES_FPS = 30  # PySlowFast extracts frames at 30 fps
_KEYFRAMES_PER_ITEM = 30  # keyframes decoded together: a movie is split into parts for the pool
_SPLIT_FILES = {'train': 'train', 'validation': 'val'}


@dataclasses.dataclass(frozen=True)
class Keyframe:
  """The annotations of one keyframe: person boxes (x1, y1, x2, y2) with actions, and detections."""
  video_id: str
  timestamp: int
  boxes: tuple[tuple[float, ...], ...]
  actions: tuple[frozenset[int], ...]
  person_ids: tuple[int, ...]
  detector_boxes: tuple[tuple[float, ...], ...]
  detector_scores: tuple[float, ...]


def _rows(path: epath.Path) -> list[tuple[int, list[str]]]:
  """(1-based line number, columns) of each non-empty row."""
  with open(os.fspath(path), newline='') as file:
    reader = csv.reader(file)
    return [(reader.line_num, row) for row in reader if row]


def _person_id(text: str) -> int:
  """The person id column; -1 where it is not an integer (the official val CSV has one '3_')."""
  match = re.fullmatch(r'\s*(\d+)\s*', text)
  return int(match.group(1)) if match else -1


def read_annotations(path: epath.Path) -> dict[tuple[str, int], dict[tuple[str, ...], list]]:
  """(video_id, second) -> box (the four coordinate strings) -> [actions set, person id].

  A box with k actions has k rows in the official CSVs; rows with the same coordinates are one person.
  """
  keyframes = collections.defaultdict(dict)
  for line_number, row in _rows(path):
    if len(row) != 8:
      raise ValueError(f'{path}:{line_number}: expected 8 columns video_id,timestamp,x1,y1,x2,y2,'
                       f'action_id,person_id; got {row!r}')
    try:
      key, action = (row[0], int(row[1])), int(row[6])
      x1, y1, x2, y2 = (float(value) for value in row[2:6])
    except ValueError as error:
      raise ValueError(f'{path}:{line_number}: {error} in {row!r}') from error
    # A box outside the frame or turned inside out would be stored as one more person.
    if not (0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1):
      raise ValueError(f'{path}:{line_number}: box x1,y1,x2,y2 = {",".join(row[2:6])}; expected '
                       '0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 (fractions of the frame)')
    person = keyframes[key].setdefault(tuple(row[2:6]), [set(), _person_id(row[7])])
    person[0].add(action)
  return keyframes


def read_detections(path: epath.Path) -> dict[tuple[str, int], list[tuple[tuple[float, ...], float]]]:
  """PySlowFast's person detections: (video_id, second) -> [(box x1,y1,x2,y2, score)].

  Rows are `video_id,timestamp,x1,y1,x2,y2,action,score`, the action empty or -1.
  """
  detections = collections.defaultdict(list)
  for line_number, row in _rows(path):
    if len(row) != 8 or row[6].strip() not in ('', '-1'):
      raise ValueError(f'{path}:{line_number}: expected video_id,timestamp,x1,y1,x2,y2,,score '
                       f'(action column empty or -1); got {row!r}')
    try:
      detections[(row[0], int(row[1]))].append((tuple(float(v) for v in row[2:6]), float(row[7])))
    except ValueError as error:
      raise ValueError(f'{path}:{line_number}: {error} in {row!r}') from error
  return detections


def read_keyframes(annotations: epath.Path, detections: epath.Path | None,
                   exclusions: epath.Path | None, *,
                   include_detection_only: bool) -> list[Keyframe]:
  """Every non-excluded keyframe of a split, sorted by (video, second).

  `include_detection_only` also keeps keyframes that only the detector saw (evaluation splits, as
  PySlowFast evaluates): their detections are scored, and count as false positives where they fire.
  """
  ground_truth = read_annotations(annotations)
  detected = read_detections(detections) if detections else {}
  excluded = ava_files.read_exclusions(os.fspath(exclusions)) if exclusions else set()
  keys = set(ground_truth) | (set(detected) if include_detection_only else set())
  keyframes = []
  for key in sorted(keys - excluded):
    persons = ground_truth.get(key, {})
    boxes = list(persons)
    found = detected.get(key, [])
    keyframes.append(Keyframe(
        video_id=key[0], timestamp=key[1],
        boxes=tuple(tuple(float(v) for v in box) for box in boxes),
        actions=tuple(frozenset(persons[box][0]) for box in boxes),
        person_ids=tuple(persons[box][1] for box in boxes),
        detector_boxes=tuple(box for box, _ in found),
        detector_scores=tuple(score for _, score in found)))
  return keyframes


def _y1x1y2x2(boxes: tuple[tuple[float, ...], ...]) -> np.ndarray:
  boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
  return boxes[:, [1, 0, 3, 2]]


@dataclasses.dataclass(frozen=True)
class VideoSource:
  """Where a video's frames are: a file, or a frame folder shown at `frames_fps`, and its time 0 in
  keyframe seconds."""
  path: str
  time_zero: float
  frame_files: tuple[str, ...] = ()
  frames_fps: float = _FRAMES_FPS


class AvaV22(video_builder.VideoBuilder):
  """AVA Actions v2.2: 80 atomic actions of every person at 1 Hz keyframes of 15-minute movie parts."""
  name = 'ava_v2_2'
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First release: keyframe windows as JPEG frames, boxes, detections.',
                   '1.1.0': 'The metadata names the evaluation files of each split.'}
  BUILDER_CONFIGS = [
      # PySlowFast's AVA clips: 32 frames every 2nd at 30 fps cover 2.1 s around the keyframe.
      video_builder.VideoConfig(name='default', fps=30, short_side=256, window_seconds=2.4,
                                description='30 fps, short side 256, 2.4 s around each keyframe'),
      video_builder.VideoConfig(name='fps15', fps=15, short_side=256, window_seconds=4.4,
                                description='15 fps (half the disk), 4.4 s around each keyframe'),
      video_builder.VideoConfig(name='tiny', fps=4, short_side=32, window_seconds=2.0,
                                description='for tests: 4 fps, short side 32'),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download the AVA v2.2 annotations and videos (https://research.google.com/ava/download.html) '
      'into --manual_dir: annotations/ plus videos/, videos_15min/ or frames/ (docs/data.md).')
  ANNOTATION_PATTERNS = ('annotations/*',)
  VIDEO_LAYOUTS = 'videos/, videos_15min/ or frames/'
  HOMEPAGE = 'https://research.google.com/ava/'
  CITATION = ('Gu et al., AVA: A Video Dataset of Spatio-temporally Localized Atomic Visual '
              'Actions, CVPR 2018.')

  def _num_classes(self) -> int:
    """Width of `gt_labels`: the classes of the label map."""
    return NUM_CLASSES

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': self._frames_feature(),
            'keyframe_index': np.int32,
            'video_id': tfds.features.Text(),
            'timestamp': np.int32,
            'gt_boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'gt_labels': tfds.features.Tensor(shape=(None, self._num_classes()), dtype=np.bool_),
            'gt_person_ids': tfds.features.Tensor(shape=(None,), dtype=np.int32),
            'detector_boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'detector_scores': tfds.features.Tensor(shape=(None,), dtype=np.float32),
        }),
        metadata=tfds.core.MetadataDict(),
        # Records in generation order, so the metadata's example_video_ids match the file order.
        disable_shuffling=True,
        homepage=self.HOMEPAGE, citation=self.CITATION)

  # Files of the release; AVA-Kinetics names its own.
  def _annotation_file(self, split: str, kind: str) -> str:
    return {'groundtruth': f'ava_{_SPLIT_FILES[split]}_v2.2.csv',
            'exclusions': f'ava_{_SPLIT_FILES[split]}_excluded_timestamps_v2.2.csv',
            'detections': f'ava_{_SPLIT_FILES[split]}_predicted_boxes.csv'}[kind]

  def _annotations_dir(self, manual_dir: epath.Path) -> epath.Path:
    return manual_dir / 'annotations'

  def _work_items(self, manual_dir: epath.Path, split: str) -> list[video_builder.WorkItem]:
    annotations = self._annotations_dir(manual_dir)
    self._read_label_maps(annotations)
    files = {kind: annotations / self._annotation_file(split, kind)
             for kind in ('groundtruth', 'exclusions', 'detections')}
    if not files['groundtruth'].exists():
      raise video_builder.missing_file_error(files['groundtruth'], f'the {split} CSV')
    optional = {kind: path if path.exists() else None for kind, path in files.items()}
    keyframes = read_keyframes(files['groundtruth'], optional['detections'],
                               optional['exclusions'], include_detection_only=split != 'train')
    if split != 'train':
      scored = 'detector' if optional['detections'] else 'groundtruth'
      self.info.metadata.setdefault('scored_boxes', {})[split] = scored
    if split != 'train' and scored == 'groundtruth':
      # Without a person detector's boxes evaluation scores the annotated ones: a measure of
      # recognising actions of known people, not of finding them.
      print(f'{self.name} {split}: no {files["detections"].name}; evaluation will score the '
            'ground-truth boxes', flush=True)
      keyframes = [dataclasses.replace(keyframe, detector_boxes=keyframe.boxes,
                                       detector_scores=(1.0,) * len(keyframe.boxes))
                   for keyframe in keyframes]
    self._store_evaluation_files(split, files['groundtruth'], optional['exclusions'])
    by_video = collections.defaultdict(list)
    for keyframe in keyframes:
      by_video[keyframe.video_id].append(keyframe)
    sources = self._video_sources(manual_dir, sorted(by_video))
    items = []
    for video_id, video_keyframes in sorted(by_video.items()):
      for start in range(0, len(video_keyframes), _KEYFRAMES_PER_ITEM):
        source = sources.get(video_id)
        items.append(video_builder.WorkItem(
            video_id=video_id, path=source.path if source else f'<no video for {video_id}>',
            payload=(source, tuple(video_keyframes[start:start + _KEYFRAMES_PER_ITEM]))))
    return items

  def _label_map_files(self, annotations: epath.Path) -> tuple[epath.Path, epath.Path | None]:
    """The label map and the evaluated classes' label map (None: every class is evaluated)."""
    for name in (LABEL_MAP, EVAL_LABEL_MAP):
      if not (annotations / name).exists():
        raise video_builder.missing_file_error(annotations / name, 'the AVA v2.2 label map')
    return annotations / LABEL_MAP, annotations / EVAL_LABEL_MAP

  def _check_label_map(self, path: epath.Path, label_map: dict[int, str]) -> None:
    if len(label_map) != NUM_CLASSES:
      raise ValueError(f'{path}: expected the {NUM_CLASSES} AVA v2.2 classes, found '
                       f'{len(label_map)}')

  def _read_label_maps(self, annotations: epath.Path) -> None:
    """Class ids and names into the metadata; both label maps into the dataset, as pbtxt."""
    label_map_path, eval_label_map_path = self._label_map_files(annotations)
    label_map, _ = ava_files.read_labelmap(os.fspath(label_map_path))
    self._check_label_map(label_map_path, label_map)
    eval_label_map = label_map
    if eval_label_map_path:
      eval_label_map, _ = ava_files.read_labelmap(os.fspath(eval_label_map_path))
      unknown = sorted(set(eval_label_map) - set(label_map))
      if unknown:
        raise ValueError(f'{eval_label_map_path}: ids {unknown} are not in {label_map_path.name}')
    self._label_map_name = label_map_path.name
    self._class_ids = sorted(label_map)
    self.info.metadata.update(
        class_names=[label_map[class_id] for class_id in self._class_ids],
        class_ids=self._class_ids, eval_class_ids=sorted(eval_label_map))
    data_dir = epath.Path(self.data_dir)
    for source, labels, stored in ((label_map_path, label_map, LABEL_MAP_FILE),
                                   (eval_label_map_path, eval_label_map, EVAL_LABEL_MAP_FILE)):
      if source and source.suffix == '.pbtxt':
        shutil.copyfile(source, data_dir / stored)  # byte for byte what the release says
      else:
        ava_files.write_labelmap(os.fspath(data_dir / stored), labels)

  def _store_evaluation_files(self, split: str, groundtruth: epath.Path,
                              exclusions: epath.Path | None) -> None:
    """Copies what evaluating `split` reads into the dataset and names the files in its metadata.

    The names (relative to the prepared dataset's folder) are what `dataset_info.localisation_info`
    hands to a run and what `python -m vivit_cofinetune.metrics.ava` takes, so both score against
    the same files.
    """
    names = dict(groundtruth=GROUNDTRUTH_FILE.format(split=split),
                 exclusions=EXCLUSIONS_FILE.format(split=split),
                 label_map=LABEL_MAP_FILE, eval_label_map=EVAL_LABEL_MAP_FILE)
    data_dir = epath.Path(self.data_dir)
    shutil.copyfile(groundtruth, data_dir / names['groundtruth'])
    if exclusions:
      shutil.copyfile(exclusions, data_dir / names['exclusions'])
    else:
      (data_dir / names['exclusions']).write_text('')
    self.info.metadata.setdefault('evaluation_files', {})[split] = names

  def _video_sources(self, manual_dir: epath.Path, video_ids: list[str]) -> dict[str, VideoSource]:
    """Each video's source in the first layout that holds it: full movies, 15-minute cuts, frames."""
    movies = video_builder.find_videos(manual_dir / 'videos')
    cuts = video_builder.find_videos(manual_dir / 'videos_15min')
    sources = {}
    for video_id in video_ids:
      frame_folder = manual_dir / 'frames' / video_id
      if video_id in movies:
        sources[video_id] = VideoSource(movies[video_id], time_zero=0.0)
      elif video_id in cuts:
        sources[video_id] = VideoSource(cuts[video_id], time_zero=_CUT_START_SECONDS)
      elif frame_folder.exists():
        files = sorted(os.fspath(path) for path in frame_folder.glob(f'{video_id}_*.jpg'))
        sources[video_id] = VideoSource(os.fspath(frame_folder), time_zero=_CUT_START_SECONDS,
                                        frame_files=tuple(files))
    return sources

  def _examples(self, item: video_builder.WorkItem) -> list[dict[str, Any]]:
    source, keyframes = item.payload
    if source is None:
      raise video_io.VideoError(f'missing: no file under {self.VIDEO_LAYOUTS}')
    config = self.builder_config
    half = int(round(config.window_seconds / 2 * config.fps))
    offsets = np.arange(-half, half + 1) / config.fps
    # One sorted list of every needed time, so the video is decoded once for all keyframes.
    times = np.concatenate([keyframe.timestamp - source.time_zero + offsets
                            for keyframe in keyframes])
    order = np.argsort(times, kind='stable')
    if source.frame_files or not os.path.isfile(source.path):
      frames, duration = video_io.folder_frames_at(
          source.frame_files, source.frames_fps, times[order], short_side=config.short_side,
          jpeg_quality=config.jpeg_quality)
    else:
      frames, duration = video_io.video_frames_at(
          source.path, times[order], short_side=config.short_side,
          jpeg_quality=config.jpeg_quality)
    last_keyframe = keyframes[-1].timestamp - source.time_zero
    if last_keyframe > duration + 1.0:
      raise video_io.VideoError(f'too short: ends at {duration + source.time_zero:.1f}s, before '
                                f'keyframe {keyframes[-1].timestamp}s')
    unsorted = [None] * len(times)
    for position, frame in zip(order, frames):
      unsorted[position] = frame
    examples = []
    for index, keyframe in enumerate(keyframes):
      labels = np.zeros((len(keyframe.boxes), len(self._class_ids)), bool)
      for person, actions in enumerate(keyframe.actions):
        unknown = actions - set(self._class_ids)
        if unknown:
          raise ValueError(f'{item.video_id} at {keyframe.timestamp}: action ids {sorted(unknown)} '
                           f'are not in {self._label_map_name}')
        labels[person, [self._class_ids.index(action) for action in sorted(actions)]] = True
      window = unsorted[index * len(offsets):(index + 1) * len(offsets)]
      examples.append(dict(
          video=window, keyframe_index=half, video_id=keyframe.video_id,
          timestamp=keyframe.timestamp, gt_boxes=_y1x1y2x2(keyframe.boxes), gt_labels=labels,
          gt_person_ids=np.asarray(keyframe.person_ids, np.int32),
          detector_boxes=_y1x1y2x2(keyframe.detector_boxes),
          detector_scores=np.asarray(keyframe.detector_scores, np.float32)))
    return examples

  def _split_stats(self, split: str, examples: list[dict[str, Any]]) -> dict[str, Any]:
    people = np.array([len(example['gt_boxes']) for example in examples], int)
    return dict(
        num_examples=len(examples),
        class_counts=video_builder.class_counts((e['gt_labels'] for e in examples),
                                                len(self._class_ids)),
        example_video_ids=[example['video_id'] for example in examples],
        people_per_keyframe=np.bincount(people, minlength=1).tolist(),
        max_detections=max((len(example['detector_scores']) for example in examples), default=0))


class AvaKinetics(AvaV22):
  """AVA-Kinetics: AVA's 80 actions annotated on one keyframe of Kinetics-700 clips."""
  name = 'ava_kinetics'
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.0.0': 'First release, in the same example format as ava_v2_2.',
                   '1.1.0': 'The metadata names the evaluation files of each split.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Download the AVA-Kinetics annotations (https://research.google.com/ava/download.html) and the '
      'Kinetics-700 clips into --manual_dir: annotations/kinetics_{train,val}_v1.0.csv with the AVA '
      'v2.2 label maps, and the clips below it (docs/data.md).')

  def _annotation_file(self, split: str, kind: str) -> str:
    return {'groundtruth': f'kinetics_{_SPLIT_FILES[split]}_v1.0.csv',
            'exclusions': f'kinetics_{_SPLIT_FILES[split]}_excluded_timestamps_v1.0.csv',
            'detections': f'kinetics_{_SPLIT_FILES[split]}_predicted_boxes.csv'}[kind]

  def _video_sources(self, manual_dir: epath.Path, video_ids: list[str]) -> dict[str, VideoSource]:
    """A YouTube id's Kinetics clip `<id>_<start>_<end>`: time 0 of the clip is YouTube second start."""
    sources = {}
    for stem, path in video_builder.find_videos(manual_dir).items():
      match = re.fullmatch(r'(.+)_(\d{6})_(\d{6})', stem)
      if match:
        sources[match.group(1)] = VideoSource(path, time_zero=float(match.group(2)))
    return {video_id: sources[video_id] for video_id in video_ids if video_id in sources}
