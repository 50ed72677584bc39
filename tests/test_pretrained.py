"""`:init=NAME` in the paper configs: each video-pretrained starting point loads in each config."""
import pathlib

import flax
import jax
import jax.numpy as jnp
import pytest

from vivit_cofinetune import config_lib
from vivit_cofinetune.models import pretrained
from vivit_cofinetune.models import vivit

CONFIGS = pathlib.Path(__file__).parent.parent / 'configs'
PAPER_CONFIGS = ('ava_kinetics_cofinetune', 'ava_multi_cofinetune', 'avakinetics_set_multi_cofinetune')


@pytest.mark.parametrize('config_name', PAPER_CONFIGS)
@pytest.mark.parametrize('init', sorted(pretrained.STARTING_POINTS))
def test_each_paper_config_loads_with_each_starting_point(config_name, init):
  config = config_lib.load_config_file(f'{CONFIGS / config_name}.py:init={init}')
  assert config.init_from.path == pretrained.directory(init)
  point = pretrained.STARTING_POINTS[init]
  for field, value in point.model.items():
    assert config.model[field] == value, field
  # The model the config describes builds at the config's clip size (abstractly: no memory).
  task = next(iter(config.tasks.values()))
  clip = (1, task.input.num_frames, task.input.crop_size, task.input.crop_size, 3)
  shapes = jax.eval_shape(lambda: vivit.ViViT(**config.model).init(
      jax.random.PRNGKey(0), jnp.zeros(clip), train=False))
  kernel = flax.linen.meta.unbox(shapes['params']['embedding']['kernel'])
  assert kernel.shape[-1] == point.model['hidden_size']
  assert f'--from={point.format}' in pretrained.convert_command(init)
  local = config_lib.load_config_file(f'{CONFIGS / config_name}.py:init={init},local=True')
  assert local.init_from.path == ''  # a local run's tiny model fits no real checkpoint


def test_docstrings_name_every_starting_point():
  for config_name in PAPER_CONFIGS:
    text = (CONFIGS / f'{config_name}.py').read_text()
    for init in pretrained.STARTING_POINTS:
      assert init in text, (config_name, init)
