"""The error exits users meet: each stops with a message naming what to change, before any work."""
import json
import os
import pathlib
import socket
import subprocess
import sys

from absl import flags
import jax
from ml_collections import config_flags
import pytest

from vivit_cofinetune import checkpoint
from vivit_cofinetune import cli
from vivit_cofinetune import config_checks
from vivit_cofinetune import config_lib
from vivit_cofinetune import sharding

REPO = pathlib.Path(__file__).parent.parent


@pytest.mark.parametrize('mesh, message', [
    (dict(data=-1, fsdp=-1), r"config.mesh=\{'data': -1, 'fsdp': -1\}: at most one axis may be -1"),
    (dict(data=-1, fsdp=3), r'8 devices do not split over the fixed axes \(product 3\)'),
    (dict(data=2, fsdp=2, model=1), r'has 4 devices; 8 are present'),
])
def test_bad_mesh_sizes_are_config_errors(mesh, message):
  # validate_config checks the mesh before anything starts, so main prints one line.
  config = config_lib.load_config_file(str(REPO / 'configs' / 'demo_cofinetune.py'))
  config.mesh = mesh
  with pytest.raises(config_lib.ConfigError, match=message):
    config_checks.validate_config(config, num_devices=8, known_datasets=None)
  eight_devices = [object()] * 8  # the sizes are checked before any device is touched
  with pytest.raises(ValueError, match=message):
    sharding.make_mesh(mesh, devices=eight_devices)
  # -1 takes what the other axes leave.
  assert dict(sharding.make_mesh(dict(data=-1, fsdp=1)).shape) == dict(
      data=jax.device_count(), fsdp=1, model=1)


def last_line_of_failed_main(workdir, data_dir, *flags: str) -> str:
  """Runs `main` on the tiny demo with `flags`; asserts it failed without a traceback and returns
  the last line it wrote to stderr."""
  command = [sys.executable, '-m', 'vivit_cofinetune.main',
             f'--config={REPO}/configs/demo_cofinetune.py:steps=4', f'--workdir={workdir}',
             f'--config.data_dir={data_dir}',
             '--config.tasks.synthetic_loc.dataset.name=synthetic_actions_loc/tiny',
             '--config.tasks.synthetic_cls.dataset.name=synthetic_actions_cls/tiny', *flags]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
  assert done.returncode == 1, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  return done.stderr.strip().splitlines()[-1]


def test_eval_mode_without_a_checkpoint_stops_with_one_line_naming_the_workdir(data_dir, tmp_path):
  workdir = tmp_path / 'never_trained'
  assert last_line_of_failed_main(workdir, data_dir, '--mode=eval') == (
      f'Checkpoint error: --workdir={workdir}: no checkpoint under {workdir}/checkpoints')
  assert not (workdir / 'checkpoints').exists() and not (workdir / 'eval_results.json').exists()


def test_main_prints_a_config_error_as_one_line_without_traceback(data_dir, tmp_path):
  workdir = tmp_path / 'workdir'
  assert last_line_of_failed_main(workdir, data_dir, '--config.tasks.synthetic_cls.batch_size=0') == (
      'Config error: config.tasks.synthetic_cls.batch_size=0: expected a positive multiple of '
      'data x fsdp of config.mesh (1)')
  assert not (workdir / 'checkpoints').exists()  # stopped before anything was set up


# Runs `main` once per case, each in a process forked from one that imported it (the imports take
# most of a run's start), and prints {case: [the message it exited with, its stderr]} as JSON.
MAIN_CASES = """
import json, os, sys, tempfile
from vivit_cofinetune import main
from vivit_cofinetune import evaluate, train, workdir  # imported once, before the forks
results = {}
for case, argv in json.loads(sys.argv[1]).items():
  stderr = tempfile.NamedTemporaryFile(suffix='.txt', delete=False).name
  message = tempfile.NamedTemporaryFile(suffix='.txt', delete=False).name
  pid = os.fork()
  if pid == 0:
    os.dup2(os.open(stderr, os.O_WRONLY), 2)
    sys.argv = ['main'] + argv  # config_flags reads the overrides from sys.argv
    try:
      main.main(main.cli.parse_flags(sys.argv, config_flag=main._CONFIG))
      text = 'exited normally'
    except SystemExit as exit:
      text = str(exit.code)
    with open(message, 'w') as file:
      file.write(text)
    os._exit(0)
  os.waitpid(pid, 0)
  results[case] = [open(message).read(), open(stderr).read()]
print(json.dumps(results))
"""


