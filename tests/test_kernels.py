"""The 1-bit kernels against the unpacked reference: odd shapes, every dense scheme's packed
form, embedding rows and the tied decoder, real MiniLM weights, the fallback and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bitmaps_jax import kernels
from bitmaps_jax.binary import schemes
from bitmaps_jax.errors import UserError
from bitmaps_jax.kernels import ffi, layouts
from bitmaps_jax.model import bert, packed

needs_ffi = pytest.mark.skipif(not ffi.available(), reason='the CPU kernel library is not built')
KERNELS = [pytest.param('ffi', marks=needs_ffi), 'xla', 'pallas']
SHAPES = [(1, 1, 1), (3, 5, 3), (17, 13, 9), (1, 33, 70), (3, 130, 200), (17, 129, 24),
          (9, 384, 1536)]  # (tokens, in, out): in/out not multiples of 8 or 32, 1/3/17 tokens


def _signs(rng, k, n):
  return np.where(rng.random((k, n)) < 0.5, -1.0, 1.0).astype(np.float32)


def _close(y, ref):
  """The kernels' bar: max |y - ref| <= 1e-5 max |ref| in float32."""
  y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
  assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize('layout', layouts.LAYOUTS)
def test_layouts_keep_every_sign(layout):
  rng = np.random.default_rng(0)
  for k, n in [(1, 1), (5, 3), (17, 13), (33, 70)]:
    s = _signs(rng, k, n)
    data = layouts.pack(s, layout)
    shape, dtype = layouts.packed_shape(k, n, layout)
    assert data.shape == shape and data.dtype == dtype
    if layout == 'lut4':
      np.testing.assert_array_equal(layouts.unpack_lut4(data, k, n), s)
    else:
      np.testing.assert_array_equal(np.asarray(kernels.xla.unpack_planes(data, k, jnp.float32)),
                                    s)


