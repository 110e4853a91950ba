"""The STE sign, the binarization schemes (dense and embedding) and bit packing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax import BinarizeConfig, sign_ste
from bitmaps_jax.binary import schemes
from bitmaps_jax.binary.packing import pack_signs, unpack_signs
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


@pytest.mark.parametrize('name', list(schemes.DENSE_SCHEMES))
@pytest.mark.parametrize('center', [False, True])
def test_dense_matmul_equals_product_with_dequantized_kernel(name, center):
  rng = np.random.default_rng(0)
  x, w = jnp.asarray(rng.normal(size=(4, 6))), jnp.asarray(rng.normal(size=(6, 5)))
  scheme = schemes.DENSE_SCHEMES[name](center=center)
  scales = scheme.init_scales(w)
  assert tuple(scales) == scheme.scale_names
  np.testing.assert_allclose(scheme.matmul(x, w, scales), x @ scheme.dequantize(w, scales),
                             rtol=1e-5, atol=1e-5)


def test_scale_shapes_and_init_values():
  w = jnp.array([[1.0, -3.0], [2.0, -2.0]])
  s = schemes.PerTensor().init_scales(w)
  assert float(s['alpha']) == 2.0 and float(s['gamma']) == -0.5
  s = schemes.PerChannel(center=True, gamma_init='zero').init_scales(w)
  np.testing.assert_allclose(s['alpha'], [0.5, 0.5])
  np.testing.assert_array_equal(s['gamma'], [0.0, 0.0])
  s = schemes.Rank1Dense().init_scales(jnp.ones((6, 5)))
  assert s['h'].shape == (6,) and s['g'].shape == (5,)


def test_rank1_dense_reconstructs_sign_times_outer_product():
  rng = np.random.default_rng(4)
  w = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
  scheme = schemes.Rank1Dense()
  scales = {'g': jnp.array([1.0, 2.0, 3.0]), 'h': jnp.arange(1.0, 8.0)}
  expected = np.outer(np.arange(1.0, 8.0), [1.0, 2.0, 3.0]) * np.where(w >= 0, 1, -1)
  np.testing.assert_allclose(scheme.dequantize(w, scales), expected)
  x = jnp.asarray(rng.normal(size=(2, 7)), jnp.float32)
  np.testing.assert_allclose(scheme.matmul(x, w, scales), x @ expected, rtol=1e-5)


def test_statistics_scales_have_no_parameters_and_follow_the_weights():
  rng = np.random.default_rng(5)
  w = jnp.asarray(rng.normal(size=(6, 4)) + 0.3, jnp.float32)
  scheme = schemes.Statistics()
  assert scheme.scale_names == () and scheme.init_scales(w) == {}
  mu = np.mean(np.asarray(w), axis=0)
  alpha = np.mean(np.abs(np.asarray(w) - mu), axis=0)
  np.testing.assert_allclose(scheme.dequantize(w, {}),
                             alpha * np.where(np.asarray(w) - mu >= 0, 1, -1), rtol=1e-6)
  # The only trainable array is the latent weight: its gradient exists and is finite.
  x = jnp.asarray(rng.normal(size=(3, 6)), jnp.float32)
  g = jax.grad(lambda v: jnp.sum(scheme.matmul(x, v, {}) ** 2))(w)
  assert g.shape == w.shape and bool(jnp.all(jnp.isfinite(g)))


def test_ternary_codes_threshold_and_init_by_hand():
  w = jnp.array([[1.0, -3.0], [0.2, -0.1], [-2.0, 0.05]])
  scheme = schemes.Ternary()
  # Column 0: mean |w| 16/15, delta 0.747; column 1: mean 1.05, delta 0.735.
  np.testing.assert_array_equal(scheme.signs(w), [[1, -1], [0, 0], [-1, 0]])
  scales = scheme.init_scales(w)
  np.testing.assert_allclose(scales['alpha'], [1.5, 3.0])  # mean |w| above delta
  np.testing.assert_allclose(scheme.dequantize(w, scales), [[1.5, -3.0], [0, 0], [-1.5, 0]])
  # The gradient reaches every latent weight inside the clip, zeros included, so a weight
  # below the threshold can grow out of it; outside the clip it stops.
  x = jnp.ones((1, 3))
  g = jax.grad(lambda v: jnp.sum(scheme.matmul(x, v, {'alpha': jnp.ones(2)})))(w)
  np.testing.assert_array_equal(g, [[1, 0], [1, 1], [0, 1]])
  with pytest.raises(UserError, match='ternary.*no packed 1-bit form'):
    scheme.packed(w, scales)


@pytest.mark.parametrize('variant', list(schemes.EMBEDDING_SCHEMES))
@pytest.mark.parametrize('center', [False, True])
def test_embedding_lookup_and_decoder_match_dense_table(variant, center):
  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.normal(size=(50, 8)) + rng.normal(size=(50, 1)), jnp.float32)
  scheme = BinarizeConfig(embeddings=variant, center_embeddings=center).embedding_scheme
  scales = scheme.init_scales(table)
  assert tuple(scales) == scheme.scale_names
  dense = scheme.dequantize(table, scales)
  ids = jnp.array([[3, 0, 49], [7, 7, 1]])
  np.testing.assert_allclose(scheme.lookup(table, ids, scales), dense[ids], rtol=1e-6)
  h = jnp.asarray(rng.normal(size=(2, 3, 8)), jnp.float32)
  np.testing.assert_allclose(scheme.decode(table, h, scales), h @ dense.T, rtol=1e-5,
                             atol=1e-5)


def test_centred_per_token_embedding_takes_signs_around_each_row_mean():
  rng = np.random.default_rng(6)
  offsets = rng.normal(size=(30, 1)) * 2.0  # rows far from zero: plain signs are all alike
  table = rng.normal(size=(30, 8)) + offsets
  centred = BinarizeConfig(embeddings='per_token', center_embeddings=True).embedding_scheme
  s = centred.init_scales(table)
  mu = table.mean(axis=1, keepdims=True)
  np.testing.assert_allclose(s['alpha'], np.abs(table - mu).mean(axis=1), rtol=1e-5)
  np.testing.assert_allclose(s['gamma'], mu[:, 0], rtol=1e-5, atol=1e-6)
  dense = np.asarray(centred.dequantize(jnp.asarray(table), s))
  expected = s['alpha'][:, None] * np.where(table - mu >= 0, 1, -1) + mu
  np.testing.assert_allclose(dense, expected, rtol=1e-5, atol=1e-6)
  plain = schemes.PerTokenEmbedding()
  plain_dense = plain.dequantize(jnp.asarray(table), plain.init_scales(table))
  assert np.linalg.norm(table - dense) < 0.8 * np.linalg.norm(table - plain_dense)
  # The dense schemes keep their own switch: centring embeddings leaves kernels alone.
  cfg = BinarizeConfig(layers=True, embeddings='per_token', center_embeddings=True)
  assert not cfg.dense_scheme.center and cfg.embedding_scheme.center


def test_rank1_init_is_best_rank1_approximation_of_magnitudes():
  rng = np.random.default_rng(2)
  table = rng.normal(size=(40, 6)) * rng.uniform(0.5, 2.0, size=(40, 1))
  scheme = schemes.Rank1Embedding()
  s = scheme.init_scales(table)
  u, sv, vt = np.linalg.svd(np.abs(table))
  best = sv[0] * np.outer(u[:, 0], vt[0])
  np.testing.assert_allclose(np.outer(s['u'], s['v']), best, rtol=1e-4, atol=1e-5)
  assert (np.asarray(s['u']) > 0).all() and (np.asarray(s['v']) > 0).all()
  approx = np.asarray(scheme.dequantize(jnp.asarray(table), s))
  # Better than scaling the signs by the plain SVD of E, and than per_dim.
  u2, sv2, vt2 = np.linalg.svd(table)
  plain = np.abs(sv2[0] * np.outer(u2[:, 0], vt2[0])) * np.sign(table)
  per_dim = schemes.PerDimEmbedding(gamma_init='zero')
  per_dim_approx = per_dim.dequantize(jnp.asarray(table), per_dim.init_scales(table))
  err = np.linalg.norm(table - approx)
  assert err < np.linalg.norm(table - plain) and err < np.linalg.norm(table - per_dim_approx)


@pytest.mark.parametrize('shape', [(1,), (7,), (3, 5), (2, 3, 11), (8, 8)])
def test_pack_unpack_round_trip(shape):
  signs = np.where(np.random.default_rng(3).normal(size=shape) >= 0, 1.0, -1.0)
  packed = pack_signs(signs)
  assert packed.dtype == jnp.uint8 and packed.size == -(-signs.size // 8)
  np.testing.assert_array_equal(unpack_signs(packed, shape), signs)
  jitted = jax.jit(unpack_signs, static_argnums=(1, 2))
  np.testing.assert_array_equal(jitted(packed, shape, jnp.bfloat16), signs)


def test_bad_binarize_config_is_one_line_error():
  with pytest.raises(UserError, match="unknown value 'per_word'"):
    BinarizeConfig(embeddings='per_word')
  with pytest.raises(UserError, match='granularity'):
    BinarizeConfig(granularity='per_row')
  with pytest.raises(UserError, match='clip'):
    BinarizeConfig(clip=-1.0)
  with pytest.raises(UserError, match='binarize: .*unexpected keyword'):
    BinarizeConfig.from_dict({'layer': True})
