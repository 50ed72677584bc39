"""Optimizers and learning-rate schedules from the config.

Each task step updates the shared backbone and that task's head only. The backbone and every head have
their own optimizer state, so a head that is not trained in a step neither moves nor has its momentum
decay. The learning rates are passed into each compiled step (schedule.py: the schedule's value and
the tasks' factors) and written into each part's state through `optax.inject_hyperparams`.

`config.optimizer.layer_decay` (e.g. 0.75, as VideoMAE and BEiT fine-tune; None or 1.0: off) scales
each backbone layer's update by decay^(depth - layer): the patch embedding, CLS token and position
embedding are layer 0, transformer layer i is layer i + 1, the final norms and every head are layer
depth = num_layers + 1 (unscaled). Scanned layers (a leading layer axis on every leaf) get one
scale per slice of that axis.
"""
from collections.abc import Sequence
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vivit_cofinetune import param_paths

# config.optimizer.name values (config_checks rejects any other before the run starts).
OPTIMIZERS = ('sgd', 'adamw')


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """`config.optimizer` -> optax transformation whose learning rate is set per step."""
  name = config.get('name', 'sgd')
  layer_decay = config.get('layer_decay', None)
  if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
    raise ValueError(f'config.optimizer.layer_decay={layer_decay!r}: expected a factor in (0, 1]')
  if name == 'sgd':
    return optax.inject_hyperparams(_sgd, static_args=('layer_decay',))(
        learning_rate=0.0, momentum=config.get('momentum', 0.9) or None,
        nesterov=config.get('nesterov', False), weight_decay=config.get('weight_decay', 0.0),
        layer_decay=layer_decay)
  if name == 'adamw':
    return optax.inject_hyperparams(_adamw, static_args=('layer_decay',))(
        learning_rate=0.0, b1=config.get('b1', 0.9), b2=config.get('b2', 0.999),
        weight_decay=config.get('weight_decay', 0.0), layer_decay=layer_decay)
  raise ValueError(f'config.optimizer.name={name!r}: expected one of {list(OPTIMIZERS)}')


def _sgd(learning_rate, momentum, nesterov, weight_decay, layer_decay) -> optax.GradientTransformation:
  """SGD whose weight decay (L2 on the kernels, scaled by the learning rate) is optional."""
  return _with_layer_decay(
      optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask),
                  optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)), layer_decay)


def _adamw(learning_rate, b1, b2, weight_decay, layer_decay) -> optax.GradientTransformation:
  return _with_layer_decay(optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay,
                                       mask=decay_mask), layer_decay)


def _with_layer_decay(optimizer: optax.GradientTransformation,
                      layer_decay: float | None) -> optax.GradientTransformation:
  # Without layer decay the optimizer state keeps the structure older checkpoints have.
  if layer_decay is None or layer_decay == 1.0:
    return optimizer

  def scale(updates, state, params=None):
    del params
    scales = layer_decay_scales(updates, layer_decay)
    return jax.tree.map(lambda update, factor: update * factor.astype(update.dtype), updates,
                        scales), state

  return optax.chain(optimizer, optax.GradientTransformation(lambda _: optax.EmptyState(), scale))


# Our encoders in the order their layers are counted (models/vivit.py).
_ENCODERS = ('encoder', 'spatial_encoder', 'temporal_encoder')


def _num_layers(encoder: dict) -> int:
  if 'layers' in encoder:
    return int(jax.tree.leaves(encoder['layers'])[0].shape[0])
  return sum(re.fullmatch(r'layers_\d+', key) is not None for key in encoder)


def layer_decay_scales(params, layer_decay: float):
  """Tree like params: the factor decay^(depth - layer) each leaf's update is scaled by.

  Leaves of scanned 'layers' get an array [L, 1, ...] (one factor per layer); others a scalar.
  """
  encoders = [name for name in _ENCODERS if isinstance(params, dict) and name in params]
  counts = {name: _num_layers(params[name]) for name in encoders}
  depth = sum(counts.values()) + 1
  offsets, total = {}, 0
  for name in encoders:
    offsets[name], total = total, total + counts[name]

  def scale(path, leaf):
    names = [str(getattr(key, 'key', key)) for key in path]
    if names[0] == 'embedding':
      return np.asarray(layer_decay ** depth, np.float32)
    if names[0] not in offsets or len(names) < 2:
      return np.asarray(1.0, np.float32)
    offset, entry = offsets[names[0]], names[1]
    if entry in ('cls', 'pos_embedding'):
      layer = np.asarray(offset)
    elif entry == 'layers':
      layer = (offset + 1 + np.arange(leaf.shape[0])).reshape(-1, *([1] * (leaf.ndim - 1)))
    elif re.fullmatch(r'layers_\d+', entry):
      layer = np.asarray(offset + 1 + int(entry[len('layers_'):]))
    elif entry == 'encoder_norm' and names[0] != encoders[-1]:
      layer = np.asarray(offset + counts[names[0]])  # ends an encoder that feeds another
    else:
      return np.asarray(1.0, np.float32)
    return (layer_decay ** (depth - layer)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(scale, params)


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
