"""Synthetic action datasets: small rendered videos whose actors' motion defines the action.

Two TFDS builders share one set of motion concepts, so that training on the classification set helps the
rare classes of the localisation set (the paper's co-finetuning effect, in miniature):
- `synthetic_actions_cls`: one actor per clip, one clip-level label (balanced over the config's
  `classes`: action concepts, or COLOUR_NAMES for a static, appearance-only set).
- `synthetic_actions_loc`: 1-3 actors per clip, each with its box at the keyframe and multi-hot labels
  drawn from a long-tailed distribution (class of rank r has frequency ~ r**-LOC_TAIL_EXPONENT), plus
  AVA-like person-detector boxes (jittered ground truth with scores, occasional low-score false positives).

Every example is a pure function of (config seed, split, index): its numpy Generator is seeded from
them, so a rebuild gives identical records. Configs: 'default' (the demo's sizes), 'tiny' (for tests)
and the study's sets (experiments/study.py): 'study_pretrain' (static actors labelled by colour,
standing in for ImageNet), 'study_upstream_a' and 'study_upstream_b' (balanced, each holding the
localisation set's rare concepts) and the localisation set 'study' (small, so its tail classes have
a handful of actors each).
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

# The concepts in order of their frequency in the localisation set (rank 1 first).
ACTION_NAMES = ('stand_still', 'move_right', 'move_left', 'grow', 'move_up', 'blink', 'move_down',
                'shrink', 'jump', 'change_colour', 'shake', 'crouch')
LOC_CLASS_NAMES = ACTION_NAMES
CLS_CLASS_NAMES = ACTION_NAMES
# Static appearance classes, one per _PALETTE colour: a stand-in for image pretraining.
COLOUR_NAMES = ('red', 'green', 'blue', 'yellow', 'magenta', 'cyan', 'orange', 'white')
# The second upstream set of the study: a label space of its own (as SSv2's is beside Kinetics'),
# holding the six rarest localisation concepts and the commonest one.
UPSTREAM_B_CLASS_NAMES = ('stand_still', 'move_down', 'shrink', 'jump', 'change_colour', 'shake',
                          'crouch')
LOC_TAIL_EXPONENT = 1.5

# Every actor does exactly one motion (like AVA's exclusive pose classes) and any number of appearance
# changes (like AVA's non-exclusive interaction classes); grow and shrink exclude each other.
MOTIONS = ('stand_still', 'move_right', 'move_left', 'move_up', 'move_down', 'jump', 'shake')
APPEARANCE_CHANGES = ('grow', 'shrink', 'blink', 'change_colour', 'crouch')
# Motions a classification clip labelled with an appearance change may show (the label names the change).
_PLAIN_MOTIONS = ('stand_still', 'move_right', 'move_left', 'move_up', 'move_down')

# A horizontal flip turns one of these into the other; the pipeline swaps them when it flips a clip.
FLIP_LABEL_PAIRS = (('move_right', 'move_left'),)

_SEED = 20220715  # Fixed: the datasets are part of the project, not of a run.
_SPLIT_IDS = {'train': 0, 'validation': 1}
_PALETTE = np.array([[230, 40, 40], [40, 200, 60], [50, 90, 240], [240, 220, 40], [220, 60, 220],
                     [40, 220, 220], [250, 140, 30], [250, 250, 250]], np.float32)
_HEAD_COLOUR = np.array([235, 190, 150], np.float32)


def _class_frequency(name: str) -> float:
  """Target fraction of localisation actors carrying the class `name` (rank 1 -> ~0.57)."""
  rank = ACTION_NAMES.index(name) + 1
  motion_total = sum((ACTION_NAMES.index(m) + 1)**-LOC_TAIL_EXPONENT for m in MOTIONS)
  # Motions are exclusive and exhaustive, so their frequencies sum to one.
  return rank**-LOC_TAIL_EXPONENT / motion_total


def sample_actor_actions(rng: np.random.Generator) -> tuple[str, list[str]]:
  """Draws one localisation actor's motion and appearance changes from the long-tailed distribution."""
  motion_probs = np.array([_class_frequency(m) for m in MOTIONS])
  motion = MOTIONS[rng.choice(len(MOTIONS), p=motion_probs / motion_probs.sum())]
  changes = []
  size_draw = rng.random()
  if size_draw < _class_frequency('grow'):
    changes.append('grow')
  elif size_draw < _class_frequency('grow') + _class_frequency('shrink'):
    changes.append('shrink')
  for change in ('blink', 'change_colour', 'crouch'):
    if rng.random() < _class_frequency(change):
      changes.append(change)
  return motion, changes


