"""AVA frame-mAP: hand-computed cases, the real AVA slice, CSV I/O and the CLI.

Expected values are worked out by hand in the comments from the rules of the
official ActivityNet evaluator (greedy matching to the best-IoU box with no
fall-back, PASCAL VOC AP, 50 detections per keyframe, exclusions).
"""

import collections
import contextlib
import csv
import heapq
import io
import json
import math
import os

import numpy as np
import pytest

from vivit_cofinetune.metrics import ava
from vivit_cofinetune.metrics import ava_files

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures', 'ava')
GROUNDTRUTH = os.path.join(FIXTURES, 'ava_val_v2.2_subset.csv')
LABELMAP_60 = os.path.join(FIXTURES, 'ava_action_list_v2.2_for_activitynet_2019.pbtxt')
LABELMAP_80 = os.path.join(FIXTURES, 'ava_action_list_v2.2.pbtxt')
LABELMAP = {1: 'one', 2: 'two', 3: 'three'}

# Boxes are (y1, x1, y2, x2). G1 and G2 overlap: IoU = 0.4*0.3 / (0.16+0.16-0.12) = 0.6.
G1 = (0.0, 0.0, 0.4, 0.4)
G2 = (0.0, 0.1, 0.4, 0.5)
G3 = (0.5, 0.5, 1.0, 1.0)
# D1 matches both: IoU(D1,G1) = 0.16/0.18 = 0.889, IoU(D1,G2) = 0.14/0.20 = 0.7.
D1 = (0.0, 0.0, 0.4, 0.45)


def rows(*entries):
  """Annotations from (video, timestamp, box, label[, score]) tuples."""
  videos, times, boxes, labels, scores = [], [], [], [], []
  for entry in entries:
    video, timestamp, box, label = entry[:4]
    videos.append(video)
    times.append(timestamp)
    boxes.append(box)
    labels.append(label)
    scores.append(entry[4] if len(entry) > 4 else 1.0)
  return ava_files.annotations_from_arrays(videos, times, np.array(boxes), labels,
                                     scores)


def adversarial_case():
  groundtruth = rows(('v', 902, G1, 1), ('v', 902, G2, 1), ('v', 903, G3, 1),
                     ('v', 902, G3, 2))
  detections = rows(
      ('v', 902, D1, 1, 0.9),   # best G1 (0.889) -> TP
      ('v', 902, G1, 1, 0.8),   # best G1 again (1.0): FP, no fall-back to G2 (0.6)
      ('v', 902, D1, 1, 0.7),   # duplicate of D1 -> G1 taken -> FP
      ('v', 902, G2, 1, 0.6),   # best G2 (1.0) -> TP
      ('v', 904, G3, 2, 0.95),  # keyframe without ground truth -> FP
      ('v', 902, G3, 2, 0.9),   # exact -> TP
      ('v', 902, G3, 3, 0.9),   # class 3 has no ground truth -> AP NaN
      ('v', 902, G3, 7, 0.9),   # class 7 is not in the label map -> ignored
  )
  return groundtruth, detections


def test_greedy_matching_duplicates_and_box_matching_two_groundtruths():
  result = ava.evaluate(*adversarial_case(), LABELMAP)
  # Class 1 (3 gt): TP, FP, FP, TP -> precision 1, 1/2, 1/3, 1/2 at recall
  # 1/3, 1/3, 1/3, 2/3; made monotone: 1, 1/2, 1/2, 1/2.
  # AP = 1/3 * 1 + 1/3 * 1/2 = 1/2.
  assert result['per_class']['1']['ap'] == pytest.approx(0.5, abs=1e-12)
  # Class 2 (1 gt): FP then TP -> precision 1/2 at recall 1 -> AP = 1/2.
  assert result['per_class']['2']['ap'] == pytest.approx(0.5, abs=1e-12)
  assert math.isnan(result['per_class']['3']['ap'])
  assert result['per_class']['1']['num_groundtruth'] == 3
  assert '7' not in result['per_class']
  assert result['mAP'] == pytest.approx(0.5, abs=1e-12)


