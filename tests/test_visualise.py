"""tools/visualise.py on a tiny demo workdir and an mp4: the AVA CSV, the top-5 and the drawn video.

Expected scores are computed independently: the test decodes the mp4 itself, samples each clip,
letterboxes (or centre-crops) it with data/video_ops and runs tools/predict on it.
"""
import types

import av
import numpy as np
import pytest
import tensorflow as tf

import fake_releases
from test_train import tiny_config
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune import train
from vivit_cofinetune.data import video_ops
from vivit_cofinetune.metrics import ava_files
from vivit_cofinetune.tools import predict
from vivit_cofinetune.tools import visualise

pytestmark = pytest.mark.slow

FPS, SECONDS, HEIGHT, WIDTH = 10, 4, 48, 64
NUM_FRAMES, STRIDE, CROP = 8, 2, 32  # the demo config's clips
# Person boxes x1, y1, x2, y2 per keyframe second; the 0.5-score box is under the demo's 0.8 cut.
BOXES = {1: [(0.1, 0.2, 0.5, 0.9, 0.95), (0.55, 0.1, 0.95, 0.8, 0.85), (0.3, 0.3, 0.6, 0.6, 0.5)],
         2: [(0.2, 0.25, 0.6, 0.95, 0.99)],
         3: [(0.05, 0.05, 0.45, 0.5, 0.9), (0.5, 0.4, 0.9, 0.95, 0.8)]}
SCALE = 6  # annotated frames: the short side 48 upscaled to at least 256


@pytest.fixture(scope='module')
def workdir(data_dir, tmp_path_factory):
  """A demo workdir trained for 2 steps (its config.json and checkpoint are what the tool reads)."""
  config = tiny_config(data_dir, steps=2)
  for task in config.tasks.values():
    task.batch_size = 2
  path = tmp_path_factory.mktemp('demo')
  train.train_and_evaluate(config, str(path))
  return path


