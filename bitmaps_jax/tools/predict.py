"""Runs a packed model file on sentences or sentence pairs: predicted labels (classifier), the
score (a one-output regression head, e.g. STS-B) or the most likely tokens at [MASK] (MLM),
computed from the file's bits.

    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt "a sentence" ...
    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt --pairs "one" "two" ...
    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt --tsv PAIRS.tsv
    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt --input FILE|- [--batch 32]

--pairs reads the sentences two at a time as pairs ([CLS] a [SEP] b [SEP]); --tsv reads a file
of pairs, one `sentence one<TAB>sentence two` a line (UTF-8, LF or CRLF, no header); --input
reads sentences one per line from FILE (or standard input, `-`) as they arrive. Everything
runs in batches of --batch; with a file or stdin the throughput goes to stderr at the end.
"""

import itertools
import sys
import time

from absl import flags

import numpy as np

from bitmaps_jax import cli
from bitmaps_jax.errors import UserError
from bitmaps_jax.model.packed import PackedModel, read_packed_file
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.tokenizer import load_tokenizer


def predict(model: PackedModel, tokenizer, sentences, max_seq_length: int = 128,
            sentences2=None):
  """[(sentence, prediction)]: a label for a classifier (the score for a one-output head),
  the top token at each [MASK] for an MLM, the [CLS] vector's norm for a bare encoder.
  With `sentences2`, each sentence is paired with the one at its place there."""
  pairs = () if sentences2 is None else (list(sentences2),)
  enc = tokenizer(list(sentences), *pairs, padding=True, truncation='longest_first',
                  max_length=max_seq_length, return_tensors='np', return_token_type_ids=True)
  out = model(enc['input_ids'].astype(np.int32), enc['attention_mask'].astype(np.int32),
              enc['token_type_ids'].astype(np.int32))
  arch = model.config.architecture
  rows = []
  for i, sentence in enumerate(sentences):
    if arch == 'BertForSequenceClassification':
      scores = np.asarray(out[i])
      rows.append((sentence, float(scores[0]) if scores.shape[-1] == 1
                   else int(np.argmax(scores))))
    elif arch == 'BertForMaskedLM':
      masked = np.flatnonzero(enc['input_ids'][i] == tokenizer.mask_token_id)
      top = np.argmax(np.asarray(out[i])[masked], axis=-1)
      rows.append((sentence, tokenizer.convert_ids_to_tokens(top.tolist())))
    else:
      rows.append((sentence, float(np.linalg.norm(np.asarray(out.last_hidden_state[i, 0])))))
  return rows


def check_vocabulary(vocab: str, tokenizer, model_file: str, packed) -> None:
  """Refuses a vocabulary the model was not trained with: the one the file records (size and
  a hash of its tokens), or, in a file that records none, one with more tokens than the
  model has rows (its ids would index past the embeddings)."""
  given = tokenizers.vocab_identity(tokenizer)
  if packed.vocab is not None and given != packed.vocab:
    raise UserError(f'{vocab}: the vocabulary has {tokenizers.describe_vocab(given)}, the model '
                    f'{model_file} was trained with {tokenizers.describe_vocab(packed.vocab)}; '
                    f'use the vocabulary of the run it was exported from')
  if given['size'] > packed.config.vocab_size:
    raise UserError(f'{vocab}: the vocabulary has {given["size"]} tokens, the model '
                    f'{model_file} has vocab_size {packed.config.vocab_size}; use the '
                    f'vocabulary of the run it was exported from')


def read_pairs(path: str):
  """(first sentences, second sentences) of a two-column TSV; a bad row is FILE:LINE."""
  from bitmaps_jax.tasks.glue.data import read_tsv_lines
  first, second = [], []
  for n, line in enumerate(read_tsv_lines(path, '--tsv file'), start=1):
    cols = line.split('\t')
    if len(cols) != 2:
      raise UserError(f'{path}:{n}: expected 2 tab-separated columns (a sentence pair), '
                      f'got {len(cols)}')
    if not cols[0].strip() or not cols[1].strip():
      raise UserError(f'{path}:{n}: empty sentence')
    first.append(cols[0])
    second.append(cols[1])
  if not first:
    raise UserError(f'{path}: no sentence pairs')
  return first, second


