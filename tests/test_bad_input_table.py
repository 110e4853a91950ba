"""Mistakes and damage, as a user meets them through the commands: each row is a command and a
fragment of the one line it must print on stderr (exit status 2), after an optional setup that
breaks something. Nothing already saved may be lost."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--config=configs/default.py:tiny']


def _run(args, cwd=REPO):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                        env=env, timeout=600)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """A finished tiny MLM run, a finished tiny GLUE run and its data, made once."""
  root = tmp_path_factory.mktemp('runs')
  from conftest import write_glue_dir
  write_glue_dir(root / 'glue')
  mlm = root / 'mlm'
  out = _run(['train.py', *TINY, f'--workdir={mlm}'])
  assert out.returncode == 0, out.stderr[-2000:]
  from bitmaps_jax.tasks.mlm import data as mlm_data
  vocab = mlm_data.train_wordpiece_vocab(['the cat dog sees a ball runs big red house'], 64,
                                         str(root / 'vocab.txt'))
  glue = root / 'glue_run'
  glue_flags = ['--config=configs/glue.py:cola,tiny', f'--config.tokenizer={vocab}',
                f'--config.data_dir={root / "glue"}', '--config.num_epochs=1']
  out = _run(['train.py', *glue_flags, '--config.checkpoint_every_steps=2',
              '--config.keep_checkpoints=2', f'--workdir={glue}'])
  assert out.returncode == 0, out.stderr[-2000:]
  return {'root': root, 'mlm': mlm, 'glue': glue, 'glue_flags': glue_flags}


def _copy(runs, name, tmp_path):
  dst = tmp_path / name
  shutil.copytree(runs[name], dst)
  return dst


def _bad_tsv(runs, tmp_path):
  data = tmp_path / 'data'
  shutil.copytree(runs['root'] / 'glue', data)
  rows = (data / 'CoLA' / 'train.tsv').read_bytes().split(b'\n')
  rows[4] = rows[4] + b' caf\xe9'  # a Latin-1 byte
  (data / 'CoLA' / 'train.tsv').write_bytes(b'\n'.join(rows))
  return data


MOUNTS = []


def _read_only(path):
  """Makes `path` read-only, for root too: a read-only bind mount of it over itself (skips
  where mounting is not allowed); plain permissions otherwise."""
  if os.geteuid() != 0:
    for dirpath, dirnames, filenames in os.walk(path):
      for n in filenames:
        os.chmod(os.path.join(dirpath, n), 0o444)
      os.chmod(dirpath, 0o555)
    return
  ok = subprocess.run(['mount', '--bind', str(path), str(path)], capture_output=True)
  if ok.returncode:
    pytest.skip(f'cannot make a read-only directory as root here ({ok.stderr.strip()})')
  MOUNTS.append(str(path))
  subprocess.run(['mount', '-o', 'remount,ro,bind', str(path)], check=True)


@pytest.fixture(autouse=True)
def _unmount():
  yield
  while MOUNTS:
    subprocess.run(['umount', MOUNTS.pop()], capture_output=True)


# (id, setup(runs, tmp_path) -> dict of names for the command, command, fragment)
CASES = [
    ('unknown-task', lambda r, t: {},
     lambda r, t, s: ['train.py', *r['glue_flags'], '--config.task=unknown', f'--workdir={t}/x'],
     "config.task: unknown task 'unknown'"),
    ('misspelt-teacher', lambda r, t: {},
     lambda r, t, s: ['train.py', *r['glue_flags'], f'--config.teacher_checkpoint={t}/nope',
                      f'--workdir={t}/x'],
     'nope: config.teacher_checkpoint not found'),
    ('missing-init', lambda r, t: {},
     lambda r, t, s: ['train.py', *r['glue_flags'], f'--config.init_checkpoint={t}/gone',
                      f'--workdir={t}/x'],
     'gone: config.init_checkpoint not found'),
    ('non-utf8-tsv', lambda r, t: {'data': _bad_tsv(r, t)},
     lambda r, t, s: ['train.py', *r['glue_flags'], f'--config.data_dir={s["data"]}',
                      f'--workdir={t}/x'],
     'CoLA/train.tsv:5: not UTF-8 text'),
    ('workdir-is-a-file', lambda r, t: (t / 'file').write_text('x') and {},
     lambda r, t, s: ['train.py', *TINY, f'--workdir={t}/file'],
     'file: workdir is a file, not a directory'),
    ('read-only-workdir', lambda r, t: (os.makedirs(t / 'ro'), _read_only(t / 'ro')) and {},
     lambda r, t, s: ['train.py', *TINY, f'--workdir={t}/ro'],
     'ro: workdir is not writable'),
    ('export-into-missing-dir', lambda r, t: {},
     lambda r, t, s: ['-m', 'bitmaps_jax', 'export', str(r['mlm']), f'{t}/no/such/m.bmp'],
     'does not exist'),
    ('eval-without-checkpoints',
     lambda r, t: {'run': shutil.copytree(r['glue'], t / 'g', ignore=shutil.ignore_patterns(
         'checkpoints'))},
     lambda r, t, s: ['eval.py', f'--workdir={s["run"]}'],
     'checkpoints: no checkpoint to restore'),
    ('export-without-checkpoints',
     lambda r, t: {'run': shutil.copytree(r['mlm'], t / 'm', ignore=shutil.ignore_patterns(
         'checkpoints'))},
     lambda r, t, s: ['-m', 'bitmaps_jax', 'export', str(s['run']), f'{t}/m.bmp'],
     'checkpoints: no checkpoint to restore'),
    ('resume-with-other-vocab-size', lambda r, t: {'run': _copy(r, 'mlm', t)},
     lambda r, t, s: ['train.py', *TINY, '--config.data.vocab_size=500', f'--workdir={s["run"]}'],
     'config.data.vocab_size 500:'),
    ('two-flag-config-error', lambda r, t: {},
     lambda r, t, s: ['train.py', '--config.learning_rate=0.1', '--config.learnin_rate=2',
                      f'--workdir={t}/x'],
     "error: --config.learnin_rate=2: unknown config field 'learnin_rate'"),
    ('unknown-config-argument', lambda r, t: {},
     lambda r, t, s: ['train.py', '--config', 'configs/glue.py:mrcp,tiny', f'--workdir={t}/x'],
     "configs/glue.py: unknown argument 'mrcp,tiny'; expected one of cola, sst2"),
    ('missing-config-file', lambda r, t: {},
     lambda r, t, s: ['train.py', '--config', f'{t}/nope.py', '--config.seed=1',
                      f'--workdir={t}/x'],
     'cannot load the config file ([Errno 2] No such file or directory'),
    ('config-file-without-get-config', lambda r, t: (t / 'c.py').write_text('x = 1\n') and {},
     lambda r, t, s: ['train.py', f'--config={t}/c.py', f'--workdir={t}/x'],
     'c.py: the config file has no get_config() function'),
    ('misspelt-field-with-config', lambda r, t: {},
     lambda r, t, s: ['train.py', '--config', 'configs/glue.py:cola,tiny',
                      '--config.learning_rat=3', f'--workdir={t}/x'],
     "--config.learning_rat=3: unknown config field 'learning_rat'"),
    ('not-a-field-with-config', lambda r, t: {},
     lambda r, t, s: ['train.py', '--config=configs/glue.py:cola,tiny', '--config.num_labels=3',
                      f'--workdir={t}/x'],
     '--config.num_labels=3: unknown config field num_labels'),
    ('bad-field-value-with-config', lambda r, t: {},
     lambda r, t, s: ['train.py', '--config', 'configs/glue.py:cola,tiny',
                      '--config.learning_rate=abc', f'--workdir={t}/x'],
     "--config.learning_rate=abc: could not convert string to float: 'abc'"),
    ('eval-misspelt-field', lambda r, t: {'run': _copy(r, 'glue', t)},
     lambda r, t, s: ['eval.py', f'--workdir={s["run"]}', '--config.data_dri=x'],
     "--config.data_dri=x: unknown config field 'data_dri'"),
    ('rejected-config-on-a-fresh-workdir', lambda r, t: {},
     lambda r, t, s: ['train.py', *TINY, '--config.warmup_steps=50', '--config.learning_rate=7',
                      f'--workdir={t}/fresh'],
     'warmup_steps must be in [0, num_train_steps=6], got 50'),
    ('resume-with-another-task', lambda r, t: _with_sst2_train(r, t),
     lambda r, t, s: ['train.py', '--config=configs/glue.py:sst2,tiny', *r['glue_flags'][1:],
                      f'--config.data_dir={s["data"]}', f'--workdir={s["run"]}'],
     "config.task_name 'sst2': "),
    ('resume-with-another-model-size', lambda r, t: {'run': _copy(r, 'glue', t)},
     lambda r, t, s: ['train.py', *r['glue_flags'], '--config.model=mini',
                      f'--workdir={s["run"]}'],
     "config.model 'mini': "),
    ('prepare-again-with-other-settings', lambda r, t: _prepared_corpus(r, t),
     lambda r, t, s: s['command'][:-1] + ['--max_seq_length=64'],
     'already prepared with other settings: max_seq_length 32 (asked 64)'),
    ('train-on-a-corpus-of-another-vocabulary', lambda r, t: _prepared_corpus(r, t),
     lambda r, t, s: ['train.py', *TINY, '--config.data.source=prepared',
                      f'--config.data.prepared_dir={t / "corpus"}',
                      f'--config.tokenizer={_other_vocab(t)}', f'--workdir={t}/x'],
     'corpus: prepared with a vocabulary of '),
    ('every-checkpoint-damaged', lambda r, t: _damage_all(_copy(r, 'mlm', t)),
     lambda r, t, s: ['train.py', *TINY, '--config.num_train_steps=9', f'--workdir={s["run"]}'],
     'no checkpoint could be restored'),
    ('every-checkpoint-truncated',
     lambda r, t: _damage_all(_copy(r, 'mlm', t), _truncate_data_files),
     lambda r, t, s: ['train.py', *TINY, '--config.num_train_steps=9', f'--workdir={s["run"]}'],
     'no checkpoint could be restored'),
    ('export-every-checkpoint-truncated',
     lambda r, t: _damage_all(_copy(r, 'mlm', t), _truncate_data_files),
     lambda r, t, s: ['-m', 'bitmaps_jax', 'export', str(s['run']), f'{t}/m.bmp'],
     'no checkpoint could be restored'),
    ('predict-packed-config-edited',
     lambda r, t: {'file': _edited_packed(r, t, intermediate_size=80)},
     lambda r, t, s: ['-m', 'bitmaps_jax', 'predict', str(s['file']),
                      f'--vocab={r["glue"]}/vocab.txt', 'a red ball'],
     'tensor bert/encoder/layer_0/intermediate/dense/bias has shape [64], the stored config '
     'gives [80]'),
    ('eval-packed-config-edited',
     lambda r, t: {'file': _edited_packed(r, t, vocab_size=999)},
     lambda r, t, s: ['eval.py', f'--workdir={_copy(r, "glue", t)}', f'--packed={s["file"]}'],
     'tensor bert/embeddings/word_embeddings/embedding has shape ['),
    ('eval-packed-mlm-model', lambda r, t: {'run': _copy(r, 'glue', t)},
     lambda r, t, s: ['eval.py', f'--workdir={s["run"]}', f'--packed={_packed(r, "mlm")}'],
     'the file holds a BertForMaskedLM (no classifier head); cola needs a '
     'BertForSequenceClassification with num_labels 2'),
    ('eval-packed-other-num-labels',
     lambda r, t: {'file': _other_packed(r, t, num_labels=3)},
     lambda r, t, s: ['eval.py', f'--workdir={_copy(r, "glue", t)}', f'--packed={s["file"]}'],
     'the file holds a BertForSequenceClassification with num_labels 3; cola needs a '
     'BertForSequenceClassification with num_labels 2'),
    ('eval-packed-of-another-model-size',
     lambda r, t: {'file': _other_packed(r, t, hidden_size=64, intermediate_size=128)},
     lambda r, t, s: ['eval.py', f'--workdir={_copy(r, "glue", t)}', f'--packed={s["file"]}'],
     'hidden_size 64 in the file, 32 in the run; intermediate_size 128 in the file, 64 in the '
     'run)'),
    ('eval-packed-of-another-vocabulary',
     lambda r, t: {'file': _other_packed(r, t, vocab_size=100)},
     lambda r, t, s: ['eval.py', f'--workdir={_copy(r, "glue", t)}', f'--packed={s["file"]}'],
     'vocab_size 100 in the file, '),
    ('predict-vocabulary-larger-than-the-model', lambda r, t: {'vocab': _vocab(t, 600)},
     lambda r, t, s: ['-m', 'bitmaps_jax', 'predict', _packed_without_vocabulary(r, t),
                      f'--vocab={s["vocab"]}', 'a red ball'],
     'big.txt: the vocabulary has 600 tokens, the model '),
    ('predict-another-vocabulary-of-the-same-size', lambda r, t: {'vocab': _vocab(t, 44)},
     lambda r, t, s: ['-m', 'bitmaps_jax', 'predict', _packed(r, 'glue'),
                      f'--vocab={s["vocab"]}', 'a red ball'],
     'was trained with 44 tokens, sha256 738039824cab; use the vocabulary of the run'),
    ('eval-packed-trained-with-another-vocabulary',
     lambda r, t: {'file': _edited_packed(r, t, vocab={'tokens_sha256': '0' * 64})},
     lambda r, t, s: ['eval.py', f'--workdir={_copy(r, "glue", t)}', f'--packed={s["file"]}'],
     'vocabulary of 44 tokens, sha256 000000000000 in the file, 44 tokens, sha256 738039824cab '
     'in the run'),
]


def _packed(runs, name):
  """The packed file of a finished run, exported once by the `export` command."""
  path = runs['root'] / f'{name}.bmp'
  if not path.exists():
    out = _run(['-m', 'bitmaps_jax', 'export', str(runs[name]), str(path)])
    assert out.returncode == 0, out.stderr[-2000:]
  return str(path)


def _packed_without_vocabulary(runs, tmp_path):
  """The GLUE run's packed file as a file that records no vocabulary (an older export)."""
  from bitmaps_jax.model import packed
  from bitmaps_jax.train.rundir import RunDir
  path = tmp_path / 'novocab.bmp'
  packed.save_packed(*RunDir(str(runs['glue'])).load_model(), str(path))
  return str(path)


