"""Spatio-temporal action localisation (AVA, AVA-Kinetics): per-box multi-label actions.

Training uses the ground-truth person boxes; evaluation scores the person-detector boxes for every
class, writes the official detections CSV and computes frame mAP at IoU 0.5 with metrics/ava.py.
"""
from collections.abc import Mapping, Sequence
import math

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vivit_cofinetune import pictures as pictures_lib
from vivit_cofinetune.config_lib import ConfigError
from vivit_cofinetune.metrics import ava
from vivit_cofinetune.metrics import ava_files
from vivit_cofinetune.models import heads
from vivit_cofinetune.tasks import base

# `config.tasks.<name>.eval_protocol` -> the AVA protocols it reports (see metrics/ava.py). The first
# keeps the plain metric names (mAP, mAP_head, AP/<id>, chance_mAP); with 'both', slowfast's mAP and
# group mAPs follow with its name appended (mAP_slowfast, mAP_head_slowfast).
EVAL_PROTOCOLS = {'activitynet': ('activitynet',), 'slowfast': ('slowfast',),
                  'both': ('activitynet', 'slowfast')}
# `config.tasks.<name>.class_reduction`: how a box's per-class sigmoid cross-entropies become its loss.
# 'sum' (Scenic's weighted_sigmoid_cross_entropy) gives the loss num_classes times the scale of 'mean'
# (PySlowFast's BCELoss); with one learning rate for every task, that sets the balance against the
# softmax tasks.
CLASS_REDUCTIONS = ('mean', 'sum')


