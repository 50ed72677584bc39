"""The device mesh, logical-axis rules, and putting batches and state on the mesh.

Params carry logical axis names ('embed', 'mlp', 'heads', ...); `config.sharding_rules` maps them to
the mesh axes ('data', 'fsdp', 'model'). Batches are sharded over ('data', 'fsdp').
"""
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np

from vivit_cofinetune import config_lib

MESH_AXES = ('data', 'fsdp', 'model')
BATCH_AXES = ('data', 'fsdp')

DEFAULT_RULES = (
    ('batch', BATCH_AXES),
    ('embed', 'fsdp'),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('kv', None),
    ('classes', None),
    ('layers', None),
    ('position', None),
    ('patch', None),
    ('time', None),
    ('height', None),
    ('width', None),
)


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over all devices; one axis size may be -1 (whatever the others leave).

  Sizes that do not fit the devices raise ConfigError (main prints it as one line).
  """
  devices = list(devices if devices is not None else jax.devices())
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise config_lib.ConfigError(f'config.mesh={dict(mesh_config)}: at most one axis may be -1')
  known = int(np.prod([size for size in sizes if size != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise config_lib.ConfigError(f'config.mesh={dict(mesh_config)}: {len(devices)} devices do '
                                   f'not split over the fixed axes (product {known})')
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise config_lib.ConfigError(f'config.mesh={dict(mesh_config)} has {int(np.prod(sizes))} '
                                 f'devices; {len(devices)} are present')
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def logical_rules(config: ml_collections.ConfigDict) -> tuple:
  return tuple(tuple(rule) for rule in config.get('sharding_rules', DEFAULT_RULES))


def state_shardings(abstract_boxed_state, mesh: Mesh, rules):
  """NamedShardings for a state whose params carry logical-axis boxes (as from jax.eval_shape)."""
  logical_specs = nn.get_partition_spec(abstract_boxed_state)
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded on the batch axis (each host gives its part)."""
  sharding = batch_sharding(mesh)
  return {key: multihost_utils.host_local_array_to_global_array(value, mesh, PartitionSpec(BATCH_AXES))
          if jax.process_count() > 1 else jax.device_put(value, sharding)
          for key, value in batch.items()}


def gather_to_host(tree):
  """Global arrays -> the same full numpy arrays on every host."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)
