"""Knowledge distillation from a full-precision teacher to a binary student.

Per example: task cross-entropy + KL(teacher || student) on temperature-scaled logits
(times T^2, so gradients keep their scale) + the mean squared difference of every layer's
hidden states (embeddings output included) over the real tokens.
"""

import jax
import jax.numpy as jnp


def cross_entropy(logits, labels):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def kl_divergence(student_logits, teacher_logits, temperature: float):
  """Per-example KL(softmax(t / T) || softmax(s / T)) * T^2."""
  t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(jnp.exp(t) * (t - s), axis=-1) * temperature**2


def hidden_mse(student_states, teacher_states, attention_mask):
  """Per-example mean over layers, real tokens and features of (h_s - h_t)^2."""
  mask = attention_mask.astype(jnp.float32)[..., None]
  tokens = jnp.maximum(jnp.sum(mask, axis=(1, 2)), 1.0)
  per_layer = [jnp.sum(jnp.square(s.astype(jnp.float32) - t.astype(jnp.float32)) * mask,
                       axis=(1, 2)) / (tokens * s.shape[-1])
               for s, t in zip(student_states, teacher_states)]
  return sum(per_layer) / len(per_layer)
