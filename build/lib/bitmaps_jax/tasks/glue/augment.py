"""Perturbed copies of training sentences, labelled by the teacher during distillation.

A binary student distilled on a small task (CoLA: 8,551 sentences) fits the teacher on the
training sentences and generalises worse than the teacher does. Distillation needs no gold
labels, so the student can learn the teacher's function on more inputs: word-level edits of
the training sentences (replace a word by a word drawn from the corpus, delete a word, swap
two neighbours, insert a corpus word). For acceptability such edits often cross the
grammatical boundary, which is where the teacher's soft labels say the most. Copies carry no
gold label: they enter the distillation terms only, never the task cross-entropy.
"""

from typing import List, Sequence

import numpy as np

from bitmaps_jax.errors import UserError

EDITS = ('replace', 'delete', 'swap', 'insert')


def perturb(words: Sequence[str], corpus_words: Sequence[str], num_edits: int,
            rng: np.random.Generator) -> List[str]:
  """`words` after `num_edits` random word-level edits; never returns an empty sentence."""
  out = list(words)
  for _ in range(num_edits):
    edit = EDITS[rng.integers(len(EDITS))]
    if len(out) < 2 and edit in ('delete', 'swap'):
      edit = 'replace' if out else 'insert'
    if edit == 'replace':
      out[rng.integers(len(out))] = corpus_words[rng.integers(len(corpus_words))]
    elif edit == 'delete':
      del out[rng.integers(len(out))]
    elif edit == 'swap':
      i = rng.integers(len(out) - 1)
      out[i], out[i + 1] = out[i + 1], out[i]
    else:
      out.insert(rng.integers(len(out) + 1), corpus_words[rng.integers(len(corpus_words))])
  return out


def perturbed_copies(sentences: Sequence[str], copies: int, max_edits: int,
                     seed: int) -> List[str]:
  """`copies` perturbed versions of every sentence (copy-major order), each with 1..max_edits
  edits. Replacement and inserted words are drawn from the sentences' own words, so frequent
  words are drawn often, as in the text."""
  if copies < 0:
    raise UserError(f'config.augment.copies must be >= 0, got {copies}')
  if copies and max_edits < 1:
    raise UserError(f'config.augment.max_edits must be >= 1, got {max_edits}')
  rng = np.random.default_rng((seed, 7))
  split = [s.split() for s in sentences]
  corpus_words = [w for words in split for w in words]
  out = []
  for _ in range(copies):
    for words in split:
      edits = int(rng.integers(1, max_edits + 1))
      out.append(' '.join(perturb(words, corpus_words, edits, rng)))
  return out
