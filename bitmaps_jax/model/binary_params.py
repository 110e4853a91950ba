"""The binary weights of a model's parameter tree, as the model itself declares them.

`layout(config)` asks the model which weights are binary (each binary layer records itself at
init) and pairs each with its scheme; everything that treats binary weights specially (scale
initialisation, dequantizing for export, packing, weight-decay masks) goes through it.
"""

import functools
from typing import Dict, FrozenSet, Tuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from bitmaps_jax.binary.layers import LAYOUT
from bitmaps_jax.binary.schemes import BinarizeConfig, Scheme
from bitmaps_jax.model.bert import BertConfig, build_model

Path = Tuple[str, ...]


@functools.lru_cache(maxsize=64)
def layout(config: BertConfig) -> Dict[Path, Scheme]:
  """{path of a binary latent weight: its scheme} for `build_model(config)`'s params."""
  if not config.binarize.any:
    return {}
  ids = jnp.zeros((1, 8), jnp.int32)
  variables = jax.eval_shape(lambda: build_model(config).init(jax.random.PRNGKey(0), ids))
  schemes = {'kernel': config.binarize.dense_scheme,
             'embedding': config.binarize.embedding_scheme}
  return {path: schemes[path[-1]]
          for path in traverse_util.flatten_dict(dict(variables.get(LAYOUT, {})))}


def scale_paths(config: BertConfig) -> FrozenSet[Path]:
  """Paths of every scale parameter the schemes add."""
  return frozenset(path[:-1] + (n,) for path, s in layout(config).items() for n in s.scale_names)


def no_decay_paths(config: BertConfig) -> FrozenSet[Path]:
  """Scale parameters that the schemes exclude from weight decay."""
  return frozenset(path[:-1] + (n,) for path, s in layout(config).items() for n in s.no_decay)


def _scales(flat, path, scheme):
  return {n: flat[path[:-1] + (n,)] for n in scheme.scale_names}


def add_scales(config: BertConfig, params):
  """Adds the schemes' scales fitted to the latent weights, keeping any already present, so
  float weights (an HF checkpoint, a float run) become a valid binary model's params."""
  flat = traverse_util.flatten_dict(params)
  for path, scheme in layout(config).items():
    w = flat[path]
    missing = [n for n in scheme.scale_names if path[:-1] + (n,) not in flat]
    if missing:
      fitted = scheme.init_scales(w)
      for n in missing:
        flat[path[:-1] + (n,)] = fitted[n].astype(w.dtype)
  return traverse_util.unflatten_dict(flat)


def convert(config: BertConfig, params, binarize: BinarizeConfig):
  """(config, params) of the same weights under another `binarize` setting.

  A weight binarized before and float now becomes the dense matrix it stood for; one under
  another scheme keeps its latent weight and drops its scales (`add_scales` then fits the new
  scheme's, so no dead or misshapen scale is carried along); one under the same scheme keeps
  its trained scales.
  """
  flat = traverse_util.flatten_dict(params)
  target = layout(config.replace(binarize=binarize))
  drop = set()
  for path, scheme in layout(config).items():
    new = target.get(path)
    if new is not None and new.name == scheme.name:
      continue
    drop.update(path[:-1] + (n,) for n in scheme.scale_names)
    if new is None:
      flat[path] = scheme.dequantize(flat[path], _scales(flat, path, scheme))
  out = {path: w for path, w in flat.items() if path not in drop}
  return config.replace(binarize=binarize), traverse_util.unflatten_dict(out)


def dequantize(config: BertConfig, params):
  """(float config, float params) of the same model: binary weights -> the dense matrices
  they stand for, scale parameters dropped."""
  return convert(config, params, BinarizeConfig())


def packed_form(config: BertConfig, params):
  """(config, flat params, binary paths) as a packed file stores them: each binary weight as
  its +-1 signs (already centered), scales as the loading scheme needs them."""
  flat = traverse_util.flatten_dict(params)
  schemes = layout(config)
  changes = {}
  for path, scheme in schemes.items():
    signs, scales = scheme.packed(flat[path], _scales(flat, path, scheme))
    for n in scheme.scale_names:
      del flat[path[:-1] + (n,)]
    flat[path] = signs
    flat.update({path[:-1] + (n,): v for n, v in scales.items()})
    changes.update(scheme.packed_config_changes)
  stored = config.replace(binarize=dict(config.binarize.__dict__, **changes))
  return stored, flat, frozenset(schemes)


def sign_flip_fraction(config: BertConfig, params, reference) -> jax.Array:
  """Fraction of binary weights whose sign differs from `reference`'s (e.g. the start of
  training): how far training has moved the bits."""
  flat, ref = traverse_util.flatten_dict(params), traverse_util.flatten_dict(reference)
  flipped, total = 0.0, 0
  for path, scheme in layout(config).items():
    flipped = flipped + jnp.sum(scheme.signs(flat[path]) != scheme.signs(ref[path]))
    total += flat[path].size
  return flipped / max(total, 1)
