"""Binarization schemes: how a latent float tensor W stands for a binary one.

A scheme is one object that owns one way of binarizing: the names and shapes of its scale
parameters, their initial values from latent weights, the forward product (a dense layer's
matmul, an embedding lookup, the tied decoder), the dense matrix it stands for (`dequantize`),
the form it takes in a packed file, and which of its parameters skip weight decay. Layers, the
Hugging Face converter, the packed file, the optimizer and the memory table only ask a scheme;
a new variant is one class here and its entry in a registry.

Notation: B = sign(W - c) in {-1, +1} (sign(0) = +1), c = 0 unless the scheme centers. Dense
kernels are (in, out); embedding tables are (vocab, hidden).
"""

import dataclasses
from typing import ClassVar, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from bitmaps_jax import kernels
from bitmaps_jax.binary.ste import sign_ste, ternary_ste
from bitmaps_jax.errors import UserError

GAMMA_INITS = ('mean', 'zero')


@dataclasses.dataclass(frozen=True)
class Scheme:
  """What every scheme shares: the STE sign and the scale-parameter bookkeeping."""
  clip: Optional[float] = 1.0
  gamma_init: str = 'mean'
  center: bool = False

  name: ClassVar[str] = ''
  scale_names: ClassVar[Tuple[str, ...]] = ()  # learned parameters next to the latent weight
  binary: ClassVar[bool] = True

  def init_scales(self, w) -> Dict[str, jnp.ndarray]:
    """Initial scale parameters fitted to latent weights `w`."""
    return {}

  def sign_center(self, w):
    """The value subtracted from W before the sign."""
    return jnp.zeros((), w.dtype)

  def signs(self, w):
    """B = sign(W - c), with the straight-through gradient."""
    return sign_ste(w - self.sign_center(w), self.clip)

  def sign_product(self, x, w):
    """x @ B: through a 1-bit kernel when `w` is already packed signs (a packed model),
    else as a float product with the signs of the latent weight."""
    if isinstance(w, kernels.PackedSigns):
      return kernels.sign_matmul(x, w)
    return jnp.matmul(x, self.signs(w).astype(x.dtype))

  def sign_product_and_sum(self, x, w):
    """(x @ B, sum(x, -1, keepdims=True)); a packed `w`'s kernel may sum x as it reads it."""
    if isinstance(w, kernels.PackedSigns):
      return kernels.sign_matmul_and_sum(x, w)
    return self.sign_product(x, w), jnp.sum(x, axis=-1, keepdims=True)

  def dequantize(self, w, scales):
    """The dense float matrix the binary weight stands for."""
    raise NotImplementedError

  def packed(self, w, scales):
    """(signs, scales) as a packed file stores them: signs already centered, so the loaded
    model runs the `packed_config_changes` form of this scheme on them."""
    return self.signs(w), dict(scales)

  packed_config_changes: ClassVar[Dict[str, object]] = {'center': False}

  @property
  def no_decay(self) -> Tuple[str, ...]:
    """Parameters of this scheme that get no weight decay: all its scales."""
    return self.scale_names


def _gamma(w, axes, gamma_init):
  return jnp.mean(w, axis=axes) if gamma_init == 'mean' else jnp.zeros(
      [n for i, n in enumerate(w.shape) if i not in axes], w.dtype)


def _rank1_abs(w):
  """(a, b) >= 0 with |w| ~ a b^T, the best rank-1 fit of the magnitudes.

  Since B = sign(w), ||w - (a b^T) * B|| = || |w| - a b^T ||, so the leading singular triple
  of |w| is the best start for the product form (nonnegative, by Perron-Frobenius).
  """
  u, s, vt = jnp.linalg.svd(jnp.abs(jnp.asarray(w, jnp.float32)), full_matrices=False)
  flip = jnp.where(jnp.sum(u[:, 0]) < 0, -1.0, 1.0)  # singular vectors are defined up to sign
  root = jnp.sqrt(s[0])
  return flip * root * u[:, 0], flip * root * vt[0, :]


# --------------------------------------------------------------------------- dense kernels


