"""Exports a run's latest checkpoint: the packed 1-bit file (`bitmaps_jax.model.packed`), or
with --hf a Hugging Face directory (dequantized weights, config, tokenizer).

    python -m bitmaps_jax export RUN_DIR OUT_FILE [--float_dtype float16]
    python -m bitmaps_jax export RUN_DIR OUT_DIR --hf
"""

import os
import sys

from absl import flags

from bitmaps_jax import cli
from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import hf, packed
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.train.rundir import RunDir


flags.DEFINE_enum('float_dtype', 'float16', list(packed.FLOAT_DTYPES),
                  'Storage of the tensors that stay float.')
flags.DEFINE_bool('hf', False, 'Write a Hugging Face directory (transformers loads it).')


def _main(positional):
  if len(positional) != 2:
    raise UserError('usage: python -m bitmaps_jax export RUN_DIR OUT_FILE [--hf] '
                    '[--float_dtype=float16]')
  run_dir, out_file = positional
  args = flags.FLAGS
  run = RunDir(run_dir)
  if args.hf:
    config, params = run.load_model()
    hf.save_hf_bert(config, params, out_file, tokenizer=run.vocab_file)
    print(f'{out_file}: Hugging Face {config.architecture} with its tokenizer')
    return
  out_dir = os.fspath(files.path(files.absolute(out_file)).parent)
  if not files.is_remote(out_dir) and not files.isdir(out_dir):  # (buckets have no directories)
    raise UserError(f'{out_file}: directory {out_dir} does not exist')
  config, params = run.load_model()
  vocab = tokenizers.vocab_identity(tokenizers.load_tokenizer(run.vocab_file))
  size = packed.save_packed(config, params, out_file, args.float_dtype, vocab)
  print(f'{out_file}: {size} bytes ({size / 2**20:.2f} MiB)')


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv, 'python -m bitmaps_jax export')


if __name__ == '__main__':
  main()
