"""Task losses on hand-computed cases, and one training step of every backbone variant per task."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vivit_cofinetune import config_lib
from vivit_cofinetune import optim
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune import steps as steps_lib
from vivit_cofinetune.models import convert
from vivit_cofinetune.models import vivit
from vivit_cofinetune.tasks import base as tasks_base


def make_task(kind: str, num_classes: int, **fields):
  config = ml_collections.ConfigDict(dict(kind=kind, num_classes=num_classes, **fields))
  return tasks_lib.make_task('task', config)


def test_classification_loss_is_label_smoothed_cross_entropy_over_real_examples():
  task = make_task('classification', 3, label_smoothing=0.3)
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]])
  batch = {'label': jnp.array([0, 2, 1]), 'mask': jnp.array([True, True, False])}
  loss, metrics = task.loss_and_metrics(logits, batch)
  # Smoothed targets: 1 - 0.3 + 0.1 = 0.8 on the label, 0.1 elsewhere.
  def cross_entropy(row, label):
    log_probs = [v - math.log(sum(math.exp(u) for u in row)) for v in row]
    return -sum((0.8 if c == label else 0.1) * log_probs[c] for c in range(3))
  expected = (cross_entropy([2.0, 0.0, 0.0], 0) + cross_entropy([0.0, 1.0, 0.0], 2)) / 2
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  assert float(metrics['top1']) == pytest.approx(0.5)  # right on the first, wrong on the second


def test_localisation_loss_averages_sigmoid_cross_entropy_over_valid_boxes_only():
  task = make_task('localisation', 2)
  logits = jnp.array([[[1.0, -1.0], [0.0, 3.0]], [[7.0, 7.0], [7.0, 7.0]]])
  labels = jnp.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
  batch = {'labels': labels, 'box_mask': jnp.array([[True, True], [True, False]]),
           'mask': jnp.array([True, False])}  # example 1 is padding: none of its boxes count
  loss, metrics = task.loss_and_metrics(logits, batch)
  softplus = lambda x: math.log1p(math.exp(x))
  # BCE(x, y) = softplus(x) - x * y; mean over the 2 classes of each box, then over the 2 boxes.
  box_0 = (softplus(1.0) - 1.0 + softplus(-1.0)) / 2
  box_1 = (softplus(0.0) + softplus(3.0)) / 2
  assert float(loss) == pytest.approx((box_0 + box_1) / 2, rel=1e-6)
  assert float(metrics['boxes_per_clip']) == pytest.approx(2.0)


@pytest.mark.parametrize('class_reduction', ['mean', 'sum'])
def test_localisation_class_reduction_by_hand(class_reduction):
  task = make_task('localisation', 3, class_reduction=class_reduction)
  logits = jnp.array([[[2.0, 0.0, -1.0], [1.0, 1.0, 1.0]]])
  labels = jnp.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
  batch = {'labels': labels, 'box_mask': jnp.array([[True, True]]), 'mask': jnp.array([True])}
  loss, _ = task.loss_and_metrics(logits, batch)
  softplus = lambda x: math.log1p(math.exp(x))
  # BCE(x, y) = softplus(x) - x * y, per class of each box.
  box_0 = [softplus(2.0) - 2.0, softplus(0.0), softplus(-1.0) + 1.0]
  box_1 = [softplus(1.0), softplus(1.0) - 1.0, softplus(1.0)]
  reduce = sum if class_reduction == 'sum' else (lambda values: sum(values) / 3)
  assert float(loss) == pytest.approx((reduce(box_0) + reduce(box_1)) / 2, rel=1e-6)


def test_localisation_loss_of_a_batch_without_boxes_is_zero_not_nan():
  task = make_task('localisation', 2)
  batch = {'labels': jnp.zeros((1, 2, 2)), 'box_mask': jnp.zeros((1, 2), bool),
           'mask': jnp.ones((1,), bool)}
  loss, _ = task.loss_and_metrics(jnp.ones((1, 2, 2)), batch)
  assert float(loss) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize('variant', vivit.VARIANTS)
def test_every_variant_trains_both_task_kinds(variant):
  """One step per task: losses finite, the backbone and the task's head move, the other head not."""
  model_config = vivit.vivit_config('Ti/8x2', variant=variant, hidden_size=32, num_layers=1,
                                    mlp_dim=64, num_heads=2, num_temporal_layers=1,
                                    classifier='mean')
  pooling = 'token' if variant == 'factorised_encoder' else 'mean'
  clips = config_lib.input_config(num_frames=4, crop_size=16)
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer=dict(name='sgd', momentum=0.9, grad_clip_norm=1.0),
      tasks=dict(
          loc=config_lib.task_config('localisation', 'unused', num_classes=3, batch_size=2,
                                     input=clips, max_boxes=2, head=dict(roi_size=2)),
          cls=config_lib.task_config('classification', 'unused', num_classes=4, batch_size=2,
                                     input=clips, head=dict(pooling=pooling)))))
  tasks = {name: tasks_lib.make_task(name, task) for name, task in config.tasks.items()}
  backbone = vivit.ViViT(**model_config)
  optimizer = optim.make_optimizer(config.optimizer)
  params = state_lib.init_params(backbone, tasks, (4, 16, 16, 3), jax.random.key(0))
  state = jax.tree.map(jnp.asarray, state_lib.init_state(convert.plain_params(params), optimizer))
  rng = np.random.default_rng(0)
  batches = {
      'loc': {'video': rng.normal(size=(2, 4, 16, 16, 3)).astype(np.float32),
              'boxes': np.array([[[0.1, 0.1, 0.6, 0.5], [0.3, 0.4, 0.9, 0.9]]] * 2, np.float32),
              'box_mask': np.array([[True, True], [True, False]]),
              'labels': np.array([[[1, 0, 1], [0, 1, 0]]] * 2, np.float32),
              'mask': np.ones(2, bool)},
      'cls': {'video': rng.normal(size=(2, 4, 16, 16, 3)).astype(np.float32),
              'label': np.array([1, 3], np.int32), 'mask': np.ones(2, bool)}}
  trainable = optim.trainable_mask(state.params, ())
  for name, other in (('loc', 'cls'), ('cls', 'loc')):
    step = jax.jit(steps_lib.make_train_step(backbone, [(tasks[name], 1.0)], optimizer, trainable,
                                             seed=0, grad_clip_norm=1.0))
    rates = {'backbone': np.float32(0.1), 'heads': {name: np.float32(0.1)}}
    new_state, metrics = step(state, {name: batches[name]}, rates)
    metrics = metrics[name]
    assert np.isfinite(float(metrics['loss']))
    moved = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(
        jax.tree.leaves(a), jax.tree.leaves(b)))
    assert moved(new_state.params['heads'][name], state.params['heads'][name])
    assert not moved(new_state.params['heads'][other], state.params['heads'][other])
    # Heads start at zero, so the backbone's gradient is zero on the first step; train it twice.
    newer_state, _ = step(new_state, {name: batches[name]}, rates)
    assert moved(newer_state.params['backbone'], new_state.params['backbone'])