def _trajectory(motion: str, changes: list[str], num_frames: int, frame_size: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Per-frame centre offsets, sizes, brightness and colour of one actor, each [T] or [T, 3]."""
  t = np.arange(num_frames, dtype=np.float32)
  px_per_frame = frame_size / 40 * rng.uniform(0.8, 1.2)
  dy, dx = np.zeros(num_frames, np.float32), np.zeros(num_frames, np.float32)
  if motion == 'move_right':
    dx = px_per_frame * t
  elif motion == 'move_left':
    dx = -px_per_frame * t
  elif motion == 'move_up':
    dy = -px_per_frame * t
  elif motion == 'move_down':
    dy = px_per_frame * t
  elif motion == 'jump':
    # One hop every 8 frames: still visible when a clip samples every second frame.
    dy = -frame_size / 40 * rng.uniform(4, 7) * np.abs(np.sin(np.pi * t / 8))
  elif motion == 'shake':
    # Period 6 frames, so that sampling at stride 2 does not alias it away.
    dx = frame_size / 40 * rng.uniform(2, 3) * np.sin(2 * np.pi * t / 6 + rng.uniform(0, 2 * np.pi))
  progress = t / max(num_frames - 1, 1)
  scale = np.ones(num_frames, np.float32)
  if 'grow' in changes:
    scale = 0.9 + 0.8 * progress
  elif 'shrink' in changes:
    scale = 1.5 - 0.7 * progress
  height_scale = 1 - 0.45 * progress if 'crouch' in changes else np.ones(num_frames, np.float32)
  brightness = np.ones(num_frames, np.float32)
  if 'blink' in changes:
    brightness = np.where((np.arange(num_frames) // 3) % 2 == 0, 1.0, 0.3).astype(np.float32)
  first, second = rng.choice(len(_PALETTE), size=2, replace=False)
  amount = progress[:, None] if 'change_colour' in changes else np.zeros((num_frames, 1), np.float32)
  colour = (1 - amount) * _PALETTE[first] + amount * _PALETTE[second]
  base_height = frame_size * rng.uniform(0.25, 0.33)
  base_width = base_height * rng.uniform(0.4, 0.55)
  return dict(dy=dy, dx=dx, height=base_height * scale * height_scale, width=base_width * scale,
              brightness=brightness, colour=colour)


def _place(track: dict[str, np.ndarray], frame_size: int, rng: np.random.Generator) -> np.ndarray:
  """Boxes [T, 4] (y1, x1, y2, x2 in pixels) of the actor at a start point keeping it inside the frame."""
  half_h, half_w = track['height'] / 2, track['width'] / 2
  low_y, high_y = np.max(half_h - track['dy']), np.min(frame_size - half_h - track['dy'])
  low_x, high_x = np.max(half_w - track['dx']), np.min(frame_size - half_w - track['dx'])
  # A trajectory too long for the frame starts in the middle of its range and leaves the frame a little.
  centre_y = rng.uniform(low_y, high_y) if low_y < high_y else (low_y + high_y) / 2
  centre_x = rng.uniform(low_x, high_x) if low_x < high_x else (low_x + high_x) / 2
  cy, cx = centre_y + track['dy'], centre_x + track['dx']
  return np.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def _background(num_frames: int, frame_size: int, rng: np.random.Generator) -> np.ndarray:
  """Textured background [T, S, S, 3] float: a smooth random field plus per-frame sensor noise."""
  grid = rng.uniform(30, 150, size=(6, 6, 3)).astype(np.float32)
  coords = np.linspace(0, 5, frame_size)
  low = np.minimum(np.floor(coords), 4).astype(int)
  frac = (coords - low).astype(np.float32)
  rows = grid[low] * (1 - frac[:, None, None]) + grid[low + 1] * frac[:, None, None]
  field = rows[:, low] * (1 - frac[None, :, None]) + rows[:, low + 1] * frac[None, :, None]
  noise = rng.normal(0, 4, size=(num_frames, frame_size, frame_size, 3)).astype(np.float32)
  return field[None] + noise


def _draw(video: np.ndarray, boxes: np.ndarray, track: dict[str, np.ndarray]) -> None:
  """Paints the actor (a body with a head in its top fifth) into `video` [T, S, S, 3] in place."""
  size = video.shape[1]
  for frame, box in enumerate(np.round(boxes).astype(int)):
    y1, x1, y2, x2 = np.clip(box, 0, size)
    head_end = np.clip(box[0] + max(1, (box[2] - box[0]) // 5), 0, size)
    light = track['brightness'][frame]
    video[frame, y1:y2, x1:x2] = track['colour'][frame] * light
    video[frame, y1:head_end, x1:x2] = _HEAD_COLOUR * light


def _normalised(box: np.ndarray, frame_size: int) -> np.ndarray:
  return np.clip(box / frame_size, 0, 1).astype(np.float32)


@dataclasses.dataclass
class SyntheticConfig(tfds.core.BuilderConfig):
  """Sizes of a synthetic dataset: clips per split, frames per clip, square frame side in pixels;
  `seed` tells sets of the same builder apart (their clip i would otherwise be drawn alike)."""
  num_train: int = 0
  num_validation: int = 0
  num_frames: int = 16
  frame_size: int = 40
  seed: int = _SEED


@dataclasses.dataclass
class SyntheticClsConfig(SyntheticConfig):
  """A classification set: also the classes it is balanced over (ACTION_NAMES or COLOUR_NAMES)."""
  classes: tuple[str, ...] = CLS_CLASS_NAMES


class _SyntheticActions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared split handling; subclasses say what a record holds and how to render one."""
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.1.0': 'Metadata names the classes a horizontal flip swaps.'}
  # Nothing is downloaded; saying so up front keeps TFDS from looking for a checksums file next to this
  # module, which needs the optional `importlib_resources` package.
  url_infos = None

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: everything is rendered.
    sizes = {'train': self.builder_config.num_train, 'validation': self.builder_config.num_validation}
    return {split: self._generate_examples(split, size) for split, size in sizes.items()}

  def _generate_examples(self, split: str, size: int):
    for index in range(size):
      rng = np.random.default_rng([self.builder_config.seed, _SPLIT_IDS[split], index])
      yield index, self._render(split, index, rng)

  def _video_feature(self) -> tfds.features.Tensor:
    config = self.builder_config
    shape = (config.num_frames, config.frame_size, config.frame_size, 3)
    return tfds.features.Tensor(shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB)

  def _render(self, split: str, index: int, rng: np.random.Generator) -> dict:
    raise NotImplementedError


class SyntheticActionsCls(_SyntheticActions):
  """One actor per clip doing one of the config's classes; label balanced over them."""
  name = 'synthetic_actions_cls'
  BUILDER_CONFIGS = [
      SyntheticClsConfig(name='default', num_train=1200, num_validation=200),
      SyntheticClsConfig(name='tiny', num_train=40, num_validation=14),
      SyntheticClsConfig(name='study_pretrain', num_train=1200, num_validation=120,
                         seed=_SEED + 1, classes=COLOUR_NAMES),
      SyntheticClsConfig(name='study_upstream_a', num_train=1600, num_validation=240, seed=_SEED + 2),
      SyntheticClsConfig(name='study_upstream_b', num_train=1600, num_validation=210, seed=_SEED + 3,
                         classes=UPSTREAM_B_CLASS_NAMES),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    classes = self.builder_config.classes
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': self._video_feature(),
            'label': tfds.features.ClassLabel(names=classes),
            'video_id': tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(
            class_names=list(classes),
            flip_label_pairs=[list(pair) for pair in FLIP_LABEL_PAIRS
                              if set(pair) <= set(classes)]),
    )

  def _render(self, split: str, index: int, rng: np.random.Generator) -> dict:
    config = self.builder_config
    label = int(rng.integers(len(config.classes)))
    name = config.classes[label]
    if name in MOTIONS or name in COLOUR_NAMES:
      motion, changes = ('stand_still' if name in COLOUR_NAMES else name), []
    else:
      motion, changes = _PLAIN_MOTIONS[rng.integers(len(_PLAIN_MOTIONS))], [name]
    video = _background(config.num_frames, config.frame_size, rng)
    track = _trajectory(motion, changes, config.num_frames, config.frame_size, rng)
    if name in COLOUR_NAMES:  # A still actor of one colour: appearance only, like an image.
      track['colour'] = np.broadcast_to(_PALETTE[COLOUR_NAMES.index(name)], track['colour'].shape)
    _draw(video, _place(track, config.frame_size, rng), track)
    return {'video': np.clip(video, 0, 255).astype(np.uint8), 'label': label,
            'video_id': f'synthcls_{split}_{index:05d}'}


class SyntheticActionsLoc(_SyntheticActions):
  """1-3 actors per clip, each with a keyframe box and long-tailed multi-hot labels; detector boxes."""
  name = 'synthetic_actions_loc'
  BUILDER_CONFIGS = [
      SyntheticConfig(name='default', num_train=600, num_validation=300),
      SyntheticConfig(name='tiny', num_train=30, num_validation=11),
      # Small, so it overfits and its rarest classes have a few actors each (about 160 actors in
      # train); a larger validation set measures the tail classes' AP less noisily.
      SyntheticConfig(name='study', num_train=80, num_validation=600, seed=_SEED + 4),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    num_classes = len(LOC_CLASS_NAMES)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'video': self._video_feature(),
            'keyframe_index': np.int32,
            'video_id': tfds.features.Text(),
            'timestamp': np.int32,
            'gt_boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'gt_labels': tfds.features.Tensor(shape=(None, num_classes), dtype=np.bool_),
            'detector_boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            'detector_scores': tfds.features.Tensor(shape=(None,), dtype=np.float32),
        }),
        metadata=tfds.core.MetadataDict(class_names=list(LOC_CLASS_NAMES),
                                        flip_label_pairs=[list(pair) for pair in FLIP_LABEL_PAIRS]),
    )

  def _render(self, split: str, index: int, rng: np.random.Generator) -> dict:
    config = self.builder_config
    size, keyframe = config.frame_size, config.num_frames // 2
    video = _background(config.num_frames, size, rng)
    gt_boxes, gt_labels = [], []
    for _ in range(rng.integers(1, 4)):
      motion, changes = sample_actor_actions(rng)
      track = _trajectory(motion, changes, config.num_frames, size, rng)
      boxes = _place(track, size, rng)
      _draw(video, boxes, track)
      gt_boxes.append(_normalised(boxes[keyframe], size))
      gt_labels.append(np.isin(LOC_CLASS_NAMES, [motion] + changes))
    detector_boxes, detector_scores = _detections(np.stack(gt_boxes), rng)
    return {'video': np.clip(video, 0, 255).astype(np.uint8), 'keyframe_index': keyframe,
            'video_id': f'synthloc_{split}_{index:05d}', 'timestamp': 902 + index % 897,
            'gt_boxes': np.stack(gt_boxes), 'gt_labels': np.stack(gt_labels),
            'detector_boxes': detector_boxes, 'detector_scores': detector_scores}


def _detections(gt_boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """AVA-like person detections: every actor found with a little jitter, sometimes one false positive.

  Returns boxes [K, 4] and scores [K], sorted by decreasing score.
  """
  extent = np.concatenate([gt_boxes[:, 2:] - gt_boxes[:, :2]] * 2, axis=-1)
  boxes = gt_boxes + rng.normal(0, 0.04, size=gt_boxes.shape) * extent
  scores = rng.uniform(0.8, 1.0, size=len(gt_boxes))
  if rng.random() < 0.3:
    corner = rng.uniform(0, 0.7, size=2)
    boxes = np.concatenate([boxes, [np.concatenate([corner, corner + rng.uniform(0.1, 0.3, size=2)])]])
    scores = np.append(scores, rng.uniform(0.05, 0.5))
  boxes = np.clip(boxes, 0, 1)
  order = np.argsort(-scores, kind='stable')
  return boxes[order].astype(np.float32), scores[order].astype(np.float32)
