"""Classification metrics against values worked out by hand."""

import math

import numpy as np
import pytest

from vivit_cofinetune.metrics import classification

LOGITS = np.array([
    [3.0, 1.0, 2.0],  # label 0: rank 1
    [3.0, 1.0, 2.0],  # label 2: rank 2
    [0.0, 5.0, 1.0],  # label 0: rank 3
    [1.0, 1.0, 0.0],  # label 1: tied with class 0, which comes first -> rank 2
])
LABELS = np.array([0, 2, 0, 1])


def test_top_k_accuracy_by_hand():
  assert classification.top_k_accuracy(LOGITS, LABELS, k=1) == 0.25
  assert classification.top_k_accuracy(LOGITS, LABELS, k=2) == 0.75
  assert classification.top_k_accuracy(LOGITS, LABELS, k=3) == 1.0
  # Padding (mask False) never counts: rows 0 and 1 -> 1 of 2 in top 1.
  mask = np.array([True, True, False, False])
  assert classification.top_k_accuracy(LOGITS, LABELS, k=1, mask=mask) == 0.5
  assert classification.top_k_accuracy(LOGITS, LABELS, k=5) == 1.0
  with pytest.raises(ValueError, match='k=0'):
    classification.top_k_accuracy(LOGITS, LABELS, k=0)


def test_mean_per_class_accuracy_by_hand():
  # Class 0: rows 0 (hit), 2 (miss) -> 1/2; class 1: row 3 (miss) -> 0;
  # class 2: row 1 (miss) -> 0. Mean = 1/6.
  assert classification.mean_per_class_accuracy(LOGITS, LABELS) == pytest.approx(1 / 6)
  # Without rows 2 and 3, only classes 0 (1/1) and 2 (0/1) are present -> 1/2.
  mask = np.array([True, True, False, False])
  assert classification.mean_per_class_accuracy(LOGITS, LABELS, mask=mask) == 0.5
  assert classification.mean_per_class_accuracy(LOGITS, LABELS, num_classes=3) == pytest.approx(1 / 6)


def test_aggregate_views_averages_logits_and_skips_padding_and_repeats():
  logits = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0], [9.0, 9.0], [3.0, 2.0]])
  video = np.array([1, 1, 0, 0, 1])
  view = np.array([0, 1, 0, 1, 1])  # Row 4 repeats (video 1, view 1).
  mask = np.array([True, True, True, False, True])  # Row 3 is padding.
  labels = np.array([1, 1, 0, 0, 1])
  scores, video_labels = classification.aggregate_views(
      logits, labels, video, mask, num_videos=2, method='logits', view_index=view)
  # Video 0: row 2 only; video 1: mean of rows 0 and 1.
  np.testing.assert_allclose(scores, [[0.0, 4.0], [2.0, 1.0]])
  np.testing.assert_array_equal(video_labels, [0, 1])
  # Without view_index the repeated row 4 counts: video 1 = mean of rows 0, 1, 4.
  scores, _ = classification.aggregate_views(logits, labels, video, mask,
                                             method='logits')
  np.testing.assert_allclose(scores[1], [7 / 3, 4 / 3])


def test_aggregate_views_softmax_by_hand():
  logits = np.array([[0.0, 0.0], [math.log(3.0), 0.0]])
  scores, labels = classification.aggregate_views(logits, np.array([1, 1]),
                                                  np.array([0, 0]))
  # softmax rows: (1/2, 1/2) and (3/4, 1/4); mean (5/8, 3/8).
  np.testing.assert_allclose(scores, [[5 / 8, 3 / 8]])
  np.testing.assert_array_equal(labels, [1])


def test_aggregate_views_multi_label_averages_sigmoids():
  logits = np.array([[0.0, math.log(3.0)], [0.0, -math.log(3.0)]])
  targets = np.array([[0, 1], [0, 1]])
  scores, labels = classification.aggregate_views(
      logits, targets, np.array([0, 0]), multi_label=True)
  # sigmoid rows: (1/2, 3/4) and (1/2, 1/4); mean (1/2, 1/2).
  np.testing.assert_allclose(scores, [[0.5, 0.5]])
  np.testing.assert_array_equal(labels, [[0, 1]])


def test_aggregate_views_rejects_conflicting_labels_and_bad_indices():
  with pytest.raises(ValueError, match='different labels'):
    classification.aggregate_views(np.zeros((2, 2)), np.array([0, 1]),
                                   np.array([1, 1]))
  with pytest.raises(ValueError, match=r'video_index must lie in \[0, 2\)'):
    classification.aggregate_views(np.zeros((2, 2)), np.array([0, 1]),
                                   np.array([0, 2]), num_videos=2)
  # A video whose only view is padding is left out (and logged).
  scores, labels = classification.aggregate_views(
      np.ones((2, 2)), np.array([0, 1]), np.array([0, 1]),
      np.array([True, False]), num_videos=2)
  assert scores.shape == (1, 2) and labels.tolist() == [0]


def test_multi_label_map_by_hand():
  scores = np.array([[0.9, 0.1, 0.5],
                     [0.8, 0.7, 0.5],
                     [0.3, 0.2, 0.5],
                     [0.1, 0.9, 0.2]])
  targets = np.array([[1, 0, 0],
                      [0, 0, 1],
                      [1, 0, 1],
                      [0, 0, 0]])
  # Class 0 ranking 0.9(+), 0.8(-), 0.3(+), 0.1(-): precision 1 at recall
  # 1/2, 2/3 at recall 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6.
  # Class 1: no positives -> NaN, left out of the mean.
  # Class 2: three tied at 0.5 holding both positives -> one threshold with
  # precision 2/3 at recall 1 -> AP = 2/3.
  per_class = classification.average_precision_per_class(scores, targets)
  assert per_class[0] == pytest.approx(5 / 6)
  assert math.isnan(per_class[1])
  assert per_class[2] == pytest.approx(2 / 3)
  assert classification.multi_label_map(scores, targets) == pytest.approx(
      (5 / 6 + 2 / 3) / 2)
  # Masking out row 1 (the class-0 negative at 0.8) makes class 0 perfect.
  masked = classification.average_precision_per_class(
      scores, targets, mask=np.array([True, False, True, True]))
  assert masked[0] == 1.0
