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
# Collection of a packed model: its binary weights as `kernels.PackedSigns`, named like the
# latent weight they replace (an embedding's holds E^T, the tied decoder's operand).
PACKED = 'packed_signs'


def _scale_params(module: nn.Module, scheme, weight, param_dtype):
  """The scheme's scales; `weight()` gives the latent weight they are fitted to at init
  (flax also calls it abstractly to check shapes, so a packed layer passes a placeholder)."""
  init = lambda: scheme.init_scales(weight())
  return {n: module.param(n, lambda rng, n=n: init()[n].astype(param_dtype))
          for n in scheme.scale_names}


class BinaryDense(nn.Module):
  """Dense layer whose kernel is binary under `scheme`, a plain Dense when scheme is None.

  Parameters: `kernel` (latent float weight, (in, out)), `bias`, and the scheme's scales.
  In a packed model the kernel is instead `PACKED/kernel`, its signs read by a 1-bit kernel.
  """
  features: int
  scheme: Optional[DenseScheme] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = default_kernel_init

  @nn.compact
  def __call__(self, x):
    shape = (x.shape[-1], self.features)
    # Made after the kernel, as always, so a latent model's params keep their order.
    bias = lambda: self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    if self.scheme is not None and self.has_variable(PACKED, 'kernel'):
      x = x.astype(self.dtype)
      scales = _scale_params(self, self.scheme, lambda: jnp.zeros(shape, self.param_dtype),
                             self.param_dtype)
      y = self.scheme.matmul(x, self.get_variable(PACKED, 'kernel'), scales)
      return y + bias().astype(self.dtype)
    kernel = self.param('kernel', self.kernel_init, shape, self.param_dtype)
    bias = bias()
    x = x.astype(self.dtype)
    if self.scheme is None:
      y = jnp.matmul(x, kernel.astype(self.dtype))
    else:
      self.sow(LAYOUT, 'kernel', jnp.zeros((), jnp.int8))
      scales = _scale_params(self, self.scheme, lambda: kernel, self.param_dtype)
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
    shape = (self.num_embeddings, self.features)
    if self.scheme.binary and self.has_variable(PACKED, 'embedding'):
      self.embedding = self.get_variable(PACKED, 'embedding')
      weight = lambda: jnp.zeros(shape, self.param_dtype)
    else:
      self.embedding = self.param('embedding', default_kernel_init, shape, self.param_dtype)
      weight = lambda: self.embedding
    self.scales = _scale_params(self, self.scheme, weight, self.param_dtype)

  def _record(self):
    if self.scheme.binary and not self.has_variable(PACKED, 'embedding'):
      self.sow(LAYOUT, 'embedding', jnp.zeros((), jnp.int8))

  def __call__(self, ids):
    self._record()
    return self.scheme.lookup(self.embedding, ids, self.scales).astype(self.dtype)

  def decode(self, h):
    self._record()
    return self.scheme.decode(self.embedding, h.astype(self.dtype), self.scales)
