"""GLUE fine-tuning, optionally distilled from a full-precision teacher: the task for the loop."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from bitmaps_jax import (augment, checkpoints, convert, distill, glue_data, glue_eval,
                         mlm_data, models, parallel, pretrained, trainer)
from bitmaps_jax.binarize import BinarizeConfig
from bitmaps_jax.errors import UserError


def load_teacher(path: str):
  """(config, params) of a float sequence classifier: a run of ours or an HF directory."""
  if not os.path.exists(path):
    raise UserError(f'{path}: teacher_checkpoint not found')
  if pretrained.is_run_dir(path):
    cfg = pretrained.read_run_model_config(path)
    params = checkpoints.CheckpointStore(os.path.join(path, 'checkpoints')).restore_params()
  else:
    cfg, params = convert.load_hf_bert(path)
  if cfg.architecture != 'BertForSequenceClassification':
    raise UserError(f'{path}: teacher must be a sequence classifier, found {cfg.architecture}')
  if cfg.binarize.any:
    cfg, params = convert.dequantize_params(cfg, params)
  return cfg.replace(dtype='float32'), params


def _subset(examples: glue_data.Examples, n: int, seed: int) -> glue_data.Examples:
  if not n or n >= len(examples.sentences):
    return examples
  keep = np.sort(np.random.default_rng(seed).permutation(len(examples.sentences))[:n])
  return glue_data.Examples([examples.sentences[i] for i in keep], examples.labels[keep],
                            examples.idx[keep])


def _with_perturbed_copies(train: glue_data.Examples, config, teacher_path: str):
  """(examples, labeled) with `config.augment.copies` perturbed copies of every training
  sentence appended; labeled is None when there are none."""
  aug = config.get('augment')
  if not aug or not aug.copies:
    return train, None
  if not teacher_path:
    raise UserError('config.augment.copies needs a teacher_checkpoint: perturbed copies have '
                    'no gold label and are learned from the teacher only')
  extra = augment.perturbed_copies(train.sentences, aug.copies, aug.max_edits, config.seed)
  n = len(train.sentences)
  train = glue_data.Examples(train.sentences + extra,
                             np.concatenate([train.labels, np.zeros(len(extra), np.int32)]),
                             np.concatenate([train.idx, np.full(len(extra), -1, np.int32)]))
  return train, np.arange(len(train.sentences)) < n


def derive_schedule(config, steps_per_epoch: int):
  """num_train_steps from num_epochs, warm-up from warmup_ratio, evaluation once per epoch,
  unless the config sets them."""
  if config.num_train_steps <= 0:
    if config.num_epochs <= 0:
      raise UserError(f'config.num_epochs must be positive, got {config.num_epochs}')
    config.num_train_steps = int(round(config.num_epochs * steps_per_epoch))
  if config.warmup_steps < 0:
    config.warmup_steps = int(config.warmup_ratio * config.num_train_steps)
  for field in ('eval_every_steps', 'checkpoint_every_steps'):
    if config[field] <= 0:
      config[field] = steps_per_epoch


def build_task(config, workdir: str):
  """(Task, BertConfig) for fine-tuning on `config.task_name`; writes the run's files."""
  task_def = glue_data.get_task(config.task_name)
  teacher_path = config.get('teacher_checkpoint') or ''
  if teacher_path and not config.init_checkpoint:
    config.init_checkpoint = teacher_path  # the student starts from the teacher's weights
  vocab = pretrained.tokenizer_source(config)
  if vocab is None:
    raise UserError('no tokenizer: set config.tokenizer or an init_checkpoint that has one')
  tokenizer = mlm_data.load_tokenizer(vocab)
  model_cfg, params = pretrained.load_initial_model(
      config, 'BertForSequenceClassification', vocab_size=len(tokenizer),
      num_labels=task_def.num_labels)
  pretrained.check_resumable(workdir, model_cfg)
  if jax.process_index() == 0:
    pretrained.save_run_files(workdir, config, model_cfg, vocab)

  train = _subset(glue_data.load_split(task_def, 'train', config.data_dir,
                                       config.tfds_data_dir), config.max_train_examples,
                  config.seed)
  valid = glue_data.load_split(task_def, config.eval_split, config.data_dir,
                               config.tfds_data_dir)
  train, labeled = _with_perturbed_copies(train, config, teacher_path)
  train_ids = glue_data.tokenize(train, tokenizer, config.max_seq_length)
  valid_ids = glue_data.tokenize(valid, tokenizer, config.max_seq_length)
  global_batch = parallel.global_batch_size(config)
  batches = glue_data.TrainBatches(train_ids, train.labels, global_batch, config.max_seq_length,
                                   config.seed, bucketing=config.length_bucketing,
                                   pool=config.bucket_pool,
                                   process_index=jax.process_index(),
                                   process_count=jax.process_count(), labeled=labeled)
  derive_schedule(config, batches.steps_per_epoch)

  model = models.build_model(model_cfg)
  teacher_params, teacher_model = None, None
  d = config.distill
  if teacher_path:
    teacher_cfg, teacher_params = load_teacher(teacher_path)
    # The teacher reads the student's token ids and is matched layer by layer.
    for field in ('num_hidden_layers', 'hidden_size', 'vocab_size'):
      if getattr(teacher_cfg, field) != getattr(model_cfg, field):
        raise UserError(f'{teacher_path}: teacher has {field} {getattr(teacher_cfg, field)}, '
                        f'the student {getattr(model_cfg, field)}')
    teacher_model = models.build_model(teacher_cfg)

  attend = teacher_model is not None and d.get('attention_weight', 0.0) > 0

  def sums(params, batch, rng, train, frozen=None):
    ids, mask, types = batch['input_ids'], batch['attention_mask'], batch['token_type_ids']
    (logits, out), inter = model.apply({'params': params}, ids, mask, types,
                                       deterministic=not train, output_hidden_states=True,
                                       rngs={'dropout': rng} if train else {},
                                       mutable=['intermediates'] if attend else [])
    # w: rows that count; lw: rows with a gold label (perturbed copies have none).
    w, lw = batch['weights'], batch['label_weights']
    ce = distill.cross_entropy(logits, batch['labels'])
    result = {'accuracy': jnp.sum((jnp.argmax(logits, -1) == batch['labels']) * lw),
              'ce': jnp.sum(ce * lw), 'count': jnp.sum(w)}
    if labeled is not None:  # accuracy and ce / labeled: their means over gold-labelled rows
      result['labeled'] = jnp.sum(lw)
    loss = ce * lw * (d.ce_weight if teacher_model is not None else 1.0)
    if teacher_model is not None:
      (t_logits, t_out), t_inter = teacher_model.apply(
          {'params': frozen}, ids, mask, types, deterministic=True, output_hidden_states=True,
          mutable=['intermediates'] if attend else [])
      t_logits, t_states, t_inter = jax.lax.stop_gradient(
          (t_logits, t_out.hidden_states, t_inter))
      kd = distill.kl_divergence(logits, t_logits, d.temperature)
      hid = distill.hidden_mse(out.hidden_states, t_states, mask)
      loss = loss + d.kd_weight * kd + d.hidden_weight * hid
      result.update(kd=jnp.sum(kd * w), hidden_mse=jnp.sum(hid * w))
      if attend:
        att = distill.attention_kl(distill.attention_logits(inter['intermediates']),
                                   distill.attention_logits(t_inter['intermediates']), mask)
        loss = loss + d.attention_weight * att
        result['attention_kl'] = jnp.sum(att * w)
    result['loss'] = jnp.sum(loss * w)
    return result

  mesh = parallel.data_mesh()
  logits_step = glue_eval.make_logits_step(model, mesh)

  def eval_fn(params):
    logits = glue_eval.predict_logits(logits_step, params, valid_ids, valid.labels,
                                      global_batch, config.max_seq_length, mesh)
    return glue_eval.classification_metrics(task_def, logits, valid.labels)

  mean_len = float(np.mean([len(t) for t in train_ids]))
  task = trainer.Task(params=params, sums=sums, train_batch=batches.batch,
                      eval_batches=lambda: [], items_per_step=global_batch, unit='ex',
                      eval_fn=eval_fn, frozen=teacher_params)
  if jax.process_index() == 0:
    print(f'{task_def.name}: {len(train_ids)} train / {len(valid_ids)} {config.eval_split} '
          f'examples (mean {mean_len:.1f} tokens), {config.num_train_steps} steps of '
          f'{global_batch}; binarize {model_cfg.binarize}; '
          f'teacher {teacher_path or "none"}', flush=True)
  return task, model_cfg


def run(config, workdir: str) -> dict:
  task, _ = build_task(config, workdir)
  return trainer.train_and_evaluate(config, workdir, task)
