"""The memory table command runs and orders the settings as the format implies."""

from bitmaps_jax.tools import memory


def test_memory_table_tiny(capsys):
  memory.main(['--size', 'tiny'])
  out = capsys.readouterr().out
  assert 'original (float32)' in out and 'per_dim' in out
  sizes = [n for _, n in memory.memory_table('tiny')]
  assert sizes[0] > sizes[1] > sizes[2]
