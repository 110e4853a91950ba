"""GLUE predictions and metrics: used during fine-tuning and by eval.py."""

import csv
import io
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert, packed
from bitmaps_jax.tasks import tokenizer as tokenizers
from bitmaps_jax.tasks.glue import data as glue_data
from bitmaps_jax.tasks.glue.distill import cross_entropy
from bitmaps_jax.train import metrics, parallel, rundir
from bitmaps_jax.train.rundir import RunDir


def make_logits_step(model, mesh):
  """A jitted data-parallel forward pass returning per-example logits."""
  def logits_fn(p, batch):
    return model.apply({'params': p}, batch['input_ids'], batch['attention_mask'],
                       batch['token_type_ids'], deterministic=True)

  return parallel.make_predict_step(logits_fn, mesh)


def predict_logits(logits_step, params, token_ids, labels, global_batch_size, max_seq_length,
                   mesh, token_types=None):
  """Logits (num_examples, num_labels) in the examples' order, from all devices and hosts."""
  out = None
  for batch, rows in glue_data.eval_batches(token_ids, labels, global_batch_size, max_seq_length,
                                            jax.process_index(), jax.process_count(),
                                            token_types):
    logits = logits_step(params, parallel.global_batch(mesh, batch))
    logits = (np.asarray(logits) if jax.process_count() == 1
              else multihost_utils.process_allgather(logits, tiled=True))
    if out is None:
      out = np.zeros((len(token_ids), logits.shape[-1]), np.float32)
    out[rows] = logits[:len(rows)]
  return out


def classification_metrics(task: glue_data.GlueTask, logits, labels) -> dict:
  """The task's metrics (accuracy; MCC for CoLA, F1 for MRPC), loss, and the predicted-label
  distribution."""
  preds = np.argmax(logits, axis=-1)
  out = {'accuracy': float(np.mean(preds == labels)),
         'loss': float(np.mean(cross_entropy(logits, labels)))}
  if 'mcc' in task.metrics:
    out['mcc'] = metrics.matthews_corrcoef(labels, preds)
  if 'f1' in task.metrics:
    out['f1'] = metrics.f1_score(labels, preds)
  for k in range(task.num_labels):
    out[f'pred_frac_{k}'] = float(np.mean(preds == k))
  return out


def regression_metrics(task: glue_data.GlueTask, logits, labels) -> dict:
  """Pearson and Spearman correlations of the one output with the gold scores, and the mean
  squared error (the loss)."""
  scores = np.asarray(logits)[:, 0]
  return {'pearson': float(metrics.pearson(scores, labels)),
          'spearman': float(metrics.spearman(scores, labels)),
          'loss': float(np.mean(np.square(scores - labels)))}


def task_metrics(task: glue_data.GlueTask, logits, labels) -> dict:
  return (regression_metrics if task.is_regression else classification_metrics)(
      task, logits, labels)


def report(task: glue_data.GlueTask, split: str, logits, labels) -> dict:
  """Every metric of the task with its 95% bootstrap range over the examples; for a
  classifier also the predicted-label counts and the confusion matrix (rows: true label),
  for regression the spread of the predicted scores."""
  out = {'task': task.name, 'split': split, 'num_examples': int(len(logits))}
  labelled = bool((labels >= 0).all())
  if task.is_regression:
    scores = np.asarray(logits)[:, 0]
    out['predicted_score_mean'] = float(scores.mean())
    out['predicted_score_range'] = [float(scores.min()), float(scores.max())]
    if labelled:
      out.update(regression_metrics(task, logits, labels))
      for key in task.metrics:
        out[f'{key}_interval95'] = list(metrics.correlation_interval(scores, labels, key))
    return out
  preds = np.argmax(logits, axis=-1)
  out['predicted_label_counts'] = np.bincount(preds, minlength=task.num_labels).tolist()
  if labelled:
    out.update(classification_metrics(task, logits, labels))
    confusion = metrics.confusion_matrix(labels, preds, task.num_labels)
    out['confusion_matrix'] = confusion.tolist()
    # How much of the figure is the draw of the examples: a 95% bootstrap range over them.
    for key in task.metrics:
      out[f'{key}_interval95'] = list(metrics.bootstrap_interval(confusion, key))
  return out


def submission_rows(task: glue_data.GlueTask, idx, logits) -> list:
  """(index, prediction) in index order, predictions as GLUE reads them: the label as the
  task's files spell it, or the score clipped to the task's range."""
  if task.is_regression:
    lo, hi = task.score_range
    preds = [f'{v:.3f}' for v in np.clip(np.asarray(logits)[:, 0], lo, hi).tolist()]
  else:
    preds = [task.labels[k] for k in np.argmax(logits, -1).tolist()]
  return sorted(zip(idx.tolist(), preds))


