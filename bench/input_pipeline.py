"""Clips/s of the training input pipeline against bare decoding of the same records.

  python bench/input_pipeline.py [--config=configs/demo_cofinetune.py] [--task=NAME] [--batches=50]
      [--rounds=5] [--data_dir=DIR] [--json]

For each task of the config (or --task): times batches of pipeline.train_iterator (read, shuffle,
decode, clip sampling, crop, resize, normalise, flip, boxes, batch) and as many clips of the same
records read and decoded only (the video tensors, no augmentation), both with tf.data's AUTOTUNE
parallelism, taking turns for `rounds` rounds of `batches` batches, and prints pipeline / decode as
a ratio of one run. Without --data_dir the config's self-rendering datasets (the demo's synthetic
ones) are rendered into a temporary directory first, which is not timed.
"""
import argparse
import json
import os
import platform
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import config_lib
from vivit_cofinetune.data import pipeline


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
  """Batches of the train split's videos, decoded and nothing else, as the pipeline reads them."""
  builder = tfds.builder(task_config.dataset.name, data_dir=data_dir)
  options = tf.data.Options()
  options.deterministic = True
  records = builder.as_dataset(split=task_config.dataset.get('train_split', 'train'),
                               read_config=tfds.ReadConfig(options=options, try_autocache=False),
                               decoders={'video': tfds.decode.SkipDecoding()})
  decode = builder.info.features['video'].decode_example
  videos = records.repeat().map(lambda example: decode(example['video']),
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return videos.batch(batch_size, drop_remainder=True).prefetch(2).as_numpy_iterator()


def measure(config: ml_collections.ConfigDict, task_name: str, data_dir: str, num_batches: int,
            rounds: int) -> dict:
  """Pipeline and bare-decode clips/s of one task."""
  task_config = config.tasks[task_name]
  start = time.perf_counter()
  info = pipeline.dataset_info(task_config, data_dir)  # Renders a synthetic dataset if missing.
  prepare_s = time.perf_counter() - start
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
  parser.add_argument('--json', action='store_true', help='print one JSON object instead of a table')
  args = parser.parse_args()
  tf.config.set_visible_devices([], 'GPU')
  config = config_lib.load_config_file(args.config)
  if args.task is not None and args.task not in config.tasks:
    parser.error(f'--task={args.task!r}: expected one of {sorted(config.tasks)} ({args.config})')
  task_names = [args.task] if args.task else list(config.tasks)
  with tempfile.TemporaryDirectory(prefix='bench_input_pipeline_') as temporary:
    data_dir = args.data_dir or temporary
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
