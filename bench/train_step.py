"""Times the trainer's compiled train step on synthetic batches; reports clips/s, model FLOP/s and MFU.

  python bench/train_step.py --config=configs/demo_cofinetune.py [--task=NAME] [--steps=20]
      [--batch_size=B] [--json]
  python bench/train_step.py --config=configs/ava_kinetics_cofinetune.py:size=B --task=ava \
      --batch_size=1 --steps=2

Builds the backbone, heads, optimizer, sharded state and jitted step with the trainer's own functions
(train.make_train_step, state.abstract_state / initial_state) and feeds one random batch of the
task's shapes, already on the devices, so the time is the step alone (no input pipeline). The batch's
host-to-device copy, which the trainer pays every step, is timed on its own (put_batch_s).
Model FLOP/s = 3 x analytic forward FLOPs of the backbone (models/vivit.flops_per_clip) x batch / step
time. The matmul peak is the fastest of a large jitted matmul in the model's dtype, timed in the same
process before and after the steps, so every MFU is a ratio of one run: mfu (median step /
peak), mfu_best (fastest step / peak) and mfu_paired (median over steps of the step's rate over the
mean rate of matmuls over up to 2 s right after it), the last two steadier on a shared machine;
mfu_paired is meaningful only when steps last about as long as that window or less.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
import jax
import ml_collections
import numpy as np

from vivit_cofinetune import config_lib
from vivit_cofinetune import optim
from vivit_cofinetune import sharding
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune import train
from vivit_cofinetune.models import vivit

# XLA reports every backend compilation under this event; counting them shows recompiles.
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def synthetic_batch(task_config: ml_collections.ConfigDict, batch_size: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A random training batch with the keys, shapes and dtypes the pipeline gives this task's kind."""
  clip_shape = state_lib.input_shape(task_config)
  batch = {'video': rng.standard_normal((batch_size, *clip_shape), dtype=np.float32),
           'mask': np.ones(batch_size, bool)}
  if task_config.kind == 'classification':
    batch['label'] = rng.integers(0, task_config.num_classes, batch_size, dtype=np.int32)
    return batch
  boxes = task_config.max_boxes
  corner = rng.uniform(0.0, 0.5, (batch_size, boxes, 2))
  size = rng.uniform(0.2, 0.5, (batch_size, boxes, 2))
  batch['boxes'] = np.concatenate([corner, corner + size], axis=-1).astype(np.float32)
  batch['box_mask'] = np.ones((batch_size, boxes), bool)
  batch['labels'] = (rng.random((batch_size, boxes, task_config.num_classes)) < 0.1).astype(np.float32)
  return batch


def matmul_timer(dtype: str, size: int):
  """A function that runs a jitted [size, size] x [size, size] matmul in `dtype`, returning seconds."""
  left, right = (jax.random.normal(jax.random.key(seed), (size, size), dtype) for seed in (1, 2))
  matmul = jax.jit(lambda a, b: a @ b)
  matmul(left, right).block_until_ready()

  def seconds() -> float:
    start = time.perf_counter()
    matmul(left, right).block_until_ready()
    return time.perf_counter() - start

  return seconds


def _matmul_window(time_matmul, seconds: float) -> float:
  """Mean seconds per matmul over repeats that last at least `seconds` in all."""
  times = [time_matmul()]
  while sum(times) < seconds:
    times.append(time_matmul())
  return sum(times) / len(times)