def _edited_packed(runs, tmp_path, vocab=None, **changes):
  """The GLUE run's packed file with `changes` made to its stored config (and `vocab` to its
  vocabulary record) and a checksum that matches, as a hand edit would leave it."""
  import msgpack
  import zlib
  from bitmaps_jax.model import packed
  data = open(_packed(runs, 'glue'), 'rb').read()
  payload = msgpack.unpackb(data[packed._HEADER.size:], raw=False)
  payload['config'] = json.dumps(dict(json.loads(payload['config']), **changes))
  payload['vocab'].update(vocab or {})
  body = msgpack.packb(payload, use_bin_type=True)
  path = tmp_path / 'edited.bmp'
  path.write_bytes(packed._HEADER.pack(packed.MAGIC, zlib.crc32(body), len(body)) + body)
  return path


def _other_packed(runs, tmp_path, **changes):
  """A packed classifier like the GLUE run's, with `changes` to its model config."""
  import jax
  from bitmaps_jax.model import bert, packed
  from bitmaps_jax.train.rundir import RunDir
  cfg = RunDir(str(runs['glue'])).model_config().replace(**changes)
  path = tmp_path / 'other.bmp'
  packed.save_packed(cfg, bert.init_params(cfg, jax.random.PRNGKey(0)), str(path))
  return path


