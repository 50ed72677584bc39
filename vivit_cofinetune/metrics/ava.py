"""AVA frame-mAP with the semantics of either reference evaluator (`protocol`).

Both references feed the same PASCAL VOC code (ActivityNet's `ava/`, copied
unchanged into PySlowFast's `ava_evaluation/`); they differ only in how their
readers hand rows to it:

* `activitynet` (the default): `Evaluation/get_ava_performance.py` of
  activitynet/ActivityNet at commit 3fee089 (the version that takes an
  exclusions file, used for AVA v2.1/v2.2). Its `read_csv` keeps at most 50
  detections per (video, timestamp) image in a bounded min-heap and lists each
  image's rows by descending score, ties in heap order. This is the official
  challenge number, so it is the default.
* `slowfast`: PySlowFast's in-training copy (`slowfast/utils/ava_eval_helper.py`,
  `evaluate_ava` / `get_ava_eval_data` / `run_evaluation`). Every detection is
  kept (no cap) and each image's rows stay in the order they arrived, so
  per-image matching visits them in file order, not by score, and tied scores
  reach the final ranking in that order. Most published AVA numbers were
  computed this way.

What both do, and so what we do:

* Only rows whose class id is in the label map are read (others are dropped
  silently by the references; we log a warning with the count).
* Ground truth keeps every row, duplicates included: each row is one instance.
* Excluded (video, timestamp) keys are removed from ground truth and detections.
* `activitynet` only: detections keep at most 50 rows per image, over all
  classes, chosen exactly as the reader's bounded min-heap chooses them (ties
  at the cut-off included), then ordered by descending score within the image.
* Detections with y1 >= y2 or x1 >= x2 are dropped (after the cut).
* Per image and class, detections are visited in the reader's order; each is
  matched to the ground-truth box of its class with the highest IoU (first one
  on exact ties). It is a true positive if that IoU >= 0.5 and that box is not
  matched yet; otherwise a false positive (no fall-back to the next-best box).
  Detections in images without ground truth are false positives.
* Per class, scores are concatenated image by image (images in order of first
  appearance in the detections) and ranked with numpy's default argsort,
  reversed, as the references do, so tied scores give the same AP.
* AP is PASCAL VOC: precision made monotone, summed over recall change points.
  Classes without ground truth get NaN and are left out of the mean.

Deviations, all on input the references would crash on or silently accept:
malformed rows and boxes outside [0, 1] raise a ValueError naming the file and
line, inverted ground-truth boxes one naming the keyframe; the 8th column of
ground truth (person id) is never parsed, so a malformed one such as `3_` is
harmless (the official reader parses it as a score and crashes). Where two
distinct ground-truth boxes of a class tie exactly for a detection's best IoU,
we use the order each reader gives ground truth (ActivityNet: its heap order;
PySlowFast: file order). docs/benchmarks.md records the bit-exact comparison
with the official tool.

  python -m vivit_cofinetune.metrics.ava --groundtruth G.csv --detections D.csv \
      --labelmap L.pbtxt [--protocol activitynet|slowfast] [--exclusions E.csv] \
      [--train_groundtruth T.csv] [--group_thresholds low,high]
"""

import argparse
import heapq
import json
import math
import sys
from typing import Iterable, Sequence

import numpy as np

from vivit_cofinetune.metrics import ava_files

IOU_THRESHOLD = 0.5
# ActivityNet's reader cap; PySlowFast's reader has none.
DETECTIONS_PER_IMAGE = 50
PROTOCOLS = ('activitynet', 'slowfast')


# ------------------------------------------------------------- evaluation ---


