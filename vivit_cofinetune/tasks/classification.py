"""Clip classification (Kinetics, Moments in Time, SSv2): softmax cross-entropy, top-k accuracy.

Multi-label sets (`multi_label=True`, multi-hot `label` [B, C]) use sigmoid cross-entropy and mAP.
"""
from collections.abc import Mapping, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vivit_cofinetune.metrics import classification as classification_metrics
from vivit_cofinetune.models import heads
from vivit_cofinetune.tasks import base


class ClassificationTask(base.Task):
  """One label (or a multi-hot vector) per clip; multi-view evaluation per video."""

  def __init__(self, name, config, info=None):
    super().__init__(name, config, info)
    self.multi_label = config.get('multi_label', False)
    head_config = config.get('head', {})
    self.head = heads.ClassificationHead(
        num_classes=self.num_classes, pooling=head_config.get('pooling', 'mean'),
        dropout_rate=head_config.get('dropout_rate', 0.0))

  def train_batch_shapes(self, batch_size):
    label = (jax.ShapeDtypeStruct((batch_size, self.num_classes), jnp.float32) if self.multi_label
             else jax.ShapeDtypeStruct((batch_size,), jnp.int32))
    return dict(super().train_batch_shapes(batch_size), label=label)

  def head_args(self, tokens, cls_token, batch):
    return (tokens, cls_token)

  def loss_and_metrics(self, logits, batch):
    mask = batch['mask'].astype(jnp.float32)
    logits = logits.astype(jnp.float32)
    if self.multi_label:
      per_example = optax.sigmoid_binary_cross_entropy(logits, batch['label']).mean(-1)
      metrics = {}
    else:
      targets = optax.smooth_labels(jax.nn.one_hot(batch['label'], self.num_classes),
                                    self.config.get('label_smoothing', 0.0))
      per_example = optax.softmax_cross_entropy(logits, targets)
      correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
      metrics = {'top1': (correct * mask).sum() / jnp.maximum(mask.sum(), 1.0)}
    loss = (per_example * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    return loss, dict(metrics, loss=loss)

  def probabilities(self, logits):
    if self.multi_label:
      return jax.nn.sigmoid(logits.astype(jnp.float32))
    return super().probabilities(logits)

  def eval_outputs(self, logits, batch):
    return {'logits': logits.astype(jnp.float32), 'label': batch['label'], 'mask': batch['mask'],
            'video_index': batch['video_index'], 'view_index': batch['view_index']}

  def evaluate(self, outputs: Mapping[str, np.ndarray], *, video_ids: Sequence[str],
               output_dir: epath.Path | None) -> dict[str, float]:
    del output_dir  # Classification writes no files.
    video_scores, video_labels = classification_metrics.aggregate_views(
        outputs['logits'], outputs['label'], outputs['video_index'], outputs['mask'],
        num_videos=len(video_ids), view_index=outputs['view_index'],
        method=self.config.get('eval_view_aggregation', 'softmax'),
        multi_label=self.multi_label)
    if self.multi_label:
      return {'mAP': classification_metrics.multi_label_map(video_scores, video_labels),
              'num_videos': float(len(video_labels))}
    return {
        'top1': classification_metrics.top_k_accuracy(video_scores, video_labels, k=1),
        'top5': classification_metrics.top_k_accuracy(video_scores, video_labels, k=5),
        'mean_class_accuracy': classification_metrics.mean_per_class_accuracy(
            video_scores, video_labels, num_classes=self.num_classes),
        # Always predicting the most frequent class: the baseline a learned model must beat.
        'chance_top1': float(np.bincount(video_labels, minlength=self.num_classes).max()
                             / max(len(video_labels), 1)),
        'num_videos': float(len(video_labels)),
    }
