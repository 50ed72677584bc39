"""Writes small fake copies of the raw video-dataset releases, in their official on-disk layouts.

For the tests of the TFDS builders that read the real releases. Every writer returns a manifest: a
JSON-serialisable dict of what it wrote and of the examples a builder should produce from it, so
tests can compare exactly. Common manifest keys: 'root', 'ext', 'fps', 'frame_size' [H, W],
'videos' {split: [ids]}, 'paths' {id: path relative to root}, 'missing' [ids], 'corrupt'
{id: how}, 'examples' {split: [...]}, 'class_names', 'colours'. Splits are always named 'train',
'val' and 'test', whatever the release calls them.

Pictures: mid-grey (128) frames. Classification clips show their class's colour (saturated RGB)
over a central rectangle (SSv2: a square that moves for the left/right classes), so a label can be
read off the pixels. AVA boxes are solid rectangles, one palette colour per box of a keyframe.

`missing` and `corrupt` take clip ids or '<split>/<index>' references ('val/0': the first clip of
the val split, in manifest order). Missing files are listed in the annotations but not written;
corrupt ones are written and then damaged with `corrupt_video`.

Layouts (from the releases' documentation and the loaders of PySlowFast, MMAction2, DMVR, Scenic):
  AVA v2.2: see `write_ava_release`.
  AVA-Kinetics: Kinetics-700 clips `{train,val}/<youtube_id>_<start:06d>_<end:06d>.<ext>` and
    `annotations/kinetics_{train,val}_v1.0.csv` in AVA's 8-column format, the timestamp being an
    (unpadded) second of the YouTube video inside the clip.
  Kinetics-400/600/700-2020: `annotations/{train,validate,test}.csv` with a header
    `label,youtube_id,time_start,time_end,split[,is_cc]` (test: no label, or an empty one), clips
    `<split dir>/[<label>/]<youtube_id>_<start:06d>_<end:06d>.<ext>`.
  Moments in Time: `{training,validation}Set.csv` rows `label/file.mp4,label,agreement,disagreement`
    (no header), `moments_categories.txt` rows `name,index`, clips `{training,validation}/label/file`.
  Something-Something v2: `20bn-something-something-v2/<id>.webm`, `labels/something-something-v2-
    {train,validation,test}.json` and `labels/something-something-v2-labels.json`.
  DMVR/Scenic: TFRecord shards of tf.train.SequenceExample, see `write_dmvr_tfrecords`.
"""
from collections.abc import Mapping, Sequence
import csv
import dataclasses
import fractions
import io
import json
import os
import re
import types

import av
import numpy as np
from PIL import Image

FIXTURES_AVA = os.path.join(os.path.dirname(__file__), 'fixtures', 'ava')
AVA_LABEL_MAPS = ('ava_action_list_v2.2.pbtxt', 'ava_action_list_v2.2_for_activitynet_2019.pbtxt')
AVA_VAL_VIDEO_IDS = ('1j20qq1JyX4', '2PpxiG0WU18')  # The two videos of the fixture's val slice.
AVA_LAYOUTS = ('videos', 'videos_15min', 'frames')
AVA_FRAMES_FPS = 30  # PySlowFast's frame folders.
AVA_CUT_START = 900  # Second of the movie that is time 0 of a 15-minute cut.
AVA_WINDOW = 2.0  # A keyframe's boxes are drawn this many seconds either side of it.

BACKGROUND = 128
# Saturated colours that survive yuv420p and JPEG; box i of a keyframe gets PALETTE[i % 8].
PALETTE = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
           (255, 128, 0), (255, 255, 255))

_CODECS = {'.mp4': 'libx264', '.mkv': 'mpeg4', '.webm': 'libvpx-vp9'}
_CLIP_SIZE = (48, 64)  # (H, W) of classification clips.
_CLIP_FPS = 10
_CLIP_SECONDS = (1.2, 1.5, 2.0)  # Clip i lasts _CLIP_SECONDS[i % 3]: lengths vary.
_SEED = 20240611
NOTHING: Mapping[str, str] = types.MappingProxyType({})  # Default `corrupt`: an empty, read-only dict.


# ---------------------------------------------------------------------------------------------
# Files.