@pytest.mark.parametrize('kernel', KERNELS)
def test_sign_matmul_matches_the_float_product(kernel):
  rng = np.random.default_rng(1)
  for m, k, n in SHAPES:
    s = _signs(rng, k, n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    p = kernels.pack_signs(s, kernel)
    _close(jax.jit(kernels.sign_matmul)(x, p), x.astype(np.float64) @ s)
  # Leading batch dimensions are kept.
  x = rng.standard_normal((2, 3, k)).astype(np.float32)
  assert kernels.sign_matmul(x, p).shape == (2, 3, n)


@needs_ffi
@pytest.mark.parametrize('path', ffi.PATHS)
def test_every_cpu_code_path_gives_the_same_answer(path):
  rng = np.random.default_rng(2)
  try:
    ffi.set_max_path(path)
    # 40, 64 tokens: split by tokens; 1037 outputs: wider than one pass over outputs;
    # 100 and 130 tokens: more than one block of token tiles on the tiled (AMX) path, 600 more
    # than one round of them; 257, 1000 and 1100 inputs: blocks of input tiles, the last cut
    # short.
    for m, k, n in SHAPES + [(64, 96, 48), (40, 768, 72), (5, 70, 1037), (40, 9, 1037),
                             (100, 257, 100), (130, 1000, 40), (12, 768, 64), (600, 300, 70),
                             (12, 1, 1), (13, 3, 5), (20, 1100, 40)]:
      s = _signs(rng, k, n)
      x = rng.standard_normal((m, k)).astype(np.float32)
      y, total = jax.jit(kernels.sign_matmul_and_sum)(x, kernels.pack_signs(s, 'ffi'))
      _close(y, x.astype(np.float64) @ s)
      _close(total, x.astype(np.float64).sum(-1, keepdims=True))
  finally:
    ffi.set_max_path(ffi.PATHS[-1])


@needs_ffi
@pytest.mark.parametrize('path', ffi.PATHS)
def test_the_cpu_kernel_is_as_close_as_float32s_own_matmul(path):
  """Activations with outliers (a few features 100x the rest, as in trained BERTs): the
  kernel's error against float64 stays within float32 matmul's own (the tiles' fixed point
  is set per token by its largest value)."""
  rng = np.random.default_rng(5)
  try:
    ffi.set_max_path(path)
    for m, k, n in [(64, 768, 96), (16, 3072, 48), (13, 100, 40)]:
      s = _signs(rng, k, n)
      x = rng.standard_normal((m, k)).astype(np.float32)
      x[:, rng.choice(k, 4, replace=False)] *= 100.0
      ref = x.astype(np.float64) @ s
      y = np.asarray(jax.jit(kernels.sign_matmul)(x, kernels.pack_signs(s, 'ffi')), np.float64)
      own = np.abs((x @ s.astype(np.float32)).astype(np.float64) - ref).max()
      assert np.abs(y - ref).max() <= max(own, 1e-7 * np.abs(ref).max())
  finally:
    ffi.set_max_path(ffi.PATHS[-1])


@needs_ffi
@pytest.mark.parametrize('path', ffi.PATHS)
def test_rows_of_zeros_tiny_values_and_non_finite_values(path):
  """Each token's row stands alone: a zero row gives zeros, a row of values near 1e-30 its
  own small products, and a row holding NaN or inf non-finite outputs, the others untouched."""
  rng = np.random.default_rng(6)
  s = _signs(rng, 200, 40)
  x = rng.standard_normal((20, 200)).astype(np.float32)
  x[1] = 0.0
  x[2] *= 1e-30
  x[3, 7] = np.nan
  x[4, 9] = np.inf
  try:
    ffi.set_max_path(path)
    y = np.asarray(jax.jit(kernels.sign_matmul)(x, kernels.pack_signs(s, 'ffi')), np.float64)
  finally:
    ffi.set_max_path(ffi.PATHS[-1])
  ref = x.astype(np.float64) @ s
  assert not np.isfinite(y[3]).any() and not np.isfinite(y[4]).any()
  np.testing.assert_array_equal(y[1], 0.0)
  _close(y[2], ref[2])
  keep = np.r_[0, 1, 5:20]
  _close(y[keep], ref[keep])


@pytest.mark.parametrize('kernel', KERNELS)
def test_the_product_comes_with_the_sum_of_x(kernel):
  rng = np.random.default_rng(5)
  for m, k, n in [(1, 5, 3), (17, 130, 40)]:
    s = _signs(rng, k, n)
    x = rng.standard_normal((2, m, k)).astype(np.float32)
    y, total = jax.jit(kernels.sign_matmul_and_sum)(x, kernels.pack_signs(s, kernel))
    assert y.shape == (2, m, n) and total.shape == (2, m, 1)
    _close(y, x.astype(np.float64) @ s)
    _close(total, x.astype(np.float64).sum(-1, keepdims=True))


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('granularity', ['per_tensor', 'per_channel', 'rank1', 'statistics'])
def test_binary_matmul_is_x_times_the_dequantized_matrix(kernel, granularity):
  rng = np.random.default_rng(3)
  scheme = schemes.DENSE_SCHEMES[granularity](center=granularity != 'rank1')
  w = jnp.asarray(rng.standard_normal((37, 29)).astype(np.float32) * 0.05 + 0.01)
  scales = scheme.init_scales(w)
  signs, stored = scheme.packed(w, scales)  # what a packed file holds
  x = rng.standard_normal((3, 37)).astype(np.float32)
  y = kernels.binary_matmul(x, kernels.pack_signs(np.asarray(signs), kernel), stored)
  _close(y, x.astype(np.float64) @ np.asarray(scheme.dequantize(w, scales), np.float64))


@pytest.mark.parametrize('kernel', KERNELS)
def test_rows_come_from_the_bits(kernel):
  rng = np.random.default_rng(4)
  table = _signs(rng, 21, 37)  # (vocab, hidden)
  p = kernels.pack_signs(table.T, kernel)
  ids = np.array([[0, 20, 7], [7, 3, 19]])
  np.testing.assert_array_equal(np.asarray(kernels.row_signs(p, ids)), table[ids])


def _mlm(embeddings, granularity='per_channel'):
  cfg = bert.sized_config('tiny', architecture='BertForMaskedLM',
                          binarize=dict(layers=True, embeddings=embeddings,
                                        granularity=granularity))
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  params = jax.tree_util.tree_map(
      lambda p: p + 0.01 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  return cfg, params


@pytest.mark.parametrize('kernel', KERNELS)
@pytest.mark.parametrize('embeddings', ['scalar', 'per_dim', 'per_token', 'rank1'])
def test_packed_mlm_logits_equal_the_unpacked_reference(tmp_path, kernel, embeddings):
  cfg, params = _mlm(embeddings, 'rank1' if embeddings == 'rank1' else 'per_channel')
  path = str(tmp_path / 'm.bmp')
  packed.save_packed(cfg, params, path, float_dtype='float32')
  ref_cfg, ref_params = packed.load_packed(path)
  ids = np.random.default_rng(5).integers(0, cfg.vocab_size, (3, 17))
  ref = bert.build_model(ref_cfg).apply({'params': ref_params}, ids)
  _close(packed.PackedModel.load(path, kernel=kernel)(ids), ref)


@pytest.mark.parametrize('kernel', KERNELS)
def test_real_minilm_weights(tmp_path, minilm_dir, kernel):
  from bitmaps_jax import BinarizeConfig, load_hf_bert
  cfg, params = load_hf_bert(minilm_dir, BinarizeConfig(layers=True, granularity='per_channel'))
  path = str(tmp_path / 'minilm.bmp')
  packed.save_packed(cfg, params, path, float_dtype='float32')
  ref_cfg, ref_params = packed.load_packed(path)
  ids = np.array([[101, 7592, 2088, 2003, 1037, 3231, 102]], np.int32)
  ref = bert.build_model(ref_cfg).apply({'params': ref_params}, ids)
  out = packed.PackedModel.load(path, kernel=kernel)(ids)
  _close(out.last_hidden_state, ref.last_hidden_state)
  # And one real matrix on its own, several token counts.
  flat = traverse_util.flatten_dict(ref_params)
  w = np.asarray(flat[('encoder', 'layer_0', 'intermediate', 'dense', 'kernel')])
  rng = np.random.default_rng(6)
  for m in (1, 3, 17):
    x = rng.standard_normal((m, w.shape[0])).astype(np.float32)
    _close(kernels.sign_matmul(x, kernels.pack_signs(w, kernel)), x.astype(np.float64) @ w)


def test_without_the_library_auto_is_xla_with_one_warning(monkeypatch, capsys):
  monkeypatch.setattr(ffi, 'library_path', lambda: None)
  ffi._library.cache_clear()
  monkeypatch.setattr(kernels, '_warned', [])
  try:
    assert kernels.resolve('auto') == 'xla'
    assert kernels.resolve('auto') == 'xla'
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'not built' in err
    with pytest.raises(UserError, match='not built'):
      kernels.resolve('ffi')
  finally:
    ffi._library.cache_clear()


def test_bad_inputs_are_one_clear_error():
  s = _signs(np.random.default_rng(7), 16, 24)
  with pytest.raises(UserError, match='unknown value'):
    kernels.resolve('cuda')
  p = kernels.pack_signs(s, 'xla')
  x = np.ones((2, 16), np.float32)
  short = kernels.PackedSigns(p.data[:-1], p.k, p.n, p.kernel)
  with pytest.raises(UserError, match=r'must be uint8 \(2, 24\), got uint8 \(1, 24\)'):
    kernels.sign_matmul(x, short)
  wrong_dtype = kernels.PackedSigns(p.data.astype(jnp.int32), p.k, p.n, p.kernel)
  with pytest.raises(UserError, match='must be uint8'):
    kernels.sign_matmul(x, wrong_dtype)
  with pytest.raises(UserError, match='x has 15 features'):
    kernels.sign_matmul(np.ones((2, 15), np.float32), p)
  with pytest.raises(UserError, match='2-D'):
    kernels.pack_signs(np.ones(8), 'xla')
  with pytest.raises(UserError, match='lack'):
    kernels.binary_matmul(x, p, {'alpha': np.ones(24)})
