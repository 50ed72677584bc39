"""Launching on clusters: jax's own cluster detection decides whether to join a distributed job."""
import os
import subprocess
import sys

import pytest

# What SLURM sets in each srun task; jax.distributed's SLURM detection needs all of them.
SLURM_TASK_ENV = dict(SLURM_JOB_ID='1234', SLURM_STEP_NODELIST='node[001-002]', SLURM_NTASKS='16',
                      SLURM_PROCID='3', SLURM_LOCALID='3')


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
