"""Times the trainer's compiled train step on synthetic batches; reports clips/s, model FLOP/s and MFU.

  python bench/train_step.py --config=configs/demo_cofinetune.py [--task=NAME] [--steps=20]
      [--batch_size=B] [--json]
  python bench/train_step.py --config=configs/ava_kinetics_cofinetune.py:size=B --task=ava \
      --batch_size=1 --steps=2
  python bench/train_step.py --model=B/16x2 --variant=spatio_temporal --frames=8 --resolution=112 \
      --batch_size=4 --dtype=float32 --optimizer=sgd --remat=none --scan=True \
      --task=classification --steps=5 --json

Without --config, the model flags build a one-task config: that ViViT, the paper's Kinetics-700
(classification) or AVA (localisation) task at the flags' clip size and its trainer settings (SGD
with momentum, gradient clipping at 1). The step is compiled ahead of time; the JSON gives its
memory analysis (compiled_temp_bytes: activations, gradients and workspace; argument and output
bytes), per device.

Builds the backbone, heads, optimizer, sharded state and jitted step with the trainer's own functions
(trainer_setup.build and its train_step) and feeds one random batch of the
task's shapes, already on the devices, so the time is the step alone (no input pipeline). The batch's
host-to-device copy, which the trainer pays every step, is timed on its own (put_batch_s).
Model FLOP/s = 3 x analytic forward FLOPs of the backbone (models/flops.flops_per_clip) x batch / step
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
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Run as a script, only bench/ is on the path; its sibling modules are imported as `bench.*`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import jax
import ml_collections
import numpy as np

from bench import op_profile
from configs import common
from vivit_cofinetune import config_lib
from vivit_cofinetune import sharding
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.models import attention
from vivit_cofinetune.models import flops
from vivit_cofinetune.models import vivit
from vivit_cofinetune.tasks import base as tasks_base

# XLA reports every backend compilation under this event; counting them shows recompiles.
_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def synthetic_batch(task: tasks_base.Task, batch_size: int,
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A random batch of the task's own training shapes and dtypes (`Task.train_batch_shapes`).

  Only shapes and dtypes matter to the step's time: pixels and floats (boxes, multi-hot labels) are
  uniform, integer labels below num_classes, masks all true.
  """
  batch = {}
  for key, spec in task.train_batch_shapes(batch_size).items():
    dtype = np.dtype(spec.dtype)
    if dtype == np.bool_:
      batch[key] = np.ones(spec.shape, bool)
    elif dtype == np.uint8:
      batch[key] = rng.integers(0, 256, spec.shape, dtype=np.uint8)
    elif np.issubdtype(dtype, np.integer):
      batch[key] = rng.integers(0, task.num_classes, spec.shape).astype(dtype)
    else:
      batch[key] = rng.uniform(0.0, 1.0, spec.shape).astype(dtype)
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


def build(config: ml_collections.ConfigDict, task_name: str):
  """(the trainer's jitted step for `task_name`, its initial state, the tasks, the mesh)."""
  # Class names and counts only matter to evaluation; not reading them keeps the bench off the data.
  setup = trainer_setup.build(config)
  return setup.train_step([(task_name, 1.0)]), setup.initial_state(), setup.tasks, setup.mesh