def _vocab(tmp_path, size):
  specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  path = tmp_path / 'big.txt'
  path.write_text('\n'.join(specials + [f'w{i}' for i in range(size - len(specials))]) + '\n')
  return path


def _prepared_corpus(runs, tmp_path):
  text = tmp_path / 'corpus.txt'
  text.write_text('the cat sees a big red ball\nthe dog runs to the house\n' * 40)
  command = ['-m', 'bitmaps_jax', 'prepare_corpus', f'--vocab={runs["root"] / "vocab.txt"}',
             f'--out={tmp_path / "corpus"}', f'--files={text}', '--text_format=lines',
             '--processes=1', '--max_seq_length=32']
  out = _run(command)
  assert out.returncode == 0, out.stderr[-2000:]
  return {'command': command}


def _other_vocab(tmp_path):
  from bitmaps_jax.tasks.mlm import data as mlm_data
  return mlm_data.train_wordpiece_vocab(['a dog and a cat run to the red house'], 64,
                                        str(tmp_path / 'other_vocab.txt'))


def _with_sst2_train(runs, tmp_path):
  data = tmp_path / 'data'
  shutil.copytree(runs['root'] / 'glue', data)
  shutil.copy(data / 'SST-2' / 'dev.tsv', data / 'SST-2' / 'train.tsv')
  return {'data': data, 'run': _copy(runs, 'glue', tmp_path)}


