"""Runs a packed model file on sentences: predicted labels (classifier) or the most likely
tokens at [MASK] (MLM), computed from the file's bits.

    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt "a sentence" ...
"""

import sys

from absl import flags

import numpy as np

from bitmaps_jax import cli
from bitmaps_jax.errors import UserError
from bitmaps_jax.model.packed import PackedModel
from bitmaps_jax.tasks.tokenizer import load_tokenizer


def predict(model: PackedModel, tokenizer, sentences, max_seq_length: int = 128):
  """[(sentence, prediction)]: a label for a classifier, the top token at each [MASK] for
  an MLM, the [CLS] vector's norm for a bare encoder."""
  enc = tokenizer(list(sentences), padding=True, truncation=True, max_length=max_seq_length,
                  return_tensors='np')
  out = model(enc['input_ids'].astype(np.int32), enc['attention_mask'].astype(np.int32),
              enc['token_type_ids'].astype(np.int32))
  arch = model.config.architecture
  rows = []
  for i, sentence in enumerate(sentences):
    if arch == 'BertForSequenceClassification':
      rows.append((sentence, int(np.argmax(np.asarray(out[i])))))
    elif arch == 'BertForMaskedLM':
      masked = np.flatnonzero(enc['input_ids'][i] == tokenizer.mask_token_id)
      top = np.argmax(np.asarray(out[i])[masked], axis=-1)
      rows.append((sentence, tokenizer.convert_ids_to_tokens(top.tolist())))
    else:
      rows.append((sentence, float(np.linalg.norm(np.asarray(out.last_hidden_state[i, 0])))))
  return rows


cli.define_once(flags.DEFINE_string, 'vocab', None, 'vocab.txt or an HF tokenizer directory.')
cli.define_once(flags.DEFINE_integer, 'max_seq_length', 128, 'Sequence length in tokens.')


def _main(positional):
  if len(positional) < 2 or not flags.FLAGS.vocab:
    raise UserError('usage: python -m bitmaps_jax predict MODEL_FILE --vocab=VOCAB SENTENCE ...')
  model = PackedModel.load(positional[0])
  for sentence, prediction in predict(model, load_tokenizer(flags.FLAGS.vocab), positional[1:],
                                      flags.FLAGS.max_seq_length):
    print(f'{prediction}\t{sentence}')


def main(argv=None):
  cli.run_command(_main, sys.argv[1:] if argv is None else argv, 'python -m bitmaps_jax predict')

if __name__ == '__main__':
  main()
