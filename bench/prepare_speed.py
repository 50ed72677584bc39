"""Time and disk per 1,000 videos of `data.prepare` on generated Kinetics-like and AVA-like releases.

  python bench/prepare_speed.py [--clips=8] [--ava_seconds=60]

Writes `--clips` 10-second 320x240 clips at 25 fps (a textured background with moving blocks, so JPEG
sizes are not those of flat colour) as a Kinetics-700 release, and one AVA 15-minute cut of
`--ava_seconds` seconds at 30 fps (640x360) with one keyframe per second, prepares both with the default
builder configs, and prints seconds and bytes per 1,000 videos (AVA: per 1,000 keyframes and per movie
of 897 keyframes). Real footage compresses differently: treat the sizes as estimates.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tests'))
import fake_releases  # pylint: disable=g-import-not-at-top,wrong-import-position
from vivit_cofinetune.data import prepare  # pylint: disable=g-import-not-at-top,wrong-import-position


def _frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:height, :width]
  base = (np.sin(x / 17.0 + seed)[..., None] * 60 + np.cos(y / 11.0)[..., None] * 60 + 128)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for index in range(num_frames):
    frame = base + rng.normal(0, 8, size=(height, width, 3))
    left = (index * 4) % (width - 60)
    frame[60:160, left:left + 60] = (220, 40, 40)
    frames[index] = np.clip(frame, 0, 255)
  return frames


def _folder_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path)
             for name in names)


def write_kinetics_like(root: str, num_clips: int) -> str:
  """A Kinetics-700 release of `num_clips` textured 10 s 320x240 clips at 25 fps (+1 val); its path."""
  release = os.path.join(root, 'kinetics')
  os.makedirs(os.path.join(release, 'annotations'))
  for split, folder in (('train', 'train'), ('validate', 'val')):
    rows = ['label,youtube_id,time_start,time_end,split']
    for index in range(num_clips if split == 'train' else 1):
      youtube_id = f'clip{split[:2]}{index:05d}'
      fake_releases.write_video(os.path.join(release, folder, f'{youtube_id}_000000_000010.mp4'),
                                _frames(250, 240, 320, index), 25)
      rows.append(f'class{index % 2},{youtube_id},0,10,{split}')
    with open(os.path.join(release, 'annotations', f'{split}.csv'), 'w') as file:
      file.write('\n'.join(rows) + '\n')
  return release


def write_ava_like(root: str, seconds: int) -> str:
  """An AVA release whose one train cut is `seconds` of textured 640x360 video at 30 fps with a
  keyframe every second (the val part is the tests' fake one); its path."""
  release = fake_releases.write_ava_release(os.path.join(root, 'ava'), layout='videos_15min',
                                            num_train_videos=1, keyframes_per_video=1)
  annotations = os.path.join(release['root'], 'annotations')
  video_id = release['videos']['train'][0]
  with open(os.path.join(annotations, 'ava_train_v2.2.csv'), 'w') as file:
    file.writelines(f'{video_id},{t:04d},0.1,0.2,0.4,0.9,12,0\n'
                    for t in range(902, 902 + seconds - 4))
  fake_releases.write_video(os.path.join(release['root'], 'videos_15min', f'{video_id}.mp4'),
                            _frames(30 * seconds, 360, 640, 0), 30)
  return release['root']


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--clips', type=int, default=8)
  parser.add_argument('--ava_seconds', type=int, default=60)
  args = parser.parse_args()
  root = tempfile.mkdtemp()
  start = time.monotonic()
  builder = prepare.prepare('kinetics700', manual_dir=write_kinetics_like(root, args.clips),
                            data_dir=os.path.join(root, 'tfds'))
  seconds = time.monotonic() - start
  videos = args.clips + 1
  print(f'kinetics700 (10 s clips, 25 fps, short side 256): {seconds / videos * 1000 / 3600:.2f} '
        f'h and {_folder_bytes(builder.data_dir) / videos * 1000 / 2**30:.1f} GiB per 1,000 clips '
        f'on {os.cpu_count()} cores')
  ava_release = write_ava_like(root, args.ava_seconds)
  start = time.monotonic()
  builder = prepare.prepare('ava_v2_2', manual_dir=ava_release, data_dir=os.path.join(root, 'tfds'))
  seconds = time.monotonic() - start
  count = builder.info.splits['train'].num_examples + builder.info.splits['validation'].num_examples
  per_keyframe = _folder_bytes(builder.data_dir) / count
  print(f'ava_v2_2 (30 fps, short side 256, 2.4 s windows): {seconds / count * 1000 / 60:.1f} min '
        f'and {per_keyframe * 1000 / 2**30:.2f} GiB per 1,000 keyframes '
        f'({per_keyframe * 897 / 2**30:.1f} GiB per movie) on {os.cpu_count()} cores')


if __name__ == '__main__':
  main()
