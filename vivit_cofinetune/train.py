"""The co-finetuning loop: one shared ViViT backbone, one head per task, one task per step (or, in a
mixed-batch phase, every task of the phase at each step)."""
from collections.abc import Sequence
import functools
from typing import Any

from absl import logging
from etils import epath
import jax
from jax.experimental.compilation_cache import compilation_cache
import jax.numpy as jnp
import ml_collections
import numpy as np

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_checks
from vivit_cofinetune import evaluate
from vivit_cofinetune import logs
from vivit_cofinetune import optim
from vivit_cofinetune import preemption
from vivit_cofinetune import sharding
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.data import mixture
from vivit_cofinetune.data import pipeline


def make_train_step(backbone, task, optimizer, config: ml_collections.ConfigDict, trainable,
                    mixed: Sequence[tuple[Any, float]] = ()):
  """A step that updates the backbone and `task`'s head on one batch of that task.

  With `mixed` = ((task, loss weight), ...) the step trains all of them at once instead (a mixed
  batch, data/mixture.py): the batch is {task name: its batch}, the loss the weighted sum of theirs,
  the gradient clipped as one, and every task's head updated; `task` is then unused. The learning
  rate given is the backbone's; each head's is scaled by its task's learning_rate_factor (a single
  task's factor is applied by the caller, to the whole step).
  """
  weighted = list(mixed) or [(task, 1.0)]
  names = [weighted_task.name for weighted_task, _ in weighted]

  def train_step(state, batch, learning_rate):
    rng = jax.random.fold_in(jax.random.key(config.seed), state.step)
    batches = batch if mixed else {names[0]: batch}

    def loss_fn(params):
      total, metrics = 0.0, {}
      for index, (each, weight) in enumerate(weighted):
        # One dropout stream per task of the step; a single-task step keeps the stream it had.
        task_rng = jax.random.fold_in(rng, index) if mixed else rng
        backbone_rng, head_rng = jax.random.split(task_rng)
        task_batch = batches[each.name]
        tokens, cls_token = backbone.apply({'params': params['backbone']},
                                           each.model_input(task_batch['video']), train=True,
                                           rngs={'dropout': backbone_rng})
        logits = each.head.apply({'params': params['heads'][each.name]},
                                 *each.head_args(tokens, cls_token, task_batch), train=True,
                                 rngs={'dropout': head_rng})
        loss, metrics[each.name] = each.loss_and_metrics(logits, task_batch)
        total = total + weight * loss
      return total, metrics

    params = {'backbone': state.params['backbone'],
              'heads': {name: state.params['heads'][name] for name in names}}
    mask = {'backbone': trainable['backbone'],
            'heads': {name: trainable['heads'][name] for name in names}}
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = jax.tree.map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
    grads, grad_norm = optim.clip_by_global_norm(grads, config.optimizer.get('grad_clip_norm'))

    def update(part_params, part_grads, part_opt_state, part_mask, part_learning_rate):
      part_opt_state = optim.set_learning_rate(part_opt_state, part_learning_rate)
      updates, part_opt_state = optimizer.update(part_grads, part_opt_state, part_params)
      new_params = jax.tree.map(lambda p, u, m: p + u if m else p, part_params, updates, part_mask)
      return new_params, part_opt_state

    backbone_params, backbone_opt = update(params['backbone'], grads['backbone'],
                                           state.opt_state['backbone'], mask['backbone'],
                                           learning_rate)
    heads, head_opts = dict(state.params['heads']), dict(state.opt_state['heads'])
    for name in names:
      factor = config.tasks[name].get('learning_rate_factor', 1.0) if mixed else 1.0
      heads[name], head_opts[name] = update(params['heads'][name], grads['heads'][name],
                                            state.opt_state['heads'][name], mask['heads'][name],
                                            learning_rate * factor)
    new_state = state.replace(step=state.step + 1,
                              params={'backbone': backbone_params, 'heads': heads},
                              opt_state={'backbone': backbone_opt, 'heads': head_opts})
    if mixed:
      return new_state, {name: dict(metrics[name], grad_norm=grad_norm) for name in names}
    return new_state, dict(metrics[names[0]], grad_norm=grad_norm)

  return train_step