def video_frames() -> np.ndarray:
  """uint8 [T, H, W, 3]: grey, with a red and a blue rectangle moving right (no green anywhere)."""
  frames = np.full((FPS * SECONDS, HEIGHT, WIDTH, 3), 128, np.uint8)
  for index, frame in enumerate(frames):
    frame[8:30, 2 + index:14 + index] = (220, 30, 30)
    frame[26:44, 40 - index // 2:58 - index // 2] = (30, 30, 220)
  return frames


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
  """(mp4 path, person-box CSV path): the video id is the mp4's stem, 'clip'."""
  directory = tmp_path_factory.mktemp('inputs')
  video = str(directory / 'clip.mp4')
  fake_releases.write_video(video, video_frames(), FPS)
  rows = ['other,0001,0.1,0.1,0.5,0.5,,0.99']  # another video's box, to be ignored
  rows += [f'clip,{second:04d},{x1},{y1},{x2},{y2},,{score}'
           for second, boxes in BOXES.items() for x1, y1, x2, y2, score in boxes]
  (directory / 'boxes.csv').write_text('\n'.join(rows) + '\n')
  return video, str(directory / 'boxes.csv')


def run(**flag_values) -> None:
  """The tool's main() with these flags (the others at their defaults)."""
  defaults = dict(checkpoint=None, config=None, video=None, boxes=None, output=None, task=None,
                  mode=None, fps=None, min_score=None, batch_size=2)
  holders = {name: types.SimpleNamespace(value=value)
             for name, value in dict(defaults, **flag_values).items()}
  visualise.main(['visualise'], flag_values=holders)


def decoded(path: str) -> np.ndarray:
  with av.open(path) as container:
    return np.stack([frame.to_ndarray(format='rgb24') for frame in container.decode(video=0)])


def clip_indices(second: int, num_frames: int) -> np.ndarray:
  """Frames on screen at the clip's times (the middle one at `second`), clamped."""
  times = second + (np.arange(NUM_FRAMES) - NUM_FRAMES // 2) * STRIDE / FPS
  return np.clip(np.floor(times * FPS + 1e-6).astype(int), 0, num_frames - 1)


def normalised(clip: np.ndarray) -> np.ndarray:
  return (clip.astype(np.float32) / 255.0 - 0.5) / 0.5  # the demo's mean and std


def test_localisation_writes_the_ava_csv_and_the_annotated_video(workdir, inputs, tmp_path,
                                                                 capsys):
  video, boxes_csv = inputs
  run(checkpoint=str(workdir), video=video, boxes=boxes_csv, output=str(tmp_path), fps=FPS)
  assert 'synthetic_loc (localisation) at 10 fps' in capsys.readouterr().out
  detections = ava_files.read_csv(str(tmp_path / 'clip_detections.csv'), load_scores=True)
  config = predict.load_config(workdir)[0]
  class_ids = tasks_lib.make_task('synthetic_loc', config.tasks.synthetic_loc).class_ids
  num_classes = len(class_ids)

  # Independently: the mp4's frames, sampled, letterboxed and scored by tools/predict.
  frames = decoded(video)
  predictor = predict.Predictor(workdir, task='synthetic_loc')
  for second, rows in BOXES.items():
    given = np.array([box[:4] for box in rows if box[4] >= 0.8])[:, [1, 0, 3, 2]]  # y1, x1, y2, x2
    mine = detections.select(detections.timestamp == second)
    assert set(mine.video_id) == {'clip'} and len(mine) == len(given) * num_classes
    np.testing.assert_allclose(mine.boxes, np.repeat(given, num_classes, axis=0), atol=5e-4)
    np.testing.assert_array_equal(mine.label, np.tile(class_ids, len(given)))
    def scores(indices, stretch=False):
      clip = tf.constant(frames[indices])
      if stretch:
        resized, placement = video_ops.resize(clip, CROP), tf.constant([0.0, 0.0, 1.0, 1.0])
      else:
        resized, placement = video_ops.letterbox(clip, CROP, (127.5, 127.5, 127.5))
      resized = np.round(np.clip(resized.numpy(), 0, 255)).astype(np.uint8)
      placed = video_ops.place_boxes(given, placement).numpy()
      logits = predictor(normalised(resized), placed)['logits'][0]
      return (1 / (1 + np.exp(-logits))).reshape(-1)

    # Equal within the CSV's rounding (4 decimals), while the barely trained model still tells
    # apart a clip one stride later and a stretched (not letterboxed) one: the check can fail.
    indices = clip_indices(second, len(frames))
    np.testing.assert_allclose(mine.score, scores(indices), atol=6e-5)
    later = np.minimum(indices + STRIDE, len(frames) - 1)
    assert np.abs(mine.score - scores(later)).max() > 1.5e-4
    assert np.abs(mine.score - scores(indices, stretch=True)).max() > 1.5e-4

  annotated = decoded(str(tmp_path / 'clip_synthetic_loc_annotated.mp4'))
  assert annotated.shape == (FPS * SECONDS, HEIGHT * SCALE, WIDTH * SCALE, 3)
  # The top edge of keyframe 1's second box (over grey background), drawn green on its keyframe's
  # frame and not on the first frame, a second before.
  x1, y1, x2, _ = (np.array(BOXES[1][1][:4]) * [WIDTH, HEIGHT, WIDTH, HEIGHT] * SCALE).astype(int)
  edge = annotated[:, y1 - 1:y1 + 3, x1 + 10:x2 - 10].astype(int)
  greenness = (edge[..., 1] - np.maximum(edge[..., 0], edge[..., 2])).max(axis=1).mean(axis=-1)
  assert greenness[FPS * 1] > 100 and greenness[0] < 20, greenness[[0, FPS]]


def test_classification_writes_the_top5_per_clip(workdir, inputs, tmp_path):
  video, _ = inputs
  run(checkpoint=str(workdir), video=video, mode='classification', output=str(tmp_path), fps=FPS)
  lines = (tmp_path / 'clip_top5.csv').read_text().splitlines()
  assert lines[0] == 'video_id,timestamp,rank,class_index,class_name,score'
  rows = [line.split(',') for line in lines[1:]]
  assert len(rows) == SECONDS * visualise.TOP_K  # one clip per second

  frames = decoded(video)
  side, left = HEIGHT, (WIDTH - HEIGHT) // 2  # the centre square
  predictor = predict.Predictor(workdir, task='synthetic_cls')
  for second in range(SECONDS):
    clip = frames[clip_indices(second, len(frames)), :, left:left + side]
    clip = video_ops.resize_uint8(tf.constant(clip), CROP).numpy()
    logits = predictor(normalised(clip))['logits'][0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    mine = rows[second * visualise.TOP_K:(second + 1) * visualise.TOP_K]
    assert [row[:3] for row in mine] == [['clip', str(second), str(rank)] for rank in range(1, 6)]
    classes = [int(row[3]) for row in mine]
    np.testing.assert_allclose([float(row[5]) for row in mine], probabilities[classes], atol=1e-5)
    assert sorted(probabilities)[-5:][::-1] == pytest.approx(probabilities[classes], abs=1e-5)
  annotated = decoded(str(tmp_path / 'clip_synthetic_cls_annotated.mp4'))
  assert annotated.shape == (FPS * SECONDS, HEIGHT * SCALE, WIDTH * SCALE, 3)


def test_bad_input_exits_with_one_line_naming_it(workdir, inputs, tmp_path):
  video, boxes_csv = inputs

  def error_of(**flag_values) -> str:
    flag_values = dict(dict(checkpoint=str(workdir), video=video, boxes=boxes_csv,
                            output=str(tmp_path / 'out'), fps=FPS), **flag_values)
    with pytest.raises(SystemExit) as exited:
      run(**flag_values)
    message = str(exited.value.code)
    assert '\n' not in message
    return message

  assert error_of(video=str(tmp_path / 'none.mp4')) == (
      f'visualise: --video={tmp_path / "none.mp4"}: no such file')
  assert error_of(boxes=str(tmp_path / 'none.csv')).endswith('none.csv: no such file')
  short = tmp_path / 'short.csv'
  short.write_text('clip,0001,0.1,0.1,0.5,0.5,0.9\n')
  assert f'--boxes={short}:1: expected video_id,timestamp,x1,y1,x2,y2,,score' in error_of(
      boxes=str(short))
  other = tmp_path / 'other.csv'
  other.write_text('other,0001,0.1,0.1,0.5,0.5,,0.99\n')
  assert "no boxes for video id 'clip'" in error_of(boxes=str(other))
  late = tmp_path / 'late.csv'
  late.write_text('clip,0001,0.1,0.1,0.5,0.5,,0.99\nclip,0004,0.1,0.1,0.5,0.5,,0.99\n')
  assert 'keyframe timestamp 4 s has no frame' in error_of(boxes=str(late))
  assert '--task=synthetic_cls is a classification task but --mode=localisation' in error_of(
      task='synthetic_cls', mode='localisation')
  assert 'takes no boxes' in error_of(mode='classification')
  assert '--checkpoint=' in error_of(checkpoint=str(tmp_path))
