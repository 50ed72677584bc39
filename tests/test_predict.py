"""tools/predict.py: a converted Scenic ViViT predicts what Scenic's own model computes.

Scenic checkpoints are written by tests/foreign_checkpoints.py; the numpy Scenic forward pass is
test_convert.scenic_vivit_forward.
"""
import errno
import json
import os
import subprocess
import sys
import types

import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

import foreign_checkpoints as foreign
import test_convert
from vivit_cofinetune import checkpoint
from vivit_cofinetune import optim
from vivit_cofinetune import state as state_lib
from vivit_cofinetune.models import vivit
from vivit_cofinetune.tools import convert_checkpoint
from vivit_cofinetune.tools import predict

NUM_CLASSES = 5  # foreign.scenic_vivit_params' default output_projection size


def assert_relatively_close(actual, expected, tolerance=1e-4):
  """max |actual - expected| within `tolerance` of the largest |expected|."""
  error = np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max()
  assert error <= tolerance, f'relative error {error:.2e} > {tolerance}'


def convert_scenic(tmp_path, variant: str) -> tuple[str, dict]:
  """Writes a tiny Scenic checkpoint of `variant` and converts it; returns (directory, params)."""
  scenic = test_convert.scenic_params(variant)
  foreign.write_scenic_checkpoint(str(tmp_path / 'scenic'), scenic)
  output = str(tmp_path / 'converted')
  # Without a CLS token a Scenic spatio-temporal and dot-product checkpoint look alike.
  convert_checkpoint.convert_checkpoint(
      'scenic_vivit', str(tmp_path / 'scenic'), output, head_name='kinetics',
      variant='factorised_dot_product' if variant == 'factorised_dot_product' else None)
  return output, scenic


@pytest.mark.parametrize('variant', vivit.VARIANTS)
def test_converted_scenic_checkpoint_predicts_scenic_logits(tmp_path, variant):
  directory, scenic = convert_scenic(tmp_path, variant)
  video = test_convert.random_video((2, 4, 12, 12, 3), seed=7)
  outputs = predict.predict(directory, video)
  tokens, pooled, logits = test_convert.scenic_vivit_forward(scenic, video, variant)
  assert outputs['task'] == 'kinetics' and outputs['logits'].shape == (2, NUM_CLASSES)
  assert_relatively_close(outputs['logits'], logits)
  assert_relatively_close(outputs['tokens'], tokens)
  if pooled is not None:
    assert_relatively_close(outputs['pooled'], pooled)


def test_one_clip_and_clip_errors(tmp_path):
  directory, scenic = convert_scenic(tmp_path, 'spatio_temporal')
  video = test_convert.random_video((4, 12, 12, 3), seed=7)
  outputs = predict.predict(directory, video)  # [T, H, W, 3] is a batch of one
  _, _, logits = test_convert.scenic_vivit_forward(scenic, video[None], 'spatio_temporal')
  assert_relatively_close(outputs['logits'], logits)
  with pytest.raises(predict.PredictError,
                     match=r'--clip: clips \[T, H, W\] = \[6, 12, 12\] \(token grid \(3, 3, 3\)\)'
                     r'.*pos_embedding'):
    predict.predict(directory, np.zeros((6, 12, 12, 3), np.float32))
  with pytest.raises(predict.PredictError, match=r'--clip.*\(4, 12, 12\)'):
    predict.predict(directory, np.zeros((4, 12, 12), np.float32))
  # uint8 pixels are normalised as training does: (x / 255 - 0.5) / 0.5 with the default mean/std.
  pixels = np.random.default_rng(3).integers(0, 256, (4, 12, 12, 3)).astype(np.uint8)
  _, _, logits = test_convert.scenic_vivit_forward(scenic, (pixels[None] / 255.0 - 0.5) / 0.5,
                                                   'spatio_temporal')
  assert_relatively_close(predict.predict(directory, pixels)['logits'], logits)


