"""config.init_from: params loaded by name from a workdir or a converted checkpoint, some of them
re-initialised or frozen (checkpoint.merge_params, state.initial_state, the train step mask)."""
import jax
import ml_collections
import numpy as np
import pytest

import foreign_checkpoints as foreign
import test_convert
from test_train import tiny_config
from vivit_cofinetune import checkpoint
from vivit_cofinetune import param_paths
from vivit_cofinetune import state as state_lib
from vivit_cofinetune import train
from vivit_cofinetune import trainer_setup
from vivit_cofinetune.data import pipeline
from vivit_cofinetune.tools import convert_checkpoint


def flat(tree) -> dict[str, np.ndarray]:
  return {name: np.asarray(value) for name, value in param_paths.flatten(tree).items()}


# ---------------------------------------------------------------------------------------------
# merge_params


def fresh_params():
  return {'backbone': {'embedding': {'kernel': np.zeros((2, 3), np.float32)},
                       'encoder_norm': {'scale': np.zeros(4, np.float32)}},
          'heads': {'kinetics': {'output': {'bias': np.zeros(5, np.float32)}},
                    'ava': {'output': {'bias': np.zeros(3, np.float32)}}}}


def loaded_params():
  # The float64 kernel is cast to the model's float32.
  return {'backbone': {'embedding': {'kernel': np.full((2, 3), 1.5)},
                       'encoder_norm': {'scale': np.full(4, 2.0, np.float32)},
                       'unused': np.ones(7, np.float32)},
          'heads': {'kinetics': {'output': {'bias': np.full(5, 3.0, np.float32)}}}}


def test_merge_params_loads_matching_names_and_keeps_the_rest_fresh():
  merged, kept_fresh = checkpoint.merge_params(fresh_params(), loaded_params())
  np.testing.assert_array_equal(merged['backbone']['embedding']['kernel'], np.full((2, 3), 1.5))
  assert merged['backbone']['embedding']['kernel'].dtype == np.float32
  np.testing.assert_array_equal(merged['backbone']['encoder_norm']['scale'], 2.0)
  np.testing.assert_array_equal(merged['heads']['kinetics']['output']['bias'], 3.0)
  # Not in the checkpoint: kept fresh, and reported.
  np.testing.assert_array_equal(merged['heads']['ava']['output']['bias'], 0.0)
  assert kept_fresh == ['heads/ava/output/bias']
  assert 'unused' not in merged['backbone']


def test_merge_params_reinitialises_what_the_regexes_match():
  merged, kept_fresh = checkpoint.merge_params(
      fresh_params(), loaded_params(), reinit=(r'^heads/kinetics/', r'encoder_norm'))
  np.testing.assert_array_equal(merged['heads']['kinetics']['output']['bias'], 0.0)
  np.testing.assert_array_equal(merged['backbone']['encoder_norm']['scale'], 0.0)
  np.testing.assert_array_equal(merged['backbone']['embedding']['kernel'], 1.5)
  assert sorted(kept_fresh) == ['backbone/encoder_norm/scale', 'heads/ava/output/bias',
                                'heads/kinetics/output/bias']


def test_merge_params_shape_mismatch_names_the_param_and_suggests_reinit():
  loaded = loaded_params()
  loaded['heads']['kinetics']['output']['bias'] = np.zeros(400, np.float32)  # another class count
  with pytest.raises(ValueError, match=r'ckpt_dir: param heads/kinetics/output/bias has shape '
                                       r'\(400,\) in the checkpoint but \(5,\).*init_from.reinit'):
    checkpoint.merge_params(fresh_params(), loaded, source='ckpt_dir')
  merged, _ = checkpoint.merge_params(fresh_params(), loaded, reinit=(r'^heads/kinetics/',))
  np.testing.assert_array_equal(merged['heads']['kinetics']['output']['bias'], np.zeros(5))


# ---------------------------------------------------------------------------------------------
# End to end on the tiny demo config.


def model_parts(config):
  """(backbone, tasks, optimizer, state shardings, abstract state) of a run of `config`."""
  setup = trainer_setup.build(config, pipeline.dataset_infos(config))
  return setup.backbone, setup.tasks, setup.optimizer, setup.state_shardings, setup.abstract_state


def initial_params(config) -> dict:
  """The params a run of `config` starts from (state.initial_state)."""
  backbone, tasks, optimizer, shardings, _ = model_parts(config)
  return state_lib.initial_state(config, backbone, tasks, optimizer, shardings).params


