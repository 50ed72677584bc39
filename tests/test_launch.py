"""launch/: the dry runs print commands that run the trainer on every worker, and run nothing."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

LAUNCH = pathlib.Path(__file__).parent.parent / 'launch'
CONFIG = 'configs/ava_kinetics_cofinetune.py'
TRAINER = ['-m', 'vivit_cofinetune.main', f'--config={CONFIG}']
# What SLURM sets in each srun task; jax.distributed's SLURM detection needs all of them.
SLURM_TASK_ENV = dict(SLURM_JOB_ID='1234', SLURM_STEP_NODELIST='node[001-002]', SLURM_NTASKS='16',
                      SLURM_PROCID='3', SLURM_LOCALID='3')


@pytest.fixture
def recording_path(tmp_path, monkeypatch) -> pathlib.Path:
  """PATH where every command a launcher could run only writes its name to a file; returns the file."""
  calls = tmp_path / 'calls'
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for command in ('gcloud', 'tar', 'tensorboard', 'sbatch', 'srun', 'python', 'python3'):
    fake = bin_dir / command
    fake.write_text(f'#!/bin/sh\necho {command} >> {calls}\n')
    fake.chmod(0o755)
  monkeypatch.setenv('PATH', f'{bin_dir}:{os.environ["PATH"]}')
  return calls


def dry_run(script: str, *args: str) -> str:
  completed = subprocess.run([str(LAUNCH / script), '--dry-run', *args], capture_output=True,
                             text=True, timeout=60, check=False)
  assert completed.returncode == 0, completed.stderr
  return completed.stdout


def test_tpu_pod_dry_run_creates_installs_runs_on_all_workers_and_deletes(recording_path):
  output = dry_run('tpu_pod.sh', '--name=NAME', '--zone=ZONE', '--accelerator=v5p-64',
                   f'--config={CONFIG}', '--workdir=gs://B/DIR', '--config.log_every=10')
  commands = [shlex.split(line) for line in output.splitlines()]
  assert not recording_path.exists(), recording_path.read_text()

  create = commands[0]
  assert create[:5] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'create']
  assert {'NAME', '--node-id=NAME', '--accelerator-type=v5p-64', '--zone=ZONE'} <= set(create)
  assert commands[-1][:6] == ['gcloud', 'compute', 'tpus', 'queued-resources', 'delete', 'NAME']

  on_all_workers = [command for command in commands
                    if command[:4] == ['gcloud', 'compute', 'tpus', 'tpu-vm']]
  assert all('--worker=all' in command for command in on_all_workers), on_all_workers
  remote = [shlex.split(argument.removeprefix('--command='))
            for command in on_all_workers for argument in command
            if argument.startswith('--command=')]
  install, train = remote
  assert 'pip' in install and '-e' in install
  # The trainer, with the launcher's config, workdir and overrides, on every worker.
  python = train.index('python3')
  assert train[python + 1:] == TRAINER + ['--workdir=gs://B/DIR', '--config.log_every=10']
  assert ['tensorboard', '--logdir=gs://B/DIR', '--port=6006'] in commands


@pytest.mark.parametrize('script', ['tpu_pod.sh', 'slurm.sh'])
def test_launchers_name_a_missing_flag(script, recording_path):
  completed = subprocess.run([str(LAUNCH / script), '--dry-run', f'--config={CONFIG}'],
                             capture_output=True, text=True, timeout=60, check=False)
  assert completed.returncode == 2
  assert re.search(r'--\w+ is required', completed.stderr), completed.stderr
  assert not recording_path.exists()


def test_slurm_dry_run_prints_a_job_of_one_trainer_per_gpu_signalled_before_the_limit(
    recording_path, tmp_path):
  script = dry_run('slurm.sh', '--nodes=2', '--gpus_per_node=8', f'--config={CONFIG}',
                   '--workdir=/shared/run', '--time=04:00:00', '--config.log_every=10')
  assert not recording_path.exists(), recording_path.read_text()
  directives = dict(line.removeprefix('#SBATCH ').split('=', 1)
                    for line in script.splitlines() if line.startswith('#SBATCH '))
  assert directives['--nodes'] == '2'
  assert directives['--gpus-per-node'] == '8'
  assert directives['--ntasks-per-node'] == '8'
  assert directives['--time'] == '04:00:00'
  # SIGTERM to the trainers (not only the batch shell) some time before the limit.
  assert re.fullmatch(r'TERM@\d+', directives['--signal'])
  srun = [shlex.split(line) for line in script.splitlines() if line.startswith('srun ')]
  assert len(srun) == 1
  python = srun[0].index('python')
  assert srun[0][python + 1:] == TRAINER + ['--workdir=/shared/run', '--config.log_every=10']
  (tmp_path / 'job.sh').write_text(script)
  subprocess.run(['bash', '-n', str(tmp_path / 'job.sh')], check=True)


@pytest.mark.slow
def test_cluster_detection_is_jaxs_own():
  # In a fresh process: importing main defines its absl flags, which must not leak into pytest's.
  check = f"""