def localisation_config(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """An experiment config with a localisation and a classification head on `model_config`."""
  config = ml_collections.ConfigDict()
  config.model = model_config
  config.tasks = dict(
      ava=dict(kind='localisation', num_classes=3, head=dict(roi_size=2, sampling_ratio=1)),
      kinetics=dict(kind='classification', num_classes=NUM_CLASSES,
                    head=dict(pooling='token')))
  return config


def test_localisation_head_and_task_errors(tmp_path):
  directory, _ = convert_scenic(tmp_path, 'spatio_temporal')
  with open(os.path.join(directory, 'config.json')) as file:
    model_config = vivit.vivit_config('B/16x2', **json.load(file)['model'])
  config = localisation_config(model_config)
  video = np.zeros((4, 12, 12, 3), np.float32)
  with pytest.raises(predict.PredictError, match=r"several heads \['ava', 'kinetics'\].*--task"):
    predict.predict(directory, video, config=config)
  with pytest.raises(predict.PredictError, match='--task=kenetics: unknown task'):
    predict.predict(directory, video, config=config, task='kenetics')
  with pytest.raises(predict.PredictError, match='--boxes: task ava has a localisation head'):
    predict.predict(directory, video, config=config, task='ava')
  # The converted checkpoint has no 'ava' head: the error says which heads it does have.
  with pytest.raises(predict.PredictError, match=r"--task=ava: .*no params.*\['kinetics'\]"):
    predict.predict(directory, video, config=config, task='ava',
                    boxes=np.array([[0.1, 0.1, 0.9, 0.9]], np.float32))
  with pytest.raises(predict.PredictError,
                     match='--boxes: task kinetics has a classification head'):
    predict.predict(directory, video, config=config, task='kinetics',
                    boxes=np.array([[0.1, 0.1, 0.9, 0.9]], np.float32))


def test_localisation_head_gives_per_box_logits(tmp_path):
  directory, scenic = convert_scenic(tmp_path, 'spatio_temporal')
  # The converted classification head's params, filed as a localisation head with 1 x 1 RoIs.
  params = checkpoint.read_params(directory)
  params['heads'] = {'ava': params['heads']['kinetics']}
  localisation = tmp_path / 'localisation'
  ocp.PyTreeCheckpointer().save(localisation / 'params', params)
  with open(os.path.join(directory, 'config.json')) as file:
    description = json.load(file)
  description['heads'] = {'ava': {'kind': 'localisation', 'num_classes': NUM_CLASSES,
                                  'roi_size': 1, 'sampling_ratio': 1}}
  (localisation / 'config.json').write_text(json.dumps(description))
  video = test_convert.random_video((2, 4, 12, 12, 3), seed=3)
  # On the 3 x 3 token grid one aligned sample at the box centre: token (1, 1), then token (0, 0).
  boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1 / 3, 1 / 3]], np.float32)
  outputs = predict.predict(localisation, video, boxes=boxes)
  tokens, _, _ = test_convert.scenic_vivit_forward(scenic, video, 'spatio_temporal')
  frame = tokens.mean(axis=1)
  projection = scenic['output_projection']
  expected = np.stack([frame[:, 1, 1], frame[:, 0, 0]], axis=1) @ projection['kernel']
  assert outputs['logits'].shape == (2, 2, NUM_CLASSES)
  assert_relatively_close(outputs['logits'], expected + projection['bias'])
  with pytest.raises(predict.PredictError, match=r'--boxes: expected \[N, 4\] or \[2, N, 4\]'):
    predict.predict(localisation, video, boxes=boxes[None])
  with pytest.raises(predict.PredictError, match=r'--boxes.*\[0, 1\]'):
    predict.predict(localisation, video, boxes=boxes * 12)


