"""Config validation: each mistake stops with one message naming the field."""
import pathlib
import runpy

import ml_collections
import pytest
import setuptools

from vivit_cofinetune import config_checks
from vivit_cofinetune import config_lib
from vivit_cofinetune import tasks as tasks_lib
from vivit_cofinetune.tasks import base as tasks_base
from vivit_cofinetune.data import pipeline

CONFIGS = pathlib.Path(__file__).parent.parent / 'configs'


def load_config(name: str, arg: str = ''):
  return config_lib.load_config_file(f'{CONFIGS / name}.py:{arg}')


def demo():
  return load_config('demo_cofinetune')


def test_demo_config_is_valid():
  config_checks.validate_config(demo(), num_devices=8,
                             known_datasets={'synthetic_actions_loc': True,
                                             'synthetic_actions_cls': True})


def set_input(task, **fields):
  """Gives `task` its own input config with `fields` changed (the demo's tasks share one)."""
  task.input = ml_collections.ConfigDict(dict(task.input.to_dict(), **fields))


@pytest.mark.parametrize('mutate, message', [
    (lambda c: c.schedule.phases[0]['mixture'].update(unknown_task=1.0),
     "config.schedule.phases[0].mixture names unknown task 'unknown_task'"),
    (lambda c: c.schedule.phases[0]['mixture'].update(synthetic_cls=0.0),
     'config.schedule.phases[0].mixture.synthetic_cls=0.0: expected a positive weight'),
    (lambda c: c.schedule.phases[0]['mixture'].update(synthetic_cls='often'),
     "config.schedule.phases[0].mixture.synthetic_cls='often'"),
    (lambda c: c.tasks.synthetic_loc.update(kind='detection'),
     "config.tasks.synthetic_loc.kind='detection': expected one of"),
    (lambda c: c.tasks.synthetic_cls.update(batch_size=12),
     'config.tasks.synthetic_cls.batch_size=12: expected a positive multiple of data x fsdp of '
     'config.mesh (8)'),
    (lambda c: c.mesh.update(data=3),
     "config.mesh={'data': 3, 'fsdp': 1, 'model': 1} has 3 devices; 8 are present"),
    (lambda c: c.tasks.synthetic_cls.update(transfer_steps=0),
     "config.schedule.phases[0].mixture.synthetic_cls='steps' needs "
     'config.tasks.synthetic_cls.transfer_steps'),
    (lambda c: c.schedule.phases[0].update(steps=0),
     'config.schedule.phases[0].steps=0: expected a positive int'),
    (lambda c: c.schedule.phases[0].update(mixed_batches='yes'),
     "config.schedule.phases[0].mixed_batches='yes': expected True or False"),
    (lambda c: (c.schedule.phases[0].update(mixed_batches=True),
                c.schedule.phases[0]['mixture'].pop('synthetic_cls')),
     "config.schedule.phases[0].mixed_batches=True: a mixed batch needs at least two tasks"),
    (lambda c: c.optimizer.update(schedule_span='epoch'),
     "config.optimizer.schedule_span='epoch': expected one of ['phase', 'run']"),
    (lambda c: (c.optimizer.update(schedule_span='run'), c.schedule.phases[0].update(warmup_steps=5)),
     'config.schedule.phases[0].warmup_steps: a phase has no learning-rate schedule of its own'),
    (lambda c: c.tasks.synthetic_loc.update(eval_protocol='voc'),
     "config.tasks.synthetic_loc.eval_protocol='voc': expected one of "
     "['activitynet', 'slowfast', 'both']"),
    (lambda c: c.tasks.synthetic_loc.update(class_reduction='max'),
     "config.tasks.synthetic_loc.class_reduction='max': expected one of ['mean', 'sum']"),
    (lambda c: c.tasks.synthetic_cls.update(class_reduction='sum'),
     'config.tasks.synthetic_cls.class_reduction: only localisation tasks have it'),
    # Clips that do not split into whole (2, 8, 8) patches.
    (lambda c: set_input(c.tasks.synthetic_loc, crop_size=36),
     'config.tasks.synthetic_loc.input: num_frames=8, crop_size=36 do not split into '
     'config.model.patch_size=(2, 8, 8) patches'),
    (lambda c: set_input(c.tasks.synthetic_cls, num_frames=7),
     'config.tasks.synthetic_cls.input: num_frames=7, crop_size=32 do not split'),
    (lambda c: c.optimizer.update(name='adam'),
     "config.optimizer.name='adam': expected one of ['sgd', 'adamw']"),
    (lambda c: c.optimizer.update(base_learning_rate=-0.1),
     'config.optimizer.base_learning_rate=-0.1: expected a number >= 0'),
    (lambda c: c.schedule.phases[0].update(base_learning_rate=-1.0),
     'config.schedule.phases[0].base_learning_rate=-1.0: expected a number >= 0'),
    (lambda c: c.optimizer.update(warmup_steps=-5),
     'config.optimizer.warmup_steps=-5: expected an int >= 0'),
    (lambda c: c.update(log_every=0), 'config.log_every=0: expected a positive int'),
    (lambda c: c.update(eval_every=0), 'config.eval_every=0: expected a positive int'),
    (lambda c: c.update(checkpoint_every=0), 'config.checkpoint_every=0: expected a positive int'),
    (lambda c: c.update(keep_checkpoints=0),
     'config.keep_checkpoints=0: expected a positive int (the newest checkpoints kept; 0 would '
     'delete the final one'),
])
def test_mistakes_name_the_field(mutate, message):
  config = demo()
  mutate(config)
  with pytest.raises(config_lib.ConfigError) as error:
    config_checks.validate_config(config, num_devices=8, known_datasets=None)
  assert message in str(error.value)


