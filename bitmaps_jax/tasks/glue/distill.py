"""Knowledge distillation from a full-precision teacher to a binary student.

Per example: task cross-entropy + KL(teacher || student) on temperature-scaled logits
(times T^2, so gradients keep their scale; for a regression task, squared errors to the gold
score and to the teacher's score instead) + the mean squared difference of every layer's
hidden states (embeddings output included) over the real tokens + optionally the KL between
the teacher's and the student's attention distributions (every layer, head and real query),
which is where binary query and key weights do the most damage.
"""

import re

import jax
import jax.numpy as jnp
from flax import traverse_util


def cross_entropy(logits, labels):
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def squared_error(outputs, targets):
  """Per-example (output - target)^2 of a one-output (regression) head: the task loss
  against gold scores, and the distillation loss against a regression teacher's output."""
  return jnp.square(outputs[:, 0].astype(jnp.float32) - targets.astype(jnp.float32))


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


def attention_logits(intermediates) -> list:
  """The per-layer attention logits (batch, heads, query, key) that the model sowed, in layer
  order, from the 'intermediates' collection of an apply with mutable=['intermediates']."""
  found = {}
  for path, value in traverse_util.flatten_dict(intermediates).items():
    if path[-1] == 'attention_logits':
      layer = next(int(m.group(1)) for p in path if (m := re.fullmatch(r'layer_(\d+)', p)))
      found[layer] = value[0]
  return [found[i] for i in sorted(found)]


def attention_kl(student_logits, teacher_logits, attention_mask):
  """Per-example mean over layers, heads and real queries of KL(teacher || student) between
  attention distributions over the real keys."""
  keys = attention_mask.astype(bool)[:, None, None, :]
  queries = attention_mask.astype(jnp.float32)  # (batch, query)
  per_layer = []
  for s, t in zip(student_logits, teacher_logits):
    ls = jax.nn.log_softmax(s.astype(jnp.float32), axis=-1)
    lt = jax.nn.log_softmax(t.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.where(keys, jnp.exp(lt) * (lt - ls), 0.0), axis=-1)  # (b, h, q)
    per_layer.append(jnp.sum(jnp.mean(kl, axis=1) * queries, axis=-1) /
                     jnp.maximum(jnp.sum(queries, axis=-1), 1.0))
  return sum(per_layer) / len(per_layer)