def write_video(path: str, frames: np.ndarray, fps: float, *, times: Sequence[float] | None = None,
                codec: str | None = None) -> None:
  """Encodes uint8 frames [T, H, W, 3] (H, W even) into `path`; the extension picks the codec.

  .mp4: libx264 at qp 0, .mkv: mpeg4 at qscale 1, .webm: libvpx-vp9 lossless, all yuv420p, so
  colours come back within a few levels. `times` (seconds, increasing, multiples of 1 / fps) gives
  each frame its own timestamp, for gaps in the stream; by default frame k is at k / fps. A frame
  after a gap is forced to be a keyframe, and there is one at least every second, so that seeking
  behaves as on real files.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f'frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}')
  if frames.shape[1] % 2 or frames.shape[2] % 2:
    raise ValueError(f'height and width must be even for yuv420p, got {frames.shape[1:3]}')
  codec = codec or _CODECS[os.path.splitext(path)[1]]
  rate = fractions.Fraction(fps).limit_denominator(1001)
  pts = (np.arange(len(frames)) if times is None
         else np.round(np.asarray(times, np.float64) * float(rate)).astype(np.int64))
  if np.any(np.diff(pts) <= 0):
    raise ValueError('times must increase by at least 1 / fps')
  options = {
      'libx264': {'qp': '0', 'preset': 'ultrafast'},  # ultrafast: no B-frames, pts = dts.
      'mpeg4': {'qscale': '1'},
      'libvpx-vp9': {'lossless': '1', 'deadline': 'realtime', 'cpu-used': '8'},
  }.get(codec, {})
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=rate)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt = 'yuv420p'
    stream.codec_context.time_base = 1 / rate
    stream.options = {**options, 'g': str(max(1, round(float(rate))))}
    if codec == 'mpeg4':
      stream.codec_context.qscale = 1  # The 'qscale' option alone is ignored by PyAV's encoder.
    for index, pixels in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(pixels, format='rgb24')
      frame.pts = int(pts[index])
      frame.time_base = 1 / rate
      if index and pts[index] - pts[index - 1] > 1:
        frame.pict_type = av.video.frame.PictureType.I
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def corrupt_video(path: str, how: str) -> None:
  """Damages a file in place: 'truncate' keeps its first 30% of bytes, 'garbage' makes it random.

  Works on any file (JPEG frames too). A truncated .mp4 loses its index (written last) and does not
  open; a truncated .mkv/.webm fails to open or to read to its end (PyAV raises OSError).
  """
  with open(path, 'rb') as file:
    data = file.read()
  if how == 'truncate':
    data = data[:int(0.3 * len(data))]
  elif how == 'garbage':
    data = np.random.default_rng(len(data)).integers(0, 256, len(data), np.uint8).tobytes()
  else:
    raise ValueError(f"how must be 'truncate' or 'garbage', got {how!r}")
  with open(path, 'wb') as file:
    file.write(data)


def _encode_jpeg(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _write_text(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as file:
    file.write(text)


def _write_csv(path: str, rows: Sequence[Sequence], header: Sequence[str] | None = None) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  if header:
    writer.writerow(header)
  writer.writerows(rows)
  _write_text(path, buffer.getvalue())


def _resolve(refs, ids_by_split: Mapping[str, Sequence[str]]) -> list[str]:
  """Clip ids of `refs`, each an id or '<split>/<index>'."""
  all_ids = {clip_id for ids in ids_by_split.values() for clip_id in ids}
  resolved = []
  for ref in refs:
    split, _, index = ref.rpartition('/')
    if ref in all_ids:
      resolved.append(ref)
    elif split in ids_by_split and index.isdigit() and int(index) < len(ids_by_split[split]):
      resolved.append(ids_by_split[split][int(index)])
    else:
      raise ValueError(f'{ref!r} is neither a clip id nor <split>/<index> of {dict(ids_by_split)}')
  return resolved


def _resolve_damage(missing, corrupt, ids_by_split):
  missing = _resolve(missing, ids_by_split)
  corrupt = dict(zip(_resolve(list(corrupt), ids_by_split), corrupt.values()))
  if set(missing) & set(corrupt):
    raise ValueError(f'a clip cannot be both missing and corrupt: {set(missing) & set(corrupt)}')
  return missing, corrupt


def _youtube_ids(count: int, rng: np.random.Generator) -> list[str]:
  """Made-up 11-character YouTube ids; the first ones hold '-' and '_' (parsers must split right)."""
  alphabet = np.array(list('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'))
  ids = []
  for index in range(count):
    name = ''.join(rng.choice(alphabet, 11))
    if index == 0:
      name = '-' + name[1:5] + '_' + name[6:]
    elif index == 1:
      name = name[:3] + '_00' + name[6:]  # Looks like a <start> field when split on '_'.
    ids.append(name)
  return ids


# ---------------------------------------------------------------------------------------------
# Classification clips (Kinetics, Moments in Time, Something-Something v2).


def _names(known: Sequence[str], count: int) -> list[str]:
  """The first `count` of `known`, then made-up names."""
  return list(known[:count]) + [f'made-up class {index}' for index in range(len(known), count)]


def _class_colour(index: int) -> list[int]:
  if index < len(PALETTE):
    return list(PALETTE[index])
  # Beyond the palette: random saturated colours (one channel 255, one 0), not always distinct.
  rng = np.random.default_rng(index)
  colour = rng.integers(0, 256, 3)
  full, empty, _ = rng.permutation(3)
  colour[full], colour[empty] = 255, 0
  return [int(c) for c in colour]


def _clip_frames(colour, num_frames: int, motion: str = 'none') -> np.ndarray:
  """Grey frames with `colour` over the central half (W/2 x H/2) or a moving square.

  motion 'left_to_right' / 'right_to_left': an H/2 square whose centre moves linearly from x = W/4
  to 3W/4 (or back) over the clip, vertically centred.
  """
  height, width = _CLIP_SIZE
  frames = np.full((num_frames, height, width, 3), BACKGROUND, np.uint8)
  if motion == 'none':
    frames[:, height // 4:3 * height // 4, width // 4:3 * width // 4] = colour
    return frames
  side = height // 2
  for index in range(num_frames):
    progress = index / max(1, num_frames - 1)
    centre_x = width * (0.25 + 0.5 * (progress if motion == 'left_to_right' else 1 - progress))
    left = int(round(centre_x - side / 2))
    frames[index, height // 4:height // 4 + side, left:left + side] = colour
  return frames


@dataclasses.dataclass
class _Clip:
  clip_id: str
  split: str
  label: str | None  # None: not in the annotations (test splits).
  true_label: str
  path: str  # Relative to the release root.
  num_frames: int
  extra: dict = dataclasses.field(default_factory=dict)


def _write_clips(root: str, clips: Sequence[_Clip], colours: Mapping[str, list[int]], missing,
                 corrupt, motions: Mapping[str, str] | None = None) -> None:
  for clip in clips:
    if clip.clip_id in missing:
      continue
    frames = _clip_frames(colours[clip.true_label], clip.num_frames,
                          (motions or {}).get(clip.true_label, 'none'))
    path = os.path.join(root, clip.path)
    write_video(path, frames, _CLIP_FPS)
    if clip.clip_id in corrupt:
      corrupt_video(path, corrupt[clip.clip_id])


def _clip_manifest(root, ext, clips, class_names, colours, missing, corrupt, id_key) -> dict:
  splits = sorted({clip.split for clip in clips}, key=['train', 'val', 'test'].index)
  return {
      'root': str(root), 'ext': ext, 'fps': _CLIP_FPS, 'frame_size': list(_CLIP_SIZE),
      'videos': {split: [c.clip_id for c in clips if c.split == split] for split in splits},
      'paths': {clip.clip_id: clip.path for clip in clips},
      'missing': list(missing), 'corrupt': dict(corrupt),
      'examples': {split: [{id_key: c.clip_id, 'label': c.label, 'split': split,
                            'colour': colours[c.true_label], 'num_frames': c.num_frames,
                            'seconds': c.num_frames / _CLIP_FPS, **c.extra}
                           for c in clips if c.split == split] for split in splits},
      'class_names': list(class_names), 'colours': dict(colours),
      'probe': [0.5, 0.5],  # (x, y) of a pixel showing the class colour (SSv2 movers: middle frame).
  }


def _num_clip_frames(index: int) -> int:
  return round(_CLIP_SECONDS[index % len(_CLIP_SECONDS)] * _CLIP_FPS)


KINETICS_CLASS_NAMES = ('abseiling', 'air drumming', 'passing American football (in game)',
                        'tying bow tie', 'cooking sausages (not on barbeque)', 'jumping into pool',
                        "massaging person's head", 'playing cards')


def write_kinetics_release(root: str, *, num_classes: int = 3,
                           clips_per_class: tuple[int, int, int] = (2, 1, 1),
                           per_label_folders: bool = False, val_dir: str = 'val',
                           val_csv: str = 'validate.csv', ext: str = '.mp4',
                           test_labels: str = 'absent', with_is_cc: bool = False,
                           label_folder_style: str = 'as_is', missing: Sequence[str] = (),
                           corrupt: Mapping[str, str] = NOTHING) -> dict:
  """A Kinetics-400/600/700-2020 release; returns its manifest (clip ids are the file stems).

  clips_per_class: (train, val, test). test_labels: 'absent' (K700-2020's test.csv has no label
  column) or 'empty'. with_is_cc: K400's extra `is_cc` column. Per-label folders (train and val
  only) are named by the label as is, or with '_' for spaces (label_folder_style='underscores').
  The examples' 'youtube_id', 'time_start' and 'time_end' are those of the file name; test
  examples have label None (their clips still show the hidden class's colour).
  """
  if test_labels not in ('absent', 'empty'):
    raise ValueError(f"test_labels must be 'absent' or 'empty', got {test_labels!r}")
  class_names = _names(KINETICS_CLASS_NAMES, num_classes)
  colours = {name: _class_colour(index) for index, name in enumerate(class_names)}
  rng = np.random.default_rng(_SEED)
  splits = ('train', 'val', 'test')
  split_dirs = {'train': 'train', 'val': val_dir, 'test': 'test'}
  count = sum(clips_per_class) * num_classes
  youtube_ids = iter(_youtube_ids(count, rng))
  clips = []
  for split, per_class in zip(splits, clips_per_class):
    for name in class_names:
      for _ in range(per_class):
        youtube_id = next(youtube_ids)
        start = int(rng.integers(0, 300))
        stem = f'{youtube_id}_{start:06d}_{start + 10:06d}'
        folder = name.replace(' ', '_') if label_folder_style == 'underscores' else name
        parts = [split_dirs[split]] + ([folder] if per_label_folders and split != 'test' else [])
        clips.append(_Clip(stem, split, None if split == 'test' else name, name,
                           os.path.join(*parts, stem + ext), _num_clip_frames(len(clips)),
                           {'youtube_id': youtube_id, 'time_start': start,
                            'time_end': start + 10}))
  missing, corrupt = _resolve_damage(
      missing, corrupt, {s: [c.clip_id for c in clips if c.split == s] for s in splits})
  _write_clips(root, clips, colours, missing, corrupt)

  csv_names = {'train': 'train.csv', 'val': val_csv, 'test': 'test.csv'}
  for split in splits:
    header = ['label', 'youtube_id', 'time_start', 'time_end', 'split']
    rows = [[clip.label or '', clip.extra['youtube_id'], clip.extra['time_start'],
             clip.extra['time_end'], split] for clip in clips if clip.split == split]
    if with_is_cc:
      header.append('is_cc')
      rows = [row + [index % 2] for index, row in enumerate(rows)]
    if split == 'test' and test_labels == 'absent':
      header, rows = header[1:], [row[1:] for row in rows]
    _write_csv(os.path.join(root, 'annotations', csv_names[split]), rows, header)

  manifest = _clip_manifest(root, ext, clips, class_names, colours, missing, corrupt, 'video_id')
  manifest.update(annotation_files={s: 'annotations/' + csv_names[s] for s in splits},
                  split_dirs=split_dirs, per_label_folders=per_label_folders)
  return manifest


MOMENTS_CLASS_NAMES = ('adult+female+singing', 'applauding', 'barking', 'bicycling', 'boiling',
                       'carrying', 'diving', 'erupting')


def write_moments_release(root: str, *, num_classes: int = 3,
                          clips_per_class: tuple[int, int] = (2, 1), ext: str = '.mp4',
                          missing: Sequence[str] = (),
                          corrupt: Mapping[str, str] = NOTHING) -> dict:
  """A Moments in Time (v2) release (the `Moments_in_Time_Raw` folder); returns its manifest.

  Clip ids are the CSVs' first column, 'label/file.mp4'. Category indices follow sorted names.
  """
  class_names = sorted(_names(MOMENTS_CLASS_NAMES, num_classes))
  colours = {name: _class_colour(index) for index, name in enumerate(class_names)}
  rng = np.random.default_rng(_SEED + 1)
  youtube_ids = iter(_youtube_ids(sum(clips_per_class) * num_classes, rng))
  split_dirs = {'train': 'training', 'val': 'validation'}
  clips = []
  for split, per_class in zip(('train', 'val'), clips_per_class):
    for name in class_names:
      for _ in range(per_class):
        if len(clips) % 2:
          file_name = f'getty-{name.split("+")[0]}-video-id{rng.integers(10**8, 10**9)}_1{ext}'
        else:
          file_name = f'yt-{next(youtube_ids)}_{int(rng.integers(1, 40))}{ext}'
        clip_id = f'{name}/{file_name}'
        agreement = int(rng.integers(1, 4))
        clips.append(_Clip(clip_id, split, name, name, os.path.join(split_dirs[split], clip_id),
                           _num_clip_frames(len(clips)),
                           {'agreement': agreement, 'disagreement': 3 - agreement}))
  missing, corrupt = _resolve_damage(
      missing, corrupt, {s: [c.clip_id for c in clips if c.split == s] for s in split_dirs})
  _write_clips(root, clips, colours, missing, corrupt)

  for split, csv_name in (('train', 'trainingSet.csv'), ('val', 'validationSet.csv')):
    _write_csv(os.path.join(root, csv_name),
               [[c.clip_id, c.label, c.extra['agreement'], c.extra['disagreement']]
                for c in clips if c.split == split])
  _write_csv(os.path.join(root, 'moments_categories.txt'),
             [[name, index] for index, name in enumerate(class_names)])
  manifest = _clip_manifest(root, ext, clips, class_names, colours, missing, corrupt, 'file_id')
  manifest.update(split_dirs=split_dirs, annotation_files={
      'train': 'trainingSet.csv', 'val': 'validationSet.csv', 'categories': 'moments_categories.txt'})
  return manifest


# (template, placeholders for the fake clips); the first two are a horizontal-flip pair.
SSV2_TEMPLATES = (
    ('Pushing [something] from left to right', ['a toy car']),
    ('Pushing [something] from right to left', ['a pen']),
    ('Putting [something] on a surface', ['a cup']),
    ('Putting [number of] [something] onto [something]', ['3', 'coins', 'a book']),
    ('Holding [something] next to [something]', ['a phone', 'a mug']),
    ('Showing that [something] is empty', ['a box']),
)


def ssv2_label_name(template: str) -> str:
  """The labels file's name of a template: 'Putting [something] on ...' -> 'Putting something on ...'."""
  return template.replace('[', '').replace(']', '')


def write_ssv2_release(root: str, *, num_classes: int = 4,
                       clips_per_class: tuple[int, int] = (2, 1), num_test_clips: int = 1,
                       ext: str = '.webm', missing: Sequence[str] = (),
                       corrupt: Mapping[str, str] = NOTHING) -> dict:
  """A Something-Something v2 release; returns its manifest (clip ids are the numeric file stems).

  Class names are the templates with the brackets removed (the labels file's keys), indexed in
  sorted order as in the official file. The left-to-right class shows a square moving right, its
  mirror one moving left ('flip_pairs' in the manifest); the others a static centred colour.
  The test split (ids only, as released) shows the colour of class index % num_classes.
  """
  if not 2 <= num_classes <= len(SSV2_TEMPLATES):
    raise ValueError(f'num_classes must be in [2, {len(SSV2_TEMPLATES)}], got {num_classes}')
  templates = dict(SSV2_TEMPLATES[:num_classes])
  class_names = sorted(ssv2_label_name(template) for template in templates)
  colours = {name: _class_colour(index) for index, name in enumerate(class_names)}
  motions = {ssv2_label_name(SSV2_TEMPLATES[0][0]): 'left_to_right',
             ssv2_label_name(SSV2_TEMPLATES[1][0]): 'right_to_left'}
  by_name = {ssv2_label_name(template): template for template in templates}
  rng = np.random.default_rng(_SEED + 2)
  ids = iter(str(number) for number in rng.choice(np.arange(1, 220_000), 1000, replace=False))
  clips = []
  for split, per_class in zip(('train', 'val'), clips_per_class):
    for name in class_names:
      for _ in range(per_class):
        template = by_name[name]
        placeholders = templates[template]
        label = template
        for placeholder in placeholders:
          label = re.sub(r'\[[^\]]*\]', placeholder, label, count=1)
        clip_id = next(ids)
        clips.append(_Clip(clip_id, split, name, name,
                           os.path.join('20bn-something-something-v2', clip_id + ext),
                           _num_clip_frames(len(clips)),
                           {'template': template, 'text': label, 'placeholders': placeholders,
                            'motion': motions.get(name, 'none')}))
  for index in range(num_test_clips):
    clip_id, name = next(ids), class_names[index % num_classes]
    clips.append(_Clip(clip_id, 'test', None, name,
                       os.path.join('20bn-something-something-v2', clip_id + ext),
                       _num_clip_frames(len(clips)), {'motion': motions.get(name, 'none')}))
  splits = ('train', 'val', 'test')
  missing, corrupt = _resolve_damage(
      missing, corrupt, {s: [c.clip_id for c in clips if c.split == s] for s in splits})
  _write_clips(root, clips, colours, missing, corrupt, motions)

  files = {'train': 'something-something-v2-train.json',
           'val': 'something-something-v2-validation.json',
           'test': 'something-something-v2-test.json',
           'labels': 'something-something-v2-labels.json'}
  for split in ('train', 'val'):
    entries = [{'id': c.clip_id, 'label': c.extra['text'], 'template': c.extra['template'],
                'placeholders': c.extra['placeholders']} for c in clips if c.split == split]
    _write_text(os.path.join(root, 'labels', files[split]), json.dumps(entries, indent=1))
  if num_test_clips:
    _write_text(os.path.join(root, 'labels', files['test']),
                json.dumps([{'id': c.clip_id} for c in clips if c.split == 'test'], indent=1))
  _write_text(os.path.join(root, 'labels', files['labels']),
              json.dumps({name: str(index) for index, name in enumerate(class_names)}, indent=1))
  manifest = _clip_manifest(root, ext, clips, class_names, colours, missing, corrupt, 'video_id')
  manifest.update(
      annotation_files={key: 'labels/' + name for key, name in files.items()
                        if key != 'test' or num_test_clips},
      flip_pairs=[list(motions)] if set(motions) <= set(class_names) else [],
      motions={name: motions.get(name, 'none') for name in class_names})
  return manifest


# ---------------------------------------------------------------------------------------------
# DMVR / Scenic SequenceExample TFRecords.


def write_dmvr_tfrecords(pattern_prefix: str, *, num_files: int = 2, examples_per_file: int = 3,
                         num_classes: int = 3, with_text: bool = True,
                         num_frames: int = 8) -> dict:
  """Writes `<pattern_prefix>-<i:05d>-of-<num_files:05d>` shards of DMVR SequenceExamples.

  Each example: feature_lists 'image/encoded' (one JPEG per frame, 48x64, class colour over the
  centre), context 'clip/label/index' [label] and, with_text, 'clip/label/text' [class name].
  Example j (counting across files in order) has label j % num_classes. Returns the manifest.
  """
  # Imported here: slow, and only this writer needs it.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class_names = _names(KINETICS_CLASS_NAMES, num_classes)
  colours = {name: _class_colour(index) for index, name in enumerate(class_names)}
  os.makedirs(os.path.dirname(pattern_prefix) or '.', exist_ok=True)
  files, examples = [], []
  for file_index in range(num_files):
    path = f'{pattern_prefix}-{file_index:05d}-of-{num_files:05d}'
    files.append(path)
    with tf.io.TFRecordWriter(path) as writer:
      for index_in_file in range(examples_per_file):
        label = len(examples) % num_classes
        name = class_names[label]
        jpeg = _encode_jpeg(_clip_frames(colours[name], 1)[0])
        example = tf.train.SequenceExample()
        example.context.feature['clip/label/index'].int64_list.value.append(label)
        if with_text:
          example.context.feature['clip/label/text'].bytes_list.value.append(name.encode())
        frames = example.feature_lists.feature_list['image/encoded']
        for _ in range(num_frames):
          frames.feature.add().bytes_list.value.append(jpeg)
        writer.write(example.SerializeToString())
        examples.append({'file': path, 'index_in_file': index_in_file, 'label': label,
                         'label_text': name if with_text else None, 'num_frames': num_frames,
                         'colour': colours[name]})
  return {'pattern_prefix': str(pattern_prefix), 'files': files, 'examples': examples,
          'class_names': class_names, 'colours': colours, 'frame_size': list(_CLIP_SIZE),
          'probe': [0.5, 0.5]}


# ---------------------------------------------------------------------------------------------
# AVA v2.2 and AVA-Kinetics.


@dataclasses.dataclass
class _Keyframe:
  """One annotated keyframe: its boxes (x1, y1, x2, y2 as written), actions and person ids."""
  video_id: str
  timestamp: int  # Movie second (AVA) or YouTube second (AVA-Kinetics).
  boxes: list = dataclasses.field(default_factory=list)
  actions: list = dataclasses.field(default_factory=list)
  person_ids: list = dataclasses.field(default_factory=list)
  rows: list = dataclasses.field(default_factory=list)  # CSV lines, without newline.
  excluded: bool = False
  colours: list = dataclasses.field(default_factory=list)
  probes: list = dataclasses.field(default_factory=list)


def _box_pixels(box, height: int, width: int) -> tuple[int, int, int, int]:
  """Pixel rectangle [top, bottom) x [left, right) of a normalised box, at least one pixel."""
  left, top = round(box[0] * width), round(box[1] * height)
  right, bottom = max(left + 1, round(box[2] * width)), max(top + 1, round(box[3] * height))
  return min(top, height - 1), bottom, min(left, width - 1), right


def _render_keyframe(keyframe: _Keyframe, height: int, width: int) -> np.ndarray:
  """The picture shown around a keyframe; fills in its colours and probe points.

  Boxes are drawn largest first, so that small boxes inside big ones stay visible. A probe is the
  normalised (x, y) of the pixel of a box's visible part farthest from that part's edge (None if
  the box is hidden).
  """
  image = np.full((height, width, 3), BACKGROUND, np.uint8)
  owner = np.full((height, width), -1)
  keyframe.colours = [list(PALETTE[index % len(PALETTE)]) for index in range(len(keyframe.boxes))]
  areas = [(box[2] - box[0]) * (box[3] - box[1]) for box in keyframe.boxes]
  for index in sorted(range(len(keyframe.boxes)), key=lambda i: -areas[i]):
    top, bottom, left, right = _box_pixels(keyframe.boxes[index], height, width)
    image[top:bottom, left:right] = keyframe.colours[index]
    owner[top:bottom, left:right] = index
  keyframe.probes = []
  for index in range(len(keyframe.boxes)):
    visible = owner == index
    deepest = visible
    while visible.any():
      deepest = visible
      padded = np.pad(visible, 1)
      visible = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2]
                 & padded[1:-1, 2:])
    rows, cols = np.nonzero(deepest)
    if not rows.size:
      keyframe.probes.append(None)
      continue
    middle = len(rows) // 2
    keyframe.probes.append([(cols[middle] + 0.5) / width, (rows[middle] + 0.5) / height])
  return image


