"""1-bit matmul kernels: x @ B for a +-1 matrix B read from its bits.

One interface, three implementations picked by name:

- `ffi`: the C++ CPU kernel, an XLA FFI custom call built with the package: lookup tables
  over groups of four inputs (AVX-512, AVX2 or portable C++), and on CPUs with AMX tiles,
  for 12 tokens or more, 1-bit tiles expanded to +-1 int8 in L1 against x as four int8
  digits of a fixed point per token (float32 answers either way).
- `pallas`: TPU/GPU, packed tiles unpacked in on-chip memory before one dot.
- `xla`: unpack inside the jitted function and let XLA multiply (the reference).

`pack_signs` lays a +-1 matrix out for a kernel once; `sign_matmul` multiplies by it
(`sign_matmul_and_sum` also sums x); `binary_matmul` adds a dense scheme's scales around it;
`row_signs` looks rows of a packed embedding table up (its `PackedSigns` holds E^T, so the
tied decoder is a `sign_matmul`).
"""

import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from bitmaps_jax.errors import UserError
from bitmaps_jax.kernels import ffi, layouts, xla

KERNELS = ('auto', 'ffi', 'pallas', 'xla')
LAYOUT_OF = {'ffi': 'lut4', 'pallas': 'planes', 'xla': 'planes'}


@functools.partial(jax.tree_util.register_dataclass, data_fields=['data'],
                   meta_fields=['k', 'n', 'kernel'])
@dataclasses.dataclass(frozen=True)
class PackedSigns:
  """A +-1 matrix (k inputs, n outputs) at 1 bit per weight, laid out for `kernel`."""
  data: jax.Array
  k: int
  n: int
  kernel: str

  @property
  def nbytes(self) -> int:
    return int(self.data.size * self.data.dtype.itemsize)


_warned = []


def _warn_once(message):
  if not _warned:
    _warned.append(message)
    print(f'bitmaps_jax: {message}', file=sys.stderr)


def resolve(kernel: str = 'auto') -> str:
  """The kernel that `kernel` names here: `auto` is the fastest available on this backend."""
  if kernel not in KERNELS:
    raise UserError(f'kernel: unknown value {kernel!r}; expected one of {", ".join(KERNELS)}')
  backend = jax.default_backend()
  if kernel == 'auto':
    if backend in ('tpu', 'gpu'):
      return 'pallas'
    if ffi.available():
      return 'ffi'
    _warn_once('the 1-bit CPU kernel is not built (no C++ compiler at install time?); '
               'packed models run through XLA, unpacking their bits on every call')
    return 'xla'
  if kernel == 'ffi':
    if backend != 'cpu':
      raise UserError(f'kernel=ffi runs on CPU only; this backend is {backend}')
    if not ffi.available():
      raise UserError('kernel=ffi: the CPU kernel library is not built '
                      '(reinstall with a C++ compiler: pip install -e .)')
  return kernel


def pack_signs(signs, kernel: str = 'auto') -> PackedSigns:
  """Lays out a +-1 matrix (in, out) for `kernel` (numpy, once per model load)."""
  kernel = resolve(kernel)
  signs = np.asarray(signs)
  if signs.ndim != 2:
    raise UserError(f'pack_signs: expected a 2-D (in, out) sign matrix, got shape {signs.shape}')
  return PackedSigns(jnp.asarray(layouts.pack(signs, LAYOUT_OF[kernel])), int(signs.shape[0]),
                     int(signs.shape[1]), kernel)


def check(p: PackedSigns):
  """One clear error when `p.data` cannot be what its kernel reads for (k, n)."""
  shape, dtype = layouts.packed_shape(p.k, p.n, LAYOUT_OF[p.kernel])
  if tuple(p.data.shape) != shape or p.data.dtype != jnp.dtype(dtype):
    raise UserError(f'packed signs for a ({p.k}, {p.n}) matrix and kernel {p.kernel} must be '
                    f'{dtype} {shape}, got {p.data.dtype} {tuple(p.data.shape)}')