def evaluate(groundtruth: ava_files.Annotations, detections: ava_files.Annotations,
             labelmap: dict[int, str],
             excluded_keys: Iterable[tuple[str, int]] | None = None,
             train_class_counts: dict[int, int] | None = None,
             group_thresholds: tuple[float, float] | None = None,
             detections_per_image: int | None = None,
             protocol: str = 'activitynet') -> dict:
  """Frame-mAP@0.5IoU over the label map's classes, per class and per group.

  Returns {'mAP', 'per_class': {'<id>': {'name', 'ap', 'num_groundtruth'}},
  'groups'} with 'groups' only when `train_class_counts` is given (see
  `frequency_groups`). `protocol` names the reference evaluator (see the
  module docstring). `detections_per_image` is ActivityNet's reader cap
  (None = its 50; 0 = no cap); the slowfast reader has none.
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol={protocol!r}: expected one of {PROTOCOLS}.')
  if protocol == 'slowfast' and detections_per_image:
    raise ValueError('protocol=slowfast reads every detection; '
                     f'detections_per_image={detections_per_image} needs '
                     'protocol=activitynet.')
  if detections_per_image is None:
    detections_per_image = DETECTIONS_PER_IMAGE if protocol == 'activitynet' else 0
  classes = np.array(sorted(labelmap), dtype=np.int64)
  if not classes.size or classes.min() < 1:
    raise ValueError('labelmap must hold class ids >= 1.')
  groundtruth = ava_files.keep_classes(groundtruth, classes, 'groundtruth')
  detections = ava_files.keep_classes(detections, classes, 'detections')
  image_of_gt, image_of_detection = _image_codes(groundtruth, detections,
                                                 excluded_keys)
  groundtruth = groundtruth.select(image_of_gt >= 0)
  image_of_gt = image_of_gt[image_of_gt >= 0]
  inverted = np.flatnonzero((groundtruth.boxes[:, 0] > groundtruth.boxes[:, 2]) |
                            (groundtruth.boxes[:, 1] > groundtruth.boxes[:, 3]))
  if inverted.size:
    row = groundtruth.select(inverted[:1])
    raise ValueError('groundtruth box with y1 > y2 or x1 > x2 at '
                     f'{row.video_id[0]},{row.timestamp[0]}: {row.boxes[0]}.')

  # Detections: the protocol's reader picks each image's rows and the order they
  # are visited in; then the validity filter.
  image_rank = _first_appearance_rank(image_of_detection)
  keep, detection_visit = _reader_rows(image_of_detection, detections,
                                       protocol, detections_per_image)
  keep &= image_of_detection >= 0
  keep &= ((detections.boxes[:, 0] < detections.boxes[:, 2]) &
           (detections.boxes[:, 1] < detections.boxes[:, 3]))
  rows = np.flatnonzero(keep)
  detections = detections.select(rows)
  image_of_detection = image_of_detection[rows]
  detection_order = np.lexsort((detection_visit[rows],
                                image_rank[image_of_detection],
                                detections.label))
  detections = detections.select(detection_order)
  image_of_detection = image_of_detection[detection_order]

  # Ground truth: grouped by (class, image) in the reader's order.
  _, gt_visit = _reader_rows(image_of_gt, groundtruth, protocol, capacity=0,
                             score=np.ones(len(groundtruth)))
  gt_order = np.lexsort((gt_visit, image_of_gt, groundtruth.label))
  groundtruth = groundtruth.select(gt_order)
  image_of_gt = image_of_gt[gt_order]

  true_positive = _match(groundtruth, image_of_gt, detections,
                         image_of_detection)
  num_groundtruth = np.bincount(groundtruth.label, minlength=classes.max() + 1)
  class_ends = np.searchsorted(detections.label, np.arange(classes.max() + 2))
  average_precision = np.full(classes.max(), np.nan)
  for class_id in classes:
    if num_groundtruth[class_id]:
      span = slice(class_ends[class_id], class_ends[class_id + 1])
      average_precision[class_id - 1] = _average_precision(
          detections.score[span], true_positive[span], num_groundtruth[class_id])
  with np.errstate(all='ignore'):
    mean_ap = (float(np.nanmean(average_precision))
               if np.any(~np.isnan(average_precision)) else math.nan)
  result = {
      'mAP': mean_ap,
      'per_class': {
          str(class_id): {
              'name': labelmap[class_id],
              'ap': float(average_precision[class_id - 1]),
              'num_groundtruth': int(num_groundtruth[class_id]),
          } for class_id in classes
      },
  }
  if train_class_counts is not None:
    result['groups'] = frequency_groups(
        {int(c): float(average_precision[c - 1]) for c in classes},
        train_class_counts, group_thresholds)
  return result


def frequency_groups(average_precision: dict[int, float],
                     train_class_counts: dict[int, int],
                     group_thresholds: tuple[float, float] | None = None
                    ) -> dict:
  """Splits evaluated classes (AP not NaN) into head / mid / tail by train count.

  Default: terciles of the evaluated classes sorted by descending count (ties by
  class id; head gets the extra class first). With `group_thresholds=(low,
  high)`: tail has count < low, mid low <= count < high, head count >= high.
  """
  evaluated = [c for c, ap in average_precision.items() if not math.isnan(ap)]
  counts = {c: train_class_counts.get(c, 0) for c in evaluated}
  if group_thresholds is None:
    ranked = sorted(evaluated, key=lambda c: (-counts[c], c))
    split = [part.tolist() for part in np.array_split(np.array(ranked, int), 3)]
  else:
    low, high = group_thresholds
    if low > high:
      raise ValueError(f'group_thresholds must be (low, high) with low <= high, '
                       f'got {group_thresholds}.')
    split = [[c for c in evaluated if counts[c] >= high],
             [c for c in evaluated if low <= counts[c] < high],
             [c for c in evaluated if counts[c] < low]]
  return {
      name: {
          'mAP': (float(np.mean([average_precision[c] for c in members]))
                  if members else math.nan),
          'classes': sorted(int(c) for c in members),
      } for name, members in zip(('head', 'mid', 'tail'), split)
  }


def _image_codes(groundtruth, detections, excluded_keys):
  """Dense int image ids shared by both sets; -1 for excluded keyframes."""
  video_names = np.union1d(groundtruth.video_names, detections.video_names)
  video_codes = np.concatenate([
      np.searchsorted(video_names, groundtruth.video_names)[groundtruth.video_index],
      np.searchsorted(video_names, detections.video_names)[detections.video_index]
  ]).astype(np.int64)
  timestamps = np.concatenate([groundtruth.timestamp, detections.timestamp])
  if timestamps.size and timestamps.min() < 0:
    raise ValueError('timestamps must be >= 0.')
  span = int(timestamps.max()) + 1 if timestamps.size else 1
  keys = video_codes * span + timestamps
  if excluded_keys:
    position = {name: code for code, name in enumerate(video_names.tolist())}
    excluded = np.array([position[v] * span + t for v, t in excluded_keys
                         if v in position and 0 <= t < span], dtype=np.int64)
    keys = np.where(np.isin(keys, excluded), -1, keys)
  valid = keys >= 0
  image = np.full(keys.shape, -1, np.int64)
  image[valid] = np.unique(keys[valid], return_inverse=True)[1]
  return image[:len(groundtruth)], image[len(groundtruth):]


def _first_appearance_rank(image):
  """Rank of each image id by its first row (-1 ids ignored)."""
  valid = image >= 0
  rank = np.zeros(int(image.max()) + 1 if image.size else 0, np.int64)
  if valid.any():
    ids, first_row = np.unique(image[valid], return_index=True)
    rank[ids[np.argsort(first_row, kind='stable')]] = np.arange(ids.size)
  return rank


def _reader_rows(image, annotations, protocol, capacity, score=None):
  """Which rows a protocol's reader hands the evaluator, and in what order.

  ActivityNet's reader keeps each image's rows in a bounded heap and lists them
  by descending score, ties in heap order (see `_reader_selection`); PySlowFast's
  appends every row to its image's list as it comes. Returns (keep bool [N],
  visit int64 [N]): an image's kept rows sorted by `visit` are the reader's list.
  """
  if protocol == 'slowfast':
    return np.ones(len(image), bool), np.arange(len(image))
  score = annotations.score if score is None else score
  keep, heap_position = _reader_selection(image, annotations, capacity, score)
  visit = np.empty(len(image), np.int64)
  visit[np.lexsort((heap_position, -score))] = np.arange(len(image))
  return keep, visit


def _reader_selection(image, annotations, capacity, score):
  """Which rows the official reader keeps per image, and their heap positions.

  The reader pushes (score, label, y1, x1, y2, x2) into a min-heap of at most
  `capacity` entries per image (0 = unbounded), replacing the minimum only for
  a strictly higher score. Kept rows: every row scoring above the final
  minimum s*, plus the largest (label, box) tuples among the s*-rows that
  arrived before the heap first filled with scores >= s*. Heap positions only
  decide the order of equal-score rows of one class in one image, so they are
  simulated exactly (heapq) for the few images with such ties, 0 elsewhere.
  Returns (keep bool [N], heap_position int [N]).
  """
  rows = len(score)
  keep = np.ones(rows, bool)
  valid = image >= 0
  counts = np.bincount(image[valid], minlength=1)
  if capacity > 0 and counts.max() > capacity:
    keep = _capped_rows(image, annotations, score, capacity, counts)

  # Images with equal-score kept rows of one class need the exact heap order.
  heap_position = np.zeros(rows, np.int64)
  kept = np.flatnonzero(keep & valid)
  groups = np.lexsort((score[kept], annotations.label[kept], image[kept]))
  ordered = kept[groups]
  same = ((image[ordered][1:] == image[ordered][:-1]) &
          (annotations.label[ordered][1:] == annotations.label[ordered][:-1]) &
          (score[ordered][1:] == score[ordered][:-1]))
  tied_images = np.unique(image[ordered][1:][same])
  if tied_images.size:
    members = np.flatnonzero(np.isin(image, tied_images))
    members = members[np.argsort(image[members], kind='stable')]
    bounds = np.searchsorted(image[members], tied_images, side='right')
    for image_rows in np.split(members, bounds[:-1]):
      keys = list(zip(score[image_rows].tolist(),
                      annotations.label[image_rows].tolist(),
                      *annotations.boxes[image_rows].T.tolist()))
      kept_local, positions = _simulate_reader_heap(keys, capacity)
      keep[image_rows] = kept_local
      heap_position[image_rows] = positions
  return keep, heap_position


def _capped_rows(image, annotations, score, capacity, counts):
  """Vectorised form of the reader's bounded heap (see `_reader_selection`)."""
  keep = np.ones(len(score), bool)
  crowded = counts > capacity
  rows = np.flatnonzero((image >= 0) & crowded[np.maximum(image, 0)])
  rows = rows[np.argsort(image[rows], kind='stable')]  # By image, file order.
  group = np.unique(image[rows], return_inverse=True)[1]
  group_start = np.searchsorted(group, np.arange(group.max() + 1))
  by_score = np.lexsort((-score[rows], group))
  cutoff = score[rows][by_score][group_start + capacity - 1][group]
  above = score[rows] > cutoff
  at_cutoff = score[rows] == cutoff
  reached = np.cumsum(above | at_cutoff)
  reached -= np.concatenate([[0], reached])[group_start][group]
  early = at_cutoff & (reached <= capacity)
  slots = capacity - np.bincount(group, weights=above).astype(np.int64)
  candidates = np.flatnonzero(early)
  boxes = annotations.boxes[rows][candidates]
  tuple_order = np.lexsort((-boxes[:, 3], -boxes[:, 2], -boxes[:, 1],
                            -boxes[:, 0], -annotations.label[rows][candidates],
                            group[candidates]))
  candidates = candidates[tuple_order]
  first = np.searchsorted(group[candidates], np.arange(group.max() + 1))
  rank = np.arange(candidates.size) - first[group[candidates]]
  chosen = np.zeros(rows.size, bool)
  chosen[candidates[rank < slots[group[candidates]]]] = True
  keep[rows] = above | chosen
  return keep


