"""The straight-through sign: the one non-differentiable step of every binary scheme."""

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


def _sign_ste_bwd(clip, x, g):
  if clip is None:
    return (g,)
  return (jnp.where(jnp.abs(x) <= clip, g, jnp.zeros_like(g)),)


sign_ste.defvjp(_sign_ste_fwd, _sign_ste_bwd)