def run(config: ml_collections.ConfigDict, task_name: str, steps: int, profile: bool = False) -> dict:
  """Compiles and times `steps` train steps of `task_name`; returns the measurements (with
  `profile`, also the seconds per step by kind of op, from a trace of two more steps)."""
  train_step, state, tasks, mesh = build(config, task_name)
  task_config = config.tasks[task_name]
  batch_size = task_config.batch_size
  host_batch = {task_name: synthetic_batch(tasks[task_name], batch_size, np.random.default_rng(0))}
  put_times = []
  for _ in range(3):
    start = time.perf_counter()
    batch = jax.block_until_ready(sharding.put_batch(host_batch, mesh))
    put_times.append(time.perf_counter() - start)
  rate = np.float32(config.optimizer.base_learning_rate)
  learning_rate = {'backbone': rate, 'heads': {task_name: rate}}

  model_dtype = config.model.get('dtype', 'float32')
  matmul_size = 2048 if jax.default_backend() == 'cpu' else 8192
  time_matmul = matmul_timer(model_dtype, matmul_size)
  matmul_times = [time_matmul() for _ in range(5)]

  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **_: compiles.append(duration) if event == _COMPILE_EVENT else None)
  # Compiled ahead of time, so its memory analysis is that of the very program timed below.
  start = time.perf_counter()
  train_step = train_step.lower(state, batch, learning_rate).compile()
  compile_s = time.perf_counter() - start
  compiles_first_call = len(compiles)
  memory = train_step.memory_analysis()
  state, metrics = jax.block_until_ready(train_step(state, batch, learning_rate))

  step_times, dispatch_times, paired_matmul_times, cpu_times, page_faults = [], [], [], [], []
  cpu_start, wall_start = time.process_time(), time.perf_counter()
  for _ in range(steps):
    start, cpu_before = time.perf_counter(), time.process_time()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    state, metrics = train_step(state, batch, learning_rate)
    dispatched = time.perf_counter()
    jax.block_until_ready((state, metrics))
    step_times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_before)
    page_faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    dispatch_times.append(dispatched - start)
    # Right after the step and for about as long (up to 2 s), so both see about the same load.
    paired_matmul_times.append(_matmul_window(time_matmul, min(step_times[-1], 2.0)))
  # Below 1 on a CPU backend when other processes took some of the cores.
  cpu_share = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start) / os.cpu_count()
  matmul_times += [time_matmul() for _ in range(5)]
  op_seconds = {}
  if profile:
    def run_step():
      nonlocal state, metrics
      state, metrics = jax.block_until_ready(train_step(state, batch, learning_rate))
    op_seconds = op_profile.seconds_by_kind(run_step, steps=2)

  step_time = statistics.median(step_times)
  clip_shape = state_lib.input_shape(task_config)
  flops_per_clip = flops.flops_per_clip(config.model, clip_shape[:3])
  step_flops = 3 * flops_per_clip * batch_size
  model_flops = step_flops / step_time
  matmul_flops = 2 * matmul_size**3
  matmul_peak = matmul_flops / min(matmul_times)
  memory_kind, memory_bytes = peak_memory()
  return {
      'task': task_name, 'kind': task_config.kind, 'batch_size': batch_size,
      'clip_shape': list(clip_shape), 'model_dtype': model_dtype, 'steps': steps,
      'backbone_params': flops.count_params(config.model, clip_shape[:3]),
      'total_params': flops.num_params(state.params),
      'compile_s': compile_s,
      'compiles_first_call': compiles_first_call,
      'backend_compile_s': sum(compiles[:compiles_first_call]),
      'step_s_median': step_time, 'step_s_min': min(step_times), 'step_s_max': max(step_times),
      'dispatch_s_median': statistics.median(dispatch_times),
      # Host CPU seconds (all threads) and minor page faults of the process per step: on the CPU
      # backend XLA maps the step's temporaries afresh every step, and each 4 KiB page faults once.
      'cpu_s_per_step_median': statistics.median(cpu_times),
      'minor_page_faults_per_step_median': int(statistics.median(page_faults)),
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
      # Per device, as XLA's buffer assignment planned them for this step.
      'compiled_temp_bytes': int(memory.temp_size_in_bytes),
      'compiled_argument_bytes': int(memory.argument_size_in_bytes),
      'compiled_output_bytes': int(memory.output_size_in_bytes),
      'memory_measure': memory_kind, 'peak_memory_bytes': memory_bytes,
      'loss': float(metrics[task_name]['loss']),  # the step returns {task: metrics}
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})',
      'host': f'{platform.machine()}, {os.cpu_count()} CPUs, '
              f'load average {os.getloadavg()[0]:.2f} at end',
      'host_cpu_share_while_timing': cpu_share,
      **({'op_seconds_per_step': op_seconds} if profile else {}),
  }


def _table(result: dict) -> str:
  rows = [
      ('task', f'{result["task"]} ({result["kind"]}), batch {result["batch_size"]} x '
               f'{result["clip_shape"]}, {result["model_dtype"]}'),
      ('params', f'{result["backbone_params"]:,} backbone, {result["total_params"]:,} with heads'),
      ('compile', f'{result["compile_s"]:.2f} s lowering and compiling, of which XLA '
                  f'{result["backend_compile_s"]:.2f} s ({result["compiles_first_call"]} compiles)'),
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
      ('memory', f'{result["peak_memory_bytes"] / 2**20:.0f} MiB ({result["memory_measure"]}); '
                 f'compiled: {result["compiled_temp_bytes"] / 2**20:.0f} MiB temporaries, '
                 f'{result["compiled_argument_bytes"] / 2**20:.0f} MiB arguments, '
                 f'{result["compiled_output_bytes"] / 2**20:.0f} MiB outputs'),
      ('device', result['device']),
      ('host', f'{result["host"]}; this process used {result["host_cpu_share_while_timing"]:.0%} '
               f'of the CPUs while timing, {result["cpu_s_per_step_median"]:.2f} CPU s and '
               f'{result["minor_page_faults_per_step_median"]:,} minor page faults a step'),
  ]
  op_seconds = result.get('op_seconds_per_step', {})
  rows += [('ops' if index == 0 else '', f'{seconds * 1e3:.1f} ms a step '
                                          f'({seconds / sum(op_seconds.values()):.0%}) {kind}')
           for index, (kind, seconds) in enumerate(op_seconds.items())]
  return '\n'.join(f'{name:<14}{value}' for name, value in rows)