class _HeapEntry:
  """A reader tuple that compares like the tuple and remembers its row."""
  __slots__ = ('key', 'row')

  def __init__(self, key, row):
    self.key, self.row = key, row

  def __lt__(self, other):
    return self.key < other.key


def _simulate_reader_heap(keys, capacity):
  """Replays the official reader's heapq calls on one image's rows."""
  heap = []
  for row, key in enumerate(keys):
    if capacity < 1 or len(heap) < capacity:
      heapq.heappush(heap, _HeapEntry(key, row))
    elif key[0] > heap[0].key[0]:
      heapq.heapreplace(heap, _HeapEntry(key, row))
  keep = np.zeros(len(keys), bool)
  positions = np.zeros(len(keys), np.int64)
  for position, entry in enumerate(heap):
    keep[entry.row] = True
    positions[entry.row] = position
  return keep, positions


def _match(groundtruth, image_of_gt, detections, image_of_detection):
  """True-positive flags of detections sorted by (class, image, visit order).

  Each detection takes its best-IoU ground truth of the same class and image
  (first on ties); it is a TP if IoU >= 0.5 and no earlier detection took it.
  """
  images = int(max(image_of_gt.max(initial=0), image_of_detection.max(initial=0))) + 1
  gt_group = groundtruth.label * images + image_of_gt
  detection_group = detections.label * images + image_of_detection
  start = np.searchsorted(gt_group, detection_group, side='left')
  count = np.searchsorted(gt_group, detection_group, side='right') - start
  best_iou = np.full(len(detections), -np.inf)
  best_gt = np.full(len(detections), -1, np.int64)
  for offset in range(int(count.max(initial=0))):
    rows = np.flatnonzero(count > offset)
    overlap = _iou(detections.boxes[rows], groundtruth.boxes[start[rows] + offset])
    better = overlap > best_iou[rows]
    best_iou[rows[better]] = overlap[better]
    best_gt[rows[better]] = start[rows[better]] + offset
  matched = np.flatnonzero(best_iou >= IOU_THRESHOLD)
  _, first = np.unique(best_gt[matched], return_index=True)
  true_positive = np.zeros(len(detections), bool)
  true_positive[matched[first]] = True
  return true_positive


