"""Mesh shapes, and the logical rules reaching the model's activation constraints when steps trace."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from vivit_cofinetune import sharding
from vivit_cofinetune.models import vivit


def test_mesh_shape_fills_one_axis_and_batch_splits_over_data_and_fsdp():
  assert sharding.mesh_shape(dict(data=-1, fsdp=2, model=2), 16) == dict(data=4, fsdp=2, model=2)
  assert sharding.batch_shards(dict(data=2, fsdp=-1, model=4), 32) == 8
  with pytest.raises(ValueError, match='has 6 devices; 8 are present'):
    sharding.mesh_shape(dict(data=3, fsdp=2), 8)


def _lowered_backbone(jit):
  config = vivit.vivit_config('Ti/8x2', hidden_size=32, num_layers=1, mlp_dim=64, num_heads=2)
  model = vivit.ViViT(**config)
  video = jnp.zeros((2, 4, 16, 16, 3))
  params = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.key(0), video,
                                                           train=False)))
  return jit(lambda p, v: model.apply(p, v, train=False)[0]).lower(params, video).as_text()


def test_activation_constraints_take_effect_only_with_rules_and_mesh_in_context():
  mesh = sharding.make_mesh(dict(data=-1))
  constrained = _lowered_backbone(
      lambda fn: sharding.jit(fn, mesh, sharding.DEFAULT_RULES))
  plain = _lowered_backbone(jax.jit)
  # Flax drops nn.with_logical_constraint without rules and a mesh: the bug sharding.jit fixes.
  assert 'sharding_constraint' not in plain
  # Tokens, q/k/v, attention output, MLP hidden, block output (scanned: once each), output grid.
  assert constrained.count('sharding_constraint') >= 8