def test_localisation_evaluates_the_eval_classes_without_excluded_keyframes(tmp_path):
  (tmp_path / 'excluded.csv').write_text('video_b,0903\n')
  task = make_task('localisation', 3, eval_class_ids=[1, 3],
                   exclusions=str(tmp_path / 'excluded.csv'))
  box = [0.1, 0.1, 0.5, 0.5]
  # Two keyframes with one person each; the detector box is the true box.
  outputs = {
      'boxes': np.array([[box], [box]], np.float32), 'box_mask': np.ones((2, 1), bool),
      'gt_boxes': np.array([[box], [box]], np.float32), 'gt_box_mask': np.ones((2, 1), bool),
      # Keyframe a: classes 1 and 2. Keyframe b (excluded): class 3.
      'gt_labels': np.array([[[1, 1, 0]], [[0, 0, 1]]], np.float32),
      'scores': np.array([[[0.9, 0.1, 0.8]], [[0.2, 0.9, 0.9]]], np.float32),
      'video_index': np.array([0, 1]), 'timestamp': np.array([902, 903]),
      'mask': np.ones(2, bool)}
  metrics = task.evaluate(outputs, video_ids=['video_a', 'video_b'], output_dir=None)
  # Class 2 is not evaluated (it would score AP 0.5: keyframe b's 0.9 outranks the true 0.1).
  # Class 3's only truth is in the excluded keyframe, so it has no AP (kept, it would score 1.0).
  # What remains is class 1: its top detection is the true one, AP 1.0.
  assert metrics['mAP'] == 1.0
  assert [key for key in metrics if key.startswith('AP/')] == ['AP/1']


