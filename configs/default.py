"""Offline demo: a tiny binary BERT pretrained with MLM on a built-in synthetic corpus.

    python train.py                      # runs into ./runs/default
    python train.py --config.num_train_steps=6000   # resumes and trains further
    --config configs/default.py:tiny     # a few steps on a smaller corpus (tests)
"""

import ml_collections

from configs import base


def add_mlm_fields(config):
  """The MLM task's fields: corpus, tokenizer vocabulary, masking."""
  config.task = 'mlm'
  config.data = ml_collections.ConfigDict()
  config.data.source = 'builtin'  # builtin, text, tfds or prepared
  config.data.prepared_dir = ''  # source=prepared: python -m bitmaps_jax prepare_corpus output
  config.data.builtin_documents = 3000
  config.data.vocab_size = 256  # size of a learned WordPiece vocab
  config.data.train_files = ''  # comma-separated text files (source=text)
  config.data.valid_files = ''  # empty: hold out validation_fraction of the documents
  config.data.text_format = 'wikitext'  # or lines (one document per line)
  config.data.tfds_name = 'wikipedia/20230601.en'
  config.data.tfds_split = 'train'
  config.data.tfds_data_dir = ''
  config.data.max_documents = 0  # 0: all
  config.data.validation_fraction = 0.05
  config.mask_prob = 0.15
  config.eval_batches = 0  # 0: the whole validation split
  return config


def get_config(arg: str = ''):
  _, tiny = base.parse_args(arg, (), 'configs/default.py')
  config = add_mlm_fields(base.get_base_config())
  config.model = 'tiny'
  config.max_seq_length = 32
  config.per_device_batch_size = 64
  # Past the drop from the unigram plateau (step 1,750-2,250, by seed and machine) onto the
  # slow part of the curve: at 2,500 the final loss still depended on when the drop came.
  config.num_train_steps = 5000
  config.learning_rate = 3e-3
  config.warmup_steps = 100
  config.log_every_steps = 50
  config.eval_every_steps = 250
  config.checkpoint_every_steps = 500
  if tiny:
    config.data.builtin_documents = 300
    config.data.vocab_size = 128
    config.per_device_batch_size = 2
    config.num_train_steps = 6
    config.warmup_steps = 2
    config.log_every_steps = 1
    config.eval_every_steps = 3
    config.checkpoint_every_steps = 3
  return config
