"""The one set-up of a run's model side: mesh, logical rules, tasks, backbone, optimizer and the
abstract state with its shardings. The trainer, --mode=eval, the memory estimate and the benches all
build it here, and take their compiled steps from it (steps.py).

No TensorFlow: dataset facts come in as `infos` (data/pipeline.dataset_infos reads them); without
them the tasks know only their config, which is enough to compile.
"""
from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from vivit_cofinetune import optim
from vivit_cofinetune import sharding
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import steps
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.tasks import base


@dataclasses.dataclass(frozen=True)
class TrainerSetup:
  """What every part of a run shares; the state itself is built or restored by the caller."""
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  rules: Any
  tasks: dict[str, base.Task]
  backbone: nn.Module
  optimizer: optax.GradientTransformation
  abstract_state: Any  # state_lib.TrainState of sharded ShapeDtypeStructs
  state_shardings: Any

  def initial_state(self) -> state_lib.TrainState:
    """A fresh state on the mesh, with config.init_from's params loaded where given."""
    return state_lib.initial_state(self.config, self.backbone, self.tasks, self.optimizer,
                                   self.state_shardings)

  def trainable(self) -> Any:
    """The params' tree of bools: False where config.init_from.freeze freezes them."""
    return optim.trainable_mask(self.abstract_state.params,
                                self.config.get('init_from', {}).get('freeze', ()))

  def train_step(self, group: Sequence[tuple[str, float]], trainable: Any = None) -> Callable:
    """The jitted step training `group` ((task name, loss weight), ...)."""
    step = steps.make_train_step(
        self.backbone, [(self.tasks[name], weight) for name, weight in group], self.optimizer,
        self.trainable() if trainable is None else trainable, seed=self.config.seed,
        grad_clip_norm=self.config.optimizer.get('grad_clip_norm'),
        backbone_state=state_lib.backbone_state_layout(self.config.optimizer))
    return steps.jit_train_step(step, self.state_shardings, self.mesh, self.rules)

  def eval_step(self, name: str) -> Callable:
    """The jitted eval step of task `name`."""
    return steps.jit_eval_step(steps.make_eval_step(self.backbone, self.tasks[name]),
                               self.state_shardings.params, self.mesh, self.rules)

  def train_batch_shapes(self, group: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """{task: {key: sharded ShapeDtypeStruct}} of a global batch of `group` (compiling without
    data), and the learning rates' abstract values."""
    batch_sharding = sharding.batch_sharding(self.mesh)
    return {name: {key: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=batch_sharding)
                   for key, value in self.tasks[name].train_batch_shapes(
                       self.config.tasks[name].batch_size).items()}
            for name, _ in group}

  def abstract_learning_rates(self, group: Sequence[tuple[str, float]]) -> dict[str, Any]:
    replicated = sharding.replicated(self.mesh)
    rate = jax.ShapeDtypeStruct((), np.float32, sharding=replicated)
    return {'backbone': rate, 'heads': {name: rate for name, _ in group}}


def build(config: ml_collections.ConfigDict, infos: Mapping[str, base.DatasetInfo] | None = None,
          mesh: jax.sharding.Mesh | None = None) -> TrainerSetup:
  """The set-up of `config` on `mesh` (default: config.mesh over all devices), nothing allocated."""
  mesh = mesh or sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config)
  tasks = tasks_lib.make_tasks(config, infos)
  backbone = state_lib.make_backbone(config.model)
  optimizer = optim.make_optimizer(config.optimizer)
  abstract_state, state_shardings = state_lib.abstract_state(config, backbone, tasks, optimizer,
                                                             mesh, rules)
  return TrainerSetup(config=config, mesh=mesh, rules=rules, tasks=tasks, backbone=backbone,
                      optimizer=optimizer, abstract_state=abstract_state,
                      state_shardings=state_shardings)