@dataclasses.dataclass(frozen=True)
class DenseScheme(Scheme):
  """A binary dense kernel (in, out). `matmul` runs x @ W_b with one +-1 product."""

  def matmul(self, x, w, scales):
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class _AlphaGammaDense(DenseScheme):
  """W_b = alpha * B + gamma, computed as alpha * (x @ B) + gamma * sum(x)."""
  scale_names: ClassVar[Tuple[str, ...]] = ('alpha', 'gamma')
  reduce_all: ClassVar[bool] = True

  def _axes(self, ndim):
    return tuple(range(ndim)) if self.reduce_all else tuple(range(ndim - 1))

  def sign_center(self, w):
    if not self.center:
      return jnp.zeros((), w.dtype)
    return jnp.mean(w, axis=self._axes(w.ndim), keepdims=True)

  def init_scales(self, w):
    w = jnp.asarray(w, jnp.float32)
    axes = self._axes(w.ndim)
    alpha = jnp.mean(jnp.abs(w - self.sign_center(w)), axis=axes)
    return {'alpha': alpha, 'gamma': _gamma(w, axes, self.gamma_init)}

  def matmul(self, x, w, scales):
    y, total = self.sign_product_and_sum(x, w)
    alpha, gamma = (scales[n].astype(x.dtype) for n in ('alpha', 'gamma'))
    return alpha * y + gamma * total

  def dequantize(self, w, scales):
    return scales['alpha'] * self.signs(w) + scales['gamma']


@dataclasses.dataclass(frozen=True)
class PerTensor(_AlphaGammaDense):
  """One alpha and gamma per kernel (the write-up's choice)."""
  name: ClassVar[str] = 'per_tensor'
  reduce_all: ClassVar[bool] = True


@dataclasses.dataclass(frozen=True)
class PerChannel(_AlphaGammaDense):
  """One alpha and gamma per output channel."""
  name: ClassVar[str] = 'per_channel'
  reduce_all: ClassVar[bool] = False


@dataclasses.dataclass(frozen=True)
class Statistics(DenseScheme):
  """No learned scales: per output channel, mu = mean W and alpha = mean |W - mu|, recomputed
  from the latent weights at every step; W_b = alpha * sign(W - mu) (as BiBERT and BiT)."""
  name: ClassVar[str] = 'statistics'
  packed_config_changes: ClassVar[Dict[str, object]] = {'center': False,
                                                        'granularity': 'per_channel'}

  def sign_center(self, w):
    return jnp.mean(w, axis=tuple(range(w.ndim - 1)), keepdims=True)

  def alpha(self, w):
    axes = tuple(range(w.ndim - 1))
    return jnp.mean(jnp.abs(w - self.sign_center(w)), axis=axes)

  def matmul(self, x, w, scales):
    y = jnp.matmul(x, self.signs(w).astype(x.dtype))
    return self.alpha(w).astype(x.dtype) * y

  def dequantize(self, w, scales):
    return self.alpha(w) * self.signs(w)

  def packed(self, w, scales):
    alpha = self.alpha(w)
    return self.signs(w), {'alpha': alpha, 'gamma': jnp.zeros_like(alpha)}


@dataclasses.dataclass(frozen=True)
class Rank1Dense(DenseScheme):
  """W_b = (h g^T) * B: h per input, g per output, x @ W_b = ((x * h) @ B) * g (OneBit).
  Initialised from the best rank-1 fit of |W|. Ignores `center`."""
  name: ClassVar[str] = 'rank1'
  scale_names: ClassVar[Tuple[str, ...]] = ('g', 'h')

  def init_scales(self, w):
    h, g = _rank1_abs(w)
    return {'g': g, 'h': h}

  def matmul(self, x, w, scales):
    g, h = (scales[n].astype(x.dtype) for n in ('g', 'h'))
    return self.sign_product(x * h, w) * g

  def dequantize(self, w, scales):
    return scales['h'][:, None] * scales['g'][None, :] * self.signs(w)


@dataclasses.dataclass(frozen=True)
class Ternary(DenseScheme):
  """A 2-bit middle model, not a 1-bit one: W_t = alpha * T, T = sign(W) where |W| > delta
  and 0 elsewhere, per output channel delta = 0.7 mean |W| recomputed every step and alpha
  learned, initialised to mean |W| over the weights above delta (TWN's fit). Used as the
  teacher a binary student is distilled from; a packed file holds 1-bit kernels only, so it
  has no packed form. `signs` are its codes T. Ignores `center`."""
  name: ClassVar[str] = 'ternary'
  scale_names: ClassVar[Tuple[str, ...]] = ('alpha',)
  threshold: ClassVar[float] = 0.7

  def _axes(self, w):
    return tuple(range(w.ndim - 1))  # all but the output channel

  def delta(self, w):
    return self.threshold * jnp.mean(jnp.abs(w), axis=self._axes(w), keepdims=True)

  def signs(self, w):
    return ternary_ste(w, jax.lax.stop_gradient(self.delta(w)), self.clip)

  def init_scales(self, w):
    w = jnp.asarray(w, jnp.float32)
    above = jnp.abs(w) > self.delta(w)
    axes = self._axes(w)
    alpha = jnp.sum(jnp.abs(w) * above, axis=axes) / jnp.maximum(jnp.sum(above, axis=axes), 1)
    return {'alpha': alpha}

  def matmul(self, x, w, scales):
    return scales['alpha'].astype(x.dtype) * jnp.matmul(x, self.signs(w).astype(x.dtype))

  def dequantize(self, w, scales):
    return scales['alpha'] * self.signs(w)

  def packed(self, w, scales):
    raise UserError('binarize.granularity=ternary (2-bit kernels) has no packed 1-bit form: '
                    'distil a binary student from it and export that')