def test_training_workdir_needs_the_config(tmp_path):
  directory, scenic = convert_scenic(tmp_path, 'factorised_self_attention')
  with open(os.path.join(directory, 'config.json')) as file:
    model_config = vivit.vivit_config('B/16x2', **json.load(file)['model'])
  config = ml_collections.ConfigDict(dict(model=model_config, tasks=dict(
      kinetics=dict(kind='classification', num_classes=NUM_CLASSES, head=dict(pooling='mean')))))
  # A workdir as the trainer writes it, holding the converted params.
  params = checkpoint.read_params(directory)
  optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(name='sgd')))
  manager = checkpoint.make_manager(tmp_path / 'workdir', config)
  checkpoint.save(manager, 7, state_lib.init_state(params, optimizer), {'kinetics': 7})
  manager.wait_until_finished()
  video = test_convert.random_video((1, 4, 12, 12, 3), seed=9)
  outputs = predict.predict(tmp_path / 'workdir', video, config=config)
  _, _, logits = test_convert.scenic_vivit_forward(scenic, video, 'factorised_self_attention')
  assert_relatively_close(outputs['logits'], logits)
  with pytest.raises(predict.PredictError, match='no config.json.*--config'):
    predict.predict(tmp_path / 'workdir', video)
  with pytest.raises(predict.PredictError, match='--checkpoint=.*nowhere: expected'):
    predict.predict(tmp_path / 'nowhere', video)


# Saves the params of a converted checkpoint (argv[1]) as the train state of a workdir (argv[2]),
# replicated over 8 emulated devices, as a multi-device training run writes it.
SAVE_ON_EIGHT_DEVICES = """
import os, sys
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'
import jax, ml_collections
from vivit_cofinetune import checkpoint, optim, state
mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
params = jax.device_put(checkpoint.read_params(sys.argv[1]), replicated)
manager = checkpoint.make_manager(sys.argv[2],
                                  ml_collections.ConfigDict(dict(async_checkpointing=False)))
optimizer = optim.make_optimizer(ml_collections.ConfigDict(dict(name='sgd')))
checkpoint.save(manager, 1, state.init_state(params, optimizer), {'kinetics': 1})
manager.wait_until_finished()
"""


@pytest.mark.slow
def test_workdir_written_on_more_devices(tmp_path):
  directory, scenic = convert_scenic(tmp_path, 'spatio_temporal')
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  subprocess.run(
      [sys.executable, '-c', SAVE_ON_EIGHT_DEVICES, directory, str(tmp_path / 'workdir')],
      cwd=root, check=True, capture_output=True)
  with open(os.path.join(directory, 'config.json')) as file:
    model_config = vivit.vivit_config('B/16x2', **json.load(file)['model'])
  config = ml_collections.ConfigDict(dict(model=model_config, tasks=dict(
      kinetics=dict(kind='classification', num_classes=NUM_CLASSES, head=dict(pooling='token')))))
  video = test_convert.random_video((1, 4, 12, 12, 3), seed=10)
  outputs = predict.predict(tmp_path / 'workdir', video, config=config)
  _, _, logits = test_convert.scenic_vivit_forward(scenic, video, 'spatio_temporal')
  assert_relatively_close(outputs['logits'], logits)


@pytest.mark.slow
def test_command_line_writes_the_prediction(tmp_path):
  directory, scenic = convert_scenic(tmp_path, 'factorised_encoder')
  video = test_convert.random_video((4, 12, 12, 3), seed=8)
  np.save(tmp_path / 'clip.npy', video)
  command = [sys.executable, '-m', 'vivit_cofinetune.tools.predict', f'--checkpoint={directory}',
             f'--clip={tmp_path / "clip.npy"}', f'--output={tmp_path / "out.npz"}']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  assert 'kinetics (classification): logits [1, 5], tokens [1, 2, 3, 3, 16]' in done.stdout
  written = np.load(tmp_path / 'out.npz')
  _, pooled, logits = test_convert.scenic_vivit_forward(scenic, video[None], 'factorised_encoder')
  assert_relatively_close(written['logits'], logits)
  assert_relatively_close(written['pooled'], pooled)
  failed = subprocess.run(command[:-1] + ['--task=ava', f'--output={tmp_path / "x.npz"}'], cwd=root,
                          capture_output=True, text=True, check=False)
  assert failed.returncode != 0 and '--task=ava: unknown task' in failed.stderr


