"""Metrics on hand-made examples."""

import jax.numpy as jnp
import numpy as np
import pytest

from bitmaps_jax.train import metrics


def test_mrr32_hand_example():
  vocab = 40
  logits = np.zeros((1, 3, vocab), np.float32)
  # position 0: the label (5) scores highest -> rank 1
  logits[0, 0, 5] = 10.0
  # position 1: label 7 is third -> 1/3
  logits[0, 1, [1, 2, 7]] = [9.0, 8.0, 7.0]
  # position 2: label 9 ranked below 32 others -> 0
  logits[0, 2, :] = np.arange(vocab, 0, -1)
  logits[0, 2, 9] = -1.0
  labels = jnp.array([[5, 7, 9]])
  sums = metrics.masked_lm_sums(jnp.asarray(logits), labels, jnp.ones((1, 3)))
  m = metrics.means(sums)
  assert m['mrr32'] == pytest.approx((1 + 1 / 3 + 0) / 3)
  assert m['accuracy'] == pytest.approx(1 / 3)
  # Weights exclude positions: only the second counts.
  m2 = metrics.means(metrics.masked_lm_sums(jnp.asarray(logits), labels,
                                            jnp.array([[0.0, 1.0, 0.0]])))
  assert m2['mrr32'] == pytest.approx(1 / 3) and m2['accuracy'] == 0.0
  logp = logits[0, 1] - np.log(np.exp(logits[0, 1]).sum())
  assert m2['loss'] == pytest.approx(-logp[7], rel=1e-5)


def test_matthews_against_hand_computation():
  labels = [1, 1, 1, 1, 0, 0, 0, 1, 0, 1]
  preds = [1, 1, 0, 1, 0, 1, 0, 1, 0, 0]
  # tp=4 tn=3 fp=1 fn=2 -> (12 - 2) / sqrt(5 * 6 * 4 * 5) = 10 / sqrt(600)
  assert metrics.matthews_corrcoef(labels, preds) == pytest.approx(10 / np.sqrt(600))
  assert metrics.matthews_corrcoef(labels, [1] * 10) == 0.0
  np.testing.assert_array_equal(metrics.confusion_matrix(labels, preds, 2), [[3, 1], [2, 4]])


def _labels_and_preds(n, agree, seed):
  """n binary labels and predictions that agree on a fraction `agree` of them."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, n)
  preds = np.where(rng.random(n) < agree, labels, 1 - labels)
  return labels, preds


def test_bootstrap_interval_matches_resampling_the_examples():
  labels, preds = _labels_and_preds(400, 0.7, seed=1)
  confusion = metrics.confusion_matrix(labels, preds, 2)
  rng = np.random.default_rng(2)
  rows = rng.integers(0, len(labels), (2000, len(labels)))
  direct = {'mcc': [metrics.matthews_corrcoef(labels[r], preds[r]) for r in rows],
            'accuracy': [np.mean(labels[r] == preds[r]) for r in rows]}
  for key, values in direct.items():
    lo, hi = metrics.bootstrap_interval(confusion, key)
    # Two Monte-Carlo estimates of the same quantiles (their sd ~0.005 here; the range ~0.18).
    assert lo == pytest.approx(np.quantile(values, 0.025), abs=0.02)
    assert hi == pytest.approx(np.quantile(values, 0.975), abs=0.02)
  point = metrics.matthews_corrcoef(labels, preds)
  lo, hi = metrics.bootstrap_interval(confusion, 'mcc')
  assert lo < point < hi
  assert metrics.bootstrap_interval(confusion, 'mcc') == (lo, hi)  # seeded: repeatable


def test_bootstrap_interval_width_and_edges():
  # Accuracy p on n examples: the range is close to p +- 1.96 sqrt(p (1 - p) / n).
  labels, preds = _labels_and_preds(4000, 0.8, seed=3)
  confusion = metrics.confusion_matrix(labels, preds, 2)
  p = np.trace(confusion) / confusion.sum()
  lo, hi = metrics.bootstrap_interval(confusion, 'accuracy')
  assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 4000), rel=0.1)
  # Four times the examples, half the width.
  small = metrics.confusion_matrix(labels[:1000], preds[:1000], 2)
  lo_s, hi_s = metrics.bootstrap_interval(small, 'mcc')
  lo_l, hi_l = metrics.bootstrap_interval(confusion, 'mcc')
  assert (hi_s - lo_s) / (hi_l - lo_l) == pytest.approx(2.0, rel=0.15)
  # Every prediction right: every resample gives 1.
  assert metrics.bootstrap_interval([[30, 0], [0, 70]], 'mcc') == (1.0, 1.0)
  with pytest.raises(ValueError, match='no interval'):
    metrics.bootstrap_interval(np.eye(3, dtype=int), 'mcc')
  with pytest.raises(ValueError, match='empty'):
    metrics.bootstrap_interval([[0, 0], [0, 0]], 'accuracy')