def _render_times(keyframes: Sequence[_Keyframe], images: Sequence[np.ndarray], times,
                  height: int, width: int) -> np.ndarray:
  """Frames at `times` (same clock as the keyframes' timestamps).

  A frame shows the boxes of the keyframe nearest in time (ties: the later one) if that one is at
  most AVA_WINDOW seconds away, else plain grey.
  """
  times = np.asarray(times, np.float64)
  stamps = np.array([keyframe.timestamp for keyframe in keyframes], np.float64)
  distance = np.abs(times[:, None] - stamps[None, :])
  # Later keyframes win ties: pick the last minimum by searching the reversed distances.
  nearest = len(stamps) - 1 - np.argmin(distance[:, ::-1], axis=1)
  chosen = np.where(distance[np.arange(len(times)), nearest] <= AVA_WINDOW + 1e-6, nearest, -1)
  palette = np.stack([np.full((height, width, 3), BACKGROUND, np.uint8), *images])
  return palette[chosen + 1]


def _drawn_seconds(keyframes: Sequence[_Keyframe], index: int, end: float) -> list[float]:
  """[from, to] seconds in which keyframe `index`'s boxes are on screen (see _render_times).

  `end`: when the file ends (the boxes stay on its repeated last frame).
  """
  stamp = keyframes[index].timestamp
  low, high = stamp - AVA_WINDOW, min(end, stamp + AVA_WINDOW)
  if index > 0:
    low = max(low, (keyframes[index - 1].timestamp + stamp) / 2)
  if index + 1 < len(keyframes):
    high = min(high, (keyframes[index + 1].timestamp + stamp) / 2)
  return [float(low), float(high)]


