"""Prepares an MLM corpus once: tokenized on every core, packed into windows, written as
shards that training opens in constant time (`config.data.source=prepared`).

    python -m bitmaps_jax prepare_corpus --vocab=VOCAB --out=DIR --files=a.txt,b.txt
    python -m bitmaps_jax prepare_corpus --vocab=VOCAB --out=DIR --tfds_name=wikipedia/20230601.en

Re-running finishes an interrupted preparation, or says the corpus is already prepared.
"""

import sys
import time

from absl import flags

from bitmaps_jax import cli
from bitmaps_jax.errors import UserError
from bitmaps_jax.tasks.mlm import data as mlm_data
from bitmaps_jax.tasks.mlm import prepared

cli.define_once(flags.DEFINE_string, 'vocab', None, 'vocab.txt or an HF tokenizer directory.')
flags.DEFINE_string('out', None, 'Output directory, local or remote (gs://...).')
flags.DEFINE_string('files', '', 'Comma-separated text files (instead of --tfds_name).')
flags.DEFINE_enum('text_format', 'lines', ['lines', 'wikitext'],
                  'lines: one document per line; wikitext: articles under = Title = headings.')
flags.DEFINE_string('tfds_name', '', 'A TFDS text dataset with a `text` field.')
flags.DEFINE_string('tfds_split', 'train', 'TFDS split.')
flags.DEFINE_string('tfds_data_dir', '', 'TFDS data directory.')
flags.DEFINE_integer('max_documents', 0, '0: every document.')
cli.define_once(flags.DEFINE_integer, 'max_seq_length', 128, 'Sequence length in tokens.')
flags.DEFINE_integer('docs_per_shard', 10000, 'Documents per shard.')
flags.DEFINE_integer('validation_documents', 1000, 'Last documents kept for validation.')
flags.DEFINE_integer('processes', 0, 'Tokenizing processes; 0: one per core.')


def _vocab_file(source: str) -> str:
  import os
  path = source if os.path.isfile(source) else os.path.join(source, 'vocab.txt')
  if not os.path.isfile(path):
    raise UserError(f'{source}: no vocab.txt')
  return path


def _main(positional):
  args = flags.FLAGS
  if positional or not args.vocab or not args.out or bool(args.files) == bool(args.tfds_name):
    raise UserError('usage: python -m bitmaps_jax prepare_corpus --vocab=VOCAB --out=DIR '
                    '(--files=F1,F2 | --tfds_name=NAME)')
  t0 = time.time()
  if args.files:
    docs = [d for f in args.files.split(',') if f.strip()
            for d in mlm_data.read_text_documents(f.strip(), args.text_format)]
    if args.max_documents:
      docs = docs[:args.max_documents]
  else:
    docs = mlm_data.read_tfds_documents(args.tfds_name, args.tfds_split,
                                        args.tfds_data_dir or None, args.max_documents)
  print(f'{len(docs)} documents read in {time.time() - t0:.1f} s', flush=True)
  manifest = prepared.prepare(docs, _vocab_file(args.vocab), args.out, args.max_seq_length,
                              args.docs_per_shard, min(args.validation_documents, len(docs) // 2),
                              args.processes or None, progress=lambda m: print(m, flush=True))
  s = manifest['stats']
  print(f'{args.out}: {s["documents"]} documents, {s["tokens"]} tokens, {s["windows"]} windows '
        f'of {args.max_seq_length}, {s["bytes"] / 2**20:.1f} MiB, '
        f'{s["tokens_per_s"]:,.0f} tokens/s')


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv,
                  'python -m bitmaps_jax prepare_corpus')


if __name__ == '__main__':
  main()
