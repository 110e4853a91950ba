"""Metrics as sums over examples, so they add up across devices, hosts and batches."""

import jax
import jax.numpy as jnp
import numpy as np

MRR_K = 32


def masked_lm_sums(logits, labels, weights, k: int = MRR_K) -> dict:
  """Sums of loss, accuracy and MRR-k over weighted (masked) positions, plus their count.

  MRR-k: reciprocal rank of the true token among the k highest-scoring tokens, 0 if absent.
  """
  logits = logits.astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
  _, top = jax.lax.top_k(logits, k)
  hit = top == labels[..., None]
  rank = jnp.argmax(hit, axis=-1) + 1
  rr = jnp.where(jnp.any(hit, axis=-1), 1.0 / rank, 0.0)
  return {
      'loss': jnp.sum(nll * weights),
      'accuracy': jnp.sum((top[..., 0] == labels) * weights),
      f'mrr{k}': jnp.sum(rr * weights),
      'count': jnp.sum(weights),
  }


def means(sums: dict) -> dict:
  """Divides every summed metric by 'count'."""
  sums = {k: float(v) for k, v in sums.items()}
  n = max(sums.pop('count'), 1e-9)
  return {k: v / n for k, v in sums.items()}


def add(a: dict, b: dict) -> dict:
  return b if a is None else jax.tree_util.tree_map(lambda x, y: x + y, a, b)


def matthews_corrcoef(labels, preds) -> float:
  """Matthews correlation for binary labels; 0 when a row or column of the confusion is empty."""
  labels, preds = np.asarray(labels).astype(bool), np.asarray(preds).astype(bool)
  return float(_mcc_from_counts(np.sum(labels & preds), np.sum(~labels & ~preds),
                                np.sum(~labels & preds), np.sum(labels & ~preds)))


def _mcc_from_counts(tp, tn, fp, fn):
  """Matthews correlation of binary confusion counts (arrays: one value per element)."""
  tp, tn, fp, fn = (np.asarray(x, np.float64) for x in (tp, tn, fp, fn))
  denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return np.where(denom == 0, 0.0, (tp * tn - fp * fn) / np.where(denom == 0, 1.0, denom))


def f1_score(labels, preds) -> float:
  """F1 of label 1 (GLUE's for MRPC); 0 when there is no true or predicted 1."""
  labels, preds = np.asarray(labels).astype(bool), np.asarray(preds).astype(bool)
  return float(_f1_from_counts(np.sum(labels & preds), np.sum(~labels & preds),
                               np.sum(labels & ~preds)))


def _f1_from_counts(tp, fp, fn):
  tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
  denom = 2 * tp + fp + fn
  return np.where(denom == 0, 0.0, 2 * tp / np.where(denom == 0, 1.0, denom))


def pearson(x, y, axis=-1):
  """Pearson correlation along `axis` (rows of resamples at once); 0 for a constant row."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x = x - x.mean(axis=axis, keepdims=True)
  y = y - y.mean(axis=axis, keepdims=True)
  denom = np.sqrt(np.sum(x * x, axis=axis) * np.sum(y * y, axis=axis))
  return np.where(denom == 0, 0.0, np.sum(x * y, axis=axis) / np.where(denom == 0, 1.0, denom))


def spearman(x, y, axis=-1):
  """Spearman correlation: Pearson of the ranks (ties share their mean rank)."""
  from scipy.stats import rankdata
  return pearson(rankdata(x, axis=axis), rankdata(y, axis=axis), axis=axis)


CORRELATIONS = {'pearson': pearson, 'spearman': spearman}


def correlation_interval(predictions, targets, metric: str, level: float = 0.95,
                         num_resamples: int = 2000, seed: int = 0) -> tuple:
  """The central `level` range of a correlation ('pearson' or 'spearman') over resamples of
  the (prediction, target) pairs drawn with replacement: bootstrap_interval's range for
  regression, where no confusion matrix sums up the examples."""
  x, y = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
  if not len(x):
    raise ValueError('correlation_interval: no examples')
  rows = np.random.default_rng(seed).integers(0, len(x), size=(num_resamples, len(x)))
  values = CORRELATIONS[metric](x[rows], y[rows], axis=1)
  lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def bootstrap_interval(confusion, metric: str, level: float = 0.95,
                       num_resamples: int = 2000, seed: int = 0) -> tuple:
  """The central `level` range of `metric` ('accuracy', or 'mcc' or 'f1' for two labels) over
  resamples of the evaluation set's examples, drawn with replacement.

  It says how far the figure could move on another set of the same size from the same
  distribution: on a dev set of ~1,000 sentences that is several hundredths of MCC, the scale
  on which two runs' figures can be told apart. A resample only changes how many examples
  fall in each cell of the confusion matrix, so each one is a multinomial draw of its counts.
  """
  m = np.asarray(confusion, np.int64)
  n = int(m.sum())
  if n == 0:
    raise ValueError('bootstrap_interval: the confusion matrix is empty')
  rng = np.random.default_rng(seed)
  draws = rng.multinomial(n, m.ravel() / n, size=num_resamples).reshape((-1,) + m.shape)
  if metric == 'accuracy':
    values = np.trace(draws, axis1=1, axis2=2) / n
  elif metric == 'mcc' and m.shape == (2, 2):
    values = _mcc_from_counts(draws[:, 1, 1], draws[:, 0, 0], draws[:, 0, 1], draws[:, 1, 0])
  elif metric == 'f1' and m.shape == (2, 2):
    values = _f1_from_counts(draws[:, 1, 1], draws[:, 0, 1], draws[:, 1, 0])
  else:
    raise ValueError(f'bootstrap_interval: no interval for {metric!r} on a {m.shape} confusion')
  lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
  return float(lo), float(hi)


def confusion_matrix(labels, preds, num_labels: int) -> np.ndarray:
  """m[true, predicted] counts."""
  m = np.zeros((num_labels, num_labels), np.int64)
  np.add.at(m, (np.asarray(labels), np.asarray(preds)), 1)
  return m
