"""Weight layouts of a +-1 matrix B (K inputs, N outputs) at 1 bit per weight.

Each kernel reads its own arrangement of the same bits, made once when a model is loaded:

- `lut4` (the CPU kernel): uint32 words [ceil(N/16), ceil(K/4), 2]; nibble i of word (p, g, h)
  is the code of output 16p + 2i + h for inputs 4g..4g+3 (see csrc/sign_matmul.cc): its low
  three bits index an eight-entry table of signed sums and bit 3 says "negate" (the table's
  symmetry). The two words of (p, g) are one 64-bit load for sixteen outputs.
- `planes` (Pallas and XLA): uint8 [ceil(K/8), N]; bit p of byte (r, j) is B[p * K8 + r, j],
  so unpacking is eight shifts stacked along K, with no interleaving.

Padding bits stand for +1 and meet zero activations or are never written out.
"""

import numpy as np

LAYOUTS = ('lut4', 'planes')


def _bits(signs) -> np.ndarray:
  b = np.asarray(signs) > 0
  if b.ndim != 2:
    raise ValueError(f'a sign matrix must be 2-D (in, out), got shape {b.shape}')
  return b


def pack_lut4(signs) -> np.ndarray:
  """+-1 (K, N) -> uint32 [ceil(N/16), ceil(K/4), 2] in the `lut4` layout."""
  bits = _bits(signs)
  k, n = bits.shape
  g, npairs = -(-k // 4), -(-n // 16)
  padded = np.ones((4 * g, 16 * npairs), bool)
  padded[:k, :n] = bits
  nib = padded.reshape(g, 4, 16 * npairs).astype(np.uint32)
  n4 = nib[:, 0] | nib[:, 1] << 1 | nib[:, 2] << 2 | nib[:, 3] << 3  # (g, outputs)
  code = np.where(n4 & 8, n4 & 7, (~n4 & 7) | 8).astype(np.uint32)
  code = code.reshape(g, npairs, 8, 2)  # output 16p + 2i + h -> [:, p, i, h]
  words = np.zeros((npairs, g, 2), np.uint32)
  for i in range(8):
    words |= code[:, :, i, :].transpose(1, 0, 2) << np.uint32(4 * i)
  return words


def unpack_lut4(words: np.ndarray, k: int, n: int) -> np.ndarray:
  """Inverse of `pack_lut4`: +-1 float32 (K, N)."""
  words = np.asarray(words, np.uint32)
  npairs, g, _ = words.shape
  code = np.stack([(words >> np.uint32(4 * i)) & 15 for i in range(8)], 2)  # (p, g, i, h)
  n4 = np.where(code & 8, ~code & 7, (code & 7) | 8)
  bits = np.stack([(n4 >> b) & 1 for b in range(4)], 2)  # (p, g, bit, i, h)
  dense = bits.transpose(1, 2, 0, 3, 4).reshape(4 * g, 16 * npairs)[:k, :n]
  return dense.astype(np.float32) * 2 - 1


def pack_planes(signs) -> np.ndarray:
  """+-1 (K, N) -> uint8 [ceil(K/8), N] in the `planes` layout."""
  bits = _bits(signs)
  k, n = bits.shape
  k8 = -(-k // 8)
  padded = np.ones((8 * k8, n), bool)
  padded[:k] = bits
  planes = padded.reshape(8, k8, n).astype(np.uint8)
  return np.bitwise_or.reduce(planes << np.arange(8, dtype=np.uint8)[:, None, None], axis=0)


def pack(signs, layout: str) -> np.ndarray:
  if layout == 'lut4':
    return pack_lut4(signs)
  if layout == 'planes':
    return pack_planes(signs)
  raise ValueError(f'unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}')


def packed_shape(k: int, n: int, layout: str):
  """(shape, dtype name) of `pack(signs (k, n), layout)`."""
  if layout == 'lut4':
    return (-(-n // 16), -(-k // 4), 2), 'uint32'
  return (-(-k // 8), n), 'uint8'