# --remat: shorthands, or any of the model's remat_policy values by name.
REMAT = {'none': 'none', 'dots': 'dots_with_no_batch_dims_saveable',
         **{policy: policy for policy in vivit.REMAT_POLICIES}}


def flag_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  """A one-task config from the model flags: the paper's task of kind --task (AVA or Kinetics-700
  head and loss) and trainer settings (SGD with momentum, clipping), resized to the flags' clips."""
  config = ml_collections.ConfigDict(dict(seed=0))
  config.model = vivit.vivit_config(
      args.model, variant=args.variant, dtype=args.dtype, remat_policy=REMAT[args.remat],
      scan_layers=args.scan, attention_implementation=args.attention)
  # --task -> the paper's task of that kind.
  paper_tasks = {'localisation': lambda: common.ava_task(transfer_steps=0),
                 'classification': lambda: common.classification_task('kinetics700',
                                                                      transfer_steps=0)}
  task = paper_tasks[args.task]()
  if 'pooling' in task.get('head', {}):
    task.head.pooling = config.model.classifier  # 'token' (CLS) or 'mean' (variants without one)
  task.input.num_frames, task.input.crop_size = args.frames, args.resolution
  task.batch_size = args.batch_size
  config.tasks = {args.task: task}
  common.trainer_settings(config)
  config.optimizer.name = args.optimizer
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default=None,
                      help='path/to/config.py[:args] (default: configs/demo_cofinetune.py, or the '
                           'model flags when --model is given)')
  parser.add_argument('--task', default=None,
                      help='task of config.tasks (default: the first); with --model: '
                           'classification or localisation')
  parser.add_argument('--steps', type=int, default=20, help='timed steps after the compiling one')
  parser.add_argument('--batch_size', type=int, default=None, help="overrides the task's batch_size")
  parser.add_argument('--json', action='store_true', help='print one JSON object instead of a table')
  parser.add_argument('--profile', action='store_true',
                      help='also trace two steps and report seconds per step by kind of op '
                           '(op_seconds_per_step: matmuls, scan writes and reads, copies, ...)')
  model = parser.add_argument_group('model flags (instead of --config)')
  model.add_argument('--model', default=None, help="vivit_config name, e.g. 'B/16x2'")
  model.add_argument('--variant', default='spatio_temporal', choices=vivit.VARIANTS)
  model.add_argument('--frames', type=int, default=8)
  model.add_argument('--resolution', type=int, default=112)
  model.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  model.add_argument('--optimizer', default='sgd', choices=('sgd', 'adamw'))
  model.add_argument('--remat', default='dots_saveable', choices=tuple(REMAT),
                     help="the model's remat_policy ('dots': dots_with_no_batch_dims_saveable); "
                          "default: the model's own default")
  model.add_argument('--scan', type=lambda v: v.lower() in ('true', '1'), default=True,
                     help='True|False: scan the layers (compile time flat in depth)')
  model.add_argument('--attention', default='xla', choices=attention.ATTENTION_IMPLEMENTATIONS)
  args = parser.parse_args()
  if args.model and args.config:
    parser.error('--model builds its own config: give --config or --model, not both')
  if args.model:
    args.task = args.task or 'classification'
    if args.task not in ('classification', 'localisation'):
      parser.error(f'--task={args.task!r}: with --model, expected classification or localisation')
    args.batch_size = args.batch_size or 4
    config = flag_config(args)
  else:
    args.config = args.config or 'configs/demo_cofinetune.py'
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
  source = dict(config=args.config) if args.config else dict(
      model=args.model, variant=args.variant, remat=args.remat, scan=args.scan,
      optimizer=args.optimizer, attention=args.attention)
  result = dict(run(config, task_name, args.steps, args.profile), **source)
  print(json.dumps(result) if args.json else _table(result))


if __name__ == '__main__':
  main()
