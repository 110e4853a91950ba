"""python -m bitmaps_jax.memory: the memory table (same as python -m bitmaps_jax memory)."""

from bitmaps_jax.tools.memory import main

if __name__ == '__main__':
  main()
