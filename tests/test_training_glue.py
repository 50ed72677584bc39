"""The train step against a hand-computed update: losses, clipping, momentum, learning rates, heads.

The reference here is written without train.py: the backbone and head applied directly, the losses
written out, gradient clipping and SGD momentum in numpy. Only autodiff of the forward pass is
shared with the code under test.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vivit_cofinetune import config_lib
from vivit_cofinetune import optim
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune import steps as steps_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.models import vivit

CLIP = (2, 8, 8, 3)  # patch (2, 4, 4) -> a (1, 2, 2) token grid
MOMENTUM = 0.9
LABEL_SMOOTHING = 0.1


def tiny_setup():
  """(backbone, tasks, optimizer, config, params) with every param random (heads not zero)."""
  model_config = vivit.vivit_config('Ti/4x2', hidden_size=8, num_layers=1, mlp_dim=16, num_heads=2,
                                    classifier='mean', scan_layers=False)
  clips = config_lib.input_config(num_frames=CLIP[0], crop_size=CLIP[1])
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer=dict(name='sgd', momentum=MOMENTUM, grad_clip_norm=None),
      tasks=dict(
          loc=config_lib.task_config('localisation', 'unused', num_classes=3, batch_size=3,
                                     input=clips, max_boxes=2,
                                     head=dict(roi_size=2, sampling_ratio=1)),
          cls=config_lib.task_config('classification', 'unused', num_classes=4, batch_size=3,
                                     input=clips, label_smoothing=LABEL_SMOOTHING))))
  tasks = {name: tasks_lib.make_task(name, task) for name, task in config.tasks.items()}
  backbone = vivit.ViViT(**model_config)
  # Only the shapes of an init (compiling one costs seconds); the values are random.
  shapes = nn.meta.unbox(jax.eval_shape(lambda: state_lib.init_params(
      backbone, tasks, CLIP, jax.random.key(0))))
  rng = np.random.default_rng(1)
  params = jax.tree.map(
      lambda leaf: jnp.asarray(0.3 * rng.standard_normal(leaf.shape), jnp.float32), shapes)
  optimizer = optim.make_optimizer(config.optimizer)
  return backbone, tasks, optimizer, config, params


def batches() -> dict[str, dict[str, np.ndarray]]:
  """One batch per task; the last example of each is padding (mask False) that must not count."""
  rng = np.random.default_rng(2)
  video = lambda: rng.standard_normal((3, *CLIP)).astype(np.float32)
  return {
      'loc': {'video': video(),
              'boxes': np.array([[[0.1, 0.1, 0.6, 0.5], [0.3, 0.4, 0.9, 0.9]]] * 3, np.float32),
              'box_mask': np.array([[True, True], [True, False], [True, True]]),
              'labels': np.array([[[1, 0, 1], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]],
                                  [[1, 1, 1], [1, 1, 1]]], np.float32),
              'mask': np.array([True, True, False])},
      'cls': {'video': video(), 'label': np.array([1, 3, 0], np.int32),
              'mask': np.array([True, True, False])}}


def reference_loss(backbone, task, params, batch):
  """The task's loss written out: backbone and head applied directly, padding left out."""
  tokens, pooled = backbone.apply({'params': params['backbone']}, batch['video'], train=False)
  mask = batch['mask'].astype(jnp.float32)
  if task.name == 'cls':
    logits = task.head.apply({'params': params['head']}, tokens, pooled, train=False)
    log_probs = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(batch['label'], num_classes) * (1 - LABEL_SMOOTHING) + (
        LABEL_SMOOTHING / num_classes)
    per_example = -(targets * log_probs).sum(-1)
    return (per_example * mask).sum() / mask.sum()
  logits = task.head.apply({'params': params['head']}, tokens, batch['boxes'], train=False)
  # Sigmoid cross-entropy: softplus(x) - x * y, averaged over classes, then over real boxes.
  per_box = (jax.nn.softplus(logits) - logits * batch['labels']).mean(-1)
  valid = batch['box_mask'] * mask[:, None]
  return (per_box * valid).sum() / valid.sum()


