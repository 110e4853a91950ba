"""GLUE: TSV and TFDS readers, length bucketing, distillation loss, fine-tune + eval.py."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from bitmaps_jax import cli
from bitmaps_jax.model import bert
from bitmaps_jax.tasks.glue import augment, distill
from bitmaps_jax.tasks.glue import data as glue_data
from bitmaps_jax.tasks.glue import task as finetuning
from bitmaps_jax.errors import UserError

COLA = glue_data.TASKS['cola']
SST2 = glue_data.TASKS['sst2']
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tsv_reader_good_files(tmp_path, glue_files):
  sents, labels = glue_files
  ex = glue_data.read_tsv(COLA, str(tmp_path / 'CoLA' / 'train.tsv'), 'train')
  assert ex.sentences == sents and ex.labels.tolist() == labels
  test = glue_data.read_tsv(COLA, str(tmp_path / 'CoLA' / 'test.tsv'), 'test')
  assert (test.labels == -1).all() and test.idx.tolist() == list(range(10))
  dev = glue_data.load_split(SST2, 'validation', data_dir=str(tmp_path))
  assert dev.sentences == sents and dev.labels.tolist() == labels


@pytest.mark.parametrize('content,message', [
    ('a\t1\t\tgood one\nb\t1\tonly three\n', 'bad.tsv:2: expected 4 tab-separated columns, got 3'),
    ('a\t1\t\tgood one\nb\t7\t\tbad label\n', "bad.tsv:2: unknown label '7'"),
    ('a\t1\t\tgood one\nb\tx\t\tbad label\n', "bad.tsv:2: unknown label 'x'"),
    ('a\t1\t\tgood one\na\t0\t*\t  \n', 'bad.tsv:2: empty sentence'),
    ('', 'bad.tsv: no examples'),
])
def test_tsv_reader_bad_files(tmp_path, content, message):
  path = tmp_path / 'bad.tsv'
  path.write_text(content)
  with pytest.raises(UserError) as e:
    glue_data.read_tsv(COLA, str(path), 'train')
  assert message in str(e.value) and '\n' not in str(e.value)


def test_tsv_reader_missing_split_and_bad_header(tmp_path):
  with pytest.raises(UserError, match='dev.tsv: validation split file not found'):
    glue_data.load_split(COLA, 'validation', data_dir=str(tmp_path))
  path = tmp_path / 'h.tsv'
  path.write_text('text\tlabel\nfine\t1\n')
  with pytest.raises(UserError, match='h.tsv:1: header'):
    glue_data.read_tsv(SST2, str(path), 'train')


def test_tfds_loader_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    ex = glue_data.load_split(COLA, 'validation')
  assert len(ex.sentences) == 12 and all(isinstance(s, str) for s in ex.sentences)
  assert set(ex.labels.tolist()) <= {0, 1} and len(ex.idx) == 12


def test_length_bucketing_pads_to_short_buckets():
  rng = np.random.default_rng(0)
  ids = [np.arange(rng.integers(3, 60), dtype=np.int32) for _ in range(256)]
  labels = np.zeros(256, np.int32)
  bucketed = glue_data.TrainBatches(ids, labels, 16, 128, seed=0, bucketing=True, pool=8)
  plain = glue_data.TrainBatches(ids, labels, 16, 128, seed=0, bucketing=False)
  b_lens = [bucketed.batch(s)['input_ids'].shape[1] for s in range(16)]
  assert all(l % 16 == 0 and l <= 64 for l in b_lens) and np.mean(b_lens) < 64
  assert {plain.batch(s)['input_ids'].shape[1] for s in range(16)} == {128}
  # Every example appears exactly once per epoch, and padding is masked out.
  seen = sorted(int(m.sum()) for s in range(16) for m in bucketed.batch(s)['attention_mask'])
  assert seen == sorted(len(t) for t in ids)
  # pool=1: batches of random lengths, each padded only to its own longest row (rounded to 16).
  unsorted = glue_data.TrainBatches(ids, labels, 16, 128, seed=0, bucketing=True, pool=1)
  for s in range(16):
    b = unsorted.batch(s)
    longest = int(b['attention_mask'].sum(1).max())
    assert b['input_ids'].shape[1] == glue_data.bucket_length(longest, 128)
  spread = [np.ptp(unsorted.batch(s)['attention_mask'].sum(1)) for s in range(16)]
  assert np.mean(spread) > 30  # lengths 3-59 mixed in each batch, not sorted together
  with pytest.raises(UserError, match='bucket_pool must be at least 1'):
    glue_data.TrainBatches(ids, labels, 16, 128, seed=0, pool=0)


def test_distillation_loss_is_zero_when_student_equals_teacher():
  cfg = bert.sized_config('tiny', architecture='BertForSequenceClassification')
  params = bert.init_params(cfg, jax.random.PRNGKey(0))
  model = bert.build_model(cfg)
  ids = np.random.default_rng(0).integers(5, cfg.vocab_size, (4, 12))
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  logits, out = model.apply({'params': params}, ids, mask, output_hidden_states=True)
  kd = distill.kl_divergence(logits, logits, 2.0)
  mse = distill.hidden_mse(out.hidden_states, out.hidden_states, mask)
  np.testing.assert_allclose(kd, 0.0, atol=1e-6)
  np.testing.assert_array_equal(mse, 0.0)
  _, inter = model.apply({'params': params}, ids, mask, mutable=['intermediates'])
  att = distill.attention_logits(inter['intermediates'])
  assert len(att) == cfg.num_hidden_layers and att[0].shape == (4, 2, 12, 12)
  att_kl = distill.attention_kl(att, att, mask)
  assert att_kl.shape == (4,)
  np.testing.assert_allclose(att_kl, 0.0, atol=1e-6)
  other = bert.init_params(cfg, jax.random.PRNGKey(1))
  logits2, out2 = model.apply({'params': other}, ids, mask, output_hidden_states=True)
  assert (distill.kl_divergence(logits2, logits, 2.0) > 0).all()
  assert (distill.hidden_mse(out2.hidden_states, out.hidden_states, mask) > 0).all()
  _, inter2 = model.apply({'params': other}, ids, mask, mutable=['intermediates'])
  att2 = distill.attention_logits(inter2['intermediates'])
  assert (distill.attention_kl(att2, att, mask) > 0).all()
  # Padded keys carry no weight: changing the scores there changes nothing.
  moved = [a.at[1, :, :, 6:].add(5.0) for a in att2]
  np.testing.assert_allclose(distill.attention_kl(moved, att, mask),
                             distill.attention_kl(att2, att, mask), rtol=1e-6)


def test_finetune_distill_and_eval_cli(tmp_path, glue_config):
  teacher_dir, student_dir = str(tmp_path / 'teacher'), str(tmp_path / 'student')
  teacher = cli.train(glue_config(binarize={'layers': False}), teacher_dir)
  assert {'mcc', 'accuracy', 'pred_frac_0', 'pred_frac_1'} <= set(teacher)
  student_cfg = glue_config(teacher_checkpoint=teacher_dir)
  student_cfg.tokenizer = ''  # taken from the teacher run
  student_cfg.keep_checkpoints = 2  # one per epoch, both kept
  cli.train(student_cfg, student_dir)
  points = [json.loads(l) for l in open(os.path.join(student_dir, 'metrics.jsonl'))]
  assert {'kd', 'hidden_mse', 'ce'} <= set(points[0])

  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  for split in ('validation', 'test'):
    out = subprocess.run([sys.executable, 'eval.py', f'--workdir={student_dir}',
                          f'--split={split}'], cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert 'predicted labels' in out.stdout
    assert ('95% range over resampled examples' in out.stdout) == (split == 'validation')
  result = json.load(open(os.path.join(student_dir, 'eval_validation.json')))
  assert 'confusion_matrix' in result and sum(result['predicted_label_counts']) == 48
  lo, hi = result['mcc_interval95']
  assert -1.0 <= lo <= result['mcc'] <= hi <= 1.0
  rows = open(os.path.join(student_dir, 'CoLA.tsv')).read().splitlines()
  assert rows[0] == 'index\tprediction' and len(rows) == 11
  # --config overrides reach the evaluation; a bad data_dir is one line.
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={student_dir}',
                        '--config.data_dir=/nonexistent'], cwd=REPO, capture_output=True,
                       text=True, env=env)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      'error: /nonexistent/CoLA/dev.tsv: validation split file not found']

  # Any labelled TSV laid out like the dev file.
  dev_copy = tmp_path / 'other_dev.tsv'
  dev_copy.write_text(open(os.path.join(student_cfg.data_dir, 'CoLA', 'dev.tsv')).read())
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={student_dir}',
                        f'--split={dev_copy}'], cwd=REPO, capture_output=True, text=True, env=env)
  assert out.returncode == 0, out.stderr
  other = json.load(open(os.path.join(student_dir, 'eval_other_dev.json')))
  assert other['accuracy'] == result['accuracy']

  # An earlier saved step, written beside (not over) the latest's results; a step that was
  # not saved is one line naming the saved ones.
  steps = sorted(int(d) for d in os.listdir(os.path.join(student_dir, 'checkpoints'))
                 if d.isdigit())
  assert len(steps) == 2 and result['checkpoint_step'] == steps[1]
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={student_dir}',
                        f'--step={steps[0]}'], cwd=REPO, capture_output=True, text=True, env=env)
  assert out.returncode == 0, out.stderr
  assert f'checkpoint step {steps[0]}' in out.stdout
  earlier = json.load(open(os.path.join(student_dir, f'eval_validation_step{steps[0]}.json')))
  assert earlier['checkpoint_step'] == steps[0]
  assert json.load(open(os.path.join(student_dir, 'eval_validation.json'))) == result
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={student_dir}', '--step=999'],
                       cwd=REPO, capture_output=True, text=True, env=env)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f'error: {student_dir}/checkpoints: no checkpoint of step 999 '
      f'(saved steps: {steps[0]}, {steps[1]})']
  out = subprocess.run([sys.executable, 'eval.py', f'--workdir={student_dir}',
                        f'--step={steps[0]}', '--packed=model.bmp'], cwd=REPO,
                       capture_output=True, text=True, env=env)
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      'error: --step and --packed: a packed file holds one model; evaluate either a '
      'checkpoint step or the file']

  # The packed file: exported, evaluated from its bits (same predictions as the checkpoint,
  # which has float32 weights only where the file keeps 16 bits), and run on sentences.
  packed = str(tmp_path / 'student.bmp')
  run = lambda *args: subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                                     text=True, env=env)
  out = run('-m', 'bitmaps_jax', 'export', student_dir, packed, '--float_dtype=float32')
  assert out.returncode == 0 and 'bytes' in out.stdout, out.stderr
  out = run('eval.py', f'--workdir={student_dir}', f'--packed={packed}')
  assert out.returncode == 0, out.stderr
  from_bits = json.load(open(os.path.join(student_dir, 'eval_validation_packed.json')))
  assert from_bits['predicted_label_counts'] == result['predicted_label_counts']
  assert from_bits['accuracy'] == pytest.approx(result['accuracy'])
  out = run('-m', 'bitmaps_jax', 'predict', packed, '--vocab',
            os.path.join(student_dir, 'vocab.txt'), 'the cat runs', 'a red house')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert [l.split('\t')[1] for l in lines] == ['the cat runs', 'a red house']
  assert all(l.split('\t')[0] in ('0', '1') for l in lines)
  # Sentences from standard input, in batches of one: the same predictions, and the rate.
  out = subprocess.run([sys.executable, '-m', 'bitmaps_jax', 'predict', packed, '--vocab',
                        os.path.join(student_dir, 'vocab.txt'), '--input=-', '--batch=1'],
                       cwd=REPO, capture_output=True, text=True, env=env,
                       input='the cat runs\r\n\na red house\n')
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip().splitlines() == lines
  assert re.search(r'^2 examples in [\d.]+ s of model time \([\d.]+ examples/s, kernel '
                   r'(ffi|xla)', out.stderr, re.M), out.stderr


def test_perturbed_copies_are_seeded_edits_of_corpus_words():
  sents = ['the cat sees a ball', 'dog runs', 'big']
  copies = augment.perturbed_copies(sents, 3, 2, seed=0)
  assert copies == augment.perturbed_copies(sents, 3, 2, seed=0)
  assert copies != augment.perturbed_copies(sents, 3, 2, seed=1)
  assert len(copies) == 9
  vocab = {w for s in sents for w in s.split()}
  for original, copy in zip(sents * 3, copies):
    words = copy.split()
    assert words and set(words) <= vocab
    assert abs(len(words) - len(original.split())) <= 2  # at most two edits
  assert sum(c != s for c, s in zip(copies, sents * 3)) >= 6
  with pytest.raises(UserError, match='augment.copies must be >= 0'):
    augment.perturbed_copies(sents, -1, 2, seed=0)


def test_perturbed_copies_are_distilled_but_not_in_the_task_loss(tmp_path, glue_config):
  teacher_dir = str(tmp_path / 'teacher')
  cli.train(glue_config(binarize={'layers': False}, num_epochs=1.0),
               teacher_dir)
  # No teacher: copies have no label to learn from.
  with pytest.raises(UserError, match='augment.copies needs a teacher_checkpoint'):
    finetuning.build_task(glue_config(augment={'copies': 1}),
                          str(tmp_path / 'nokd'))
  cfg = glue_config(teacher_checkpoint=teacher_dir, tokenizer='',
                          augment={'copies': 2, 'max_edits': 1})
  cfg.distill.update(ce_weight=1.0, kd_weight=0.0, hidden_weight=0.0)
  task, _ = finetuning.build_task(cfg, str(tmp_path / 'student'))
  per_epoch = 3 * 48 // task.items_per_step  # originals + 2 copies, in global batches
  saved = finetuning.RunDir(str(tmp_path / 'student')).train_config()
  assert saved.num_train_steps == 2 * per_epoch and cfg.num_train_steps == 0
  labeled = sum(float(task.train_batch(s)['label_weights'].sum()) for s in range(per_epoch))
  assert labeled == 48  # each original once per pass, each copy without a gold label
  batch = task.train_batch(0)
  rng = jax.random.PRNGKey(0)
  with_labels = task.batch_metrics(task.params, dict(batch, label_weights=np.ones_like(batch['weights'])), rng,
                          False, task.frozen)
  without = task.batch_metrics(task.params, dict(batch, label_weights=np.zeros_like(batch['weights'])), rng,
                      False, task.frozen)
  assert float(with_labels['loss']) > 0 and float(without['loss']) == 0.0
  cfg.distill.kd_weight = 1.0
  task, _ = finetuning.build_task(cfg, str(tmp_path / 'student'))
  kd_only = task.batch_metrics(task.params, dict(batch, label_weights=np.zeros_like(batch['weights'])), rng,
                      False, task.frozen)
  assert float(kd_only['loss']) == pytest.approx(float(kd_only['kd'])) and kd_only['kd'] > 0
  cfg.distill.update(kd_weight=0.0, attention_weight=1.0)
  task, _ = finetuning.build_task(cfg, str(tmp_path / 'student'))
  att_only = task.batch_metrics(task.params, dict(batch, label_weights=np.zeros_like(batch['weights'])),
                       rng, False, task.frozen)
  assert float(att_only['loss']) == pytest.approx(float(att_only['attention_kl']), rel=1e-5)
  assert att_only['attention_kl'] > 0  # the binarized student attends differently
  # Copies from the teacher's word-embedding neighbours: every replacement is a vocabulary word.
  cfg.augment.update(method='neighbours', neighbours=3, replace_prob=0.5)
  task, _ = finetuning.build_task(cfg, str(tmp_path / 'student_nb'))
  tokenizer = finetuning.tokenizers.load_tokenizer(cfg.teacher_checkpoint)
  data = finetuning.load_data(cfg, tokenizer, finetuning.load_teacher(cfg, _))
  originals, copies = data.train.sentences[:48], data.train.sentences[48:]
  assert len(copies) == 96 and all(c != o for c, o in zip(copies, originals * 2))
  whole_words = {t for t in tokenizer.get_vocab() if t.isalpha()}
  assert {w for c in copies for w in c.split()} <= whole_words
  cfg.augment.method = 'synonyms'
  with pytest.raises(UserError, match="augment.method must be one of edits, neighbours, got 's"):
    finetuning.build_task(cfg, str(tmp_path / 'student_bad'))


def test_embedding_neighbours_are_the_nearest_other_whole_words():
  vocab = {'[PAD]': 0, 'cat': 1, 'dog': 2, 'car': 3, '##s': 4, '.': 5, 'kitten': 6}
  emb = np.array([[0, 0, 1], [1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [1, 0.01, 0], [1, 0, 0.01],
                  [2, 0.2, 0]], np.float32)  # cosine, not length: 'kitten' is long but close
  nb = augment.embedding_neighbours(['cat', 'car', '.', '##s', 'unknown'], vocab, emb, k=2)
  assert nb == {'cat': ['kitten', 'dog'], 'car': ['dog', 'kitten']}
  with pytest.raises(UserError, match='augment.neighbours must be >= 1'):
    augment.embedding_neighbours(['cat'], vocab, emb, k=0)


def test_neighbour_copies_replace_words_and_keep_punctuation_and_capitals():
  nb = {'cat': ['kitten'], 'runs': ['walks']}
  sents = ['The cat runs.', '"Cat" sleeps', 'nothing here']
  copies = augment.neighbour_copies(sents, 2, nb, replace_prob=1.0, seed=0)
  assert copies == ['The kitten walks.', '"Kitten" sleeps', 'nothing here'] * 2
  low = augment.neighbour_copies(sents, 50, nb, replace_prob=0.1, seed=3)
  assert low == augment.neighbour_copies(sents, 50, nb, replace_prob=0.1, seed=3)
  first = low[0::3]  # copies of 'The cat runs.': at least one word, both only sometimes
  assert all(c != 'The cat runs.' for c in first)
  assert 0 < sum(c == 'The kitten walks.' for c in first) < 25
  with pytest.raises(UserError, match=r'replace_prob must be in \(0, 1\], got 0.0'):
    augment.neighbour_copies(sents, 1, nb, replace_prob=0.0, seed=0)


def test_binary_bert_fits_64_training_sentences(tmp_path, glue_config):
  """The write-up's failed sanity check: a binary BERT (layers binarized) must be able to fit a
  small training set; it predicted one label for everything instead."""
  from conftest import write_glue_dir
  sents, labels = write_glue_dir(tmp_path / 'glue64', n=64)
  assert 0.2 < np.mean(labels) < 0.8
  config = glue_config(data_dir=str(tmp_path / 'glue64'), eval_split='train', num_epochs=60.0,
                       learning_rate=3e-3, warmup_ratio=0.05, dropout_rate=0.0,
                       per_device_batch_size=2, log_every_steps=50, bucket_pool=1,
                       binarize={'layers': True, 'granularity': 'per_channel'})
  config.eval_every_steps = config.checkpoint_every_steps = 10_000  # only at the end
  result = cli.train(config, str(tmp_path / 'run'))
  assert result['accuracy'] == 1.0, result


def test_holdout_is_a_fixed_slice_of_train_that_training_never_sees(tmp_path):
  from conftest import write_glue_dir
  write_glue_dir(tmp_path, n=48)
  cola_train = tmp_path / 'CoLA' / 'train.tsv'
  all_train = glue_data.load_split(COLA, 'train', data_dir=str(tmp_path))
  train = glue_data.load_split(COLA, 'train', data_dir=str(tmp_path), holdout_examples=8)
  held = glue_data.load_split(COLA, 'holdout', data_dir=str(tmp_path), holdout_examples=8)
  assert len(held.sentences) == 8 and len(train.sentences) == 40
  assert sorted(held.idx.tolist() + train.idx.tolist()) == sorted(all_train.idx.tolist())
  again = glue_data.load_split(COLA, 'holdout', data_dir=str(tmp_path), holdout_examples=8)
  assert again.idx.tolist() == held.idx.tolist()  # the same slice every time
  tsv = glue_data.load_split(COLA, str(cola_train))  # any TSV laid out like dev.tsv
  assert len(tsv.sentences) == 48
  with pytest.raises(UserError, match='holdout_examples'):
    glue_data.load_split(COLA, 'holdout', data_dir=str(tmp_path))
