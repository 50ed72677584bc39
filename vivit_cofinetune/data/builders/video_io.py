"""Reads frames out of the raw releases' video files (PyAV) and frame folders, as JPEG bytes.

Every reader answers "which frame is on screen at time t" for a sorted list of times, so a builder
asks for exactly the frames it stores, at its own frame rate, whatever the file's frame rate. A time
before the first frame or after the last gets the first or last frame (edge frames repeat). Problems
with a file raise `VideoError` with a reason that ends up in the dataset's skipped.csv.
"""
from collections.abc import Sequence
import contextlib
import io
import math
import os

import av
import numpy as np
from PIL import Image

# Decoding that stops this far before the duration a file claims means the file was cut short.
_MAX_GAP_SECONDS = 1.0
# Seeking lands on the keyframe before the target; start decoding this much earlier than needed.
_SEEK_MARGIN_SECONDS = 2.0


class VideoError(Exception):
  """A video or frame folder that cannot give the requested frames; the message says why."""


def _resized_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(height, width) with the short side `short_side`, rounded to even numbers (JPEG chroma)."""
  scale = short_side / min(height, width)
  return (max(2, 2 * round(height * scale / 2)), max(2, 2 * round(width * scale / 2)))


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(frame).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def video_frames_at(path: str, times: Sequence[float], *, short_side: int,
                    jpeg_quality: int) -> tuple[list[bytes], float]:
  """JPEG frames [len(times)] of the video file on screen at `times` (seconds from its first frame).

  Returns (frames, duration): duration is the time of the last frame reached, which a builder checks
  against its keyframes. Decodes the stream once from (a little before) the first requested time, so
  asking for every keyframe window of a movie costs one pass. Raises VideoError for a missing or
  undecodable file, or one that decodes to well before the duration its header claims (truncated).
  """
  with open_video(path) as (container, stream):
    return _decode_at(container, stream, np.asarray(times, np.float64), short_side, jpeg_quality)


@contextlib.contextmanager
def open_video(path: str):
  """(container, its first video stream); any failure to read becomes a VideoError saying why."""
  if not os.path.exists(path):
    raise VideoError('missing file')
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise VideoError('no video stream')
      stream = container.streams.video[0]
      stream.thread_type = 'AUTO'
      yield container, stream
  except VideoError:
    raise
  except (av.FFmpegError, ValueError, OSError) as error:
    raise VideoError(f'undecodable: {type(error).__name__}: {error}') from error


def _decode_at(container, stream, times, short_side, jpeg_quality):
  time_base = float(stream.time_base)
  start_pts = stream.start_time or 0
  if times.size and times[0] > _SEEK_MARGIN_SECONDS:
    container.seek(int((times[0] - _SEEK_MARGIN_SECONDS) / time_base) + start_pts, stream=stream,
                   backward=True)
  frames: list[bytes | None] = [None] * len(times)
  size = None
  previous, previous_jpeg = None, None
  next_time = 0  # index into times of the first time not answered yet

  def jpeg_of(frame):
    nonlocal size, previous_jpeg
    if previous_jpeg is None or previous_jpeg[0] is not frame:
      if size is None:
        size = _resized_size(frame.height, frame.width, short_side)
      pixels = frame.to_ndarray(format='rgb24', height=size[0], width=size[1])
      previous_jpeg = (frame, encode_jpeg(pixels, jpeg_quality))
    return previous_jpeg[1]

  last_time = -math.inf
  for frame in container.decode(stream):
    if frame.pts is None:
      continue
    frame_time = (frame.pts - start_pts) * time_base
    last_time = frame_time
    # Every time before this frame shows the previous one (or, before the first, this one).
    while next_time < len(times) and times[next_time] < frame_time - 1e-6:
      frames[next_time] = jpeg_of(previous if previous is not None else frame)
      next_time += 1
    previous = frame
    if next_time == len(times):
      break
  if previous is None:
    raise VideoError('no decodable frame')
  if next_time < len(times):
    if _claimed_duration(container, stream) > last_time + _MAX_GAP_SECONDS:
      raise VideoError(f'truncated: decoding stops at {last_time:.2f}s but the file claims '
                       f'{_claimed_duration(container, stream):.2f}s')
    for index in range(next_time, len(times)):
      frames[index] = jpeg_of(previous)
  return frames, last_time


def _claimed_duration(container, stream) -> float:
  """The duration the file's header claims (seconds), or 0 when it states none."""
  if stream.duration is not None:
    return float(stream.duration * stream.time_base)
  if container.duration is not None:
    return container.duration / av.time_base
  return 0.0


def folder_frames_at(paths: Sequence[str], fps: float, times: Sequence[float], *, short_side: int,
                     jpeg_quality: int) -> tuple[list[bytes], float]:
  """JPEG frames on screen at `times` from numbered frame files: paths[k] shows time k / fps.

  Returns (frames, duration) like `video_frames_at`: duration is the time of the last file.
  """
  if not paths:
    raise VideoError('missing frame folder or no frames in it')
  indices = np.clip(np.floor(np.asarray(times) * fps + 1e-6).astype(int), 0, len(paths) - 1)
  encoded = {}
  for index in np.unique(indices):
    try:
      with Image.open(paths[index]) as image:
        image = image.convert('RGB')
        height, width = _resized_size(image.height, image.width, short_side)
        pixels = np.asarray(image.resize((width, height), Image.BILINEAR))
    except OSError as error:
      raise VideoError(f'undecodable frame {paths[index]}: {error}') from error
    encoded[index] = encode_jpeg(pixels, jpeg_quality)
  return [encoded[index] for index in indices], (len(paths) - 1) / fps


def video_duration(path: str) -> float:
  """Seconds the file claims to hold (header), or decoded to the end when it claims nothing."""
  with open_video(path) as (container, stream):
    claimed = _claimed_duration(container, stream)
    if claimed > 0:
      return claimed
    time_base, start = float(stream.time_base), stream.start_time or 0
    last = max(((frame.pts - start) * time_base for frame in container.decode(stream)
                if frame.pts is not None), default=None)
    if last is None:
      raise VideoError('no decodable frame')
    return last