@functools.cache
def reference_loss_and_grad(backbone, task):
  return jax.jit(jax.value_and_grad(functools.partial(reference_loss, backbone, task)))


class ReferenceSGD:
  """SGD with momentum (trace = g + m * trace; update = -lr * trace) after global-norm clipping,
  with one trace per part (backbone, each head), in float64 numpy."""

  def __init__(self, params):
    self.params = {'backbone': params['backbone'], **params['heads']}
    self.params = jax.tree.map(lambda x: np.asarray(x, np.float64), self.params)
    self.trace = jax.tree.map(np.zeros_like, self.params)

  def step(self, backbone, task, batch, learning_rate, clip_norm):
    """Returns (loss, grad_norm before clipping, clipped, the update of each part trained)."""
    parts = {'backbone': self.params['backbone'], 'head': self.params[task.name]}
    loss, grads = reference_loss_and_grad(backbone, task)(jax.tree.map(jnp.float32, parts), batch)
    grads = jax.tree.map(lambda g: np.asarray(g, np.float64), grads)
    norm = np.sqrt(sum(np.sum(g ** 2) for g in jax.tree.leaves(grads)))
    scale = min(1.0, clip_norm / norm) if clip_norm else 1.0
    updates = {}
    for part, name in (('backbone', 'backbone'), ('head', task.name)):
      self.trace[name] = jax.tree.map(lambda g, t: scale * g + MOMENTUM * t, grads[part],
                                      self.trace[name])
      updates[name] = jax.tree.map(lambda t: -learning_rate * t, self.trace[name])
      self.params[name] = jax.tree.map(np.add, self.params[name], updates[name])
    return float(loss), norm, scale < 1.0, updates


def assert_update_close(new, old, expected, name, tolerance=2e-4):
  """The update new - old equals `expected` to `tolerance` of its largest entry (float32 math)."""
  actual = np.concatenate([np.ravel(np.asarray(n, np.float64) - np.asarray(o, np.float64))
                           for n, o in zip(jax.tree.leaves(new), jax.tree.leaves(old))])
  wanted = np.concatenate([np.ravel(e) for e in jax.tree.leaves(expected)])
  scale = np.abs(wanted).max()
  assert scale > 0, name
  error = np.abs(actual - wanted).max() / scale
  assert error <= tolerance, f'{name}: update off by {error:.2e} of its size'


def assert_bit_identical(a, b, name):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b, name
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


def test_steps_of_both_tasks_are_the_hand_computed_clipped_momentum_updates():
  backbone, tasks, optimizer, config, params = tiny_setup()
  data = batches()
  state = state_lib.init_state(params, optimizer)
  trainable = optim.trainable_mask(state.params, ())
  reference = ReferenceSGD(params)
  # Clip hard enough that the first step is clipped (its norm is measured first, in float64).
  _, first_norm, _, _ = ReferenceSGD(params).step(backbone, tasks['cls'], data['cls'], 0.1, None)
  config.optimizer.grad_clip_norm = 0.5 * first_norm
  steps = {name: jax.jit(steps_lib.make_train_step(
      backbone, [(tasks[name], 1.0)], optimizer, trainable, seed=config.seed,
      grad_clip_norm=config.optimizer.grad_clip_norm)) for name in tasks}

  # cls, loc, cls: the backbone's momentum mixes both tasks; the cls head's momentum waits out the
  # loc step; the schedule's rate differs per step, and loc's learning_rate_factor of 0.4 scales its
  # whole step (backbone and head), as a single task's factor does.
  factors = {'cls': 1.0, 'loc': 0.4}
  clipped_any = False
  for step, (name, learning_rate) in enumerate((('cls', 0.1), ('loc', 0.05), ('cls', 0.02))):
    other = 'loc' if name == 'cls' else 'cls'
    hand_rate = {'cls': learning_rate, 'loc': 0.4 * learning_rate}[name]
    loss, norm, clipped, updates = reference.step(backbone, tasks[name], data[name],
                                                  hand_rate, config.optimizer.grad_clip_norm)
    clipped_any |= clipped
    rates = schedule_lib.part_learning_rates(learning_rate, [(name, 1.0)], factors)
    new_state, metrics = steps[name](state, {name: data[name]}, rates)
    metrics = metrics[name]
    assert int(new_state.step) == step + 1
    assert float(metrics['loss']) == pytest.approx(loss, rel=1e-5), (step, name)
    assert float(metrics['grad_norm']) == pytest.approx(norm, rel=1e-5), (step, name)
    assert_update_close(new_state.params['backbone'], state.params['backbone'],
                        updates['backbone'], f'step {step} backbone')
    assert_update_close(new_state.params['heads'][name], state.params['heads'][name],
                        updates[name], f'step {step} head {name}')
    # The other head, its momentum and its learning rate: exactly as they were.
    assert_bit_identical(new_state.params['heads'][other], state.params['heads'][other],
                         f'step {step}: params of {other}')
    assert_bit_identical(new_state.opt_state['heads'][other], state.opt_state['heads'][other],
                         f'step {step}: optimizer state of {other}')
    state = new_state
  assert clipped_any  # the clipping branch was exercised



