"""Small-scale replay of the write-up's Table 1: MiniLM-L6 MLM on wikitext-2 files, on CPU.

    python train.py --config configs/wikitext.py:layers --workdir runs/wt-layers \
        --config.init_checkpoint=MINILM_DIR \
        --config.data.train_files=wikitext-2/wiki.test.tokens \
        --config.data.valid_files=wikitext-2/wiki.valid.tokens

Rows as in configs/pretrain.py: original, layers, layers_embeddings.
"""

from configs import pretrain


def get_config(row: str = 'layers'):
  config = pretrain.get_config(row)
  config.model = 'minilm-l6-h384'
  config.dtype = 'float32'  # XLA's CPU bf16 matmuls are emulated; use float32 on CPU
  config.data.source = 'text'
  config.data.text_format = 'wikitext'
  config.max_seq_length = 128
  config.per_device_batch_size = 32
  config.num_train_steps = 300
  config.warmup_steps = 30
  config.learning_rate = 2e-4 if row == 'original' else 5e-4
  config.log_every_steps = 10
  config.eval_every_steps = 100
  config.eval_batches = 0
  config.checkpoint_every_steps = 100
  return config
