"""The compiled train and eval steps (no TensorFlow, no writers: benches and tools import them).

A train step trains a group of tasks, ((task, loss weight), ...): one task in most steps, every task
of a mixed-batch phase (schedule.py). Its batch is {task name: that task's batch}; its loss the
weighted sum of the tasks' losses, clipped as one gradient; the backbone and each head of the group
are updated with their own optimizer state at the learning rates schedule.part_learning_rates gives.
A task whose `trains_backbone` is False trains its head on the backbone's features without sending
its gradient into the backbone; a step whose tasks all are so leaves the backbone and its optimizer
state exactly as they were.

With `config.optimizer.backbone_state='per_task'` (state.py) each task of the step updates the
backbone with its own optimizer state from its own (clipped) backbone gradient, at its head's rate
times its share of the step's loss weight (so the rates add up to the backbone rate of a shared
state), and the updates are summed; a single-task step is the shared step with that task's state.
"""
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vivit_cofinetune import optim
from vivit_cofinetune import sharding
from vivit_cofinetune.tasks import base

Group = Sequence[tuple[base.Task, float]]


def make_train_step(backbone: nn.Module, group: Group, optimizer: optax.GradientTransformation,
                    trainable: Mapping[str, Any], *, seed: int,
                    grad_clip_norm: float | None, backbone_state: str = 'shared') -> Callable:
  """(state, {task: batch}, learning rates) -> (state, {task: metrics}) for the tasks of `group`.

  `trainable` is the params' tree of bools (False: frozen by config.init_from.freeze);
  `backbone_state` is config.optimizer.backbone_state.
  """
  names = [task.name for task, _ in group]
  trains_backbone = any(task.trains_backbone for task, _ in group)
  per_task = backbone_state == 'per_task'
  total_weight = sum(weight for _, weight in group)

  def train_step(state, batches, learning_rates):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def loss_fn(params):
      total, metrics = 0.0, {}
      for index, (task, weight) in enumerate(group):
        # One dropout stream per task of the step; a single-task step keeps the step's stream.
        task_rng = jax.random.fold_in(rng, index) if len(group) > 1 else rng
        # Per-task state: each task reads its own reference to the backbone, so that the gradient
        # holds each task's backbone gradient apart.
        backbone_params = params['backbone'][task.name] if per_task else params['backbone']
        logits = task.forward(backbone, {'backbone': backbone_params,
                                         'head': params['heads'][task.name]},
                              batches[task.name], train=True, rng=task_rng).logits
        loss, metrics[task.name] = task.loss_and_metrics(logits, batches[task.name])
        total = total + weight * loss
      return total, metrics

    def backbone_copies(tree):
      return {name: tree for name in names} if per_task else tree

    params = {'backbone': backbone_copies(state.params['backbone']),
              'heads': {name: state.params['heads'][name] for name in names}}
    mask = {'backbone': backbone_copies(trainable['backbone']),
            'heads': {name: trainable['heads'][name] for name in names}}
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.tree.map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
    grads, grad_norm = optim.clip_by_global_norm(grads, grad_clip_norm)

    def update(part_params, part_grads, part_opt_state, part_learning_rate):
      part_opt_state = optim.set_learning_rate(part_opt_state, part_learning_rate)
      return optimizer.update(part_grads, part_opt_state, part_params)

    def apply(part_params, updates, part_mask):
      return jax.tree.map(lambda p, u, m: p + u if m else p, part_params, updates, part_mask)

    backbone_params, backbone_opt = state.params['backbone'], state.opt_state['backbone']
    if trains_backbone and per_task:
      backbone_opt, summed = dict(backbone_opt), None
      for task, weight in group:
        if not task.trains_backbone:
          continue  # its state keeps its moments and step count
        updates, backbone_opt[task.name] = update(
            backbone_params, grads['backbone'][task.name], backbone_opt[task.name],
            learning_rates['heads'][task.name] * weight / total_weight)
        summed = updates if summed is None else jax.tree.map(jnp.add, summed, updates)
      backbone_params = apply(backbone_params, summed, trainable['backbone'])
    elif trains_backbone:
      updates, backbone_opt = update(backbone_params, grads['backbone'], backbone_opt,
                                     learning_rates['backbone'])
      backbone_params = apply(backbone_params, updates, trainable['backbone'])
    heads, head_opts = dict(state.params['heads']), dict(state.opt_state['heads'])
    for name in names:
      updates, head_opts[name] = update(params['heads'][name], grads['heads'][name],
                                        state.opt_state['heads'][name],
                                        learning_rates['heads'][name])
      heads[name] = apply(params['heads'][name], updates, mask['heads'][name])
    new_state = state.replace(step=state.step + 1,
                              params={'backbone': backbone_params, 'heads': heads},
                              opt_state={'backbone': backbone_opt, 'heads': head_opts})
    return new_state, {name: dict(metrics[name], grad_norm=grad_norm) for name in names}

  return train_step


def jit_train_step(train_step: Callable, state_shardings: Any, mesh: jax.sharding.Mesh,
                   rules: Any) -> Callable:
  """The train step jitted with explicit shardings, the state donated, and traced with the mesh and
  logical rules in context (so the model's activation constraints apply)."""
  replicated = sharding.replicated(mesh)
  return sharding.jit(train_step, mesh, rules,
                      in_shardings=(state_shardings, sharding.batch_sharding(mesh), replicated),
                      out_shardings=(state_shardings, replicated), donate_argnums=0)


def make_eval_step(backbone: nn.Module, task: base.Task) -> Callable:
  """(params, batch) -> the task's per-example eval outputs."""

  def eval_step(params, batch):
    task_params = {'backbone': params['backbone'], 'head': params['heads'][task.name]}
    logits = task.forward(backbone, task_params, batch, train=False).logits
    return task.eval_outputs(logits, batch)

  return eval_step


def jit_eval_step(eval_step: Callable, params_shardings: Any, mesh: jax.sharding.Mesh,
                  rules: Any) -> Callable:
  batch_sharding = sharding.batch_sharding(mesh)
  return sharding.jit(eval_step, mesh, rules, in_shardings=(params_shardings, batch_sharding),
                      out_shardings=batch_sharding)
