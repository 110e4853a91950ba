"""GLUE fine-tuning, optionally distilled from a full-precision teacher: the task for the loop.

Built in order: student and teacher -> data (splits, perturbed copies, batches) -> schedule
(steps from epochs) -> loss; the run's files are written only once all of it is known, so the
saved config holds the derived schedule.
"""

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.model.bert import BertConfig
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.glue import augment, distill, evaluate
from bitmaps_jax.tasks.glue import data as glue_data
from bitmaps_jax.train import initial_model, loop, parallel
from bitmaps_jax.train.rundir import RunDir


@dataclasses.dataclass
class GlueData:
  task: glue_data.GlueTask
  train: glue_data.Examples
  labeled: Optional[np.ndarray]  # True for gold-labelled rows; None when all are
  train_ids: list
  valid: glue_data.Examples
  valid_ids: list
  valid_types: list  # token types per validation example (1: a pair's second sentence)
  batches: glue_data.TrainBatches


@dataclasses.dataclass
class Teacher:
  config: BertConfig
  params: Any
  path: str


def _subset(examples: glue_data.Examples, n: int, seed: int) -> glue_data.Examples:
  if not n or n >= len(examples.sentences):
    return examples
  return examples.take(np.sort(np.random.default_rng(seed).permutation(
      len(examples.sentences))[:n]))


def _with_perturbed_copies(train: glue_data.Examples, config, tokenizer=None,
                           teacher: Optional[Teacher] = None):
  """(examples, labeled) with `config.augment.copies` perturbed copies of every training
  sentence appended; labeled is None when there are none."""
  aug = config.get('augment')
  if not aug or not aug.copies:
    return train, None
  if train.sentences2 is not None:
    raise UserError('config.augment.copies: perturbed copies are made for single-sentence '
                    'tasks only')
  if not config.teacher_checkpoint:
    raise UserError('config.augment.copies needs a teacher_checkpoint: perturbed copies have '
                    'no gold label and are learned from the teacher only')
  method = aug.get('method', 'edits')
  if method not in augment.METHODS:
    raise UserError(f'config.augment.method must be one of {", ".join(augment.METHODS)}, '
                    f'got {method!r}')
  if method == 'edits':
    extra = augment.perturbed_copies(train.sentences, aug.copies, aug.max_edits, config.seed)
  else:
    words = {augment.split_word(w)[1].lower() for s in train.sentences for w in s.split()}
    table = teacher.params['bert']['embeddings']['word_embeddings']['embedding']
    neighbours = augment.embedding_neighbours(words, tokenizer.get_vocab(), np.asarray(table),
                                              aug.neighbours)
    extra = augment.neighbour_copies(train.sentences, aug.copies, neighbours,
                                     aug.replace_prob, config.seed)
  n = len(train.sentences)
  train = glue_data.Examples(train.sentences + extra,
                             np.concatenate([train.labels, np.zeros(len(extra), train.labels.dtype)]),
                             np.concatenate([train.idx, np.full(len(extra), -1, np.int32)]))
  return train, np.arange(len(train.sentences)) < n


def load_data(config, tokenizer, teacher: Optional[Teacher] = None) -> GlueData:
  """Training and evaluation splits, tokenized, and this process's training batches."""
  task = glue_data.get_task(config.task_name)
  holdout = config.get('holdout_examples', 0)
  train = _subset(glue_data.load_split(task, 'train', config.data_dir, config.tfds_data_dir,
                                       holdout), config.max_train_examples, config.seed)
  valid = glue_data.load_split(task, config.eval_split, config.data_dir, config.tfds_data_dir,
                               holdout)
  train, labeled = _with_perturbed_copies(train, config, tokenizer, teacher)
  train_ids, train_types = glue_data.encode(train, tokenizer, config.max_seq_length)
  valid_ids, valid_types = glue_data.encode(valid, tokenizer, config.max_seq_length)
  batches = glue_data.TrainBatches(
      train_ids, train.labels, parallel.global_batch_size(config), config.max_seq_length,
      config.seed, bucketing=config.length_bucketing, pool=config.bucket_pool,
      process_index=jax.process_index(), process_count=jax.process_count(), labeled=labeled,
      token_types=train_types)
  return GlueData(task, train, labeled, train_ids, valid, valid_ids, valid_types, batches)


