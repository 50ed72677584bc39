"""Our train step against a Scenic-style ViViT step on the same batch, taking turns in one process.

  python bench/versus_scenic.py [--model=B/16x2] [--frames=8] [--resolution=112] [--batch_size=4]
      [--remat=dots_saveable] [--num_layers=N] [--rounds=8] [--profile] [--json]

Ours is the trainer's own step as `bench/train_step.py --model=...` builds it (spatio-temporal
ViViT, the paper's Kinetics-700 task, SGD with momentum, clipping at 1), with the layers scanned (the
default) and unrolled. The Scenic-style step is written here the way Scenic's ViViT builds its
spatio-temporal model: a strided `nn.Conv` tubelet embedding, a CLS token and learned positions, and
unrolled pre-LN blocks of flax's `nn.MultiHeadDotProductAttention` and a Dense-GELU-Dense MLP, at the
same widths, with softmax cross-entropy and optax's SGD with momentum after clipping the gradient's
global norm to 1. Each round runs the fastest of three 2048^2 matmuls and then one step of each, so
load that comes and goes on a shared machine falls on all of them; each step's rate is reported over
that peak (`mfu`, medians over rounds) and over the Scenic-style step's (`versus_scenic`: above 1
is faster). With --profile, two more steps of each are traced (seconds per step by kind of op).
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bench import op_profile
from bench import train_step as train_step_bench
from vivit_cofinetune import sharding
from vivit_cofinetune.models import flops
from vivit_cofinetune.models import vivit


def our_step(args: argparse.Namespace, scan: bool):
  """(run one step and wait for it, its host batch) for the trainer's own step."""
  config = train_step_bench.flag_config(argparse.Namespace(
      model=args.model, variant='spatio_temporal', dtype='float32', remat=args.remat, scan=scan,
      attention='xla', task='classification', frames=args.frames, resolution=args.resolution,
      batch_size=args.batch_size, optimizer='sgd'))
  config.model.num_layers = args.num_layers or config.model.num_layers
  step, state, tasks, mesh = train_step_bench.build(config, 'classification')
  host_batch = train_step_bench.synthetic_batch(tasks['classification'], args.batch_size,
                                                np.random.default_rng(0))
  batch = sharding.put_batch({'classification': host_batch}, mesh)
  rate = np.float32(config.optimizer.base_learning_rate)
  learning_rate = {'backbone': rate, 'heads': {'classification': rate}}
  step = step.lower(state, batch, learning_rate).compile()
  holder = [state]

  def run():
    holder[0], metrics = step(holder[0], batch, learning_rate)
    jax.block_until_ready((holder[0], metrics))

  return run, host_batch, flops.num_params(state.params)


class _ScenicStyleBlock(nn.Module):
  num_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, inputs):
    x = nn.LayerNorm()(inputs)
    x = nn.MultiHeadDotProductAttention(num_heads=self.num_heads,
                                        kernel_init=nn.initializers.xavier_uniform())(x, x)
    x = x + inputs
    y = nn.LayerNorm()(x)
    dense = lambda features: nn.Dense(features, kernel_init=nn.initializers.xavier_uniform(),
                                      bias_init=nn.initializers.normal(stddev=1e-6))
    y = dense(inputs.shape[-1])(nn.gelu(dense(self.mlp_dim)(y)))
    return y + x


class _ScenicStyleViViT(nn.Module):
  model: ml_collections.ConfigDict
  num_classes: int

  @nn.compact
  def __call__(self, video):
    width = self.model.hidden_size
    patch = tuple(self.model.patch_size)
    x = nn.Conv(width, patch, strides=patch, padding='VALID')(video)
    x = x.reshape(x.shape[0], -1, width)
    cls = self.param('cls', nn.initializers.zeros, (1, 1, width))
    x = jnp.concatenate([jnp.tile(cls, [x.shape[0], 1, 1]), x], axis=1)
    x = x + self.param('pos_embedding', nn.initializers.normal(stddev=0.02), (1, *x.shape[1:]))
    for index in range(self.model.num_layers):
      x = _ScenicStyleBlock(self.model.num_heads, self.model.mlp_dim, name=f'block_{index}')(x)
    x = nn.LayerNorm()(x)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)(x[:, 0])