def test_excluded_timestamps_leave_groundtruth_and_detections():
  result = ava.evaluate(*adversarial_case(), LABELMAP,
                        excluded_keys={('v', 903), ('v', 904)})
  # Class 1 loses G3 (2 gt): TP, FP, FP, TP at recall 1/2, 1/2, 1/2, 1 ->
  # AP = 1/2 * 1 + 1/2 * 1/2 = 3/4. Class 2 loses its FP -> AP = 1.
  assert result['per_class']['1']['ap'] == pytest.approx(0.75, abs=1e-12)
  assert result['per_class']['2']['ap'] == pytest.approx(1.0, abs=1e-12)
  assert result['mAP'] == pytest.approx(0.875, abs=1e-12)


@pytest.mark.parametrize('false_positive_first', [False, True])
def test_tied_scores_follow_numpy_default_argsort_reversed(false_positive_first):
  groundtruth = rows(('a', 902, G1, 1), ('b', 902, G3, 1))
  hit = ('b', 902, G3, 1, 0.5)
  miss = ('c', 902, G3, 1, 0.5)  # No ground truth in keyframe c.
  later = [miss, hit] if false_positive_first else [hit, miss]
  detections = rows(('a', 902, G1, 1, 0.9), *later)
  # The official code concatenates scores image by image (in order of first
  # appearance) and ranks them with np.argsort(scores)[::-1].
  ranking = list(np.argsort(np.array([0.9, 0.5, 0.5]))[::-1])
  hit_index = 1 + false_positive_first
  if ranking.index(hit_index) < ranking.index(3 - hit_index):
    expected = 1.0  # TP, TP, FP: recall reaches 1 at precision 1.
  else:
    expected = 0.5 + 0.5 * 2 / 3  # TP, FP, TP: precision 2/3 at recall 1.
  result = ava.evaluate(groundtruth, detections, {1: 'one'})
  assert result['mAP'] == pytest.approx(expected, abs=1e-12)


def test_exact_iou_tie_between_groundtruths_uses_the_official_heap_order():
  # Binary-exact boxes: D overlaps each of GA and GB by 0.5 x 0.375 = 0.1875,
  # IoU = 0.1875 / (0.25 + 0.25 - 0.1875) = 0.6 for both, exactly.
  box_a = (0.25, 0.125, 0.75, 0.625)
  box_b = (0.25, 0.375, 0.75, 0.875)
  box_d = (0.25, 0.25, 0.75, 0.75)
  # File order B, A; the official reader's heap puts the smaller tuple
  # (1.0, label, y1, x1, ...) first, i.e. A, so D takes A (first on ties) and
  # the exact copy of B scores a second TP: AP = 1. Taking B (file order)
  # would make the copy a FP: AP = 1/2.
  groundtruth = rows(('v', 902, box_b, 1), ('v', 902, box_a, 1))
  detections = rows(('v', 902, box_d, 1, 0.9), ('v', 902, box_b, 1, 0.5))
  assert ava.evaluate(groundtruth, detections, {1: 'one'})['mAP'] == 1.0


def test_invalid_detection_boxes_are_dropped_not_false_positives():
  groundtruth = rows(('v', 902, G1, 1))
  flat = (0.1, 0.2, 0.3, 0.2)  # x1 == x2: the official code drops it.
  detections = rows(('v', 902, flat, 1, 0.9), ('v', 902, G1, 1, 0.5))
  # Counted as a FP it would give AP 1/2; dropped, AP = 1.
  assert ava.evaluate(groundtruth, detections, {1: 'one'})['mAP'] == 1.0


@pytest.mark.parametrize('order, expected', [
    # Heap of 2: push (0.5,1), push (0.5,3); (0.9,2) evicts the smallest
    # tuple (0.5,1,...) -> the class-1 hit is gone, AP(1) = 0.
    ((0, 1, 2), 0.0),
    # Push (0.9,2), push (0.5,1); (0.5,3) is not > 0.5 -> rejected, the
    # class-1 hit stays, AP(1) = 1.
    ((2, 0, 1), 1.0),
])
def test_per_keyframe_cap_replays_the_official_heap(order, expected):
  groundtruth = rows(('v', 902, G1, 1))
  candidates = [('v', 902, G1, 1, 0.5), ('v', 902, G3, 3, 0.5),
                ('v', 902, G3, 2, 0.9)]
  detections = rows(*[candidates[index] for index in order])
  # All three classes are in the map: the cap applies after that filter.
  result = ava.evaluate(groundtruth, detections, LABELMAP,
                        detections_per_image=2)
  assert result['mAP'] == expected


