"""VideoMAE, V-JEPA 2 and Hugging Face ViViT checkpoints convert to our ViViT with their numerics.

Each test writes a tiny checkpoint in the foreign format (tests/video_references.py: the reference's
parameter names and shapes), converts it, runs it (through tools.predict where it has a head) and
compares with a numpy statement of the reference's forward pass, within 1e-4 relative.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import video_references as ref

from vivit_cofinetune.models import attention
from vivit_cofinetune.models import convert
from vivit_cofinetune.models import torch_files
from vivit_cofinetune.models import video_checkpoints
from vivit_cofinetune.models import vivit
from vivit_cofinetune.tools import convert_checkpoint
from vivit_cofinetune.tools import predict

CLIP = (4, 8, 8)  # T, H, W: a (2, 2, 2) token grid with 2x4x4 tubelets


def _video(seed, shape=CLIP, batch=2):
  return np.random.default_rng(seed).standard_normal((batch, *shape, 3)).astype(np.float32)


def _close(ours, reference):
  ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
  assert ours.shape == reference.shape
  error = np.abs(ours - reference).max() / np.abs(reference).max()
  assert error < 1e-4, f'relative error {error:.2e}'


def _features(conversion, video):
  """(tokens [B, N, D], pooled) of the converted backbone, run by our model."""
  model = vivit.ViViT(**conversion.model_config)
  tokens, pooled = model.apply({'params': conversion.backbone}, jnp.asarray(video), train=False)
  return np.asarray(tokens).reshape(video.shape[0], -1, tokens.shape[-1]), pooled


def _hf_config(model_type, **fields):
  sizes = dict(hidden_size=ref.WIDTH, num_hidden_layers=ref.DEPTH, num_attention_heads=ref.HEADS,
               intermediate_size=ref.MLP, patch_size=ref.PATCH[1])
  return dict(model_type=model_type, **sizes, **fields)


# ---------------------------------------------------------------------------------------------
# The 3D rotary position code, against V-JEPA 2's maths in numpy.


def test_rope_3d_matches_numpy_statement_of_vjepa2():
  grid = (2, 3, 4)  # distinct sizes, so a swapped axis fails
  x = np.random.default_rng(0).standard_normal((1, 24, 2, 16)).astype(np.float32)  # K=16: 12 rotated
  expected = ref.vjepa2_rope(x.transpose(0, 2, 1, 3), grid).transpose(0, 2, 1, 3)
  _close(attention.rope_3d(jnp.asarray(x), grid), expected)
  np.testing.assert_array_equal(np.asarray(attention.rope_3d(jnp.asarray(x), grid))[..., 12:],
                                x[..., 12:])


# ---------------------------------------------------------------------------------------------
# Reading PyTorch files without PyTorch.


def test_torch_file_reader_rebuilds_strided_and_offset_tensors(tmp_path):
  rng = np.random.default_rng(1)
  state = {'a.weight': rng.standard_normal((3, 5)).astype(np.float32),
           'a.bias': rng.standard_normal(5).astype(np.float32),
           'nested': {'b': rng.standard_normal((2, 2, 2)).astype(np.float32)}, 'epoch': 3}
  path = str(tmp_path / 'model.pth')
  ref.write_torch_file(path, state, transpose_some=True)
  loaded = torch_files.load(path)
  np.testing.assert_array_equal(loaded['a.weight'], state['a.weight'])
  np.testing.assert_array_equal(loaded['a.bias'], state['a.bias'])
  np.testing.assert_array_equal(loaded['nested']['b'], state['nested']['b'])
  assert loaded['epoch'] == 3


class _RunsACommand:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f'touch {self.marker}',)


def test_malicious_pickle_is_refused_without_running(tmp_path):
  marker = tmp_path / 'ran'
  path = str(tmp_path / 'evil.pth')
  import pickle  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', pickle.dumps({'weight': _RunsACommand(marker)}, protocol=2))
  with pytest.raises(torch_files.UnsafePickleError, match=r'global (posix|os)\.system'):
    torch_files.load(path)
  assert not marker.exists()
  with pytest.raises(torch_files.UnsafePickleError, match='system'):
    video_checkpoints.convert('videomae', path)
  assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# VideoMAE.


# An epsilon of 0.5 changes every LayerNorm's output well beyond 1e-4: it shows config.json's
# epsilon reaches the model (1e-12 and our default 1e-6 differ by less than the tolerance).
@pytest.mark.parametrize('bias_names, epsilon', [('new', 1e-12), ('old', 0.5)])
def test_hf_videomae_base_features_match_reference(tmp_path, bias_names, epsilon):
  blocks, common = ref.vit_blocks(2, key_bias=False)
  directory = str(tmp_path / 'videomae')
  ref.write_hf_directory(directory, ref.hf_videomae_state(blocks, common, model='base',
                                                          bias_names=bias_names),
                         _hf_config('videomae', tubelet_size=ref.PATCH[0], num_frames=CLIP[0],
                                    image_size=CLIP[1], layer_norm_eps=epsilon, hidden_act='gelu',
                                    use_mean_pooling=True))
  conversion = video_checkpoints.convert('videomae', directory)
  video = _video(3)
  tokens, pooled = _features(conversion, video)
  expected, _, _ = ref.videomae_forward(video, blocks, common, epsilon=epsilon, mean_pooling=True)
  _close(tokens, expected)
  assert 'fc_norm' in ' '.join(conversion.fresh)  # the base model has none: made fresh, and said
  assert conversion.model_config.layer_norm_epsilon == epsilon
  assert not conversion.model_config.key_bias


def test_hf_videomae_classification_logits_through_predict(tmp_path):
  blocks, common = ref.vit_blocks(4, key_bias=False)
  directory = str(tmp_path / 'videomae')
  ref.write_hf_directory(directory, ref.hf_videomae_state(blocks, common, model='classification'),
                         _hf_config('videomae', tubelet_size=ref.PATCH[0], num_frames=CLIP[0],
                                    image_size=CLIP[1], layer_norm_eps=1e-12, hidden_act='gelu',
                                    use_mean_pooling=True))
  output = str(tmp_path / 'converted')
  convert_checkpoint.convert_checkpoint('videomae', directory, output)
  video = _video(5)
  outputs = predict.predict(output, video)
  tokens, pooled, logits = ref.videomae_forward(video, blocks, common, epsilon=1e-12,
                                                mean_pooling=True)
  _close(outputs['logits'], logits)
  _close(outputs['pooled'], pooled)
  _close(outputs['tokens'].reshape(tokens.shape), tokens)


def test_hf_videomae_pretraining_encoder_drops_decoder(tmp_path):
  blocks, common = ref.vit_blocks(6, key_bias=False)
  directory = str(tmp_path / 'videomae')
  ref.write_hf_directory(directory, ref.hf_videomae_state(blocks, common, model='pretraining'),
                         _hf_config('videomae', tubelet_size=ref.PATCH[0], num_frames=CLIP[0],
                                    image_size=CLIP[1], layer_norm_eps=1e-12, hidden_act='gelu',
                                    use_mean_pooling=False))
  conversion = video_checkpoints.convert('videomae', directory)
  video = _video(7)
  tokens, _ = _features(conversion, video)
  expected, _, _ = ref.videomae_forward(video, blocks, common, epsilon=1e-12, mean_pooling=False)
  _close(tokens, expected)
  assert {'mask_token', 'encoder_to_decoder.weight', 'decoder.norm.weight'} <= set(conversion.dropped)


@pytest.mark.slow  # compiles a model on a longer clip or through predict (5-9 s)
def test_original_videomae_pth_logits_through_predict(tmp_path):
  blocks, common = ref.vit_blocks(8, key_bias=False)
  path = str(tmp_path / 'videomae_finetuned.pth')
  ref.write_torch_file(path, {'model': ref.original_videomae_state(blocks, common, finetuned=True)})
  output = str(tmp_path / 'converted')
  convert_checkpoint.convert_checkpoint('videomae', path, output, input_shape=CLIP,
                                        num_heads=ref.HEADS)
  video = _video(9)
  outputs = predict.predict(output, video)
  _, pooled, logits = ref.videomae_forward(video, blocks, common, epsilon=1e-6, mean_pooling=True)
  _close(outputs['logits'], logits)
  _close(outputs['pooled'], pooled)


def test_original_videomae_pretraining_pth_encoder(tmp_path):
  blocks, common = ref.vit_blocks(10, key_bias=False)
  path = str(tmp_path / 'videomae_pretrain.pth')
  ref.write_torch_file(path, {'model': ref.original_videomae_state(blocks, common, finetuned=False)})
  conversion = video_checkpoints.convert('videomae', path, clip_shape=CLIP, num_heads=ref.HEADS)
  video = _video(11)
  tokens, _ = _features(conversion, video)
  expected, _, _ = ref.videomae_forward(video, blocks, common, epsilon=1e-6, mean_pooling=False)
  _close(tokens, expected)
  assert 'decoder.blocks.0.norm1.weight' in conversion.dropped


def test_original_file_of_unknown_width_asks_for_num_heads(tmp_path):
  blocks, common = ref.vit_blocks(12, key_bias=False)
  path = str(tmp_path / 'videomae.pth')
  ref.write_torch_file(path, ref.original_videomae_state(blocks, common, finetuned=True))
  with pytest.raises(video_checkpoints.MissingField, match='--num_heads'):
    video_checkpoints.convert('videomae', path, clip_shape=CLIP)


# ---------------------------------------------------------------------------------------------
# V-JEPA 2.


def test_hf_vjepa2_features_match_reference(tmp_path):
  blocks, common = ref.vit_blocks(13)
  directory = str(tmp_path / 'vjepa2')
  ref.write_hf_directory(directory, ref.hf_vjepa2_state(blocks, common),
                         _hf_config('vjepa2', tubelet_size=ref.PATCH[0], frames_per_clip=CLIP[0],
                                    crop_size=CLIP[1], mlp_ratio=ref.MLP / ref.WIDTH,
                                    layer_norm_eps=1e-6, hidden_act='gelu'))
  conversion = video_checkpoints.convert('vjepa2', directory)
  assert conversion.model_config.position_embedding == 'rope_3d'
  video = _video(14)
  tokens, _ = _features(conversion, video)
  _close(tokens, ref.vjepa2_forward(video, blocks, common))
  assert 'predictor.layernorm.weight' in conversion.dropped


def test_original_vjepa2_checkpoint_reads_the_target_encoder(tmp_path):
  blocks, common = ref.vit_blocks(15)
  path = str(tmp_path / 'vitl.pt')
  ref.write_torch_file(path, ref.original_vjepa2_checkpoint(blocks, common))
  conversion = video_checkpoints.convert('vjepa2', path, clip_shape=CLIP, num_heads=ref.HEADS)
  video = _video(16)
  tokens, _ = _features(conversion, video)
  _close(tokens, ref.vjepa2_forward(video, blocks, common))


# ---------------------------------------------------------------------------------------------
# Hugging Face ViViT, and other clip shapes.


def _vivit_directory(tmp_path, blocks, common, clip, classification=True):
  directory = str(tmp_path / 'vivit')
  grid = tuple(size // patch for size, patch in zip(clip, ref.PATCH))
  state = ref.hf_vivit_state(blocks, common, grid=grid, classification=classification)
  ref.write_hf_directory(directory, state, _hf_config(
      'vivit', tubelet_size=list(ref.PATCH), num_frames=clip[0], image_size=clip[1],
      hidden_act='gelu_fast', layer_norm_eps=1e-6))
  return directory, state


@pytest.mark.slow  # compiles a model on a longer clip or through predict (5-9 s)
def test_hf_vivit_classification_logits_through_predict(tmp_path):
  blocks, common = ref.vit_blocks(17)
  directory, state = _vivit_directory(tmp_path, blocks, common, CLIP)
  output = str(tmp_path / 'converted')
  convert_checkpoint.convert_checkpoint('hf_vivit', directory, output)
  video = _video(18)
  outputs = predict.predict(output, video)
  hidden, logits = ref.vivit_forward(video, blocks, common,
                                     state['vivit.embeddings.position_embeddings'])
  _close(outputs['logits'], logits)
  _close(outputs['tokens'].reshape(hidden[:, 1:].shape), hidden[:, 1:])


@pytest.mark.slow  # compiles a model on a longer clip or through predict (5-9 s)
def test_sixteen_frame_vivit_finetunes_at_thirty_two_frames(tmp_path):
  trained = (16, 8, 8)
  blocks, common = ref.vit_blocks(19)
  directory, state = _vivit_directory(tmp_path, blocks, common, trained, classification=False)
  conversion = video_checkpoints.convert('hf_vivit', directory, clip_shape=(32, 8, 8))
  assert 'interpolated over (t, h, w) from (8, 2, 2) to (16, 2, 2)' in conversion.position
  # Corner-aligned linear interpolation along time, stated by hand: new frame i sits at old
  # position i * 7 / 15.
  old = state['embeddings.position_embeddings'][0, 1:].reshape(8, 2, 2, -1)
  position = np.arange(16) * 7 / 15
  low = np.floor(position).astype(int)
  high = np.minimum(low + 1, 7)
  fraction = (position - low)[:, None, None, None]
  expected = (1 - fraction) * old[low] + fraction * old[high]
  ours = conversion.backbone['encoder']['pos_embedding']
  _close(ours[0, 1:].reshape(16, 2, 2, -1), expected)
  np.testing.assert_array_equal(ours[:, :1], state['embeddings.position_embeddings'][:, :1])
  video = _video(20, (32, 8, 8), batch=1)
  tokens, _ = _features(conversion, video)
  position_embeddings = np.concatenate([ours[:, :1], expected.reshape(1, -1, ref.WIDTH)], 1)
  hidden, _ = ref.vivit_forward(video, blocks, common, position_embeddings)
  _close(tokens, hidden[:, 1:])


@pytest.mark.slow  # compiles a model on a longer clip or through predict (5-9 s)
def test_videomae_sinusoid_regenerated_for_another_clip_shape(tmp_path):
  blocks, common = ref.vit_blocks(21, key_bias=False)
  path = str(tmp_path / 'videomae.pth')
  ref.write_torch_file(path, ref.original_videomae_state(blocks, common, finetuned=False))
  conversion = video_checkpoints.convert('videomae', path, clip_shape=(8, 8, 12), num_heads=ref.HEADS)
  assert 'regenerated for 24 tokens' in conversion.position
  _close(conversion.backbone['encoder']['pos_embedding'], ref.sinusoid_table(24, ref.WIDTH))
  video = _video(22, (8, 8, 12), batch=1)
  tokens, _ = _features(conversion, video)
  expected, _, _ = ref.videomae_forward(video, blocks, common, epsilon=1e-6, mean_pooling=False)
  _close(tokens, expected)


@pytest.mark.slow  # compiles a model on a longer clip or through predict (5-9 s)
def test_vjepa2_needs_nothing_at_another_clip_shape(tmp_path):
  blocks, common = ref.vit_blocks(23)
  path = str(tmp_path / 'vitl.pt')
  ref.write_torch_file(path, ref.original_vjepa2_checkpoint(blocks, common))
  conversion = video_checkpoints.convert('vjepa2', path, clip_shape=(8, 8, 8), num_heads=ref.HEADS)
  assert 'nothing to resize' in conversion.position
  assert 'pos_embedding' not in conversion.backbone['encoder']
  video = _video(24, (8, 8, 8), batch=1)
  tokens, _ = _features(conversion, video)
  _close(tokens, ref.vjepa2_forward(video, blocks, common))


def test_unrolled_layers_convert_too(tmp_path):
  blocks, common = ref.vit_blocks(25)
  directory, _ = _vivit_directory(tmp_path, blocks, common, CLIP, classification=False)
  stacked = video_checkpoints.convert('hf_vivit', directory)
  unrolled = video_checkpoints.convert('hf_vivit', directory, scan_layers=False)
  assert 'layers_1' in unrolled.backbone['encoder'] and not unrolled.model_config.scan_layers
  restacked = convert.stack_layers(unrolled.backbone)
  jax.tree.map(np.testing.assert_array_equal, restacked, stacked.backbone)
