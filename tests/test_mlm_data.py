"""MLM data: corpus readers, packing, masking statistics, deterministic batches."""

import numpy as np
import pytest

from bitmaps_jax.tasks import tokenizer
from bitmaps_jax.tasks.mlm import batches as mlm_batches
from bitmaps_jax.tasks.mlm import data as mlm_data
from bitmaps_jax.errors import UserError


def _spec(vocab=1000, p=20):
  return mlm_batches.MaskingSpec(vocab_size=vocab, mask_token_id=4, special_ids=(0, 1, 2, 3, 4),
                              max_predictions=p)


def test_masking_statistics():
  rng = np.random.default_rng(0)
  windows = rng.integers(5, 1000, size=(4000, 128)).astype(np.int32)
  windows[:, 0], windows[:, -1] = 2, 3  # [CLS], [SEP]
  spec = _spec(p=mlm_batches.num_predictions(128, 0.15))
  assert spec.max_predictions == 19  # 15% of the 126 maskable tokens
  out = mlm_batches.mask_rows(windows, spec, seed=1, step=0, rows=np.arange(len(windows)))
  pos, labels = out['masked_positions'], out['masked_labels']
  assert out['masked_weights'].all()
  # Distinct, never the special tokens at either end, labels are the original tokens.
  assert all(len(set(r)) == len(r) for r in pos)
  assert ((pos > 0) & (pos < 127)).all()
  np.testing.assert_array_equal(labels, np.take_along_axis(windows, pos, 1))
  new = np.take_along_axis(out['input_ids'], pos, 1)
  masked, kept = np.mean(new == 4), np.mean(new == labels)
  assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1 - 0.1 / 1000) < 0.01
  assert abs(1 - masked - kept - 0.1) < 0.01  # random replacements
  # Positions not chosen are untouched; the masked fraction of maskable tokens is 15%.
  untouched = np.ones_like(windows, bool)
  np.put_along_axis(untouched, pos, False, 1)
  np.testing.assert_array_equal(out['input_ids'][untouched], windows[untouched])
  assert abs(pos.shape[1] / 126 - 0.15) < 0.005


def test_masking_skips_special_tokens_and_flags_short_rows():
  windows = np.array([[2, 7, 8, 3, 0, 0, 0, 0]], np.int32)
  out = mlm_batches.mask_rows(windows, _spec(p=4), seed=0, step=0, rows=[0])
  chosen = out['masked_positions'][0][out['masked_weights'][0] > 0]
  assert set(chosen) == {1, 2}
  assert out['masked_weights'].sum() == 2


def test_batches_are_deterministic_and_split_across_processes():
  windows = mlm_batches.Windows.of(
      np.arange(64 * 16, dtype=np.int32).reshape(64, 16) % 900 + 5)
  spec = _spec(p=3)
  full = mlm_batches.MLMBatches(windows, spec, 8, seed=3)
  again = mlm_batches.MLMBatches(windows, spec, 8, seed=3)
  halves = [mlm_batches.MLMBatches(windows, spec, 8, 3, process_index=i, process_count=2)
            for i in range(2)]
  for step in (0, 5, 8, 17):  # 8 steps per epoch: crosses epochs
    a, b = full.batch(step), again.batch(step)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
      # Two processes each make their half of the same global batch.
      np.testing.assert_array_equal(a[k], np.concatenate([h.batch(step)[k] for h in halves]))
  # Each epoch visits every window once (restore the masked tokens to recover the rows).
  seen = []
  for step in range(8):
    b = full.batch(step)
    rows = b['input_ids'].copy()
    np.put_along_axis(rows, b['masked_positions'], b['masked_labels'], 1)
    seen.extend(map(tuple, rows))
  assert sorted(seen) == sorted(map(tuple, windows.take(np.arange(64))))
  assert halves[0].batch(0)['input_ids'].shape == (4, 16)
  # A window source of several blocks (a prepared corpus's shards) reads the same rows.
  array = windows.take(np.arange(64))
  blocks = mlm_batches.Windows.of(array[:10], array[10:40], array[40:])
  np.testing.assert_array_equal(blocks.take([63, 0, 12, 39, 40, 9]), array[[63, 0, 12, 39, 40, 9]])
  split = mlm_batches.MLMBatches(blocks, spec, 8, seed=3)
  for k, v in full.batch(5).items():
    np.testing.assert_array_equal(split.batch(5)[k], v)
  with pytest.raises(UserError, match='fewer than one global batch'):
    mlm_batches.MLMBatches(mlm_batches.Windows.of(array[:4]), spec, 8, 0)