def test_a_mixed_batch_step_is_the_hand_computed_update_of_the_weighted_loss_sum():
  backbone, tasks, optimizer, config, params = tiny_setup()
  data = batches()
  config.tasks.cls.learning_rate_factor = 0.5
  state = state_lib.init_state(params, optimizer)
  trainable = optim.trainable_mask(state.params, ())
  weights = {'loc': 1.5, 'cls': 0.5}

  # The reference: one gradient of 1.5 loc + 0.5 cls over the backbone and both heads, clipped as
  # one, then SGD momentum per part; the cls head at half the learning rate.
  parts = {'backbone': params['backbone'], 'loc': params['heads']['loc'],
           'cls': params['heads']['cls']}

  def weighted_loss(parts):
    return sum(weight * reference_loss(backbone, tasks[name],
                                       {'backbone': parts['backbone'], 'head': parts[name]},
                                       data[name]) for name, weight in weights.items())

  grads = jax.tree.map(lambda g: np.asarray(g, np.float64), jax.jit(jax.grad(weighted_loss))(parts))
  norm = np.sqrt(sum(np.sum(g ** 2) for g in jax.tree.leaves(grads)))
  config.optimizer.grad_clip_norm = 0.5 * norm  # clipped
  step = jax.jit(steps_lib.make_train_step(
      backbone, [(tasks[name], weights[name]) for name in weights], optimizer, trainable,
      seed=config.seed, grad_clip_norm=config.optimizer.grad_clip_norm))
  learning_rate = 0.1
  new_state, metrics = step(state, data, schedule_lib.part_learning_rates(
      learning_rate, list(weights.items()), {'loc': 1.0, 'cls': 0.5}))

  for name in weights:
    loss = reference_loss(backbone, tasks[name], {'backbone': params['backbone'],
                                                  'head': params['heads'][name]}, data[name])
    assert float(metrics[name]['loss']) == pytest.approx(float(loss), rel=1e-5), name
    assert float(metrics[name]['grad_norm']) == pytest.approx(norm, rel=1e-5), name
  # First step from a zero trace: the update is -lr * clipped gradient.
  # The backbone's factor is the loss-weighted mean of the tasks' factors: (1.5 * 1 + 0.5 * 0.5) / 2.
  for part, new, old, part_rate in (
      ('backbone', new_state.params['backbone'], state.params['backbone'], 0.875 * learning_rate),
      ('loc', new_state.params['heads']['loc'], state.params['heads']['loc'], learning_rate),
      ('cls', new_state.params['heads']['cls'], state.params['heads']['cls'], 0.5 * learning_rate)):
    expected = jax.tree.map(lambda g, rate=part_rate: -rate * 0.5 * g, grads[part])
    assert_update_close(new, old, expected, f'mixed step: {part}')
  assert int(new_state.step) == 1
