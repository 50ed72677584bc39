"""The train state: params {'backbone', 'heads': {task}} and one optimizer state per part."""
from collections.abc import Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vivit_cofinetune.models import vivit


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: dict


def input_shape(task_config: ml_collections.ConfigDict) -> tuple[int, int, int, int]:
  """(T, H, W, 3) of a task's clips."""
  crop = task_config.input.crop_size
  return (task_config.input.num_frames, crop, crop, 3)


def init_params(backbone: nn.Module, tasks: Mapping, clip_shape, rng: jax.Array,
                max_boxes: int = 1) -> dict:
  """Fresh params, still carrying their logical-axis boxes (for sharding)."""
  backbone_rng, head_rng = jax.random.split(rng)
  video = jnp.zeros((1, *clip_shape), jnp.float32)
  backbone_params = backbone.init(backbone_rng, video, train=False)['params']
  tokens, cls_token = backbone.apply({'params': backbone_params}, video, train=False)
  dummy_batch = {'boxes': jnp.zeros((1, max_boxes, 4), jnp.float32)}
  heads = {}
  for index, (name, task) in enumerate(tasks.items()):
    heads[name] = task.head.init(jax.random.fold_in(head_rng, index),
                                 *task.head_args(tokens, cls_token, dummy_batch),
                                 train=False)['params']
  return {'backbone': backbone_params, 'heads': heads}


def init_state(params: dict, optimizer: optax.GradientTransformation) -> TrainState:
  opt_state = {'backbone': optimizer.init(params['backbone']),
               'heads': {name: optimizer.init(head) for name, head in params['heads'].items()}}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def make_backbone(model_config: ml_collections.ConfigDict) -> nn.Module:
  return vivit.ViViT(**model_config)