def test_default_cap_is_fifty_detections_per_keyframe():
  groundtruth = rows(('v', 902, G1, 1))
  # 50 misses scoring 0.5..0.99 push the only hit (score 0.1) out of the top 50.
  misses = [('v', 902, G3, 1, 0.5 + index / 100) for index in range(50)]
  detections = rows(*misses, ('v', 902, G1, 1, 0.1))
  assert ava.evaluate(groundtruth, detections, {1: 'one'})['mAP'] == 0.0
  kept = ava.evaluate(groundtruth, detections, {1: 'one'},
                      detections_per_image=0)['mAP']
  assert kept == pytest.approx(1 / 51)  # Hit ranked last of 51: precision 1/51.


def test_vectorised_cap_matches_heap_replay_on_random_keyframes():
  rng = np.random.default_rng(0)
  count = 4000
  image = rng.integers(0, 40, count)  # ~100 rows per keyframe, cap 50.
  annotations = ava_files.annotations_from_arrays(
      np.full(count, 'v'), image, rng.integers(0, 3, (count, 4)) / 4,
      rng.integers(1, 4, count), rng.integers(0, 5, count) / 4)  # Many ties.
  keep = ava._capped_rows(image, annotations, annotations.score, 50,  # pylint: disable=protected-access
                          np.bincount(image))
  for index in range(40):
    members = np.flatnonzero(image == index)
    keys = list(zip(annotations.score[members].tolist(),
                    annotations.label[members].tolist(),
                    *annotations.boxes[members].T.tolist()))
    expected, _ = ava._simulate_reader_heap(keys, 50)  # pylint: disable=protected-access
    np.testing.assert_array_equal(keep[members], expected)


# ------------------------------------------------------- real AVA slice ---


def fixture_rows():
  with open(GROUNDTRUTH, newline='') as file:
    return list(csv.reader(file))


def test_reading_the_real_slice_tolerates_the_malformed_person_id():
  annotations = ava_files.read_csv(GROUNDTRUTH)
  assert len(annotations) == 4743
  # Line 16: 1j20qq1JyX4,0906,0.175,0.001,0.995,1.000,80,3_
  assert annotations.video_id[15] == '1j20qq1JyX4'
  assert annotations.timestamp[15] == 906
  np.testing.assert_array_equal(annotations.boxes[15], [0.001, 0.175, 1.0, 0.995])
  assert annotations.label[15] == 80
  assert sorted(annotations.video_names) == ['1j20qq1JyX4', '2PpxiG0WU18']


def test_labelmaps_in_both_layouts():
  labelmap, ids = ava_files.read_labelmap(LABELMAP_60)
  assert len(labelmap) == 60 and ids == set(labelmap)
  assert labelmap[17] == 'carry/hold (an object)' and 40 not in ids
  full, _ = ava_files.read_labelmap(LABELMAP_80)
  assert len(full) == 80 and full[40] == 'play board game'
  assert all(full[key] == name for key, name in labelmap.items())


def test_perfect_detections_score_one_on_the_real_slice():
  labelmap, ids = ava_files.read_labelmap(LABELMAP_60)
  groundtruth = ava_files.read_csv(GROUNDTRUTH, ids)
  result = ava.evaluate(groundtruth, groundtruth, labelmap)
  assert result['mAP'] == 1.0
  evaluated = [c for c, item in result['per_class'].items()
               if not math.isnan(item['ap'])]
  # 30 classes occur, one of them (40) is outside the 60 evaluated.
  assert len(evaluated) == 29