def write_submission(task: glue_data.GlueTask, out_dir: str, idx, logits) -> str:
  """GLUE-submission file: `index<TAB>prediction` rows under a header."""
  path = files.join(out_dir, task.submission_file)
  text = io.StringIO()
  w = csv.writer(text, delimiter='\t', lineterminator='\n', quoting=csv.QUOTE_NONE)
  w.writerow(['index', 'prediction'])
  for i, p in submission_rows(task, idx, logits):
    w.writerow([i, p])
  files.write_text(path, text.getvalue())
  return path


def check_packed_model(path: str, file_cfg: bert.BertConfig, task: glue_data.GlueTask,
                       run_dir: str, run_cfg: bert.BertConfig, file_vocab=None,
                       run_vocab=None) -> None:
  """Refuses a packed file that cannot answer the task, or that is another model than the
  run's (another size, or trained with another vocabulary, where the file records one): its
  results would be saved as this run's."""
  classifier = file_cfg.architecture == 'BertForSequenceClassification'
  if not classifier or file_cfg.num_labels != task.num_labels:
    holds = file_cfg.architecture + (f' with num_labels {file_cfg.num_labels}' if classifier
                                     else ' (no classifier head)')
    raise UserError(f'{path}: the file holds a {holds}; {task.name} needs a '
                    f'BertForSequenceClassification with num_labels {task.num_labels}')
  # Packing may rewrite the dense scheme's granularity (the file holds per-channel scales).
  differ = [d.replace(' vs ', ' in the file, ') + ' in the run'
            for d in rundir.shape_differences(file_cfg, run_cfg)
            if not d.startswith('binarize.granularity')]
  if file_vocab is not None and run_vocab is not None and file_vocab != run_vocab:
    differ.append(f'vocabulary of {tokenizers.describe_vocab(file_vocab)} in the file, '
                  f'{tokenizers.describe_vocab(run_vocab)} in the run')
  if differ:
    raise UserError(f'{path}: not a model of the run {run_dir} ({"; ".join(differ)})')


def evaluate_run(run_dir: str, config, split: str, packed_file: str = '', step=None) -> dict:
  """Evaluates a fine-tuning run's latest checkpoint (or saved `step`, or the packed model
  file made from it) on `split`."""
  run = RunDir(run_dir)
  if config.get('task') != 'glue':
    raise UserError(f'{run_dir}: not a GLUE fine-tuning run (task {config.get("task", "mlm")!r})')
  task = glue_data.get_task(config.task_name)
  tokenizer = tokenizers.load_tokenizer(run.vocab_file)
  examples = glue_data.load_split(task, split, config.data_dir, config.tfds_data_dir,
                                  config.get('holdout_examples', 0))
  token_ids, token_types = glue_data.encode(examples, tokenizer, config.max_seq_length)
  mesh = parallel.data_mesh()
  if packed_file:
    stored = packed.read_packed_file(packed_file)
    check_packed_model(packed_file, stored.config, task, run_dir, run.model_config(),
                       stored.vocab, tokenizers.vocab_identity(tokenizer))
    model = packed.PackedModel(stored.config, stored.records)
    # The packed model runs on one device: the rows come back to the host first.
    run_packed = lambda _, batch: model(*(np.asarray(batch[k]) for k in (
        'input_ids', 'attention_mask', 'token_type_ids')))
    logits = predict_logits(run_packed, None, token_ids,
                            examples.labels, parallel.global_batch_size(config),
                            config.max_seq_length, mesh, token_types)
    step = None
  else:
    model_cfg = run.model_config()
    params, step = run.restore_params(step)
    params = parallel.replicate(mesh, params)
    logits = predict_logits(make_logits_step(bert.build_model(model_cfg), mesh), params,
                            token_ids, examples.labels, parallel.global_batch_size(config),
                            config.max_seq_length, mesh, token_types)
  out = report(task, split, logits, examples.labels)
  out['checkpoint_step'] = None if step is None else int(step)
  if packed_file:
    out['packed_file'] = packed_file
  out['_predictions'] = (task, examples.idx, logits, (examples.labels < 0).all())
  return out


def write_results(run_dir: str, split: str, out: dict, step=None) -> list:
  """Writes eval_<split>[_step<N>|_packed].json and, for unlabeled (test) splits, the GLUE
  submission file (`step`: the checkpoint step asked for, if not the latest); returns the
  paths. A write that fails is one line naming the file."""
  task, idx, logits, unlabeled = out.pop('_predictions')
  if jax.process_index() != 0:
    return []
  run = RunDir(run_dir)
  label = os.path.splitext(os.path.basename(split))[0] if split.endswith('.tsv') else split
  suffix = ('_packed' if out.get('packed_file') else
            f'_step{step}' if step is not None else '')
  name = f'eval_{label}{suffix}.json'
  written = []
  try:
    if unlabeled:
      written.append(write_submission(task, run_dir, idx, logits))
    written.append(run.write_json(name, out))
  except OSError as e:
    raise UserError(f'{e.filename or run_dir}: cannot write the results ({e.strerror})') from None
  return written