def derive_schedule(config, steps_per_epoch: int):
  """A copy of `config` with num_train_steps from num_epochs, warm-up from warmup_ratio,
  evaluation and checkpoints once per epoch, unless the config sets them: the config the run
  trains under and saves. The caller's config is left as it was."""
  derived = config.copy_and_resolve_references()
  if derived.num_train_steps <= 0:
    if derived.num_epochs <= 0:
      raise UserError(f'config.num_epochs must be positive, got {derived.num_epochs}')
    derived.num_train_steps = int(round(derived.num_epochs * steps_per_epoch))
  if derived.warmup_steps < 0:
    derived.warmup_steps = int(derived.warmup_ratio * derived.num_train_steps)
  for field in ('eval_every_steps', 'checkpoint_every_steps'):
    if derived[field] <= 0:
      derived[field] = steps_per_epoch
  return derived


def load_teacher(config, student: BertConfig) -> Optional[Teacher]:
  """The full-precision teacher of `config.teacher_checkpoint`, checked against the student
  (it reads the student's token ids and is matched layer by layer)."""
  path = config.teacher_checkpoint
  if not path:
    return None
  cfg, params = initial_model.read_checkpoint(path, 'teacher_checkpoint', float_only=True)
  if cfg.architecture != 'BertForSequenceClassification':
    raise UserError(f'{path}: teacher must be a sequence classifier, found {cfg.architecture}')
  for field in ('num_hidden_layers', 'hidden_size', 'vocab_size', 'num_labels'):
    if getattr(cfg, field) != getattr(student, field):
      raise UserError(f'{path}: teacher has {field} {getattr(cfg, field)}, '
                      f'the student {getattr(student, field)}')
  return Teacher(cfg.replace(dtype='float32'), params, path)


def make_batch_metrics(model, teacher_model, distill_cfg, labeled, regression=False):
  """Summed metrics of a batch and the loss to minimise: the task loss on gold labels
  (cross-entropy, or for regression the squared error of the one output), plus (with a
  teacher) the logits' loss to the teacher's (KL, or the squared difference of the outputs
  for regression), hidden-state MSE and optionally attention KL."""
  d = distill_cfg
  attention_kd = teacher_model is not None and d.get('attention_weight', 0.0) > 0
  collect = ['intermediates'] if attention_kd else []

  def batch_metrics(params, batch, rng, train, teacher_params=None):
    ids, mask, types = batch['input_ids'], batch['attention_mask'], batch['token_type_ids']
    (logits, out), inter = model.apply({'params': params}, ids, mask, types,
                                       deterministic=not train, output_hidden_states=True,
                                       rngs={'dropout': rng} if train else {}, mutable=collect)
    # w: rows that count; lw: rows with a gold label (perturbed copies have none).
    w, lw = batch['weights'], batch['label_weights']
    if regression:
      ce = distill.squared_error(logits, batch['labels'])
      result = {'mse': jnp.sum(ce * lw), 'count': jnp.sum(w)}
    else:
      ce = distill.cross_entropy(logits, batch['labels'])
      result = {'accuracy': jnp.sum((jnp.argmax(logits, -1) == batch['labels']) * lw),
                'ce': jnp.sum(ce * lw), 'count': jnp.sum(w)}
    if labeled is not None:  # accuracy and ce / labeled: their means over gold-labelled rows
      result['labeled'] = jnp.sum(lw)
    loss = ce * lw * (d.ce_weight if teacher_model is not None else 1.0)
    if teacher_model is not None:
      (t_logits, t_out), t_inter = teacher_model.apply(
          {'params': teacher_params}, ids, mask, types, deterministic=True,
          output_hidden_states=True, mutable=collect)
      t_logits, t_states, t_inter = jax.lax.stop_gradient(
          (t_logits, t_out.hidden_states, t_inter))
      kd = (distill.squared_error(logits, t_logits[:, 0]) if regression
            else distill.kl_divergence(logits, t_logits, d.temperature))
      hid = distill.hidden_mse(out.hidden_states, t_states, mask)
      loss = loss + d.kd_weight * kd + d.hidden_weight * hid
      result.update(kd=jnp.sum(kd * w), hidden_mse=jnp.sum(hid * w))
      if attention_kd:
        att = distill.attention_kl(distill.attention_logits(inter['intermediates']),
                                   distill.attention_logits(t_inter['intermediates']), mask)
        loss = loss + d.attention_weight * att
        result['attention_kl'] = jnp.sum(att * w)
    result['loss'] = jnp.sum(loss * w)
    return result

  return batch_metrics


