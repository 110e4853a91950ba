"""Masked-language-model pretraining: the MLM task for the shared training loop."""

import atexit
import dataclasses
import os
import shutil
import tempfile

import jax
from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.mlm import batches
from bitmaps_jax.tasks.mlm import data as mlm_data
from bitmaps_jax.tasks.mlm import prepared
from bitmaps_jax.train import initial_model, loop, metrics, parallel
from bitmaps_jax.train.rundir import VOCAB, RunDir

SCRATCH_PREFIX = 'bitmaps_jax_vocab_'


def _files(value):
  if not value:
    return []
  return [v.strip() for v in (value.split(',') if isinstance(value, str) else value) if v.strip()]


def _builtin_documents(data_cfg):
  docs = mlm_data.builtin_documents(data_cfg.builtin_documents, seed=1234)
  return mlm_data.split_validation(docs, data_cfg.validation_fraction)


def _text_documents(data_cfg):
  train_files = _files(data_cfg.train_files)
  if not train_files:
    raise UserError('config.data.train_files is empty (data.source=text)')
  train = [d for f in train_files for d in mlm_data.read_text_documents(f, data_cfg.text_format)]
  valid_files = _files(data_cfg.valid_files)
  if not valid_files:
    return mlm_data.split_validation(train, data_cfg.validation_fraction)
  valid = [d for f in valid_files for d in mlm_data.read_text_documents(f, data_cfg.text_format)]
  return train, valid


def _tfds_documents(data_cfg):
  docs = mlm_data.read_tfds_documents(data_cfg.tfds_name, data_cfg.tfds_split,
                                      data_cfg.get('tfds_data_dir'), data_cfg.max_documents)
  return mlm_data.split_validation(docs, data_cfg.validation_fraction)


@dataclasses.dataclass
class Corpus:
  """A source's windows and the vocabulary their ids come from."""
  train: batches.Windows
  valid: batches.Windows
  vocab_file: str
  # A vocabulary learned for this run lives in a scratch folder until the run holds a copy.
  scratch_dir: str = ''


def _documents_source(read_documents):
  """A source of documents, tokenized and packed into windows in memory."""

  def open_corpus(config, run: RunDir) -> Corpus:
    train_docs, valid_docs = read_documents(config.data)
    vocab, scratch = _vocabulary(config, run, train_docs)
    tokenizer = tokenizers.load_tokenizer_for_packing(vocab)
    pack = lambda docs: batches.Windows.of(
        mlm_data.pack_windows(docs, tokenizer, config.max_seq_length))
    return Corpus(pack(train_docs), pack(valid_docs), vocab, scratch)

  return open_corpus


def _prepared_source(config, run: RunDir) -> Corpus:
  """A corpus `prepare_corpus` made: its shards memory-mapped, its own vocabulary."""
  if not config.data.get('prepared_dir'):
    raise UserError('config.data.prepared_dir is empty (data.source=prepared)')
  corpus = prepared.PreparedCorpus(config.data.prepared_dir)
  if corpus.max_seq_length != config.max_seq_length:
    raise UserError(f'{corpus.path}: prepared with max_seq_length {corpus.max_seq_length}, '
                    f'the config has {config.max_seq_length}')
  return Corpus(corpus.train, corpus.valid, _corpus_vocabulary(config, run, corpus))


# config.data.source -> (config, run) -> Corpus
SOURCES = {
    'builtin': _documents_source(_builtin_documents),
    'text': _documents_source(_text_documents),
    'tfds': _documents_source(_tfds_documents),
    'prepared': _prepared_source,
}


def open_corpus(config, run: RunDir) -> Corpus:
  source = SOURCES.get(config.data.source)
  if source is None:
    raise UserError(f'config.data.source must be one of {", ".join(SOURCES)}, got '
                    f'{config.data.source!r}')
  return source(config, run)


def _corpus_vocabulary(config, run: RunDir, corpus) -> str:
  """The prepared corpus's vocabulary, once the configured tokenizer (or init checkpoint's)
  and the run's saved one are the same: its token ids mean nothing under another."""
  corpus_tok = tokenizers.load_tokenizer_for_packing(corpus.vocab_file)
  made = corpus.manifest.get('vocab') or tokenizers.vocab_identity(corpus_tok)
  others = [('config.tokenizer' if config.get('tokenizer') else 'config.init_checkpoint',
             tokenizers.tokenizer_source(config))]
  if run.is_run() and files.isfile(run.vocab_file):
    others.append(("the run's vocabulary", run.vocab_file))
  for what, source in others:
    if source is None:
      continue
    theirs = tokenizers.vocab_identity(tokenizers.load_tokenizer_for_packing(source))
    if theirs != made:
      raise UserError(f'{corpus.path}: prepared with a vocabulary of '
                      f'{tokenizers.describe_vocab(made)}; {what} {source} has '
                      f'{tokenizers.describe_vocab(theirs)}; prepare the corpus with that '
                      f'vocabulary or use another workdir')
  return corpus.vocab_file


