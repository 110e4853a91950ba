"""Binarization: the straight-through sign, the schemes, the binary layers, bit packing."""

from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax.binary.ste import sign_ste

__all__ = ['BinarizeConfig', 'sign_ste']
