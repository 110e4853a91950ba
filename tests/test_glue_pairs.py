"""GLUE sentence-pair tasks (MRPC, RTE, WNLI) and STS-B regression: reading the files as they
come, pair encoding, regression loss and distillation, metrics, submission files, predict."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bitmaps_jax import cli
from bitmaps_jax.errors import UserError
from bitmaps_jax.model import bert
from bitmaps_jax.tasks.glue import data as glue_data
from bitmaps_jax.tasks.glue import distill, evaluate
from bitmaps_jax.train import metrics
from conftest import write_pair_glue_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
TASK_DIRS = {'mrpc': 'MRPC', 'rte': 'RTE', 'stsb': 'STS-B', 'wnli': 'WNLI'}


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        env=ENV)


@pytest.fixture
def pair_config(tmp_path):
  """configs/glue.py:<task>,tiny on small pair-task files and a vocabulary in tmp_path."""
  from configs import glue
  from bitmaps_jax.tasks.mlm import data as mlm_data
  vocab = mlm_data.train_wordpiece_vocab(['the cat dog sees a ball runs big red house "'], 64,
                                         str(tmp_path / 'vocab.txt'))

  def make(task, **changes):
    write_pair_glue_dir(tmp_path / 'glue')
    config = glue.get_config(f'{task},tiny')
    config.tokenizer = vocab
    config.data_dir = str(tmp_path / 'glue')
    config.max_seq_length = 24
    config.update(changes)
    return config

  return make


def test_pair_tasks_are_table_entries():
  for name, tfds_name, metric in [('mrpc', 'glue/mrpc', ('f1', 'accuracy')),
                                  ('rte', 'glue/rte', ('accuracy',)),
                                  ('stsb', 'glue/stsb', ('pearson', 'spearman')),
                                  ('wnli', 'glue/wnli', ('accuracy',))]:
    task = glue_data.get_task(name)
    assert task.is_pair and task.tfds_name == tfds_name and task.metrics == metric
    assert task.submission_file == f'{TASK_DIRS[name]}.tsv'
  assert glue_data.TASKS['stsb'].is_regression and glue_data.TASKS['stsb'].num_labels == 1
  assert glue_data.TASKS['rte'].labels == ('entailment', 'not_entailment')
  assert not glue_data.TASKS['cola'].is_pair and glue_data.TASKS['cola'].primary_metric == 'mcc'


def test_pair_files_are_read_as_they_come(tmp_path):
  """MRPC's byte-order mark, RTE's CRLF line ends, quote characters inside sentences."""
  written = write_pair_glue_dir(tmp_path)
  for name, dir_name in TASK_DIRS.items():
    task = glue_data.TASKS[name]
    pairs, labels = written[dir_name]
    ex = glue_data.load_split(task, 'train', data_dir=str(tmp_path))
    assert list(zip(ex.sentences, ex.sentences2)) == pairs
    assert any('"' in s for s in ex.sentences + ex.sentences2)
    if task.is_regression:
      assert ex.labels.dtype == np.float32
      np.testing.assert_allclose(ex.labels, labels, rtol=1e-6)
    else:
      assert ex.labels.tolist() == [task.labels.index(str(l)) for l in labels]
    test = glue_data.load_split(task, 'test', data_dir=str(tmp_path))
    assert (test.labels == -1).all() and test.idx.tolist() == list(range(10))
    assert test.sentences2 == [b for _, b in pairs[:10]]
  # The real MRPC files start with a byte-order mark; so does this one.
  assert (tmp_path / 'MRPC' / 'train.tsv').read_bytes().startswith(b'\xef\xbb\xbfQuality')
  assert b'\r\n' in (tmp_path / 'RTE' / 'dev.tsv').read_bytes()


def _rows(path):
  return path.read_text(encoding='utf-8').splitlines()


@pytest.mark.parametrize('task,line,message', [
    ('rte', '5\tone\ttwo', 'RTE/train.tsv:4: expected 4 tab-separated columns, got 3'),
    ('rte', '5\tone\ttwo\tneutral', "RTE/train.tsv:4: unknown label 'neutral' "
     "(expected entailment or not_entailment)"),
    ('mrpc', '2\t1\t2\tone\ttwo', "MRPC/train.tsv:4: unknown label '2' (expected 0 or 1)"),
    ('wnli', '5\tone\t\t1', 'WNLI/train.tsv:4: empty sentence'),
    ('stsb', '\t'.join(['9', 'g', 'f', 'y', 'o', 's', 's', 'one', 'two', 'high']),
     "STS-B/train.tsv:4: score 'high' is not a number"),
    ('stsb', '\t'.join(['9', 'g', 'f', 'y', 'o', 's', 's', 'one', 'two', '5.2']),
     'STS-B/train.tsv:4: score 5.2 is outside 0..5'),
    ('stsb', '\t'.join(['9', 'g', 'f', 'y', 'o', 's', 's', 'one', 'two', 'nan']),
     'STS-B/train.tsv:4: score nan is outside 0..5'),
])
def test_bad_pair_rows_are_one_line_naming_file_and_line(tmp_path, capsys, pair_config, task,
                                                         line, message):
  config = pair_config(task)
  path = tmp_path / 'glue' / TASK_DIRS[task] / 'train.tsv'
  rows = _rows(path)
  rows[3] = line
  path.write_text('\n'.join(rows) + '\n', encoding='utf-8')
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.train(config, str(tmp_path / 'run'))
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error: ') and err[0].endswith(message), err
  # Nothing was written for the failed run.
  assert not os.path.exists(tmp_path / 'run' / 'config.json')
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_pair_header_without_a_column_is_named(tmp_path):
  write_pair_glue_dir(tmp_path)
  path = tmp_path / 'RTE' / 'dev.tsv'
  rows = _rows(path)
  rows[0] = 'index\tpremise\tsentence2\tlabel'
  path.write_text('\n'.join(rows) + '\n')
  with pytest.raises(UserError, match=r"dev.tsv:1: header .* has no column 'sentence1'"):
    glue_data.load_split(glue_data.TASKS['rte'], 'validation', data_dir=str(tmp_path))


def _tokenizer(tmp_path):
  from bitmaps_jax.tasks.mlm import data as mlm_data
  from bitmaps_jax.tasks.tokenizer import load_tokenizer
  return load_tokenizer(mlm_data.train_wordpiece_vocab(
      ['the cat dog sees a ball runs big red house'], 64, str(tmp_path / 'vocab.txt')))


def test_pairs_are_encoded_as_bert_reads_them(tmp_path):
  tok = _tokenizer(tmp_path)
  ids_of = lambda s: tok.convert_tokens_to_ids(s.split())
  cls, sep = tok.cls_token_id, tok.sep_token_id
  ex = glue_data.Examples(['the cat runs', 'a big red house sees the dog'],
                          np.zeros(2, np.int32), np.arange(2), ['a ball', 'the dog'])
  ids, types = glue_data.encode(ex, tok, 9)
  assert ids[0].tolist() == [cls, *ids_of('the cat runs'), sep, *ids_of('a ball'), sep]
  assert types[0].tolist() == [0] * 5 + [1] * 3
  # Longest first: the 7-word first sentence loses words until the pair fits in 9.
  assert ids[1].tolist() == [cls, *ids_of('a big red house'), sep, *ids_of('the dog'), sep]
  assert types[1].tolist() == [0] * 6 + [1] * 3
  # A single sentence is one segment, type 0.
  single, single_types = glue_data.encode(glue_data.Examples(['the cat'], np.zeros(1, np.int32),
                                                             np.arange(1)), tok, 9)
  assert single[0].tolist() == [cls, *ids_of('the cat'), sep] and not single_types[0].any()


def test_length_bucketing_uses_the_pair_length_and_keeps_token_types(tmp_path):
  tok = _tokenizer(tmp_path)
  rng = np.random.default_rng(0)
  words = 'the cat dog sees a ball runs big red house'.split()
  sent = lambda k: ' '.join(rng.choice(words, size=k))
  # Short first sentences, second sentences of very different lengths: only the pair's
  # length tells which batches are long.
  ex = glue_data.Examples([sent(2) for _ in range(64)], np.zeros(64, np.int32), np.arange(64),
                          [sent(int(rng.integers(1, 40))) for _ in range(64)])
  ids, types = glue_data.encode(ex, tok, 64)
  batches = glue_data.TrainBatches(ids, ex.labels, 16, 64, seed=0, pool=4, token_types=types)
  for step in range(4):
    b = batches.batch(step)
    lengths = b['attention_mask'].sum(1)
    assert b['input_ids'].shape[1] == glue_data.bucket_length(int(lengths.max()), 64)
    for row, n in zip(range(16), lengths):
      # Type 1 from just after the first [SEP] to the last real token, 0 on padding.
      first_sep = int(np.flatnonzero(b['input_ids'][row] == tok.sep_token_id)[0])
      assert b['token_type_ids'][row, :first_sep + 1].sum() == 0
      assert (b['token_type_ids'][row, first_sep + 1:n] == 1).all()
      assert b['token_type_ids'][row, n:].sum() == 0
  # Sorted in pools of 4 batches: the batches differ in length (bucketed), not all padded to 64.
  assert len({batches.batch(s)['input_ids'].shape[1] for s in range(4)}) > 1


def test_regression_losses_and_correlations():
  out = np.array([[1.0], [2.0], [4.0]], np.float32)
  np.testing.assert_allclose(distill.squared_error(out, np.array([1.0, 3.0, 2.0])),
                             [0.0, 1.0, 4.0])
  x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 10.0])
  assert metrics.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
  assert metrics.spearman(x, y) == pytest.approx(0.8)  # ranks 1 2 3 4 vs 1 3 2 4
  assert metrics.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(
      np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])  # ties share their mean rank
  rng = np.random.default_rng(0)
  t = rng.uniform(0, 5, 400)
  p = t + rng.normal(0, 1.0, 400)
  for key in ('pearson', 'spearman'):
    value = metrics.CORRELATIONS[key](p, t)
    lo, hi = metrics.correlation_interval(p, t, key)
    assert lo < value < hi and 0.02 < hi - lo < 0.2
    assert metrics.correlation_interval(p, t, key) == (lo, hi)  # seeded
    # Resampling the pairs by hand gives the same spread.
    rows = rng.integers(0, 400, (300, 400))
    by_hand = np.quantile([metrics.CORRELATIONS[key](p[r], t[r]) for r in rows],
                          [0.025, 0.975])
    np.testing.assert_allclose((lo, hi), by_hand, atol=0.015)


def test_f1_and_its_bootstrap_range():
  labels = np.array([1, 1, 1, 0, 0, 1, 0, 1])
  preds = np.array([1, 0, 1, 1, 0, 1, 0, 1])
  # tp 4, fp 1, fn 1: F1 = 8 / 10
  assert metrics.f1_score(labels, preds) == pytest.approx(0.8)
  assert metrics.f1_score([0, 0], [0, 0]) == 0.0
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 500)
  preds = np.where(rng.random(500) < 0.8, labels, 1 - labels)
  confusion = metrics.confusion_matrix(labels, preds, 2)
  lo, hi = metrics.bootstrap_interval(confusion, 'f1')
  assert lo < metrics.f1_score(labels, preds) < hi and hi - lo < 0.12


def test_sts_b_submission_is_clipped_to_the_score_range():
  task = glue_data.TASKS['stsb']
  rows = evaluate.submission_rows(task, np.array([2, 0, 1]),
                                  np.array([[5.7], [-0.4], [2.34567]], np.float32))
  assert rows == [(0, '0.000'), (1, '2.346'), (2, '5.000')]
  rte = evaluate.submission_rows(glue_data.TASKS['rte'], np.array([0, 1]),
                                 np.array([[0.1, 0.9], [2.0, -1.0]]))
  assert rte == [(0, 'not_entailment'), (1, 'entailment')]


def test_sts_b_teacher_student_eval_and_submission(tmp_path, pair_config):
  """A regression teacher, a binary student distilled from it (squared error to the
  teacher's output), eval.py with Pearson and Spearman ranges, the clipped submission."""
  teacher_dir, student_dir = str(tmp_path / 'teacher'), str(tmp_path / 'student')
  teacher = cli.train(pair_config('stsb', binarize={'layers': False}), teacher_dir)
  assert {'pearson', 'spearman', 'loss'} <= set(teacher) and 'accuracy' not in teacher
  student_cfg = pair_config('stsb', teacher_checkpoint=teacher_dir, tokenizer='')
  cli.train(student_cfg, student_dir)
  points = [json.loads(l) for l in open(os.path.join(student_dir, 'metrics.jsonl'))]
  train_points = [p for p in points if 'kd' in p]
  assert train_points and {'mse', 'kd', 'hidden_mse'} <= set(train_points[0])
  out = _run('eval.py', f'--workdir={student_dir}')
  assert out.returncode == 0, out.stderr
  for key in ('pearson', 'spearman'):
    line = next(l for l in out.stdout.splitlines() if l.strip().startswith(key))
    assert '95% range over resampled examples' in line, out.stdout
  result = json.load(open(os.path.join(student_dir, 'eval_validation.json')))
  lo, hi = result['pearson_interval95']
  assert -1.0 <= lo <= result['pearson'] <= hi <= 1.0 and 'spearman_interval95' in result
  out = _run('eval.py', f'--workdir={student_dir}', '--split=test')
  assert out.returncode == 0, out.stderr
  rows = open(os.path.join(student_dir, 'STS-B.tsv')).read().splitlines()
  assert rows[0] == 'index\tprediction' and len(rows) == 11
  assert all(0.0 <= float(r.split('\t')[1]) <= 5.0 for r in rows[1:])
  # A classification teacher cannot teach a regression student.
  mrpc_teacher = str(tmp_path / 'mrpc-teacher')
  cli.train(pair_config('mrpc', binarize={'layers': False}, num_epochs=1.0), mrpc_teacher)
  with pytest.raises(SystemExit) as e:
    cli.train(pair_config('stsb', teacher_checkpoint=mrpc_teacher, tokenizer=''),
              str(tmp_path / 'bad'))
  assert e.value.code == 2


def test_regression_distillation_is_zero_when_student_equals_teacher():
  cfg = bert.sized_config('tiny', architecture='BertForSequenceClassification', num_labels=1)
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  ids = np.random.default_rng(0).integers(5, cfg.vocab_size, (3, 8))
  out = bert.build_model(cfg).apply({'params': params}, ids, np.ones_like(ids))
  assert out.shape == (3, 1)
  np.testing.assert_array_equal(distill.squared_error(out, out[:, 0]), 0.0)


def test_mrpc_and_rte_eval_submission_and_predict_on_pairs(tmp_path, pair_config):
  mrpc_dir, rte_dir = str(tmp_path / 'mrpc'), str(tmp_path / 'rte')
  result = cli.train(pair_config('mrpc', binarize={'layers': False}), mrpc_dir)
  assert {'f1', 'accuracy'} <= set(result)
  out = _run('eval.py', f'--workdir={mrpc_dir}')
  assert out.returncode == 0, out.stderr
  for key in ('f1', 'accuracy'):
    line = next(l for l in out.stdout.splitlines() if l.strip().startswith(key))
    assert '95% range over resampled examples' in line, out.stdout
  saved = json.load(open(os.path.join(mrpc_dir, 'eval_validation.json')))
  assert 'f1_interval95' in saved and 'accuracy_interval95' in saved

  cli.train(pair_config('rte', num_epochs=1.0), rte_dir)
  out = _run('eval.py', f'--workdir={rte_dir}', '--split=test')
  assert out.returncode == 0, out.stderr
  rows = open(os.path.join(rte_dir, 'RTE.tsv')).read().splitlines()
  assert rows[0] == 'index\tprediction' and len(rows) == 11
  assert {r.split('\t')[1] for r in rows[1:]} <= {'entailment', 'not_entailment'}

  # predict on pairs, given on the command line or as a two-column TSV (CRLF, quotes).
  packed = str(tmp_path / 'mrpc.bmp')
  out = _run('-m', 'bitmaps_jax', 'export', mrpc_dir, packed, '--float_dtype=float32')
  assert out.returncode == 0, out.stderr
  vocab = os.path.join(mrpc_dir, 'vocab.txt')
  out = _run('-m', 'bitmaps_jax', 'predict', packed, f'--vocab={vocab}', '--pairs',
             'the cat runs', 'the dog runs', 'a red house', 'big " ball')
  assert out.returncode == 0, out.stderr
  lines = [l.split('\t') for l in out.stdout.strip().splitlines()]
  assert [l[1:] for l in lines] == [['the cat runs', 'the dog runs'],
                                    ['a red house', 'big " ball']]
  assert all(l[0] in ('0', '1') for l in lines)
  pairs_tsv = tmp_path / 'pairs.tsv'
  pairs_tsv.write_bytes(b'\xef\xbb\xbfthe cat runs\tthe dog runs\r\na red house\tbig " ball\r\n')
  out = _run('-m', 'bitmaps_jax', 'predict', packed, f'--vocab={vocab}', f'--tsv={pairs_tsv}')
  assert out.returncode == 0, out.stderr
  assert [l.split('\t') for l in out.stdout.strip().splitlines()] == lines
  # The model sees the pair as a pair: the same predictions as eval.py's batches would give.
  from bitmaps_jax.model.packed import PackedModel
  from bitmaps_jax.tasks.tokenizer import load_tokenizer
  from bitmaps_jax.tools import predict
  model, tok = PackedModel.load(packed), load_tokenizer(vocab)
  ex = glue_data.Examples(['the cat runs'], np.zeros(1, np.int32), np.arange(1),
                          ['the dog runs'])
  ids, types = glue_data.encode(ex, tok, 128)
  logits = np.asarray(model(ids[0][None], np.ones_like(ids[0])[None], types[0][None]))
  assert predict.predict(model, tok, ['the cat runs'], 128, ['the dog runs'])[0][1] == int(
      np.argmax(logits[0]))
  swapped = np.asarray(model(ids[0][None], np.ones_like(ids[0])[None],
                             np.zeros_like(types[0])[None]))
  assert not np.allclose(logits, swapped)  # token types reach the model
  # Bad pair files and odd sentence counts: one line each.
  pairs_tsv.write_text('one\ttwo\nonly one\n')
  out = _run('-m', 'bitmaps_jax', 'predict', packed, f'--vocab={vocab}', f'--tsv={pairs_tsv}')
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      f'error: {pairs_tsv}:2: expected 2 tab-separated columns (a sentence pair), got 1']
  out = _run('-m', 'bitmaps_jax', 'predict', packed, f'--vocab={vocab}', '--pairs', 'a', 'b',
             'c')
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      'error: --pairs needs sentences two at a time, got 3']
