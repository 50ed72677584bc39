"""Entry point: trains (or evaluates) the experiment a config file describes.

  python -m vivit_cofinetune.main --config=configs/demo_cofinetune.py --workdir=/tmp/demo
  python -m vivit_cofinetune.main --config=configs/demo_cofinetune.py --workdir=/tmp/demo --mode=eval

On a multi-host pod every host runs the same command; `jax.distributed.initialize()` finds the others
on the clusters jax detects (Cloud TPU VMs, GKE, SLURM, Open MPI; launch/ has scripts for the first
and SLURM); elsewhere pass --coordinator_address, --num_processes and --process_id. SIGTERM makes the
run save a checkpoint and exit 0; the same command then resumes.
"""
import logging as python_logging
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


def _quiet_library_logs(record) -> bool:
  """Keeps orbax's per-save INFO chatter and a TFDS-internal deprecation notice out of the log."""
  if record.levelno < python_logging.WARNING and 'orbax' in record.pathname:
    return False
  return 'FeatureConnector.dtype` is deprecated' not in record.getMessage()


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
  logging.get_absl_handler().addFilter(_quiet_library_logs)
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
  from vivit_cofinetune import config_lib
  from vivit_cofinetune import evaluate
  from vivit_cofinetune import preemption
  from vivit_cofinetune import train
  if _MODE.value == 'train':
    preemption.catch_sigterm()
  run = train.train_and_evaluate if _MODE.value == 'train' else evaluate.evaluate_checkpoint
  try:
    run(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as error:
    # A config mistake is the user's to fix: one line naming the field, no traceback.
    sys.exit(f'Config error: {error}')
  except (checkpoint.NoCheckpointRestoresError, checkpoint.NoCheckpointError) as error:
    # The warnings above give each checkpoint's error; a traceback through orbax would add nothing.
    sys.exit(f'Checkpoint error: {error}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
