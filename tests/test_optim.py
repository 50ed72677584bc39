"""Learning-rate schedule, clipping, freezing and the per-step learning rate."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vivit_cofinetune import optim
from vivit_cofinetune import schedule as schedule_lib


def test_warmup_then_cosine_restarts_every_phase():
  config = ml_collections.ConfigDict(dict(base_learning_rate=0.1, warmup_steps=10,
                                          end_learning_rate_factor=0.0))
  phases = [dict(steps=110, mixture={'a': 1}),
            dict(steps=50, base_learning_rate=0.02, warmup_steps=0, mixture={'a': 1})]
  schedule = schedule_lib.task_schedule(phases, seed=0)
  lr = lambda s: schedule_lib.learning_rate_at(s, phases=phases, schedule=schedule, config=config)
  assert lr(0) == pytest.approx(0.01)  # (0 + 1) / 10 of the base
  assert lr(9) == pytest.approx(0.1)
  # Half-way through the 100 cosine steps of phase 0: half the base rate.
  assert lr(60) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.5)))
  assert lr(110) == pytest.approx(0.02)  # phase 1 restarts at its own base, without warm-up
  assert lr(135) == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi * 25 / 50)))


def test_schedule_spanning_the_run_continues_the_decay_into_the_next_phase():
  # Transfer learning's second phase with the schedule continued, not a fresh warm-up.
  config = ml_collections.ConfigDict(dict(base_learning_rate=0.1, warmup_steps=10,
                                          schedule_span='run'))
  phases = [dict(steps=60, mixture={'a': 1}), dict(steps=50, mixture={'b': 1})]
  schedule = schedule_lib.task_schedule(phases, seed=0)
  lr = lambda s: schedule_lib.learning_rate_at(s, phases=phases, schedule=schedule, config=config)
  assert lr(0) == pytest.approx(0.01)
  assert lr(60) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 50 / 100)))  # no restart
  assert lr(109) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))
  config.schedule_span = 'phase'
  assert lr(60) == pytest.approx(0.01)  # the default: phase 1 warms up afresh


def test_cosine_decays_to_the_end_learning_rate_factor():
  config = ml_collections.ConfigDict(dict(base_learning_rate=0.2, warmup_steps=4,
                                          end_learning_rate_factor=0.1))
  phases = [dict(steps=24, mixture={'a': 1}), dict(steps=10, warmup_steps=0, mixture={'a': 1})]
  schedule = schedule_lib.task_schedule(phases, seed=0)
  lr = lambda s: schedule_lib.learning_rate_at(s, phases=phases, schedule=schedule, config=config)
  assert lr(1) == pytest.approx(0.2 * 2 / 4)  # warm-up is not affected by the end factor
  # rate = base * (end + (1 - end) * (1 + cos(pi * progress)) / 2) over the 20 steps after warm-up.
  assert lr(4) == pytest.approx(0.2)
  assert lr(9) == pytest.approx(0.2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 20))))
  assert lr(14) == pytest.approx(0.2 * (0.1 + 0.9 * 0.5))
  assert lr(23) == pytest.approx(0.2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 19 / 20))))
  # Phase 1 ends at the floor 0.1 * base and never goes below it.
  assert lr(24) == pytest.approx(0.2)
  assert lr(33) == pytest.approx(0.2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 10))))
  assert min(lr(s) for s in range(34)) > 0.2 * 0.1


def test_clip_by_global_norm_matches_numpy():
  grads = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([[12.0]])}  # global norm 13
  clipped, norm = optim.clip_by_global_norm(grads, 1.3)
  assert float(norm) == pytest.approx(13.0)
  np.testing.assert_allclose(clipped['a'], [0.3, 0.4], rtol=1e-6)
  np.testing.assert_allclose(clipped['b'], [[1.2]], rtol=1e-6)
  unclipped, _ = optim.clip_by_global_norm(grads, 100.0)
  np.testing.assert_allclose(unclipped['a'], [3.0, 4.0])


def test_trainable_mask_freezes_matching_paths():
  params = {'backbone': {'embedding': {'kernel': 1}, 'encoder': {'layers': {'mlp': 2}}},
            'heads': {'ava': {'output': {'kernel': 3}}}}
  mask = optim.trainable_mask(params, [r'^backbone/embedding/'])
  assert mask == {'backbone': {'embedding': {'kernel': False}, 'encoder': {'layers': {'mlp': True}}},
                  'heads': {'ava': {'output': {'kernel': True}}}}


def test_sgd_uses_the_learning_rate_set_for_the_step():
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(name='sgd', momentum=0.9)))
  params = {'w': jnp.array([1.0, 2.0])}
  grads = {'w': jnp.array([0.5, -1.0])}
  opt_state = optim.set_learning_rate(optimizer.init(params), 0.1)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  np.testing.assert_allclose(updates['w'], [-0.05, 0.1], rtol=1e-6)
  # Second step, rate 0.2: momentum buffer is g1 * 0.9 + g2 with g2 = g1.
  opt_state = optim.set_learning_rate(opt_state, 0.2)
  updates, _ = optimizer.update(grads, opt_state, params)
  np.testing.assert_allclose(updates['w'], [-0.2 * 0.5 * 1.9, 0.2 * 1.0 * 1.9], rtol=1e-6)


def test_unknown_optimizer_names_the_field():
  with pytest.raises(ValueError, match="config.optimizer.name='lamb'"):
    optim.make_optimizer(ml_collections.ConfigDict(dict(name='lamb')))


def test_a_phase_may_set_its_own_rate_without_a_global_one():
  phases = [dict(steps=10, base_learning_rate=0.5, mixture={'a': 1})]
  schedule = schedule_lib.task_schedule(phases, seed=0)
  config = ml_collections.ConfigDict(dict(name='sgd'))
  assert schedule_lib.learning_rate_at(0, phases=phases, schedule=schedule, config=config) == 0.5


def test_adamw_decays_kernels_only_even_in_scanned_layers():
  params = {'layers': {'mlp': {'kernel': jnp.ones((2, 3, 4)), 'bias': jnp.ones((2, 4))},
                       'norm': {'scale': jnp.ones((2, 3))}},
            'pos_embedding': jnp.ones((1, 5, 3)), 'cls': jnp.ones((1, 1, 3))}
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(
      dict(name='adamw', weight_decay=0.5, b1=0.9, b2=0.999)))
  opt_state = optim.set_learning_rate(optimizer.init(params), 0.1)
  zero_grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(zero_grads, opt_state, params)
  # With zero gradients only the decoupled decay moves a param: -lr * wd * p = -0.05 on kernels.
  np.testing.assert_allclose(updates['layers']['mlp']['kernel'], -0.05, rtol=1e-6)
  for name, update in (('bias', updates['layers']['mlp']['bias']),
                       ('scale', updates['layers']['norm']['scale']),
                       ('pos_embedding', updates['pos_embedding']), ('cls', updates['cls'])):
    np.testing.assert_array_equal(update, 0.0, err_msg=name)


def test_sgd_weight_decay_is_applied_to_kernels_only():
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(
      dict(name='sgd', momentum=0.0, weight_decay=0.1)))
  params = {'dense': {'kernel': jnp.array([2.0]), 'bias': jnp.array([2.0])}}
  grads = {'dense': {'kernel': jnp.array([0.5]), 'bias': jnp.array([0.5])}}
  opt_state = optim.set_learning_rate(optimizer.init(params), 0.1)
  updates, _ = optimizer.update(grads, opt_state, params)
  # -lr * (g + wd * p) on the kernel: -0.1 * (0.5 + 0.1 * 2); the bias is not decayed.
  np.testing.assert_allclose(updates['dense']['kernel'], [-0.07], rtol=1e-6)
  np.testing.assert_allclose(updates['dense']['bias'], [-0.05], rtol=1e-6)


def _backbone(stacked: bool):
  """A backbone tree shaped as ours: embedding, an encoder of 3 layers, its final norm, a position."""
  layer = lambda: {'mlp': {'kernel': jnp.ones((2, 2))}, 'mlp_norm': {'bias': jnp.ones(2)}}
  layers = ({'layers': jax.tree.map(lambda x: jnp.stack([x] * 3), layer())} if stacked else
            {f'layers_{index}': layer() for index in range(3)})
  return {'embedding': {'kernel': jnp.ones((2, 2))},
          'encoder': {**layers, 'pos_embedding': jnp.ones((1, 2, 2)),
                      'encoder_norm': {'scale': jnp.ones(2)}}}


@pytest.mark.parametrize('stacked', [True, False])
@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_layer_decay_scales_each_layer_by_hand(stacked, name):
  # depth = 3 layers + 1; layer i (0-based) is scaled by 0.5^(3 - i), the embedding and the
  # position embedding by 0.5^4, the final norm not at all.
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(
      name=name, momentum=None, weight_decay=0.0, layer_decay=0.5)))
  params = _backbone(stacked)
  grads = jax.tree.map(lambda x: 2.0 * jnp.ones_like(x), params)
  state = optim.set_learning_rate(optimizer.init(params), 0.1)
  updates, _ = optimizer.update(grads, state, params)
  # First step, no momentum: SGD moves by -lr * g; Adam by -lr * g / (|g| + eps) = -lr.
  step = 0.1 * (2.0 if name == 'sgd' else 1.0)
  layer_updates = ([updates['encoder']['layers']['mlp']['kernel'][index] for index in range(3)]
                   if stacked else
                   [updates['encoder'][f'layers_{index}']['mlp']['kernel'] for index in range(3)])
  for index, update in enumerate(layer_updates):
    np.testing.assert_allclose(update, -step * 0.5 ** (3 - index), rtol=1e-5)
  np.testing.assert_allclose(updates['embedding']['kernel'], -step * 0.5 ** 4, rtol=1e-5)
  np.testing.assert_allclose(updates['encoder']['pos_embedding'], -step * 0.5 ** 4, rtol=1e-5)
  np.testing.assert_allclose(updates['encoder']['encoder_norm']['scale'], -step, rtol=1e-5)
  head = {'output': {'kernel': jnp.ones((2, 3))}}  # a head is the top layer: unscaled
  head_updates, _ = optimizer.update(jax.tree.map(lambda x: 2.0 * x, head),
                                     optim.set_learning_rate(optimizer.init(head), 0.1), head)
  np.testing.assert_allclose(head_updates['output']['kernel'], -step, rtol=1e-5)


def test_layer_decay_off_keeps_the_optimizer_state_structure():
  plain = optim.make_optimizer(ml_collections.ConfigDict(dict(name='adamw')))
  off = optim.make_optimizer(ml_collections.ConfigDict(dict(name='adamw', layer_decay=1.0)))
  params = _backbone(True)
  assert (jax.tree.structure(plain.init(params)) == jax.tree.structure(off.init(params)))
  with pytest.raises(ValueError, match='layer_decay'):
    optim.make_optimizer(ml_collections.ConfigDict(dict(name='sgd', layer_decay=1.5)))
