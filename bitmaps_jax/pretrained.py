"""Where a run's starting weights come from: a Hugging Face directory, an earlier run of ours,
or a fresh random model; and the files that make a run directory reusable as a starting point.
"""

import json
import os
import shutil

import jax

from bitmaps_jax import checkpoints, convert, export, models
from bitmaps_jax.binarize import BinarizeConfig
from bitmaps_jax.errors import UserError

MODEL_CONFIG = 'model_config.json'
TRAIN_CONFIG = 'train_config.json'
VOCAB = 'vocab.txt'


def is_run_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, MODEL_CONFIG))


def binarize_config(config) -> BinarizeConfig:
  return BinarizeConfig(**dict(config.binarize))


def model_overrides(config) -> dict:
  """BertConfig fields a training config controls."""
  out = {'binarize': binarize_config(config), 'dtype': config.dtype}
  if config.get('dropout_rate') is not None:
    if not 0 <= config.dropout_rate < 1:
      raise UserError(f'config.dropout_rate must be in [0, 1), got {config.dropout_rate}')
    out.update(hidden_dropout_prob=config.dropout_rate,
               attention_probs_dropout_prob=config.dropout_rate)
  return out


def read_run_model_config(run_dir: str) -> models.BertConfig:
  path = os.path.join(run_dir, MODEL_CONFIG)
  try:
    with open(path) as f:
      return export.config_from_dict(json.load(f))
  except (OSError, ValueError, TypeError) as e:
    raise UserError(f'{path}: unreadable model config ({e})') from None


def load_initial_model(config, architecture: str, vocab_size: int = 0, num_labels: int = 2):
  """(BertConfig, params) to start training from, per `config.init_checkpoint`.

  Empty: a random `config.model` of `vocab_size`. An HF directory: converted weights. A run
  directory of ours: its latest checkpoint. Heads are adapted to `architecture`; alpha/gamma
  are initialised from the weights when binarization is on and the source had none.
  """
  overrides = model_overrides(config)
  path = config.get('init_checkpoint') or ''
  rng = jax.random.PRNGKey(config.seed)
  if not path:
    base = models.model_config(config.model)
    model_cfg = base.replace(
        architecture=architecture, vocab_size=vocab_size, num_labels=num_labels,
        max_position_embeddings=max(config.max_seq_length, base.max_position_embeddings),
        **overrides)
    return model_cfg, models.init_params(model_cfg, rng)
  if not os.path.exists(path):
    raise UserError(f'{path}: init_checkpoint not found')
  if is_run_dir(path):
    source_cfg = read_run_model_config(path)
    params = checkpoints.CheckpointStore(os.path.join(path, 'checkpoints')).restore_params()
    if source_cfg.binarize.any and not overrides['binarize'].any:
      source_cfg, params = convert.dequantize_params(source_cfg, params)
    source_cfg = source_cfg.replace(**overrides)
  else:
    source_cfg, params = convert.load_hf_bert(path, **overrides)
  model_cfg, params = convert.adapt_params(source_cfg, params, architecture, rng,
                                           num_labels=num_labels)
  if (model_cfg.max_position_embeddings < config.max_seq_length):
    raise UserError(f'max_seq_length {config.max_seq_length} exceeds the checkpoint\'s '
                    f'max_position_embeddings {model_cfg.max_position_embeddings}')
  return model_cfg, convert.add_binary_scales(model_cfg, params)


def tokenizer_source(config):
  """vocab file or directory holding the tokenizer, or None when none is configured."""
  if config.get('tokenizer'):
    return config.tokenizer
  path = config.get('init_checkpoint') or ''
  if path and (os.path.isfile(os.path.join(path, VOCAB)) or
               os.path.isfile(os.path.join(path, 'tokenizer.json'))):
    return path
  return None


# Fields that decide the shapes of the params; a checkpoint only fits a model that shares them.
SHAPE_FIELDS = ('architecture', 'vocab_size', 'hidden_size', 'num_hidden_layers',
                'num_attention_heads', 'intermediate_size', 'max_position_embeddings',
                'type_vocab_size', 'num_labels', 'binarize.layers', 'binarize.embeddings',
                'binarize.granularity')


def _field(cfg: models.BertConfig, name: str):
  for part in name.split('.'):
    cfg = getattr(cfg, part, None)
  return cfg


def check_resumable(workdir: str, model_cfg: models.BertConfig):
  """Refuses a workdir whose checkpoints belong to another model, before anything in it is
  overwritten."""
  if not is_run_dir(workdir) or not checkpoints.has_checkpoints(os.path.join(workdir,
                                                                             'checkpoints')):
    return
  saved = read_run_model_config(workdir)
  diff = [f'{k} {_field(saved, k)} (saved) vs {_field(model_cfg, k)}' for k in SHAPE_FIELDS
          if _field(saved, k) != _field(model_cfg, k)]
  if diff:
    raise UserError(f'{workdir}: holds checkpoints of another model ({"; ".join(diff)}); '
                    f'use another workdir or the same model settings')


def save_run_files(workdir: str, config, model_cfg: models.BertConfig, vocab_source: str):
  """Writes what a later eval.py or init_checkpoint needs: model and train config, vocab."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, MODEL_CONFIG), 'w') as f:
    json.dump(export.config_to_dict(model_cfg), f, indent=2)
  with open(os.path.join(workdir, TRAIN_CONFIG), 'w') as f:
    f.write(config.to_json(indent=2))
  src = vocab_source if os.path.isfile(vocab_source) else os.path.join(vocab_source, VOCAB)
  dst = os.path.join(workdir, VOCAB)
  if os.path.isfile(src) and os.path.abspath(src) != os.path.abspath(dst):
    shutil.copyfile(src, dst)
