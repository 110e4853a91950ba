"""Offline demo: a tiny binary BERT pretrained with MLM on a built-in synthetic corpus.

    python train.py                      # runs into ./runs/default
    python train.py --config.num_train_steps=3000   # resumes and trains further
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Model: a size from bitmaps_jax.models.MODEL_SIZES, or weights from init_checkpoint
  # (a Hugging Face BERT directory or a run directory of ours).
  config.model = 'tiny'
  config.init_checkpoint = ''
  config.tokenizer = ''  # vocab.txt or HF directory; empty: init_checkpoint's, else learned
  config.dtype = 'float32'  # compute dtype; parameters stay float32
  config.dropout_rate = 0.1

  config.binarize = ml_collections.ConfigDict()
  config.binarize.layers = True
  config.binarize.embeddings = 'none'  # none, scalar, per_dim, per_token, rank1
  config.binarize.clip = 1.0
  config.binarize.granularity = 'per_tensor'  # or per_channel
  config.binarize.center = False
  config.binarize.gamma_init = 'mean'  # or zero

  config.data = ml_collections.ConfigDict()
  config.data.source = 'builtin'  # builtin, text or tfds
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
  config.max_seq_length = 32
  config.mask_prob = 0.15

  config.per_device_batch_size = 64
  config.global_batch_size = 0  # when set, overrides per_device_batch_size (multiple of devices)
  config.num_train_steps = 2500
  config.learning_rate = 3e-3
  config.scale_learning_rate = None  # separate peak lr for alpha/gamma; None: the same
  config.warmup_steps = 100
  config.lr_decay = 'linear'  # or cosine
  config.lr_end_factor = 0.0
  config.weight_decay = 0.01
  config.grad_clip_norm = 1.0
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.adam_eps = 1e-6

  config.log_every_steps = 50
  config.eval_every_steps = 250
  config.eval_batches = 0  # 0: the whole validation split
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.async_checkpoints = False
  config.skip_nonfinite_steps = False
  return config
