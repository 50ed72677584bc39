"""ViViT backbone: config, shapes per variant, numerics against numpy, scan/remat/bf16, FLOPs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_cofinetune.models import attention
from vivit_cofinetune.models import convert
from vivit_cofinetune.models import flops
from vivit_cofinetune.models import vivit

VIDEO_SHAPE = (2, 4, 8, 12, 3)  # patch (2, 4, 4) -> token grid (2, 2, 3)


def _config(**overrides):
  fields = dict(hidden_size=24, num_layers=2, mlp_dim=48, num_heads=4, num_temporal_layers=2,
                patch_size=(2, 4, 4), scan_layers=False)
  fields.update(overrides)
  return vivit.vivit_config('Ti/4x2', **fields)


def _video(seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), VIDEO_SHAPE)


# Op by op: on CPU the per-primitive compilations are cached across tests, which beats compiling
# each test's model whole.
def _init(model, video, seed=0):
  return model.init(jax.random.PRNGKey(seed), video, train=False)


def _apply(model, variables, video, train=False, rngs=None):
  return model.apply(variables, video, train=train, rngs=rngs)


# ---- Config ----------------------------------------------------------------------------------------

def test_config_from_name():
  config = vivit.vivit_config('L/16x2')
  assert (config.hidden_size, config.num_layers, config.mlp_dim, config.num_heads) == (1024, 24, 4096, 16)
  assert config.patch_size == (2, 16, 16) and config.classifier == 'token'
  assert vivit.vivit_config('S/8x1', variant='factorised_dot_product').classifier == 'mean'
  tiny = vivit.vivit_config('Ti/8x2', hidden_size=64, num_layers=4, mlp_dim=128, num_heads=4)
  assert (tiny.hidden_size, tiny.num_layers, tiny.patch_size) == (64, 4, (2, 8, 8))
  vivit.ViViT(**tiny)  # every field is a module attribute


@pytest.mark.parametrize('name, overrides, match', [
    ('B16x2', {}, 'B/16x2'), ('X/16x2', {}, 'size'), ('B/16x2', {'width': 3}, 'unknown'),
])
def test_config_errors(name, overrides, match):
  with pytest.raises(ValueError, match=match):
    vivit.vivit_config(name, **overrides)


@pytest.mark.parametrize('overrides, match', [
    (dict(variant='factorised_self_attention', classifier='token'), 'CLS'),
    (dict(patch_embedding='frame_2d'), 'frame_2d'),
    (dict(position_embedding='rope'), 'position_embedding'),
])
def test_model_errors(overrides, match):
  model = vivit.ViViT(**_config(**overrides))
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), _video(), train=False))


# ---- Shapes and parameter layout (abstract evaluation: no compilation) -------------------------------

CASES = [
    dict(variant='spatio_temporal'),
    dict(variant='spatio_temporal', classifier='mean', position_embedding='sinusoidal_3d'),
    dict(variant='spatio_temporal', position_embedding='none', patch_embedding='frame_2d',
         patch_size=(1, 4, 4)),
    dict(variant='factorised_encoder'),
    dict(variant='factorised_encoder', classifier='mean', patch_embedding='frame_2d',
         patch_size=(1, 4, 4)),
    dict(variant='factorised_self_attention', classifier='mean'),
    dict(variant='factorised_self_attention', classifier='mean', position_embedding='sinusoidal_3d'),
    dict(variant='factorised_dot_product', classifier='mean'),
    dict(variant='factorised_dot_product', classifier='mean', patch_embedding='frame_2d',
         patch_size=(1, 4, 4), position_embedding='none'),
]


@pytest.mark.parametrize('overrides', CASES, ids=lambda o: '-'.join(map(str, o.values())))
@pytest.mark.parametrize('scan', [True, False])
def test_output_shapes_and_param_layout(overrides, scan):
  config = _config(scan_layers=scan, **overrides)
  model = vivit.ViViT(**config)
  (tokens, pooled), variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.PRNGKey(0), _video(), train=False))
  t = 4 // config.patch_size[0]
  assert tokens.shape == (2, t, 2, 3, 24) and tokens.dtype == jnp.float32
  has_pooled = config.classifier == 'token' or config.variant == 'factorised_encoder'
  assert (pooled.shape if has_pooled else pooled) == ((2, 24) if has_pooled else None)

  params = variables['params']
  kernel = params['embedding']['kernel']
  assert kernel.value.shape == ((2, 4, 4, 3, 24) if config.patch_embedding == 'tubelet' else (4, 4, 3, 24))
  cls = int(config.classifier == 'token')
  encoders = ({'spatial_encoder': 6, 'temporal_encoder': t} if config.variant == 'factorised_encoder'
              else {'encoder': t * 6})
  for name, length in encoders.items():
    encoder = params[name]
    assert ('cls' in encoder) == bool(cls)
    if config.position_embedding == 'learned':
      assert encoder['pos_embedding'].value.shape == (1, cls + length, 24)
    else:
      assert 'pos_embedding' not in encoder
    if scan:
      assert encoder['layers']['mlp']['hidden']['kernel'].value.shape[0] == 2
      assert encoder['layers']['mlp']['hidden']['kernel'].names == ('layers', 'embed', 'mlp')
    else:
      assert {'layers_0', 'layers_1'} <= set(encoder)
  # Every parameter carries logical axis names, one per dimension.
  for leaf in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nn.Partitioned)):
    assert isinstance(leaf, nn.Partitioned) and len(leaf.names) == leaf.value.ndim


# ---- Numerics against an independent numpy forward --------------------------------------------------

def _np_layer_norm(x, p):
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * p['scale'] + p['bias']


def _np_gelu(x):  # tanh approximation (flax's default, as Scenic uses)
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _np_heads_attention(q, k, v):
  """q, k, v [batch, n, heads, dim] -> [batch, n, heads, dim]."""
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', weights, v)


def _np_attention(x, p, mode, grid):
  """Self-attention of x [B, N, D]; mode 'joint', 'time', 'space' or 'split' (half heads each)."""
  q, k, v = (np.einsum('bnd,dhk->bnhk', x, p[n]['kernel']) + p[n]['bias'] for n in ('query', 'key', 'value'))
  b, n, heads, dim = q.shape
  t, s = grid if grid else (1, n)

  def along(q, k, v, axis):
    h = q.shape[2]
    if axis == 'joint':
      return _np_heads_attention(q, k, v)
    q, k, v = (a.reshape(b, t, s, h, dim) for a in (q, k, v))
    if axis == 'time':
      q, k, v = (a.transpose(0, 2, 1, 3, 4).reshape(b * s, t, h, dim) for a in (q, k, v))
      return _np_heads_attention(q, k, v).reshape(b, s, t, h, dim).transpose(0, 2, 1, 3, 4).reshape(b, n, h, dim)
    q, k, v = (a.reshape(b * t, s, h, dim) for a in (q, k, v))
    return _np_heads_attention(q, k, v).reshape(b, n, h, dim)

  if mode == 'split':
    half = heads // 2
    out = np.concatenate([along(q[:, :, :half], k[:, :, :half], v[:, :, :half], 'time'),
                          along(q[:, :, half:], k[:, :, half:], v[:, :, half:], 'space')], axis=2)
  else:
    out = along(q, k, v, mode)
  return np.einsum('bnhk,hkd->bnd', out, p['out']['kernel']) + p['out']['bias']


def _np_encoder(x, p, modes, grid, num_layers):
  if 'cls' in p:
    x = np.concatenate([np.broadcast_to(p['cls'], (x.shape[0], 1, x.shape[2])), x], axis=1)
  if 'pos_embedding' in p:
    x = x + p['pos_embedding']
  for i in range(num_layers):
    layer = p[f'layers_{i}']
    for prefix, mode in modes:
      x = x + _np_attention(_np_layer_norm(x, layer[f'{prefix}attention_norm']), layer[f'{prefix}attention'],
                            mode, grid)
    y = _np_layer_norm(x, layer['mlp_norm'])
    y = _np_gelu(y @ layer['mlp']['hidden']['kernel'] + layer['mlp']['hidden']['bias'])
    x = x + y @ layer['mlp']['output']['kernel'] + layer['mlp']['output']['bias']
  return _np_layer_norm(x, p['encoder_norm'])


def _np_sincos(t, h, w, d):
  part = d // 6
  code = np.zeros((t, h, w, d))
  for ti in range(t):
    for hi in range(h):
      for wi in range(w):
        for i in range(part):
          omega = 10000.0 ** (-i / part)
          for j, position in enumerate((ti, wi, hi)):
            code[ti, hi, wi, 2 * j * part + i] = np.sin(position * omega)
            code[ti, hi, wi, (2 * j + 1) * part + i] = np.cos(position * omega)
  return code


def _np_vivit(video, p, config):
  video = np.asarray(video, np.float64)
  b, frames, height, width, _ = video.shape
  pt, ph, pw = config.patch_size
  t, h, w = frames // pt, height // ph, width // pw
  patches = video.reshape(b, t, pt, h, ph, w, pw, 3).transpose(0, 1, 3, 5, 2, 4, 6, 7)
  kernel = p['embedding']['kernel'].reshape(pt, ph, pw, 3, -1)
  x = np.einsum('bthwijkc,ijkcd->bthwd', patches, kernel) + p['embedding']['bias']
  d = x.shape[-1]
  if config.position_embedding == 'sinusoidal_3d':
    x = x + _np_sincos(t, h, w, d)
  cls = int(config.classifier == 'token')
  if config.variant == 'factorised_encoder':
    frames_out = _np_encoder(x.reshape(b * t, h * w, d), p['spatial_encoder'], [('', 'joint')], None,
                             config.num_layers)
    per_frame = frames_out[:, 0] if cls else frames_out.mean(1)
    video_out = _np_encoder(per_frame.reshape(b, t, d), p['temporal_encoder'], [('', 'joint')], None,
                            config.num_temporal_layers)
    return frames_out[:, cls:].reshape(b, t, h, w, d), video_out[:, 0] if cls else video_out.mean(1)
  modes = {'spatio_temporal': [('', 'joint')], 'factorised_dot_product': [('', 'split')],
           'factorised_self_attention': [('temporal_', 'time'), ('spatial_', 'space')]}[config.variant]
  out = _np_encoder(x.reshape(b, t * h * w, d), p['encoder'], modes, (t, h * w), config.num_layers)
  return out[:, cls:].reshape(b, t, h, w, d), out[:, 0] if cls else None


@pytest.mark.parametrize('overrides', [
    CASES[0], CASES[1], CASES[3], CASES[5], CASES[7], pytest.param(CASES[4], marks=pytest.mark.slow)],
    ids=lambda o: '-'.join(map(str, o.values())))
def test_matches_numpy_forward(overrides):
  config = _config(**overrides)
  model = vivit.ViViT(**config)
  video = _video()
  variables = _init(model, video, 1)
  # Random (not default) values for zero-initialised params, so CLS and biases are exercised.
  params = convert.plain_params(variables['params'])
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  tokens, pooled = _apply(model, {'params': params}, video)
  expected_tokens, expected_pooled = _np_vivit(video, jax.tree.map(np.asarray, params), config)
  np.testing.assert_allclose(tokens, expected_tokens, atol=2e-4, rtol=2e-4)
  if expected_pooled is None:
    assert pooled is None
  else:
    np.testing.assert_allclose(pooled, expected_pooled, atol=2e-4, rtol=2e-4)


# ---- Scan, remat, dtype, dropout ---------------------------------------------------------------------

@pytest.mark.parametrize('variant', [
    'spatio_temporal', 'factorised_encoder',
    pytest.param('factorised_self_attention', marks=pytest.mark.slow),
    pytest.param('factorised_dot_product', marks=pytest.mark.slow)])
def test_scan_matches_unrolled(variant):
  config = _config(variant=variant, classifier='mean')
  video = _video()
  unrolled = vivit.ViViT(**config)
  params = convert.plain_params(_init(unrolled, video, 0)['params'])
  scanned = vivit.ViViT(**{**config, 'scan_layers': True})
  stacked = convert.stack_layers(params)
  expected_shapes = jax.tree.map(lambda x: x.shape, convert.plain_params(
      jax.eval_shape(lambda: scanned.init(jax.random.PRNGKey(0), video, train=False))['params']))
  assert jax.tree.map(lambda x: x.shape, stacked) == expected_shapes
  np.testing.assert_allclose(_apply(scanned, {'params': stacked}, video)[0],
                             _apply(unrolled, {'params': params}, video)[0], atol=1e-5)
  restored = convert.unstack_layers(stacked)
  jax.tree.map(np.testing.assert_array_equal, restored, params)


@pytest.mark.slow
@pytest.mark.parametrize('policy', ['full', 'dots_with_no_batch_dims_saveable'])
def test_remat_keeps_outputs_and_gradients(policy):
  video = _video()
  plain = vivit.ViViT(**_config(scan_layers=True))
  params = _init(plain, video, 0)['params']

  def loss_and_grad(model):
    loss = lambda p: jnp.sum(model.apply({'params': p}, video, train=False)[0] ** 2)
    return jax.jit(jax.value_and_grad(loss))(params)

  expected = loss_and_grad(plain)
  got = loss_and_grad(vivit.ViViT(**_config(scan_layers=True, remat_policy=policy)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)


def test_bfloat16_activations_float32_params():
  video = _video()
  model = vivit.ViViT(**_config(dtype='bfloat16'))
  variables = _init(model, video, 0)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype('float32')}
  (tokens, pooled), state = model.apply(variables, video, train=False, capture_intermediates=True)
  # Inside, bfloat16: the patch embedding and every attention and MLP output; out, float32.
  inside = state['intermediates']
  assert inside['embedding']['__call__'][0].dtype == jnp.bfloat16
  for layer in ('layers_0', 'layers_1'):
    for module in ('attention', 'mlp'):
      assert inside['encoder'][layer][module]['__call__'][0].dtype == jnp.bfloat16, (layer, module)
  assert tokens.dtype == pooled.dtype == jnp.float32
  # The tokens come out of a LayerNorm, so they have unit RMS and the error is relative to 1.
  # Each bfloat16 rounding is off by at most u = eps / 2 (eps = 2^-7: 8 significant bits);
  # some 16 roundings per layer on the residual stream of 2 layers add up like a random walk to
  # about sqrt(32) u = 1.4 eps RMS. Measured: 0.9 eps RMS, 3 eps at most.
  eps = float(jnp.finfo(jnp.bfloat16).eps)
  reference, _ = _apply(vivit.ViViT(**_config()), variables, video)
  error = np.asarray(tokens) - np.asarray(reference)
  rms = float(np.sqrt(np.mean(error ** 2)))
  assert rms <= 2 * eps and np.abs(error).max() <= 8 * eps, (rms / eps, np.abs(error).max() / eps)
  assert rms >= eps / 16  # float32 arithmetic would be ~1e-7 off: bfloat16 really was used


def test_dropout_and_stochastic_depth_only_in_training():
  video = _video()
  config = _config(dropout_rate=0.3, attention_dropout_rate=0.3, stochastic_depth=0.5)
  model = vivit.ViViT(**config)
  variables = _init(model, video, 0)
  rngs = {'dropout': jax.random.PRNGKey(1)}
  evaluated = _apply(model, variables, video)[0]
  np.testing.assert_allclose(evaluated, _apply(vivit.ViViT(**_config()), variables, video)[0],
                             atol=1e-6)
  trained = _apply(model, variables, video, True, rngs)[0]
  assert not np.allclose(trained, evaluated, atol=1e-3)


@pytest.mark.parametrize('mechanism', [dict(dropout_rate=0.3), dict(attention_dropout_rate=0.3),
                                       dict(stochastic_depth=0.5)], ids=lambda m: next(iter(m)))
def test_each_dropout_mechanism_alone_acts_in_training_only(mechanism):
  video = _video()
  model = vivit.ViViT(**_config(**mechanism))
  variables = _init(model, video, 0)
  plain = _apply(vivit.ViViT(**_config()), variables, video)[0]
  np.testing.assert_allclose(_apply(model, variables, video)[0], plain, atol=1e-6)
  rngs = {'dropout': jax.random.PRNGKey(1)}
  trained = _apply(model, variables, video, True, rngs)[0]
  assert not np.allclose(trained, plain, atol=1e-3)
  # The same key drops the same units; another key others.
  np.testing.assert_array_equal(_apply(model, variables, video, True, rngs)[0], trained)
  other = _apply(model, variables, video, True, {'dropout': jax.random.PRNGKey(2)})[0]
  assert not np.allclose(other, trained, atol=1e-3)


def test_dropout_rate_zeroes_that_fraction_of_the_mlp_hidden_units():
  video = _video()
  model = vivit.ViViT(**_config(dropout_rate=0.3))
  variables = _init(model, video, 0)
  _, state = model.apply(variables, video, train=True, rngs={'dropout': jax.random.PRNGKey(1)},
                         capture_intermediates=True)
  mlp = state['intermediates']['encoder']['layers_0']['mlp']
  hidden = np.asarray(mlp['Dropout_0']['__call__'][0])
  # 2 x 13 x 48 units: the zeroed fraction is 0.3 give or take 0.013 (one standard deviation).
  assert abs(np.mean(hidden == 0) - 0.3) < 0.05


def test_attention_dropout_acts_on_the_attention_weights_only():
  # With the attention output projection zeroed, the attention weights cannot reach the output:
  # attention dropout alone must then change nothing, even in training.
  video = _video()
  model = vivit.ViViT(**_config(attention_dropout_rate=0.5))
  params = convert.plain_params(_init(model, video, 0)['params'])
  for layer in ('layers_0', 'layers_1'):
    out = params['encoder'][layer]['attention']['out']
    out['kernel'] = jnp.zeros_like(out['kernel'])
  rngs = {'dropout': jax.random.PRNGKey(1)}
  np.testing.assert_allclose(_apply(model, {'params': params}, video, True, rngs)[0],
                             _apply(model, {'params': params}, video)[0], atol=1e-6)


def test_attention_dropout_path_matches_fused_when_nothing_dropped():
  video = _video()
  model = vivit.ViViT(**_config(attention_dropout_rate=1e-9))
  variables = _init(model, video, 0)
  explicit = _apply(model, variables, video, True, {'dropout': jax.random.PRNGKey(1)})[0]
  np.testing.assert_allclose(explicit, _apply(model, variables, video)[0], atol=1e-5)


def test_stochastic_depth_one_drops_every_block():
  # With every residual branch dropped, the output cannot depend on the block parameters.
  video = _video()
  model = vivit.ViViT(**_config(stochastic_depth=1.0, stochastic_depth_schedule='constant'))
  params = convert.plain_params(_init(model, video, 0)['params'])
  changed = dict(params, encoder=dict(params['encoder'], layers_0=jax.tree.map(
      lambda x: x + 1.0, params['encoder']['layers_0'])))
  rngs = {'dropout': jax.random.PRNGKey(1)}
  run = lambda p: _apply(model, {'params': p}, video, True, rngs)[0]
  np.testing.assert_array_equal(run(params), run(changed))
  assert vivit.Encoder.drop_rates(vivit.Encoder(
      num_layers=3, stochastic_depth=0.4, stochastic_depth_schedule='linear', attention='joint',
      grid=None, mlp_dim=1, num_heads=1, classifier='mean', position_embedding='none', dropout_rate=0.0,
      attention_dropout_rate=0.0, remat_policy='none', scan_layers=True, attention_implementation='xla',
      dtype=jnp.float32, layer_norm_epsilon=1e-6, gelu='tanh', key_bias=True,
      final_norm=True)).tolist() == \
      pytest.approx([0.0, 0.2, 0.4])


# ---- FLOPs -------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize('variant', vivit.VARIANTS)
def test_flops_match_xla_cost_analysis(variant):
  # XLA counts a scanned body once, so unroll. Wide enough that elementwise ops stay ~1%.
  config = vivit.vivit_config('Ti/8x2', hidden_size=192, num_layers=2, mlp_dim=768, num_heads=4,
                              num_temporal_layers=2, variant=variant, scan_layers=False,
                              classifier='mean' if 'dot' in variant or 'self' in variant else 'token')
  shape = (8, 32, 32)
  model = vivit.ViViT(**config)
  video = jnp.zeros((1, *shape, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), video, train=False))
  compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, video).compile()
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, list) else analysis
  assert flops.flops_per_clip(config, shape) == pytest.approx(analysis['flops'], rel=0.03)


@pytest.mark.parametrize('kernel_size', [(2, 4, 4), (4, 4)])
def test_patch_embedding_is_the_strided_conv(kernel_size):
  # Same params and outputs as the nn.Conv it replaces (trailing pixels dropped, as by 'VALID').
  video = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 9, 13, 3))
  embedding = vivit.PatchEmbedding(8, kernel_size, jnp.float32)
  params = convert.plain_params(embedding.init(jax.random.PRNGKey(1), video)['params'])
  conv = nn.Conv(8, kernel_size, strides=kernel_size, padding='VALID')
  np.testing.assert_allclose(embedding.apply({'params': params}, video),
                             conv.apply({'params': params}, video), atol=1e-5)


# ---- Fused attention kernels -----------------------------------------------------------------------

def _has_gpu() -> bool:
  return any(device.platform == 'gpu' for device in jax.devices())


_NEEDS_GPU = pytest.mark.skipif(not _has_gpu(), reason="'cudnn' attention needs an NVIDIA GPU; "
                                f'this run has {jax.default_backend()!r} devices only')
_NEEDS_TPU = pytest.mark.skipif(jax.default_backend() != 'tpu', reason="'splash' attention needs a "
                                f'TPU; this run has {jax.default_backend()!r} devices only')


def test_splash_kernel_matches_xla_in_the_pallas_interpreter():
  # The TPU kernel's maths (padding to whole tiles, the padding segment, logit scale) on any backend;
  # 130 tokens: one real tile and one nearly all padding.
  query, key, value = (jax.random.normal(jax.random.PRNGKey(seed), (1, 130, 2, 16))
                       for seed in range(3))
  expected = jax.nn.dot_product_attention(query, key, value, implementation='xla')
  np.testing.assert_allclose(attention.splash_attention(query, key, value, interpret=True), expected,
                             atol=2e-5)


def test_splash_off_tpu_says_why():
  if jax.default_backend() == 'tpu':
    pytest.skip('this backend is a TPU: splash attention runs')
  model = vivit.ViViT(**_config(attention_implementation='splash'))
  with pytest.raises(ValueError, match='needs a TPU'):
    _init(model, _video())


@pytest.mark.parametrize('implementation', [
    pytest.param('cudnn', marks=_NEEDS_GPU), pytest.param('splash', marks=_NEEDS_TPU)])
def test_fused_attention_matches_xla(implementation):
  # bfloat16 as the kernels run in training; head dim 16 (cuDNN wants a multiple of 8).
  config = _config(hidden_size=64, num_heads=4, mlp_dim=64, dtype='bfloat16')
  video = _video()
  xla = vivit.ViViT(**config)
  variables = _init(xla, video)
  fused = vivit.ViViT(**dict(config, attention_implementation=implementation))
  loss = lambda model: lambda params: _apply(model, {'params': params}, video)[0].sum()
  np.testing.assert_allclose(_apply(fused, variables, video)[0], _apply(xla, variables, video)[0],
                             atol=5e-2, rtol=5e-2)
  fused_grads, xla_grads = (jax.grad(loss(model))(variables['params']) for model in (fused, xla))
  # Gradients compared on each leaf's own scale: bfloat16 sums over different orders differ.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.float32(a), np.float32(b), atol=5e-2 * float(np.abs(np.float32(b)).max()) + 1e-6),
      fused_grads, xla_grads)


def test_model_defaults_are_the_config_defaults():
  # One source of truth: a ViViT built without a config runs as vivit_config's model does.
  model, config = vivit.ViViT(), vivit.vivit_config('B/16x2')
  assert model.remat_policy == config.remat_policy == 'dots_saveable'
  for field, value in config.items():
    assert getattr(model, field) == (tuple(value) if field == 'patch_size' else value), field


@pytest.mark.parametrize('overrides, message', [
    (dict(position_embedding='rope_3d'), "rope_3d' needs variant='spatio_temporal' and classifier='mean'"),
    (dict(final_norm='pooled'), "final_norm='pooled' needs"),
    (dict(gelu='fast'), 'gelu: expected one of'),
])
def test_checkpoint_numerics_options_say_what_they_need(overrides, message):
  model = vivit.ViViT(**_config(**overrides))
  with pytest.raises(ValueError, match=message):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 16, 16, 3)), train=False)