def test_a_safe_change_on_resume_is_printed_and_recorded_in_the_run(runs, tmp_path):
  run = _copy(runs, 'glue', tmp_path)
  steps = json.loads((run / 'train_config.json').read_text())['num_train_steps']
  out = _run(['train.py', *runs['glue_flags'], '--config.max_seq_length=20',
              f'--config.num_train_steps={steps + 2}', f'--workdir={run}'])
  assert out.returncode == 0, out.stderr[-2000:]
  line = [l for l in out.stdout.splitlines() if l.startswith('resuming with changed settings')]
  assert len(line) == 1 and 'max_seq_length 16 -> 20' in line[0], out.stdout
  changes = [json.loads(l) for l in (run / 'config_changes.jsonl').read_text().splitlines()]
  assert changes[-1]['changes']['max_seq_length'] == [16, 20]
  assert changes[-1]['changes']['num_train_steps'] == [steps, steps + 2]


def _delete_manifests(checkpoint):
  for dirpath, _, filenames in os.walk(checkpoint):
    for n in filenames:
      if n == 'manifest.ocdbt':
        os.remove(os.path.join(dirpath, n))


def _truncate_data_files(checkpoint):
  for dirpath, _, filenames in os.walk(checkpoint):
    if os.path.basename(dirpath) == 'd' and 'ocdbt' in dirpath:
      for n in filenames:
        with open(os.path.join(dirpath, n), 'r+b') as f:
          f.truncate(100)


