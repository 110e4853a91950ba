"""Packs a run's latest checkpoint into the 1-bit file (`bitmaps_jax.model.packed`).

    python -m bitmaps_jax export RUN_DIR OUT_FILE [--float_dtype float16]
"""

import argparse
import os

from bitmaps_jax.errors import UserError, exit_on_user_error
from bitmaps_jax.model import packed
from bitmaps_jax.train.rundir import RunDir


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bitmaps_jax export',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('run_dir')
  parser.add_argument('out_file')
  parser.add_argument('--float_dtype', default='float16', choices=packed.FLOAT_DTYPES)
  args = parser.parse_args(argv)
  out_dir = os.path.dirname(os.path.abspath(args.out_file))
  if not os.path.isdir(out_dir):
    raise UserError(f'{args.out_file}: directory {out_dir} does not exist')
  config, params = RunDir(args.run_dir).load_model()
  size = packed.save_packed(config, params, args.out_file, args.float_dtype)
  print(f'{args.out_file}: {size} bytes ({size / 2**20:.2f} MiB)')


if __name__ == '__main__':
  main()
