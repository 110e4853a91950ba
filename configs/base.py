"""Fields every training config has: model, binarization, optimizer, loop. Not a config itself;
`default.py` (MLM) and `glue.py` build on it."""

import ml_collections


def get_base_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Model: a size from bitmaps_jax.model.bert.MODEL_SIZES, or weights from init_checkpoint
  # (a Hugging Face BERT directory or a run directory of ours). A run of ours made under
  # another `binarize` setting is converted: weights it binarized that this run keeps float
  # start as the dense matrices they stood for, and a changed scheme gets freshly fitted scales.
  config.model = 'tiny'
  config.init_checkpoint = ''
  config.tokenizer = ''  # vocab.txt or HF directory; empty: init_checkpoint's
  config.dtype = 'float32'  # compute dtype; parameters stay float32
  config.dropout_rate = 0.1
  config.max_seq_length = 128

  config.binarize = ml_collections.ConfigDict()
  config.binarize.layers = True
  config.binarize.embeddings = 'none'  # none, scalar, per_dim, per_token, rank1
  config.binarize.clip = 1.0
  # Dense-kernel scheme: per_tensor, per_channel, statistics (no learned scales), rank1.
  config.binarize.granularity = 'per_tensor'
  config.binarize.center = False
  config.binarize.center_embeddings = False  # sign(E - mean) for the alpha/gamma embeddings
  config.binarize.gamma_init = 'mean'  # or zero

  config.per_device_batch_size = 32
  config.global_batch_size = 0  # when set, overrides per_device_batch_size (multiple of devices)
  config.num_train_steps = 1000
  config.learning_rate = 1e-4
  config.scale_learning_rate = None  # separate peak lr for binary scales; None: the same
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
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 3
  config.async_checkpoints = False
  config.skip_nonfinite_steps = False
  config.prefetch_batches = 2  # training batches built ahead of the device
  return config


def parse_args(arg: str, allowed: tuple, what: str):
  """'a,tiny' -> ('a', True): the config's main argument plus the `tiny` switch."""
  parts = [p for p in (arg or '').split(',') if p]
  tiny = 'tiny' in parts
  parts = [p for p in parts if p != 'tiny']
  if len(parts) > 1 or (parts and parts[0] not in allowed):
    expected = (f'one of {", ".join(allowed)}, optionally followed by ",tiny"' if allowed
                else 'none, or "tiny"')
    raise ValueError(f'{what}: unknown argument {arg!r}; expected {expected}')
  return (parts[0] if parts else None), tiny