def _read_fixture(name: str) -> str:
  with open(os.path.join(FIXTURES_AVA, name), newline='') as file:
    return file.read()


def _ava_action_ids() -> list[int]:
  return [int(number) for number in re.findall(r'label_id:\s*(\d+)', _read_fixture(AVA_LABEL_MAPS[0]))]


def _made_up_keyframe(video_id: str, timestamp: int, rng: np.random.Generator, action_ids,
                      timestamp_text: str) -> _Keyframe:
  """1-3 persons side by side (no overlaps), each with 1-3 actions; person id = its slot."""
  keyframe = _Keyframe(video_id, timestamp)
  num_persons = int(rng.integers(1, 4))
  for person in range(num_persons):
    slot_left, slot_right = person / num_persons, (person + 1) / num_persons
    x1 = slot_left + rng.uniform(0.02, 0.1) / num_persons
    x2 = slot_right - rng.uniform(0.02, 0.1) / num_persons
    y1, y2 = rng.uniform(0.02, 0.3), rng.uniform(0.7, 0.98)
    box = [float(f'{value:.3f}') for value in (x1, y1, x2, y2)]
    actions = sorted(int(a) for a in rng.choice(action_ids, int(rng.integers(1, 4)), replace=False))
    keyframe.boxes.append(box)
    keyframe.actions.append(actions)
    keyframe.person_ids.append(person)
    for action in actions:
      keyframe.rows.append(','.join([video_id, timestamp_text] + [f'{v:.3f}' for v in box]
                                    + [str(action), str(person)]))
  return keyframe


