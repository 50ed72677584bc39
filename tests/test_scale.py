"""One config on 1 device, 8 emulated devices and 2 processes; checkpoints restore onto other meshes;
per-device memory of the compiled step under fsdp and tensor parallelism.

Jobs with several devices run in a subprocess (this file run as a script, or vivit_cofinetune.main):
XLA_FLAGS=--xla_force_host_platform_device_count must be set before jax is imported.
"""
import csv
import functools
import json
import math
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_lib
from vivit_cofinetune import param_paths
from vivit_cofinetune import sharding
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import train
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.tools import estimate_memory

pytestmark = pytest.mark.slow
REPO = pathlib.Path(__file__).parent.parent
CONFIG_FILE = f'{REPO}/configs/demo_cofinetune.py:steps=4'
# The demo shrunk for tests; every global batch (8) splits over 8 devices and over 2 hosts x 2 devices.
OVERRIDES = {
    'tasks.synthetic_loc.dataset.name': 'synthetic_actions_loc/tiny',
    'tasks.synthetic_cls.dataset.name': 'synthetic_actions_cls/tiny',
    'tasks.synthetic_loc.batch_size': 8, 'tasks.synthetic_cls.batch_size': 8,
    'tasks.synthetic_loc.eval_batch_size': 8, 'tasks.synthetic_cls.eval_batch_size': 8,
    # 8 heads (of 8 dims): heads split over model=8.
    'model.num_layers': 2, 'model.num_heads': 8, 'optimizer.warmup_steps': 2,
    'log_every': 2, 'eval_every': 4, 'checkpoint_every': 2,
}
FINAL_STEP, MIDWAY_STEP = 4, 2
# Each on 8 devices: data parallel, and all three axes at once (data, fully sharded and tensor
# parallel). Fully sharded alone and tensor parallel alone are compiled for their memory below; their
# training runs were cut to keep the suite's time (each axis already splits in the 2,2,2 run).
MESHES = {'8,1,1': dict(data=8, fsdp=1, model=1), '2,2,2': dict(data=2, fsdp=2, model=2)}
RESUMED_ON_8 = 'resumed on 8,1,1'
# Compiled for their memory: one device alone, and each axis alone over 8 devices.
MEMORY_MESHES = {'1': dict(data=1, fsdp=1, model=1), '8,1,1': dict(data=8, fsdp=1, model=1),
                 '1,8,1': dict(data=1, fsdp=8, model=1), '1,1,8': dict(data=1, fsdp=1, model=8)}
# What DEFAULT_RULES should do to each logical axis on the mesh (written out here, not imported).
EXPECTED_MESH_AXIS = {'embed': 'fsdp', 'mlp': 'model', 'heads': 'model'}
# Training losses and eval metrics on another mesh: float32 summation order again (eval metrics are
# computed from logits that differ by ~1e-6, far from any ranking tie on these sets).
LOSS_ATOL, METRIC_ATOL = 1e-5, 1e-4
# Same params on another mesh differ only by float32 summation order (the batch mean over 8 shards,
# the fsdp all-gathers). Measured after 4 AdamW steps: at most 1.4e-6, always on the attention key
# bias, whose true gradient is zero (softmax ignores it): Adam normalises its round-off gradient, so
# its tiny value (~3e-7) is itself noise. Elsewhere Adam turns a relative gradient error of ~1e-6
# into an update error of ~lr * 1e-6 per step.
PARAMS_ATOL = 1e-5
SUBPROCESS_TIMEOUT_S = 600


def scale_config(data_dir: str | pathlib.Path, mesh: dict):
  config = config_lib.load_config_file(CONFIG_FILE)
  config.data_dir = str(data_dir)
  for dotted, value in OVERRIDES.items():
    *parents, field = dotted.split('.')
    functools.reduce(getattr, parents, config)[field] = value
  config.mesh = mesh
  return config


def _flat(tree) -> dict[str, np.ndarray]:
  return param_paths.flatten(tree)