def test_batch_sizes_split_over_data_and_fsdp_not_model():
  config = demo()
  config.mesh = dict(data=2, fsdp=1, model=4)
  config.tasks.synthetic_cls.batch_size = 2
  config_checks.validate_config(config, num_devices=8, known_datasets=None)
  config.mesh = dict(data=1, fsdp=2, model=4)
  with pytest.raises(config_lib.ConfigError, match='and of the host count [(]4[)]'):
    config_checks.validate_config(config, num_devices=8, num_processes=4, known_datasets=None)


def test_missing_dataset_names_the_field_and_the_guide():
  with pytest.raises(config_lib.ConfigError) as error:
    config_checks.validate_config(demo(), num_devices=1,
                               known_datasets={'synthetic_actions_loc': True})
  assert "config.tasks.synthetic_cls.dataset.name='synthetic_actions_cls'" in str(error.value)
  assert 'docs/data.md' in str(error.value)


def test_a_missing_init_from_path_is_named_when_storage_is_checked(tmp_path):
  config = demo()
  config.init_from.path = str(tmp_path / 'nonexistent')
  config_checks.validate_config(config, num_devices=8, known_datasets=None)  # storage not read
  with pytest.raises(config_lib.ConfigError) as error:
    config_checks.validate_config(config, num_devices=8,
                                  known_datasets={'synthetic_actions_loc': True,
                                                  'synthetic_actions_cls': True})
  assert f"config.init_from.path='{tmp_path}/nonexistent': not found" in str(error.value)


def test_input_defaults_are_defined_once_and_input_config_rejects_unknown_fields():
  assert pipeline.INPUT_DEFAULTS is config_lib.INPUT_DEFAULTS
  clips = config_lib.input_config(num_frames=8, crop_size=32, min_box_visible=0.5)
  assert clips.min_box_visible == 0.5 and clips.mean == config_lib.INPUT_DEFAULTS['mean']
  with pytest.raises(config_lib.ConfigError, match=r"unknown fields \['min_crop_aera'\]"):
    config_lib.input_config(num_frames=8, crop_size=32, min_crop_aera=0.5)


def test_a_class_count_that_disagrees_with_the_dataset_is_a_config_error():
  task = config_lib.task_config('classification', 'unused', num_classes=3, batch_size=2,
                                input=config_lib.input_config(num_frames=4, crop_size=16),
                                head=dict(pooling='mean'))
  with pytest.raises(config_lib.ConfigError,
                     match='config.tasks.cls.num_classes=3 but the dataset has 2 classes'):
    tasks_lib.make_task('cls', task, tasks_base.DatasetInfo(
        num_classes=2, class_names=['a', 'b'], num_train_examples=4, train_class_counts=None))


def test_setup_installs_the_configs_package(monkeypatch):
  # Config files import configs.common: an installed project must ship it.
  captured = {}
  monkeypatch.setattr(setuptools, 'setup', lambda **kwargs: captured.update(kwargs))
  monkeypatch.chdir(CONFIGS.parent)
  runpy.run_path(str(CONFIGS.parent / 'setup.py'))
  assert 'configs' in captured['packages'] and 'vivit_cofinetune.data' in captured['packages']


def test_config_args_parse_by_type_and_reject_unknown_keys():
  args = config_lib.config_args('size=L,local=True,steps=10', size='B', local=False, steps=1)
  assert (args.size, args.local, args.steps) == ('L', True, 10)
  with pytest.raises(config_lib.ConfigError, match="'colour' is unknown"):
    config_lib.config_args('colour=red', size='B')
  with pytest.raises(config_lib.ConfigError, match='expected True or False'):
    config_lib.config_args('local=yes', local=False)
  with pytest.raises(config_lib.ConfigError, match="config argument steps='abc': expected an integer"):
    config_lib.config_args('steps=abc', steps=1)
  with pytest.raises(config_lib.ConfigError, match="config argument rate='x': expected a number"):
    config_lib.config_args('rate=x', rate=0.5)


@pytest.mark.parametrize('variant', ['factorised_encoder', 'factorised_self_attention',
                                     'factorised_dot_product', 'spatio_temporal'])
def test_demo_variants_select_the_backbone(variant):
  assert load_config('demo_cofinetune', f'variant={variant}').model.variant == variant


def test_transfer_baseline_sees_the_same_steps_per_task():
  cofinetune, transfer = demo(), load_config('demo_cofinetune', 'transfer=True')
  assert [p['steps'] for p in transfer.schedule.phases] == [
      cofinetune.tasks.synthetic_cls.transfer_steps, cofinetune.tasks.synthetic_loc.transfer_steps]
  assert sum(p['steps'] for p in transfer.schedule.phases) == cofinetune.schedule.phases[0]['steps']