def _fixture_val_keyframes(keyframes_per_video: int) -> tuple[list[_Keyframe], list[dict]]:
  """The fixture's first keyframes of each val video, rows kept byte-exact, grouped by box."""
  keyframes: dict[tuple[str, str], _Keyframe] = {}
  irregular = []
  for line in _read_fixture('ava_val_v2.2_subset.csv').splitlines():
    video_id, stamp, *coords, action, person = line.split(',')
    key = (video_id, stamp)
    if key not in keyframes:
      if sum(k[0] == video_id for k in keyframes) == keyframes_per_video:
        continue
      keyframes[key] = _Keyframe(video_id, int(stamp))
    keyframe = keyframes[key]
    keyframe.rows.append(line)
    box = [float(value) for value in coords]
    if box not in keyframe.boxes:
      keyframe.boxes.append(box)
      keyframe.actions.append([])
      # '3_' (a typo in the release) -> 3; the same box has person id 3 on its other rows.
      keyframe.person_ids.append(int(re.match(r'\d+', person).group()))
    keyframe.actions[keyframe.boxes.index(box)].append(int(action))
    if not person.isdigit():
      irregular.append({'video_id': video_id, 'timestamp': int(stamp), 'line': line,
                        'person_id': person})
  return list(keyframes.values()), irregular


