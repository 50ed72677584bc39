"""Evaluation of every task, inside the training loop and standalone (--mode=eval on a checkpoint)."""
from collections.abc import Mapping
import json
import math

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_checks
from vivit_cofinetune import logs
from vivit_cofinetune import sharding
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.data import pipeline


class Evaluator:
  """Runs every task's eval split through the model and aggregates the task's metrics."""

  def __init__(self, setup: trainer_setup.TrainerSetup):
    self.config, self.tasks, self.mesh = setup.config, setup.tasks, setup.mesh
    self.inputs = {name: pipeline.eval_input(setup.config.tasks[name],
                                             data_dir=setup.config.data_dir)
                   for name in setup.tasks}
    self.steps = {name: setup.eval_step(name) for name in setup.tasks}

  def evaluate(self, params, *, step: int, output_dir: epath.Path | None
               ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Returns (metrics by task, TensorBoard images by 'task/name')."""
    results, images = {}, {}
    for name, task in self.tasks.items():
      eval_input = self.inputs[name]
      outputs, examples = [], None
      for batch in eval_input.batches():
        outputs.append(sharding.gather_to_host(self.steps[name](params, sharding.put_batch(
            batch, self.mesh))))
        if examples is None:
          examples = self._first_examples(batch, outputs[0])
      outputs = {key: np.concatenate([out[key] for out in outputs]) for key in outputs[0]}
      task_dir = output_dir / f'step_{step}' if output_dir and jax.process_index() == 0 else None
      results[name] = task.evaluate(outputs, video_ids=eval_input.video_ids, output_dir=task_dir)
      for key, image in task.pictures(examples, results[name]).items():
        images[f'{name}/{key}'] = image
      logging.info('eval %s at step %d: %s', name, step, _headline(results[name]))
    return results, images

  @staticmethod
  def _first_examples(batch, outputs, count: int = 4) -> dict[str, np.ndarray]:
    """The first real examples of an eval batch with their centre frames (uint8 pixels) in [0, 1].

    The first rows of the gathered outputs are this host's first rows (process 0 comes first).
    """
    count = min(count, int(batch['mask'].sum()))
    video = batch['video'][:count]
    frames = video[:, video.shape[1] // 2] / 255.0
    return dict({key: value[:count] for key, value in outputs.items()}, keyframe=frames)


def _headline(metrics: Mapping[str, float]) -> str:
  return ', '.join(f'{k}={v:.4f}' for k, v in metrics.items() if '/' not in k)


def flatten_for_summary(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
  return {f'eval/{task}/{key}': value for task, metrics in results.items()
          for key, value in metrics.items()}


def results_for_json(results: Mapping[str, Mapping[str, float]]) -> dict:
  """JSON has no NaN: an undefined metric (e.g. a frequency group without classes) becomes null."""
  return {task: {key: None if math.isnan(value) else value for key, value in metrics.items()}
          for task, metrics in results.items()}


def write_results(workdir: epath.Path, results: Mapping[str, Mapping[str, float]]) -> None:
  """Writes WORKDIR/eval_results.json and prints each task's headline metrics next to chance."""
  if jax.process_index() != 0:
    return
  path = workdir / 'eval_results.json'
  path.write_text(json.dumps(results_for_json(results), indent=2, sort_keys=True) + '\n')
  lines = [f'{"task":<24}{"metric":<24}{"value":>10}{"chance":>10}']
  for name, metrics in results.items():
    for key, value in metrics.items():
      if '/' in key or key.startswith('chance') or key == 'num_videos':
        continue
      chance = metrics.get(f'chance_{key}')
      chance_text = f'{chance:>10.4f}' if chance is not None else f'{"":>10}'
      lines.append(f'{name:<24}{key:<24}{value:>10.4f}{chance_text}')
  print('\n'.join(lines) + f'\nWrote {path}', flush=True)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """--mode=eval: evaluates the latest checkpoint of `workdir` on every task."""
  workdir = checkpoint.resolve_path(workdir)
  config_checks.validate_config(config, num_devices=jax.device_count(),
                             num_processes=jax.process_count(),
                             known_datasets=pipeline.known_datasets(config))
  setup = trainer_setup.build(config, pipeline.dataset_infos(config))
  manager = checkpoint.make_manager(workdir, config, read_only=True)
  restored = checkpoint.restore(manager, setup.abstract_state)
  if restored is None:
    raise checkpoint.NoCheckpointError(
        f'--workdir={workdir}: no checkpoint under {workdir / "checkpoints"}')
  state, _ = restored
  step = int(state.step)
  results, images = Evaluator(setup).evaluate(state.params, step=step,
                                             output_dir=workdir / 'eval')
  writer = logs.make_writer(workdir)
  writer.write_scalars(step, flatten_for_summary(results))
  writer.write_images(step, images)
  writer.flush()
  write_results(workdir, results)
  return results
