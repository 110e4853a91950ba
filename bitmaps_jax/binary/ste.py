"""The straight-through sign (every binary scheme's one non-differentiable step) and its
ternary sibling for 2-bit middle models."""

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def sign_ste(x, clip=1.0):
  """sign(x) in {-1, +1} with sign(0) = +1; straight-through gradient where |x| <= clip.

  clip=None passes the gradient everywhere (the plain identity estimator).
  """
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


def _sign_ste_fwd(x, clip):
  return sign_ste(x, clip), x


def _straight_through(x, g, clip):
  """The estimator both quantizers share: g where |x| <= clip (everywhere when None)."""
  return g if clip is None else jnp.where(jnp.abs(x) <= clip, g, jnp.zeros_like(g))


def _sign_ste_bwd(clip, x, g):
  return (_straight_through(x, g, clip),)


sign_ste.defvjp(_sign_ste_fwd, _sign_ste_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def ternary_ste(x, delta, clip=1.0):
  """sign(x) where |x| > delta, else 0; straight-through gradient to x where |x| <= clip
  (zeros included, so a weight below the threshold can grow out of it), none to delta."""
  return jnp.where(jnp.abs(x) > delta, jnp.where(x >= 0, 1, -1), 0).astype(x.dtype)


def _ternary_ste_fwd(x, delta, clip):
  return ternary_ste(x, delta, clip), (x, delta)


def _ternary_ste_bwd(clip, res, g):
  x, delta = res
  return _straight_through(x, g, clip), jnp.zeros_like(delta)


ternary_ste.defvjp(_ternary_ste_fwd, _ternary_ste_bwd)