def _detections(keyframes: Sequence[_Keyframe], rng: np.random.Generator, action_text: str,
                timestamp_format: str) -> tuple[list[str], list[dict]]:
  """PySlowFast-style person detections: jittered ground truth (score 0.85-1) + one false positive."""
  lines, records = [], []
  for keyframe in keyframes:
    found = []
    for box in keyframe.boxes:
      jittered = np.clip(np.asarray(box) + rng.uniform(-0.01, 0.01, 4), 0, 1)
      found.append((jittered, rng.uniform(0.85, 1.0)))
    found.append((np.array([0.40, 0.40, 0.55, 0.60]) + rng.uniform(-0.05, 0.05), 0.3))
    for box, score in found:
      box = [float(f'{value:.3f}') for value in box]
      lines.append(','.join([keyframe.video_id, timestamp_format.format(keyframe.timestamp)]
                            + [f'{value:.3f}' for value in box] + [action_text, f'{score:.6f}']))
      records.append({'video_id': keyframe.video_id, 'timestamp': keyframe.timestamp, 'box': box,
                      'score': float(f'{score:.6f}'), 'false_positive': score < 0.5})
  return lines, records


def _keyframe_record(keyframes: Sequence[_Keyframe], index: int, end: float) -> dict:
  keyframe = keyframes[index]
  return {'video_id': keyframe.video_id, 'timestamp': keyframe.timestamp,
          'boxes': keyframe.boxes, 'actions': keyframe.actions,
          'person_ids': keyframe.person_ids, 'excluded': keyframe.excluded,
          'colours': keyframe.colours, 'probes': keyframe.probes,
          'drawn_seconds': _drawn_seconds(keyframes, index, end)}


def ava_train_video_ids(count: int) -> list[str]:
  """The made-up 11-character ids of the fake train movies (some start with '-', as real ones)."""
  return [('-fake_trn' if index % 2 == 0 else 'Fake-trn_') + f'{index:02d}'
          for index in range(count)]


