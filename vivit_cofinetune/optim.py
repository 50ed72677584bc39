"""Optimizers and learning-rate schedules from the config.

Each task step updates the shared backbone and that task's head only. The backbone and every head have
their own optimizer state, so a head that is not trained in a step neither moves nor has its momentum
decay. The learning rate is passed into each compiled step (schedule value times the task's factor)
and written into the state through `optax.inject_hyperparams`.
"""
from collections.abc import Sequence
import math
import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vivit_cofinetune import param_paths

# config.optimizer.name values (config_checks rejects any other before the run starts).
OPTIMIZERS = ('sgd', 'adamw')


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`config.optimizer` -> optax transformation whose learning rate is set per step."""
  name = config.get('name', 'sgd')
  if name == 'sgd':
    return optax.inject_hyperparams(_sgd)(
        learning_rate=0.0, momentum=config.get('momentum', 0.9) or None,
        nesterov=config.get('nesterov', False), weight_decay=config.get('weight_decay', 0.0))
  if name == 'adamw':
    # `mask` is static: inject_hyperparams would otherwise call it as a schedule of the step count.
    return optax.inject_hyperparams(optax.adamw, static_args=('mask',))(
        learning_rate=0.0, b1=config.get('b1', 0.9), b2=config.get('b2', 0.999),
        weight_decay=config.get('weight_decay', 0.0), mask=decay_mask)
  raise ValueError(f'config.optimizer.name={name!r}: expected one of {list(OPTIMIZERS)}')


def _sgd(learning_rate, momentum, nesterov, weight_decay) -> optax.GradientTransformation:
  """SGD whose weight decay (L2 on the kernels, scaled by the learning rate) is optional."""
  return optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask),
                     optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def decay_mask(params):
  """Weight decay on Dense and embedding kernels only, not on biases, LayerNorm, CLS or positions.

  Decided by name, not by rank: scanned layers stack every leaf on a layer axis, so a rank test
  would decay the stacked biases and LayerNorm scales too.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: str(getattr(path[-1], 'key', path[-1])) == 'kernel', params)


def set_learning_rate(opt_state, learning_rate: jax.Array):
  """Returns opt_state with the injected learning rate replaced."""
  hyperparams = dict(opt_state.hyperparams, learning_rate=jnp.asarray(learning_rate, jnp.float32))
  return opt_state._replace(hyperparams=hyperparams)


def learning_rate_at(step: int, *, phases: Sequence, schedule,
                     config: ml_collections.ConfigDict) -> float:
  """Linear warm-up then cosine decay, restarted at the start of every phase or spanning the run.

  `schedule` is the run's data.mixture.TaskSchedule. With `config.schedule_span='phase'` (the
  default) every phase has its own warm-up and cosine, and may override `base_learning_rate` and
  `warmup_steps` of `config.optimizer`; the cosine decays to `end_learning_rate_factor * base` at the
  end of the phase. With 'run' one warm-up and cosine span all phases, so a later phase continues
  the decay where the one before left it (config_lib rejects per-phase overrides there).
  """
  base, warmup = config.get('base_learning_rate'), config.get('warmup_steps', 0)
  if config.get('schedule_span', 'phase') == 'run':
    step_in_span, span_steps = step, schedule.num_steps
  else:
    phase_index = schedule.phase_of_step(step)
    phase = phases[phase_index]
    base = phase.get('base_learning_rate', base)
    warmup = phase.get('warmup_steps', warmup)
    step_in_span, span_steps = step - schedule.phase_starts[phase_index], phase['steps']
  end_factor = config.get('end_learning_rate_factor', 0.0)
  if step_in_span < warmup:
    return base * (step_in_span + 1) / warmup
  progress = (step_in_span - warmup) / max(1, span_steps - warmup)
  cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
  return base * (end_factor + (1.0 - end_factor) * cosine)


def clip_by_global_norm(grads, max_norm: float | None):
  """Scales grads so their global norm is at most max_norm; returns (grads, norm before clipping)."""
  norm = optax.global_norm(grads)
  if not max_norm:
    return grads, norm
  scale = jnp.minimum(1.0, max_norm / (norm + 1e-12))
  return jax.tree.map(lambda g: g * scale.astype(g.dtype), grads), norm


def trainable_mask(params, freeze_patterns: Sequence[str]):
  """Tree of bools: False where the '/'-joined param path matches one of the regexes (frozen)."""
  compiled = [re.compile(pattern) for pattern in freeze_patterns]

  def is_trainable(path, _):
    return not any(pattern.search(param_paths.name(path)) for pattern in compiled)

  return jax.tree_util.tree_map_with_path(is_trainable, params)
