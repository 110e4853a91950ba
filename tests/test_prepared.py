"""The prepared MLM corpus: preparation (resumable), O(batch) order, per-host masking."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from bitmaps_jax import cli
from bitmaps_jax.errors import UserError
from bitmaps_jax.tasks.mlm import batches as mlm_batches
from bitmaps_jax.tasks.mlm import data as mlm_data
from bitmaps_jax.tasks.mlm import prepared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('n', [1, 2, 7, 64, 1000, 4097])
def test_feistel_is_a_permutation_that_depends_on_seed_and_epoch(n):
  p = mlm_batches.FeistelPermutation(n, seed=3, epoch=0)
  out = p(np.arange(n))
  assert sorted(out.tolist()) == list(range(n))
  if n >= 64:
    other = mlm_batches.FeistelPermutation(n, seed=3, epoch=1)(np.arange(n))
    assert (out != other).mean() > 0.5 and (out != np.arange(n)).mean() > 0.5
    # Any slice of positions is computed on its own, with the same values.
    np.testing.assert_array_equal(p(np.arange(10, 20)), out[10:20])


def _spec(vocab=100):
  return mlm_batches.MaskingSpec(vocab_size=vocab, mask_token_id=4, special_ids=(0, 1, 2, 3, 4),
                              mask_prob=0.15, max_predictions=5)


def test_masks_are_a_function_of_the_global_row_not_of_the_host_split():
  rng = np.random.default_rng(0)
  windows = rng.integers(5, 100, (8, 32)).astype(np.int32)
  windows[:, 0], windows[:, -1] = 2, 3  # [CLS] ... [SEP]
  rows = np.arange(8) + 40
  whole = mlm_batches.mask_rows(windows, _spec(), seed=1, step=7, rows=rows)
  halves = [mlm_batches.mask_rows(windows[i:i + 4], _spec(), 1, 7, rows[i:i + 4]) for i in (0, 4)]
  for k, v in whole.items():
    np.testing.assert_array_equal(v, np.concatenate([h[k] for h in halves]), err_msg=k)
  assert (whole['masked_positions'] > 0).all() and (whole['masked_positions'] < 31).all()
  changed = whole['input_ids'] != windows
  assert changed.sum() <= 8 * 5 and changed.sum() >= 8 * 5 * 0.6  # ~90% of picks change
  again = mlm_batches.mask_rows(windows, _spec(), seed=1, step=8, rows=rows)
  assert (again['masked_positions'] != whole['masked_positions']).any()


@pytest.fixture
def corpus_files(tmp_path):
  docs = mlm_data.builtin_documents(300)
  text = tmp_path / 'corpus.txt'
  text.write_text('\n'.join(docs) + '\n')
  vocab = mlm_data.train_wordpiece_vocab(docs, 128, str(tmp_path / 'vocab.txt'))
  return docs, vocab


def test_interrupted_preparation_is_not_accepted_and_finishes_on_rerun(tmp_path, corpus_files):
  docs, vocab = corpus_files
  full = prepared.prepare(docs, vocab, str(tmp_path / 'full'), 32, docs_per_shard=50,
                          validation_documents=30, processes=2, progress=lambda m: None)
  seen = []

  def stop_after_two(message):
    seen.append(message)
    if len(seen) == 2:
      raise KeyboardInterrupt

  cut = str(tmp_path / 'cut')
  with pytest.raises(KeyboardInterrupt):
    prepared.prepare(docs, vocab, cut, 32, 50, 30, processes=2, progress=stop_after_two)
  with pytest.raises(UserError, match='interrupted'):
    prepared.PreparedCorpus(cut)
  done = json.load(open(os.path.join(cut, 'progress.json')))['shards']
  assert len(done) == 2
  again = prepared.prepare(docs, vocab, cut, 32, 50, 30, processes=2, progress=lambda m: None)
  assert again['shards'] == full['shards']
  a, b = prepared.PreparedCorpus(str(tmp_path / 'full')), prepared.PreparedCorpus(cut)
  np.testing.assert_array_equal(a.train.take(np.arange(len(a.train))),
                                b.train.take(np.arange(len(b.train))))
  assert a.manifest['stats']['documents'] == 300 and len(a.valid) > 0
  messages = []
  prepared.prepare(docs, vocab, cut, 32, 50, 30, processes=2, progress=messages.append)
  assert messages == [f'{cut}: already prepared ({full["stats"]["windows"]} windows)']
  with pytest.raises(UserError, match=r'already prepared with other settings: max_seq_length '
                                      r'32 \(asked 64\); use another directory'):
    prepared.prepare(docs, vocab, cut, 64, 50, 30, processes=2, progress=lambda m: None)
  other = mlm_data.train_wordpiece_vocab(docs, 100, str(tmp_path / 'other.txt'))
  with pytest.raises(UserError, match=r'other settings: vocab_sha256 .*\(asked'):
    prepared.prepare(docs, other, cut, 32, 50, 30, processes=2, progress=lambda m: None)
  with pytest.raises(UserError, match='other settings'):
    os.remove(os.path.join(cut, 'manifest.json'))
    prepared.prepare(docs, vocab, cut, 64, 50, 30, processes=2, progress=lambda m: None)


def test_batches_resume_exactly_and_split_over_hosts(tmp_path, corpus_files):
  docs, vocab = corpus_files
  prepared.prepare(docs, vocab, str(tmp_path / 'p'), 32, 50, 30, processes=2,
                   progress=lambda m: None)
  corpus = prepared.PreparedCorpus(str(tmp_path / 'p'))
  one = mlm_batches.MLMBatches(corpus.train, _spec(128), 8, seed=5)
  again = mlm_batches.MLMBatches(corpus.train, _spec(128), 8, seed=5)
  two = [mlm_batches.MLMBatches(corpus.train, _spec(128), 8, 5, i, 2) for i in range(2)]
  for step in (0, 3, one.steps_per_epoch + 1):
    a = one.batch(step)
    for k in a:
      np.testing.assert_array_equal(a[k], again.batch(step)[k])
      np.testing.assert_array_equal(a[k], np.concatenate([t.batch(step)[k] for t in two]))
  # One epoch visits every window at most once.
  rows = np.concatenate([np.arange(s * 8, s * 8 + 8) for s in range(one.steps_per_epoch)])
  ids = mlm_batches.FeistelPermutation(len(corpus.train), 5, 0)(rows)
  assert len(set(ids.tolist())) == len(ids)


def test_train_from_a_prepared_corpus(tmp_path, corpus_files, mlm_config, capsys):
  docs, vocab = corpus_files
  prepared.prepare(docs, vocab, str(tmp_path / 'p'), 32, 50, 30, processes=2,
                   progress=lambda m: None)
  config = mlm_config()
  config.data.source = 'prepared'
  config.data.prepared_dir = str(tmp_path / 'p')
  result = cli.train(config, str(tmp_path / 'run'))
  assert np.isfinite(result['loss'])
  assert open(tmp_path / 'run' / 'vocab.txt').read() == open(vocab).read()
  manifest = json.load(open(tmp_path / 'p' / 'manifest.json'))
  assert manifest['vocab']['size'] == len(open(vocab).read().splitlines())
  # Another vocabulary of the same size: the ids would be read as other tokens.
  other = mlm_data.train_wordpiece_vocab([d[::-1] for d in docs], 128, str(tmp_path / 'o.txt'))
  assert open(other).read() != open(vocab).read()
  config.tokenizer = other
  n = manifest['vocab']['size']
  with pytest.raises(SystemExit, match='2'):
    cli.train(config, str(tmp_path / 'run2'))
  assert re.search(rf'p: prepared with a vocabulary of {n} tokens, sha256 \w{{12}}; '
                   rf'config.tokenizer .*o.txt has \d+ tokens', capsys.readouterr().err)
  # Resuming the run on a corpus prepared with that other vocabulary.
  prepared.prepare(docs, other, str(tmp_path / 'q'), 32, 50, 30, processes=2,
                   progress=lambda m: None)
  config.tokenizer = ''
  config.data.prepared_dir = str(tmp_path / 'q')
  config.num_train_steps += 2
  with pytest.raises(SystemExit, match='2'):
    cli.train(config, str(tmp_path / 'run'))
  assert re.search(r"q: prepared with a vocabulary of \d+ tokens.*; the run's vocabulary "
                   rf".*run/vocab.txt has {n} tokens", capsys.readouterr().err)
  config.max_seq_length = 64
  with pytest.raises(SystemExit):
    cli.train(config, str(tmp_path / 'run2'))


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_preparation_in_one_line_and_a_rerun_resumes(tmp_path, corpus_files, sig):
  """Ctrl-C (the whole process group) or SIGTERM (the parent) once a shard is written: the
  workers end without a traceback, one line says how far it got, the same command finishes."""
  docs, vocab = corpus_files
  text = tmp_path / 'many.txt'
  text.write_text('\n'.join(docs * 20) + '\n')
  out = tmp_path / 'corpus'
  command = [sys.executable, '-m', 'bitmaps_jax', 'prepare_corpus', f'--vocab={vocab}',
             f'--out={out}', f'--files={text}', '--text_format=lines', '--max_seq_length=32',
             '--docs_per_shard=20', '--validation_documents=20', '--processes=2']
  proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
  for line in proc.stdout:
    if 'shards' in line:  # the first shard is written
      break
  if sig == signal.SIGINT:
    os.killpg(proc.pid, sig)  # what Ctrl-C in a terminal does
  else:
    proc.send_signal(sig)
  _, err = proc.communicate(timeout=120)
  lines = err.strip().splitlines()
  assert proc.returncode == 2, err[-3000:]
  assert len(lines) == 1 and 'preparation stopped after' in lines[0], err[-3000:]
  assert 'run the same command to resume' in lines[0]
  assert not [n for n in os.listdir(out) if '.tmp' in n]
  again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert prepared.PreparedCorpus(str(out)).manifest['stats']['documents'] == 6000