def _vocabulary(config, run: RunDir, train_docs):
  """(vocab, scratch folder or ''): the tokenizer's vocab, configured, the init checkpoint's,
  or learned from the corpus into a scratch folder of its own."""
  vocab_source, scratch = tokenizers.tokenizer_source(config), ''
  if vocab_source is None and run.is_run() and files.isfile(run.vocab_file):
    saved = run.train_config().get('data', {}).get('vocab_size')
    if saved != config.data.vocab_size:
      raise UserError(f'config.data.vocab_size {config.data.vocab_size}: {run.vocab_file} was '
                      f'learned with vocab_size {saved}; use another workdir or the same value')
  if vocab_source is None:
    # Every host learns the same vocabulary, outside the run: process 0 copies it in with the
    # run's other files, once the config has been checked.
    vocab_source = run.vocab_file
    if not files.isfile(vocab_source):
      # build_task deletes it once the run has copied it in (atexit: if it never gets there).
      scratch = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)
      atexit.register(shutil.rmtree, scratch, ignore_errors=True)
      vocab_source = mlm_data.train_wordpiece_vocab(
          train_docs, config.data.vocab_size, os.path.join(scratch, VOCAB))
  return vocab_source, scratch


def make_batch_metrics(model):
  """Summed MLM metrics of a batch (loss, accuracy, MRR over the masked positions)."""

  def batch_metrics(params, batch, rng, train, teacher=None):
    logits = model.apply({'params': params}, batch['input_ids'], batch['attention_mask'],
                         batch['token_type_ids'], deterministic=not train,
                         masked_positions=batch['masked_positions'],
                         rngs={'dropout': rng} if train else {})
    return metrics.masked_lm_sums(logits, batch['masked_labels'], batch['masked_weights'])

  return batch_metrics


def build_task(config, run):
  """(loop.Task, BertConfig) for MLM pretraining with `config`; writes the run's files."""
  is_main = jax.process_index() == 0
  if not 0 < config.mask_prob < 1:
    raise UserError(f'mask_prob must be in (0, 1), got {config.mask_prob}')
  run = RunDir.of(run)
  corpus = open_corpus(config, run)
  vocab_source = corpus.vocab_file
  try:
    tokenizer = tokenizers.load_tokenizer_for_packing(vocab_source)
    model_cfg, params = initial_model.load(config, 'BertForMaskedLM', vocab_size=len(tokenizer))
    if model_cfg.vocab_size < len(tokenizer):
      raise UserError(f'tokenizer {vocab_source} has {len(tokenizer)} tokens, more than the '
                      f'model\'s vocab_size {model_cfg.vocab_size}')
    loop.check_config(config, model_cfg)
    run.check_resumable(model_cfg, config)
    if is_main:
      run.write_run_files(config, model_cfg, vocab_source)
  finally:
    # train.py leaves through os._exit on a stop or an error, past atexit: delete it here.
    if corpus.scratch_dir:
      shutil.rmtree(corpus.scratch_dir, ignore_errors=True)

  spec = batches.MaskingSpec(
      vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
      special_ids=tuple(tokenizer.all_special_ids), mask_prob=config.mask_prob,
      max_predictions=batches.num_predictions(config.max_seq_length, config.mask_prob))
  global_batch = parallel.global_batch_size(config)
  pid, nproc = jax.process_index(), jax.process_count()
  train = batches.MLMBatches(corpus.train, spec, global_batch, config.seed, pid, nproc)
  batch_metrics = make_batch_metrics(bert.build_model(model_cfg))
  task = loop.Task(
      model_config=model_cfg, params=params, batch_metrics=batch_metrics,
      train_batch=train.batch,
      evaluate=loop.summed_evaluation(batch_metrics, lambda: batches.eval_batches(
          corpus.valid, spec, global_batch, config.eval_batches, pid, nproc)),
      items_per_step=global_batch * config.max_seq_length, unit='tok')
  if is_main:
    n_valid = len(corpus.valid)
    if config.eval_batches:
      n_valid = min(n_valid, config.eval_batches * global_batch)
    print(f'MLM: {len(corpus.train)} train / {n_valid} valid windows of '
          f'{config.max_seq_length} tokens, {train.steps_per_epoch} steps per epoch, '
          f'global batch {global_batch} on {jax.device_count()} devices; model '
          f'{model_cfg.num_hidden_layers}x{model_cfg.hidden_size}, binarize '
          f'{model_cfg.binarize}', flush=True)
  return task, model_cfg


def run(config, run_dir) -> dict:
  """Pretrains per `config` into `run_dir` (resuming if it holds checkpoints)."""
  run_dir = RunDir.of(run_dir)
  task, _ = build_task(config, run_dir)
  return loop.train_and_evaluate(config, run_dir, task)
