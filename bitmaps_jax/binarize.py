"""The binarizer: straight-through sign, the alpha/gamma scaling scheme, bit packing.

Everything about *how* a latent float weight W becomes alpha * sign(W) + gamma lives here,
so that changing the scheme is a change to this one file. Layers (`layers.py`) only own the
parameters; the converter and the packed exporter call the same functions.
"""

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from bitmaps_jax.errors import UserError

EMBEDDING_VARIANTS = ('none', 'scalar', 'per_dim', 'per_token', 'rank1')
GRANULARITIES = ('per_tensor', 'per_channel')
GAMMA_INITS = ('mean', 'zero')


@dataclasses.dataclass(frozen=True)
class BinarizeConfig:
  """Which weights are binarized and how.

  Attributes:
    layers: binarize the six dense layers of every encoder layer.
    embeddings: word-embedding variant, one of EMBEDDING_VARIANTS ('none' keeps it float).
    clip: STE gradient passes where |w| <= clip; None passes it everywhere.
    granularity: alpha/gamma per tensor (the seed's choice) or per output channel.
    center: take the sign of w - mean(w) instead of w.
    gamma_init: initialise gamma from mean(w) or from zero.
  """
  layers: bool = False
  embeddings: str = 'none'
  clip: Optional[float] = 1.0
  granularity: str = 'per_tensor'
  center: bool = False
  gamma_init: str = 'mean'

  def __post_init__(self):
    if self.embeddings not in EMBEDDING_VARIANTS:
      raise UserError(f'binarize.embeddings: unknown variant {self.embeddings!r}; '
                      f'expected one of {", ".join(EMBEDDING_VARIANTS)}')
    if self.granularity not in GRANULARITIES:
      raise UserError(f'binarize.granularity: unknown value {self.granularity!r}; '
                      f'expected one of {", ".join(GRANULARITIES)}')
    if self.gamma_init not in GAMMA_INITS:
      raise UserError(f'binarize.gamma_init: unknown value {self.gamma_init!r}; '
                      f'expected one of {", ".join(GAMMA_INITS)}')
    if self.clip is not None and not self.clip > 0:
      raise UserError(f'binarize.clip must be positive or None, got {self.clip!r}')

  @property
  def any(self) -> bool:
    return self.layers or self.embeddings != 'none'