class LocalisationTask(base.Task):
  """Sigmoid cross-entropy over the valid boxes of each clip's keyframe, reduced over classes by
  `class_reduction` and averaged over the valid boxes."""

  PREDICTION_INPUTS = {'boxes': '[N, 4] or [B, N, 4] (y1, x1, y2, x2 in [0, 1])'}
  OWN_FIELDS = ('class_reduction', 'eval_protocol')

  @classmethod
  def check_config(cls, field, config):
    super().check_config(field, config)
    for key, choices in (('eval_protocol', list(EVAL_PROTOCOLS)),
                         ('class_reduction', list(CLASS_REDUCTIONS))):
      if key in config and config[key] not in choices:
        raise ValueError(f'{field}.{key}={config[key]!r}: expected one of {choices}')

  def __init__(self, name, config, info=None):
    super().__init__(name, config, info)
    head_config = config.get('head', {})
    self.head = heads.RoIActionHead(
        num_classes=self.num_classes, roi_size=head_config.get('roi_size', 7),
        sampling_ratio=head_config.get('sampling_ratio', 2),
        dropout_rate=head_config.get('dropout_rate', 0.0))
    # Class ids as written in the CSVs; AVA numbers its classes from 1.
    self.class_ids = list(config.get('class_ids', None) or self.dataset_class_ids or
                          range(1, self.num_classes + 1))
    # The classes the metric averages over (AVA v2.2: trained on 80, evaluated on the official 60):
    # the config's list, else the one the dataset records, else every class.
    eval_ids = config.get('eval_class_ids') or self.dataset_eval_class_ids or self.class_ids
    unknown = sorted(set(eval_ids) - set(self.class_ids))
    if unknown:
      raise ConfigError(f'config.tasks.{name}.eval_class_ids: {unknown} are not class ids of the '
                        f'dataset ({self.class_ids[0]}..{self.class_ids[-1]})')
    names = dict(zip(self.class_ids, self.class_names))
    self.labelmap = {class_id: names[class_id] for class_id in eval_ids}
    # Keyframes the official evaluation leaves out, as (video_id, second): the config's file, else
    # the one stored with the dataset.
    exclusions = ([config.exclusions] if config.get('exclusions') else
                  self.evaluation_files.get('exclusions', []))
    self.excluded_keys = set().union(*map(ava_files.read_exclusions, exclusions)) if exclusions else None
    self.eval_protocols = EVAL_PROTOCOLS[config.get('eval_protocol', 'activitynet')]
    self.class_reduction = config.get('class_reduction', 'mean')
    self._groundtruth = None
    self._chance_map = None

  def train_batch_shapes(self, batch_size):
    boxes = (batch_size, self.config.max_boxes)
    return dict(super().train_batch_shapes(batch_size),
                boxes=jax.ShapeDtypeStruct((*boxes, 4), jnp.float32),
                box_mask=jax.ShapeDtypeStruct(boxes, jnp.bool_),
                labels=jax.ShapeDtypeStruct((*boxes, self.num_classes), jnp.float32))

  def init_batch(self):
    return {'boxes': jnp.zeros((1, self.config.get('max_boxes', 1), 4), jnp.float32)}

  def head_args(self, tokens, cls_token, batch):
    return (tokens, batch['boxes'])

  def loss_and_metrics(self, logits, batch):
    valid = (batch['box_mask'] & batch['mask'][:, None]).astype(jnp.float32)
    per_class = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), batch['labels'])
    per_box = per_class.sum(-1) if self.class_reduction == 'sum' else per_class.mean(-1)
    loss = (per_box * valid).sum() / jnp.maximum(valid.sum(), 1.0)
    return loss, {'loss': loss, 'boxes_per_clip': valid.sum() / jnp.maximum(
        batch['mask'].astype(jnp.float32).sum(), 1.0)}

  def probabilities(self, logits):
    return jax.nn.sigmoid(logits.astype(jnp.float32))  # independent per class

  def eval_outputs(self, logits, batch):
    keys = ('boxes', 'frame_boxes', 'box_mask', 'gt_boxes', 'gt_box_mask', 'gt_labels',
            'video_index', 'timestamp', 'mask')
    return dict({key: batch[key] for key in keys if key in batch},
                scores=jax.nn.sigmoid(logits.astype(jnp.float32)))

  def groundtruth(self, outputs: Mapping[str, np.ndarray],
                  video_ids: Sequence[str]) -> ava_files.Annotations:
    """The official ground-truth CSVs stored with the dataset (read once, one after the other for a
    combined dataset, as `cat`-ing them for the CLI would), else the examples' boxes."""
    paths = self.evaluation_files.get('groundtruth')
    if not paths:
      return self._annotations(outputs, video_ids, outputs['gt_boxes'], outputs['gt_box_mask'],
                               outputs['gt_labels'], are_scores=False)
    if self._groundtruth is None:
      parts = [ava_files.read_csv(path, class_whitelist=self.labelmap) for path in paths]
      self._groundtruth = parts[0] if len(parts) == 1 else ava_files.annotations_from_arrays(
          video_ids=np.concatenate([part.video_id for part in parts]),
          timestamps=np.concatenate([part.timestamp for part in parts]),
          boxes_y1x1y2x2=np.concatenate([part.boxes for part in parts]),
          labels=np.concatenate([part.label for part in parts]))
    return self._groundtruth

  def evaluate(self, outputs: Mapping[str, np.ndarray], *, video_ids: Sequence[str],
               output_dir: epath.Path | None) -> dict[str, float]:
    # Detections are reported on the original frame (`frame_boxes`), not on the letterboxed input.
    boxes = outputs['frame_boxes'] if 'frame_boxes' in outputs else outputs['boxes']
    detections = self._annotations(outputs, video_ids, boxes, outputs['box_mask'],
                                   outputs['scores'], are_scores=True)
    groundtruth = self.groundtruth(outputs, video_ids)
    if output_dir is not None:
      output_dir.mkdir(parents=True, exist_ok=True)
      path = output_dir / f'{self.name}_detections.csv'
      ava_files.write_csv(path, detections)
      # Scored as written (boxes at 3 decimals, scores at 4), exactly what the CLI reads back.
      detections = ava_files.read_csv(path, class_whitelist=self.labelmap, load_scores=True)
    results = {protocol: ava.evaluate(groundtruth, detections, self.labelmap,
                                      excluded_keys=self.excluded_keys,
                                      train_class_counts=self._train_counts_by_id(),
                                      group_thresholds=self.config.get('group_thresholds'),
                                      protocol=protocol)
               for protocol in self.eval_protocols}
    first = results[self.eval_protocols[0]]
    if self._chance_map is None:
      # The same boxes scored at random: the mAP of a model that learned nothing. The boxes and
      # the truth do not change between evaluations, so once per run is enough.
      random_scores = np.random.default_rng(0).uniform(size=outputs['scores'].shape)
      self._chance_map = ava.evaluate(groundtruth, self._annotations(
          outputs, video_ids, boxes, outputs['box_mask'], random_scores,
          are_scores=True), self.labelmap, excluded_keys=self.excluded_keys,
          protocol=self.eval_protocols[0])['mAP']
    metrics = {'mAP': first['mAP'], 'chance_mAP': self._chance_map}
    for protocol, result in results.items():
      suffix = '' if result is first else f'_{protocol}'
      metrics[f'mAP{suffix}'] = result['mAP']
      for group, values in result.get('groups', {}).items():
        metrics[f'mAP_{group}{suffix}'] = values['mAP']
    for class_id, values in first['per_class'].items():
      if values['num_groundtruth']:  # AP is undefined for a class absent from the eval split.
        metrics[f'AP/{class_id}'] = values['ap']
    return metrics

  def pictures(self, examples, metrics):
    average_precision = {c: metrics.get(f'AP/{c}', math.nan) for c in self.labelmap}
    images = {}
    counts = self._train_counts_by_id()
    if counts is not None:
      groups = ava.frequency_groups(average_precision, counts, self.config.get('group_thresholds'))
      group_of = {c: group for group, value in groups.items() for c in value['classes']}
      images['per_class_ap'] = pictures_lib.per_class_ap_chart(
          list(self.labelmap.values()), list(average_precision.values()),
          [counts[c] for c in self.labelmap], [group_of.get(c, '') for c in self.labelmap])[None]
    keyframes = []
    for index, frame in enumerate(examples['keyframe']):
      valid = examples['box_mask'][index]
      scores = examples['scores'][index][valid]
      top = np.argsort(-scores, axis=-1)[:, :2]
      captions = ['\n'.join(f'{self.class_names[c][:12]} {s[c]:.2f}' for c in classes)
                  for classes, s in zip(top, scores)]
      truth = examples['gt_boxes'][index][examples['gt_box_mask'][index]]
      keyframes.append(pictures_lib.annotated_keyframe(frame, examples['boxes'][index][valid],
                                                       captions, truth))
    if keyframes:
      images['keyframes'] = np.stack(keyframes)
    return images

  def _train_counts_by_id(self) -> dict[int, int] | None:
    if self.train_class_counts is None:
      return None
    return dict(zip(self.class_ids, self.train_class_counts))

  def _annotations(self, outputs, video_ids, boxes, box_mask, class_values, *, are_scores: bool):
    """CSV rows: every (valid box, class) with its score, or each positive (box, class) label."""
    valid = box_mask & outputs['mask'][:, None]
    example, box = np.nonzero(valid)
    values = class_values[example, box]  # [rows, C]
    if are_scores:
      row, class_index = np.indices(values.shape).reshape(2, -1)
      scores = values[row, class_index]
    else:
      row, class_index = np.nonzero(values > 0)
      scores = None
    example, box = example[row], box[row]
    return ava_files.annotations_from_arrays(
        video_ids=np.asarray(video_ids)[outputs['video_index'][example]],
        timestamps=outputs['timestamp'][example],
        boxes_y1x1y2x2=boxes[example, box],
        labels=np.asarray(self.class_ids)[class_index],
        scores=scores)