def _model_config(args: argparse.Namespace) -> ml_collections.ConfigDict:
  overrides = {'num_layers': args.num_layers} if args.num_layers else {}
  return vivit.vivit_config(args.model, **overrides)


def scenic_style_step(args: argparse.Namespace, host_batch: dict):
  """Run one step and wait for it: the Scenic-style model, loss and optimizer on the same batch."""
  model = _ScenicStyleViViT(_model_config(args), num_classes=700)
  video = jnp.asarray(host_batch['video'], jnp.float32) / 255.0
  labels = jnp.asarray(host_batch['label'])
  params = model.init(jax.random.key(0), video)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))

  def step(params, opt_state, video, labels):
    def loss_fn(params):
      logits = model.apply(params, video)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  holder = [params, optimizer.init(params)]
  step = jax.jit(step, donate_argnums=(0, 1)).lower(*holder, video, labels).compile()

  def run():
    holder[0], holder[1], loss = step(*holder, video, labels)
    jax.block_until_ready(loss)

  return run, flops.num_params(params)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='B/16x2')
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--resolution', type=int, default=112)
  parser.add_argument('--batch_size', type=int, default=4)
  parser.add_argument('--remat', default='dots_saveable', choices=tuple(train_step_bench.REMAT),
                      help="our step's remat policy (the Scenic-style step saves everything)")
  parser.add_argument('--num_layers', type=int, default=None, help="default: the model's")
  parser.add_argument('--rounds', type=int, default=8)
  parser.add_argument('--profile', action='store_true', help='also seconds per step by kind of op')
  parser.add_argument('--json', action='store_true', help='print one JSON object instead of text')
  args = parser.parse_args()

  ours_scanned, host_batch, our_params = our_step(args, scan=True)
  scenic_style, scenic_params = scenic_style_step(args, host_batch)
  steps = {'ours_scanned': ours_scanned, 'ours_unrolled': our_step(args, scan=False)[0],
           'scenic_style': scenic_style}
  time_matmul = train_step_bench.matmul_timer('float32', 2048)
  for run in steps.values():  # the first call after compiling is slower
    run()
  seconds = {name: [] for name in steps}
  peaks = []
  for _ in range(args.rounds):
    peaks.append(2 * 2048**3 / min(time_matmul() for _ in range(3)))
    for name, run in steps.items():
      start = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - start)
  shape = (args.frames, args.resolution, args.resolution)
  step_flops = 3 * flops.flops_per_clip(_model_config(args), shape) * args.batch_size
  peak = statistics.median(peaks)
  result = {
      'model': args.model, 'clip_shape': [*shape, 3], 'batch_size': args.batch_size,
      'rounds': args.rounds, 'remat': args.remat, 'matmul_peak_flops_per_s': peak,
      # The same model: equal counts (backbone and Kinetics-700 head) keep the comparison fair.
      'params': {'ours': our_params, 'scenic_style': scenic_params},
      'step_s_median': {name: statistics.median(times) for name, times in seconds.items()},
      'mfu': {name: step_flops / statistics.median(times) / peak
              for name, times in seconds.items()},
      # Per round, so that both steps of a ratio saw the same load.
      'versus_scenic': {name: statistics.median(
          scenic / ours for scenic, ours in zip(seconds['scenic_style'], times))
                        for name, times in seconds.items() if name != 'scenic_style'},
      'device': f'{jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})',
      'host': f'{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at end',
  }
  if args.profile:
    result['op_seconds_per_step'] = {name: op_profile.seconds_by_kind(run, steps=2)
                                     for name, run in steps.items()}
  if args.json:
    print(json.dumps(result))
    return
  for name in steps:
    versus = result['versus_scenic'].get(name)
    print(f'{name:<14} {result["step_s_median"][name] * 1e3:9.1f} ms  mfu '
          f'{result["mfu"][name]:.3f}' + (f'  {versus:.3f}x the Scenic-style step' if versus else ''))
    for kind, kind_seconds in result.get('op_seconds_per_step', {}).get(name, {}).items():
      print(f'{"":<16}{kind_seconds * 1e3:9.1f} ms {kind}')
  print(f'{result["device"]}; {result["host"]}')


if __name__ == '__main__':
  main()