# --------------------------------------------------------------------------- STE sign


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sign_ste(x, clip=1.0):
  """sign(x) in {-1, +1} with sign(0) = +1; straight-through gradient where |x| <= clip."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def _sign_ste_fwd(x, clip):
  return sign_ste(x, clip), x


def _sign_ste_bwd(clip, x, g):
  if clip is None:
    return (g,)
  return (jnp.where(jnp.abs(x) <= clip, g, jnp.zeros_like(g)),)


sign_ste.defvjp(_sign_ste_fwd, _sign_ste_bwd)


# --------------------------------------------------------------------------- scaling scheme


def scale_axes(granularity: str, ndim: int = 2) -> tuple:
  """Axes a dense kernel (in, out) is reduced over to get its alpha/gamma."""
  return tuple(range(ndim)) if granularity == 'per_tensor' else tuple(range(ndim - 1))


def center_of(w, axes, center: bool):
  """The value subtracted before the sign: mean(w) over `axes` when centring, else 0."""
  if not center:
    return jnp.zeros((), w.dtype)
  return jnp.mean(w, axis=axes, keepdims=True)


def init_scale(w, axes: Sequence[int], center: bool, gamma_init: str):
  """alpha = mean|w - c| and gamma = mean(w) (or 0), reduced over `axes` (c = centre or 0)."""
  w = jnp.asarray(w, jnp.float32)
  c = center_of(w, tuple(axes), center)
  alpha = jnp.mean(jnp.abs(w - c), axis=tuple(axes))
  if gamma_init == 'mean':
    gamma = jnp.mean(w, axis=tuple(axes))
  else:
    gamma = jnp.zeros_like(alpha)
  return alpha, gamma


def binary_signs(w, cfg: BinarizeConfig, axes):
  """B = sign(w - c) with the straight-through gradient."""
  return sign_ste(w - center_of(w, axes, cfg.center), cfg.clip)


def binary_matmul(x, signs, alpha, gamma):
  """x @ (alpha * B + gamma) computed as alpha * (x @ B) + gamma * sum(x).

  The only matrix product is against the +-1 matrix B, as binary hardware would run it.
  alpha and gamma are scalars or per-output-channel vectors.
  """
  y = jnp.matmul(x, signs.astype(x.dtype))
  return alpha.astype(x.dtype) * y + gamma.astype(x.dtype) * jnp.sum(x, axis=-1, keepdims=True)


def dequantize_dense(w, alpha, gamma, cfg: BinarizeConfig):
  """The dense float weight alpha * B + gamma that a binary kernel stands for."""
  axes = scale_axes(cfg.granularity, w.ndim)
  signs = binary_signs(w, cfg, axes)
  return alpha * signs + gamma


# --------------------------------------------------------------------------- embeddings


def embedding_scale_axes(variant: str):
  """Reduction axes of the (vocab, hidden) table for each alpha/gamma variant."""
  return {'scalar': (0, 1), 'per_dim': (0,), 'per_token': (1,)}[variant]


def init_embedding_scale(table, variant: str, cfg: BinarizeConfig):
  """Initial scale parameters of a binary embedding table, as a dict of arrays.

  rank1 is initialised from the best rank-1 approximation of |E|: since B = sign(E),
  ||E - (u v^T) * B|| = || |E| - u v^T ||, so the leading singular triple of |E| gives the
  best u, v for the product form (both vectors nonnegative, by Perron-Frobenius).
  """
  table = jnp.asarray(table, jnp.float32)
  if variant == 'rank1':
    u_mat, s, vt = jnp.linalg.svd(jnp.abs(table), full_matrices=False)
    u, v = u_mat[:, 0], vt[0, :]
    flip = jnp.where(jnp.sum(u) < 0, -1.0, 1.0)  # singular vectors are defined up to sign
    root = jnp.sqrt(s[0])
    return {'u': flip * root * u, 'v': flip * root * v}
  alpha, gamma = init_scale(table, embedding_scale_axes(variant), False, cfg.gamma_init)
  return {'alpha': alpha, 'gamma': gamma}


def _row_scales(variant, scales, ids=None):
  """alpha, gamma broadcastable against rows (..., hidden) of the table (or of a lookup)."""
  a, g = scales['alpha'], scales['gamma']
  if variant == 'per_token':
    if ids is not None:
      a, g = a[ids], g[ids]
    return a[..., None], g[..., None]
  return a, g


def embedding_lookup(table, ids, variant, scales, clip):
  """Rows `ids` of the binarized table, signing only the gathered rows."""
  rows = jnp.take(table, ids, axis=0)
  if variant == 'none':
    return rows
  signs = sign_ste(rows, clip)
  if variant == 'rank1':
    return scales['u'][ids][..., None] * (scales['v'] * signs)
  a, g = _row_scales(variant, scales, ids)
  return a * signs + g


def embedding_attend(table, h, variant, scales, clip):
  """h @ E_b^T (the tied decoder) with one +-1 product between elementwise scalings."""
  if variant == 'none':
    return jnp.matmul(h, table.T.astype(h.dtype))
  signs = sign_ste(table, clip).astype(h.dtype)
  cast = lambda t: t.astype(h.dtype)
  if variant == 'rank1':
    return cast(scales['u']) * jnp.matmul(h * cast(scales['v']), signs.T)
  a, g = cast(scales['alpha']), cast(scales['gamma'])
  if variant == 'scalar':
    return a * jnp.matmul(h, signs.T) + g * jnp.sum(h, -1, keepdims=True)
  if variant == 'per_dim':
    return jnp.matmul(h * a, signs.T) + jnp.sum(h * g, -1, keepdims=True)
  # per_token: one alpha, gamma per row of E, i.e. per output logit.
  return a * jnp.matmul(h, signs.T) + g * jnp.sum(h, -1, keepdims=True)


def dequantize_embedding(table, variant, scales):
  """The dense (vocab, hidden) matrix E_b the binary table stands for."""
  if variant == 'none':
    return table
  signs = sign_ste(table)
  if variant == 'rank1':
    return scales['u'][:, None] * scales['v'][None, :] * signs
  a, g = _row_scales(variant, scales)
  return a * signs + g


# --------------------------------------------------------------------------- bit packing


def pack_signs(signs):
  """Packs a +-1 tensor of any shape into uint8, 8 signs per byte (+1 -> bit 1)."""
  bits = jnp.asarray(signs).reshape(-1) > 0
  return jnp.packbits(bits)


def unpack_signs(packed, shape, dtype=jnp.float32):
  """Inverse of `pack_signs`: a +-1 tensor of `shape` and `dtype`. Jittable."""
  size = int(np.prod(shape, dtype=np.int64))
  bits = jnp.unpackbits(jnp.asarray(packed, jnp.uint8), count=size)
  return (bits.astype(dtype) * 2 - 1).reshape(shape)