def _damage_all(run, damage=_delete_manifests):
  for step in os.listdir(run / 'checkpoints'):
    damage(run / 'checkpoints' / step)
  return {'run': run}


@pytest.mark.parametrize('name,setup,command,fragment', CASES, ids=[c[0] for c in CASES])
def test_one_line_error(runs, tmp_path, name, setup, command, fragment):
  state = setup(runs, tmp_path) or {}
  out = _run(command(runs, tmp_path, state))
  # Damaged checkpoints are each reported as they are set aside; the error is one line.
  err = [l for l in out.stderr.strip().splitlines() if 'damaged checkpoint (' not in l]
  assert out.returncode == 2, out.stderr[-3000:]
  assert len(err) == 1 and err[0].startswith('error: ') and fragment in err[0], err


def test_a_rejected_config_leaves_the_run_and_a_fresh_workdir_as_they_were(runs, tmp_path):
  run = _copy(runs, 'mlm', tmp_path)
  before = {n: (run / n).read_bytes() for n in os.listdir(run) if (run / n).is_file()}
  bad = ['--config.warmup_steps=50', '--config.learning_rate=7']
  out = _run(['train.py', *TINY, *bad, f'--workdir={run}'])
  assert out.returncode == 2 and 'warmup_steps must be in' in out.stderr, out.stderr[-2000:]
  assert {n: (run / n).read_bytes() for n in os.listdir(run) if (run / n).is_file()} == before
  out = _run(['train.py', *TINY, *bad, f'--workdir={tmp_path}/fresh'])
  assert out.returncode == 2 and not (tmp_path / 'fresh').exists()


