"""`python -m bitmaps_jax.memory`: the name the spec gives the memory table; the same command
as `python -m bitmaps_jax memory` (bitmaps_jax/tools/memory.py)."""

from bitmaps_jax.tools.memory import main

if __name__ == '__main__':
  main()
