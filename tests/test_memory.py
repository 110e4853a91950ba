"""The memory table: each row is the byte count of the real packed file of that setting."""

import jax

from bitmaps_jax.model import bert, packed
from bitmaps_jax.tools import memory


def test_memory_table_is_the_packed_files_size(capsys, tmp_path):
  memory.main(['--size', 'tiny'])
  out = capsys.readouterr().out
  rows = memory.memory_table('tiny')
  assert [name for name, _ in rows] == [name for name, _, _ in memory.SETTINGS]
  for (name, nbytes), (_, cfg, dtype) in zip(rows, memory.SETTINGS):
    config = bert.sized_config('tiny', architecture='BertForMaskedLM', binarize=cfg)
    params = bert.init_params(config, jax.random.PRNGKey(1))
    path = str(tmp_path / f'{dtype}.bmp')
    assert packed.save_packed(config, params, path, dtype) == nbytes, name  # real file bytes
    assert f'{nbytes:11d}' in out, name
  sizes = [n for _, n in rows]
  assert sizes[0] > sizes[1] > sizes[2]
