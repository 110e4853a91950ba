"""The TPU/GPU kernel in Pallas: tiles of packed `planes` bits go to on-chip memory, are
unpacked there to +-1 and meet the activations in one dot on the MXU / tensor cores, so
the float matrix never exists in HBM. Off an accelerator it runs in interpret mode (tests)."""

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

BLOCK_TOKENS = 128
BLOCK_OUT = 128


def _kernel(x_ref, w_ref, o_ref, *, dot_dtype):
  planes = w_ref[...]
  bits = jnp.concatenate([(planes >> p) & 1 for p in range(8)], axis=0)  # (8 * K8, bn)
  signs = (bits.astype(jnp.int32) * 2 - 1).astype(dot_dtype)
  x = x_ref[...].astype(dot_dtype)
  o_ref[...] = jnp.dot(x, signs, preferred_element_type=jnp.float32,
                       precision=jax.lax.Precision.HIGHEST).astype(o_ref.dtype)


def _round_up(a, b):
  return -(-a // b) * b


@functools.partial(jax.jit, static_argnames=('k', 'n', 'dot_dtype', 'interpret'))
def sign_matmul(x, planes, k: int, n: int, dot_dtype=None, interpret=None):
  """x (..., K) @ B (K, N), B in the `planes` layout. `dot_dtype` is the dot's input type
  (default x's; bfloat16 is exact for the signs and what the MXU runs fastest)."""
  if interpret is None:
    interpret = jax.default_backend() == 'cpu'
  dot_dtype = jnp.dtype(dot_dtype or x.dtype)
  lead = x.shape[:-1]
  k8 = planes.shape[0]
  x2 = x.reshape((-1, k))
  m = x2.shape[0]
  bm = min(BLOCK_TOKENS, _round_up(max(m, 1), 8))
  mp, np_ = _round_up(m, bm), _round_up(n, BLOCK_OUT)
  x2 = jnp.pad(x2, ((0, mp - m), (0, 8 * k8 - k)))  # padded inputs are zero
  planes = jnp.pad(planes, ((0, 0), (0, np_ - n)))
  out = pl.pallas_call(
      functools.partial(_kernel, dot_dtype=dot_dtype),
      out_shape=jax.ShapeDtypeStruct((mp, np_), x.dtype),
      grid=(mp // bm, np_ // BLOCK_OUT),
      in_specs=[pl.BlockSpec((bm, 8 * k8), lambda i, j: (i, 0)),
                pl.BlockSpec((k8, BLOCK_OUT), lambda i, j: (0, j))],
      out_specs=pl.BlockSpec((bm, BLOCK_OUT), lambda i, j: (i, j)),
      interpret=interpret,
  )(x2, planes)
  return out[:m, :n].reshape(lead + (n,))