def _iou(boxes, other_boxes):
  """Row-wise IoU of [N, 4] y1x1y2x2 boxes, in the official operation order."""
  height = np.maximum(0.0, np.minimum(boxes[:, 2], other_boxes[:, 2]) -
                      np.maximum(boxes[:, 0], other_boxes[:, 0]))
  width = np.maximum(0.0, np.minimum(boxes[:, 3], other_boxes[:, 3]) -
                     np.maximum(boxes[:, 1], other_boxes[:, 1]))
  intersection = height * width
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  other_area = (other_boxes[:, 2] - other_boxes[:, 0]) * (
      other_boxes[:, 3] - other_boxes[:, 1])
  return intersection / (area + other_area - intersection)


def _average_precision(scores, true_positive, num_groundtruth):
  """PASCAL VOC AP of one class; ranks with numpy's default argsort, reversed."""
  if not scores.size:
    return 0.0
  ranked = true_positive[np.argsort(scores)[::-1]].astype(int)
  true_positives = np.cumsum(ranked)
  false_positives = np.cumsum(1 - ranked)
  precision = true_positives.astype(float) / (true_positives + false_positives)
  recall = true_positives.astype(float) / num_groundtruth
  recall = np.concatenate([[0], recall, [1]])
  precision = np.concatenate([[0], precision, [0]])
  precision = np.maximum.accumulate(precision[::-1])[::-1]
  steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
  return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def detection_warnings(groundtruth: ava_files.Annotations, detections: ava_files.Annotations,
                       labelmap: dict[int, str]) -> list[str]:
  """Why detections would score an mAP of 0 whatever the model: none at all, none of an evaluated
  class, or none on an annotated keyframe (other video ids, or timestamps not in seconds)."""
  if not len(detections):
    return ['no detections: every class gets AP 0.']
  evaluated = np.isin(detections.label, np.fromiter(labelmap, np.int64))
  if not evaluated.any():
    return [f'none of the {len(detections)} detections has a class id of the label map (found '
            f'{np.unique(detections.label)[:10].tolist()}, expected ids like '
            f'{sorted(labelmap)[:10]}): every class gets AP 0.']
  keyframes = set(zip(groundtruth.video_id.tolist(), groundtruth.timestamp.tolist()))
  on_keyframes = [key in keyframes for key in
                  zip(detections.video_id.tolist(), detections.timestamp.tolist())]
  if keyframes and not any(on_keyframes):
    example = (detections.video_id[0], int(detections.timestamp[0]))
    truth = min(keyframes)
    return [f'none of the {len(detections)} detections is on a ground-truth keyframe (for '
            f'example {example[0]},{example[1]}; the ground truth has {truth[0]},{truth[1]}): '
            'check the video ids and that timestamps are seconds. Every class gets AP 0.']
  return []


