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
  tp = float(np.sum(labels & preds))
  tn = float(np.sum(~labels & ~preds))
  fp = float(np.sum(~labels & preds))
  fn = float(np.sum(labels & ~preds))
  denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def confusion_matrix(labels, preds, num_labels: int) -> np.ndarray:
  """m[true, predicted] counts."""
  m = np.zeros((num_labels, num_labels), np.int64)
  np.add.at(m, (np.asarray(labels), np.asarray(preds)), 1)
  return m