import os
from vivit_cofinetune import main
assert not main._on_detected_cluster(), 'a plain machine must run as one process'
os.environ.update({SLURM_TASK_ENV!r})
assert main._on_detected_cluster(), 'an srun task must join the job'
"""
  env = {key: value for key, value in os.environ.items()
         if not key.startswith(('SLURM_', 'OMPI_', 'JAX_COORDINATOR', 'KUBERNETES_'))}
  completed = subprocess.run([sys.executable, '-c', check], env=env, capture_output=True, text=True,
                             timeout=300, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]



@pytest.mark.parametrize('flag', ['--job_name', '--partition', '--account', '--time', '--nodes'])
def test_slurm_rejects_a_value_that_would_add_a_line_to_the_job_script(flag, recording_path,
                                                                         tmp_path):
  marker = tmp_path / 'ran'
  args = {'--nodes': '2', '--gpus_per_node': '8', '--config': CONFIG, '--workdir': '/shared/run'}
  args[flag] = f'x\ntouch {marker}'
  completed = subprocess.run([str(LAUNCH / 'slurm.sh'), '--dry-run',
                              *(f'{key}={value}' for key, value in args.items())],
                             capture_output=True, text=True, timeout=60, check=False)
  assert completed.returncode == 2 and completed.stdout == ''  # no script printed
  assert completed.stderr.startswith(f'slurm.sh: {flag}=') and 'expected' in completed.stderr
  assert len(completed.stderr.strip().splitlines()) == 1
  assert not marker.exists() and not recording_path.exists()


def test_slurm_quotes_trainer_arguments_so_the_job_script_runs_no_other_command(
    recording_path, tmp_path):
  marker = tmp_path / 'ran'
  script = dry_run('slurm.sh', '--nodes=1', '--gpus_per_node=1', f'--config={CONFIG}',
                   f'--workdir=/shared/$(touch {marker})', f'--config.note=x\ntouch {marker}')
  (tmp_path / 'job.sh').write_text(script)
  # srun and python are the recording fakes: the script runs, and only they run.
  subprocess.run(['bash', str(tmp_path / 'job.sh')], check=True, timeout=60)
  assert not marker.exists()
  assert recording_path.read_text().split() == ['srun']


@pytest.mark.parametrize('flag', ['--name', '--zone', '--accelerator', '--tensorboard_port'])
def test_tpu_pod_rejects_a_value_it_cannot_pass_on(flag, recording_path):
  args = {'--name': 'NAME', '--zone': 'ZONE', '--accelerator': 'v5p-64', '--config': CONFIG,
          '--workdir': 'gs://B/DIR'}
  args[flag] = 'x\ntouch FILE'
  completed = subprocess.run([str(LAUNCH / 'tpu_pod.sh'), '--dry-run',
                              *(f'{key}={value}' for key, value in args.items())],
                             capture_output=True, text=True, timeout=60, check=False)
  assert completed.returncode == 2 and completed.stdout == ''
  assert completed.stderr.startswith(f'tpu_pod.sh: {flag}=')
  assert not recording_path.exists()


def test_tpu_pod_remote_trainer_command_runs_no_other_command(recording_path, tmp_path):
  marker = tmp_path / 'ran'
  output = dry_run('tpu_pod.sh', '--name=name', '--zone=zone', '--accelerator=v5p-64',
                   f'--config={CONFIG}', f'--workdir=gs://B/$(touch {marker})',
                   f'--config.note=x\ntouch {marker}', '--tensorboard_port=0')
  # What each worker's shell would run: the --command= of the trainer's ssh.
  remote = [argument.removeprefix('--command=') for line in output.splitlines()
            for argument in shlex.split(line) if argument.startswith('--command=cd ')]
  assert len(remote) == 1
  subprocess.run(['bash', '-c', remote[0].replace('cd ~/vivit_cofinetune && ', '')], check=True,
                 timeout=60)
  assert not marker.exists()
  assert recording_path.read_text().split() == ['python3']