def main_cases(data_dir, workdir) -> dict[str, list[str]]:
  """argv of main for each mistake; every case shares the tiny demo and `workdir`."""
  demo = [f'--config={REPO}/configs/demo_cofinetune.py:steps=4', f'--workdir={workdir}',
          f'--config.data_dir={data_dir}',
          '--config.tasks.synthetic_loc.dataset.name=synthetic_actions_loc/tiny',
          '--config.tasks.synthetic_cls.dataset.name=synthetic_actions_cls/tiny']
  with_arg = lambda arg: [f'{demo[0]},{arg}'] + demo[1:]  # pylint: disable=unnecessary-lambda-assignment
  return {
      'argument_typo': with_arg('stpes=10'),
      'argument_type': with_arg('steps=abc'),
      'unknown_optimizer': demo + ['--config.optimizer.name=adam'],
      'field_typo': demo + ['--config.optimizr.name=x'],
      'nested_field_typo': demo + ['--config.optimizer.nme=x'],
      'eval_every_0': demo + ['--config.eval_every=0'],
      'log_every_0': demo + ['--config.log_every=0'],
      'checkpoint_every_0': demo + ['--config.checkpoint_every=0'],
      'negative_learning_rate': demo + ['--config.optimizer.base_learning_rate=-0.001'],
      'keep_checkpoints_0': demo + ['--config.keep_checkpoints=0'],
      'init_not_found': [f'--config={REPO}/configs/ava_kinetics_cofinetune.py:synthetic=True,'
                         'init=/nonexistent'] + demo[1:3],
      'missing_config_file': [f'--config={REPO}/configs/no_such_config.py'] + demo[1:2],
      'workdir_is_a_file': demo[:1] + [f'--workdir={workdir}/a_file'] + demo[2:],
      'workdir_locked': demo[:1] + [f'--workdir={workdir}/locked'] + demo[2:],
      # Prepares the datasets into a fresh data_dir (TFDS's progress bars and INFO lines), then
      # finds no checkpoint to evaluate.
      'eval_on_fresh_data': demo[:1] + [f'--workdir={workdir}/never_trained',
                                        f'--config.data_dir={workdir}/fresh_data', '--mode=eval']
                            + demo[3:],
  }


def parse_flag_error(*args: str) -> str:
  """The line cli.parse_flags exits with on `args` (main's flags: --config and --workdir)."""
  argv = ['main', *args]
  flag_values = flags.FlagValues()
  config = config_flags.DEFINE_config_file('config', None, 'config', flag_values=flag_values,
                                           sys_argv=argv)
  flags.DEFINE_string('workdir', None, 'workdir', flag_values=flag_values)
  with pytest.raises(SystemExit) as exit_info:
    cli.parse_flags(argv, config_flag=config, flag_values=flag_values)
  return str(exit_info.value.code)


@pytest.mark.parametrize('args, message', [
    ([':stpes=10'], "Config error: config argument 'stpes' is unknown; expected one of "
                    "['steps', 'transfer', 'variant']"),
    ([':steps=abc'], "Config error: config argument steps='abc': expected an integer"),
    (['', '--config.optimizr.name=x'],
     "Config error: --config.optimizr.name: the config has no field 'optimizr'; "
     'Did you mean "optimizer" instead of "optimizr"?'),
    (['', '--config.optimizer.nme=x'],
     "Config error: --config.optimizer.nme: the config has no field 'nme'; "
     'Did you mean "name" instead of "nme"?'),
    (['', '--config.log_every=often'], 'Flag error: flag --config.log_every=often: invalid literal'),
])
def test_flag_and_config_argument_mistakes_are_one_line(args, message):
  config = f'--config={REPO}/configs/demo_cofinetune.py{args[0]}'
  assert parse_flag_error(config, *args[1:]).startswith(message)


def test_a_missing_config_file_is_one_line():
  assert parse_flag_error(f'--config={REPO}/configs/nothing.py') == (
      f"Config error: --config: [Errno 2] No such file or directory: '{REPO}/configs/nothing.py'")