def build(config, run):
  """(loop.Task, BertConfig, the run's config) for fine-tuning on `config.task_name`; writes
  the run's files. The run's config is `config` with its derived fields filled in."""
  for field in ('teacher_checkpoint', 'init_checkpoint'):
    if config[field] and not files.exists(config[field]):
      raise UserError(f'{config[field]}: config.{field} not found')
  if config.teacher_checkpoint and not config.init_checkpoint:
    config = config.copy_and_resolve_references()
    config.init_checkpoint = config.teacher_checkpoint  # the student starts from the teacher
  vocab = tokenizers.tokenizer_source(config)
  if vocab is None:
    raise UserError('no tokenizer: set config.tokenizer or an init_checkpoint that has one')
  tokenizer = tokenizers.load_tokenizer(vocab)
  task_def = glue_data.get_task(config.task_name)
  model_cfg, params = initial_model.load(config, 'BertForSequenceClassification',
                                         vocab_size=len(tokenizer),
                                         num_labels=task_def.num_labels)
  teacher = load_teacher(config, model_cfg)
  data = load_data(config, tokenizer, teacher)
  config = derive_schedule(config, data.batches.steps_per_epoch)
  loop.check_config(config, model_cfg)
  run = RunDir.of(run)
  run.check_resumable(model_cfg, config)
  if jax.process_index() == 0:
    run.write_run_files(config, model_cfg, vocab)

  model = bert.build_model(model_cfg)
  teacher_model = bert.build_model(teacher.config) if teacher else None
  mesh = parallel.data_mesh()
  logits_step = evaluate.make_logits_step(model, mesh)
  global_batch = parallel.global_batch_size(config)

  def evaluate_validation(params):
    logits = evaluate.predict_logits(logits_step, params, data.valid_ids, data.valid.labels,
                                     global_batch, config.max_seq_length, mesh,
                                     data.valid_types)
    return evaluate.task_metrics(data.task, logits, data.valid.labels)

  task = loop.Task(model_config=model_cfg, params=params,
                   batch_metrics=make_batch_metrics(model, teacher_model, config.distill,
                                                    data.labeled, data.task.is_regression),
                   train_batch=data.batches.batch, evaluate=evaluate_validation,
                   items_per_step=global_batch, unit='ex',
                   frozen=teacher.params if teacher else None)
  if jax.process_index() == 0:
    mean_len = float(np.mean([len(t) for t in data.train_ids]))
    print(f'{data.task.name}: {len(data.train_ids)} train / {len(data.valid_ids)} '
          f'{config.eval_split} examples (mean {mean_len:.1f} tokens), '
          f'{config.num_train_steps} steps of {global_batch}; binarize {model_cfg.binarize}; '
          f'teacher {teacher.path if teacher else "none"}', flush=True)
  return task, model_cfg, config


def build_task(config, run):
  """(loop.Task, BertConfig) of `build`."""
  task, model_cfg, _ = build(config, run)
  return task, model_cfg


def run(config, run_dir) -> dict:
  run_dir = RunDir.of(run_dir)
  task, _, config = build(config, run_dir)
  return loop.train_and_evaluate(config, run_dir, task)
