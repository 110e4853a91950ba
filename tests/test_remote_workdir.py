"""A run whose workdir is gs://: train, resume, eval and export against an in-memory fake GCS
(tests/fake_gcs.py) through the real client stack -- etils epath over gcsfs for files,
tensorstore's gcs driver for orbax's array data. Nothing may appear on the local disk."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = 'test-bucket'
TINY = [f'--config={REPO}/configs/default.py:tiny']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """Environment for subprocesses that talk to a fresh fake GCS, and a function that lists
  the bucket through the same client."""
  pytest.importorskip('gcp_storage_emulator')
  url = f'http://127.0.0.1:{_free_port()}'
  server = subprocess.Popen([sys.executable, os.path.join(REPO, 'tests', 'fake_gcs.py'),
                             url.rsplit(':', 1)[1], BUCKET])
  try:
    for _ in range(300):
      try:
        urllib.request.urlopen(url + '/', timeout=5).read()
        break
      except OSError:
        time.sleep(0.1)
    else:
      pytest.fail('the fake GCS did not start')
    env = dict(os.environ,
               XLA_FLAGS='--xla_force_host_platform_device_count=2',
               PYTHONPATH=REPO,
               EPATH_USE_TF='false',                     # epath: gs:// through gcsfs
               STORAGE_EMULATOR_HOST=url,                # gcsfs -> the fake
               FSSPEC_GCS_TOKEN='anon',
               GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false',  # no gRPC bucket probe
               TENSORSTORE_GCS_HTTP_URL=url,             # tensorstore -> the fake
               GOOGLE_AUTH_TOKEN_FOR_TESTING='fake',
               BITMAPS_JAX_CACHE=str(tmp_path_factory.mktemp('cache')))
    cwd = tmp_path_factory.mktemp('cwd')

    def run(*args):
      return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)

    def listing(prefix):
      code = ('import json, sys, fsspec; '
              'print(json.dumps(fsspec.filesystem("gs").find(sys.argv[1])))')
      out = run('-c', code, prefix)
      assert out.returncode == 0, out.stderr[-2000:]
      bare = prefix.split('://', 1)[1]
      return sorted(p.split(bare, 1)[1].lstrip('/') for p in json.loads(out.stdout))

    def read(path):
      out = run('-c', 'import sys; from etils import epath; '
                'sys.stdout.write(epath.Path(sys.argv[1]).read_text())', path)
      assert out.returncode == 0, out.stderr[-2000:]
      return out.stdout

    yield {'run': run, 'listing': listing, 'read': read, 'cwd': cwd, 'env': env}
  finally:
    server.terminate()
    server.wait(10)


def _script(name):
  return os.path.join(REPO, name)


def _no_local_gs(cwd):
  for root in (cwd, REPO):
    assert not os.path.exists(os.path.join(root, 'gs:')), root


def test_mlm_train_resume_and_export_on_gcs(gcs, tmp_path):
  workdir = f'gs://{BUCKET}/mlm'
  common = [_script('train.py'), *TINY, f'--workdir={workdir}',
            '--config.checkpoint_every_steps=3']
  out = gcs['run'](*common, '--config.num_train_steps=6')
  assert out.returncode == 0, out.stderr[-3000:]
  files = gcs['listing'](workdir)
  for name in ('model_config.json', 'train_config.json', 'vocab.txt', 'metrics.jsonl',
               'train_val_loss.png', 'checkpoints/3/_CHECKPOINT_METADATA',
               'checkpoints/6/state/manifest.ocdbt'):
    assert name in files, (name, files)
  assert any(f.startswith('tensorboard/events.out.tfevents') for f in files), files
  steps = [json.loads(l)['step'] for l in gcs['read'](f'{workdir}/metrics.jsonl').splitlines()]
  assert steps and max(steps) == 6

  out = gcs['run'](*common, '--config.num_train_steps=9')  # resume from the bucket
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'resuming from {workdir}/checkpoints/6' in out.stderr
  rows = [json.loads(l) for l in gcs['read'](f'{workdir}/metrics.jsonl').splitlines()]
  train_steps = [r['step'] for r in rows if r['split'] == 'train']
  assert train_steps == sorted(set(train_steps)) and max(train_steps) == 9  # nothing twice

  out = gcs['run']('-m', 'bitmaps_jax', 'export', workdir, f'gs://{BUCKET}/out/m.bitmaps')
  assert out.returncode == 0, out.stderr[-3000:]
  out = gcs['run']('-m', 'bitmaps_jax', 'export', workdir, f'gs://{BUCKET}/out/hf', '--hf')
  assert out.returncode == 0, out.stderr[-3000:]
  exported = gcs['listing'](f'gs://{BUCKET}/out')
  for name in ('m.bitmaps', 'hf/config.json', 'hf/model.safetensors', 'hf/tokenizer.json'):
    assert name in exported, exported
  _no_local_gs(gcs['cwd'])
  assert not os.listdir(gcs['cwd'])  # nothing written locally in the working directory


def test_glue_train_and_eval_on_gcs(gcs, tmp_path):
  from conftest import write_glue_dir
  from bitmaps_jax.tasks.mlm import data as mlm_data
  write_glue_dir(tmp_path / 'glue')
  vocab = mlm_data.train_wordpiece_vocab(['the cat dog sees a ball runs big red house'], 64,
                                         str(tmp_path / 'vocab.txt'))
  data = f'gs://{BUCKET}/glue'  # the GLUE files are read from the bucket too
  out = gcs['run']('-c', 'import os, sys; from etils import epath\n'
                   'for d, _, ns in os.walk(sys.argv[1]):\n'
                   '  for n in ns:\n'
                   '    rel = os.path.relpath(os.path.join(d, n), sys.argv[1])\n'
                   '    (epath.Path(sys.argv[2]) / rel).write_bytes(open(os.path.join(d, n), "rb").read())',
                   str(tmp_path / 'glue'), data)
  assert out.returncode == 0, out.stderr[-2000:]
  workdir = f'gs://{BUCKET}/cola'
  out = gcs['run'](_script('train.py'), f'--config={REPO}/configs/glue.py:cola,tiny',
                   f'--config.tokenizer={vocab}', f'--config.data_dir={data}',
                   '--config.num_epochs=1', f'--workdir={workdir}')
  assert out.returncode == 0, out.stderr[-3000:]
  out = gcs['run'](_script('eval.py'), f'--workdir={workdir}')
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(gcs['read'](f'{workdir}/eval_validation.json'))
  assert result['task'] == 'cola' and 'mcc' in result and result['checkpoint_step'] > 0
  assert 'run.lock' not in gcs['listing'](workdir)  # released
  _no_local_gs(gcs['cwd'])


def test_prepared_corpus_in_a_bucket(gcs, tmp_path):
  from bitmaps_jax.tasks.mlm import data as mlm_data
  docs = mlm_data.builtin_documents(300)
  (tmp_path / 'corpus.txt').write_text('\n'.join(docs) + '\n')
  vocab = mlm_data.train_wordpiece_vocab(docs, 128, str(tmp_path / 'vocab.txt'))
  corpus = f'gs://{BUCKET}/corpus'
  prepare = ['-m', 'bitmaps_jax', 'prepare_corpus', f'--vocab={vocab}', f'--out={corpus}',
             f'--files={tmp_path / "corpus.txt"}', '--max_seq_length=32', '--docs_per_shard=100',
             '--validation_documents=30', '--processes=1']
  out = gcs['run'](*prepare)
  assert out.returncode == 0, out.stderr[-3000:]
  listed = gcs['listing'](corpus)
  assert 'manifest.json' in listed and 'train-00000.npy' in listed, listed
  assert 'already prepared' in gcs['run'](*prepare).stdout
  # A host with an empty cache copies the corpus once, then trains from its memory maps.
  cache = tmp_path / 'cache'
  out = subprocess.run(
      [sys.executable, _script('train.py'), *TINY, '--config.data.source=prepared',
       f'--config.data.prepared_dir={corpus}', '--config.max_seq_length=32',
       '--config.num_train_steps=3', f'--workdir=gs://{BUCKET}/from-prepared'],
      cwd=gcs['cwd'], env=dict(gcs['env'], BITMAPS_JAX_CACHE=str(cache)), capture_output=True,
      text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'{corpus}: copied to {cache}' in out.stdout + out.stderr
  copied = sorted(os.listdir(next((cache / 'prepared').iterdir())))
  assert set(listed) <= set(copied), (listed, copied)
  _no_local_gs(gcs['cwd'])


def test_an_unreachable_bucket_is_one_line_in_bounded_time(gcs):
  """A bucket that does not exist, and a store that does not answer (the fake GCS stopped):
  train.py, eval.py and export say which path and why, exit 2, within the wait."""
  missing = 'gs://missing-bucket/run'
  for args in (['train.py', *TINY, f'--workdir={missing}'], ['eval.py', f'--workdir={missing}'],
               ['-m', 'bitmaps_jax', 'export', missing, 'm.bmp']):
    out = gcs['run'](*([_script(args[0])] if args[0].endswith('.py') else args[:1]), *args[1:])
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr[-3000:]
    assert 'bucket gs://missing-bucket not found' in err[0], err
  dead = f'http://127.0.0.1:{_free_port()}'  # nothing listens there
  env = dict(gcs['env'], STORAGE_EMULATOR_HOST=dead, TENSORSTORE_GCS_HTTP_URL=dead,
             BITMAPS_JAX_REMOTE_TIMEOUT='5')
  for args in ([_script('train.py'), *TINY, f'--workdir=gs://{BUCKET}/run'],
               ['-m', 'bitmaps_jax', 'export', f'gs://{BUCKET}/run', 'm.bmp']):
    t0 = time.time()
    out = subprocess.run([sys.executable, *args], cwd=gcs['cwd'], env=env, capture_output=True,
                         text=True, timeout=300)
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr[-3000:]
    assert f'cannot reach gs://{BUCKET}' in err[0] and 'no answer in 5 s' in err[0], err
    assert time.time() - t0 < 60


@pytest.mark.parametrize('raised,message,why', [
    ('DefaultCredentialsError', 'Your default credentials were not found.',
     'no credentials, or they do not allow it'),
    ('ClientConnectorError', 'Cannot connect to host storage.googleapis.com:443 ssl:default',
     'network unreachable'),
    ('FailedPreconditionError', "Error executing an HTTP request: libcurl code 6 meaning "
     "'Could not resolve hostname'", 'network unreachable')])  # tf.io.gfile, no route
def test_why_a_bucket_cannot_be_reached_is_said_in_words(monkeypatch, raised, message, why):
  """What the storage clients raise without credentials or without a route, as one line."""
  from bitmaps_jax import files
  from bitmaps_jax.errors import UserError
  error = type(raised, (Exception,), {})(message)

  class Unreachable:
    def __init__(self, path):
      pass

    def exists(self):
      raise error

  monkeypatch.setattr(files.epath, 'Path', Unreachable)
  with pytest.raises(UserError) as e:
    files.check_reachable('gs://some-bucket/run')
  assert str(e.value) == f'gs://some-bucket/run: cannot reach gs://some-bucket ({why})'