cli.define_once(flags.DEFINE_string, 'vocab', None, 'vocab.txt or an HF tokenizer directory.')
cli.define_once(flags.DEFINE_integer, 'max_seq_length', 128, 'Sequence length in tokens.')
cli.define_once(flags.DEFINE_bool, 'pairs', False, 'Read the sentences two at a time, as '
                'sentence pairs.')
cli.define_once(flags.DEFINE_string, 'tsv', '', 'A file of sentence pairs, two '
                'tab-separated columns a line.')
cli.define_once(flags.DEFINE_string, 'input', None,
                'Read sentences from this file, one per line ("-": standard input).')
cli.define_once(flags.DEFINE_integer, 'batch', 32, 'Examples per forward pass.')
cli.define_once(flags.DEFINE_enum, 'kernel', 'auto', ['auto', 'ffi', 'pallas', 'xla'],
                'How the packed bits are multiplied (auto: the fastest here).')

_USAGE = ('usage: python -m bitmaps_jax predict MODEL_FILE --vocab=VOCAB '
          '[SENTENCE ... | --pairs ONE TWO ... | --tsv=PAIRS.tsv | --input=FILE|-]')


def _format(prediction):
  return f'{prediction:.3f}' if isinstance(prediction, float) else f'{prediction}'


def _lines(path):
  """Non-empty lines of `path` (or stdin, `-`) as they arrive."""
  if path == '-':
    yield from (line.rstrip('\r\n') for line in sys.stdin if line.strip())
    return
  try:
    with open(path, encoding='utf-8-sig') as f:
      yield from (line.rstrip('\r\n') for line in f if line.strip())
  except OSError as e:
    raise UserError(f'{path}: cannot read sentences ({e.strerror})') from None


def _examples(texts, FLAGS):
  """(sentence, second sentence or None) pairs from the command line, --tsv or --input."""
  sources = sum([bool(FLAGS.tsv), FLAGS.input is not None])
  if sources > 1 or (sources and texts):
    raise UserError('give sentences on the command line, --tsv or --input: one of them')
  if FLAGS.tsv:
    return zip(*read_pairs(FLAGS.tsv))
  if FLAGS.input is not None:
    return ((line, None) for line in _lines(FLAGS.input))
  if FLAGS.pairs:
    if not texts or len(texts) % 2:
      raise UserError(f'--pairs needs sentences two at a time, got {len(texts)}')
    return zip(texts[0::2], texts[1::2])
  if not texts:
    raise UserError(_USAGE)
  return ((t, None) for t in texts)


def _main(positional):
  FLAGS = flags.FLAGS
  if not positional or not FLAGS.vocab:
    raise UserError(_USAGE)
  if FLAGS.batch < 1:
    raise UserError(f'--batch must be at least 1, got {FLAGS.batch}')
  examples = iter(_examples(positional[1:], FLAGS))
  packed = read_packed_file(positional[0])
  tokenizer = load_tokenizer(FLAGS.vocab)
  check_vocabulary(FLAGS.vocab, tokenizer, positional[0], packed)
  model = PackedModel(packed.config, packed.records, kernel=FLAGS.kernel)
  count, busy = 0, 0.0
  while batch := list(itertools.islice(examples, FLAGS.batch)):
    first = [a for a, _ in batch]
    second = [b for _, b in batch] if batch[0][1] is not None else None
    start = time.perf_counter()
    rows = predict(model, tokenizer, first, FLAGS.max_seq_length, second)
    busy += time.perf_counter() - start
    count += len(rows)
    for i, (sentence, prediction) in enumerate(rows):
      print('\t'.join([_format(prediction), sentence] + ([second[i]] if second else [])),
            flush=FLAGS.input == '-')
  if FLAGS.tsv or FLAGS.input is not None:
    rate = count / busy if busy else float('nan')
    print(f'{count} examples in {busy:.2f} s of model time ({rate:.1f} examples/s, '
          f'kernel {model.kernel}, batches of {FLAGS.batch})', file=sys.stderr)


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv, 'python -m bitmaps_jax predict')

if __name__ == '__main__':
  main()
