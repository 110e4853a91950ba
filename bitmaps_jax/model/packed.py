"""The packed model file: 1 bit per binary weight, every other tensor in 16 bits, plus the config.

Layout: 8-byte magic, 4-byte CRC32 of the body, 8-byte body length, then a msgpack body
{'config': json, 'float_dtype': str, 'tensors': {'a/b/kernel': array or packed signs},
'vocab': the identity of the vocabulary the model was trained with (size and a hash of its
tokens), when the exporter knew it}. The CRC and length catch truncated or damaged files before
anything is decoded.
"""

import dataclasses
import json
import struct
import zlib
from typing import Optional

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
from flax import traverse_util

from bitmaps_jax import files, kernels
from bitmaps_jax.binary.layers import PACKED
from bitmaps_jax.binary.packing import pack_signs, unpack_signs
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert, binary_params
from bitmaps_jax.model.bert import BertConfig

MAGIC = b'BITMAPS1'
_HEADER = struct.Struct('<8sIQ')
FLOAT_DTYPES = ('float16', 'bfloat16', 'float32')


def _array_record(a: np.ndarray) -> dict:
  return {'dtype': a.dtype.name, 'shape': list(a.shape), 'data': a.tobytes()}


def _array_from_record(r: dict) -> np.ndarray:
  dtype = jnp.dtype(r['dtype'])  # jnp.dtype knows bfloat16
  return np.frombuffer(r['data'], dtype=dtype).reshape(r['shape'])


def packed_bytes(config: BertConfig, params, float_dtype: str = 'float16',
                 vocab: Optional[dict] = None) -> bytes:
  """Serializes `params` of `config` (and the identity of its vocabulary, if given) into the
  packed format, returning the file's bytes."""
  if float_dtype not in FLOAT_DTYPES:
    raise UserError(f'float_dtype {float_dtype!r} is not one of {", ".join(FLOAT_DTYPES)}')
  stored, flat, binary = binary_params.packed_form(config, params)
  tensors = {}
  for path, w in flat.items():
    key = '/'.join(path)
    if path in binary:
      tensors[key] = {'packed_signs': np.asarray(pack_signs(w)).tobytes(),
                      'shape': list(w.shape)}
    else:
      tensors[key] = _array_record(np.asarray(w).astype(jnp.dtype(float_dtype)))
  payload = {'config': json.dumps(stored.to_dict()), 'float_dtype': float_dtype,
             'tensors': tensors}
  if vocab is not None:
    payload['vocab'] = dict(vocab)
  body = msgpack.packb(payload, use_bin_type=True)
  return _HEADER.pack(MAGIC, zlib.crc32(body), len(body)) + body


def save_packed(config: BertConfig, params, path: str, float_dtype: str = 'float16',
                vocab: Optional[dict] = None) -> int:
  """Writes the packed file (local or remote) atomically. Returns its size in bytes."""
  data = packed_bytes(config, params, float_dtype, vocab)
  files.write_bytes(path, data)
  return len(data)


@dataclasses.dataclass
class PackedFile:
  config: BertConfig
  records: dict  # {param path: record}, still packed
  vocab: Optional[dict]  # the vocabulary's identity, None in files that do not record it


def read_packed(path: str):
  """(config, {path: record}) of a packed file, checked; records are still packed."""
  f = read_packed_file(path)
  return f.config, f.records


def read_packed_file(path: str) -> PackedFile:
  """A packed file, checked: every tensor's shape and dtype against the stored config."""
  if not files.isfile(path):
    raise UserError(f'{path}: packed model file not found')
  data = files.read_bytes(path)
  if len(data) < _HEADER.size or data[:8] != MAGIC:
    raise UserError(f'{path}: not a bitmaps-jax packed model (bad header)')
  _, crc, length = _HEADER.unpack(data[:_HEADER.size])
  body = data[_HEADER.size:]
  if len(body) != length:
    raise UserError(f'{path}: truncated or padded packed model ({len(body)} of {length} bytes)')
  if zlib.crc32(body) != crc:
    raise UserError(f'{path}: corrupt packed model (checksum mismatch)')
  try:
    payload = msgpack.unpackb(body, raw=False)
    config = BertConfig.from_dict(json.loads(payload['config']))
    records = {tuple(k.split('/')): r for k, r in payload['tensors'].items()}
  except Exception as e:  # a well-checksummed file from another tool or version
    raise UserError(f'{path}: unreadable packed model ({type(e).__name__}: {e})') from None
  expected = traverse_util.flatten_dict(bert.param_shapes(config))
  if set(expected) != set(records):
    raise UserError(f'{path}: tensors do not match the stored config')
  float_dtype = payload.get('float_dtype')
  if float_dtype not in FLOAT_DTYPES:
    raise UserError(f'{path}: float_dtype {float_dtype!r} is not one of {", ".join(FLOAT_DTYPES)}')
  for key in sorted(expected):
    problem = _record_problem(records[key], tuple(expected[key].shape), float_dtype)
    if problem:
      raise UserError(f'{path}: tensor {"/".join(key)} {problem}')
  vocab = payload.get('vocab')
  if vocab is not None and not (isinstance(vocab, dict) and
                                {'size', 'tokens_sha256'} <= set(vocab)):
    raise UserError(f'{path}: unreadable vocabulary record {vocab!r}')
  return PackedFile(config, records, vocab)