def test_eval_batches_pad_the_tail():
  windows = mlm_batches.Windows.of(np.full((5, 16), 9, np.int32))
  batches = list(mlm_batches.eval_batches(windows, _spec(p=2), 4, 0))
  assert len(batches) == 2
  assert batches[1]['masked_weights'].sum() == 2  # one real row of two predictions
  # The same masks at every evaluation, and on two processes the same global batches.
  again = list(mlm_batches.eval_batches(windows, _spec(p=2), 4, 0))
  halves = [list(mlm_batches.eval_batches(windows, _spec(p=2), 4, 0, i, 2)) for i in range(2)]
  for i, batch in enumerate(batches):
    for k, v in batch.items():
      np.testing.assert_array_equal(again[i][k], v)
      np.testing.assert_array_equal(np.concatenate([h[i][k] for h in halves]), v)


def test_wikitext_and_lines_readers(tmp_path):
  wiki = tmp_path / 'wiki.tokens'
  wiki.write_text(' \n = Alpha = \n \n First line @-@ here . \n = = Part = = \n More . \n'
                  ' = Beta = \n Second . \n')
  docs = mlm_data.read_text_documents(str(wiki), 'wikitext')
  assert len(docs) == 2 and docs[0].startswith('Alpha') and 'More .' in docs[0]
  lines = tmp_path / 'docs.txt'
  lines.write_text('one doc\n\n two doc \n')
  assert mlm_data.read_text_documents(str(lines), 'lines') == ['one doc', 'two doc']


def test_corpus_errors(tmp_path):
  with pytest.raises(UserError, match='not found'):
    mlm_data.read_text_documents(str(tmp_path / 'nope.txt'), 'lines')
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n \n')
  with pytest.raises(UserError, match='empty.txt: corpus is empty'):
    mlm_data.read_text_documents(str(empty), 'lines')
  binary = tmp_path / 'bin.txt'
  binary.write_bytes(b'ok\n\xff\xfe\x00bad')
  with pytest.raises(UserError, match='bin.txt: not UTF-8'):
    mlm_data.read_text_documents(str(binary), 'lines')
  with pytest.raises(UserError, match='text_format'):
    mlm_data.read_text_documents(str(empty), 'markdown')


def test_learned_vocab_and_packing(tmp_path):
  docs = mlm_data.builtin_documents(50)
  vocab = mlm_data.train_wordpiece_vocab(docs, 120, str(tmp_path / 'vocab.txt'))
  tok = tokenizer.load_tokenizer(vocab)
  assert 5 < len(tok) <= 120 and tok.mask_token_id == 4
  windows = mlm_data.pack_windows(docs, tok, 32)
  assert windows.shape[1] == 32
  assert (windows[:, 0] == tok.cls_token_id).all() and (windows[:, -1] == tok.sep_token_id).all()
  assert (windows != tok.unk_token_id).all()
  with pytest.raises(UserError, match='fewer than one window'):
    mlm_data.pack_windows(['the cat'], tok, 32)
  with pytest.raises(UserError, match='vocab file not found'):
    tokenizer.load_tokenizer(str(tmp_path / 'missing.txt'))


def test_tfds_wikipedia_reader_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
    docs = mlm_data.read_tfds_documents('wikipedia/20230601.en', 'train', max_documents=5)
  assert len(docs) == 5 and all(isinstance(d, str) for d in docs)