def _checked(x, p: PackedSigns):
  check(p)
  if x.shape[-1] != p.k:
    raise UserError(f'sign_matmul: x has {x.shape[-1]} features, the packed matrix {p.k} inputs')


def sign_matmul(x, p: PackedSigns):
  """x (..., k) @ B (k, n), reading B's bits."""
  _checked(x, p)
  if p.kernel == 'ffi':  # computes in float32, returns x's dtype
    return ffi.sign_matmul(x, p.data, p.k, p.n)
  if p.kernel == 'pallas':
    from bitmaps_jax.kernels import pallas  # jax.experimental.pallas only when asked for
    return pallas.sign_matmul(x, p.data, p.k, p.n)
  return xla.sign_matmul(x, p.data, p.k, p.n)


def sign_matmul_and_sum(x, p: PackedSigns):
  """(x @ B, sum(x, -1, keepdims=True)): the CPU kernel sums x as it reads it (one XLA op
  fewer per product for the alpha/gamma schemes); the other kernels leave the sum to XLA."""
  if p.kernel == 'ffi':
    _checked(x, p)
    return ffi.sign_matmul_and_sum(x, p.data, p.k, p.n)
  return sign_matmul(x, p), jnp.sum(x, -1, keepdims=True)


def binary_matmul(x, packed_signs: PackedSigns, scales):
  """x @ W_b for a dense scheme's packed form, the +-1 product done by the kernel: `scales`
  {'alpha', 'gamma'} (per_tensor, per_channel, statistics after export: W_b = alpha B +
  gamma, so alpha (x @ B) + gamma sum(x)) or {'g', 'h'} (rank1: W_b = (h g^T) * B, so
  ((x * h) @ B) * g), as the schemes in binary/schemes.py compute them."""
  names = {'g', 'h'} if 'g' in scales else {'alpha', 'gamma'}
  if not names <= set(scales):
    raise UserError(f'binary_matmul: scales {sorted(scales)} lack {sorted(names - set(scales))}')
  s = {n: jnp.asarray(scales[n]).astype(x.dtype) for n in names}
  if 'g' in s:
    return sign_matmul(x * s['h'], packed_signs) * s['g']
  y, total = sign_matmul_and_sum(x, packed_signs)
  return s['alpha'] * y + s['gamma'] * total


def row_signs(p: PackedSigns, ids, dtype=jnp.float32):
  """Rows `ids` of a packed embedding table as +-1, reading only their bits: `p` holds the
  table transposed (hidden inputs, vocab outputs), so a row is one output's column."""
  check(p)
  ids = jnp.asarray(ids)
  if p.kernel == 'ffi':  # lut4: row i is nibble (i % 16) // 2 of word i % 2 of pair i // 16
    words = jnp.take(p.data, ids // 16, axis=0)  # (..., G, 2)
    lane = ids % 16
    words = jnp.where((lane % 2 == 0)[..., None], words[..., 0], words[..., 1])  # (..., G)
    code = (words >> (4 * (lane // 2)).astype(jnp.uint32)[..., None]) & 15
    nib = jnp.where(code & 8, ~code & 7, (code & 7) | 8)
    bits = jnp.stack([(nib >> i) & 1 for i in range(4)], -1)  # (..., G, 4)
    bits = bits.reshape(ids.shape + (-1,))[..., :p.k]
  else:  # planes: row i is column i; plane q holds inputs q * K8 + r
    cols = jnp.take(p.data, ids, axis=1)  # (K8, ...)
    cols = jnp.moveaxis(cols, 0, -1)  # (..., K8)
    bits = jnp.stack([(cols >> q) & 1 for q in range(8)], -2)  # (..., 8, K8)
    bits = bits.reshape(ids.shape + (-1,))[..., :p.k]
  return bits.astype(dtype) * 2 - 1
