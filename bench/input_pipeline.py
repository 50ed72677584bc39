"""Clips/s of the training input pipeline against bare decoding of the same records.

  python bench/input_pipeline.py [--config=configs/demo_cofinetune.py] [--task=NAME] [--batches=50]
      [--rounds=5] [--data_dir=DIR] [--batch_size=N] [--json]
  python bench/input_pipeline.py --config=configs/ava_kinetics_cofinetune.py:local=True \
      --fake_releases --batch_size=8

For each task of the config (or --task): times batches of pipeline.train_iterator (read, shuffle,
decode, clip sampling, crop, resize, flip, boxes, batch) and as many clips of the same records read
and decoded only, taking turns for `rounds` rounds of `batches` batches, and prints pipeline / decode
as a ratio of one run. Bare decoding is, for JPEG-frame records (the release datasets), the full JPEG
decode of as many frames per clip, as far apart, as the pipeline samples (no crop, resize or
augmentation); for
tensor records (the synthetic sets), decoding the video tensor. Without --data_dir the config's
self-rendering datasets are rendered into a temporary directory first; with --fake_releases textured
AVA v2.2 and Kinetics-700 releases (bench/prepare_speed.py) are written and prepared there (neither is
timed).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.data import prepare
from vivit_cofinetune.data import records
from vivit_cofinetune.data import video_ops


def _time_alternately(iterators: dict, num_batches: int, rounds: int, batch_size: int) -> dict:
  """Clips/s of each iterator over `rounds` x `num_batches` batches, the iterators taking turns.

  Taking turns spreads the load of other processes on the machine over both; each iterator's first
  batch (start-up, shuffle buffer) is not timed.
  """
  elapsed = {name: 0.0 for name in iterators}
  for iterator in iterators.values():
    next(iterator)
  for _ in range(rounds):
    for name, iterator in iterators.items():
      start = time.perf_counter()
      for _ in range(num_batches):
        next(iterator)
      elapsed[name] += time.perf_counter() - start
  return {name: rounds * num_batches * batch_size / seconds for name, seconds in elapsed.items()}


def _decoded_videos(task_config: ml_collections.ConfigDict, data_dir: str, batch_size: int):
  """Batches of the train split's clips, decoded and nothing else, read as the pipeline reads them."""
  builder = tfds.builder(task_config.dataset.name, data_dir=data_dir)
  split = task_config.dataset.get('train_split', 'train')
  if records.is_random_access(builder):
    ordered = records.read_shuffled_epochs(builder, split, seed=0, host=0, num_hosts=1,
                                           start_position=0).map(lambda _, example: example)
  else:
    ordered = records.read_sequential(builder, split, shuffle_seed=0).repeat()
  if isinstance(builder.info.features['video'], tfds.features.Sequence):
    inputs = task_config.input

    def decode(frames):
      # As many frames, as far apart, as the pipeline samples (from the first frame, wrapping).
      indices = video_ops.clip_indices(tf.shape(frames)[0], 0, inputs.num_frames,
                                       inputs.frame_stride, 'loop')
      decoded = tf.map_fn(lambda frame: tf.io.decode_jpeg(frame, channels=3),
                          tf.gather(frames, indices),
                          fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
      # Frames of different videos differ in size: keep one number per clip so that clips batch.
      return tf.reduce_max(decoded)
  else:
    decode = builder.info.features['video'].decode_example
  videos = ordered.map(lambda example: decode(example['video']),
                       num_parallel_calls=pipeline._parallel_calls(),  # pylint: disable=protected-access
                       deterministic=True)
  return videos.batch(batch_size, drop_remainder=True).prefetch(2).as_numpy_iterator()


def _prepare_textured_releases(data_dir: str) -> None:
  """Writes textured AVA v2.2 and Kinetics-700 releases (bench/prepare_speed.py) and prepares them.

  Textured, not the tests' flat colours: JPEG decoding costs depend on the picture, and flat frames
  would make decoding look cheaper than it is on real footage.
  """
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import prepare_speed  # pylint: disable=g-import-not-at-top
  releases = os.path.join(data_dir, 'releases')
  prepare.prepare('ava_v2_2', manual_dir=prepare_speed.write_ava_like(releases, 24),
                  data_dir=data_dir)
  prepare.prepare('kinetics700', manual_dir=prepare_speed.write_kinetics_like(releases, 12),
                  data_dir=data_dir)


def measure(config: ml_collections.ConfigDict, task_name: str, data_dir: str, num_batches: int,
            rounds: int) -> dict:
  """Pipeline and bare-decode clips/s of one task."""
  task_config = config.tasks[task_name]
  start = time.perf_counter()
  info = pipeline.dataset_info(task_config, data_dir)  # Renders a synthetic dataset if missing.
  prepare_s = time.perf_counter() - start
  task_config.num_classes = info.num_classes  # a fake release has fewer classes than the real one
  batch_size = task_config.batch_size
  train_videos = (batch['video'] for batch in pipeline.train_iterator(task_config, data_dir=data_dir,
                                                                       seed=config.seed))
  decoded_videos = _decoded_videos(task_config, data_dir, batch_size)
  rates = _time_alternately({'pipeline': train_videos, 'decode': decoded_videos}, num_batches, rounds,
                            batch_size)
  return {
      'task': task_name, 'dataset': task_config.dataset.name, 'batch_size': batch_size,
      'batches': num_batches, 'rounds': rounds, 'train_examples': info.num_train_examples,
      'prepare_s': prepare_s,
      'pipeline_clip_shape': list(next(train_videos).shape[1:]),
      'decode_clip_shape': list(next(decoded_videos).shape[1:]),
      'pipeline_clips_per_s': rates['pipeline'], 'decode_clips_per_s': rates['decode'],
      'pipeline_over_decode': rates['pipeline'] / rates['decode'],
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/demo_cofinetune.py', help='path/to/config.py[:args]')
  parser.add_argument('--task', default=None, help='one task of config.tasks (default: every task)')
  parser.add_argument('--batches', type=int, default=50, help='timed batches per round')
  parser.add_argument('--rounds', type=int, default=5, help='turns each iterator takes')
  parser.add_argument('--data_dir', default=None,
                      help='TFDS data_dir (default: render the datasets into a temporary directory)')
  parser.add_argument('--batch_size', type=int, default=None, help='per-task batch (default: config)')
  parser.add_argument('--fake_releases', action='store_true',
                      help='write and prepare textured AVA and Kinetics-700 releases first')
  parser.add_argument('--json', action='store_true', help='print one JSON object instead of a table')
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  config = config_lib.load_config_file(args.config)
  if args.batch_size:
    for task_config in config.tasks.values():
      task_config.batch_size = args.batch_size
  if args.task is not None and args.task not in config.tasks:
    parser.error(f'--task={args.task!r}: expected one of {sorted(config.tasks)} ({args.config})')
  task_names = [args.task] if args.task else list(config.tasks)
  with tempfile.TemporaryDirectory(prefix='bench_input_pipeline_') as temporary:
    data_dir = args.data_dir or temporary
    if args.fake_releases:
      _prepare_textured_releases(data_dir)
    results = [measure(config, name, data_dir, args.batches, args.rounds) for name in task_names]
  summary = {'config': args.config, 'data_dir': args.data_dir or '(temporary)', 'tasks': results,
             'host': f'{platform.machine()}, {os.cpu_count()} CPUs, load average '
                     f'{os.getloadavg()[0]:.2f} at end'}
  if args.json:
    print(json.dumps(summary))
    return
  print(f'{"task":<16}{"batch":>6}{"pipeline clips/s":>18}{"decode clips/s":>16}{"ratio":>8}'
        f'  clip shapes (pipeline / decoded)')
  for result in results:
    print(f'{result["task"]:<16}{result["batch_size"]:>6}{result["pipeline_clips_per_s"]:>18.1f}'
          f'{result["decode_clips_per_s"]:>16.1f}{result["pipeline_over_decode"]:>8.3f}'
          f'  {result["pipeline_clip_shape"]} / '
          f'{result["decode_clip_shape"]}')
  print(summary['host'])


if __name__ == '__main__':
  main()