def test_dropping_one_video_lowers_recall_as_counted_by_hand():
  labelmap, ids = ava_files.read_labelmap(LABELMAP_60)
  groundtruth = ava_files.read_csv(GROUNDTRUTH, ids)
  detections = groundtruth.select(groundtruth.video_id != '2PpxiG0WU18')
  result = ava.evaluate(groundtruth, detections, labelmap)
  # Every kept detection is an exact TP with the same score, so each class's
  # AP is its recall: rows of 1j20qq1JyX4 / rows of both videos.
  total, kept = collections.Counter(), collections.Counter()
  for row in fixture_rows():
    if int(row[6]) in ids:
      total[int(row[6])] += 1
      kept[int(row[6])] += row[0] == '1j20qq1JyX4'
  expected = {c: kept[c] / total[c] for c in total}
  for class_id, recall in expected.items():
    assert result['per_class'][str(class_id)]['ap'] == pytest.approx(recall, abs=1e-12)
  assert result['mAP'] == pytest.approx(np.mean(list(expected.values())), abs=1e-12)


def run_cli(*arguments):
  output = io.StringIO()
  with contextlib.redirect_stdout(output):
    ava.main(list(arguments))
  return json.loads(output.getvalue())


def test_cli_prints_json_with_groups(tmp_path):
  detections = tmp_path / 'detections.csv'
  ava_files.write_csv(str(detections), ava_files.read_csv(GROUNDTRUTH))
  result = run_cli('--groundtruth', GROUNDTRUTH, '--detections', str(detections),
                   '--labelmap', LABELMAP_60, '--train_groundtruth', GROUNDTRUTH)
  assert result['mAP'] == 1.0
  assert result['per_class']['3']['ap'] is None  # No ground truth: null.
  assert result['per_class']['12'] == {'name': 'stand', 'ap': 1.0,
                                       'num_groundtruth': 1083}
  # 29 evaluated classes -> terciles of 10, 10, 9; 'stand' (1083) is the head.
  sizes = [len(result['groups'][name]['classes']) for name in ('head', 'mid', 'tail')]
  assert sizes == [10, 10, 9] and 12 in result['groups']['head']['classes']


def test_frequency_groups_with_thresholds():
  average_precision = {1: 0.2, 2: 0.4, 3: 0.6, 4: math.nan}
  counts = {1: 5, 2: 50, 3: 500, 4: 1000}
  groups = ava.frequency_groups(average_precision, counts, (10, 100))
  assert groups['tail'] == {'mAP': 0.2, 'classes': [1]}
  assert groups['mid'] == {'mAP': 0.4, 'classes': [2]}
  assert groups['head'] == {'mAP': 0.6, 'classes': [3]}  # 4 has no AP.
  terciles = ava.frequency_groups(average_precision, counts)
  assert [terciles[name]['classes'] for name in ('head', 'mid', 'tail')] == [[3], [2], [1]]


# ------------------------------------------------------------- CSV I/O ---


def test_write_csv_then_read_csv_round_trips(tmp_path):
  path = tmp_path / 'detections.csv'
  detections = rows(('vid_A-1', 902, (0.118, 0.002, 0.977, 0.714), 12, 0.25),
                    ('vid_A-1', 1798, (0.0, 0.5, 1.0, 1.0), 80, 0.00004))
  ava_files.write_csv(str(path), detections)
  assert path.read_text() == ('vid_A-1,0902,0.002,0.118,0.714,0.977,12,0.2500\n'
                              'vid_A-1,1798,0.500,0.000,1.000,1.000,80,0.0000\n')
  back = ava_files.read_csv(str(path), load_scores=True)
  np.testing.assert_array_equal(back.boxes, detections.boxes)
  np.testing.assert_array_equal(back.score, [0.25, 0.0])


