"""The packed model file: 1 bit per binary weight, every other tensor in 16 bits, plus the config.

Layout: 8-byte magic, 4-byte CRC32 of the body, 8-byte body length, then a msgpack body
{'config': json, 'float_dtype': str, 'tensors': {'a/b/kernel': array or packed signs}}.
The CRC and length catch truncated or damaged files before anything is decoded.
"""

import dataclasses
import json
import os
import struct
import zlib

import jax.numpy as jnp
import msgpack
import numpy as np
from flax import traverse_util

from bitmaps_jax import binarize, convert, models
from bitmaps_jax.binarize import BinarizeConfig
from bitmaps_jax.errors import UserError, exit_on_user_error
from bitmaps_jax.models import BertConfig

MAGIC = b'BITMAPS1'
_HEADER = struct.Struct('<8sIQ')
FLOAT_DTYPES = ('float16', 'bfloat16', 'float32')


def config_to_dict(config: BertConfig) -> dict:
  return dataclasses.asdict(config)


def config_from_dict(d: dict) -> BertConfig:
  d = dict(d)
  d['binarize'] = BinarizeConfig(**d.get('binarize', {}))
  return BertConfig(**d)


def _array_record(a: np.ndarray) -> dict:
  return {'dtype': a.dtype.name, 'shape': list(a.shape), 'data': a.tobytes()}


def _array_from_record(r: dict) -> np.ndarray:
  dtype = jnp.dtype(r['dtype'])  # jnp.dtype knows bfloat16
  return np.frombuffer(r['data'], dtype=dtype).reshape(r['shape'])


def binary_signs_tree(config: BertConfig, params) -> dict:
  """{path: +-1 array} for every weight that `config` binarizes (after centring)."""
  cfg = config.binarize
  out = {}
  for path, w in traverse_util.flatten_dict(params).items():
    if convert.is_binary_kernel(path, config):
      out[path] = binarize.binary_signs(w, cfg, binarize.scale_axes(cfg.granularity, w.ndim))
    elif convert.is_binary_embedding(path, config):
      out[path] = binarize.sign_ste(w)
  return out


def packed_bytes(config: BertConfig, params, float_dtype: str = 'float16') -> bytes:
  """Serializes `params` of `config` into the packed format, returning the file's bytes."""
  if float_dtype not in FLOAT_DTYPES:
    raise UserError(f'float_dtype {float_dtype!r} is not one of {", ".join(FLOAT_DTYPES)}')
  signs = binary_signs_tree(config, params)
  tensors = {}
  for path, w in traverse_util.flatten_dict(params).items():
    key = '/'.join(path)
    if path in signs:
      tensors[key] = {'packed_signs': np.asarray(binarize.pack_signs(signs[path])).tobytes(),
                      'shape': list(w.shape)}
    else:
      tensors[key] = _array_record(np.asarray(w).astype(jnp.dtype(float_dtype)))
  # Signs are stored already centred, so the loaded model must not centre again.
  stored = config.replace(binarize=dataclasses.replace(config.binarize, center=False))
  body = msgpack.packb({'config': json.dumps(config_to_dict(stored)),
                        'float_dtype': float_dtype, 'tensors': tensors}, use_bin_type=True)
  return _HEADER.pack(MAGIC, zlib.crc32(body), len(body)) + body


def save_packed(config: BertConfig, params, path: str, float_dtype: str = 'float16') -> int:
  """Writes the packed file atomically (temp file + rename). Returns its size in bytes."""
  data = packed_bytes(config, params, float_dtype)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)
  return len(data)


def load_packed(path: str):
  """(config, params) from a packed file; binary weights come back as +-1 latent weights."""
  if not os.path.isfile(path):
    raise UserError(f'{path}: packed model file not found')
  with open(path, 'rb') as f:
    data = f.read()
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
    config = config_from_dict(json.loads(payload['config']))
    flat = {}
    for key, rec in payload['tensors'].items():
      if 'packed_signs' in rec:
        packed = np.frombuffer(rec['packed_signs'], np.uint8)
        value = binarize.unpack_signs(packed, tuple(rec['shape']), config.params_dtype)
      else:
        value = jnp.asarray(_array_from_record(rec), config.params_dtype)
      flat[tuple(key.split('/'))] = value
  except UserError:
    raise
  except Exception as e:  # a well-checksummed file from another tool or version
    raise UserError(f'{path}: unreadable packed model ({type(e).__name__}: {e})') from None
  params = traverse_util.unflatten_dict(flat)
  expected = traverse_util.flatten_dict(models.param_shapes(config))
  if set(expected) != set(flat):
    raise UserError(f'{path}: tensors do not match the stored config')
  return config, params


@exit_on_user_error
def main(argv=None):
  """python -m bitmaps_jax.export RUN_DIR OUT_FILE: packs a run's latest checkpoint."""
  import argparse
  from bitmaps_jax import checkpoints, pretrained
  parser = argparse.ArgumentParser(description='Pack a run\'s latest checkpoint (1 bit/weight).')
  parser.add_argument('run_dir')
  parser.add_argument('out_file')
  parser.add_argument('--float_dtype', default='float16', choices=FLOAT_DTYPES)
  args = parser.parse_args(argv)
  config = pretrained.read_run_model_config(args.run_dir)
  params = checkpoints.CheckpointStore(os.path.join(args.run_dir, 'checkpoints')).restore_params()
  size = save_packed(config, params, args.out_file, args.float_dtype)
  print(f'{args.out_file}: {size} bytes ({size / 2**20:.2f} MiB)')


if __name__ == '__main__':
  main()
