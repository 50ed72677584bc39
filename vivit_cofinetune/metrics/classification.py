"""Classification metrics in numpy: top-k, mean per-class accuracy, multi-view
aggregation and multi-label mAP.

Every function takes an optional `mask` [N] (False = padding from the last eval
batch); masked examples never count.
"""

from typing import Literal

from absl import logging
import numpy as np


def _valid(mask: np.ndarray | None, count: int) -> np.ndarray:
  if mask is None:
    return np.ones(count, bool)
  mask = np.asarray(mask, bool).reshape(-1)
  if mask.size != count:
    raise ValueError(f'mask has {mask.size} entries, expected {count}.')
  return mask


def top_k_correct(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> np.ndarray:
  """Whether each label [N] is among the k highest logits [N, C].

  Ties go to the lower class index; k >= C makes every label correct.
  """
  logits = np.asarray(logits)
  if k < 1:
    raise ValueError(f'k={k} must be >= 1.')
  labels = np.asarray(labels).reshape(-1)
  # Rank of the label = classes scoring higher, plus equal ones with a lower
  # index (what a stable descending sort would put first).
  label_logit = logits[np.arange(len(labels)), labels][:, None]
  columns = np.arange(logits.shape[-1])[None, :]
  ahead = (logits > label_logit) | ((logits == label_logit) &
                                    (columns < labels[:, None]))
  return ahead.sum(axis=-1) < k


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1,
                   mask: np.ndarray | None = None) -> float:
  """Fraction of unmasked examples whose label [N] is in the top k of logits [N, C]."""
  valid = _valid(mask, len(labels))
  if not valid.any():
    return float('nan')
  return float(top_k_correct(logits, labels, k)[valid].mean())


def mean_per_class_accuracy(logits: np.ndarray, labels: np.ndarray,
                            num_classes: int | None = None,
                            mask: np.ndarray | None = None) -> float:
  """Top-1 accuracy per class, averaged over the classes present in labels [N].

  logits [N, C]; `num_classes`, when given, must equal C.
  """
  labels = np.asarray(labels).reshape(-1)
  classes = np.asarray(logits).shape[-1]
  if num_classes is not None and num_classes != classes:
    raise ValueError(f'logits have {classes} classes, expected {num_classes}.')
  valid = _valid(mask, len(labels))
  correct = top_k_correct(logits, labels, 1)[valid]
  totals = np.bincount(labels[valid], minlength=classes)
  hits = np.bincount(labels[valid], weights=correct, minlength=classes)
  present = totals > 0
  if not present.any():
    return float('nan')
  return float(np.mean(hits[present] / totals[present]))


def aggregate_views(logits: np.ndarray, labels: np.ndarray,
                    video_index: np.ndarray, mask: np.ndarray | None = None, *,
                    num_videos: int | None = None,
                    method: Literal['logits', 'softmax'] = 'softmax',
                    multi_label: bool = False,
                    view_index: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Averages the views (clips x crops) of each video into one prediction.

  logits [N, C]; labels [N] (or multi-hot [N, C] when `multi_label`);
  video_index, mask, view_index [N]. `method='logits'` averages logits,
  'softmax' averages probabilities (for multi-label: sigmoids). Masked rows
  never count; with `view_index`, a repeated (video, view) pair counts once.
  Returns (scores [V, C], labels [V] or [V, C]) for the videos with at least
  one view, in increasing video_index; with `num_videos`, indices must lie in
  [0, num_videos) and videos without a view are logged. Raises if the views of
  a video disagree on the label.
  """
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  video_index = np.asarray(video_index).reshape(-1)
  keep = _valid(mask, len(video_index))
  if view_index is not None:
    rows = np.flatnonzero(keep)
    pairs = np.stack([video_index[rows], np.asarray(view_index).reshape(-1)[rows]], 1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    keep = np.zeros_like(keep)
    keep[rows[first]] = True
  if method == 'softmax' and multi_label:
    values = 1 / (1 + np.exp(-logits))
  elif method == 'softmax':
    values = np.exp(logits - logits.max(axis=-1, keepdims=True))
    values /= values.sum(axis=-1, keepdims=True)
  elif method == 'logits':
    values = logits
  else:
    raise ValueError(f"method must be 'logits' or 'softmax', got {method!r}.")
  if num_videos is None:
    videos, video_of_row = np.unique(video_index[keep], return_inverse=True)
    count = videos.size
  else:
    video_of_row, count = video_index[keep], num_videos
    if video_of_row.size and not 0 <= video_of_row.min() <= video_of_row.max() < count:
      raise ValueError(f'video_index must lie in [0, {count}).')
  views = np.bincount(video_of_row, minlength=count)
  sums = np.zeros((count, logits.shape[-1]))
  np.add.at(sums, video_of_row, values[keep])
  kept_labels = labels[keep]
  video_labels = np.zeros((count,) + kept_labels.shape[1:], labels.dtype)
  video_labels[video_of_row] = kept_labels
  if np.any(video_labels[video_of_row] != kept_labels):
    raise ValueError('views of one video_index carry different labels.')
  seen = views > 0
  if not seen.all():
    logging.warning('%d of %d videos have no unmasked view and are left out '
                    '(e.g. %s).', count - seen.sum(), count,
                    np.flatnonzero(~seen)[:10].tolist())
  return sums[seen] / views[seen, None], video_labels[seen]


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
  """AP of one class: scores [N], binary targets [N]; NaN without positives.

  Sum over distinct score thresholds (descending) of recall gain x precision;
  tied scores form one threshold (the usual information-retrieval definition).
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  targets = np.asarray(targets).reshape(-1) > 0
  positives = targets.sum()
  if not positives:
    return float('nan')
  order = np.argsort(-scores, kind='stable')
  scores, targets = scores[order], targets[order]
  last_of_threshold = np.append(np.flatnonzero(np.diff(scores) != 0), scores.size - 1)
  true_positives = np.cumsum(targets)[last_of_threshold]
  precision = true_positives / (last_of_threshold + 1)
  recall_gain = np.diff(true_positives, prepend=0) / positives
  return float(np.sum(recall_gain * precision))


def average_precision_per_class(scores: np.ndarray, targets: np.ndarray,
                                mask: np.ndarray | None = None) -> np.ndarray:
  """AP of each class over examples: scores, multi-hot targets [N, C] -> [C].

  NaN for classes without positives among the unmasked examples.
  """
  scores = np.asarray(scores, np.float64)
  targets = np.asarray(targets)
  valid = _valid(mask, len(scores))
  return np.array([average_precision(scores[valid, c], targets[valid, c])
                   for c in range(scores.shape[-1])])


def multi_label_map(scores: np.ndarray, targets: np.ndarray,
                    mask: np.ndarray | None = None) -> float:
  """Mean over classes with positives of the per-class AP; scores, targets [N, C]."""
  per_class = average_precision_per_class(scores, targets, mask)
  if np.all(np.isnan(per_class)):
    return float('nan')
  return float(np.nanmean(per_class))
