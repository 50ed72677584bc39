"""config.profile_steps: a jax.profiler trace of the chosen steps in WORKDIR/profile."""
import gzip
import json

import pytest

from test_train import tiny_config
from vivit_cofinetune import train

pytestmark = pytest.mark.slow


def test_profile_steps_write_a_trace_of_those_steps_that_tensorboard_opens(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=4)
  config.profile_steps = (2, 1)
  train.train_and_evaluate(config, str(tmp_path))
  # TensorBoard's profile tab reads WORKDIR/profile/plugins/profile/<run>/*.xplane.pb.
  runs = list((tmp_path / 'profile' / 'plugins' / 'profile').iterdir())
  assert len(runs) == 1
  assert list(runs[0].glob('*.xplane.pb'))
  # The trace holds the train step's execution (the jitted step by name), not only its dispatch.
  trace = json.loads(gzip.decompress(next(runs[0].glob('*.trace.json.gz')).read_bytes()))
  names = {event.get('name', '') for event in trace['traceEvents']}
  assert any('train_step' in name for name in names)

