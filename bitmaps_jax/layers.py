"""Flax layers that hold binary weights: a dense layer and a word embedding.

They own parameters only; the arithmetic of the scaling scheme is in `binarize.py`.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from bitmaps_jax import binarize
from bitmaps_jax.binarize import BinarizeConfig

Dtype = Any
default_kernel_init = nn.initializers.normal(stddev=0.02)


class BinaryDense(nn.Module):
  """Dense layer whose kernel is alpha * sign(W) + gamma when `binary`, a plain Dense otherwise.

  Parameter names: `kernel` (latent float weight, (in, out)), `bias`, and `alpha`, `gamma`
  (scalars, or (out,) per output channel) when binary.
  """
  features: int
  binary: bool = False
  cfg: BinarizeConfig = BinarizeConfig()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = default_kernel_init

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    x = x.astype(self.dtype)
    if not self.binary:
      y = jnp.matmul(x, kernel.astype(self.dtype))
    else:
      axes = binarize.scale_axes(self.cfg.granularity, kernel.ndim)
      init = lambda _: binarize.init_scale(kernel, axes, self.cfg.center, self.cfg.gamma_init)
      alpha = self.param('alpha', lambda rng: init(rng)[0].astype(self.param_dtype))
      gamma = self.param('gamma', lambda rng: init(rng)[1].astype(self.param_dtype))
      signs = binarize.binary_signs(kernel, self.cfg, axes)
      y = binarize.binary_matmul(x, signs, alpha, gamma)
    return y + bias.astype(self.dtype)


class BinaryEmbed(nn.Module):
  """Word embedding with an optional binary variant; `attend` is the tied decoder product.

  Parameters: `embedding` (latent (vocab, hidden) table) plus `alpha`/`gamma` (scalar,
  per_dim, per_token) or `u`/`v` (rank1), initialised from the table.
  """
  num_embeddings: int
  features: int
  variant: str = 'none'
  clip: Optional[float] = 1.0
  gamma_init: str = 'mean'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = self.param('embedding', default_kernel_init,
                                (self.num_embeddings, self.features), self.param_dtype)
    self.scales = {}
    if self.variant != 'none':
      cfg = BinarizeConfig(embeddings=self.variant, gamma_init=self.gamma_init)
      names = ('u', 'v') if self.variant == 'rank1' else ('alpha', 'gamma')
      init = lambda: binarize.init_embedding_scale(self.embedding, self.variant, cfg)
      self.scales = {n: self.param(n, lambda rng, n=n: init()[n].astype(self.param_dtype))
                     for n in names}

  def __call__(self, ids):
    out = binarize.embedding_lookup(self.embedding, ids, self.variant, self.scales, self.clip)
    return out.astype(self.dtype)

  def attend(self, h):
    h = h.astype(self.dtype)
    return binarize.embedding_attend(self.embedding, h, self.variant, self.scales, self.clip)
