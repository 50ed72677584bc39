"""Every config in configs/ loads and validates in every mode; the paper configs' modes do what their
docstrings say (schedules, init_from, loss reduction), their synthetic mode trains end to end and
their local mode fits the datasets prepared from fake releases."""
import math
import pathlib

import jax
import numpy as np
import pytest

from configs import common
import fake_releases
import foreign_checkpoints as foreign
from vivit_cofinetune import checkpoint
from vivit_cofinetune import config_checks
from vivit_cofinetune import config_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune import train
from vivit_cofinetune import trainer_setup
from vivit_cofinetune import schedule as schedule_lib
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.data import prepare
from vivit_cofinetune.tools import convert_checkpoint

CONFIGS = pathlib.Path(__file__).parent.parent / 'configs'
PAPER_CONFIGS = ('ava_kinetics_cofinetune', 'ava_multi_cofinetune', 'avakinetics_set_multi_cofinetune')
PAPER_MODES = ('', 'local=True', 'synthetic=True', 'transfer=True', 'then_finetune=True',
               'sampling=size', 'sampling=uniform', 'size=B', 'local=True,transfer=True',
               'local=True,then_finetune=True', 'synthetic=True,transfer=True',
               'synthetic=True,then_finetune=True,sampling=uniform', 'local=True,sampling=mixed')
# Every file in configs/ with the modes its docstring offers.
MODES = {'demo_cofinetune': ('', 'transfer=True', 'variant=factorised_encoder'),
         'study_cofinetune': ('', 'schedule=pretrain', 'schedule=downstream', 'schedule=transfer',
                              'schedule=transfer_continued', 'schedule=cofinetune_2',
                              'schedule=cofinetune_finetune,seed=2,init=/tmp/pretrain',
                              'tiny=True,steps=8,pretrain_steps=4'),
         **{name: PAPER_MODES for name in PAPER_CONFIGS}}


def load(name: str, arg: str = ''):
  return config_lib.load_config_file(f'{CONFIGS / name}.py:{arg}')


def test_every_config_file_is_listed_here():
  configs = [path.stem for path in CONFIGS.glob('*.py') if path.stem not in ('__init__', 'common')]
  assert sorted(configs) == sorted(MODES)


@pytest.mark.parametrize('name, arg', [(name, arg) for name, modes in MODES.items()
                                       for arg in modes])
def test_every_config_loads_and_validates_in_every_mode(name, arg):
  config = load(name, arg)
  # Local runs take one CPU device; the pod configs split their batches over 8.
  num_devices = 1 if 'local' in arg or 'synthetic' in arg or name in (
      'demo_cofinetune', 'study_cofinetune') else 8
  config_checks.validate_config(config, num_devices=num_devices, known_datasets=None)


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_transfer_baseline_and_cofinetuning_train_each_task_on_the_same_steps(name):
  for local in ('', 'local=True,'):
    cofinetune, transfer = load(name, local), load(name, f'{local}transfer=True')
    steps = {task: config.transfer_steps for task, config in cofinetune.tasks.items()}

    def batches(config):
      schedule = schedule_lib.task_schedule(config.schedule.phases, seed=0, transfer_steps=steps)
      return schedule.batches_before(schedule.num_steps)

    assert batches(cofinetune) == batches(transfer) == steps
    # The baseline trains the upstream sets first and AVA last.
    assert list(transfer.schedule.phases[-1]['mixture']) == ['ava']
    assert 'ava' not in transfer.schedule.phases[0]['mixture']


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_then_finetune_adds_an_ava_phase_after_cofinetuning(name):
  cofinetune, then_finetune = load(name), load(name, 'then_finetune=True')
  first, last = then_finetune.schedule.phases
  assert dict(first) == dict(cofinetune.schedule.phases[0])
  assert dict(last) == dict(steps=common.FINETUNE_STEPS, mixture={'ava': 1.0})
  assert load(name, 'then_finetune=True,finetune_steps=7').schedule.phases[1]['steps'] == 7


@pytest.mark.parametrize('sampling', ['steps', 'size', 'uniform'])
def test_sampling_argument_sets_every_tasks_mixture_weight(sampling):
  config = load('ava_multi_cofinetune', f'sampling={sampling}')
  assert dict(config.schedule.phases[0]['mixture']) == {name: sampling for name in config.tasks}


def test_mixed_sampling_trains_every_task_at_every_step_for_the_steps_per_task():
  config = load('ava_multi_cofinetune', 'sampling=mixed')
  phase, = config.schedule.phases
  assert phase['mixed_batches'] is True
  assert dict(phase['mixture']) == {name: 'uniform' for name in config.tasks}
  # Equal batch sizes, so the same clips as one task per step: the steps per task (their mean).
  assert phase['steps'] == sum(task.transfer_steps for task in config.tasks.values()) // 4
  local = load('ava_multi_cofinetune', 'sampling=mixed,local=True').schedule.phases[0]
  assert local['mixed_batches'] and local['steps'] == 10  # local runs: 10 steps per task
  assert load('ava_kinetics_cofinetune', 'sampling=mixed,transfer=True').schedule.phases[0].get(
      'mixed_batches') is None  # the baseline stays one task per step


