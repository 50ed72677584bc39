"""What every builder of a raw video release shares: frame storage, parallel decoding, bad videos.

A record stores its frames JPEG-encoded, one bytes feature per frame (the pipeline decodes only the
frames it samples), resized to a short side at a fixed frame rate, both set by the builder config.
Examples are written in the order they are generated (`disable_shuffling` in every `_info`), so the metadata can say
which video every example came from without anyone reading the split again.

Videos are decoded on a pool of threads (PyAV and Pillow release the GIL while they work), in order,
so a rebuild writes the same records. A missing, truncated or undecodable video is skipped, printed
and listed with its reason in `skipped.csv` next to `dataset_info.json`; when more than
`max_skipped_fraction` of a split's videos are bad the build fails with that list.

The metadata keeps a fingerprint (SHA-256) of each annotation file the build read
(`annotation_fingerprints`), so `prepare` can tell that a release changed after it was prepared.
"""
from collections.abc import Callable, Iterable, Iterator
import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import os
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from vivit_cofinetune.data.builders import video_io

SKIPPED_FILE = 'skipped.csv'
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm')


@dataclasses.dataclass
class VideoConfig(tfds.core.BuilderConfig):
  """How frames are stored: frames per second, short side in pixels, JPEG quality.

  window_seconds: for keyframe datasets (AVA), the seconds of video kept around each keyframe.
  """
  fps: float = 25.0
  short_side: int = 256
  jpeg_quality: int = 90
  window_seconds: float = 0.0


class SkippedVideos(RuntimeError):
  """More of a split's videos were bad than the builder accepts; the message lists them."""


@dataclasses.dataclass(frozen=True)
class WorkItem:
  """One unit of decoding: a video (or a part of one) and what its examples need."""
  video_id: str
  path: str
  payload: Any


class VideoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the raw-release builders. Subclasses list work items and turn one into examples.

  Extra constructor arguments (also accepted by `tfds.builder(name, ...)`):
    num_workers: decoding threads (default: the host's cores).
    max_skipped_fraction: bad videos a split may lose before the build fails (default 0.1).
  """
  url_infos = None  # nothing to download; the release is read from --manual_dir
  # Globs below --manual_dir of the files that define the examples (not the videos): what
  # `annotation_fingerprints` hashes.
  ANNOTATION_PATTERNS: tuple[str, ...] = ()

  def __init__(self, *, num_workers: int | None = None, max_skipped_fraction: float = 0.1,
               **kwargs):
    super().__init__(**kwargs)
    self.num_workers = num_workers or os.cpu_count() or 1
    self.max_skipped_fraction = max_skipped_fraction
    self._skipped: list[dict[str, str]] = []

  # Subclasses implement these two.
  def _work_items(self, manual_dir: epath.Path, split: str) -> list[WorkItem]:
    raise NotImplementedError

  def _examples(self, item: WorkItem) -> list[dict[str, Any]]:
    """The examples of one work item; raises video_io.VideoError when its video is bad."""
    raise NotImplementedError

  def _split_stats(self, split: str, examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Metadata of a written split that runs need at start-up (e.g. class counts)."""
    del split, examples
    return {}

  def annotation_fingerprints(self, manual_dir: epath.Path) -> dict[str, str]:
    """SHA-256 of each annotation file of the release, by path relative to `manual_dir`."""
    paths = sorted({path for pattern in self.ANNOTATION_PATTERNS for path in manual_dir.glob(pattern)
                    if path.is_file()})
    return {os.path.relpath(path, manual_dir): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in paths}

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = epath.Path(dl_manager.manual_dir)
    self.info.metadata['annotation_fingerprints'] = self.annotation_fingerprints(manual_dir)
    return {split: self._generate_examples(split, self._work_items(manual_dir, split))
            for split in self._split_names(manual_dir)}

  def _split_names(self, manual_dir: epath.Path) -> list[str]:
    del manual_dir
    return ['train', 'validation']

  def _generate_examples(self, split: str, items: list[WorkItem]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Decodes the split's work items in parallel and yields its examples in order."""
    light_examples, bad_videos, index = [], {}, 0
    videos = {item.video_id for item in items}
    progress = tqdm.tqdm(total=len(items), desc=f'{self.name} {split}', unit='item', leave=False)
    for item, result in _ordered_parallel_map(self._examples_or_error, items, self.num_workers):
      progress.update()
      if isinstance(result, video_io.VideoError):
        if item.video_id not in bad_videos:
          bad_videos[item.video_id] = (item.path, str(result))
          print(f'Skipping {split} video {item.video_id} ({item.path}): {result}', flush=True)
        continue
      for example in result:
        yield index, example
        light_examples.append({key: value for key, value in example.items() if key != 'video'})
        index += 1
    progress.close()
    self._record_skipped(split, bad_videos, len(videos))
    self.info.metadata.setdefault('splits', {})[split] = dict(
        self._split_stats(split, light_examples), num_videos=len(videos) - len(bad_videos),
        num_skipped_videos=len(bad_videos))

  def _examples_or_error(self, item: WorkItem) -> list[dict[str, Any]] | video_io.VideoError:
    try:
      return self._examples(item)
    except video_io.VideoError as error:
      return error

  def _record_skipped(self, split: str, bad_videos: dict[str, tuple[str, str]],
                      num_videos: int) -> None:
    """Lists bad videos in skipped.csv (all splits so far) and fails past the allowed fraction."""
    self._skipped = [row for row in self._skipped if row['split'] != split] + [
        dict(split=split, video_id=video_id, path=path, reason=reason)
        for video_id, (path, reason) in sorted(bad_videos.items())]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=['split', 'video_id', 'path', 'reason'])
    writer.writeheader()
    writer.writerows(self._skipped)
    (epath.Path(self.data_dir) / SKIPPED_FILE).write_text(buffer.getvalue())
    if bad_videos:
      print(f'{self.name} {split}: skipped {len(bad_videos)} of {num_videos} videos; listed in '
            f'{SKIPPED_FILE} of the prepared dataset', flush=True)
    if num_videos and len(bad_videos) > self.max_skipped_fraction * num_videos:
      listing = '\n'.join(f'  {video_id}: {path}: {reason}'
                          for video_id, (path, reason) in sorted(bad_videos.items()))
      raise SkippedVideos(
          f'{self.name} {split}: {len(bad_videos)} of {num_videos} videos are missing or bad, more '
          f'than max_skipped_fraction={self.max_skipped_fraction}:\n{listing}')

  def _frames_feature(self) -> tfds.features.Sequence:
    return tfds.features.Sequence(tfds.features.Image(shape=(None, None, 3),
                                                      encoding_format='jpeg'))


def _ordered_parallel_map(function: Callable[[Any], Any], items: Iterable[Any],
                          num_workers: int) -> Iterator[tuple[Any, Any]]:
  """(item, function(item)) in the order of `items`, computed by `num_workers` threads.

  At most 2 * num_workers results wait at a time, so a slow consumer does not fill the memory.
  """
  items = list(items)
  with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as executor:
    pending = collections.deque()
    next_item = 0
    while pending or next_item < len(items):
      while next_item < len(items) and len(pending) < 2 * num_workers:
        pending.append((items[next_item], executor.submit(function, items[next_item])))
        next_item += 1
      item, future = pending.popleft()
      yield item, future.result()


def find_videos(folder: epath.Path) -> dict[str, str]:
  """Video files under `folder` (flat or in sub-folders) by file stem."""
  found = {}
  if not folder.exists():
    return found
  for root, _, files in os.walk(os.fspath(folder)):
    for file in files:
      stem, extension = os.path.splitext(file)
      if extension.lower() in VIDEO_EXTENSIONS:
        found[stem] = os.path.join(root, file)
  return found


def class_counts(labels: Iterable[np.ndarray], num_classes: int) -> list[int]:
  """Examples (or actors) per class, from class indices or multi-hot rows."""
  counts = np.zeros(num_classes, np.int64)
  for label in labels:
    label = np.asarray(label)
    counts += label.reshape(-1, num_classes).sum(0) if label.dtype == bool else np.bincount(
        label.reshape(-1), minlength=num_classes)
  return counts.tolist()


def missing_file_error(path: epath.Path, what: str) -> FileNotFoundError:
  return FileNotFoundError(f'{path}: not found; expected {what} (see docs/data.md for the layout)')


@dataclasses.dataclass(frozen=True)
class Clip:
  """A classification clip of a release: its id, file (None if the release lacks it) and class."""
  clip_id: str
  path: str | None
  # The class index, -1 where the release gives no label (Kinetics' test split); a multi-hot bool
  # array [C] for multi-label sets.
  label: int | np.ndarray


class ClipClassificationBuilder(VideoBuilder, skip_registration=True):
  """A release of labelled clips; each clip becomes one example holding all its frames.

  Subclasses read the release's class list and clips; class names go to the metadata, since they come
  from the release's files rather than from the code.
  """
  # Whether a mirrored clip shows the same class; Something-Something's do not ("left to right").
  MIRROR_SYMMETRIC = True

  def _class_names(self, manual_dir: epath.Path) -> list[str]:
    raise NotImplementedError

  def _clips(self, manual_dir: epath.Path, split: str) -> list[Clip]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': self._frames_feature(),
            'label': self._label_feature(),
            'video_id': tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(mirror_symmetric=self.MIRROR_SYMMETRIC),
        homepage=self.HOMEPAGE, disable_shuffling=True)

  def _label_feature(self) -> Any:
    """A class index; multi-label sets override it with a multi-hot bool Tensor [C]."""
    return np.int64

  def _work_items(self, manual_dir: epath.Path, split: str) -> list[WorkItem]:
    names = self._class_names(manual_dir)
    self.info.metadata['class_names'] = names
    return [WorkItem(video_id=clip.clip_id, path=clip.path or f'<no file for {clip.clip_id}>',
                     payload=clip) for clip in self._clips(manual_dir, split)]

  def _examples(self, item: WorkItem) -> list[dict[str, Any]]:
    clip, config = item.payload, self.builder_config
    if clip.path is None:
      raise video_io.VideoError('missing file')
    duration = video_io.video_duration(clip.path)
    times = np.arange(0, max(duration, 0) + 1e-6, 1 / config.fps)
    frames, _ = video_io.video_frames_at(clip.path, times, short_side=config.short_side,
                                         jpeg_quality=config.jpeg_quality)
    return [dict(video=frames, label=clip.label, video_id=clip.clip_id)]

  def _split_stats(self, split: str, examples: list[dict[str, Any]]) -> dict[str, Any]:
    labels = [label for label in (example['label'] for example in examples)
              if np.ndim(label) or label >= 0]
    stats = dict(num_examples=len(examples),
                 class_counts=class_counts(labels, len(self.info.metadata['class_names'])))
    if split != 'train':  # evaluation names its videos; training never needs the (long) list
      stats['example_video_ids'] = [example['video_id'] for example in examples]
    return stats


def clip_configs(fps: float) -> list[VideoConfig]:
  """The builder configs of a classification release stored at `fps` by default."""
  return [VideoConfig(name='default', fps=fps, short_side=256,
                      description=f'{fps:g} fps, short side 256'),
          VideoConfig(name='tiny', fps=4, short_side=32, description='for tests: 4 fps, side 32')]


def read_csv_rows(path: epath.Path, what: str) -> list[list[str]]:
  """Rows of a CSV file of the release; a missing file is an error naming what it should hold."""
  if not path.exists():
    raise missing_file_error(path, what)
  with open(os.fspath(path), newline='') as file:
    return [row for row in csv.reader(file) if row]