def logged_scalars(workdir: pathlib.Path, prefix: str = 'train/') -> dict[str, float]:
  """'TAG@STEP' -> value of every scalar the run wrote to TensorBoard under `prefix`."""
  scalars = {}
  for path in sorted(workdir.glob('events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        if value.tag.startswith(prefix) and '/loss' in value.tag:
          scalars[f'{value.tag}@{event.step}'] = float(tf.make_ndarray(value.tensor))
  return scalars


def saved_params(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """Params of checkpoint `step` as numpy, read without any mesh (whatever topology wrote them)."""
  return _flat(checkpoint.read_params(workdir, step))


def run_job(data_dir: str, workdir: str, mesh: dict) -> dict:
  """Trains (resuming from the workdir's latest checkpoint if any) on `mesh` over this process' devices.

  Before training, writes the params restored onto the mesh to WORKDIR/restored_params.npz; after
  it, returns each param's logical axes, mesh PartitionSpec and the shape of one device's shard,
  as restored from the final checkpoint.
  """
  workdir = pathlib.Path(workdir)
  config = scale_config(data_dir, mesh)
  setup = trainer_setup.build(config, pipeline.dataset_infos(config))
  backbone, tasks, abstract = setup.backbone, setup.tasks, setup.abstract_state

  def restore_onto_mesh():
    manager = checkpoint.make_manager(workdir, config, read_only=True)
    return checkpoint.restore(manager, abstract)

  report = {'restored_step': None}
  if (workdir / 'checkpoints').is_dir():
    state, _ = restore_onto_mesh()
    report['restored_step'] = int(state.step)
    np.savez(workdir / 'restored_params.npz', **_flat(sharding.gather_to_host(state.params)))
  report['results'] = train.train_and_evaluate(config, str(workdir))

  state, _ = restore_onto_mesh()
  clip_shape = state_lib.input_shape(config.tasks.synthetic_loc)
  boxed = jax.eval_shape(lambda rng: state_lib.init_params(backbone, tasks, clip_shape, rng),
                         jax.random.key(0))
  logical = _flat(nn.get_partition_spec(boxed))
  report['params'] = {
      name: {'logical': list(logical[name]), 'spec': list(value.sharding.spec),
             'shape': list(value.shape), 'shard_shape': list(value.addressable_shards[0].data.shape)}
      for name, value in _flat(state.params).items()}
  return report


def compiled_memory(meshes: dict[str, dict]) -> dict[str, dict]:
  """Per mesh: estimate_memory's per-device bytes of the classification step, and the number of
  elements per device of each forward attention projection and MLP hidden activation (from the
  compiled HLO). Mesh '1' is this process' first device alone."""
  config = scale_config('unused', {})
  reports = {}
  for name, mesh_config in meshes.items():
    config.mesh = mesh_config
    devices = jax.devices()[:math.prod(mesh_config.values())]
    mesh = sharding.make_mesh(mesh_config, devices)
    compiled, abstract = estimate_memory.compile_train_step(config, mesh, 'synthetic_cls')
    report = estimate_memory.memory_of(compiled, abstract)
    report['elements'] = _forward_elements(compiled.as_text())
    reports[name] = report
  return reports


def _forward_elements(hlo: str) -> dict[str, list[int]]:
  """Elements per device of the forward dots of attention/{query,key,value} and mlp/hidden."""
  found = {}
  for line in hlo.splitlines():
    match = re.match(r'\s*(?:ROOT )?%\S+ = \w+\[([0-9,]*)\]\S* (dot|fusion)\(.*op_name="([^"]*)"',
                     line)
    if not match or 'transpose(' in match.group(3):  # transpose(...) is the backward pass
      continue
    for part in ('attention/query', 'attention/key', 'attention/value', 'mlp/hidden'):
      if match.group(3).endswith(f'{part}/dot_general'):
        found.setdefault(part, []).append(math.prod(int(d) for d in match.group(1).split(',')))
  return found


def in_subprocess(num_devices: int, function: str, *args, timeout_s: int = SUBPROCESS_TIMEOUT_S):
  """tests/test_scale.py's `function(*args)` in a fresh process with `num_devices` CPU devices,
  importing this checkout's code (whatever copy of the package is installed)."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={num_devices}',
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  completed = subprocess.run(
      [sys.executable, __file__, function, json.dumps(args)], cwd=REPO,
      env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
  assert completed.returncode == 0, completed.stderr[-5000:]
  return json.loads(completed.stdout.strip().splitlines()[-1])


def eight_device_jobs(data_dir: str, jobs: list, memory_meshes: dict[str, dict]) -> dict:
  """In this process (run with 8 devices): run_job for each (workdir, mesh) in turn, then
  compiled_memory of `memory_meshes`."""
  return {'runs': [run_job(data_dir, workdir, mesh) for workdir, mesh in jobs],
          'memory': compiled_memory(memory_meshes)}


def assert_params_close(actual: dict, expected: dict, atol: float):
  assert actual.keys() == expected.keys()
  for name, value in expected.items():
    np.testing.assert_allclose(actual[name], value, rtol=0, atol=atol, err_msg=name)


def copy_without_final_checkpoint(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
  """A run killed after its mid-way checkpoint: only checkpoints/MIDWAY_STEP survives."""
  shutil.copytree(source / 'checkpoints', target / 'checkpoints')
  shutil.rmtree(target / 'checkpoints' / str(FINAL_STEP))
  return target


@pytest.fixture(scope='module')
def single_device_job(data_dir, tmp_path_factory):
  """The reference: the config trained from scratch on this process' single CPU device."""
  assert jax.device_count() == 1
  workdir = tmp_path_factory.mktemp('single_device')
  report = run_job(str(data_dir), str(workdir), dict(data=-1, fsdp=1, model=1))
  return workdir, report


@pytest.fixture(scope='module')
def single_device(single_device_job):
  return single_device_job[0]


@pytest.fixture(scope='module')
def eight_devices(data_dir, single_device, tmp_path_factory):
  """One process with 8 devices (after the data and the 1-device run exist) runs the config from
  scratch on each of MESHES, resumes the 1-device run from its mid-way checkpoint on data=8 (the
  8,1,1 step, compiled once, serves both), and compiles the step on MEMORY_MESHES:
  ({job name: (workdir, report)}, compiled_memory's report)."""
  workdirs = {name: tmp_path_factory.mktemp(f'mesh_{name.replace(",", "_")}') for name in MESHES}
  workdirs[RESUMED_ON_8] = copy_without_final_checkpoint(single_device,
                                                         tmp_path_factory.mktemp('resumed_on_8'))
  meshes = {**MESHES, RESUMED_ON_8: MESHES['8,1,1']}
  report = in_subprocess(8, 'eight_device_jobs', str(data_dir),
                         [(str(workdirs[name]), mesh) for name, mesh in meshes.items()], MEMORY_MESHES,
                         timeout_s=len(meshes) * SUBPROCESS_TIMEOUT_S)
  return {name: (workdirs[name], run) for name, run in zip(meshes, report['runs'])}, report['memory']


@pytest.fixture(scope='module')
def mesh_jobs(eight_devices):
  """{mesh name: (workdir, report)} of the runs from scratch on MESHES."""
  return {name: eight_devices[0][name] for name in MESHES}


@pytest.fixture(scope='module')
def fsdp_job(mesh_jobs):
  """The run on data=2, fsdp=2, model=2."""
  return mesh_jobs['2,2,2']


def test_params_are_sharded_as_the_logical_rules_say(fsdp_job):
  _, report = fsdp_job
  split = []
  for name, param in report['params'].items():
    logical = param['logical'] + [None] * (len(param['shape']) - len(param['logical']))
    spec = param['spec'] + [None] * (len(param['shape']) - len(param['spec']))
    expected_spec = [EXPECTED_MESH_AXIS.get(axis) for axis in logical]
    assert spec == expected_spec, (name, logical, spec)
    # fsdp=2 and model=2 (data replicates params): 'embed', 'mlp' and 'heads' are split in two.
    expected_shard = [size // 2 if axis in EXPECTED_MESH_AXIS else size
                      for size, axis in zip(param['shape'], logical)]
    assert param['shard_shape'] == expected_shard, (name, param)
    if 'embed' in logical:
      split.append(name)
  assert 'backbone/encoder/layers/mlp/hidden/kernel' in split
  assert report['params']['backbone/encoder/layers/mlp/hidden/kernel']['shard_shape'] == [2, 32, 64]
  assert report['params']['backbone/encoder/layers/attention/query/kernel']['shard_shape'] == [
      2, 32, 4, 8]


@pytest.mark.parametrize('mesh_name', list(MESHES))
def test_every_mesh_ends_with_the_losses_params_and_metrics_of_1_device(mesh_name, mesh_jobs,
                                                                        single_device_job):
  workdir, report = mesh_jobs[mesh_name]
  expected_workdir, expected_report = single_device_job
  expected_losses = logged_scalars(expected_workdir)
  assert len(expected_losses) == 4  # both tasks at steps 2 and 4
  losses = logged_scalars(workdir)
  assert losses.keys() == expected_losses.keys()
  for tag, value in expected_losses.items():
    assert abs(losses[tag] - value) <= LOSS_ATOL, (tag, losses[tag], value)
  expected = saved_params(expected_workdir, FINAL_STEP)
  assert_params_close(saved_params(workdir, FINAL_STEP), expected, PARAMS_ATOL)
  # The comparison is not vacuous: training moved the zero-initialised heads.
  assert np.abs(expected['heads/synthetic_cls/output/kernel']).max() > 1e-4
  for task, metrics in expected_report['results'].items():
    for key, value in metrics.items():
      np.testing.assert_allclose(report['results'][task][key], value, rtol=0, atol=METRIC_ATOL,
                                 err_msg=f'{task}/{key}')


@pytest.fixture(scope='module')
def memory(eight_devices):
  """compiled_memory of MEMORY_MESHES on 8 devices."""
  return eight_devices[1]


def test_fsdp_8_keeps_an_eighth_of_params_and_optimizer_per_device(memory):
  replicated, fsdp = memory['8,1,1'], memory['1,8,1']
  assert replicated['params'] == memory['1']['params']
  ratio = (fsdp['params'] + fsdp['optimizer']) / (replicated['params'] + replicated['optimizer'])
  # Above 1/8 by what no rule splits over fsdp: the biases of attention and MLP and the heads' bias.
  assert 1 / 8 <= ratio < 1.1 / 8, ratio
  # The compiled program's arguments are those states plus one batch part (sharded alike).
  for report in (replicated, fsdp):
    assert 0 < report['arguments'] - report['params'] - report['optimizer'] < 200_000


def test_model_8_splits_attention_and_mlp_activations(memory):
  config = scale_config('unused', {})
  d, m = config.model.hidden_size, config.model.mlp_dim
  tokens = 8 * 4 * 4 * 4  # batch 8 (not split by model), 4 x 4 x 4 patches per clip
  one, split = memory['1']['elements'], memory['1,1,8']['elements']
  assert set(one) == set(split) == {'attention/query', 'attention/key', 'attention/value',
                                    'mlp/hidden'}
  for part in ('attention/query', 'attention/key', 'attention/value'):
    assert set(one[part]) == {tokens * d} and set(split[part]) == {tokens * d // 8}, part
  assert set(one['mlp/hidden']) == {tokens * m} and set(split['mlp/hidden']) == {tokens * m // 8}
  # Residual stream and gradients stay whole, so the step's temporaries shrink by less than 8x.
  assert memory['1,1,8']['activations'] < 0.6 * memory['1']['activations']


def test_1_device_checkpoint_resumes_on_8_devices(eight_devices, single_device):
  workdir, report = eight_devices[0][RESUMED_ON_8]
  assert report['restored_step'] == MIDWAY_STEP
  restored = dict(np.load(workdir / 'restored_params.npz'))
  assert_params_close(restored, saved_params(single_device, MIDWAY_STEP), atol=0)
  assert_params_close(saved_params(workdir, FINAL_STEP), saved_params(single_device, FINAL_STEP),
                      PARAMS_ATOL)


def test_8_device_checkpoint_resumes_on_1_device(data_dir, fsdp_job, single_device, tmp_path):
  fsdp_workdir, _ = fsdp_job
  workdir = copy_without_final_checkpoint(fsdp_workdir, tmp_path)
  report = run_job(str(data_dir), str(workdir), dict(data=-1, fsdp=1, model=1))
  assert report['restored_step'] == MIDWAY_STEP
  restored = dict(np.load(workdir / 'restored_params.npz'))
  assert_params_close(restored, saved_params(fsdp_workdir, MIDWAY_STEP), atol=0)
  assert_params_close(saved_params(workdir, FINAL_STEP), saved_params(single_device, FINAL_STEP),
                      PARAMS_ATOL)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return probe.getsockname()[1]


def _detection_keys(csv_path: pathlib.Path) -> list[tuple[str, ...]]:
  """Each detection row without its score: (video, timestamp, box, class), sorted."""
  with csv_path.open() as file:
    return sorted(tuple(row[:-1]) for row in csv.reader(file))


def test_two_processes_train_evaluate_every_example_once_and_checkpoint(data_dir, single_device,
                                                                        tmp_path):
  workdir = tmp_path / 'two_processes'
  command = [sys.executable, '-m', 'vivit_cofinetune.main', f'--config={CONFIG_FILE}',
             f'--workdir={workdir}', f'--config.data_dir={data_dir}',
             *[f'--config.{key}={value}' for key, value in OVERRIDES.items()],
             # fsdp over all 4 devices: every param's shards live on both processes.
             '--config.mesh.data=1', '--config.mesh.fsdp=4',
             f'--coordinator_address=127.0.0.1:{_free_port()}', '--num_processes=2']
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  processes = [subprocess.Popen(command + [f'--process_id={index}'], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for index in range(2)]
  try:
    outputs = [process.communicate(timeout=SUBPROCESS_TIMEOUT_S) for process in processes]
  finally:
    for process in processes:
      process.kill()
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-5000:]
  assert "Mesh {'data': 1, 'fsdp': 4, 'model': 1} over 4 devices on 2 processes" in outputs[0][1]
  # Only process 0 writes (and prints) the results.
  assert f'Wrote {workdir / "eval_results.json"}' in outputs[0][0]
  assert 'Wrote' not in outputs[1][0]

  results = json.loads((workdir / 'eval_results.json').read_text())
  cls_split = tfds.builder(OVERRIDES['tasks.synthetic_cls.dataset.name'], data_dir=str(data_dir))
  assert results['synthetic_cls']['num_videos'] == cls_split.info.splits['validation'].num_examples
  # Every keyframe's detector boxes scored once per class: the rows of the single-host eval, once.
  csv_name = f'step_{FINAL_STEP}/synthetic_loc_detections.csv'
  two_hosts = _detection_keys(workdir / 'eval' / csv_name)
  assert two_hosts == _detection_keys(single_device / 'eval' / csv_name)
  loc_split = tfds.builder(OVERRIDES['tasks.synthetic_loc.dataset.name'], data_dir=str(data_dir))
  assert len({row[0] for row in two_hosts}) == loc_split.info.splits['validation'].num_examples
  assert sorted(int(path.name) for path in (workdir / 'checkpoints').iterdir()
                if path.name.isdigit()) == [MIDWAY_STEP, FINAL_STEP]
  saved = saved_params(workdir, FINAL_STEP)
  assert np.abs(saved['heads/synthetic_loc/output/kernel']).max() > 0


if __name__ == '__main__':
  _JOBS = {'eight_device_jobs': eight_device_jobs}
  print(json.dumps(_JOBS[sys.argv[1]](*json.loads(sys.argv[2]))))