def test_train_py_finds_its_default_config_from_another_directory(tmp_path):
  out = _run([os.path.join(REPO, 'train.py'), '--config.num_train_steps=1',
              '--config.data.builtin_documents=100', '--config.warmup_steps=0',
              '--config.eval_every_steps=1', '--config.checkpoint_every_steps=1',
              f'--workdir={tmp_path}/run'], cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'final valid' in out.stdout


def test_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_resumes(runs, tmp_path):
  run = _copy(runs, 'mlm', tmp_path)
  steps = sorted(int(n) for n in os.listdir(run / 'checkpoints') if n.isdigit())
  assert len(steps) >= 2, steps
  latest = run / 'checkpoints' / str(steps[-1])
  data_files = sorted((os.path.join(d, n) for d, _, ns in os.walk(latest) for n in ns
                       if os.path.basename(d) == 'd' and 'ocdbt' in d), key=os.path.getsize)
  with open(data_files[-1], 'r+b') as f:  # truncate the largest data file of the latest one
    f.truncate(100)
  out = _run(['train.py', *TINY, f'--workdir={run}'])
  assert out.returncode == 0, out.stderr[-3000:]
  damaged = [l for l in out.stderr.splitlines() if 'damaged checkpoint' in l]
  assert len(damaged) == 1 and f'set aside as damaged-{steps[-1]}' in damaged[0], out.stderr
  assert f'resuming from {run / "checkpoints"}/{steps[-2]}' in out.stderr
  assert (run / 'checkpoints' / f'damaged-{steps[-1]}').is_dir()  # kept, not deleted
  assert (run / 'checkpoints' / str(steps[-1])).is_dir()  # retrained and saved again


def test_read_only_commands_skip_a_damaged_latest_checkpoint_without_renaming_it(runs,
                                                                                   tmp_path):
  run = _copy(runs, 'glue', tmp_path)
  steps = sorted(int(n) for n in os.listdir(run / 'checkpoints') if n.isdigit())
  assert len(steps) >= 2, steps
  _truncate_data_files(run / 'checkpoints' / str(steps[-1]))
  out = _run(['eval.py', f'--workdir={run}'])
  assert out.returncode == 0, out.stderr[-3000:]
  err = out.stderr.strip().splitlines()
  assert len(err) == 1 and f'checkpoints/{steps[-1]}: damaged checkpoint' in err[0], err
  assert 'trying the previous one' in err[0]
  assert json.loads((run / 'eval_validation.json').read_text())['checkpoint_step'] == steps[-2]
  assert (run / 'checkpoints' / str(steps[-1])).is_dir()  # eval only reads: nothing renamed


def test_manifest_deleted_is_damage_too(runs, tmp_path):
  run = _copy(runs, 'mlm', tmp_path)
  steps = sorted(int(n) for n in os.listdir(run / 'checkpoints') if n.isdigit())
  latest = run / 'checkpoints' / str(steps[-1])
  manifests = [os.path.join(d, n) for d, _, ns in os.walk(latest) for n in ns
               if n == 'manifest.ocdbt']
  for m in manifests:
    os.remove(m)
  out = _run(['train.py', *TINY, f'--workdir={run}'])
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'damaged checkpoint' in out.stderr and 'Event loop is closed' not in out.stderr


def test_a_second_run_on_a_busy_workdir_is_refused_and_a_stale_lock_taken_over(runs, tmp_path):
  run = tmp_path / 'busy'
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  first = subprocess.Popen([sys.executable, 'train.py', *TINY, '--config.num_train_steps=400',
                            f'--workdir={run}'], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
  try:
    import time
    deadline = time.time() + 120
    while not (run / 'run.lock').exists() and time.time() < deadline:
      time.sleep(0.1)
    second = _run(['train.py', *TINY, f'--workdir={run}'])
    assert second.returncode == 2
    err = second.stderr.strip().splitlines()
    assert len(err) == 1 and f'in use by process {first.pid}' in err[0], err
    evaluation = _run(['eval.py', f'--workdir={run}'])
    assert evaluation.returncode == 2 and f'process {first.pid}' in evaluation.stderr
  finally:
    first.kill()  # kill -9: the lock stays behind, naming a process that is gone
    first.wait()
  lock = json.loads((run / 'run.lock').read_text())
  assert lock['pid'] == first.pid
  third = _run(['train.py', *TINY, f'--workdir={run}'])
  assert third.returncode == 0, third.stderr[-2000:]
  assert not (run / 'run.lock').exists()


def test_eval_of_a_read_only_run_prints_the_metrics_then_one_line(runs, tmp_path):
  run = _copy(runs, 'glue', tmp_path)
  _read_only(run)
  out = _run(['eval.py', f'--workdir={run}'])
  assert 'accuracy' in out.stdout and 'predicted labels' in out.stdout
  assert out.returncode == 2 and 'cannot write the results' in out.stderr


def _live_run(runs, name, tmp_path):
  """A copy of a finished run made to look mid-save: orbax's temporary directory of the step
  being written and a step set aside for deletion, as a training run has them between saves."""
  run = _copy(runs, name, tmp_path)
  partial = run / 'checkpoints' / '99.orbax-checkpoint-tmp-1700000000000'
  partial.mkdir()
  (partial / 'being-written').write_text('x')
  (run / 'checkpoints' / 'deleting' / '1').mkdir(parents=True)
  return run


def _tree(run):
  return sorted(str(p.relative_to(run)) for p in run.rglob('*'))


def test_readers_never_clean_or_write_into_a_run_they_read(runs, tmp_path):
  """export, average and a run used as teacher_checkpoint may read a run that is training:
  its save in progress and its trash are that run's, left as they are."""
  mlm, glue = _live_run(runs, 'mlm', tmp_path / 'a'), _live_run(runs, 'glue', tmp_path / 'b')
  before = {mlm: _tree(mlm), glue: _tree(glue)}
  commands = [
      ['-m', 'bitmaps_jax', 'export', str(mlm), f'{tmp_path}/m.bmp'],
      ['-m', 'bitmaps_jax', 'export', str(mlm), f'{tmp_path}/hf', '--hf'],
      ['-m', 'bitmaps_jax', 'average', f'{mlm}@3', f'{mlm}@6', f'{tmp_path}/soup'],
      ['train.py', *runs['glue_flags'], f'--config.teacher_checkpoint={glue}',
       '--config.num_train_steps=1', f'--workdir={tmp_path}/student'],
  ]
  for command in commands:
    out = _run(command)
    assert out.returncode == 0, (command, out.stderr[-3000:])
    assert 'WARNING' not in out.stderr, out.stderr  # library notes stay off stderr...
  assert {mlm: _tree(mlm), glue: _tree(glue)} == before
  out = _run(['-m', 'bitmaps_jax', 'export', str(mlm), f'{tmp_path}/m.bmp', '--verbosity=-1'])
  assert out.returncode == 0 and 'Given directory is read only' in out.stderr  # ...unless asked


def test_a_full_disk_during_a_save_is_one_line_and_the_same_command_resumes(tmp_path):
  """A 4 MiB tmpfs as workdir fills up at a checkpoint: one line naming the directory and the
  space left, exit 2, the partial save removed; with room again the same command resumes."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  ok = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(disk)],
                      capture_output=True, text=True)
  if ok.returncode:
    pytest.skip(f'cannot mount a small tmpfs here ({ok.stderr.strip()})')
  MOUNTS.append(str(disk))
  command = ['train.py', *TINY, '--config.num_train_steps=40', '--config.checkpoint_every_steps=1',
             '--config.keep_checkpoints=50', f'--workdir={disk}/run']
  out = _run(command)
  err = out.stderr.strip().splitlines()
  assert out.returncode == 2, out.stderr[-3000:]
  assert err[-1].startswith(f'error: {disk}/run/checkpoints: no space left on the device'), err
  assert 'MiB free of 4.0 MiB' in err[-1] and 'partial save is removed' in err[-1], err
  # Besides progress lines only the error: no traceback of the writes still in flight.
  assert all(l.startswith(('[', 'step ')) for l in err[:-1]), err
  entries = os.listdir(disk / 'run' / 'checkpoints')
  assert entries and all(n.isdigit() for n in entries), entries
  subprocess.run(['mount', '-o', 'remount,size=64m', str(disk)], check=True)
  again = _run(command)
  assert again.returncode == 0, again.stderr[-3000:]
  assert f'resuming from {disk}/run/checkpoints/{max(int(n) for n in entries)}' in again.stderr


def test_skipped_steps_never_save_a_non_finite_model(tmp_path):
  # lr 1e30: the second step's finite update leaves params whose every later loss is NaN.
  out = _run(['train.py', *TINY, '--config.learning_rate=1e30',
              '--config.skip_nonfinite_steps=True', f'--workdir={tmp_path}/x'])
  assert out.returncode == 2, out.stderr[-2000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: step 3: validation loss nan') and 'not saved' in last, last
  assert 'Traceback' not in out.stderr
  assert not os.listdir(tmp_path / 'x' / 'checkpoints')
  assert 'NaN' not in (tmp_path / 'x' / 'metrics.jsonl').read_text()
