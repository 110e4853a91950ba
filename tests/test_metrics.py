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
