"""Converting image-ViT .npz and Scenic ViViT checkpoints into our params (models/convert.py, the CLI).

The foreign checkpoints are written by tests/foreign_checkpoints.py in those projects' layouts; the
reference forward passes below are numpy, in Scenic's / big_vision's parameterisation.
"""
import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import foreign_checkpoints as foreign
from vivit_cofinetune import checkpoint
from vivit_cofinetune import param_paths
from vivit_cofinetune.models import convert
from vivit_cofinetune.models import heads
from vivit_cofinetune.models import vivit
from vivit_cofinetune.tools import convert_checkpoint as convert_tool
from vivit_cofinetune.tools import predict

WIDTH, DEPTH, MLP_DIM, HEADS = 16, 2, 32, 2


# ---------------------------------------------------------------------------------------------
# Numpy reference of the Scenic / big_vision transformer (flax LayerNorm eps 1e-6, tanh GELU).


def np_layer_norm(x, params):
  mean = x.mean(-1, keepdims=True)
  variance = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(variance + 1e-6) * params['scale'] + params['bias']


def np_gelu(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def np_softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_attend(query, key, value):
  """Softmax attention along axis -3 of [..., n, heads, k]."""
  logits = np.einsum('...qhk,...vhk->...hqv', query, key) / np.sqrt(query.shape[-1])
  return np.einsum('...hqv,...vhk->...qhk', np_softmax(logits), value)


def np_project(x, params):
  return np.einsum('...d,dhk->...hk', x, params['kernel']) + params['bias']


def np_output(x, params):
  return np.einsum('...hk,hkd->...d', x, params['kernel']) + params['bias']


def np_self_attention(x, params):
  """Joint attention over axis -2 of [..., n, D]."""
  q, k, v = (np_project(x, params[name]) for name in ('query', 'key', 'value'))
  return np_output(np_attend(q, k, v), params['out'])


def np_attention_along(x, params, axis):
  """x [B, t, s, D]: attention over time (axis 1) or space (axis 2) only."""
  if axis == 1:
    return np_self_attention(x.swapaxes(1, 2), params).swapaxes(1, 2)
  return np_self_attention(x, params)


def np_dot_product_factorised_attention(x, params):
  """x [B, t, s, D]: the first half of the heads attend over time, the second over space."""
  q, k, v = (np_project(x, params[name]) for name in ('query', 'key', 'value'))
  half = q.shape[-2] // 2
  time = np_attend(*(y[..., :half, :].swapaxes(1, 2) for y in (q, k, v))).swapaxes(1, 2)
  space = np_attend(*(y[..., half:, :] for y in (q, k, v)))
  return np_output(np.concatenate([time, space], axis=-2), params['out'])


def np_mlp(x, params):
  hidden = np_gelu(x @ params['Dense_0']['kernel'] + params['Dense_0']['bias'])
  return hidden @ params['Dense_1']['kernel'] + params['Dense_1']['bias']


def np_block(x, block, attend=np_self_attention):
  x = x + attend(np_layer_norm(x, block['LayerNorm_0']), block['MultiHeadDotProductAttention_0'])
  return x + np_mlp(np_layer_norm(x, block['LayerNorm_1']), block['MlpBlock_0'])


def np_embed(video, kernel, bias):
  """video [B, T, H, W, 3], kernel [pt, ph, pw, 3, D] or [ph, pw, 3, D] -> [B, t, h, w, D]."""
  if kernel.ndim == 4:
    kernel = kernel[None]
  pt, ph, pw = kernel.shape[:3]
  b, frames, height, width, _ = video.shape
  t, h, w = frames // pt, height // ph, width // pw
  patches = video[:, :t * pt, :h * ph, :w * pw].reshape(b, t, pt, h, ph, w, pw, 3)
  patches = patches.transpose(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, t, h, w, -1)
  return patches @ kernel.reshape(-1, kernel.shape[-1]) + bias


def np_encoder(x, encoder, cls=None, attend=np_self_attention, block=np_block):
  """Scenic encoder on [B, N, D]: class token, position embedding, blocks, final LayerNorm."""
  if cls is not None:
    x = np.concatenate([np.broadcast_to(cls, (x.shape[0], 1, x.shape[-1])), x], axis=1)
  x = x + encoder['posembed_input']['pos_embedding']
  for index in range(sum(name.startswith('encoderblock_') for name in encoder)):
    x = block(x, encoder[f'encoderblock_{index}'], attend)
  return np_layer_norm(x, encoder['encoder_norm'])


def scenic_vivit_forward(params, video, variant):
  """Scenic ViViT in numpy: (tokens [B, t, h, w, D], pooled [B, D] or None, logits [B, C])."""
  x = np_embed(video, params['embedding']['kernel'], params['embedding']['bias'])
  b, t, h, w, d = x.shape
  if variant == 'factorised_encoder':
    cls = params.get('cls_SpatialTransformer')
    frames = np_encoder(x.reshape(b * t, h * w, d), params['SpatialTransformer'], cls)
    tokens = frames[:, int(cls is not None):].reshape(b, t, h, w, d)
    per_frame = (frames[:, 0] if cls is not None else frames.mean(1)).reshape(b, t, d)
    cls = params.get('cls_TemporalTransformer')
    video_tokens = np_encoder(per_frame, params['TemporalTransformer'], cls)
    pooled = video_tokens[:, 0] if cls is not None else video_tokens.mean(1)
    representation = pooled
  else:
    cls = params.get('cls')
    if variant == 'factorised_self_attention':
      def block(x, block_params, attend):
        del attend
        grid = x.reshape(b, t, h * w, d)
        for axis, name in ((1, 'time'), (2, 'space')):
          grid = grid + np_attention_along(np_layer_norm(grid, block_params[f'LayerNorm_{name}']),
                                           block_params[f'MultiHeadDotProductAttention_{name}'], axis)
        x = grid.reshape(b, t * h * w, d)
        return x + np_mlp(np_layer_norm(x, block_params['LayerNorm_mlp']), block_params['MlpBlock'])
      out = np_encoder(x.reshape(b, -1, d), params['Transformer'], cls, block=block)
    elif variant == 'factorised_dot_product':
      def attend(x, attention_params):
        return np_dot_product_factorised_attention(
            x.reshape(b, t, h * w, d), attention_params).reshape(b, -1, d)
      out = np_encoder(x.reshape(b, -1, d), params['Transformer'], cls, attend=attend)
    else:
      out = np_encoder(x.reshape(b, -1, d), params['Transformer'], cls)
    tokens = out[:, int(cls is not None):].reshape(b, t, h, w, d)
    pooled = out[:, 0] if cls is not None else None
    representation = pooled if cls is not None else out.mean(1)
  projection = params['output_projection']
  return tokens, pooled, representation @ projection['kernel'] + projection['bias']


def image_vit_forward(params, images):
  """big_vision ViT in numpy on images [B, H, W, 3]: (tokens [B, gh, gw, D], cls output or None)."""
  x = np_embed(images[:, None], params['embedding']['kernel'], params['embedding']['bias'])[:, 0]
  b, gh, gw, d = x.shape
  x = x.reshape(b, gh * gw, d) + params['pos_embedding']
  has_cls = 'cls' in params
  if has_cls:
    x = np.concatenate([np.broadcast_to(params['cls'], (b, 1, d)), x], axis=1)
  for index in range(DEPTH):
    x = np_block(x, params['Transformer'][f'encoderblock_{index}'])
  x = np_layer_norm(x, params['Transformer']['encoder_norm'])
  return x[:, int(has_cls):].reshape(b, gh, gw, d), (x[:, 0] if has_cls else None)


# ---------------------------------------------------------------------------------------------
# Helpers.


def model_config(variant='spatio_temporal', **overrides):
  fields = dict(variant=variant, hidden_size=WIDTH, num_layers=DEPTH, mlp_dim=MLP_DIM,
                num_heads=HEADS, num_temporal_layers=1,
                classifier='token' if variant in ('spatio_temporal', 'factorised_encoder') else 'mean')
  return vivit.vivit_config('Ti/4x2', **{**fields, **overrides})


def apply(config, params, video):
  tokens, pooled = vivit.ViViT(**config).apply({'params': params}, jnp.asarray(video), train=False)
  return np.asarray(tokens), None if pooled is None else np.asarray(pooled)


def init(config, video, seed=0):
  """Stand-in for fresh params: our model's param shapes for clips like `video`, seeded random
  values (a real init costs seconds per model on CPU; the converter only reads shapes and values)."""
  shapes = jax.eval_shape(lambda: vivit.ViViT(**config).init(
      jax.random.PRNGKey(0), jnp.asarray(video), train=False))['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda leaf: 0.1 * rng.standard_normal(leaf.shape).astype(np.float32),
                      nn.meta.unbox(shapes))


def random_video(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def write_image_vit(tmp_path, classifier='token', layout='big_vision', grid=(3, 3)):
  params = foreign.image_vit_params(width=WIDTH, depth=DEPTH, mlp_dim=MLP_DIM, num_heads=HEADS,
                                    classifier=classifier, grid=grid)
  path = str(tmp_path / f'vit_{classifier}_{layout}.npz')
  foreign.write_big_vision_npz(path, params, layout=layout)
  return path, params


def scenic_params(variant, classifier=None, **kwargs):
  classifier = classifier or ('token' if variant in ('spatio_temporal', 'factorised_encoder')
                              else 'gap')
  return foreign.scenic_vivit_params(variant, width=WIDTH, depth=DEPTH, mlp_dim=MLP_DIM,
                                     num_heads=HEADS, classifier=classifier, temporal_mlp_dim=MLP_DIM,
                                     temporal_num_heads=HEADS, **kwargs)


# ---------------------------------------------------------------------------------------------
# Loading image ViTs.


@pytest.mark.parametrize('layout', ['big_vision', 'big_vision_scan', 'vit_augreg'])
@pytest.mark.parametrize('prefix', ['', 'params/', 'opt/target/'])
def test_load_big_vision_vit_reads_every_layout_into_one(tmp_path, layout, prefix):
  params = foreign.image_vit_params(width=WIDTH, depth=DEPTH, mlp_dim=MLP_DIM, num_heads=HEADS)
  path = str(tmp_path / 'vit.npz')
  written = foreign.write_big_vision_npz(path, params, layout=layout, prefix=prefix)
  assert all(name.startswith(prefix) for name in written)
  loaded = convert.load_big_vision_vit(path)
  expected = foreign.flatten(params)
  got = param_paths.flatten(loaded)
  assert sorted(got) == sorted(expected)
  for name, value in expected.items():
    # The AugReg layout splits the token between 'cls' and a position slot: only the sum is defined.
    np.testing.assert_allclose(got[name], value, atol=1e-6, err_msg=name)


def test_load_big_vision_vit_recovers_bfloat16_and_submodels(tmp_path):
  params = foreign.image_vit_params(width=WIDTH, depth=DEPTH, mlp_dim=MLP_DIM, num_heads=HEADS)
  flat = foreign.flatten(params, 'img/')
  flat['txt/some/param'] = np.zeros(3, np.float32)
  # numpy stores bfloat16 arrays as 2-byte void, as big_vision's npz files show.
  flat = {name: np.asarray(value, jnp.bfloat16).view('V2') for name, value in flat.items()}
  path = str(tmp_path / 'two_tower.npz')
  np.savez(path, **flat)
  loaded = convert.load_big_vision_vit(path + ':img')
  expected = np.asarray(np.asarray(params['embedding']['kernel'], jnp.bfloat16), np.float32)
  assert loaded['embedding']['kernel'].dtype == np.float32
  np.testing.assert_array_equal(loaded['embedding']['kernel'], expected)


def test_load_big_vision_vit_names_file_and_missing_param(tmp_path):
  params = foreign.image_vit_params(width=WIDTH, depth=DEPTH, mlp_dim=MLP_DIM, num_heads=HEADS)
  del params['Transformer']['encoderblock_1']['LayerNorm_1']
  path = str(tmp_path / 'broken.npz')
  foreign.write_big_vision_npz(path, params)
  with pytest.raises(convert.ConversionError, match=r'broken\.npz.*encoderblock_1.*LayerNorm_1'):
    convert.load_big_vision_vit(path)
  with pytest.raises(FileNotFoundError, match='nothing.npz'):
    convert.load_big_vision_vit(str(tmp_path / 'nothing.npz'))


# ---------------------------------------------------------------------------------------------
# Inflating an image ViT.


@pytest.mark.parametrize('kernel_init', ['central_frame', 'average'])
def test_inflated_spatio_temporal_model_on_static_video_gives_image_features(tmp_path, kernel_init):
  # Without a class token, joint attention over t identical frames equals attention over one.
  path, vit_params = write_image_vit(tmp_path, classifier='gap')
  config = model_config(classifier='mean')
  image = random_video((2, 12, 12, 3))
  video = np.repeat(image[:, None], 4, axis=1)  # 4 frames, tubelets of 2 -> t = 2
  params = convert.init_from_image_vit(convert.load_big_vision_vit(path), init(config, video),
                                       config, kernel_init=kernel_init)
  tokens, _ = apply(config, params, video)
  image_tokens, _ = image_vit_forward(vit_params, image)
  for frame in range(tokens.shape[1]):
    np.testing.assert_allclose(tokens[:, frame], image_tokens, atol=1e-4)


def test_inflated_kernels_match_their_definition():
  kernel = np.random.default_rng(0).standard_normal((4, 4, 3, 8)).astype(np.float32)
  central = convert.inflate_patch_kernel(kernel, 3, 'central_frame')
  np.testing.assert_array_equal(central[1], kernel)
  np.testing.assert_array_equal(central[[0, 2]], 0)
  average = convert.inflate_patch_kernel(kernel, 4, 'average')
  np.testing.assert_allclose(average, np.stack([kernel / 4] * 4), rtol=1e-6)
  with pytest.raises(ValueError, match='kernel_init'):
    convert.inflate_patch_kernel(kernel, 2, 'random')


def test_one_tubelet_clip_with_class_token_is_the_image_vit(tmp_path):
  path, vit_params = write_image_vit(tmp_path, classifier='token', layout='vit_augreg')
  config = model_config()
  image = random_video((2, 12, 12, 3), seed=1)
  video = np.repeat(image[:, None], 2, axis=1)  # one tubelet: t = 1
  params = convert.init_from_image_vit(convert.load_big_vision_vit(path), init(config, video), config)
  tokens, cls = apply(config, params, video)
  image_tokens, image_cls = image_vit_forward(vit_params, image)
  np.testing.assert_allclose(tokens[:, 0], image_tokens, atol=1e-4)
  np.testing.assert_allclose(cls, image_cls, atol=1e-4)


def test_factorised_encoder_from_vit_gives_image_features_per_frame(tmp_path):
  path, vit_params = write_image_vit(tmp_path, classifier='token')
  config = model_config('factorised_encoder', scan_layers=False)
  frames = random_video((1, 4, 12, 12, 3), seed=2)  # a moving video: each frame on its own
  template = init(config, frames)
  params = convert.init_from_image_vit(convert.load_big_vision_vit(path), template, config,
                                       kernel_init='average')
  tokens, _ = apply(config, params, frames)
  for index in range(2):
    averaged = frames[:, 2 * index:2 * index + 2].mean(axis=1)  # 'average' kernel on a tubelet
    np.testing.assert_allclose(tokens[:, index], image_vit_forward(vit_params, averaged)[0],
                               atol=1e-4)
  fresh = jax.tree.leaves(template['temporal_encoder'])
  for kept, value in zip(jax.tree.leaves(params['temporal_encoder']), fresh):
    np.testing.assert_array_equal(kept, value)
  from_vit = convert.init_from_image_vit(convert.load_big_vision_vit(path), template, config,
                                         temporal_encoder_init='vit')
  np.testing.assert_array_equal(
      from_vit['temporal_encoder']['layers_0']['mlp']['hidden']['kernel'],
      vit_params['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']['kernel'])


def test_factorised_self_attention_temporal_init(tmp_path):
  path, vit_params = write_image_vit(tmp_path, classifier='gap')
  config = model_config('factorised_self_attention')
  image = random_video((1, 12, 12, 3), seed=3)
  video = np.repeat(image[:, None], 4, axis=1)
  template = init(config, video)
  vit = convert.load_big_vision_vit(path)
  zero = convert.init_from_image_vit(vit, template, config, temporal_attention_init='zero')
  tokens, _ = apply(config, zero, video)
  for frame in range(2):  # zero temporal output projection: every block is the image block
    np.testing.assert_allclose(tokens[:, frame], image_vit_forward(vit_params, image)[0], atol=1e-4)
  np.testing.assert_array_equal(zero['encoder']['layers']['temporal_attention']['query']['kernel'],
                                template['encoder']['layers']['temporal_attention']['query']['kernel'])
  spatial = convert.init_from_image_vit(vit, template, config, temporal_attention_init='spatial')
  attention = spatial['encoder']['layers']['temporal_attention']
  np.testing.assert_array_equal(
      attention['value']['kernel'][1],
      vit_params['Transformer']['encoderblock_1']['MultiHeadDotProductAttention_0']['value']['kernel'])


def test_factorised_dot_product_takes_the_vit_attention(tmp_path):
  path, vit_params = write_image_vit(tmp_path, classifier='gap')
  config = model_config('factorised_dot_product')
  video = random_video((1, 4, 12, 12, 3))
  params = convert.init_from_image_vit(convert.load_big_vision_vit(path), init(config, video), config)
  np.testing.assert_array_equal(
      params['encoder']['layers']['attention']['out']['kernel'][0],
      vit_params['Transformer']['encoderblock_0']['MultiHeadDotProductAttention_0']['out']['kernel'])


def test_resize_grid_matches_hand_computation():
  grid = np.array([[0., 2.], [4., 10.]])[..., None]
  resized = convert.resize_grid(grid, (3, 3))[..., 0]
  expected = np.array([[0, 1, 2], [2, 4, 6], [4, 7, 10]], np.float64)
  np.testing.assert_allclose(resized, expected, atol=1e-12)
  # Corner-aligned bilinear on a 2x3 -> 4x2 grid, computed point by point.
  grid = np.arange(6, dtype=np.float64).reshape(2, 3, 1) ** 2
  resized = convert.resize_grid(grid, (4, 2))[..., 0]
  for i in range(4):
    for j in range(2):
      y, x = i * (2 - 1) / (4 - 1), j * (3 - 1) / (2 - 1)
      y0, x0 = int(np.floor(y)), int(np.floor(x))
      y1, x1 = min(y0 + 1, 1), min(x0 + 1, 2)
      fy, fx = y - y0, x - x0
      value = ((1 - fy) * (1 - fx) * grid[y0, x0, 0] + (1 - fy) * fx * grid[y0, x1, 0]
               + fy * (1 - fx) * grid[y1, x0, 0] + fy * fx * grid[y1, x1, 0])
      assert resized[i, j] == pytest.approx(value)


def test_position_embeddings_are_resized_then_tiled_over_time(tmp_path):
  path, vit_params = write_image_vit(tmp_path, classifier='token', grid=(2, 2))
  config = model_config()
  video = random_video((1, 4, 12, 12, 3))  # grid 2 x 3 x 3
  template = init(config, video)
  params = convert.init_from_image_vit(convert.load_big_vision_vit(path), template, config,
                                       token_grid=(2, 3, 3))
  posemb = params['encoder']['pos_embedding']
  np.testing.assert_array_equal(posemb[0, 0], 0)  # big_vision adds no posemb to the token
  vit_grid = vit_params['pos_embedding'][0].reshape(2, 2, WIDTH)
  centre = vit_grid.mean(axis=(0, 1))
  frames = posemb[0, 1:].reshape(2, 3, 3, WIDTH)
  for frame in frames:
    np.testing.assert_allclose(frame[1, 1], centre, atol=1e-6)
    np.testing.assert_allclose(frame[0, 1], vit_grid[0].mean(0), atol=1e-6)
    np.testing.assert_allclose(frame[2, 2], vit_grid[1, 1], atol=1e-6)


def test_class_token_is_dropped_or_left_fresh(tmp_path):
  video = random_video((1, 2, 12, 12, 3))
  token_vit, _ = write_image_vit(tmp_path, classifier='token')
  gap_vit, _ = write_image_vit(tmp_path, classifier='gap')
  mean_config = model_config(classifier='mean')
  dropped = convert.init_from_image_vit(convert.load_big_vision_vit(token_vit),
                                        init(mean_config, video), mean_config)
  assert 'cls' not in dropped['encoder'] and dropped['encoder']['pos_embedding'].shape[1] == 9
  token_config = model_config()
  template = init(token_config, video)
  fresh = convert.init_from_image_vit(convert.load_big_vision_vit(gap_vit), template, token_config)
  np.testing.assert_array_equal(fresh['encoder']['cls'], template['encoder']['cls'])
  np.testing.assert_array_equal(fresh['encoder']['pos_embedding'][:, 0],
                                template['encoder']['pos_embedding'][:, 0])


def test_image_vit_depth_mismatch_is_a_clear_error(tmp_path):
  path, _ = write_image_vit(tmp_path)
  config = model_config(num_layers=3)
  video = random_video((1, 2, 12, 12, 3))
  with pytest.raises(convert.ConversionError, match='2 layers.*num_layers=3'):
    convert.init_from_image_vit(convert.load_big_vision_vit(path), init(config, video), config,
                                source=path)


# ---------------------------------------------------------------------------------------------
# Scenic ViViT checkpoints.


@pytest.mark.parametrize('layout', ['params', 'optimizer'])
def test_load_scenic_checkpoint_reads_both_train_states(tmp_path, layout):
  params = scenic_params('spatio_temporal')
  foreign.write_scenic_checkpoint(str(tmp_path), scenic_params('spatio_temporal', seed=9),
                                  layout=layout, step=9)
  file = foreign.write_scenic_checkpoint(str(tmp_path), params, layout=layout, step=10)
  for path in (str(tmp_path), file):  # a directory gives its latest step (10, not 9)
    loaded = convert.load_scenic_checkpoint(path)
    expected = foreign.flatten(params)
    got = param_paths.flatten(loaded)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
      np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_load_scenic_checkpoint_reads_orbax_and_reports_missing(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  params = scenic_params('factorised_encoder')
  # Newer flax writes checkpoint_<step> as an Orbax directory.
  ocp.PyTreeCheckpointer().save(str(tmp_path / 'checkpoint_3'),
                                {'params': params, 'global_step': np.asarray(3)})
  loaded = convert.load_scenic_checkpoint(str(tmp_path))
  np.testing.assert_array_equal(loaded['SpatialTransformer']['encoder_norm']['scale'],
                                params['SpatialTransformer']['encoder_norm']['scale'])
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='checkpoint_<step> in .*empty'):
    convert.load_scenic_checkpoint(str(tmp_path / 'empty'))


@pytest.mark.parametrize('variant', vivit.VARIANTS)
def test_scenic_vivit_converts_to_the_same_function(variant):
  scenic = scenic_params(variant)
  config = convert.infer_config_from_scenic(
      scenic, 'factorised_dot_product' if variant == 'factorised_dot_product' else None)
  assert config.variant == variant
  backbone, head = convert.scenic_vivit_to_ours(scenic, config)
  video = random_video((2, 4, 12, 12, 3), seed=4)
  tokens, pooled = apply(config, backbone, video)
  expected_tokens, expected_pooled, expected_logits = scenic_vivit_forward(scenic, video, variant)
  np.testing.assert_allclose(tokens, expected_tokens, atol=1e-4)
  if expected_pooled is not None:
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-4)
  pooling = 'token' if config.classifier == 'token' or variant == 'factorised_encoder' else 'mean'
  logits = heads.ClassificationHead(num_classes=5, pooling=pooling).apply(
      {'params': head}, jnp.asarray(tokens), None if pooled is None else jnp.asarray(pooled),
      train=False)
  np.testing.assert_allclose(np.asarray(logits), expected_logits, atol=1e-4)


def test_scenic_unrolled_layers_and_frame_embedding():
  scenic = scenic_params('spatio_temporal', patch=(1, 4, 4), tokens=(4, 3, 3))
  scenic['embedding']['kernel'] = scenic['embedding']['kernel'][0]  # Scenic's temporal_sampling
  config = convert.infer_config_from_scenic(scenic)
  assert config.patch_embedding == 'frame_2d' and tuple(config.patch_size) == (1, 4, 4)
  config.scan_layers = False
  backbone, _ = convert.scenic_vivit_to_ours(scenic, config)
  assert 'layers_1' in backbone['encoder']
  video = random_video((1, 4, 12, 12, 3), seed=5)
  tokens, _ = apply(config, backbone, video)
  np.testing.assert_allclose(tokens, scenic_vivit_forward(scenic, video, 'spatio_temporal')[0],
                             atol=1e-4)


def test_infer_config_from_scenic():
  config = convert.infer_config_from_scenic(scenic_params('factorised_encoder', temporal_depth=3))
  assert (config.variant, config.hidden_size, config.num_layers, config.mlp_dim, config.num_heads,
          tuple(config.patch_size), config.num_temporal_layers, config.classifier) == (
              'factorised_encoder', WIDTH, DEPTH, MLP_DIM, HEADS, (2, 4, 4), 3, 'token')
  config = convert.infer_config_from_scenic(scenic_params('factorised_self_attention'))
  assert (config.variant, config.classifier) == ('factorised_self_attention', 'mean')
  ambiguous = scenic_params('spatio_temporal', classifier='gap')
  with pytest.raises(convert.ConversionError, match='--variant'):
    convert.infer_config_from_scenic(ambiguous)
  assert convert.infer_config_from_scenic(ambiguous, 'spatio_temporal').classifier == 'mean'
  with pytest.raises(convert.ConversionError, match='factorised_self_attention'):
    convert.infer_config_from_scenic(scenic_params('factorised_self_attention'), 'spatio_temporal')


def test_scenic_mismatch_names_param_and_shapes():
  scenic = scenic_params('spatio_temporal')
  config = convert.infer_config_from_scenic(scenic)
  config.mlp_dim = 64
  with pytest.raises(convert.ConversionError, match=r"mlp/hidden/kernel.*\(16, 32\).*\(16, 64\)"):
    convert.scenic_vivit_to_ours(scenic, config, source='ckpt_dir')
  del scenic['Transformer']['encoderblock_1']['MlpBlock_0']
  with pytest.raises(convert.ConversionError, match='ckpt_dir.*encoderblock_1.*MlpBlock_0'):
    convert.scenic_vivit_to_ours(scenic, convert.infer_config_from_scenic(scenic), source='ckpt_dir')
  # Scenic lets the temporal encoder have its own MLP size; our model does not.
  scenic = foreign.scenic_vivit_params('factorised_encoder', width=WIDTH, mlp_dim=MLP_DIM,
                                       num_heads=HEADS, temporal_mlp_dim=24, temporal_num_heads=HEADS)
  with pytest.raises(convert.ConversionError, match=r'temporal_encoder.*\(16, 24\).*\(16, 32\)'):
    convert.scenic_vivit_to_ours(scenic, convert.infer_config_from_scenic(scenic))


def test_scenic_head_with_pre_logits_is_not_converted():
  scenic = scenic_params('spatio_temporal')
  scenic['pre_logits'] = {'kernel': np.zeros((WIDTH, 8), np.float32),
                          'bias': np.zeros(8, np.float32)}
  backbone, head = convert.scenic_vivit_to_ours(scenic, convert.infer_config_from_scenic(scenic))
  assert head is None and 'encoder' in backbone


# ---------------------------------------------------------------------------------------------
# The command-line tool.


def test_convert_tool_writes_a_directory_that_round_trips(tmp_path):
  scenic = scenic_params('spatio_temporal')
  foreign.write_scenic_checkpoint(str(tmp_path / 'scenic'), scenic, layout='optimizer')
  output = tmp_path / 'converted'
  description = convert_tool.convert_checkpoint('scenic_vivit', str(tmp_path / 'scenic'),
                                                str(output), head_name='kinetics')
  with open(output / 'config.json') as file:
    written = json.load(file)
  assert written == json.loads(json.dumps(description))
  assert written['heads'] == {'kinetics': {'num_classes': 5, 'pooling': 'token'}}
  assert written['model']['variant'] == 'spatio_temporal'
  restored = checkpoint.read_params(output)
  backbone, head = convert.scenic_vivit_to_ours(scenic, vivit.vivit_config('B/16x2', **written['model']))
  expected = {'backbone': backbone, 'heads': {'kinetics': head}}
  got = param_paths.flatten(restored)
  assert sorted(got) == sorted(param_paths.flatten(expected))
  for name, value in param_paths.flatten(expected).items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_convert_tool_initialises_from_image_vit(tmp_path):
  # Without a class token, a static clip's every frame must give the image ViT's tokens.
  path, vit_params = write_image_vit(tmp_path, classifier='gap')
  config = model_config(classifier='mean')
  output = tmp_path / 'converted'
  description = convert_tool.convert_checkpoint('big_vision_vit', path, str(output), config=config,
                                                input_shape=(4, 12, 12), kernel_init='average')
  assert description['source']['kernel_init'] == 'average'
  restored = checkpoint.read_params(output)
  assert restored['backbone']['embedding']['kernel'].shape == (2, 4, 4, 3, WIDTH)
  image = random_video((2, 12, 12, 3), seed=4)
  tokens, _ = apply(config, restored['backbone'], np.repeat(image[:, None], 4, axis=1))
  image_tokens, _ = image_vit_forward(vit_params, image)
  for frame in range(tokens.shape[1]):
    np.testing.assert_allclose(tokens[:, frame], image_tokens, atol=1e-4)


def assert_relatively_close(actual, expected, tolerance=1e-4):
  """max |actual - expected| within `tolerance` of the largest |expected|."""
  error = np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max()
  assert error <= tolerance, f'relative error {error:.2e} > {tolerance}'


@pytest.mark.slow
def test_convert_tool_command_line(tmp_path):
  scenic = scenic_params('factorised_dot_product')
  foreign.write_scenic_checkpoint(str(tmp_path / 'scenic'), scenic)
  command = [sys.executable, '-m', 'vivit_cofinetune.tools.convert_checkpoint',
             '--from=scenic_vivit', f'--input={tmp_path / "scenic"}', f'--output={tmp_path / "out"}']
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  failed = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
  assert failed.returncode != 0 and '--variant' in failed.stderr
  done = subprocess.run(command + ['--variant=factorised_dot_product', '--head_name=kinetics'],
                        cwd=root, check=True, capture_output=True, text=True)
  # Our lines only: no INFO line of a Python library (orbax's save, jax's backend probing).
  assert not re.findall(r'^I\d{4} [\d:.]+ +\d+ \S+\.py:\d+\] .*', done.stderr, re.MULTILINE), \
      done.stderr[-3000:]
  with open(tmp_path / 'out' / 'config.json') as file:
    assert json.load(file)['model']['variant'] == 'factorised_dot_product'
  # The written directory computes Scenic's function, classification head included.
  video = random_video((2, 4, 12, 12, 3), seed=5)
  outputs = predict.predict(tmp_path / 'out', video)
  _, _, logits = scenic_vivit_forward(scenic, video, 'factorised_dot_product')
  assert outputs['task'] == 'kinetics'
  assert_relatively_close(outputs['logits'], logits)

  # From an image ViT, for the demo config's model (2 layers here): each frame of a static clip
  # gives the image ViT's tokens.
  vit = foreign.image_vit_params(width=64, depth=DEPTH, mlp_dim=128, num_heads=4, patch=(8, 8),
                                 grid=(4, 4), classifier='gap')
  foreign.write_big_vision_npz(str(tmp_path / 'vit.npz'), vit)
  subprocess.run([sys.executable, '-m', 'vivit_cofinetune.tools.convert_checkpoint',
                  '--from=big_vision_vit', f'--input={tmp_path / "vit.npz"}',
                  f'--output={tmp_path / "from_vit"}', f'--config={root}/configs/demo_cofinetune.py',
                  f'--config.model.num_layers={DEPTH}'], cwd=root, check=True, capture_output=True)
  with open(tmp_path / 'from_vit' / 'config.json') as file:
    written = json.load(file)
  assert written['source']['input_shape'] == [8, 32, 32]  # the demo's clips
  config = vivit.vivit_config('B/16x2', **written['model'])
  image = random_video((1, 32, 32, 3), seed=6)
  tokens, _ = apply(config, checkpoint.read_params(tmp_path / 'from_vit')['backbone'],
                    np.repeat(image[:, None], 8, axis=1))
  image_tokens, _ = image_vit_forward(vit, image)
  for frame in range(tokens.shape[1]):
    assert_relatively_close(tokens[:, frame], image_tokens)
