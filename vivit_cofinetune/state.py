"""The train state: params {'backbone', 'heads': {task}} and one optimizer state per part.

`config.optimizer.backbone_state` lays out the backbone's optimizer state: 'shared' (the default) is
one state that every task's backbone gradient updates; 'per_task' is one state per task,
{task: state}, so each task's backbone update is normalised by the moments of its own gradients
(with AdamW, a task whose gradients are small then still takes full-sized steps, instead of steps
shrunk by the second moment of the tasks with large gradients). It costs one more copy of the
backbone's optimizer state per task; steps.py says how the per-task updates combine.

Its set-up is shared by training, --mode=eval and the tools: the abstract state with the shardings
the logical-axis rules give (nothing allocated), and a fresh state built on the mesh.
"""
from collections.abc import Mapping

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_lib
from vivit_cofinetune import sharding
from vivit_cofinetune.models import vivit


BACKBONE_STATES = ('shared', 'per_task')


def backbone_state_layout(optimizer_config: ml_collections.ConfigDict) -> str:
  """config.optimizer.backbone_state, checked: 'shared' or 'per_task'."""
  layout = optimizer_config.get('backbone_state', 'shared')
  if layout not in BACKBONE_STATES:
    raise config_lib.ConfigError(f'config.optimizer.backbone_state={layout!r}: expected one of '
                                 f'{list(BACKBONE_STATES)}')
  return layout


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: dict


def input_shape(task_config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """(T, H, W, 3) of a task's clips."""
  crop = task_config.input.crop_size
  return (task_config.input.num_frames, crop, crop, 3)


def init_params(backbone: nn.Module, tasks: Mapping, clip_shape, rng: jax.Array) -> dict:
  """Fresh params, still carrying their logical-axis boxes (for sharding)."""
  backbone_rng, head_rng = jax.random.split(rng)
  video = jnp.zeros((1, *clip_shape), jnp.float32)
  backbone_params = backbone.init(backbone_rng, video, train=False)['params']
  tokens, cls_token = backbone.apply({'params': backbone_params}, video, train=False)
  heads = {}
  for index, (name, task) in enumerate(tasks.items()):
    # Each kind gives what its head reads besides the backbone's outputs (boxes, for instance).
    heads[name] = task.head.init(jax.random.fold_in(head_rng, index),
                                 *task.head_args(tokens, cls_token, task.init_batch()),
                                 train=False)['params']
  return {'backbone': backbone_params, 'heads': heads}


def init_state(params: dict, optimizer: optax.GradientTransformation,
               backbone_state: str = 'shared') -> TrainState:
  """The state at step 0; `backbone_state` is config.optimizer.backbone_state (module docstring)."""
  if backbone_state == 'per_task':
    backbone_opt_state = {name: optimizer.init(params['backbone']) for name in params['heads']}
  else:
    backbone_opt_state = optimizer.init(params['backbone'])
  opt_state = {'backbone': backbone_opt_state,
               'heads': {name: optimizer.init(head) for name, head in params['heads'].items()}}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def make_backbone(model_config: ml_collections.ConfigDict) -> nn.Module:
  return vivit.ViViT(**model_config)


def _clip_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  shapes = {name: input_shape(task) for name, task in config.tasks.items()}
  if len(set(shapes.values())) > 1:
    raise config_lib.ConfigError(
        f'config.tasks.*.input: all tasks must share num_frames and crop_size (the backbone has one '
        f'token grid); got {shapes}')
  return next(iter(shapes.values()))


def _boxed_state_fn(config, backbone, tasks, optimizer):
  """rng -> a fresh state whose params still carry their logical-axis boxes."""
  clip_shape = _clip_shape(config)
  layout = backbone_state_layout(config.optimizer)

  def boxed_state(rng):
    params = init_params(backbone, tasks, clip_shape, rng)
    return init_state(params, optimizer, layout)

  return boxed_state


def abstract_state(config, backbone, tasks, optimizer, mesh, rules):
  """(abstract state with shardings, state shardings) without allocating anything."""
  boxed = jax.eval_shape(_boxed_state_fn(config, backbone, tasks, optimizer), jax.random.key(0))
  shardings = sharding.state_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                          nn.meta.unbox(boxed), shardings)
  return abstract, shardings


def initial_state(config, backbone, tasks, optimizer, shardings):
  """A fresh state on the mesh, with `config.init_from` params loaded where given."""
  boxed_state = _boxed_state_fn(config, backbone, tasks, optimizer)
  state = jax.jit(lambda rng: nn.meta.unbox(boxed_state(rng)),
                  out_shardings=shardings)(jax.random.key(config.seed))
  init_from = config.get('init_from', {})
  if not init_from.get('path'):
    return state
  loaded = checkpoint.read_params(init_from.path)
  params, kept_fresh = checkpoint.merge_params(
      state.params, loaded, reinit=init_from.get('reinit', ()),
      source=f'config.init_from.path={init_from.path}')
  logging.info('init_from %s: %d params kept fresh: %s', init_from.path, len(kept_fresh),
               ', '.join(kept_fresh))
  # Loaded values are full numpy arrays on every host; each device takes its shard of them.
  params = jax.tree.map(
      lambda value, s: value if isinstance(value, jax.Array) else jax.make_array_from_callback(
          value.shape, s, lambda index: value[index]),
      params, shardings.params)
  # The optimizer states are built under jit too, so they land on the mesh as the params do.
  layout = backbone_state_layout(config.optimizer)
  return jax.jit(lambda p: init_state(p, optimizer, layout), out_shardings=shardings)(params)