@pytest.fixture(scope='module')
def main_results(data_dir, tmp_path_factory) -> dict[str, list[str]]:
  workdir = tmp_path_factory.mktemp('workdir')
  (workdir / 'a_file').write_text('a file, not a directory')
  # A live run holds this one: this test process, on this host.
  (workdir / 'locked').mkdir()
  (workdir / 'locked' / 'run.lock').write_text(json.dumps(dict(
      host=socket.gethostname(), pid=os.getpid(), started='2026-12-01 10:00:00 UTC')))
  done = subprocess.run([sys.executable, '-c', MAIN_CASES,
                         json.dumps(main_cases(data_dir, workdir))],
                        cwd=REPO, capture_output=True, text=True, check=False, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(json.loads(done.stdout.strip().splitlines()[-1]), workdir=str(workdir))


@pytest.mark.slow
@pytest.mark.parametrize('case, message', [
    ('argument_typo', "Config error: config argument 'stpes' is unknown; expected one of "
                      "['steps', 'transfer', 'variant']"),
    ('argument_type', "Config error: config argument steps='abc': expected an integer"),
    ('unknown_optimizer',
     "Config error: config.optimizer.name='adam': expected one of ['sgd', 'adamw']"),
    ('field_typo', "Config error: --config.optimizr.name: the config has no field 'optimizr'; "
                   'Did you mean "optimizer" instead of "optimizr"?'),
    ('nested_field_typo', "Config error: --config.optimizer.nme: the config has no field 'nme'; "
                          'Did you mean "name" instead of "nme"?'),
    ('eval_every_0', 'Config error: config.eval_every=0: expected a positive int (steps)'),
    ('log_every_0', 'Config error: config.log_every=0: expected a positive int (steps)'),
    ('checkpoint_every_0',
     'Config error: config.checkpoint_every=0: expected a positive int (steps)'),
    ('negative_learning_rate',
     'Config error: config.optimizer.base_learning_rate=-0.001: expected a number >= 0'),
    ('keep_checkpoints_0', 'Config error: config.keep_checkpoints=0: expected a positive int'),
    ('init_not_found', "Config error: config.init_from.path='/nonexistent': not found"),
    ('missing_config_file', 'Config error: --config: [Errno 2] No such file or directory'),
    ('workdir_is_a_file', 'Workdir error: --workdir={workdir}/a_file: is a file, not a directory'),
    ('workdir_locked', 'Workdir error: --workdir={workdir}/locked: another run is using it (pid '
                       f'{os.getpid()} on host {socket.gethostname()}, started 2026-12-01'),
])
def test_main_stops_with_one_line_naming_the_mistake(main_results, case, message):
  exit_message, stderr = main_results[case]
  assert '\n' not in exit_message and 'Traceback' not in stderr, stderr[-3000:]
  assert exit_message.startswith(message.format(workdir=main_results['workdir'])), exit_message
  # Stopped before training: no checkpoint written (validation runs before compiling).
  assert not list(pathlib.Path(main_results['workdir']).glob('**/checkpoints/*'))


@pytest.mark.slow
def test_library_chatter_and_progress_bars_stay_out_of_a_log_file(main_results):
  exit_message, stderr = main_results['eval_on_fresh_data']
  assert exit_message.startswith('Checkpoint error: --workdir=') and 'Traceback' not in stderr
  # The datasets were prepared in this run, which is when TFDS draws its bars.
  assert list(pathlib.Path(main_results['workdir']).glob('fresh_data/*/tiny/*/dataset_info.json'))
  for chatter in ('Load dataset info', 'Reusing dataset', 'Constructing tf.data.Dataset',
                  "Unable to initialize backend 'tpu'", '\x1b[', '\r', 'examples/s'):
    assert chatter not in stderr, stderr[-3000:]


# main with checkpoint.save failing as on a full disk from its second call on (the first one
# finishes before the loop goes on, so the test knows which checkpoint must be intact).
FULL_DISK = """
import errno, sys
from absl import app
from vivit_cofinetune import checkpoint, cli, main
real_save, saves = checkpoint.save, []
def save(manager, step, state, batches_consumed):
  saves.append(step)
  if len(saves) > 1:
    raise OSError(errno.ENOSPC, 'No space left on device', str(manager.directory / str(step)))
  real_save(manager, step, state, batches_consumed)
  manager.wait_until_finished()
checkpoint.save = save
app.run(main.main, flags_parser=lambda argv: cli.parse_flags(argv, config_flag=main._CONFIG))
"""


@pytest.mark.slow
def test_a_full_disk_stops_with_one_line_and_the_checkpoints_before_are_intact(data_dir, tmp_path):
  workdir = tmp_path / 'workdir'
  command = [sys.executable, '-c', FULL_DISK,
             f'--config={REPO}/configs/demo_cofinetune.py:steps=4', f'--workdir={workdir}',
             f'--config.data_dir={data_dir}', '--config.checkpoint_every=2',
             '--config.eval_every=4', '--config.log_every=2',
             '--config.tasks.synthetic_loc.dataset.name=synthetic_actions_loc/tiny',
             '--config.tasks.synthetic_cls.dataset.name=synthetic_actions_cls/tiny']
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=900)
  assert done.returncode == 1, done.stderr[-3000:]
  assert 'Traceback' not in done.stderr, done.stderr[-3000:]
  assert done.stderr.strip().splitlines()[-1] == (
      f"Disk full: [Errno 28] No space left on device: '{workdir}/checkpoints/4'. The checkpoints "
      f'saved before under {workdir}/checkpoints are intact; free space and run the same command '
      'to resume.')
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == ['2']
  params = checkpoint.read_params(workdir)  # step 2 restores
  assert set(params) == {'backbone', 'heads'}
  assert not (workdir / 'run.lock').exists()  # released on the way out