# --------------------------------------------------------------------------- word embeddings


@dataclasses.dataclass(frozen=True)
class EmbeddingScheme(Scheme):
  """A (vocab, hidden) table: `lookup` gathers rows, `decode` is the tied decoder h @ E_b^T,
  each one +-1 product between elementwise scalings. `center` (config
  `binarize.center_embeddings`) centers the alpha/gamma variants over each scale's group."""
  packed_config_changes: ClassVar[Dict[str, object]] = {'center_embeddings': False}

  def lookup(self, table, ids, scales):
    raise NotImplementedError

  def decode(self, table, h, scales):
    raise NotImplementedError

  def row_signs(self, table, ids, center_of_rows=None):
    """sign(E[ids] - c): read from the bits when `table` is packed (its signs hold E^T)."""
    if isinstance(table, kernels.PackedSigns):
      return kernels.row_signs(table, ids)
    rows = jnp.take(table, ids, axis=0)
    c = center_of_rows(rows) if center_of_rows else jnp.zeros((), rows.dtype)
    return sign_ste(rows - c, self.clip)

  def decode_product(self, h, table):
    """h @ B^T for the table's signs B: a `sign_matmul` when packed."""
    if isinstance(table, kernels.PackedSigns):
      return kernels.sign_matmul(h, table)
    return jnp.matmul(h, self.signs(table).astype(h.dtype).T)


@dataclasses.dataclass(frozen=True)
class FloatEmbedding(EmbeddingScheme):
  """No binarization."""
  name: ClassVar[str] = 'none'
  binary: ClassVar[bool] = False

  def lookup(self, table, ids, scales):
    return jnp.take(table, ids, axis=0)

  def decode(self, table, h, scales):
    return jnp.matmul(h, table.T.astype(h.dtype))

  def dequantize(self, w, scales):
    return w


