"""BERT-base binary MLM pretraining as the write-up ran it, for Cloud TPU.

    python -m bitmaps_jax prepare_corpus --vocab=BERT_DIR --out=/data/wiki128 \
        --tfds_name=wikipedia/20230601.en
    python train.py --config configs/pretrain.py:layers --workdir /shared/run \
        --config.init_checkpoint=BERT_DIR --config.data.prepared_dir=/data/wiki128

The argument picks the row of the write-up's Table 1: `original` (no binarization), `layers`
(encoder dense layers binarized with alpha and gamma), `layers_embeddings` (plus per_dim
binary word embeddings). Corpus: a prepared corpus (data.prepared_dir), or TFDS / text files
read at start-up (data.source=tfds / text).
"""

from configs import base, default

ROWS = {
    'original': dict(layers=False, embeddings='none'),
    'layers': dict(layers=True, embeddings='none'),
    'layers_embeddings': dict(layers=True, embeddings='per_dim'),
}


def get_config(row: str = 'layers'):
  if row not in ROWS:
    raise ValueError(f'configs/pretrain.py: unknown row {row!r}; expected one of '
                     f'{", ".join(ROWS)}')
  config = default.add_mlm_fields(base.get_base_config())
  config.model = 'bert-base'
  config.init_checkpoint = ''  # set to an HF bert-base-uncased directory
  config.dtype = 'bfloat16'  # 16-bit compute on TPU; float32 latent weights
  config.binarize.update(ROWS[row])
  # Prepared once with `python -m bitmaps_jax prepare_corpus` (TFDS wikipedia or text files)
  # into a directory on every host's local disk; data.source=tfds reads TFDS at start-up.
  config.data.source = 'prepared'
  config.data.prepared_dir = ''
  config.data.validation_fraction = 0.005
  config.max_seq_length = 128
  config.per_device_batch_size = 32
  config.num_train_steps = 100_000
  config.learning_rate = 1e-4
  config.scale_learning_rate = None
  config.warmup_steps = 10_000
  config.weight_decay = 0.01
  config.dropout_rate = 0.1
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.eval_batches = 200
  config.checkpoint_every_steps = 5_000
  return config