def peak_memory() -> tuple[str, int]:
  """(what was measured, bytes): the device's peak allocation if it reports one, else host peak RSS."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return 'device peak_bytes_in_use', int(stats['peak_bytes_in_use'])
  return 'host peak RSS (ru_maxrss)', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(config: ml_collections.ConfigDict, task_name: str, steps: int) -> dict:
  """Compiles and times `steps` train steps of `task_name`; returns the measurements."""
  mesh = sharding.make_mesh(config.mesh)
  # Class names and counts only matter to evaluation; not reading them keeps the bench off the data.
  tasks = tasks_lib.make_tasks(config)
  backbone = state_lib.make_backbone(config.model)
  optimizer = optim.make_optimizer(config.optimizer)
  rules = sharding.logical_rules(config)
  _, state_shardings = state_lib.abstract_state(config, backbone, tasks, optimizer, mesh, rules)
  state = state_lib.initial_state(config, backbone, tasks, optimizer, state_shardings)
  trainable = optim.trainable_mask(state.params, config.get('init_from', {}).get('freeze', ()))
  train_step = train.jit_train_step(backbone, tasks[task_name], optimizer, config, trainable,
                                    state_shardings, mesh, rules)

  task_config = config.tasks[task_name]
  batch_size = task_config.batch_size
  host_batch = synthetic_batch(task_config, batch_size, np.random.default_rng(0))
  put_times = []
  for _ in range(3):
    start = time.perf_counter()
    batch = jax.block_until_ready(sharding.put_batch(host_batch, mesh))
    put_times.append(time.perf_counter() - start)
  learning_rate = np.float32(config.optimizer.base_learning_rate)

  model_dtype = config.model.get('dtype', 'float32')
  matmul_size = 2048 if jax.default_backend() == 'cpu' else 8192
  time_matmul = matmul_timer(model_dtype, matmul_size)
  matmul_times = [time_matmul() for _ in range(5)]

  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **_: compiles.append(duration) if event == _COMPILE_EVENT else None)
  start = time.perf_counter()
  state, metrics = train_step(state, batch, learning_rate)
  jax.block_until_ready((state, metrics))
  first_call = time.perf_counter() - start
  compiles_first_call = len(compiles)

  step_times, dispatch_times, paired_matmul_times = [], [], []
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = train_step(state, batch, learning_rate)
    dispatched = time.perf_counter()
    jax.block_until_ready((state, metrics))
    step_times.append(time.perf_counter() - start)
    dispatch_times.append(dispatched - start)
    # Right after the step and for about as long (up to 2 s), so both see about the same load.
    paired_matmul_times.append(_matmul_window(time_matmul, min(step_times[-1], 2.0)))
  compiles_while_timing = len(compiles) - compiles_first_call
  # Below 1 on a CPU backend when other processes took some of the cores.
  cpu_share = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start) / os.cpu_count()
  matmul_times += [time_matmul() for _ in range(5)]

  step_time = statistics.median(step_times)
  clip_shape = state_lib.input_shape(task_config)
  flops_per_clip = vivit.flops_per_clip(config.model, clip_shape[:3])
  step_flops = 3 * flops_per_clip * batch_size
  model_flops = step_flops / step_time
  matmul_flops = 2 * matmul_size**3
  matmul_peak = matmul_flops / min(matmul_times)
  memory_kind, memory_bytes = peak_memory()
  return {
      'task': task_name, 'kind': task_config.kind, 'batch_size': batch_size,
      'clip_shape': list(clip_shape), 'model_dtype': model_dtype, 'steps': steps,
      'backbone_params': vivit.count_params(config.model, clip_shape[:3]),
      'total_params': sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state.params)),
      'compile_s': first_call - step_time,
      'compiles_first_call': compiles_first_call,
      'backend_compile_s': sum(compiles[:compiles_first_call]),
      'compiles_while_timing': compiles_while_timing,
      'step_s_median': step_time, 'step_s_min': min(step_times), 'step_s_max': max(step_times),
      'dispatch_s_median': statistics.median(dispatch_times),
      'put_batch_s_median': statistics.median(put_times),
      'clips_per_s': batch_size / step_time,
      'forward_flops_per_clip': flops_per_clip,
      'model_flops_per_s': model_flops,
      'matmul_peak_flops_per_s': matmul_peak,
      'matmul_s_median': statistics.median(matmul_times),
      'matmul_size': matmul_size,
      'mfu': model_flops / matmul_peak,
      # Fastest step over fastest matmul: the least disturbed ratio on a machine shared with others.
      'mfu_best': step_flops / min(step_times) / matmul_peak,
      # Each step against the matmul timed right after it: load that comes and goes falls on both.
      'mfu_paired': statistics.median(
          step_flops / step / (matmul_flops / matmul)
          for step, matmul in zip(step_times, paired_matmul_times)),
      'memory_measure': memory_kind, 'peak_memory_bytes': memory_bytes,
      'loss': float(metrics['loss']) if 'loss' in metrics else None,
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})',
      'host': f'{platform.machine()}, {os.cpu_count()} CPUs, '
              f'load average {os.getloadavg()[0]:.2f} at end',
      'host_cpu_share_while_timing': cpu_share,
  }


def _table(result: dict) -> str:
  rows = [
      ('task', f'{result["task"]} ({result["kind"]}), batch {result["batch_size"]} x '
               f'{result["clip_shape"]}, {result["model_dtype"]}'),
      ('params', f'{result["backbone_params"]:,} backbone, {result["total_params"]:,} with heads'),
      ('compile', f'{result["compile_s"]:.2f} s first call less a step, of which XLA '
                  f'{result["backend_compile_s"]:.2f} s ({result["compiles_first_call"]} compiles; '
                  f'{result["compiles_while_timing"]} while timing)'),
      ('step', f'{result["step_s_median"] * 1e3:.1f} ms median of {result["steps"]} '
               f'(min {result["step_s_min"] * 1e3:.1f}, max {result["step_s_max"] * 1e3:.1f}); '
               f'dispatch {result["dispatch_s_median"] * 1e3:.2f} ms'),
      ('put_batch', f'{result["put_batch_s_median"] * 1e3:.2f} ms '
                    f'(host -> device, paid every step in training)'),
      ('clips/s', f'{result["clips_per_s"]:.2f}'),
      ('model FLOP/s', f'{result["model_flops_per_s"] / 1e9:.2f} G (3 x '
                       f'{result["forward_flops_per_clip"] / 1e9:.3f} GFLOP/clip forward)'),
      ('matmul peak', f'{result["matmul_peak_flops_per_s"] / 1e9:.2f} G ({result["matmul_size"]}^2 '
                      f'{result["model_dtype"]}, fastest; median '
                      f'{2 * result["matmul_size"]**3 / result["matmul_s_median"] / 1e9:.2f} G)'),
      ('MFU', f'{result["mfu"]:.1%} median step, {result["mfu_best"]:.1%} fastest step, '
              f'{result["mfu_paired"]:.1%} paired with the matmul after each step'),
      ('memory', f'{result["peak_memory_bytes"] / 2**20:.0f} MiB ({result["memory_measure"]})'),
      ('device', result['device']),
      ('host', f'{result["host"]}; this process used {result["host_cpu_share_while_timing"]:.0%} '
               f'of the CPUs while timing'),
  ]
  return '\n'.join(f'{name:<14}{value}' for name, value in rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/demo_cofinetune.py', help='path/to/config.py[:args]')
  parser.add_argument('--task', default=None, help='task of config.tasks (default: the first)')
  parser.add_argument('--steps', type=int, default=20, help='timed steps after the compiling one')
  parser.add_argument('--batch_size', type=int, default=None, help="overrides the task's batch_size")
  parser.add_argument('--json', action='store_true', help='print one JSON object instead of a table')
  args = parser.parse_args()
  config = config_lib.load_config_file(args.config)
  # Step time does not depend on the weights: random ones keep the bench off converted checkpoints
  # (the paper configs start from one by default).
  if 'init_from' in config:
    config.init_from.path = ''
  task_name = args.task or next(iter(config.tasks))
  if task_name not in config.tasks:
    parser.error(f'--task={task_name!r}: expected one of {sorted(config.tasks)} ({args.config})')
  if args.batch_size is not None:
    config.tasks[task_name].batch_size = args.batch_size
  if config.tasks[task_name].batch_size % jax.device_count():
    parser.error(f'batch size {config.tasks[task_name].batch_size} must be a multiple of the '
                 f'device count ({jax.device_count()})')
  result = dict(run(config, task_name, args.steps), config=args.config)
  print(json.dumps(result) if args.json else _table(result))


if __name__ == '__main__':
  main()
