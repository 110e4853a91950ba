"""Runs a packed model file on sentences: predicted labels (classifier) or the most likely
tokens at [MASK] (MLM), computed from the file's bits.

    python -m bitmaps_jax predict MODEL_FILE --vocab RUN/vocab.txt "a sentence" ...
"""

import argparse

import numpy as np

from bitmaps_jax.errors import exit_on_user_error
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


@exit_on_user_error
def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bitmaps_jax predict',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('model_file')
  parser.add_argument('sentences', nargs='+')
  parser.add_argument('--vocab', required=True, help='vocab.txt or HF tokenizer directory')
  parser.add_argument('--max_seq_length', type=int, default=128)
  args = parser.parse_args(argv)
  model = PackedModel.load(args.model_file)
  for sentence, prediction in predict(model, load_tokenizer(args.vocab), args.sentences,
                                      args.max_seq_length):
    print(f'{prediction}\t{sentence}')


if __name__ == '__main__':
  main()
