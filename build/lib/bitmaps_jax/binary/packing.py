"""Bit packing of +-1 tensors: 8 signs per byte, +1 stored as bit 1."""

import jax.numpy as jnp
import numpy as np


def pack_signs(signs):
  """Packs a +-1 tensor of any shape into uint8, 8 signs per byte (+1 -> bit 1)."""
  bits = jnp.asarray(signs).reshape(-1) > 0
  return jnp.packbits(bits)


def unpack_signs(packed, shape, dtype=jnp.float32):
  """Inverse of `pack_signs`: a +-1 tensor of `shape` and `dtype`. Jittable."""
  size = int(np.prod(shape, dtype=np.int64))
  bits = jnp.unpackbits(jnp.asarray(packed, jnp.uint8), count=size)
  return (bits.astype(dtype) * 2 - 1).reshape(shape)
