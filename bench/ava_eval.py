"""Times AVA frame-mAP (CSV reading + evaluation) on an AVA-val-sized problem.

  python -m bench.ava_eval --json [--videos 64] [--keep_files DIR]

Generates, with a fixed seed, ground truth for 64 videos x 897 keyframes (1-4
people each, 1-3 of the 60 evaluated actions per person, long-tailed) and
detections for every ground-truth box (jittered) plus some spurious boxes, each
scored for all 60 classes with 4-decimal scores (~9M rows, ~480 MB), writes
both as official CSVs in a temporary directory, then times
`read_csv` + `evaluate` as the trainer and the CLI run them.
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from vivit_cofinetune.metrics import ava
from vivit_cofinetune.metrics import ava_files

# The 60 ids of the AVA v2.2 evaluation label map.
EVALUATED_CLASSES = np.array(
    [1] + list(range(3, 16)) + [17, 20, 22, 24] + list(range(26, 31)) +
    [34, 36, 37, 38, 41, 43] + list(range(45, 50)) + [51, 52, 54] +
    list(range(56, 71)) + [72, 73, 74] + list(range(76, 81)))
KEYFRAMES = np.arange(902, 1799)


def make_problem(videos: int, seed: int = 0):
  """Returns (groundtruth, detections) Annotations of a synthetic AVA val set."""
  rng = np.random.default_rng(seed)
  classes = EVALUATED_CLASSES.size
  frequency = 1.0 / np.arange(1, classes + 1)  # Long tail, like AVA.
  frequency /= frequency.sum()
  names = np.array([f'video{index:06d}' for index in range(videos)])
  video_of_frame = np.repeat(np.arange(videos), KEYFRAMES.size)
  time_of_frame = np.tile(KEYFRAMES, videos)
  people = rng.integers(1, 5, size=video_of_frame.size)
  frame_of_person = np.repeat(np.arange(video_of_frame.size), people)
  corner = rng.uniform(0, 0.5, size=(frame_of_person.size, 2))
  size = rng.uniform(0.2, 0.5, size=(frame_of_person.size, 2))
  person_boxes = np.round(np.concatenate([corner, corner + size], axis=1), 3)

  # Ground truth: 1-3 distinct actions per person.
  actions = rng.integers(1, 4, size=frame_of_person.size)
  person_of_row = np.repeat(np.arange(frame_of_person.size), actions)
  class_index = rng.choice(classes, size=person_of_row.size, p=frequency)
  is_action = np.zeros((frame_of_person.size, classes), bool)
  is_action[person_of_row, class_index] = True
  person_of_row, class_index = np.nonzero(is_action)
  frame = frame_of_person[person_of_row]
  groundtruth = ava_files.annotations_from_arrays(
      names[video_of_frame[frame]], time_of_frame[frame],
      person_boxes[person_of_row], EVALUATED_CLASSES[class_index])

  # Detections: every person (jittered box) plus 10% spurious boxes, x 60.
  jitter = rng.normal(0, 0.03, size=person_boxes.shape)
  spurious_frames = np.flatnonzero(rng.random(video_of_frame.size) < 0.1)
  spurious_corner = rng.uniform(0, 0.5, size=(spurious_frames.size, 2))
  detection_boxes = np.clip(np.concatenate([
      person_boxes + jitter,
      np.concatenate([spurious_corner, spurious_corner + 0.3], axis=1)]), 0, 1)
  detection_frame = np.concatenate([frame_of_person, spurious_frames])
  detection_truth = np.concatenate(
      [is_action, np.zeros((spurious_frames.size, classes), bool)])
  logits = rng.normal(-3, 1.5, size=detection_truth.shape) + 4 * detection_truth
  scores = np.round(1 / (1 + np.exp(-logits)), 4)
  rows = detection_frame.size * classes
  detection_of_row = np.repeat(np.arange(detection_frame.size), classes)
  frame = detection_frame[detection_of_row]
  detections = ava_files.annotations_from_arrays(
      names[video_of_frame[frame]], time_of_frame[frame],
      np.round(detection_boxes, 3)[detection_of_row],
      np.tile(EVALUATED_CLASSES, detection_frame.size), scores.reshape(rows))
  return groundtruth, detections


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--json', action='store_true', help='print one JSON line')
  parser.add_argument('--videos', type=int, default=64)
  parser.add_argument('--keep_files', default=None,
                      help='write the CSVs here (kept) instead of a temp dir')
  args = parser.parse_args()
  groundtruth, detections = make_problem(args.videos)
  labelmap = {int(c): f'class {c}' for c in EVALUATED_CLASSES}
  with tempfile.TemporaryDirectory() as temporary:
    directory = args.keep_files or temporary
    os.makedirs(directory, exist_ok=True)
    groundtruth_path = os.path.join(directory, 'groundtruth.csv')
    detections_path = os.path.join(directory, 'detections.csv')
    ava_files.write_csv(groundtruth_path, groundtruth)
    ava_files.write_csv(detections_path, detections)
    detections_bytes = os.path.getsize(detections_path)

    start, cpu_start = time.perf_counter(), time.process_time()
    groundtruth = ava_files.read_csv(groundtruth_path, labelmap.keys())
    detections = ava_files.read_csv(detections_path, labelmap.keys(), load_scores=True)
    read_s = time.perf_counter() - start
    result = ava.evaluate(groundtruth, detections, labelmap)
    total_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
  report = {
      'benchmark': 'ava_eval',
      'groundtruth_rows': len(groundtruth),
      'detection_rows': len(detections),
      'detections_csv_mb': round(detections_bytes / 1e6, 1),
      'read_s': round(read_s, 2),
      'evaluate_s': round(total_s - read_s, 2),
      'total_s': round(total_s, 2),
      'cpu_s': round(cpu_s, 2),
      'mAP': round(result['mAP'], 6),
      'machine': f'{platform.machine()}, {os.cpu_count()} cpus',
  }
  if args.json:
    print(json.dumps(report))
  else:
    for key, value in report.items():
      print(f'{key:>20}: {value}')


if __name__ == '__main__':
  main()
