"""Masked-language-model pretraining: the MLM task for the shared training loop."""

import os
import tempfile

import jax

from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.mlm import data as mlm_data
from bitmaps_jax.train import initial_model, loop, metrics, parallel
from bitmaps_jax.train.rundir import VOCAB, RunDir


def _files(value):
  if not value:
    return []
  return [v.strip() for v in (value.split(',') if isinstance(value, str) else value) if v.strip()]


def load_documents(data_cfg, seed: int):
  """(train_docs, valid_docs) for the configured source."""
  source = data_cfg.source
  if source == 'builtin':
    docs = mlm_data.builtin_documents(data_cfg.builtin_documents, seed=1234)
    return mlm_data.split_validation(docs, data_cfg.validation_fraction)
  if source == 'text':
    train_files = _files(data_cfg.train_files)
    if not train_files:
      raise UserError('config.data.train_files is empty (data.source=text)')
    train = [d for f in train_files for d in mlm_data.read_text_documents(f, data_cfg.text_format)]
    valid_files = _files(data_cfg.valid_files)
    if not valid_files:
      return mlm_data.split_validation(train, data_cfg.validation_fraction)
    valid = [d for f in valid_files for d in mlm_data.read_text_documents(f, data_cfg.text_format)]
    return train, valid
  if source == 'tfds':
    docs = mlm_data.read_tfds_documents(data_cfg.tfds_name, data_cfg.tfds_split,
                                        data_cfg.get('tfds_data_dir'), data_cfg.max_documents)
    return mlm_data.split_validation(docs, data_cfg.validation_fraction)
  raise UserError(f'config.data.source must be builtin, text or tfds, got {source!r}')


def build_task(config, workdir: str):
  """(loop.Task, BertConfig) for MLM pretraining with `config`; writes the run's files."""
  is_main = jax.process_index() == 0
  if not 0 < config.mask_prob < 1:
    raise UserError(f'mask_prob must be in (0, 1), got {config.mask_prob}')
  train_docs, valid_docs = load_documents(config.data, config.seed)
  run = RunDir(workdir)
  vocab_source = tokenizers.tokenizer_source(config)
  if vocab_source is None:
    vocab_dir = workdir if is_main else tempfile.mkdtemp()
    os.makedirs(vocab_dir, exist_ok=True)
    vocab_source = os.path.join(vocab_dir, VOCAB)
    if not os.path.isfile(vocab_source):
      mlm_data.train_wordpiece_vocab(train_docs, config.data.vocab_size, vocab_source)
  tokenizer = tokenizers.load_tokenizer_for_packing(vocab_source)
  model_cfg, params = initial_model.load(config, 'BertForMaskedLM', vocab_size=len(tokenizer))
  if model_cfg.vocab_size < len(tokenizer):
    raise UserError(f'tokenizer {vocab_source} has {len(tokenizer)} tokens, more than the '
                    f'model\'s vocab_size {model_cfg.vocab_size}')
  run.check_resumable(model_cfg)
  if is_main:
    run.write_run_files(config, model_cfg, vocab_source)

  train_windows = mlm_data.pack_windows(train_docs, tokenizer, config.max_seq_length)
  valid_windows = mlm_data.pack_windows(valid_docs, tokenizer, config.max_seq_length)
  spec = mlm_data.MaskingSpec(
      vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
      special_ids=tuple(tokenizer.all_special_ids), mask_prob=config.mask_prob,
      max_predictions=mlm_data.num_predictions(config.max_seq_length, config.mask_prob))
  global_batch = parallel.global_batch_size(config)
  pid, nproc = jax.process_index(), jax.process_count()
  batches = mlm_data.MLMBatches(train_windows, spec, global_batch, config.seed, pid, nproc)
  model = bert.build_model(model_cfg)

  def batch_metrics(params, batch, rng, train, teacher=None):
    logits = model.apply({'params': params}, batch['input_ids'], batch['attention_mask'],
                         batch['token_type_ids'], deterministic=not train,
                         masked_positions=batch['masked_positions'],
                         rngs={'dropout': rng} if train else {})
    return metrics.masked_lm_sums(logits, batch['masked_labels'], batch['masked_weights'])

  task = loop.Task(
      model_config=model_cfg, params=params, batch_metrics=batch_metrics,
      train_batch=batches.batch,
      eval_batches=lambda: mlm_data.eval_batches(valid_windows, spec, global_batch,
                                                 config.eval_batches, pid, nproc),
      items_per_step=global_batch * config.max_seq_length, unit='tok')
  if is_main:
    print(f'MLM: {len(train_windows)} train / {len(valid_windows)} valid windows of '
          f'{config.max_seq_length} tokens, {batches.steps_per_epoch} steps per epoch, '
          f'global batch {global_batch} on {jax.device_count()} devices; model '
          f'{model_cfg.num_hidden_layers}x{model_cfg.hidden_size}, binarize '
          f'{model_cfg.binarize}', flush=True)
  return task, model_cfg


def run(config, workdir: str) -> dict:
  """Pretrains per `config` into `workdir` (resuming if it holds checkpoints)."""
  task, _ = build_task(config, workdir)
  return loop.train_and_evaluate(config, workdir, task)
