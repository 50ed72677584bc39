"""Classification and RoI action heads: zero init, pooling arithmetic, dropout only in training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vivit_cofinetune.models.heads import ClassificationHead, RoIActionHead


def _tokens(seed=0, shape=(2, 2, 4, 5, 6)):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def test_heads_start_at_zero_logits_with_named_axes():
  tokens = _tokens()
  boxes = jnp.array([[[0.1, 0.1, 0.6, 0.7]] * 3] * 2)
  for head, args in [(ClassificationHead(7), (tokens, None)), (RoIActionHead(7), (tokens, boxes))]:
    variables = head.init(jax.random.PRNGKey(1), *args, train=False)
    assert variables['params']['output']['kernel'].names == ('embed', 'classes')
    logits = head.apply(variables, *args, train=False)
    assert logits.shape == ((2, 7) if isinstance(head, ClassificationHead) else (2, 3, 7))
    np.testing.assert_array_equal(logits, 0.0)


@pytest.mark.parametrize('pooling', ['mean', 'token'])
def test_classification_pooling(pooling):
  tokens, cls = _tokens(), jax.random.normal(jax.random.PRNGKey(2), (2, 6))
  kernel = np.arange(6 * 3, dtype=np.float32).reshape(6, 3) / 10
  bias = np.array([1.0, -1.0, 0.5], np.float32)
  params = {'output': {'kernel': kernel, 'bias': bias}}
  logits = ClassificationHead(3, pooling=pooling).apply({'params': params}, tokens, cls, train=False)
  pooled = np.asarray(tokens).reshape(2, -1, 6).mean(axis=1) if pooling == 'mean' else np.asarray(cls)
  np.testing.assert_allclose(logits, pooled @ kernel + bias, rtol=1e-5, atol=1e-5)


def test_token_pooling_without_cls_raises():
  with pytest.raises(ValueError, match='classifier'):
    ClassificationHead(3, pooling='token').init(jax.random.PRNGKey(0), _tokens(), None, train=False)


def test_roi_head_pools_one_cell_box():
  # Only cell (2, 3) is non-zero: frame 0 holds 2v, frame 1 holds 0, so the temporal mean is v.
  value = np.array([1.0, -2.0, 3.0, 0.5], np.float32)
  tokens = np.zeros((1, 2, 5, 6, 4), np.float32)
  tokens[0, 0, 2, 3] = 2 * value
  boxes = np.array([[[2 / 5, 3 / 6, 3 / 5, 4 / 6]]], np.float32)  # exactly cell (2, 3)
  # With 7 bins and 2 samples per bin side, every sample lies within half a cell of the cell centre,
  # so each bin is v times a product of bilinear weights: largest for the centre bin (its samples sit
  # 0.25/7 cell from the centre on each axis), smallest for a corner bin (mean distance 3/7 per axis).
  # Max pooling picks the centre bin for positive entries and a corner bin for negative ones.
  expected_feature = np.where(value > 0, value * (1 - 0.25 / 7) ** 2, value * (1 - 3 / 7) ** 2)
  kernel = np.eye(4, 3, dtype=np.float32) + 0.1
  bias = np.array([0.0, 1.0, 2.0], np.float32)
  params = {'output': {'kernel': kernel, 'bias': bias}}
  logits = RoIActionHead(3).apply({'params': params}, tokens, boxes, train=False)
  np.testing.assert_allclose(logits[0, 0], expected_feature @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
  tokens = _tokens()
  params = {'output': {'kernel': np.ones((6, 2), np.float32), 'bias': np.zeros(2, np.float32)}}
  head = ClassificationHead(2, dropout_rate=0.5)
  rngs = {'dropout': jax.random.PRNGKey(3)}
  evaluated = head.apply({'params': params}, tokens, None, train=False)
  trained = head.apply({'params': params}, tokens, None, train=True, rngs=rngs)
  np.testing.assert_allclose(evaluated, np.asarray(tokens).mean(axis=(1, 2, 3)) @ params['output']['kernel'],
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(evaluated, trained)