# -------------------------------------------------------------------- CLI ---


def _json_ready(value):
  """NaN -> None, so the output is strict JSON."""
  if isinstance(value, dict):
    return {key: _json_ready(item) for key, item in value.items()}
  if isinstance(value, list):
    return [_json_ready(item) for item in value]
  if isinstance(value, float) and math.isnan(value):
    return None
  return value


def main(argv: Sequence[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
      '--protocol', choices=PROTOCOLS, default='activitynet',
      help='activitynet (default): the official ActivityNet evaluator, which '
      'keeps the 50 top-scoring detections per keyframe and visits them by '
      'score; the official challenge number. slowfast: PySlowFast\'s '
      'in-training copy, which keeps every detection in file order; most '
      'published AVA numbers come from it.')
  parser.add_argument('--groundtruth', required=True)
  parser.add_argument('--detections', required=True)
  parser.add_argument('--labelmap', required=True)
  parser.add_argument('--exclusions', default=None)
  parser.add_argument('--train_groundtruth', default=None,
                      help='training CSV; its class counts define head/mid/tail')
  parser.add_argument('--group_thresholds', default=None,
                      help='low,high train counts: tail < low <= mid < high <= head')
  parser.add_argument('--detections_per_image', type=int, default=None,
                      help=f'activitynet only: the reader cap per keyframe '
                      f'(default {DETECTIONS_PER_IMAGE}; 0 = none)')
  args = parser.parse_args(argv)
  try:
    labelmap, class_ids = ava_files.read_labelmap(args.labelmap)
    train_counts = None
    if args.train_groundtruth:
      train = ava_files.read_csv(args.train_groundtruth, class_ids)
      labels, counts = np.unique(train.label, return_counts=True)
      train_counts = dict(zip(labels.tolist(), counts.tolist()))
    thresholds = None
    if args.group_thresholds:
      thresholds = tuple(float(v) for v in args.group_thresholds.split(','))
      if len(thresholds) != 2:
        parser.error('--group_thresholds takes two numbers: low,high')
    groundtruth = ava_files.read_csv(args.groundtruth, class_ids)
    detections = ava_files.read_csv(args.detections, load_scores=True)
    for warning in detection_warnings(groundtruth, detections, labelmap):
      print(f'warning: {args.detections}: {warning}', file=sys.stderr)
    result = evaluate(groundtruth, detections, labelmap,
                      ava_files.read_exclusions(args.exclusions), train_counts, thresholds,
                      args.detections_per_image, args.protocol)
  except (OSError, ValueError) as error:
    sys.exit(f'metrics.ava: {error}')
  print(json.dumps(_json_ready(result), indent=1))
  return result


if __name__ == '__main__':
  main()
