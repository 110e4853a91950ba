"""Prints the memory table: serialized size of BERT-base (MLM) in each binarization setting.

Sizes are the real byte counts of the packed file format (`model/packed.py`) for a randomly
initialised model: float32 everywhere; encoder layers binarized and the rest in 16 bits;
layers and word embeddings (per_dim) binarized.

    python -m bitmaps_jax memory [--size bert-base]
"""

import argparse

import jax

from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax.model import bert as models
from bitmaps_jax.model import packed
from bitmaps_jax.errors import exit_on_user_error

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
    config = models.model_config(size, architecture='BertForMaskedLM', binarize=cfg)
    params = models.init_params(config, jax.random.PRNGKey(0))
    rows.append((name, len(packed.packed_bytes(config, params, float_dtype))))
    del params
  return rows


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', default='bert-base', choices=sorted(models.MODEL_SIZES))
  args = parser.parse_args(argv)
  rows = memory_table(args.size)
  width = max(len(r[0]) for r in rows)
  print(f'{"setting":<{width}}  {"MiB":>8}  {"bytes":>11}  ratio')
  for name, nbytes in rows:
    print(f'{name:<{width}}  {nbytes / MIB:8.1f}  {nbytes:11d}  {rows[0][1] / nbytes:5.1f}x')


if __name__ == '__main__':
  main()
