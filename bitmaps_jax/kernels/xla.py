"""The reference path: unpack the `planes` bits to a +-1 matrix inside the jitted function and
let XLA multiply. Runs everywhere; it writes the float matrix, which the kernels avoid."""

import jax.numpy as jnp


def unpack_planes(planes, k: int, dtype):
  """uint8 [K8, N] -> +-1 (K, N) of `dtype`. Jittable."""
  shifts = jnp.arange(8, dtype=jnp.uint8)[:, None, None]
  bits = (planes[None] >> shifts) & 1  # (8, K8, N): plane p holds rows p * K8 + r
  bits = bits.reshape(-1, planes.shape[-1])[:k]
  return bits.astype(dtype) * 2 - 1


def sign_matmul(x, planes, k: int, n: int):
  """x (..., K) @ B (K, N)."""
  return jnp.matmul(x, unpack_planes(planes, k, x.dtype))
