"""Runs a packed model file on sentences or sentence pairs: predicted labels (classifier), the
score (a one-output regression head, e.g. STS-B) or the most likely tokens at [MASK] (MLM),
computed from the file's bits.

    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt "a sentence" ...
    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt --pairs "one" "two" ...
    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt --tsv PAIRS.tsv

--pairs reads the sentences two at a time as pairs ([CLS] a [SEP] b [SEP]); --tsv reads a file
of pairs, one `sentence one<TAB>sentence two` a line (UTF-8, LF or CRLF, no header).
"""

import sys

from absl import flags

import numpy as np

from bitmaps_jax import cli
from bitmaps_jax.errors import UserError
from bitmaps_jax.model.packed import PackedModel
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

_USAGE = ('usage: python -m bitmaps_jax predict MODEL_FILE --vocab=VOCAB '
          '[SENTENCE ... | --pairs ONE TWO ... | --tsv=PAIRS.tsv]')


def _format(prediction):
  return f'{prediction:.3f}' if isinstance(prediction, float) else f'{prediction}'


def _main(positional):
  FLAGS = flags.FLAGS
  if not positional or not FLAGS.vocab:
    raise UserError(_USAGE)
  texts = positional[1:]
  if FLAGS.tsv:
    if texts:
      raise UserError('--tsv reads the pairs from the file: give no sentences as well')
    first, second = read_pairs(FLAGS.tsv)
  elif FLAGS.pairs:
    if not texts or len(texts) % 2:
      raise UserError(f'--pairs needs sentences two at a time, got {len(texts)}')
    first, second = texts[0::2], texts[1::2]
  else:
    if not texts:
      raise UserError(_USAGE)
    first, second = texts, None
  model = PackedModel.load(positional[0])
  rows = predict(model, load_tokenizer(FLAGS.vocab), first, FLAGS.max_seq_length, second)
  for i, (sentence, prediction) in enumerate(rows):
    print('\t'.join([_format(prediction), sentence] + ([second[i]] if second else [])))


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv, 'python -m bitmaps_jax predict')

if __name__ == '__main__':
  main()
