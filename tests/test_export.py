"""Packed 1-bit export: round trips for every embedding variant, corrupt files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from bitmaps_jax.model import bert
from bitmaps_jax.model import binary_params
from bitmaps_jax.model import packed as export
from bitmaps_jax import kernels
from bitmaps_jax.errors import UserError

VARIANTS = ['none', 'scalar', 'per_dim', 'per_token', 'rank1']
DENSE = ['per_tensor', 'per_channel', 'statistics', 'rank1']


def _model(variant, center=False, granularity='per_tensor', architecture='BertForMaskedLM',
           center_embeddings=False):
  cfg = bert.sized_config('tiny', architecture=architecture,
                            binarize=dict(layers=True, embeddings=variant, center=center,
                                          granularity=granularity,
                                          center_embeddings=center_embeddings))
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  # Move away from the initial state so that the check is not about init-time values.
  params = jax.tree_util.tree_map(
      lambda p: p + 0.01 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
  return cfg, params


def _logits(cfg, params):
  ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12)))
  return np.asarray(bert.build_model(cfg).apply({'params': params}, ids))


@pytest.mark.parametrize('variant', VARIANTS)
def test_packed_file_reproduces_binarized_model(tmp_path, variant):
  cfg, params = _model(variant, center=(variant == 'scalar'))
  path = str(tmp_path / 'model.bitmaps')
  export.save_packed(cfg, params, path, float_dtype='float32')
  cfg2, params2 = export.load_packed(path)
  np.testing.assert_array_equal(_logits(cfg2, params2), _logits(cfg, params))


@pytest.mark.parametrize('variant', ['scalar', 'per_dim', 'per_token'])
def test_packed_file_reproduces_centred_embeddings(tmp_path, variant):
  cfg, params = _model(variant, center_embeddings=True)
  path = str(tmp_path / 'model.bitmaps')
  export.save_packed(cfg, params, path, float_dtype='float32')
  cfg2, params2 = export.load_packed(path)
  assert not cfg2.binarize.center_embeddings  # the file holds signs already centred
  np.testing.assert_allclose(_logits(cfg2, params2), _logits(cfg, params), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('granularity', DENSE)
def test_packed_file_reproduces_every_dense_scheme(tmp_path, granularity):
  cfg, params = _model('none', center=True, granularity=granularity)
  path = str(tmp_path / 'model.bitmaps')
  export.save_packed(cfg, params, path, float_dtype='float32')
  cfg2, params2 = export.load_packed(path)
  np.testing.assert_allclose(_logits(cfg2, params2), _logits(cfg, params), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize('kernel', ['ffi', 'xla', 'pallas'])
def test_packed_model_runs_from_the_bits(tmp_path, kernel):
  if kernel == 'ffi' and not kernels.ffi.available():
    pytest.skip('the CPU kernel library is not built')
  cfg, params = _model('per_dim', architecture='BertForSequenceClassification')
  path = str(tmp_path / 'model.bitmaps')
  export.save_packed(cfg, params, path, float_dtype='float32')
  model = export.PackedModel.load(path, kernel=kernel)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12)))
  np.testing.assert_allclose(model(ids), _logits(cfg, params), rtol=1e-5, atol=1e-5)
  # In memory: 1 bit per binary weight (padded to the kernel's layout), 4 bytes per other
  # value (a float32 file); no float copy of a binary weight.
  flat = traverse_util.flatten_dict(params)
  layout = binary_params.layout(cfg)
  def bits_bytes(w):
    k, n = w.shape[::-1] if w.shape[0] == cfg.vocab_size else w.shape  # tables hold E^T
    shape, dtype = kernels.layouts.packed_shape(k, n, kernels.LAYOUT_OF[kernel])
    return int(np.prod(shape)) * np.dtype(dtype).itemsize
  expected = sum(bits_bytes(flat[p]) if p in layout else 4 * flat[p].size for p in flat)
  assert model.nbytes == expected
  assert expected < sum(4 * v.size for v in flat.values()) / 2
  signs = jax.tree.leaves(model.packed_signs)
  assert len(signs) == len(layout) and all(v.dtype in (jnp.uint8, jnp.uint32) for v in signs)


@pytest.mark.parametrize('float_dtype', ['float16', 'bfloat16'])
def test_16bit_file_equals_model_with_16bit_floats(tmp_path, float_dtype):
  cfg, params = _model('per_dim')
  path = str(tmp_path / 'model.bitmaps')
  export.save_packed(cfg, params, path, float_dtype=float_dtype)
  cfg2, params2 = export.load_packed(path)
  binary = binary_params.layout(cfg)
  flat = traverse_util.flatten_dict(params)
  rounded = traverse_util.unflatten_dict({
      k: v if k in binary else v.astype(float_dtype).astype(jnp.float32)
      for k, v in flat.items()})
  np.testing.assert_array_equal(_logits(cfg2, params2), _logits(cfg, rounded))


def test_packed_size_is_one_bit_per_binary_weight():
  cfg, params = _model('per_dim')
  flat = traverse_util.flatten_dict(params)
  n_binary = sum(flat[p].size for p in binary_params.layout(cfg))
  n_other = sum(v.size for v in jax.tree_util.tree_leaves(params)) - n_binary
  size = len(export.packed_bytes(cfg, params, 'float16'))
  payload = n_binary / 8 + 2 * n_other
  assert payload <= size <= payload * 1.1 + 4096


def test_corrupt_and_missing_files(tmp_path):
  cfg, params = _model('none')
  path = tmp_path / 'model.bitmaps'
  export.save_packed(cfg, params, str(path))
  data = path.read_bytes()
  with pytest.raises(UserError, match='not found'):
    export.load_packed(str(tmp_path / 'absent.bitmaps'))
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(UserError, match='truncated'):
    export.load_packed(str(path))
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(flipped))
  with pytest.raises(UserError, match='checksum'):
    export.load_packed(str(path))
  path.write_bytes(b'PK\x03\x04' + data[4:])
  with pytest.raises(UserError, match='bad header'):
    export.load_packed(str(path))


def _rewrite(path, edit):
  """Rewrites the packed file's body with `edit(payload)` and a matching checksum, as a
  hand edit of the stored config or tensors would."""
  import msgpack
  import zlib
  data = path.read_bytes()
  payload = msgpack.unpackb(data[export._HEADER.size:], raw=False)
  edit(payload)
  body = msgpack.packb(payload, use_bin_type=True)
  path.write_bytes(export._HEADER.pack(export.MAGIC, zlib.crc32(body), len(body)) + body)


def _edit_config(**changes):
  import json

  def edit(payload):
    payload['config'] = json.dumps(dict(json.loads(payload['config']), **changes))
  return edit


def _edit_tensor(key, **changes):
  def edit(payload):
    payload['tensors'][key].update(changes)
  return edit


@pytest.mark.parametrize('edit,fragment', [
    (_edit_config(intermediate_size=80),
     'layer_0/intermediate/dense/bias has shape [64], the stored config gives [80]'),
    (_edit_config(vocab_size=600),
     'word_embeddings/embedding has shape [512, 32], the stored config gives [600, 32]'),
    (_edit_tensor('bert/embeddings/LayerNorm/scale', dtype='float32'),
     "LayerNorm/scale has dtype float32, the file's float_dtype is float16"),
    (_edit_tensor('bert/embeddings/LayerNorm/scale', data=b'\0' * 8),
     'LayerNorm/scale has 8 bytes of data, shape [32] in float16 needs 64'),
    (_edit_tensor('bert/encoder/layer_0/intermediate/dense/kernel', packed_signs=b'\0' * 10),
     'has 10 bytes of packed signs, shape [32, 64] needs 256'),
])
def test_a_tensor_that_disagrees_with_the_stored_config_is_named(tmp_path, edit, fragment):
  cfg, params = _model('none')
  path = tmp_path / 'model.bmp'
  export.save_packed(cfg, params, str(path))
  _rewrite(path, edit)
  with pytest.raises(UserError, match='tensor ') as e:
    export.read_packed(str(path))
  assert str(e.value).startswith(f'{path}: tensor ') and fragment in str(e.value), e.value