@pytest.mark.parametrize('eval_protocol, expected', [
    ('activitynet', {'mAP': 1.0, 'mAP_head': 1.0}),
    ('slowfast', {'mAP': 0.5, 'mAP_head': 0.5}),
    ('both', {'mAP': 1.0, 'mAP_head': 1.0, 'mAP_slowfast': 0.5, 'mAP_head_slowfast': 0.5}),
])
def test_localisation_reports_the_configured_ava_protocols(tmp_path, eval_protocol, expected):
  config = ml_collections.ConfigDict(dict(kind='localisation', num_classes=1,
                                          eval_protocol=eval_protocol))
  task = tasks_lib.make_task('task', config, tasks_base.DatasetInfo(  # The one class is 'head'.
      num_classes=1, class_names=['only'], num_train_examples=5, train_class_counts=[5]))
  truth = [0.1, 0.1, 0.5, 0.5]
  near = [0.1, 0.1, 0.5, 0.45]  # IoU 0.9 with the truth.
  # One keyframe, one true box; the detector's first box overlaps it with score 0.3, its second is
  # exact with score 0.9. ActivityNet visits by score: 0.9 is the TP, 0.3 a FP -> AP 1. PySlowFast
  # visits in row order: 0.3 takes the truth, 0.9 is a FP and ranks first -> AP 1/2.
  outputs = {
      'boxes': np.array([[near, truth]], np.float32), 'box_mask': np.ones((1, 2), bool),
      'gt_boxes': np.array([[truth, truth]], np.float32),
      'gt_box_mask': np.array([[True, False]]),
      'gt_labels': np.array([[[1], [0]]], np.float32),
      'scores': np.array([[[0.3], [0.9]]], np.float32),
      'video_index': np.array([0]), 'timestamp': np.array([902]), 'mask': np.ones(1, bool)}
  metrics = task.evaluate(outputs, video_ids=['video_a'], output_dir=tmp_path)
  # Mid and tail hold no class (NaN).
  assert {key: value for key, value in metrics.items()
          if key.startswith('mAP') and not math.isnan(value)} == expected


