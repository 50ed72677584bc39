"""The device mesh, logical-axis rules, and putting batches and state on the mesh.

Params carry logical axis names ('embed', 'mlp', 'heads', ...) and activations their own ('act_batch',
'act_embed', 'act_heads', ...), so weight and activation sharding are chosen separately;
`config.sharding_rules` maps both to the mesh axes ('data', 'fsdp', 'model'). The defaults: batch over
('data', 'fsdp'); params' embedding dimension split over 'fsdp' (gathered for each layer's use);
attention heads and the MLP's hidden units over 'model' (tensor parallelism), for weights and
activations alike.

The activations' `nn.with_logical_constraint` calls act only where the rules and the mesh are in
context while a step is traced (flax returns the input unchanged otherwise): `jit` below binds both
inside every step it compiles.
"""
import collections
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import contextlib
import functools
import math
from typing import Any

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import ml_collections
import numpy as np


MESH_AXES = ('data', 'fsdp', 'model')
BATCH_AXES = ('data', 'fsdp')

DEFAULT_RULES = (
    # Params.
    ('embed', 'fsdp'),
    ('mlp', 'model'),
    ('heads', 'model'),
    ('kv', None),
    ('classes', None),
    ('layers', None),
    ('position', None),
    # Activations.
    ('act_batch', BATCH_AXES),
    ('act_len', None),
    ('act_time', None),
    ('act_height', None),
    ('act_width', None),
    ('act_embed', None),
    ('act_heads', 'model'),
    ('act_kv', None),
    ('act_mlp', 'model'),
)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """{'data': ., 'fsdp': ., 'model': .} over `num_devices`; one size may be -1 (what the others leave)."""
  sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh={dict(mesh_config)}: at most one axis may be -1')
  known = math.prod(size for size in sizes if size != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'config.mesh={dict(mesh_config)}: {num_devices} devices do not split '
                       f'over the fixed axes (product {known})')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f'config.mesh={dict(mesh_config)} has {math.prod(sizes)} devices; '
                     f'{num_devices} are present')
  return dict(zip(MESH_AXES, sizes))


def batch_shards(mesh_config: Mapping[str, int], num_devices: int) -> int:
  """How many parts a global batch is split into: data x fsdp ('model' devices share a part)."""
  shape = mesh_shape(mesh_config, num_devices)
  return math.prod(shape[axis] for axis in BATCH_AXES)


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Mesh over all devices; one axis size may be -1 (whatever the others leave).

  Sizes that do not fit the devices raise ConfigError (main prints it as one line).
  """
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(tuple(shape.values()), MESH_AXES,
                       axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def logical_rules(config: ml_collections.ConfigDict) -> tuple:
  return tuple(tuple(rule) for rule in config.get('sharding_rules', DEFAULT_RULES))


@contextlib.contextmanager
def axis_context(mesh: Mesh, rules):
  """The mesh and the logical rules that `nn.with_logical_constraint` reads while tracing.

  Usable inside a traced function (jax.set_mesh is not): the abstract mesh is all tracing needs.
  """
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
    yield


def jit(fn: Callable, mesh: Mesh, rules, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` whose trace runs in `axis_context(mesh, rules)`.

  Binding the context inside the step, rather than around the loop that first calls it, means a
  step compiles the same wherever it is first called or lowered (the loop, --mode=eval, the tools).
  """
  @functools.wraps(fn)
  def in_context(*args, **kwargs):
    with axis_context(mesh, rules):
      return fn(*args, **kwargs)

  return jax.jit(in_context, **jit_kwargs)


def state_shardings(abstract_boxed_state, mesh: Mesh, rules):
  """NamedShardings for a state whose params carry logical-axis boxes (as from jax.eval_shape)."""
  logical_specs = nn.get_partition_spec(abstract_boxed_state)
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict[str, Any]:
  """Host-local numpy batch -> global arrays sharded on the batch axis (each host gives its part).

  A mixed batch ({task: batch}) is put task by task.
  """
  sharding = batch_sharding(mesh)
  return {key: put_batch(value, mesh) if isinstance(value, Mapping)
          else multihost_utils.host_local_array_to_global_array(value, mesh, PartitionSpec(BATCH_AXES))
          if jax.process_count() > 1 else jax.device_put(value, sharding)
          for key, value in batch.items()}


def prefetch_to_mesh(host_batches: Iterable[Mapping[str, np.ndarray]], mesh: Mesh,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """`put_batch` of each batch, `size` batches ahead of the one handed out.

  Steps are dispatched asynchronously, so the copies of the batches ahead overlap the step that is
  running (flax.jax_utils.prefetch_to_device, with the batch sharding of the mesh). Reads `size`
  host batches more than it hands out; a data position must count the batches handed out.
  """
  queue = collections.deque()
  for batch in host_batches:
    queue.append(put_batch(batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def gather_to_host(tree):
  """Global arrays -> the same full numpy arrays on every host."""
  if jax.process_count() > 1:
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.tree.map(np.asarray, tree)