def jit_train_step(backbone, task, optimizer, config: ml_collections.ConfigDict, trainable,
                   state_shardings, mesh, rules, mixed: Sequence[tuple[Any, float]] = ()):
  """The task's (or a mixed batch's) train step, jitted with explicit shardings, the state donated,
  and traced with the mesh and logical rules in context (so the model's activation constraints
  apply)."""
  replicated = sharding.replicated(mesh)
  return sharding.jit(make_train_step(backbone, task, optimizer, config, trainable, mixed), mesh,
                      rules, in_shardings=(state_shardings, sharding.batch_sharding(mesh), replicated),
                      out_shardings=(state_shardings, replicated), donate_argnums=0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains every task of the config's schedule; returns the final eval metrics per task.

  On preemption (see preemption.py) it checkpoints the step every process agreed on and returns
  early, with the metrics of the last evaluation so far (if any).
  """
  workdir = checkpoint.resolve_path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)

  # Config, devices, mesh
  config_checks.validate_config(config, num_devices=jax.device_count(),
                             num_processes=jax.process_count(),
                             known_datasets=pipeline.known_datasets(config))
  _use_compilation_cache(workdir / 'compilation_cache' if config.get('compilation_cache', True)
                         else None)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config)
  writer = logs.make_writer(workdir)
  logging.info('Mesh %s over %d devices on %d processes', dict(mesh.shape), jax.device_count(),
               jax.process_count())

  # Tasks and schedule
  infos = tasks_lib.dataset_infos(config)
  tasks = tasks_lib.make_tasks(config, infos)
  schedule = mixture.task_schedule(
      config.schedule.phases, seed=config.seed,
      transfer_steps={n: t.get('transfer_steps', 0) for n, t in config.tasks.items()},
      train_sizes={n: info.num_train_examples for n, info in infos.items()})
  trained = [name for name in tasks if name in schedule.task_names]
  for name in set(tasks) - set(trained):
    logging.warning('config.tasks.%s is in no phase of config.schedule.phases: its head is '
                    'evaluated as initialised, never trained', name)

  # Model and state
  backbone = state_lib.make_backbone(config.model)
  optimizer = optim.make_optimizer(config.optimizer)
  abstract_state, state_shardings = state_lib.abstract_state(config, backbone, tasks, optimizer,
                                                             mesh, rules)
  manager = checkpoint.make_manager(workdir, config)
  restored = checkpoint.restore(manager, abstract_state, set_aside_unreadable=True)
  if restored:
    state, batches_consumed = restored
    logging.info('Resumed from step %d at data position %s', int(state.step), batches_consumed)
    if batches_consumed != schedule.batches_before(int(state.step)):
      logging.warning('The checkpoint read %s batches per task, but this config\'s schedule would '
                      'have read %s: was the schedule changed?', batches_consumed,
                      schedule.batches_before(int(state.step)))
  else:
    state = state_lib.initial_state(config, backbone, tasks, optimizer, state_shardings)
    batches_consumed = {}
  # A task the checkpoint does not know (added to the config since) starts at its first batch.
  batches_consumed = {name: batches_consumed.get(name, 0) for name in trained}
  if jax.process_index() == 0:
    (workdir / 'config.json').write_text(config.to_json_best_effort(indent=2) + '\n')
  start_step = int(state.step)
  trainable = optim.trainable_mask(state.params, config.get('init_from', {}).get('freeze', ()))

  # Steps: one compiled train step per task, and one per mixed-batch phase
  train_steps = {}
  for group_id in sorted(set(schedule.group_ids.tolist())):
    group = schedule.groups[group_id]
    mixed = [(tasks[name], weight) for name, weight in group] if len(group) > 1 else ()
    train_steps[group_id] = jit_train_step(backbone, tasks[group[0][0]], optimizer, config,
                                           trainable, state_shardings, mesh, rules, mixed)
  evaluator = evaluate.Evaluator(config, backbone, tasks, mesh, rules, state_shardings.params)

  # Input pipelines, resumed at the data position of the checkpoint
  iterators = {name: pipeline.train_iterator(config.tasks[name], data_dir=config.data_dir,
                                             seed=config.seed, start_batch=batches_consumed[name])
               for name in trained}

  # Loop
  total_steps = schedule.num_steps
  progress = logs.Progress(total_steps)
  compiled = set()
  learning_rate_at = functools.partial(optim.learning_rate_at, phases=config.schedule.phases,
                                       schedule=schedule, config=config.optimizer)
  save_clock = checkpoint.SaveClock(config.get('checkpoint_every_minutes'))
  results = {}
  # Each step's batch is read from its task's pipeline in schedule order and put on the devices
  # while the steps before it run; batches_consumed counts only the batches trained on.
  batches = sharding.prefetch_to_mesh((_host_batch(schedule.tasks_of_step(step), iterators)
                                       for step in range(start_step, total_steps)), mesh)
  for step in range(start_step, total_steps):
    names = schedule.tasks_of_step(step)
    batch = next(batches)
    # A mixed step scales each head's learning rate inside (make_train_step); a single task's
    # factor applies to the whole step.
    factor = config.tasks[names[0]].get('learning_rate_factor', 1.0) if len(names) == 1 else 1.0
    group_id = int(schedule.group_ids[step])
    with progress.timed(first_call=group_id not in compiled):  # compiling is left out of the ETA
      state, metrics = train_steps[group_id](state, batch,
                                             np.float32(learning_rate_at(step) * factor))
    compiled.add(group_id)
    for name in names:
      batches_consumed[name] += 1
    done = step + 1
    progress.step_done(metrics if len(names) > 1 else {names[0]: metrics},
                       sum(config.tasks[name].batch_size for name in names))

    if done % config.log_every == 0 or done == total_steps:
      writer.write_scalars(done, dict(progress.report(done),
                                      **{'train/learning_rate': learning_rate_at(step)}))
    preempted = preemption.reached(done, manager)
    if not preempted and (done % config.eval_every == 0 or done == total_steps):
      with progress.paused():
        results, images = evaluator.evaluate(state.params, step=done, output_dir=workdir / 'eval')
      writer.write_scalars(done, evaluate.flatten_for_summary(results))
      writer.write_images(done, images)
    # The clock is asked at log steps only: there the hosts already wait for the devices.
    if (done % config.checkpoint_every == 0 or done == total_steps or preempted
        or (done % config.log_every == 0 and save_clock.due())):
      progress.check_finite(done)  # log_every need not divide checkpoint_every
      with progress.paused():
        checkpoint.save(manager, done, state, batches_consumed)
      save_clock.restart()
    if preempted:
      manager.wait_until_finished()
      writer.flush()
      logging.info('Preempted: saved checkpoint at step %d; rerun the same command to resume.', done)
      return results

  if not results:  # Resumed at the very end: evaluate what was restored.
    results, _ = evaluator.evaluate(state.params, step=total_steps, output_dir=workdir / 'eval')
  manager.wait_until_finished()
  writer.flush()
  evaluate.write_results(workdir, results)
  return results


def _host_batch(names: Sequence[str], iterators: dict):
  """The next batch of a step: its task's, or {task: batch} for a mixed batch."""
  if len(names) == 1:
    return next(iterators[names[0]])
  return {name: next(iterators[name]) for name in names}


def _use_compilation_cache(directory: epath.Path | None) -> None:
  """Keeps every compiled program in `directory` (None: nowhere), so a rerun (a resume after
  preemption, the next run of a config) loads its steps instead of compiling them again."""
  directory = directory and str(directory)
  if directory == jax.config.jax_compilation_cache_dir:
    return
  jax.config.update('jax_compilation_cache_dir', directory)
  # By default only programs that took a second to compile are kept; the eval steps and the small
  # programs around the loop are worth keeping too.
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  # jax opens the cache at its first compilation and keeps it for the process: another directory
  # (the next train_and_evaluate of a process, as in the tests) needs it opened again.
  compilation_cache.reset_cache()