def write(tmp_path, text, name='bad.csv'):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize('text, message', [
    ('v,0902,0.1,0.1,0.5,0.5,12,1\nv,0902,0.1,0.1,0.5,0.5\n',
     r'bad\.csv:2: expected 7 or 8 comma-separated columns, found 6'),
    ('v,0902,0.1,0.1,0.5,0.5,12\nv,0903,0.1,0.1,1.5,0.5,12\n',
     r'bad\.csv:2: box coordinates must lie in \[0, 1\]'),
    ('v,0902,0.1,0.1,0.5,0.5,12\nv,0903,0.1,abc,0.5,0.5,12\n',
     r"bad\.csv:2: column 4 is not a number: 'abc'"),
    ('v,0902,0.1,0.1,0.5,0.5,12\nv,09x3,0.1,0.1,0.5,0.5,12\n',
     r"bad\.csv:2: column 2 is not a number: '09x3'"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, message):
  with pytest.raises(ValueError, match=message):
    ava_files.read_csv(write(tmp_path, text))


def test_unreadable_file_is_named(tmp_path):
  with pytest.raises(OSError, match='missing.csv: cannot read'):
    ava_files.read_csv(str(tmp_path / 'missing.csv'))


def test_scores_signs_and_crlf_parse_like_python_float(tmp_path):
  scores = ['-1.5e-3', '7', None, '0.25', '12.5', '1250', '0.1234567890123']
  lines = [f'v,{902 + index},0.1,0.2,0.5,0.6,1' + (f',{score}' if score else '')
           for index, score in enumerate(scores)]
  lines[1] = lines[1].replace('0.1,', '.25,', 1)
  annotations = ava_files.read_csv(write(tmp_path, '\r\n'.join(lines)), load_scores=True)
  expected = [float(score) if score else 1.0 for score in scores]
  np.testing.assert_array_equal(annotations.score, expected)
  np.testing.assert_array_equal(annotations.timestamp, np.arange(902, 909))
  assert annotations.boxes[1, 1] == 0.25 and annotations.boxes[0, 1] == 0.1


def test_classes_outside_the_labelmap_are_dropped_with_a_count(tmp_path):
  text = 'v,0902,0.1,0.1,0.5,0.5,2\nv,0902,0.1,0.1,0.5,0.5,40\n'
  annotations = ava_files.read_csv(write(tmp_path, text), class_whitelist={2})
  np.testing.assert_array_equal(annotations.label, [2])


def test_read_exclusions(tmp_path):
  path = write(tmp_path, 'abc,0902\nabc,1798\n', 'excluded.csv')
  assert ava_files.read_exclusions(path) == {('abc', 902), ('abc', 1798)}
  with pytest.raises(ValueError, match=r'excluded\.csv:1'):
    ava_files.read_exclusions(write(tmp_path, 'abc\n', 'excluded.csv'))


# ------------------------------------------- the two reference evaluators ---
# A literal re-statement of each reference, in plain loops over the rows, to
# check `ava.evaluate(protocol=...)` against. The readers are where the two
# differ (ActivityNet `get_ava_performance.py` at 3fee089, `read_csv`; PySlowFast
# `slowfast/utils/ava_eval_helper.py`, `read_csv` and `get_ava_eval_data`); the
# evaluator after them (`run_evaluation` into `ava/object_detection_evaluation.py`,
# `per_image_evaluation.py`, `metrics.py`) is the same code in both.


def reference_key(video, timestamp):
  return f'{video},{int(timestamp):04d}'


def reference_read(path, class_ids, protocol, capacity=0, load_score=False):
  """image key -> [(box y1x1y2x2, label, score)] as each reference reader lists it."""
  per_image = {}  # Insertion order, as the references' defaultdicts.
  with open(path, newline='') as file:
    for row in csv.reader(file):
      action = int(row[6])
      if action not in class_ids:
        continue
      x1, y1, x2, y2 = (float(value) for value in row[2:6])
      # Ground truth's 8th column is a person id, never a score (the official
      # reader would parse it as one and crash on the fixture's `3_`).
      score = float(row[7]) if load_score else 1.0
      entries = per_image.setdefault(reference_key(row[0], row[1]), [])
      if protocol == 'slowfast':
        entries.append(((y1, x1, y2, x2), action, score))
      elif capacity < 1 or len(entries) < capacity:
        heapq.heappush(entries, (score, action, y1, x1, y2, x2))
      elif score > entries[0][0]:
        heapq.heapreplace(entries, (score, action, y1, x1, y2, x2))
  if protocol == 'slowfast':
    return per_image
  # ActivityNet lists the heap by descending score (a stable sort of the heap).
  return {key: [((y1, x1, y2, x2), action, score) for score, action, y1, x1, y2, x2
                in sorted(entries, key=lambda entry: -entry[0])]
          for key, entries in per_image.items()}


def reference_iou(box, other):
  height = max(0.0, min(box[2], other[2]) - max(box[0], other[0]))
  width = max(0.0, min(box[3], other[3]) - max(box[1], other[1]))
  intersection = height * width
  area = (box[2] - box[0]) * (box[3] - box[1])
  other_area = (other[2] - other[0]) * (other[3] - other[1])
  return intersection / (area + other_area - intersection)


def reference_voc_ap(scores, true_positive, num_groundtruth):
  if not scores:
    return 0.0
  order = np.argsort(np.array(scores, dtype=float))[::-1]  # As metrics.py ranks.
  precision, recall, hits = [], [], 0
  for rank, index in enumerate(order, start=1):
    hits += true_positive[index]
    precision.append(hits / rank)
    recall.append(hits / num_groundtruth)
  recall = [0.0] + recall + [1.0]
  precision = [0.0] + precision + [0.0]
  for index in range(len(precision) - 2, -1, -1):
    precision[index] = max(precision[index], precision[index + 1])
  return sum((recall[index] - recall[index - 1]) * precision[index]
             for index in range(1, len(recall)) if recall[index] != recall[index - 1])


def reference_evaluate(groundtruth_path, detections_path, labelmap, excluded,
                       protocol, capacity):
  """{class id: AP} of one reference (NaN without ground truth)."""
  class_ids = set(labelmap)
  excluded_keys = {reference_key(video, timestamp) for video, timestamp in excluded}
  groundtruth = reference_read(groundtruth_path, class_ids, protocol)
  detections = reference_read(detections_path, class_ids, protocol, capacity,
                              load_score=True)
  num_groundtruth = collections.Counter()
  for key, entries in groundtruth.items():
    if key not in excluded_keys:
      num_groundtruth.update(label for _, label, _ in entries)
  scores = collections.defaultdict(list)
  true_positive = collections.defaultdict(list)
  for key, entries in detections.items():  # Images in order of first appearance.
    if key in excluded_keys:
      continue
    valid = [(box, label, score) for box, label, score in entries
             if box[0] < box[2] and box[1] < box[3]]
    truth = groundtruth.get(key, [])
    for class_id in sorted({label for _, label, _ in valid}):
      class_truth = [box for box, label, _ in truth if label == class_id]
      taken = [False] * len(class_truth)
      for box, label, score in valid:  # The reader's order.
        if label != class_id:
          continue
        hit = False
        if class_truth:
          overlaps = [reference_iou(box, other) for other in class_truth]
          best = overlaps.index(max(overlaps))  # np.argmax: first on ties.
          if overlaps[best] >= ava.IOU_THRESHOLD and not taken[best]:
            hit = taken[best] = True
        scores[class_id].append(score)
        true_positive[class_id].append(hit)
  return {class_id: (reference_voc_ap(scores[class_id], true_positive[class_id],
                                      num_groundtruth[class_id])
                     if num_groundtruth[class_id] else math.nan)
          for class_id in labelmap}


def write_protocol_detections(path):
  """Detections on the real slice that the two references score differently.

  Per keyframe 1-4 detector boxes (a jittered copy of a true box first in the
  file, then the exact box, then random boxes, some flat), each scored for its
  true classes and a random ~30% of all 80, at scores in steps of 0.05 (ties
  within and across keyframes): many keyframes hold more than 50 rows of the 60
  evaluated classes, some fewer, and rows of the 20 others count only until
  the label map drops them. Boxes go to the file in shuffled blocks, so a
  keyframe's rows are spread out; a video without ground truth is added.
  """
  rng = np.random.default_rng(7)
  truth = collections.defaultdict(lambda: collections.defaultdict(set))
  for row in fixture_rows():
    box = tuple(float(value) for value in row[2:6])  # x1, y1, x2, y2
    truth[(row[0], int(row[1]))][box].add(int(row[6]))
  keyframes = list(truth) + [('no_truth_video', 902 + index) for index in range(5)]
  blocks = []
  for video, timestamp in keyframes:
    true_boxes = list(truth[(video, timestamp)].items()) or [((0.1, 0.1, 0.6, 0.9), set())]
    box, classes = true_boxes[rng.integers(len(true_boxes))]
    jitter = np.clip(np.array(box) + rng.uniform(-0.06, 0.06, 4), 0, 1)
    boxes = [(tuple(jitter), classes, 0.0), (box, classes, 0.2)]
    for _ in range(rng.integers(0, 3)):
      x1, y1 = rng.uniform(0, 0.5, 2)
      boxes.append(((x1, y1, x1 + 0.4, y1 + 0.5), set(), 0.0))
    if rng.random() < 0.1:
      boxes.append(((0.3, 0.2, 0.3, 0.8), classes, 0.3))  # x1 == x2: dropped.
    for count in rng.integers(1, len(boxes) + 1, 1):
      boxes = boxes[:count]
    for box, classes, bonus in boxes:
      lines = []
      for class_id in range(1, 81):
        if class_id in classes or rng.random() < 0.3:
          score = min(1.0, bonus * (class_id in classes) + rng.integers(0, 17) / 20)
          lines.append(f'{video},{timestamp:04d},{box[0]:.3f},{box[1]:.3f},'
                       f'{box[2]:.3f},{box[3]:.3f},{class_id},{score:.4f}\n')
      blocks.append(lines)
  rng.shuffle(blocks)
  with open(path, 'w') as file:
    file.writelines(line for block in blocks for line in block)
  # Leave out every 20th true keyframe and one keyframe without truth.
  return set(list(truth)[::20]) | {('no_truth_video', 903)}


@pytest.fixture(scope='module')
def protocol_case(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('protocols') / 'detections.csv')
  excluded = write_protocol_detections(path)
  labelmap, _ = ava_files.read_labelmap(LABELMAP_60)
  references = {
      protocol: reference_evaluate(GROUNDTRUTH, path, labelmap, excluded, protocol,
                                   capacity=ava.DETECTIONS_PER_IMAGE)
      for protocol in ava.PROTOCOLS}
  references['activitynet_uncapped'] = reference_evaluate(
      GROUNDTRUTH, path, labelmap, excluded, 'activitynet', capacity=0)
  return path, excluded, labelmap, references


def nan_mean(average_precision):
  return np.nanmean(list(average_precision.values()))


def test_the_synthetic_detections_tell_the_references_apart(protocol_case):
  path, excluded, _, references = protocol_case
  rows_per_keyframe = collections.Counter()
  labelmap, ids = ava_files.read_labelmap(LABELMAP_60)
  with open(path, newline='') as file:
    for row in csv.reader(file):
      rows_per_keyframe[(row[0], int(row[1]))] += int(row[6]) in ids
  assert sum(count > 50 for count in rows_per_keyframe.values()) > 100
  assert sum(count <= 50 for count in rows_per_keyframe.values()) > 100
  assert excluded
  # Without these gaps, a swap of the protocols or a dropped cap could pass unseen.
  for other in ('slowfast', 'activitynet_uncapped'):
    gaps = [abs(references['activitynet'][c] - references[other][c]) for c in labelmap
            if not math.isnan(references[other][c])]
    assert max(gaps) > 1e-2 and sum(gap > 1e-6 for gap in gaps) > 10


@pytest.mark.parametrize('protocol', ava.PROTOCOLS)
def test_each_protocol_equals_its_reference_on_the_real_slice(protocol_case, protocol):
  path, excluded, labelmap, references = protocol_case
  ids = set(labelmap)
  result = ava.evaluate(ava_files.read_csv(GROUNDTRUTH, ids),
                        ava_files.read_csv(path, ids, load_scores=True), labelmap,
                        excluded_keys=excluded, protocol=protocol)
  expected = references[protocol]
  ours = {int(class_id): item['ap'] for class_id, item in result['per_class'].items()}
  assert ours.keys() == expected.keys()
  np.testing.assert_allclose([ours[c] for c in expected], list(expected.values()),
                             atol=1e-6, rtol=0)  # NaN where the reference has NaN.
  assert result['mAP'] == pytest.approx(nan_mean(expected), abs=1e-6)


def test_cli_scores_each_protocol(protocol_case):
  path, _, _, _ = protocol_case
  activitynet, slowfast = (run_cli('--groundtruth', GROUNDTRUTH, '--detections', path,
                                   '--labelmap', LABELMAP_60, '--protocol', protocol)['mAP']
                           for protocol in ava.PROTOCOLS)
  assert activitynet != slowfast


def test_slowfast_has_no_cap_to_set():
  with pytest.raises(ValueError, match='protocol=slowfast reads every detection'):
    ava.evaluate(*adversarial_case(), LABELMAP, detections_per_image=50,
                 protocol='slowfast')
  with pytest.raises(ValueError, match="protocol='voc'"):
    ava.evaluate(*adversarial_case(), LABELMAP, protocol='voc')


# ---- The CLI answers a user's mistake in one line, or warns where the mAP would silently be 0. ----


def _cli_error(*arguments) -> str:
  with pytest.raises(SystemExit) as error:
    ava.main(list(arguments))
  message = str(error.value)
  assert message.startswith('metrics.ava: ') and '\n' not in message, message
  return message


def test_cli_names_a_header_line_in_the_groundtruth(tmp_path):
  groundtruth = tmp_path / 'groundtruth.csv'
  with open(GROUNDTRUTH) as file:
    groundtruth.write_text('video_id,timestamp,x1,y1,x2,y2,action_id,person_id\n' + file.read())
  message = _cli_error('--groundtruth', str(groundtruth), '--detections', GROUNDTRUTH,
                       '--labelmap', LABELMAP_60)
  assert f'{groundtruth}:1:' in message and 'header' in message.split(f'{groundtruth}:1:')[1]


def test_cli_names_a_nan_score(tmp_path):
  detections = tmp_path / 'detections.csv'
  detections.write_text('1j20qq1JyX4,0902,0.1,0.1,0.5,0.5,1,0.9\n'
                        '1j20qq1JyX4,0902,0.1,0.1,0.5,0.5,3,nan\n')
  message = _cli_error('--groundtruth', GROUNDTRUTH, '--detections', str(detections),
                       '--labelmap', LABELMAP_60)
  assert f'{detections}:2:' in message and 'finite' in message


def test_cli_names_a_duplicate_label_map_id(tmp_path):
  labelmap = tmp_path / 'labelmap.pbtxt'
  labelmap.write_text('item {\n  name: "bend"\n  id: 1\n}\nitem {\n  name: "crawl"\n  id: 1\n}\n')
  message = _cli_error('--groundtruth', GROUNDTRUTH, '--detections', GROUNDTRUTH,
                       '--labelmap', str(labelmap))
  assert f'{labelmap}:7:' in message and 'crawl' in message and 'bend' in message


@pytest.mark.parametrize('detections,warning', [
    ('', 'no detections'),
    # The fixture's boxes, on a video id the ground truth does not have.
    ('other_video,0902,0.077,0.151,0.283,0.811,1,0.9\n', 'none of the 1 detections is on a '
     'ground-truth keyframe'),
    # Seconds written as frame numbers (902 s at 30 fps).
    ('1j20qq1JyX4,27060,0.077,0.151,0.283,0.811,1,0.9\n', 'ground-truth keyframe'),
    ('1j20qq1JyX4,0902,0.077,0.151,0.283,0.811,2,0.9\n', 'class id of the label map'),
])
def test_cli_warns_when_detections_cannot_score(detections, warning, tmp_path, capsys):
  path = tmp_path / 'detections.csv'
  path.write_text(detections)
  result = ava.main(['--groundtruth', GROUNDTRUTH, '--detections', str(path),
                     '--labelmap', LABELMAP_60])
  assert result['mAP'] == 0.0
  error = capsys.readouterr().err
  assert f'warning: {path}: ' in error and warning in error, error


def test_cli_names_an_unreadable_csv(tmp_path):
  missing = tmp_path / 'no_such_detections.csv'
  message = _cli_error('--groundtruth', GROUNDTRUTH, '--detections', str(missing),
                       '--labelmap', LABELMAP_60)
  assert str(missing) in message and 'cannot read' in message
