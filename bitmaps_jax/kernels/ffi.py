"""The CPU kernel: csrc/ (sign_matmul.cc and its headers), built with the package, called as
an XLA FFI custom call.

The shared library is found next to this file; when it is absent (no compiler at install
time) `available()` is False and callers fall back to the XLA path.
"""

import ctypes
import functools
import glob
import importlib.machinery
import os

import jax
import jax.numpy as jnp
import numpy as np

TARGET = 'bitmaps_sign_matmul'
LIBRARY = '_cpu_kernels'


def library_path():
  """Path of the built kernel library, or None."""
  here = os.path.dirname(os.path.abspath(__file__))
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    hits = glob.glob(os.path.join(here, LIBRARY + suffix))
    if hits:
      return hits[0]
  return None


@functools.lru_cache(maxsize=None)
def _library():
  path = library_path()
  if path is None:
    return None
  lib = ctypes.cdll.LoadLibrary(path)
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.BitmapsSignMatmul), platform='cpu')
  return lib


def available() -> bool:
  """Whether the CPU kernel is built and loadable."""
  try:
    return _library() is not None
  except OSError:
    return False


PATHS = ('portable', 'avx2', 'avx512', 'amx')


def cpu_path() -> str:
  """The code path the kernel runs on this CPU: amx (tiles for 12 tokens or more, AVX-512
  below), avx512, avx2 or portable (C++)."""
  return PATHS[_library().bitmaps_kernel_path()] if available() else 'none'


def set_max_path(path: str):
  """Caps the code path (`amx` lets the CPU choose), e.g. to compare the portable
  path with the vector ones on one machine."""
  _library().bitmaps_set_max_path(PATHS.index(path))


def sign_matmul_and_sum(x, words, k: int, n: int):
  """(x @ B, x summed over its last axis, keepdims): x (..., K), B (K, N) in the `lut4` layout;
  computed in float32, returned in x's dtype. The kernel sums x as it reads it, which saves
  the alpha/gamma schemes one XLA op per product. Jittable, CPU only."""
  if _library() is None:
    raise RuntimeError('the CPU kernel library is not built')
  lead = x.shape[:-1]
  m = int(np.prod(lead, dtype=np.int64))
  x2 = x.reshape((m, k)).astype(jnp.float32)
  shapes = (jax.ShapeDtypeStruct((m, n), jnp.float32), jax.ShapeDtypeStruct((m,), jnp.float32))
  out, sums = jax.ffi.ffi_call(TARGET, shapes)(x2, words, k=np.int64(k), n=np.int64(n))
  return out.reshape(lead + (n,)).astype(x.dtype), sums.reshape(lead + (1,)).astype(x.dtype)


def sign_matmul(x, words, k: int, n: int):
  """x (..., K) @ B (K, N), B in the `lut4` layout. Jittable, CPU only."""
  return sign_matmul_and_sum(x, words, k, n)[0]
