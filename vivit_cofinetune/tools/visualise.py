"""Runs a trained localisation (or classification) model over a video file and draws what it sees.

  python -m vivit_cofinetune.tools.visualise --checkpoint=/tmp/vivit_demo --video=clip.mp4 \
      --boxes=person_boxes.csv --output=/tmp/visualised
  python -m vivit_cofinetune.tools.visualise --checkpoint=/tmp/vivit_demo --video=clip.mp4 \
      --mode=classification --output=/tmp/visualised

--checkpoint is a training workdir (its config.json and latest checkpoint) or a converted checkpoint
(then --config names an experiment config holding the task and its input settings). The video is any
file PyAV decodes; its id is the file's stem.

Localisation (default when the config has a localisation task): --boxes is a CSV of person boxes in
the AVA detector format `video_id,timestamp,x1,y1,x2,y2,,score` (coordinates in [0, 1] of the frame,
timestamps the whole seconds of the keyframes in the file's timeline). Each keyframe's clip is built
as localisation evaluation builds it: num_frames frames every frame_stride-th at --fps (default: the
training dataset's frame rate), the keyframe in the middle (frame num_frames // 2), clamped at the
ends of the video, whole frames letterboxed (tasks/localisation_examples.eval_frames), the boxes placed on them.
Boxes scoring under --min_score (default: the task's detector_score_threshold) are dropped, as in
evaluation. Writes OUTPUT/<video_id>_detections.csv, the official AVA detections format (one row per
box and class, the sigmoid of the head's logits, the training task's class ids).

Classification: a clip centred on every whole second of the video, sampled the same way, from the
centre square crop of the frames (evaluation's single view); writes OUTPUT/<video_id>_top5.csv
(`video_id,timestamp,rank,class_index,class_name,score`, softmax probabilities, or sigmoids for a
multi-label task).

Both write OUTPUT/<video_id>_<task>_annotated.mp4: every frame of the video, upscaled so that
captions are legible, with the boxes and top actions (localisation) or the top-5 (classification)
of the nearest keyframe within half a second.
"""
import collections
import csv
import dataclasses
import fractions
import functools
import math
import pathlib
import sys
from collections.abc import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import av
import jax.numpy as jnp
import ml_collections
from ml_collections import config_flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune import logs
from vivit_cofinetune import pictures
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.data import builders  # pylint: disable=unused-import (registers the datasets)
from vivit_cofinetune.data import video_ops
from vivit_cofinetune.data.builders import ava as ava_builders
from vivit_cofinetune.data.builders import video_io
from vivit_cofinetune.metrics import ava_files
from vivit_cofinetune.tasks import base as tasks_base
from vivit_cofinetune.tasks import localisation_examples
from vivit_cofinetune.tools import predict

# AVA's frame rate, for a dataset that states none (the synthetic sets render their frames).
DEFAULT_FPS = 30.0
# Kinds the tool draws (each with a video report registered in tasks/), in the order --task's
# default looks for them.
MODES = ('localisation', 'classification')
TOP_K = 5
# A keyframe's predictions are drawn on the frames within this many seconds of it.
_SHOW_SECONDS = 0.5
# Annotated frames are upscaled (nearest neighbour) until their short side is at least this, so
# that the 11-pixel captions stay legible on small videos.
_MIN_SHORT_SIDE = 256


class VisualiseError(ValueError):
  """A flag or an input file does not fit what the tool expects; the message names which."""