def run_main(**flag_values) -> str:
  """predict.main with these flag values; asserts it stopped with one line and returns it."""
  values = dict(dict(checkpoint=None, config=None, clip=None, boxes=None, task=None, output=None),
                **flag_values)
  holders = {name: types.SimpleNamespace(value=value) for name, value in values.items()}
  with pytest.raises(SystemExit) as exit_info:
    predict.main(['predict'], holders)
  message = str(exit_info.value.code)
  assert message.startswith('predict: ') and '\n' not in message, message
  return message


@pytest.fixture
def converted_and_clip(tmp_path) -> tuple[str, str]:
  directory, _ = convert_scenic(tmp_path, 'spatio_temporal')
  np.save(tmp_path / 'clip.npy', test_convert.random_video((4, 12, 12, 3), seed=3))
  return directory, str(tmp_path / 'clip.npy')


def test_main_names_an_output_folder_that_does_not_exist_before_any_work(tmp_path):
  # The checkpoint does not exist either: the output is checked first, so no work is wasted.
  output = tmp_path / 'missing' / 'out.npz'
  assert run_main(checkpoint=str(tmp_path / 'nowhere'), clip='clip.npy', output=str(output)) == (
      f'predict: --output={output}: folder {output.parent} does not exist; create it or choose '
      'another')
  assert run_main(checkpoint=str(tmp_path), clip='clip.npy', output=str(tmp_path)).endswith(
      'is a directory; expected a .npz file name')


def test_main_names_a_checkpoint_that_is_not_one(tmp_path, converted_and_clip):
  _, clip = converted_and_clip
  output = str(tmp_path / 'out.npz')
  assert f'--checkpoint={tmp_path / "nowhere"}: expected a converted checkpoint' in run_main(
      checkpoint=str(tmp_path / 'nowhere'), clip=clip, output=output)
  # params/ there, but not an orbax checkpoint.
  damaged = tmp_path / 'damaged'
  (damaged / 'params').mkdir(parents=True)
  (damaged / 'params' / 'garbage').write_text('not a checkpoint')
  (damaged / 'config.json').write_text(
      (tmp_path / 'converted' / 'config.json').read_text())
  assert f'--checkpoint={damaged}: cannot read its params' in run_main(
      checkpoint=str(damaged), clip=clip, output=output)
  (damaged / 'config.json').write_text('{"model": ')
  assert f'{damaged / "config.json"}: cannot read it as JSON' in run_main(
      checkpoint=str(damaged), clip=clip, output=output)
  assert not (tmp_path / 'out.npz').exists()


def test_main_names_an_unreadable_clip_and_an_unknown_task(tmp_path, converted_and_clip):
  directory, clip = converted_and_clip
  (tmp_path / 'bad.npy').write_text('not numpy')
  output = str(tmp_path / 'out.npz')
  assert f'--clip={tmp_path / "bad.npy"}: cannot read a .npy array' in run_main(
      checkpoint=directory, clip=str(tmp_path / 'bad.npy'), output=output)
  assert '--task=ava: unknown task' in run_main(checkpoint=directory, clip=clip, task='ava',
                                                output=output)


def test_main_names_an_output_it_cannot_write(tmp_path, converted_and_clip, monkeypatch):
  directory, clip = converted_and_clip

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(np, 'savez', full_disk)
  assert run_main(checkpoint=directory, clip=clip, output=str(tmp_path / 'out.npz')) == (
      f'predict: --output={tmp_path / "out.npz"}: cannot write it (No space left on device)')
