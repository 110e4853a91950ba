"""Perturbed copies of training sentences, labelled by the teacher during distillation.

A binary student distilled on a small task (CoLA: 8,551 sentences) fits the teacher on the
training sentences and generalises worse than the teacher does. Distillation needs no gold
labels, so the student can learn the teacher's function on more inputs: word-level edits of
the training sentences (replace a word by a word drawn from the corpus, delete a word, swap
two neighbours, insert a corpus word). For acceptability such edits often cross the
grammatical boundary, which is where the teacher's soft labels say the most. Copies carry no
gold label: they enter the distillation terms only, never the task cross-entropy.

Two ways to make copies (config.augment.method):
  edits       1..max_edits random edits with words drawn from the training text;
  neighbours  each word replaced, with probability replace_prob, by one of its `neighbours`
              nearest whole words in the teacher's word-embedding space (cosine), the
              TinyBERT-style replacement: plausible words of a similar role, so a copy stays
              close to the sentence and the teacher's soft label says how close.
"""

import re
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np

from bitmaps_jax.errors import UserError

EDITS = ('replace', 'delete', 'swap', 'insert')
METHODS = ('edits', 'neighbours')
_WORD = re.compile(r'^(\W*)(.*?)(\W*)$')  # leading punctuation, word, trailing punctuation


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


def _is_whole_word(token: str) -> bool:
  return token.isascii() and token.isalpha() and (len(token) > 1 or token in ('a', 'i'))


def embedding_neighbours(words: Iterable[str], vocab: Mapping[str, int],
                         embeddings: np.ndarray, k: int,
                         chunk: int = 1024) -> Dict[str, List[str]]:
  """For each of `words` that is a whole-word vocabulary entry, its `k` nearest other whole
  words by cosine similarity of their rows in `embeddings` (vocab_size x hidden), nearest
  first. Sub-word pieces, special tokens and punctuation are neither keys nor candidates."""
  if k < 1:
    raise UserError(f'config.augment.neighbours must be >= 1, got {k}')
  candidates = sorted((t for t in vocab if _is_whole_word(t)), key=vocab.__getitem__)
  table = np.asarray(embeddings, np.float32)
  unit = table / np.maximum(np.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
  cand_ids = np.array([vocab[t] for t in candidates])
  cand = unit[cand_ids]
  queries = sorted({w for w in words if w in vocab and _is_whole_word(w)})
  k = min(k, len(candidates) - 1)
  out = {}
  if k < 1:
    return out
  for start in range(0, len(queries), chunk):
    block = queries[start:start + chunk]
    q_ids = np.array([vocab[w] for w in block])
    sims = unit[q_ids] @ cand.T
    sims[cand_ids[None, :] == q_ids[:, None]] = -np.inf  # never the word itself
    top = np.argpartition(-sims, k - 1, axis=-1)[:, :k]
    for row, word in enumerate(block):
      order = top[row][np.argsort(-sims[row, top[row]], kind='stable')]
      out[word] = [candidates[j] for j in order]
  return out


def split_word(word: str):
  """(leading punctuation, core, trailing punctuation) of a whitespace-separated word."""
  return _WORD.match(word).groups()


def neighbour_copies(sentences: Sequence[str], copies: int, neighbours: Mapping[str, List[str]],
                     replace_prob: float, seed: int) -> List[str]:
  """`copies` versions of every sentence (copy-major order) in which each word that has
  neighbours is replaced by a random one of them with probability `replace_prob` (at least
  one word per copy when any can be); punctuation and an initial capital are kept."""
  if copies < 0:
    raise UserError(f'config.augment.copies must be >= 0, got {copies}')
  if not 0.0 < replace_prob <= 1.0:
    raise UserError(f'config.augment.replace_prob must be in (0, 1], got {replace_prob}')
  rng = np.random.default_rng((seed, 11))
  split = [[split_word(w) for w in s.split()] for s in sentences]
  out = []
  for _ in range(copies):
    for parts in split:
      options = [i for i, (_, core, _) in enumerate(parts) if neighbours.get(core.lower())]
      chosen = [i for i in options if rng.random() < replace_prob]
      if options and not chosen:
        chosen = [options[rng.integers(len(options))]]
      words = [lead + core + trail for lead, core, trail in parts]
      for i in chosen:
        lead, core, trail = parts[i]
        cands = neighbours[core.lower()]
        new = cands[rng.integers(len(cands))]
        if core[:1].isupper():
          new = new[:1].upper() + new[1:]
        words[i] = lead + new + trail
      out.append(' '.join(words))
  return out
