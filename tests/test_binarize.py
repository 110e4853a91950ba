"""The STE sign, the scaling scheme, embedding variants and bit packing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax import binarize
from bitmaps_jax.binarize import BinarizeConfig, sign_ste
from bitmaps_jax.errors import UserError


def test_sign_forward_maps_zero_to_plus_one():
  x = jnp.array([-2.0, -0.0, 0.0, 1e-8, -1e-8, 3.0])
  np.testing.assert_array_equal(sign_ste(x), [-1, 1, 1, 1, -1, 1])
  assert sign_ste(x).dtype == x.dtype
  assert sign_ste(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize('clip,expected', [(1.0, [0, 1, 1, 1, 0]), (0.5, [0, 0, 1, 0, 0]),
                                           (None, [1, 1, 1, 1, 1])])
def test_sign_gradient_is_straight_through_inside_clip(clip, expected):
  x = jnp.array([-1.5, -1.0, 0.2, 1.0, 2.0])
  grad = jax.grad(lambda v: jnp.sum(sign_ste(v, clip) * jnp.arange(1.0, 6.0)))(x)
  np.testing.assert_array_equal(grad, np.array(expected) * np.arange(1.0, 6.0))


def test_binary_matmul_equals_dense_product():
  rng = np.random.default_rng(0)
  x, w = rng.normal(size=(4, 6)), rng.normal(size=(6, 5))
  for granularity in ('per_tensor', 'per_channel'):
    for center in (False, True):
      cfg = BinarizeConfig(layers=True, granularity=granularity, center=center)
      axes = binarize.scale_axes(granularity)
      alpha, gamma = binarize.init_scale(w, axes, center, 'mean')
      assert alpha.shape == (() if granularity == 'per_tensor' else (5,))
      signs = binarize.binary_signs(jnp.asarray(w), cfg, axes)
      dense = binarize.dequantize_dense(jnp.asarray(w), alpha, gamma, cfg)
      np.testing.assert_allclose(binarize.binary_matmul(jnp.asarray(x), signs, alpha, gamma),
                                 x @ np.asarray(dense), rtol=1e-5, atol=1e-5)


def test_scale_init_values():
  w = jnp.array([[1.0, -3.0], [2.0, -2.0]])
  alpha, gamma = binarize.init_scale(w, (0, 1), False, 'mean')
  assert float(alpha) == 2.0 and float(gamma) == -0.5
  alpha, gamma = binarize.init_scale(w, (0,), True, 'zero')
  np.testing.assert_allclose(alpha, [0.5, 0.5])
  np.testing.assert_array_equal(gamma, [0.0, 0.0])


@pytest.mark.parametrize('variant', ['none', 'scalar', 'per_dim', 'per_token', 'rank1'])
def test_embedding_lookup_and_decoder_match_dense_table(variant):
  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.normal(size=(50, 8)), jnp.float32)
  scales = {} if variant == 'none' else binarize.init_embedding_scale(
      table, variant, BinarizeConfig())
  dense = binarize.dequantize_embedding(table, variant, scales)
  ids = jnp.array([[3, 0, 49], [7, 7, 1]])
  np.testing.assert_allclose(binarize.embedding_lookup(table, ids, variant, scales, 1.0),
                             dense[ids], rtol=1e-6)
  h = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
  np.testing.assert_allclose(binarize.embedding_attend(table, h, variant, scales, 1.0),
                             h @ dense.T, rtol=1e-5, atol=1e-5)


def test_rank1_init_is_best_rank1_approximation_of_magnitudes():
  rng = np.random.default_rng(2)
  table = rng.normal(size=(40, 6)) * rng.uniform(0.5, 2.0, size=(40, 1))
  s = binarize.init_embedding_scale(table, 'rank1', BinarizeConfig())
  u, sv, vt = np.linalg.svd(np.abs(table))
  best = sv[0] * np.outer(u[:, 0], vt[0])
  np.testing.assert_allclose(np.outer(s['u'], s['v']), best, rtol=1e-4, atol=1e-5)
  assert (np.asarray(s['u']) > 0).all() and (np.asarray(s['v']) > 0).all()
  approx = np.asarray(binarize.dequantize_embedding(jnp.asarray(table), 'rank1', s))
  # Better than scaling the signs by the plain SVD of E, and than per_dim.
  u2, sv2, vt2 = np.linalg.svd(table)
  plain = np.abs(sv2[0] * np.outer(u2[:, 0], vt2[0])) * np.sign(table)
  per_dim = binarize.dequantize_embedding(
      jnp.asarray(table), 'per_dim',
      binarize.init_embedding_scale(table, 'per_dim', BinarizeConfig(gamma_init='zero')))
  err = np.linalg.norm(table - approx)
  assert err < np.linalg.norm(table - plain) and err < np.linalg.norm(table - per_dim)


@pytest.mark.parametrize('shape', [(1,), (7,), (3, 5), (2, 3, 11), (8, 8)])
def test_pack_unpack_round_trip(shape):
  signs = np.where(np.random.default_rng(3).normal(size=shape) >= 0, 1.0, -1.0)
  packed = binarize.pack_signs(signs)
  assert packed.dtype == jnp.uint8 and packed.size == -(-signs.size // 8)
  np.testing.assert_array_equal(binarize.unpack_signs(packed, shape), signs)
  jitted = jax.jit(binarize.unpack_signs, static_argnums=(1, 2))
  np.testing.assert_array_equal(jitted(packed, shape, jnp.bfloat16), signs)


def test_bad_binarize_config_is_one_line_error():
  with pytest.raises(UserError, match="unknown variant 'per_word'"):
    BinarizeConfig(embeddings='per_word')
  with pytest.raises(UserError, match='granularity'):
    BinarizeConfig(granularity='per_row')
  with pytest.raises(UserError, match='clip'):
    BinarizeConfig(clip=-1.0)