@dataclasses.dataclass(frozen=True)
class _AlphaGammaEmbedding(EmbeddingScheme):
  """E_b = alpha * B + gamma with alpha, gamma reduced over `axes` of the table."""
  scale_names: ClassVar[Tuple[str, ...]] = ('alpha', 'gamma')
  axes: ClassVar[Tuple[int, ...]] = (0, 1)

  def sign_center(self, w):
    if not self.center:
      return jnp.zeros((), w.dtype)
    return jnp.mean(w, axis=self.axes, keepdims=True)

  def _center_of_rows(self, table, rows):
    """The center broadcastable against looked-up rows (..., hidden)."""
    return self.sign_center(table)

  def init_scales(self, w):
    w = jnp.asarray(w, jnp.float32)
    return {'alpha': jnp.mean(jnp.abs(w - self.sign_center(w)), axis=self.axes),
            'gamma': _gamma(w, self.axes, self.gamma_init)}

  def _row_scales(self, scales, ids=None):
    """alpha, gamma broadcastable against rows (..., hidden) of the table or of a lookup."""
    return scales['alpha'], scales['gamma']

  def lookup(self, table, ids, scales):
    signs = self.row_signs(table, ids, lambda rows: self._center_of_rows(table, rows))
    a, g = self._row_scales(scales, ids)
    return a * signs + g

  def dequantize(self, w, scales):
    a, g = self._row_scales(scales)
    return a * self.signs(w) + g

  def decode(self, table, h, scales):
    a, g = (scales[n].astype(h.dtype) for n in ('alpha', 'gamma'))
    return a * self.decode_product(h, table) + g * jnp.sum(h, -1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ScalarEmbedding(_AlphaGammaEmbedding):
  """One alpha and gamma for the whole table."""
  name: ClassVar[str] = 'scalar'
  axes: ClassVar[Tuple[int, ...]] = (0, 1)


@dataclasses.dataclass(frozen=True)
class PerDimEmbedding(_AlphaGammaEmbedding):
  """One alpha and gamma per hidden dimension (the write-up's best)."""
  name: ClassVar[str] = 'per_dim'
  axes: ClassVar[Tuple[int, ...]] = (0,)

  def decode(self, table, h, scales):
    a, g = (scales[n].astype(h.dtype) for n in ('alpha', 'gamma'))
    return self.decode_product(h * a, table) + jnp.sum(h * g, -1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class PerTokenEmbedding(_AlphaGammaEmbedding):
  """One alpha and gamma per token (row); in the decoder, one per output logit."""
  name: ClassVar[str] = 'per_token'
  axes: ClassVar[Tuple[int, ...]] = (1,)

  def _center_of_rows(self, table, rows):
    """Each row's own mean: only the looked-up rows are needed."""
    return jnp.mean(rows, axis=-1, keepdims=True) if self.center else jnp.zeros((), rows.dtype)

  def _row_scales(self, scales, ids=None):
    a, g = scales['alpha'], scales['gamma']
    if ids is not None:
      a, g = a[ids], g[ids]
    return a[..., None], g[..., None]


@dataclasses.dataclass(frozen=True)
class Rank1Embedding(EmbeddingScheme):
  """E_b[i, j] = u_i v_j B[i, j]: a lookup is u_i * (v * B[i]), the decoder
  u * ((h * v) @ B^T). Initialised from the best rank-1 fit of |E|. Ignores `center`."""
  name: ClassVar[str] = 'rank1'
  scale_names: ClassVar[Tuple[str, ...]] = ('u', 'v')

  def init_scales(self, w):
    u, v = _rank1_abs(w)
    return {'u': u, 'v': v}

  def lookup(self, table, ids, scales):
    signs = self.row_signs(table, ids)
    return scales['u'][ids][..., None] * (scales['v'] * signs)

  def decode(self, table, h, scales):
    u, v = (scales[n].astype(h.dtype) for n in ('u', 'v'))
    return u * self.decode_product(h * v, table)

  def dequantize(self, w, scales):
    return scales['u'][:, None] * scales['v'][None, :] * sign_ste(w)


DENSE_SCHEMES = {s.name: s for s in (PerTensor, PerChannel, Statistics, Rank1Dense, Ternary)}
EMBEDDING_SCHEMES = {s.name: s for s in (FloatEmbedding, ScalarEmbedding, PerDimEmbedding,
                                         PerTokenEmbedding, Rank1Embedding)}


# --------------------------------------------------------------------------- the config


@dataclasses.dataclass(frozen=True)
class BinarizeConfig:
  """Which weights are binarized and with which schemes.

  Attributes:
    layers: binarize the six dense layers of every encoder layer.
    embeddings: word-embedding scheme, a key of EMBEDDING_SCHEMES ('none' keeps it float).
    clip: STE gradient passes where |w| <= clip; None passes it everywhere.
    granularity: dense-kernel scheme, a key of DENSE_SCHEMES.
    center: take the sign of w - mean(w) (alpha/gamma dense schemes).
    center_embeddings: the same for the alpha/gamma embedding variants, the mean taken over
      each scale's group (per_token: each row, as the published 1-1-x models binarize).
    gamma_init: initialise gamma from mean(w) or from zero.
  """
  layers: bool = False
  embeddings: str = 'none'
  clip: Optional[float] = 1.0
  granularity: str = 'per_tensor'
  center: bool = False
  center_embeddings: bool = False
  gamma_init: str = 'mean'

  def __post_init__(self):
    for field, allowed in (('embeddings', EMBEDDING_SCHEMES), ('granularity', DENSE_SCHEMES),
                           ('gamma_init', GAMMA_INITS)):
      value = getattr(self, field)
      if value not in allowed:
        raise UserError(f'binarize.{field}: unknown value {value!r}; '
                        f'expected one of {", ".join(allowed)}')
    if self.clip is not None and not self.clip > 0:
      raise UserError(f'binarize.clip must be positive or None, got {self.clip!r}')

  @classmethod
  def from_dict(cls, d) -> 'BinarizeConfig':
    """From a config group or JSON dict; unknown fields are one-line errors."""
    if isinstance(d, cls):
      return d
    try:
      return cls(**dict(d or {}))
    except TypeError as e:
      raise UserError(f'binarize: {e}') from None

  @property
  def any(self) -> bool:
    return self.layers or self.embeddings != 'none'

  @property
  def dense_scheme(self) -> Optional[DenseScheme]:
    """The scheme of binarized encoder kernels, or None when layers stay float."""
    if not self.layers:
      return None
    return DENSE_SCHEMES[self.granularity](clip=self.clip, gamma_init=self.gamma_init,
                                           center=self.center)

  @property
  def embedding_scheme(self) -> EmbeddingScheme:
    return EMBEDDING_SCHEMES[self.embeddings](clip=self.clip, gamma_init=self.gamma_init,
                                              center=self.center_embeddings)
