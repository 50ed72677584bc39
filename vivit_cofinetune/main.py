"""Entry point: trains (or evaluates) the experiment a config file describes.

  python -m vivit_cofinetune.main --config=configs/demo_cofinetune.py --workdir=/tmp/demo
  python -m vivit_cofinetune.main --config=configs/demo_cofinetune.py --workdir=/tmp/demo --mode=eval

On a multi-host pod every host runs the same command; `jax.distributed.initialize()` finds the others
on the clusters jax detects (Cloud TPU VMs, GKE, SLURM, Open MPI; launch/ has scripts for the first
and SLURM); elsewhere pass --coordinator_address, --num_processes and --process_id. SIGTERM makes the
run save a checkpoint and exit 0; the same command then resumes.
"""
import errno
import functools
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from absl import logging
import jax
from jax._src import clusters as jax_clusters
from ml_collections import config_flags
import tensorflow as tf
import tensorflow_datasets as tfds

from vivit_cofinetune import cli
from vivit_cofinetune import config_lib
from vivit_cofinetune import logs

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and results.')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'Train (resuming if possible) or '
                          'evaluate the latest checkpoint of --workdir.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', None, 'Call jax.distributed.initialize(); default: '
                                 'when --coordinator_address is given or jax detects a cluster.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')


def _on_detected_cluster() -> bool:
  """Whether `jax.distributed.initialize()` without arguments would find a cluster to join.

  Asks the same registry of cluster environments that initialize() asks, in the same way, so that a
  plain machine runs as one process instead of failing for want of a coordinator address.
  """
  return 'JAX_COORDINATOR_ADDRESS' in os.environ or any(
      env.is_env_present() for env in jax_clusters.ClusterEnv._cluster_types  # pylint: disable=protected-access
      if not env.opt_in_only_method)


def main(argv):
  del argv
  logs.quiet_library_logs()
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()  # a log file would get its escape codes, not bars
  # The input pipeline runs on the host; keep TensorFlow away from the accelerators.
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
  distributed = _DISTRIBUTED.value
  if distributed is None:
    distributed = bool(_COORDINATOR.value) or _on_detected_cluster()
  if distributed:
    # Also starts jax's preemption service, which turns SIGTERM into a step all processes agree on.
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  logging.info('Process %d/%d, local devices %s', jax.process_index(), jax.process_count(),
               jax.local_devices())

  # Imported late so that TensorFlow's device settings above come first.
  from vivit_cofinetune import checkpoint
  from vivit_cofinetune import evaluate
  from vivit_cofinetune import preemption
  from vivit_cofinetune import train
  from vivit_cofinetune import workdir as workdir_lib
  try:
    if _MODE.value == 'train':
      preemption.catch_sigterm()
      # One training run per workdir: a second one stops here, before it writes anything.
      with workdir_lib.claimed(_WORKDIR.value):
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    else:
      evaluate.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as error:
    # A config mistake is the user's to fix: one line naming the field, no traceback.
    sys.exit(f'Config error: {error}')
  except (checkpoint.NoCheckpointRestoresError, checkpoint.NoCheckpointError) as error:
    # The warnings above give each checkpoint's error; a traceback through orbax would add nothing.
    sys.exit(f'Checkpoint error: {error}')
  except workdir_lib.WorkdirError as error:
    sys.exit(f'Workdir error: {error}')
  except Exception as error:  # pylint: disable=broad-except
    full_disk = cli.find_in_chain(error, lambda e: isinstance(e, OSError) and e.errno == errno.ENOSPC)
    if full_disk is None:
      raise
    # Checkpoints are written to a temporary directory and renamed when complete, so the ones
    # saved before are whole; the run resumes from the newest once there is space.
    sys.exit(f'Disk full: {full_disk}. The checkpoints saved before under '
             f'{_WORKDIR.value}/checkpoints are intact; free space and run the same command to '
             'resume.')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=functools.partial(cli.parse_flags, config_flag=_CONFIG))
