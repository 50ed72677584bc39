"""ViViT-B/16x2 and L/16x2 train steps on one GPU: largest batch that fits, 'xla' and 'cudnn' attention.

  python bench/gpu_step.py --out=/tmp/gpu_step.jsonl            # on the GPU machine
  python bench/gpu_step.py --dry_run                            # prints the bench commands only
  python bench/gpu_step.py --models=Ti/16x2 --frames=2 --resolution=32 --attention=xla  # CPU check

For each model and attention implementation: `bench/train_step.py` runs at batch 1 and 2 give the
compiled step's per-device memory; the batch predicted to fill MEMORY_FRACTION of the device is then
timed, and on failure (out of memory) the batch is cut by a quarter until one runs. Each run is its
own process, so a failed allocation cannot leave the next one short. Prints one JSON line per
setting: step time, MFU against the chip's dense bfloat16 peak (DENSE_BF16_PEAK; else the bench's
measured matmul peak), peak device memory.
"""
import argparse
import json
import math
import os
import subprocess
import sys

# Dense (no sparsity) bfloat16 tensor-core peaks, FLOP/s, from the vendors' data sheets (SXM parts).
DENSE_BF16_PEAK = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'B200': 2250e12}
# Of the allocator's limit, what the predicted batch may plan to use (fragmentation, workspace).
MEMORY_FRACTION = 0.85
# Every run is a child process with the device to itself: let its allocator take nearly all of it.
CHILD_ENV = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION='0.95')


def bench_command(args: argparse.Namespace, model: str, attention: str, batch_size: int,
                  steps: int) -> list[str]:
  return [sys.executable, 'bench/train_step.py', f'--model={model}', '--variant=spatio_temporal',
          f'--frames={args.frames}', f'--resolution={args.resolution}', f'--batch_size={batch_size}',
          f'--dtype={args.dtype}', f'--remat={args.remat}', f'--attention={attention}',
          '--task=classification', f'--steps={steps}', '--json']


def run_bench(command: list[str]) -> dict | None:
  """The bench's JSON, or None when it failed (out of memory, or the kernel is not supported)."""
  done = subprocess.run(command, capture_output=True, text=True, check=False, env=CHILD_ENV)
  if done.returncode:
    print(f'failed ({done.returncode}): {" ".join(command[1:])}\n  {done.stderr.strip()[-400:]}',
          file=sys.stderr)
    return None
  return json.loads(done.stdout.strip().splitlines()[-1])


def device_memory() -> int:
  """The allocator's limit in a child process, bytes (0 where the backend does not say).

  Asked in a child: jax in this process would hold device memory the runs need.
  """
  code = ('import jax; print(int((jax.local_devices()[0].memory_stats() or {})'
          '.get("bytes_limit", 0)))')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                        env=CHILD_ENV)
  return int(done.stdout.strip().splitlines()[-1])


def largest_batch(one: dict, two: dict, memory_bytes: int) -> int:
  """Batch whose planned memory fills MEMORY_FRACTION of memory, from runs at batch 1 and 2.

  Temporaries grow by (two - one) per clip; the rest (state, gradients) is fixed.
  """
  planned = lambda run: (run['compiled_temp_bytes'] + run['compiled_argument_bytes']
                         + run['compiled_output_bytes'])
  per_clip = max(planned(two) - planned(one), 1)
  return max(1, int((memory_bytes * MEMORY_FRACTION - planned(one)) // per_clip) + 1)


def dense_peak(device: str) -> float | None:
  return next((peak for name, peak in DENSE_BF16_PEAK.items() if name in device), None)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--models', default='B/16x2,L/16x2')
  parser.add_argument('--attention', default='xla,cudnn')
  parser.add_argument('--frames', type=int, default=32)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--remat', default='none')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--batch_size', type=int, default=None, help='fixed batch: no search')
  parser.add_argument('--out', default=None, help='also append the JSON lines to this file')
  parser.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
  args = parser.parse_args()
  for model in args.models.split(','):
    for attention in args.attention.split(','):
      if args.dry_run:
        sizing = [] if args.batch_size else [(1, 1), (2, 1)]
        for batch, steps in sizing + [(args.batch_size or '<predicted>', args.steps)]:
          print(' '.join(bench_command(args, model, attention, batch, steps)[1:]))
        continue
      batch = args.batch_size
      if batch is None:
        probes = [run_bench(bench_command(args, model, attention, size, 1)) for size in (1, 2)]
        memory = device_memory()
        if None in probes or not memory:
          print(f'{model} {attention}: a sizing run failed or the device does not report its '
                'memory (give --batch_size); skipped', file=sys.stderr)
          continue
        batch = largest_batch(*probes, memory)
      result = None
      while result is None and batch >= 1:
        result = run_bench(bench_command(args, model, attention, batch, args.steps))
        if result is None:
          batch = math.floor(batch * 0.75) if args.batch_size is None else 0
      if result is None:
        continue
      peak = dense_peak(result['device']) or result['matmul_peak_flops_per_s']
      line = dict(
          model=model, attention=attention, frames=args.frames, resolution=args.resolution,
          dtype=args.dtype, batch_size=result['batch_size'], step_s=result['step_s_median'],
          clips_per_s=result['clips_per_s'], model_flops_per_s=result['model_flops_per_s'],
          peak_flops_per_s=peak, peak_is_dense_bf16=dense_peak(result['device']) is not None,
          mfu=result['model_flops_per_s'] / peak, mfu_vs_measured_matmul=result['mfu'],
          peak_memory_bytes=result['peak_memory_bytes'], memory_measure=result['memory_measure'],
          compiled_temp_bytes=result['compiled_temp_bytes'], device=result['device'])
      print(json.dumps(line), flush=True)
      if args.out:
        with open(args.out, 'a') as out:
          out.write(json.dumps(line) + '\n')


if __name__ == '__main__':
  main()