@pytest.mark.parametrize('arg, message', [
    ('sampling=sometimes', "sampling='sometimes': expected one of ['steps', 'size', 'uniform', 'mixed']"),
    ('transfer=True,then_finetune=True', 'transfer=True and then_finetune=True: choose one'),
])
def test_conflicting_or_unknown_arguments_name_themselves(arg, message):
  with pytest.raises(config_lib.ConfigError, match=message.replace('[', r'\[').replace(']', r'\]')):
    load('ava_kinetics_cofinetune', arg)


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_init_from_is_the_converted_imagenet21k_vit_except_in_local_runs(name):
  assert load(name).init_from.path == str(
      pathlib.Path('~/vivit_checkpoints/vit_i21k_L16_to_vivit_32x224').expanduser())
  assert load(name, 'size=B').init_from.path.endswith('vit_i21k_B16_to_vivit_32x224')
  assert load(name, 'init=/ckpt/vit').init_from.path == '/ckpt/vit'
  assert load(name, 'init=none').init_from.path == ''
  for local in ('local=True', 'synthetic=True'):
    assert load(name, local).init_from.path == ''
    # A checkpoint made for the tiny model may still be named.
    assert load(name, f'{local},init=/tmp/tiny').init_from.path == '/tmp/tiny'


@pytest.mark.slow
def test_init_reads_an_image_vit_converted_by_the_docstrings_command(tmp_path):
  # The docstring's conversion at the local model's size: an image ViT of its width and depth.
  local = load('ava_multi_cofinetune', 'local=True')
  model = local.model
  vit = foreign.image_vit_params(width=model.hidden_size, depth=model.num_layers,
                                 mlp_dim=model.mlp_dim, num_heads=model.num_heads, patch=(16, 16),
                                 grid=(14, 14))
  foreign.write_big_vision_npz(str(tmp_path / 'vit.npz'), vit)
  converted = tmp_path / 'converted'
  convert_checkpoint.convert_checkpoint('big_vision_vit', str(tmp_path / 'vit.npz'), str(converted),
                                        config=local)
  config = load('ava_multi_cofinetune', f'local=True,init={converted}')
  params = trainer_setup.build(config).initial_state().params
  expected = checkpoint.read_params(converted)['backbone']
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params['backbone']),
               expected)


@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_paper_configs_state_the_ava_loss_class_reduction(name):
  for arg in ('', 'local=True', 'synthetic=True'):
    assert load(name, arg).tasks.ava.class_reduction == 'sum'


def test_avakinetics_set_reads_ava_and_ava_kinetics_as_one_task():
  config = load('avakinetics_set_multi_cofinetune')
  assert config.tasks.ava.dataset.name == 'ava_v2_2+ava_kinetics'
  assert sorted(config.tasks) == ['ava', 'kinetics700', 'moments_in_time', 'ssv2']


def test_avakinetics_set_synthetic_mode_is_ava_multis_so_one_run_covers_both():
  # Only the AVA dataset and its steps differ, and the synthetic mode replaces both.
  assert (load('avakinetics_set_multi_cofinetune', 'synthetic=True').to_dict()
          == load('ava_multi_cofinetune', 'synthetic=True').to_dict())


@pytest.mark.slow
def test_synthetic_mode_trains_and_evaluates_every_task_end_to_end(data_dir, tmp_path):
  # ava_multi's tasks are a superset of ava_kinetics' (the configs differ only in their task set,
  # which the fast tests above load and validate), so one run covers both.
  config = load('ava_multi_cofinetune', 'synthetic=True')
  config.data_dir = str(data_dir)  # the tiny synthetic sets, built once per session (conftest.py)
  for task in config.tasks.values():
    task.dataset.name += '/tiny'
  # One step per task, then the final evaluation.
  config.schedule.phases = [dict(phase, steps=len(phase['mixture']))
                            for phase in config.schedule.phases]
  results = train.train_and_evaluate(config, str(tmp_path))
  assert set(results) == set(config.tasks)
  assert math.isfinite(results['ava']['mAP'])
  for task_name in set(config.tasks) - {'ava'}:
    assert 0.0 <= results[task_name]['top1'] <= 1.0


# A writer of a fake release for every dataset the paper configs read.
FAKE_RELEASES = {'ava_v2_2': fake_releases.write_ava_release,
                 'ava_kinetics': fake_releases.write_ava_kinetics_release,
                 'kinetics700': fake_releases.write_kinetics_release,
                 'moments_in_time': fake_releases.write_moments_release,
                 'ssv2': fake_releases.write_ssv2_release}


@pytest.fixture(scope='module')
def prepared(tmp_path_factory) -> tuple[str, dict[str, int]]:
  """(data_dir holding every dataset prepared from its fake release, classes per dataset), once."""
  root = tmp_path_factory.mktemp('releases')
  data_dir = str(root / 'tfds')
  num_classes = {}
  for dataset, write in FAKE_RELEASES.items():
    manifest = write(str(root / dataset))
    num_classes[dataset] = len(manifest.get('class_names') or ())
    prepare.prepare(dataset, manual_dir=manifest['root'], data_dir=data_dir, num_workers=1)
  return data_dir, num_classes


@pytest.mark.slow
@pytest.mark.parametrize('name', PAPER_CONFIGS)
def test_local_mode_fits_the_datasets_prepared_from_fake_releases(name, prepared):
  data_dir, num_classes = prepared
  config = load(name, 'local=True')
  config.data_dir = data_dir
  for task in config.tasks.values():
    if task.kind == 'classification':  # the fake releases hold a few classes, not 700
      task.num_classes = num_classes[task.dataset.name]
  config_checks.validate_config(config, num_devices=jax.device_count(),
                                known_datasets=pipeline.known_datasets(config))
  # Class names, ids and evaluation files of every dataset fit the tasks (AVA: the 60 eval classes).
  tasks = tasks_lib.make_tasks(config, pipeline.dataset_infos(config))
  # The classes of the official frame-mAP (ava_action_list_v2.2_for_activitynet_2019.pbtxt).
  assert len(tasks['ava'].labelmap) == 60
  for task_name, task in config.tasks.items():
    batch = next(pipeline.train_iterator(task, data_dir=data_dir, seed=0))
    assert batch['video'].shape == (2, 8, 64, 64, 3), task_name
    assert np.isfinite(batch['video']).all()