def _record_problem(record, shape: tuple, float_dtype: str) -> str:
  """What is wrong with one tensor record against the shape the stored config gives it
  ('' if nothing): a file edited by hand must fail here, not deep inside the model."""
  if not isinstance(record, dict):
    return 'is not a tensor record'
  size = int(np.prod(shape))
  want = f'the stored config gives {list(shape)}'
  if _is_signs(record):
    stored = record.get('shape')
    if stored is None or [int(d) for d in stored] != list(shape):
      return f'has shape {stored}, {want}'
    nbytes = len(record['packed_signs'])
    if nbytes != -(-size // 8):
      return f'has {nbytes} bytes of packed signs, shape {list(shape)} needs {-(-size // 8)}'
    return ''
  if 'dtype' not in record or 'shape' not in record or 'data' not in record:
    return 'lacks its dtype, shape or data'
  if record['dtype'] != float_dtype:
    return f'has dtype {record["dtype"]}, the file\'s float_dtype is {float_dtype}'
  if [int(d) for d in record['shape']] != list(shape):
    return f'has shape {record["shape"]}, {want}'
  nbytes = len(record['data'])
  need = size * jnp.dtype(float_dtype).itemsize
  if nbytes != need:
    return f'has {nbytes} bytes of data, shape {list(shape)} in {float_dtype} needs {need}'
  return ''


def _is_signs(record) -> bool:
  return 'packed_signs' in record


def load_packed(path: str):
  """(config, params) from a packed file; binary weights come back as +-1 latent weights,
  which the model binarizes to themselves."""
  config, records = read_packed(path)
  flat = {}
  for key, rec in records.items():
    if _is_signs(rec):
      packed = np.frombuffer(rec['packed_signs'], np.uint8)
      flat[key] = unpack_signs(packed, tuple(rec['shape']), config.storage_dtype)
    else:
      flat[key] = jnp.asarray(_array_from_record(rec), config.storage_dtype)
  return config, traverse_util.unflatten_dict(flat)


class PackedModel:
  """A model that runs from the packed file's bits: each binary matrix stays at 1 bit per
  weight in memory and is multiplied by a 1-bit kernel (`bitmaps_jax.kernels`) that reads
  the bits, never a float copy; word-embedding rows are looked up from their bits. The
  other weights are cast once, at load, to the compute dtype (float32 unless the config says
  otherwise), so no call converts them again.

      model = PackedModel.load('model.bmp')          # kernel='auto': the fastest here
      logits = model(input_ids, attention_mask, token_type_ids)

  `kernel`: 'ffi' (the C++ CPU kernel), 'pallas' (TPU/GPU), 'xla' (unpack inside the
  jitted forward and let XLA multiply: the reference), or 'auto'.
  """

  def __init__(self, config: BertConfig, records: dict, kernel: str = 'auto'):
    self.config = config
    self.kernel = kernels.resolve(kernel)
    floats, signs = {}, {}
    for key, r in records.items():
      if _is_signs(r):
        shape = tuple(r['shape'])
        bits = np.unpackbits(np.frombuffer(r['packed_signs'], np.uint8),
                             count=int(np.prod(shape)))
        matrix = bits.reshape(shape).astype(np.int8) * 2 - 1
        if key[-1] == 'embedding':  # (vocab, hidden): kept as E^T for the tied decoder
          matrix = matrix.T
        signs[key] = kernels.pack_signs(matrix, self.kernel)
      else:
        floats[key] = jnp.asarray(_array_from_record(r), config.storage_dtype)
    self.params = traverse_util.unflatten_dict(floats)
    self.packed_signs = traverse_util.unflatten_dict(signs)
    module = bert.build_model(config)

    def forward(params, packed_signs, input_ids, attention_mask, token_type_ids):
      # Missing masks are made here, inside the compiled function: made outside, each is
      # one more dispatch per call, about 0.3 ms on CPU, a few percent of a sentence.
      if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
      if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
      return module.apply({'params': params, PACKED: packed_signs}, input_ids,
                          attention_mask, token_type_ids, deterministic=True)

    self._forward = jax.jit(forward)

  @classmethod
  def load(cls, path: str, kernel: str = 'auto') -> 'PackedModel':
    return cls(*read_packed(path), kernel=kernel)

  @property
  def nbytes(self) -> int:
    """Bytes of the weights as held in memory."""
    leaves = jax.tree.leaves((self.params, self.packed_signs))
    return sum(int(v.nbytes) for v in leaves)

  def _inputs(self, input_ids, attention_mask, token_type_ids):
    host = lambda a: a if a is None or isinstance(a, jax.Array) else np.asarray(a)
    return (self.params, self.packed_signs, host(input_ids), host(attention_mask),
            host(token_type_ids))

  def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
    """The model's output (logits for the MLM and classifier heads) from the packed bits."""
    return self._forward(*self._inputs(input_ids, attention_mask, token_type_ids))

  def lower(self, input_ids, attention_mask=None, token_type_ids=None):
    """The lowered forward pass (for its compiled memory analysis)."""
    return self._forward.lower(*self._inputs(input_ids, attention_mask, token_type_ids))
