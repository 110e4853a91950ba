"""Prints the memory table: serialized size of BERT-base (MLM) in each binarization setting.

Sizes are the real byte counts of the packed file format (`model/packed.py`) for a randomly
initialised model: float32 everywhere; encoder layers binarized and the rest in 16 bits;
layers and word embeddings (per_dim) binarized.

    python -m bitmaps_jax memory [--size bert-base]
"""

import sys

from absl import flags

import jax

from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.model import packed
from bitmaps_jax import cli

MIB = 2**20
SETTINGS = (
    ('original (float32)', BinarizeConfig(), 'float32'),
    ('layers binarized (alpha, gamma, 16-bit)', BinarizeConfig(layers=True), 'float16'),
    ('layers + embeddings (per_dim, 16-bit)', BinarizeConfig(layers=True, embeddings='per_dim'),
     'float16'),
)


def memory_table(size: str = 'bert-base'):
  """[(setting, bytes)] for the MLM model of `size`."""
  rows = []
  for name, cfg, float_dtype in SETTINGS:
    config = bert.sized_config(size, architecture='BertForMaskedLM', binarize=cfg)
    params = bert.init_params(config, jax.random.PRNGKey(0))
    rows.append((name, len(packed.packed_bytes(config, params, float_dtype))))
    del params
  return rows


flags.DEFINE_enum('size', 'bert-base', sorted(bert.MODEL_SIZES), 'Model size.')


def _main(positional):
  if positional:
    raise UserError(f'unexpected arguments: {" ".join(positional)}')
  rows = memory_table(flags.FLAGS.size)
  width = max(len(r[0]) for r in rows)
  print(f'{"setting":<{width}}  {"MiB":>8}  {"bytes":>11}  ratio')
  for name, nbytes in rows:
    print(f'{name:<{width}}  {nbytes / MIB:8.1f}  {nbytes:11d}  {rows[0][1] / nbytes:5.1f}x')


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv, 'python -m bitmaps_jax memory')

if __name__ == '__main__':
  main()