@dataclasses.dataclass(frozen=True)
class ClipSampling:
  """How clips are cut from a video: `num_frames` frames `stride` apart at `fps`."""
  num_frames: int
  stride: int
  fps: float

  def times(self, keyframe: float) -> np.ndarray:
    """Seconds [num_frames] of the clip's frames; frame num_frames // 2 is the keyframe."""
    offsets = (np.arange(self.num_frames) - self.num_frames // 2) * self.stride
    return keyframe + offsets / self.fps


# ------------------------------------------------------------------------------ configuration ---


def choose_task(task: str | None, mode: str | None, task_configs: dict, source: str) -> str:
  """--task, else the first task of --mode's kind, else of the first kind of MODES."""
  if task is not None:
    if task not in task_configs:
      raise VisualiseError(f'--task={task}: unknown task; {source} has {sorted(task_configs)}')
    kind = task_configs[task].get('kind')
    if mode is not None and kind != mode:
      raise VisualiseError(f'--task={task} is a {kind} task but --mode={mode}')
    return task
  kinds = [mode] if mode else list(MODES)
  for kind in kinds:
    for name, task_config in task_configs.items():
      if task_config.get('kind') == kind:
        return name
  raise VisualiseError(f'{source} has no {" or ".join(kinds)} task (it has '
                       f'{ {name: c.get("kind") for name, c in task_configs.items()} })')


def _clip_input(task_config: ml_collections.ConfigDict, task: str) -> ml_collections.ConfigDict:
  inputs = task_config.get('input')
  if inputs is None or any(inputs.get(field) is None
                           for field in ('num_frames', 'frame_stride', 'crop_size')):
    raise VisualiseError(f'task {task} has no input settings (num_frames, frame_stride, '
                         'crop_size): for a converted checkpoint pass --config=<the experiment '
                         'config it is used with>')
  return inputs


def dataset_fps(task_config: ml_collections.ConfigDict) -> float | None:
  """The frame rate the task's TFDS dataset stores videos at, if its builder config says."""
  name = task_config.get('dataset', {}).get('name')
  if not name or task_config.dataset.get('format', 'tfds') != 'tfds' or '+' in name:
    return None
  base, _, config_name = name.partition('/')
  try:
    builder_class = tfds.builder_cls(base)
  except tfds.core.registered.DatasetNotFoundError:
    return None
  configs = {config.name: config for config in builder_class.BUILDER_CONFIGS}
  chosen = configs.get(config_name or builder_class.DEFAULT_BUILDER_CONFIG_NAME or
                       next(iter(configs), None))
  return getattr(chosen, 'fps', None)


def dataset_classes(task_config: ml_collections.ConfigDict, data_dir: str | None
                    ) -> tuple[list[str] | None, list[int] | None]:
  """(class names, class ids) of the task's dataset where it is prepared under data_dir, else Nones.

  Never prepares a dataset: a tool that looks at one video should not build a training set.
  """
  dataset = task_config.get('dataset', {})
  if dataset.get('class_names'):
    return list(dataset.class_names), None
  name = dataset.get('name')
  if not name or not data_dir or dataset.get('format', 'tfds') != 'tfds' or '+' in name:
    return None, None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    return None, None
  if not builder.is_prepared():
    return None, None
  metadata = builder.info.metadata or {}
  names = metadata.get('class_names') or (
      builder.info.features['label'].names if 'label' in builder.info.features and
      hasattr(builder.info.features['label'], 'names') else None)
  ids = metadata.get('class_ids')
  return (list(names) if names else None), (list(ids) if ids else None)


# ------------------------------------------------------------------------------------ inputs ---


def read_person_boxes(path: str, video_id: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """Keyframe second -> (boxes [N, 4] x1, y1, x2, y2 in [0, 1], scores [N]) of `video_id`."""
  if not pathlib.Path(path).is_file():
    raise VisualiseError(f'--boxes={path}: no such file')
  try:
    detections = ava_builders.read_detections(path)
  except ValueError as error:
    raise VisualiseError(f'--boxes={error}') from error
  found = {second: rows for (video, second), rows in detections.items() if video == video_id}
  if not found:
    videos = sorted({video for video, _ in detections})
    raise VisualiseError(f'--boxes={path}: no boxes for video id {video_id!r} (the stem of '
                         f'--video); the file has {videos[:5]}{" ..." if len(videos) > 5 else ""}')
  keyframes = {}
  for second in sorted(found):
    boxes = np.array([box for box, _ in found[second]], np.float64)
    x1, y1, x2, y2 = boxes.T
    if np.any((boxes < 0) | (boxes > 1)) or np.any((x1 >= x2) | (y1 >= y2)):
      raise VisualiseError(f'--boxes={path}: a box of {video_id} at {second} s is not x1 < x2, '
                           'y1 < y2 in [0, 1] of the frame')
    keyframes[second] = (boxes, np.array([score for _, score in found[second]], np.float64))
  return keyframes


class DecodedFrames:
  """The frames of a video on screen at requested times, each prepared once, and every frame's time.

  `prepare` maps a frame uint8 [H, W, 3] to the model's frame (letterboxed or cropped); frames a
  clip asks for before the first or after the last frame are the first or last (eval's 'clamp').
  """

  def __init__(self, path: str, times: np.ndarray,
               prepare: Callable[[np.ndarray], np.ndarray]):
    order = np.argsort(times, kind='stable')
    self.source_index = np.zeros(len(times), np.int64)  # times[i] shows frame source_index[i]
    self.prepared: dict[int, np.ndarray] = {}
    frame_times = []
    next_time, previous = 0, None
    with video_io.open_video(path) as (container, stream):
      start, time_base = stream.start_time or 0, float(stream.time_base)
      self.rate = stream.average_rate or stream.guessed_rate
      # Frames without a timestamp are skipped, as the dataset builders skip them (video_io).
      for index, frame in enumerate(f for f in container.decode(stream) if f.pts is not None):
        frame_time = (frame.pts - start) * time_base
        frame_times.append(frame_time)
        if index == 0:
          self.height, self.width = frame.height, frame.width
        # Every time before this frame shows the previous one (before the first, this one).
        while next_time < len(times) and times[order[next_time]] < frame_time - 1e-6:
          self._use(order[next_time], index - 1 if previous is not None else index,
                    previous if previous is not None else frame, prepare)
          next_time += 1
        previous = frame
      if previous is None:
        raise video_io.VideoError('no decodable frame')
      for position in order[next_time:]:
        self._use(position, len(frame_times) - 1, previous, prepare)
    self.frame_times = np.asarray(frame_times, np.float64)
    if not self.rate:
      self.rate = fractions.Fraction(1 / float(np.median(np.diff(self.frame_times)))
                                     ).limit_denominator(1001)

  def _use(self, position: int, index: int, frame: av.VideoFrame, prepare) -> None:
    self.source_index[position] = index
    if index not in self.prepared:
      self.prepared[index] = prepare(frame.to_ndarray(format='rgb24'))

  def frames(self, positions: np.ndarray) -> np.ndarray:
    """Prepared frames [len(positions), ...] of times[positions]."""
    return np.stack([self.prepared[self.source_index[p]] for p in positions])

  def last_time_on_screen(self) -> float:
    """The end of the last frame's time on screen (its time plus one frame interval)."""
    return self.frame_times[-1] + 1 / float(self.rate)


def _decode(path: str, times: np.ndarray, prepare) -> DecodedFrames:
  try:
    return DecodedFrames(path, times, prepare)
  except video_io.VideoError as error:
    raise VisualiseError(f'--video={path}: {error}') from error


def _check_keyframes(seconds: Sequence[int], video: DecodedFrames, path: str) -> None:
  """Every keyframe second must show a frame of the video (no clamping of the keyframe itself)."""
  first, end = video.frame_times[0], video.last_time_on_screen()
  for second in seconds:
    if not first - 1e-6 <= second < end - 1e-6:
      raise VisualiseError(f'--boxes: keyframe timestamp {second} s has no frame in --video={path} '
                           f'(its frames cover {first:.2f} s to {end:.2f} s)')


def _letterboxed(inputs: ml_collections.ConfigDict) -> Callable[[np.ndarray], np.ndarray]:
  def prepare(frame):
    video, _ = localisation_examples.eval_frames(
        tf.constant(frame[None]), crop_size=int(inputs.crop_size),
        mean=tuple(inputs.get('mean', config_lib.INPUT_DEFAULTS['mean'])),
        eval_resize=inputs.get('eval_resize', config_lib.INPUT_DEFAULTS['eval_resize']))
    return video.numpy()[0]
  return prepare


def _placement(inputs: ml_collections.ConfigDict, height: int, width: int) -> np.ndarray:
  """Where eval_frames puts a height x width picture on the model input: (y0, x0, h, w), [0, 1]."""
  _, placement = localisation_examples.eval_frames(
      tf.zeros([1, height, width, 3], tf.uint8), crop_size=int(inputs.crop_size),
      mean=tuple(inputs.get('mean', config_lib.INPUT_DEFAULTS['mean'])),
      eval_resize=inputs.get('eval_resize', config_lib.INPUT_DEFAULTS['eval_resize']))
  return placement.numpy()


def _centre_cropped(inputs: ml_collections.ConfigDict) -> Callable[[np.ndarray], np.ndarray]:
  """Evaluation's single view of a classification clip: the centre square, resized."""
  def prepare(frame):
    video = tf.constant(frame[None])
    window = video_ops.spatial_crop_windows(frame.shape[0], frame.shape[1], 1)[0]
    return video_ops.resize_uint8(video_ops.crop_video(video, window),
                                  int(inputs.crop_size)).numpy()[0]
  return prepare


# -------------------------------------------------------------------------------- prediction ---


def _logits(predictor: predict.Predictor, clips: np.ndarray, boxes: np.ndarray | None,
            batch_size: int) -> np.ndarray:
  """Logits of uint8 clips [K, T, S, S, 3] (boxes [K, N, 4] on them) in batches of `batch_size`.

  The last batch is padded with copies of its last clip, so that one compiled shape serves all.
  """
  logits = []
  for begin in range(0, len(clips), batch_size):
    chunk = np.arange(begin, begin + batch_size).clip(max=len(clips) - 1)
    video = np.asarray(predictor.head_task.model_input(jnp.asarray(clips[chunk])))
    outputs = predictor(video, None if boxes is None else boxes[chunk])
    logits.append(outputs['logits'][:min(batch_size, len(clips) - begin)])
  return np.concatenate(logits)


@dataclasses.dataclass
class Overlay:
  """What to draw around one second: boxes [N, 4] (y1, x1, y2, x2 of the frame), their captions."""
  boxes: np.ndarray
  captions: list[str]


def localise(predictor: predict.Predictor, inputs: ml_collections.ConfigDict, video_path: str,
             keyframes: dict[int, tuple[np.ndarray, np.ndarray]], sampling: ClipSampling,
             batch_size: int, class_names: Sequence[str], class_ids: Sequence[int], video_id: str
             ) -> tuple[ava_files.Annotations, dict[int, Overlay], DecodedFrames]:
  """Scores every (box, class) of every keyframe: AVA detections and what to draw per keyframe."""
  seconds = sorted(keyframes)
  times = np.concatenate([sampling.times(second) for second in seconds])
  video = _decode(video_path, times, _letterboxed(inputs))
  _check_keyframes(seconds, video, video_path)
  clips = video.frames(np.arange(len(times))).reshape(
      len(seconds), sampling.num_frames, *video.prepared[video.source_index[0]].shape)
  frame_boxes = [keyframes[second][0][:, [1, 0, 3, 2]] for second in seconds]  # -> y1, x1, y2, x2
  most = max(len(boxes) for boxes in frame_boxes)
  placement = _placement(inputs, video.height, video.width)
  offset, extent = np.tile(placement[:2], 2), np.tile(placement[2:], 2)
  # Rows past a keyframe's own boxes repeat its first box; their scores are dropped below.
  model_boxes = np.stack([np.concatenate([boxes, np.repeat(boxes[:1], most - len(boxes), 0)])
                          for boxes in frame_boxes]) * extent + offset
  scores = 1 / (1 + np.exp(-_logits(predictor, clips, model_boxes.astype(np.float32),
                                    batch_size).astype(np.float64)))
  rows = collections.defaultdict(list)
  overlays = {}
  for index, (second, boxes) in enumerate(zip(seconds, frame_boxes)):
    box_scores = scores[index, :len(boxes)]  # [N, C]
    box, class_index = np.indices(box_scores.shape).reshape(2, -1)
    rows['boxes'].append(boxes[box])
    rows['labels'].append(np.asarray(class_ids)[class_index])
    rows['scores'].append(box_scores[box, class_index])
    rows['timestamps'].append(np.full(len(box), second))
    top = np.argsort(-box_scores, axis=-1, kind='stable')[:, :3]
    overlays[second] = Overlay(boxes, ['\n'.join(f'{class_names[c][:16]} {s[c]:.2f}' for c in best)
                                       for best, s in zip(top, box_scores)])
  detections = ava_files.annotations_from_arrays(
      video_ids=np.full(sum(map(len, rows['labels'])), video_id),
      timestamps=np.concatenate(rows['timestamps']), boxes_y1x1y2x2=np.concatenate(rows['boxes']),
      labels=np.concatenate(rows['labels']), scores=np.concatenate(rows['scores']))
  return detections, overlays, video


def classify(predictor: predict.Predictor, inputs: ml_collections.ConfigDict, video_path: str,
             sampling: ClipSampling, batch_size: int, class_names: Sequence[str], video_id: str
             ) -> tuple[list[list], dict[int, Overlay], DecodedFrames]:
  """The top-5 of a clip centred on every whole second: CSV rows and what to draw per second."""
  # The seconds are known only once the video is decoded, so frames are asked for in a second pass.
  duration = _decode(video_path, np.zeros(0), lambda frame: frame).last_time_on_screen()
  seconds = list(range(0, math.ceil(duration - 1e-6)))
  times = np.concatenate([sampling.times(second) for second in seconds])
  video = _decode(video_path, times, _centre_cropped(inputs))
  clips = video.frames(np.arange(len(times))).reshape(
      len(seconds), sampling.num_frames, *video.prepared[video.source_index[0]].shape)
  logits = _logits(predictor, clips, None, batch_size).astype(np.float64)
  if predictor.task_config.get('multi_label', False):
    probabilities = 1 / (1 + np.exp(-logits))
  else:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities = shifted / shifted.sum(-1, keepdims=True)
  rows, overlays = [], {}
  for second, scores in zip(seconds, probabilities):
    top = np.argsort(-scores, kind='stable')[:TOP_K]
    rows += [[video_id, second, rank + 1, int(c), class_names[c], f'{scores[c]:.6f}']
             for rank, c in enumerate(top)]
    overlays[second] = Overlay(np.array([[0.0, 0.0, 1.0, 1.0]]), ['\n'.join(
        f'{class_names[c][:16]} {scores[c]:.2f}' for c in top)])
  return rows, overlays, video


@dataclasses.dataclass(frozen=True)
class ReportRequest:
  """What a kind's video report gets: the model, its task, the clip settings and the tool's flags."""
  predictor: predict.Predictor
  task: tasks_base.Task
  inputs: ml_collections.ConfigDict
  video_path: str
  video_id: str
  sampling: ClipSampling
  batch_size: int
  boxes_path: str | None
  min_score: float | None
  output: pathlib.Path


def localisation_report(request: ReportRequest):
  """Localisation's video report: the person boxes of --boxes scored for every class; returns
  (the detections CSV, what it holds, the overlays by second, the decoded video)."""
  task, inputs = request.task, request.inputs
  if request.boxes_path is None:
    raise VisualiseError(f'--boxes: task {task.name} localises; give a CSV of person boxes '
                         '(video_id,timestamp,x1,y1,x2,y2,,score)')
  threshold = inputs.get('detector_score_threshold',
                         config_lib.INPUT_DEFAULTS['detector_score_threshold'])
  keyframes = read_person_boxes(request.boxes_path, request.video_id)
  keyframes = _confident(keyframes, threshold if request.min_score is None else request.min_score,
                         request.boxes_path)
  detections, overlays, video = localise(request.predictor, inputs, request.video_path, keyframes,
                                         request.sampling, request.batch_size, task.class_names,
                                         task.class_ids, request.video_id)
  csv_path = request.output / f'{request.video_id}_detections.csv'
  ava_files.write_csv(str(csv_path), detections)
  what = (f'{len(detections)} detections ({len(keyframes)} keyframes x boxes x '
          f'{task.num_classes} classes)')
  return csv_path, what, overlays, video


def classification_report(request: ReportRequest):
  """Classification's video report: the top classes of a clip at every second; returns (the top-k
  CSV, what it holds, the overlays by second, the decoded video)."""
  if request.boxes_path is not None:
    raise VisualiseError(f'--boxes: task {request.task.name} is a classification task, which '
                         'takes no boxes')
  rows, overlays, video = classify(request.predictor, request.inputs, request.video_path,
                                   request.sampling, request.batch_size, request.task.class_names,
                                   request.video_id)
  csv_path = request.output / f'{request.video_id}_top{TOP_K}.csv'
  with open(csv_path, 'w', newline='') as file:
    writer = csv.writer(file)
    writer.writerow(['video_id', 'timestamp', 'rank', 'class_index', 'class_name', 'score'])
    writer.writerows(rows)
  return csv_path, f'top-{TOP_K} of {len(overlays)} clips', overlays, video


# ---------------------------------------------------------------------------------- drawing ---


def write_annotated_video(video_path: str, output_path: str, overlays: dict[int, Overlay],
                          rate: fractions.Fraction) -> tuple[int, int, int]:
  """Re-encodes the video (H.264), each frame with its nearest overlay; returns (frames, H, W).

  Frames are upscaled by a whole factor to a short side of at least _MIN_SHORT_SIDE, then padded
  by a row or column where needed (yuv420p needs even sides).
  """
  seconds = np.array(sorted(overlays), np.float64)
  count = 0
  with video_io.open_video(video_path) as (container, stream), av.open(output_path, 'w') as output:
    start, time_base = stream.start_time or 0, float(stream.time_base)
    encoder = None
    for frame in container.decode(stream):
      if frame.pts is None:  # skipped for the predictions too (DecodedFrames)
        continue
      pixels = frame.to_ndarray(format='rgb24')
      if encoder is None:
        scale = max(1, math.ceil(_MIN_SHORT_SIDE / min(pixels.shape[:2])))
        height, width = (2 * math.ceil(side * scale / 2) for side in pixels.shape[:2])
        encoder = output.add_stream('libx264', rate=rate)
        encoder.height, encoder.width, encoder.pix_fmt = height, width, 'yuv420p'
        encoder.options = {'crf': '18'}
      frame_time = (frame.pts - start) * time_base
      nearest = np.argmin(np.abs(seconds - frame_time)) if len(seconds) else None
      if nearest is not None and abs(seconds[nearest] - frame_time) <= _SHOW_SECONDS + 1e-6:
        overlay = overlays[int(seconds[nearest])]
        boxes, captions = overlay.boxes, overlay.captions
      else:
        boxes, captions = np.zeros((0, 4)), []
      drawn = pictures.annotated_keyframe(pixels / 255.0, boxes, captions, np.zeros((0, 4)),
                                          scale=scale)
      drawn = np.pad(drawn, ((0, height - drawn.shape[0]), (0, width - drawn.shape[1]), (0, 0)),
                     mode='edge')
      for packet in encoder.encode(av.VideoFrame.from_ndarray(drawn, format='rgb24')):
        output.mux(packet)
      count += 1
    for packet in encoder.encode():
      output.mux(packet)
  return count, height, width


# ------------------------------------------------------------------------------------- tool ---


def visualise(checkpoint_dir: str, video_path: str, output_dir: str, *,
              boxes_path: str | None = None, config: ml_collections.ConfigDict | None = None,
              task: str | None = None, mode: str | None = None, fps: float | None = None,
              min_score: float | None = None, batch_size: int = 8) -> dict[str, str]:
  """Runs the tool (see the module docstring); returns {'csv', 'video', 'summary'}."""
  if not pathlib.Path(video_path).is_file():
    raise VisualiseError(f'--video={video_path}: no such file')
  experiment, _, task_configs, source = predict.load_config(checkpoint_dir, config)
  task = choose_task(task, mode, task_configs, source)
  predictor = predict.Predictor(checkpoint_dir, config=config, task=task)
  inputs = _clip_input(predictor.task_config, task)
  if fps is None:
    fps = dataset_fps(predictor.task_config)
    if fps is None:
      fps = DEFAULT_FPS
      logging.info('Dataset %s states no frame rate: sampling clips at %g fps (AVA\'s); set --fps '
                   'to change it.', predictor.task_config.get('dataset', {}).get('name'), fps)
  sampling = ClipSampling(int(inputs.num_frames), int(inputs.frame_stride), float(fps))
  names, ids = dataset_classes(predictor.task_config,
                               experiment.get('data_dir') if experiment else None)
  if names is None:
    logging.warning('Task %s: its dataset is not prepared under config.data_dir, so the captions '
                    'show class indices, not names.', task)
  task_object = tasks_lib.make_task(task, predictor.task_config, tasks_base.DatasetInfo(
      num_classes=predictor.task_config.num_classes, class_names=names, num_train_examples=0,
      train_class_counts=None, class_ids=ids) if names else None)
  video_id = pathlib.Path(video_path).stem
  output = pathlib.Path(output_dir)
  output.mkdir(parents=True, exist_ok=True)
  request = ReportRequest(predictor=predictor, task=task_object, inputs=inputs,
                          video_path=video_path, video_id=video_id, sampling=sampling,
                          batch_size=batch_size, boxes_path=boxes_path, min_score=min_score,
                          output=output)
  csv_path, what, overlays, video = tasks_lib.video_report_for(predictor.kind)(request)
  video_out = output / f'{video_id}_{task}_annotated.mp4'
  frames, height, width = write_annotated_video(video_path, str(video_out), overlays, video.rate)
  summary = (f'{task} ({predictor.kind}) at {fps:g} fps: {what} -> {csv_path}; {frames} frames '
             f'{width}x{height} -> {video_out}')
  return {'csv': str(csv_path), 'video': str(video_out), 'summary': summary}


def _confident(keyframes: dict, min_score: float, path: str) -> dict:
  """Keeps the boxes scoring at least `min_score`, as evaluation keeps confident detections."""
  kept = {}
  for second, (boxes, scores) in keyframes.items():
    if np.any(scores >= min_score):
      kept[second] = (boxes[scores >= min_score], scores[scores >= min_score])
  dropped = sum(len(s) for _, s in keyframes.values()) - sum(len(s) for _, s in kept.values())
  if dropped:
    logging.info('%s: %d boxes score under %g and are left out (--min_score)', path, dropped,
                 min_score)
  if not kept:
    raise VisualiseError(f'--boxes={path}: no box scores at least --min_score={min_score}')
  return kept


def _define_flags() -> dict:
  """The command-line flags; defined only when run as a tool, so other tools' flags may coexist."""
  return dict(
      checkpoint=flags.DEFINE_string('checkpoint', None,
                                     'Training workdir or converted-checkpoint directory.'),
      config=config_flags.DEFINE_config_file(
          'config', None, 'Experiment config; default: the workdir\'s config.json (a converted '
          'checkpoint needs one for the clip settings).', lock_config=False),
      video=flags.DEFINE_string('video', None, 'Video file (any container PyAV reads).'),
      boxes=flags.DEFINE_string('boxes', None, 'Person boxes CSV, AVA detector format '
                                '(video_id,timestamp,x1,y1,x2,y2,,score); for localisation.'),
      output=flags.DEFINE_string('output', None, 'Directory for the CSV and the annotated video.'),
      task=flags.DEFINE_string('task', None, 'Task (head) to run; default: see --mode.'),
      mode=flags.DEFINE_enum('mode', None, list(MODES), 'Kind of task to run when --task is not '
                             'given; default: the first localisation task, else classification.'),
      fps=flags.DEFINE_float('fps', None, 'Frame rate clips are sampled at; default: the training '
                             f'dataset\'s, else {DEFAULT_FPS:g} (AVA\'s).'),
      min_score=flags.DEFINE_float('min_score', None, 'Person boxes scoring less are left out; '
                                   'default: the task\'s input.detector_score_threshold.'),
      batch_size=flags.DEFINE_integer('batch_size', 8, 'Clips per forward pass.'),
  )


def main(argv, flag_values: dict):
  logs.quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  value = {name: holder.value for name, holder in flag_values.items()}
  try:
    written = visualise(value['checkpoint'], value['video'], value['output'],
                        boxes_path=value['boxes'], config=value['config'], task=value['task'],
                        mode=value['mode'], fps=value['fps'], min_score=value['min_score'],
                        batch_size=value['batch_size'])
  except (VisualiseError, predict.PredictError) as error:
    # The user's input to fix: one line naming the flag or file, no traceback.
    sys.exit(f'visualise: {error}')
  print(written['summary'])


if __name__ == '__main__':
  _FLAGS = _define_flags()
  flags.mark_flags_as_required(['checkpoint', 'video', 'output'])
  app.run(functools.partial(main, flag_values=_FLAGS))
