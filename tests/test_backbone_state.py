"""config.optimizer.backbone_state='per_task': each task's backbone update from its own AdamW state.

The reference is AdamW written out in float64 numpy (one state per part and, for the backbone, per
task), applied to gradients of the losses written out in test_training_glue.py.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vivit_cofinetune import checkpoint
from vivit_cofinetune import optim
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import steps as steps_lib
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.experiments import study
import test_training_glue as glue

# Adam's first steps divide each gradient entry by its own size: with the usual eps (1e-8), entries
# whose gradient is near zero would turn float32 differences between the two gradients into
# differences of a whole step. A larger eps keeps the comparison well-conditioned.
B1, B2, EPS, WEIGHT_DECAY = 0.9, 0.999, 1e-3, 0.05


class ReferenceAdamW:
  """AdamW of one part: m, v and the step count of this state only; decay on kernels only."""

  def __init__(self, params):
    self.m = jax.tree.map(lambda x: np.zeros(np.shape(x)), params)
    self.v = jax.tree.map(lambda x: np.zeros(np.shape(x)), params)
    self.count = 0

  def update(self, grads, params, learning_rate):
    self.count += 1
    self.m = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, self.m, grads)
    self.v = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * g * g, self.v, grads)
    m_hat = jax.tree.map(lambda m: m / (1 - B1 ** self.count), self.m)
    v_hat = jax.tree.map(lambda v: v / (1 - B2 ** self.count), self.v)

    def one(path, m, v, p):
      decay = WEIGHT_DECAY * p if path[-1].key == 'kernel' else 0.0
      return -learning_rate * (m / (np.sqrt(v) + EPS) + decay)

    return jax.tree_util.tree_map_with_path(one, m_hat, v_hat, params)


def adamw_setup():
  backbone, tasks, _, config, params = glue.tiny_setup()
  config.optimizer = dict(name='adamw', b1=B1, b2=B2, weight_decay=WEIGHT_DECAY,
                          grad_clip_norm=None, backbone_state='per_task')
  # optim.make_optimizer's AdamW with the eps above.
  optimizer = optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
      learning_rate=0.0, b1=B1, b2=B2, eps=EPS, weight_decay=WEIGHT_DECAY, mask=optim.decay_mask)
  state = state_lib.init_state(params, optimizer, 'per_task')
  return backbone, tasks, optimizer, config, params, state


def float64(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


def test_each_task_moves_the_backbone_by_the_moments_of_its_own_gradients():
  backbone, tasks, optimizer, config, params, state = adamw_setup()
  data = glue.batches()
  trainable = optim.trainable_mask(state.params, ())
  steps = {name: jax.jit(steps_lib.make_train_step(
      backbone, [(tasks[name], 1.0)], optimizer, trainable, seed=0, grad_clip_norm=None,
      backbone_state='per_task')) for name in tasks}
  assert set(state.opt_state['backbone']) == set(tasks)
  current = float64(params)
  backbone_states = {name: ReferenceAdamW(current['backbone']) for name in tasks}
  head_states = {name: ReferenceAdamW(current['heads'][name]) for name in tasks}

  # cls, loc, cls: the second cls step's backbone update uses the cls moments alone (count 2), not
  # moments that the loc step's gradient entered (a shared state would be at count 3).
  for step, (name, learning_rate) in enumerate((('cls', 0.1), ('loc', 0.05), ('cls', 0.02))):
    other = 'loc' if name == 'cls' else 'cls'
    parts = {'backbone': current['backbone'], 'head': current['heads'][name]}
    _, grads = glue.reference_loss_and_grad(backbone, tasks[name])(
        jax.tree.map(jnp.float32, parts), data[name])
    grads = float64(grads)
    backbone_update = backbone_states[name].update(grads['backbone'], current['backbone'],
                                                   learning_rate)
    head_update = head_states[name].update(grads['head'], current['heads'][name], learning_rate)
    rates = schedule_lib.part_learning_rates(learning_rate, [(name, 1.0)], {'cls': 1.0, 'loc': 1.0})
    new_state, _ = steps[name](state, {name: data[name]}, rates)
    glue.assert_update_close(new_state.params['backbone'], state.params['backbone'],
                             backbone_update, f'step {step} backbone')
    glue.assert_update_close(new_state.params['heads'][name], state.params['heads'][name],
                             head_update, f'step {step} head {name}')
    glue.assert_bit_identical(new_state.opt_state['backbone'][other],
                              state.opt_state['backbone'][other],
                              f'step {step}: backbone state of {other}')
    current = float64(new_state.params)  # follow the code's params, so errors do not compound
    state = new_state


def test_a_mixed_step_sums_each_tasks_own_update_at_its_share_of_the_rate():
  backbone, tasks, optimizer, _, params, state = adamw_setup()
  data = glue.batches()
  weights, factors, learning_rate = {'loc': 1.5, 'cls': 0.5}, {'loc': 1.0, 'cls': 0.4}, 0.1
  step = jax.jit(steps_lib.make_train_step(
      backbone, [(tasks[name], weight) for name, weight in weights.items()], optimizer,
      optim.trainable_mask(state.params, ()), seed=0, grad_clip_norm=None,
      backbone_state='per_task'))
  new_state, _ = step(state, data, schedule_lib.part_learning_rates(
      learning_rate, list(weights.items()), factors))
  current = float64(params)
  expected = None
  for name, weight in weights.items():
    parts = {'backbone': current['backbone'], 'head': current['heads'][name]}
    _, grads = glue.reference_loss_and_grad(backbone, tasks[name])(
        jax.tree.map(jnp.float32, parts), data[name])
    # Task t's backbone rate: its head's rate (rate * factor) times its share of the loss weight.
    rate = learning_rate * factors[name] * weight / sum(weights.values())
    # The step's backbone gradient of task t is that of its weighted loss.
    update = ReferenceAdamW(current['backbone']).update(
        jax.tree.map(lambda g, w=weight: w * g, float64(grads)['backbone']), current['backbone'],
        rate)
    expected = update if expected is None else jax.tree.map(np.add, expected, update)
  glue.assert_update_close(new_state.params['backbone'], state.params['backbone'], expected,
                           'mixed step backbone')
  for name in weights:
    assert int(new_state.opt_state['backbone'][name].count) == 1, name


def test_an_unknown_layout_is_refused_by_name():
  config = study.study_config('cofinetune_2', tiny=True, data_dir='unused')
  config.optimizer.backbone_state = 'per_head'
  with pytest.raises(ValueError, match=r"config.optimizer.backbone_state='per_head'"):
    trainer_setup.build(config)


@pytest.mark.slow
def test_a_per_task_state_checkpoints_and_restores(tmp_path):
  config = study.study_config('cofinetune_2', tiny=True, data_dir='unused',
                              backbone_state='per_task')
  setup = trainer_setup.build(config)
  state = setup.initial_state()
  # Distinct values in every task's backbone state, so a restore that mixed them up would show.
  state = state.replace(opt_state=dict(state.opt_state, backbone={
      name: jax.tree.map(lambda x, i=index: x + i + 1, task_state)
      for index, (name, task_state) in enumerate(state.opt_state['backbone'].items())}))
  manager = checkpoint.make_manager(tmp_path, config)
  checkpoint.save(manager, 1, state, {'loc': 1})
  manager.wait_until_finished()
  restored, batches = checkpoint.restore(manager, setup.abstract_state)
  assert batches == {'loc': 1}
  assert set(restored.opt_state['backbone']) == {'loc', 'upstream_a', 'upstream_b'}
  glue.assert_bit_identical(restored.opt_state, state.opt_state, 'optimizer state')
