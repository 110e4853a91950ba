"""Where a run's starting weights come from: a Hugging Face directory, a run of ours, or a
fresh random model. `load` is the one entry: it reads the source, re-heads it for the task,
and fits binary scales where the source had none.
"""


import jax

from bitmaps_jax.binary.schemes import BinarizeConfig
from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert, binary_params, hf
from bitmaps_jax.train.rundir import MODEL_CONFIG, RunDir


def model_overrides(config) -> dict:
  """BertConfig fields a training config controls."""
  out = {'binarize': BinarizeConfig.from_dict(config.binarize), 'dtype': config.dtype}
  if config.get('dropout_rate') is not None:
    if not 0 <= config.dropout_rate < 1:
      raise UserError(f'config.dropout_rate must be in [0, 1), got {config.dropout_rate}')
    out.update(hidden_dropout_prob=config.dropout_rate,
               attention_probs_dropout_prob=config.dropout_rate)
  return out


def read_checkpoint(path: str, what: str = 'init_checkpoint', float_only: bool = False):
  """(BertConfig, params) from a run directory of ours or a Hugging Face directory.
  float_only: binary weights dequantized (a distillation teacher)."""
  if not files.exists(path):
    raise UserError(f'{path}: {what} not found')
  run = RunDir(path)
  if run.is_run():
    cfg, params = run.load_model()
  elif files.isfile(files.join(path, hf.CONFIG_FILE)):
    with files.local_copy(path) as local:
      cfg, params = hf.load_hf_bert(local)
  else:
    raise UserError(f'{path}: {what} is neither a run directory of ours ({MODEL_CONFIG}) '
                    f'nor a Hugging Face directory ({hf.CONFIG_FILE})')
  if float_only and cfg.binarize.any:
    cfg, params = binary_params.dequantize(cfg, params)
  return cfg, params


def load(config, architecture: str, vocab_size: int = 0, num_labels: int = 2):
  """(BertConfig, params) to start training from, per `config.init_checkpoint`.

  Empty: a random `config.model` of `vocab_size`. Otherwise the checkpoint's weights; heads
  are adapted to `architecture` and the weights to this run's `binarize` setting
  (`binary_params.convert`), binary scales fitted where missing.
  """
  overrides = model_overrides(config)
  path = config.get('init_checkpoint') or ''
  rng = jax.random.PRNGKey(config.seed)
  if not path:
    base = bert.sized_config(config.model)
    model_cfg = base.replace(
        architecture=architecture, vocab_size=vocab_size, num_labels=num_labels,
        max_position_embeddings=max(config.max_seq_length, base.max_position_embeddings),
        **overrides)
    return model_cfg, bert.init_params(model_cfg, rng)
  source_cfg, params = read_checkpoint(path)
  source_cfg, params = binary_params.convert(source_cfg, params, overrides['binarize'])
  source_cfg = source_cfg.replace(**overrides)
  model_cfg, params = bert.adapt_params(source_cfg, params, architecture, rng,
                                        num_labels=num_labels)
  if model_cfg.max_position_embeddings < config.max_seq_length:
    raise UserError(f'max_seq_length {config.max_seq_length} exceeds the checkpoint\'s '
                    f'max_position_embeddings {model_cfg.max_position_embeddings}')
  return model_cfg, binary_params.add_scales(model_cfg, params)