def write_ava_release(root: str, *, layout: str = 'videos_15min', ext: str = '.mp4',
                      keyframes_per_video: int = 3, num_train_videos: int = 2, fps: float = 15,
                      movie_lead_in: str = 'gap', frame_size: tuple[int, int] = (72, 128),
                      missing: Sequence[str] = (),
                      corrupt: Mapping[str, str] = NOTHING) -> dict:
  """An AVA v2.2 release in `layout`; returns its manifest.

  annotations/: ava_{train,val}_v2.2.csv, ava_{train,val}_excluded_timestamps_v2.2.csv, the two
  label maps (copied from tests/fixtures/ava), PySlowFast's ava_{train,val}_predicted_boxes.csv
  (action column '' for train, '-1' for val) and ava_file_names_trainval_v2.1.txt (`<id><ext>`).
  Val: the fixture's real rows for the first `keyframes_per_video` keyframes of its two videos
  (byte-exact; manifest 'irregular_person_ids' lists rows such as person id '3_', which the
  examples read as 3). Train: `num_train_videos` made-up movies, keyframes 902, 907, 912, ...
  (5 s apart, so the +-2 s windows never meet). The second keyframe of the first train movie and
  of the second val movie are excluded (both are annotated).

  Pictures: around each keyframe every box is a solid rectangle (colour per box in the manifest);
  a frame shows the boxes of the nearest keyframe within AVA_WINDOW = 2 s (ties: the later one),
  else grey. Each movie ends 3 s after its last keyframe, except the last train movie, which
  ends 1 s after it (shorter than the window: edge frames must repeat).

  layout:
    'videos': full movies `videos/<id><ext>`, movie time t = keyframe second t. They hold one
      grey frame at time 0, then (movie_lead_in='gap') nothing until 899 s, then frames at `fps`
      from 899 s to the end: a gap in the timestamps, not a long file (the frame after the gap is a
      keyframe, so seeking to t - 2 s and decoding gives the right frames). movie_lead_in='sparse'
      instead puts one grey frame per second from 0 to 898 s.
    'videos_15min': cuts `videos_15min/<id><ext>` whose time 0 is movie second 900, frames at `fps`.
    'frames': JPEGs `frames/<id>/<id>_%06d.jpg` at 30 fps of the cut: file k shows cut time
      (k - 1) / 30 s; plus PySlowFast's `frame_lists/{train,val}.csv`. A corrupt id damages all
      its JPEGs, a missing one has no folder.
  fps: frame rate of the video layouts (15 keeps the files small; the frames layout is 30 fps).

  Manifest, beyond the common keys: 'examples' {split: [{video_id, timestamp, boxes [[x1, y1, x2,
  y2]], actions [[ids]], person_ids, excluded, colours, probes [(x, y) or None per box: a pixel
  showing its colour], drawn_seconds [from, to]}]}; 'detections'; 'irregular_person_ids';
  'file_start_second' (movie second at file time 0); 'durations' and 'num_frames' per file;
  'class_names' {str(action id): name}. Timestamps and drawn_seconds are movie seconds.
  """
  if layout not in AVA_LAYOUTS:
    raise ValueError(f'layout must be one of {AVA_LAYOUTS}, got {layout!r}')
  if keyframes_per_video < 1 or num_train_videos < 1:
    raise ValueError('keyframes_per_video and num_train_videos must be at least 1')
  height, width = frame_size
  rng = np.random.default_rng(_SEED + 3)
  action_ids = _ava_action_ids()

  # Annotations.
  train_ids = ava_train_video_ids(num_train_videos)
  keyframes = {'train': [], 'val': []}
  for video_id in train_ids:
    for index in range(keyframes_per_video):
      stamp = AVA_CUT_START + 2 + 5 * index
      keyframes['train'].append(_made_up_keyframe(video_id, stamp, rng, action_ids, f'{stamp:04d}'))
  keyframes['val'], irregular = _fixture_val_keyframes(keyframes_per_video)
  excluded = {'train': (train_ids[0], min(1, keyframes_per_video - 1)),
              'val': (AVA_VAL_VIDEO_IDS[1], min(1, keyframes_per_video - 1))}
  for split, (video_id, index) in excluded.items():
    [keyframe for keyframe in keyframes[split] if keyframe.video_id == video_id][index].excluded = True
  ids_by_split = {'train': train_ids, 'val': list(AVA_VAL_VIDEO_IDS)}
  missing, corrupt = _resolve_damage(missing, corrupt, ids_by_split)

  annotations = os.path.join(root, 'annotations')
  detections = {}
  for split in ('train', 'val'):
    _write_text(os.path.join(annotations, f'ava_{split}_v2.2.csv'),
                ''.join(row + '\n' for keyframe in keyframes[split] for row in keyframe.rows))
    _write_csv(os.path.join(annotations, f'ava_{split}_excluded_timestamps_v2.2.csv'),
               [[k.video_id, f'{k.timestamp:04d}'] for k in keyframes[split] if k.excluded])
    lines, detections[split] = _detections(keyframes[split], rng, '' if split == 'train' else '-1',
                                           '{:04d}')
    _write_text(os.path.join(annotations, f'ava_{split}_predicted_boxes.csv'),
                ''.join(line + '\n' for line in lines))
  for name in AVA_LABEL_MAPS:
    _write_text(os.path.join(annotations, name), _read_fixture(name))
  _write_text(os.path.join(annotations, 'ava_file_names_trainval_v2.1.txt'),
              ''.join(f'{video_id}{ext}\n' for ids in ids_by_split.values() for video_id in ids))

  # Pictures.
  by_video = {video_id: [k for k in keyframes[split] if k.video_id == video_id]
              for split, video_ids in ids_by_split.items() for video_id in video_ids}
  images = {video_id: [_render_keyframe(k, height, width) for k in own]
            for video_id, own in by_video.items()}
  # Movie second at which each movie ends; the last train movie ends inside its last window.
  ends = {video_id: own[-1].timestamp + (1.0 if video_id == train_ids[-1] else 3.0)
          for video_id, own in by_video.items()}
  layout_fps = AVA_FRAMES_FPS if layout == 'frames' else fps
  file_start = 0 if layout == 'videos' else AVA_CUT_START
  frame_times = {video_id: _ava_frame_times(layout, end, layout_fps, movie_lead_in)
                 for video_id, end in ends.items()}
  paths, frame_lists = {}, {'train': [], 'val': []}
  for split, video_ids in ids_by_split.items():
    for video_number, video_id in enumerate(video_ids):
      paths[video_id] = f'frames/{video_id}' if layout == 'frames' else f'{layout}/{video_id}{ext}'
      if video_id in missing:
        continue
      frames = _render_times(by_video[video_id], images[video_id], frame_times[video_id], height,
                             width)
      path = os.path.join(root, paths[video_id])
      if layout == 'frames':
        names = _write_frame_folder(path, video_id, frames, corrupt.get(video_id))
        frame_lists[split] += [f'{video_id} {video_number} {index} {video_id}/{name} ""'
                               for index, name in enumerate(names)]
      else:
        write_video(path, frames, fps,
                    times=frame_times[video_id] - file_start if layout == 'videos' else None)
        if video_id in corrupt:
          corrupt_video(path, corrupt[video_id])
  if layout == 'frames':
    for split, lines in frame_lists.items():
      _write_text(os.path.join(root, 'frame_lists', f'{split}.csv'),
                  'original_vido_id video_idx frame_id path labels\n'
                  + ''.join(line + '\n' for line in lines))

  label_map = _read_fixture(AVA_LABEL_MAPS[0])
  return {
      'root': str(root), 'layout': layout, 'ext': None if layout == 'frames' else ext,
      'fps': layout_fps, 'frame_size': [height, width], 'movie_lead_in': movie_lead_in,
      # Movie second at time 0 of each file: 0 for full movies, 900 for cuts and frame folders.
      'file_start_second': file_start,
      'videos': ids_by_split, 'paths': paths, 'missing': missing, 'corrupt': corrupt,
      # Seconds of file time each file covers, and its number of frames (or JPEG files).
      'durations': {video_id: end - file_start for video_id, end in ends.items()},
      'num_frames': {video_id: len(times) for video_id, times in frame_times.items()},
      'examples': {split: [_keyframe_record(by_video[video_id], index, ends[video_id])
                           for video_id in video_ids for index in range(len(by_video[video_id]))]
                   for split, video_ids in ids_by_split.items()},
      'detections': detections,
      'irregular_person_ids': irregular,
      # {str(action id): name} of the 80-class map.
      'class_names': dict(zip(map(str, action_ids), re.findall(r'name:\s*"([^"]*)"', label_map))),
      'palette': [list(colour) for colour in PALETTE],
      'annotation_files': sorted(os.listdir(annotations)),
  }


