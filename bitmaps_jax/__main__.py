"""python -m bitmaps_jax COMMAND [args]: the library's commands.

    memory    the memory table (packed size of BERT-base per binarization setting)
    bench     side-by-side benchmarks
    export    pack a run's latest checkpoint into the 1-bit file
    average   average the weights of several runs of one model into a new run
    predict   run a packed model file on sentences
    prepare_corpus   tokenize and pack an MLM corpus once, for data.source=prepared
"""

import importlib
import sys

COMMANDS = ('memory', 'bench', 'export', 'average', 'predict', 'prepare_corpus')


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    print(__doc__.strip(), file=sys.stderr)
    sys.exit(0 if argv and argv[0] in ('-h', '--help') else 2)
  importlib.import_module(f'bitmaps_jax.tools.{argv[0]}').main(argv[1:])


if __name__ == '__main__':
  main()
