"""Per-device memory of a config's train steps on a mesh, read from the compiled program.

  python -m vivit_cofinetune.tools.estimate_memory --config=configs/ava_kinetics_cofinetune.py:size=L \
      --mesh=1,8,1 [--task=ava] [--json] [--config.model.remat_policy=full ...]

--mesh is data,fsdp,model. No accelerator is needed: the steps are compiled ahead of time, with the
trainer's own shardings, logical rules and remat policy, for data x fsdp x model emulated CPU devices
(abstract inputs: nothing is allocated, no dataset is read). For each task the schedule trains it
prints, per device:
  params       the state's params as sharded by the rules (exact on any platform),
  optimizer    the optimizer states likewise (exact),
  activations  the compiled step's temporary buffers: activations kept for the backward pass,
               gradients and workspace (XLA's CPU buffer assignment: an estimate of what the TPU or
               GPU compiler assigns; it fuses and schedules differently).
"""
import json
import math
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from vivit_cofinetune import logs
from vivit_cofinetune import sharding
from vivit_cofinetune import trainer_setup


def _shard_bytes(abstract_tree) -> int:
  """Bytes of one device's shards of every array of a tree of sharded ShapeDtypeStructs."""
  return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
             for leaf in jax.tree.leaves(abstract_tree))


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, task_name: str):
  """(compiled train step of `task_name`, its abstract state) for `mesh`, ahead of time."""
  setup = trainer_setup.build(config, mesh=mesh)
  group = [(task_name, 1.0)]
  trainable = jax.tree.map(lambda _: True, setup.abstract_state.params)
  step = setup.train_step(group, trainable)
  compiled = step.lower(setup.abstract_state, setup.train_batch_shapes(group),
                        setup.abstract_learning_rates(group)).compile()
  return compiled, setup.abstract_state


def memory_of(compiled, abstract_state) -> dict[str, int]:
  """Per-device bytes of a compiled train step: params, optimizer, activations (temporaries) and
  arguments (state plus batch)."""
  stats = compiled.memory_analysis()
  return dict(params=_shard_bytes(abstract_state.params),
              optimizer=_shard_bytes(abstract_state.opt_state),
              activations=int(stats.temp_size_in_bytes),
              arguments=int(stats.argument_size_in_bytes))


def estimate(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, task_name: str) -> dict:
  """memory_of the train step of `task_name` on `mesh`, and its compile time."""
  start = time.perf_counter()
  compiled, abstract = compile_train_step(config, mesh, task_name)
  return dict(memory_of(compiled, abstract), compile_s=round(time.perf_counter() - start, 1))


def trained_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """The tasks some phase of the schedule trains, in config order."""
  mixed = {name for phase in config.schedule.phases for name in phase['mixture']}
  return [name for name in config.tasks if name in mixed]


def _gib(num_bytes: int) -> str:
  return f'{num_bytes / 2**30:.2f} GiB'


def main(argv):
  del argv
  logs.quiet_library_logs()
  sizes = [int(size) for size in _MESH.value or ()]
  if len(sizes) != 3 or min(sizes) < 1:
    raise app.UsageError(f'--mesh={",".join(_MESH.value or ())}: expected data,fsdp,model, e.g. 4,8,1')
  num_devices = math.prod(sizes)
  # Emulated CPU devices, set before jax starts its backend.
  jax.config.update('jax_platforms', 'cpu')
  jax.config.update('jax_num_cpu_devices', num_devices)
  config = _CONFIG.value
  config.mesh = dict(zip(sharding.MESH_AXES, sizes))
  mesh = sharding.make_mesh(config.mesh)
  task_names = [_TASK.value] if _TASK.value else trained_tasks(config)
  results = {name: estimate(config, mesh, name) for name in task_names}
  if _JSON.value:
    print(json.dumps(dict(mesh=config.mesh.to_dict(), tasks=results)))
    return
  mesh_text = ' '.join(f'{axis}={size}' for axis, size in config.mesh.items())
  print(f'Per-device memory of each train step on mesh {mesh_text} ({num_devices} devices), '
        f'remat_policy={config.model.remat_policy!r}, dtype={config.model.dtype!r}:')
  print(f'{"task":<16}{"params":>14}{"optimizer":>14}{"activations":>14}{"sum":>14}')
  for name, result in results.items():
    total = result['params'] + result['optimizer'] + result['activations']
    print(f'{name:<16}' + ''.join(f'{_gib(value):>14}' for value in
                                  (result['params'], result['optimizer'], result['activations'],
                                   total)))
    print(f'{"":<16}' + ''.join(f'{value:>14}' for value in
                                (result['params'], result['optimizer'], result['activations'],
                                 total)) + '  bytes')


if __name__ == '__main__':
  # Flags only when run as a program: tests import this module's functions beside other tools,
  # and two modules defining --config in one process is an absl error.
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                            lock_config=False)
  _MESH = flags.DEFINE_list('mesh', None, 'data,fsdp,model sizes, e.g. 4,8,1.')
  _TASK = flags.DEFINE_string('task', None,
                              'Only this task (default: every task the schedule trains).')
  _JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of the table.')
  flags.mark_flags_as_required(['config', 'mesh'])
  app.run(main)