def _ava_frame_times(layout: str, end: float, fps: float, movie_lead_in: str) -> np.ndarray:
  """Movie seconds of the frames of one file of `layout` that ends at movie second `end`."""
  cut_times = AVA_CUT_START + np.arange(round((end - AVA_CUT_START) * fps)) / fps
  if layout != 'videos':
    return cut_times
  if movie_lead_in == 'gap':
    lead_in = np.zeros(1)
  elif movie_lead_in == 'sparse':
    lead_in = np.arange(AVA_CUT_START - 1, dtype=np.float64)
  else:
    raise ValueError(f"movie_lead_in must be 'gap' or 'sparse', got {movie_lead_in!r}")
  # The second before the cut starts is there at full rate, for readers that look a bit early.
  last_second = AVA_CUT_START - 1 + np.arange(round(fps)) / fps
  return np.concatenate([lead_in, last_second, cut_times])


def _write_frame_folder(folder: str, video_id: str, frames: np.ndarray,
                        corrupt_how: str | None) -> list[str]:
  """Writes frames as `<video_id>_%06d.jpg` from 1, as PySlowFast's; returns the file names."""
  os.makedirs(folder)
  jpegs, names = {}, []  # Frames repeat: encode each distinct picture once.
  for number, frame in enumerate(frames, start=1):
    key = frame.tobytes()
    if key not in jpegs:
      jpegs[key] = _encode_jpeg(frame)
    names.append(f'{video_id}_{number:06d}.jpg')
    path = os.path.join(folder, names[-1])
    with open(path, 'wb') as file:
      file.write(jpegs[key])
    if corrupt_how:
      corrupt_video(path, corrupt_how)
  return names


def write_ava_kinetics_release(root: str, *, num_train_clips: int = 3, num_val_clips: int = 2,
                               ext: str = '.mp4', fps: int = 10,
                               frame_size: tuple[int, int] = (72, 128)) -> dict:
  """An AVA-Kinetics v1.0 release (Kinetics-700 clips + AVA-format CSVs); returns its manifest.

  annotations/kinetics_{train,val}_v1.0.csv: AVA's 8 columns, timestamp = the YouTube second of the
  clip's one keyframe (no zero padding), plus the two AVA label maps. Clips
  `{train,val}/<youtube_id>_<start:06d>_<end:06d><ext>` last 4 s, file time c = YouTube second
  start + c; the keyframe is at start + 2, except clip 1 of each split (start + 1: its window begins
  before the clip, so edge frames repeat). Boxes are drawn as in write_ava_release.
  """
  height, width = frame_size
  rng = np.random.default_rng(_SEED + 4)
  action_ids = _ava_action_ids()
  youtube_ids = iter(_youtube_ids(num_train_clips + num_val_clips, rng))
  clip_seconds = 4
  paths, videos, examples, durations = {}, {}, {}, {}
  for split, count in (('train', num_train_clips), ('val', num_val_clips)):
    rows, videos[split], examples[split] = [], [], []
    for index in range(count):
      youtube_id = next(youtube_ids)
      start = int(rng.integers(0, 290))
      stem = f'{youtube_id}_{start:06d}_{start + clip_seconds:06d}'
      stamp = start + (1 if index == 1 else 2)
      keyframe = _made_up_keyframe(youtube_id, stamp, rng, action_ids, str(stamp))
      image = _render_keyframe(keyframe, height, width)
      clip_times = np.arange(clip_seconds * fps) / fps
      frames = _render_times([keyframe], [image], start + clip_times, height, width)
      paths[stem] = f'{split}/{stem}{ext}'
      write_video(os.path.join(root, paths[stem]), frames, fps)
      rows.extend(keyframe.rows)
      videos[split].append(stem)
      durations[stem] = clip_seconds
      examples[split].append({'clip_id': stem, 'clip_start': start,
                              'keyframe_in_clip': stamp - start,
                              **_keyframe_record([keyframe], 0, start + clip_seconds)})
    _write_text(os.path.join(root, 'annotations', f'kinetics_{split}_v1.0.csv'),
                ''.join(row + '\n' for row in rows))
  for name in AVA_LABEL_MAPS:
    _write_text(os.path.join(root, 'annotations', name), _read_fixture(name))
  return {'root': str(root), 'ext': ext, 'fps': fps, 'frame_size': [height, width],
          'videos': videos, 'paths': paths, 'durations': durations, 'missing': [], 'corrupt': {},
          'examples': examples, 'palette': [list(colour) for colour in PALETTE]}