def write_workdir(config, workdir) -> dict[str, np.ndarray]:
  """A workdir whose latest checkpoint holds random params (heads not zero); returns them flat.

  Written by checkpoint.save as the trainer writes it (test_train covers the trainer doing so);
  random values make loaded, re-initialised and trained params tell apart.
  """
  _, _, optimizer, _, abstract = model_parts(config)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda leaf: 0.1 * rng.standard_normal(leaf.shape).astype(np.float32),
                        abstract.params)
  manager = checkpoint.make_manager(workdir, config)
  checkpoint.save(manager, 4, state_lib.init_state(params, optimizer), {'synthetic_cls': 4})
  manager.wait_until_finished()
  return flat(params)


@pytest.mark.slow
def test_init_from_a_workdir_reinitialises_and_freezes(data_dir, tmp_path):
  config = tiny_config(data_dir, steps=2)
  before = write_workdir(config, tmp_path / 'upstream')
  # Only the classification head trains: the localisation head shows how it was initialised.
  config.schedule.phases = [dict(steps=2, mixture=dict(synthetic_cls=1.0))]
  config.init_from = ml_collections.ConfigDict(dict(
      path=str(tmp_path / 'upstream'), reinit=(r'^heads/synthetic_loc/',),
      freeze=(r'^backbone/embedding/',)))
  train.train_and_evaluate(config, str(tmp_path / 'downstream'))
  after = flat(checkpoint.read_params(tmp_path / 'downstream'))

  assert before.keys() == after.keys()
  frozen = [name for name in after if name.startswith('backbone/embedding/')]
  assert frozen
  for name in frozen:
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  moved = 0.0
  for name in set(after) - set(frozen):
    if name.startswith('heads/synthetic_loc/'):
      continue
    # Loaded, then two AdamW steps of at most ~1e-3 each (a fresh init is ~0.1 away).
    difference = np.abs(after[name] - before[name]).max()
    assert difference < 5e-3, (name, difference)
    moved = max(moved, difference)
  assert moved > 0
  # Re-initialised (the head's output layer starts at zero) and not trained since.
  for name in ('heads/synthetic_loc/output/kernel', 'heads/synthetic_loc/output/bias'):
    np.testing.assert_array_equal(after[name], 0.0, err_msg=name)


@pytest.mark.slow
def test_init_from_a_converted_image_vit(data_dir, tmp_path):
  config = tiny_config(data_dir)
  model = config.model
  # No class token: the demo model has none, so the forward pass can be compared below.
  vit = foreign.image_vit_params(width=model.hidden_size, depth=model.num_layers,
                                 mlp_dim=model.mlp_dim, num_heads=model.num_heads,
                                 patch=model.patch_size[1:], grid=(4, 4),  # 32 x 32 crops
                                 classifier='gap')
  foreign.write_big_vision_npz(str(tmp_path / 'vit.npz'), vit)
  convert_checkpoint.convert_checkpoint('big_vision_vit', str(tmp_path / 'vit.npz'),
                                        str(tmp_path / 'converted'), config=config)
  converted = flat(checkpoint.read_params(tmp_path / 'converted'))
  config.init_from = ml_collections.ConfigDict(dict(path=str(tmp_path / 'converted')))
  initial = initial_params(config)
  params = flat(initial)
  assert sorted(name for name in params if name.startswith('backbone/')) == sorted(converted)
  for name, value in converted.items():
    np.testing.assert_array_equal(params[name], value, err_msg=name)
  # The ViT's weights arrived (not a coincidence of two inits): the central frame of the kernel.
  np.testing.assert_array_equal(params['backbone/embedding/kernel'][1],
                                vit['embedding']['kernel'])
  for name in ('heads/synthetic_loc/output/kernel', 'heads/synthetic_cls/output/kernel'):
    np.testing.assert_array_equal(params[name], 0.0)
  # The run starts from the image ViT's function: every frame of a static clip gives its tokens.
  image = np.random.default_rng(3).standard_normal((1, 32, 32, 3)).astype(np.float32)
  backbone = state_lib.make_backbone(config.model)
  tokens, _ = backbone.apply({'params': initial['backbone']},
                             np.repeat(image[:, None], 8, axis=1), train=False)
  image_tokens, _ = test_convert.image_vit_forward(vit, image)
  for frame in range(tokens.shape[1]):
    np.testing.assert_allclose(tokens[:, frame], image_tokens, atol=1e-4)