def test_classification_evaluation_by_hand_with_views_and_padding():
  task = make_task('classification', 6)
  # Five videos, labels 0, 0, 0, 1, 2. Videos 0-3 have two identical views: the label ranks 1st,
  # 6th, 5th and 2nd of six. Video 4's views disagree: one is sure of class 2, the other mildly
  # prefers class 4; averaged softmax (~0.57 on class 2 against ~0.18 on class 4) picks class 2.
  ranked = lambda order: np.array([5.0 - order.index(c) for c in range(6)])  # order: best first
  per_video = [ranked([0, 1, 2, 3, 4, 5]), ranked([1, 2, 3, 4, 5, 0]), ranked([1, 2, 3, 4, 0, 5]),
               ranked([0, 1, 2, 3, 4, 5])]
  logits = [row for row in per_video for _ in range(2)]
  logits += [np.eye(6)[2] * 10.0, np.eye(6)[4] * 1.0]
  video_index = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
  labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
  # Padding rows as the pipeline writes them (index -1, mask False), but holding a confident
  # right answer for class 0: counted, they would raise top-1, top-5 and chance.
  outputs = {
      'logits': np.array(logits + [np.eye(6)[0] * 10.0] * 2, np.float32),
      'label': np.array(labels + [0, 0]), 'video_index': np.array(video_index + [-1, -1]),
      'view_index': np.array([0, 1] * 5 + [-1, -1]), 'mask': np.array([True] * 10 + [False] * 2)}
  metrics = task.evaluate(outputs, video_ids=[f'v{i}' for i in range(5)], output_dir=None)
  assert metrics['num_videos'] == 5
  assert metrics['top1'] == pytest.approx(2 / 5)  # videos 0 and 4
  assert metrics['top5'] == pytest.approx(4 / 5)  # all but video 1 (label ranked 6th)
  # Per class present: class 0 1/3, class 1 0/1, class 2 1/1 -> (1/3 + 0 + 1) / 3.
  assert metrics['mean_class_accuracy'] == pytest.approx(4 / 9)
  assert metrics['chance_top1'] == pytest.approx(3 / 5)  # always answering class 0


def localisation_outputs(padding: bool) -> dict[str, np.ndarray]:
  """Two keyframes (video_a at 902, video_b at 903), each with two detector boxes: P on the person,
  N elsewhere. The truth: P does class 1 in video_a and class 2 in video_b.

  The model scores each (box, class) 0.9 where it is true and 0.1 elsewhere. With `padding`, a
  third row as the last eval batch pads: video_index -1, mask False, here holding boxes, truth and
  scores that would count if read.
  """
  box_p, box_n = [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]
  scores = np.full((2, 2, 2), 0.1, np.float32)
  scores[0, 0, 0] = scores[1, 0, 1] = 0.9
  outputs = {
      'boxes': np.array([[box_p, box_n]] * 2, np.float32), 'box_mask': np.ones((2, 2), bool),
      'gt_boxes': np.array([[box_p, box_n]] * 2, np.float32),
      'gt_box_mask': np.array([[True, False]] * 2),
      'gt_labels': np.array([[[1, 0], [0, 0]], [[0, 1], [0, 0]]], np.float32),
      'scores': scores, 'video_index': np.array([0, 1]), 'timestamp': np.array([902, 903]),
      'mask': np.ones(2, bool)}
  if padding:
    extra = {'boxes': [[box_n, box_p]], 'box_mask': [[True, True]], 'gt_boxes': [[box_n, box_p]],
             'gt_box_mask': [[True, True]], 'gt_labels': [[[1, 1], [1, 1]]],
             'scores': [[[0.95, 0.95], [0.0, 0.0]]], 'video_index': [-1], 'timestamp': [903],
             'mask': [False]}
    outputs = {key: np.concatenate([value, np.asarray(extra[key], value.dtype)])
               for key, value in outputs.items()}
  return outputs


@pytest.mark.parametrize('padding', [False, True])
def test_localisation_chance_map_by_hand_and_padding_rows_ignored(padding):
  task = make_task('localisation', 2)
  metrics = task.evaluate(localisation_outputs(padding), video_ids=['video_a', 'video_b'],
                          output_dir=None)
  assert metrics['mAP'] == 1.0 and metrics['AP/1'] == 1.0 and metrics['AP/2'] == 1.0
  # chance_mAP scores the same boxes with numpy's default_rng(0) uniform draws over the outputs'
  # [rows, boxes, classes] (padding rows come last, so the real rows get the same draws):
  #   video_a: P (0.637, 0.270), N (0.041, 0.017); video_b: P (0.813, 0.913), N (0.607, 0.729).
  # Class 1 ranks b/P 0.813 (false), a/P 0.637 (its only truth), ...: AP = precision 1/2.
  # Class 2 ranks b/P 0.913 first, its only truth: AP = 1. chance_mAP = (1/2 + 1) / 2.
  assert metrics['chance_mAP'] == pytest.approx(0.75)
