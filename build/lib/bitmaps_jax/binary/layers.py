"""Flax layers that hold binary weights: a dense layer and a word embedding.

They own parameters only: which scales exist, their initial values and the arithmetic all
come from the layer's scheme (`schemes.py`). Each binary layer also records, at init, that its
weight is binary (the `binary_layout` collection), so the model itself is the one place that
says which weights are binarized.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from bitmaps_jax.binary.schemes import DenseScheme, EmbeddingScheme, FloatEmbedding

Dtype = Any
default_kernel_init = nn.initializers.normal(stddev=0.02)
LAYOUT = 'binary_layout'  # collection: one entry per binary weight, named like the weight


def _scale_params(module: nn.Module, scheme, weight, param_dtype):
  init = lambda: scheme.init_scales(weight)
  return {n: module.param(n, lambda rng, n=n: init()[n].astype(param_dtype))
          for n in scheme.scale_names}


class BinaryDense(nn.Module):
  """Dense layer whose kernel is binary under `scheme`, a plain Dense when scheme is None.

  Parameters: `kernel` (latent float weight, (in, out)), `bias`, and the scheme's scales.
  """
  features: int
  scheme: Optional[DenseScheme] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = default_kernel_init

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    x = x.astype(self.dtype)
    if self.scheme is None:
      y = jnp.matmul(x, kernel.astype(self.dtype))
    else:
      self.sow(LAYOUT, 'kernel', jnp.zeros((), jnp.int8))
      scales = _scale_params(self, self.scheme, kernel, self.param_dtype)
      y = self.scheme.matmul(x, kernel, scales)
    return y + bias.astype(self.dtype)


class BinaryEmbed(nn.Module):
  """Word embedding under an embedding scheme; `decode` is the tied decoder h @ E_b^T.

  Parameters: `embedding` (latent (vocab, hidden) table) plus the scheme's scales.
  """
  num_embeddings: int
  features: int
  scheme: EmbeddingScheme = FloatEmbedding()
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = self.param('embedding', default_kernel_init,
                                (self.num_embeddings, self.features), self.param_dtype)
    self.scales = _scale_params(self, self.scheme, self.embedding, self.param_dtype)

  def _record(self):
    if self.scheme.binary:
      self.sow(LAYOUT, 'embedding', jnp.zeros((), jnp.int8))

  def __call__(self, ids):
    self._record()
    return self.scheme.lookup(self.embedding, ids, self.scales).astype(self.dtype)

  def decode(self, h):
    self._record()
    return self.scheme.decode(self.embedding, h.astype(self.dtype), self.scales)
