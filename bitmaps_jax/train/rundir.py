"""The run directory: the one place that knows a run's files and reads them back.

    RUN/model_config.json   the BertConfig the checkpoints belong to
    RUN/train_config.json   the training config, complete (derived fields filled in)
    RUN/vocab.txt           the tokenizer's vocabulary
    RUN/checkpoints/        orbax checkpoints (train state + loop state)
    RUN/metrics.jsonl       one JSON object per logged point
    RUN/tensorboard/        TensorBoard summaries
    RUN/train_val_loss.png  the loss plot
    RUN/eval_<split>.json   eval.py's results
    RUN/run.lock            held while a process writes into the run
    RUN/params_only.json    where the params came from, in a run no training loop wrote
    RUN/config_changes.jsonl  settings changed when the run was resumed (old -> new)
"""

import contextlib
import json
import os
import socket
import sys
import time

import ml_collections

from bitmaps_jax import files
from bitmaps_jax.errors import UserError
from bitmaps_jax.model.bert import BertConfig
from bitmaps_jax.train import checkpoints

MODEL_CONFIG = 'model_config.json'
TRAIN_CONFIG = 'train_config.json'
VOCAB = 'vocab.txt'
CHECKPOINTS = 'checkpoints'
METRICS = 'metrics.jsonl'
TENSORBOARD = 'tensorboard'
LOSS_PLOT = 'train_val_loss.png'
LOCK = 'run.lock'
PARAMS_ONLY = 'params_only.json'
CONFIG_CHANGES = 'config_changes.jsonl'

# Training-config fields a resumed run must keep: another task trains the saved model on
# other data (other sizes are also refused by shape, this names the field).
RESUME_FIXED_FIELDS = ('task', 'task_name', 'model')


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


# Fields that decide the shapes of the params; a checkpoint only fits a model that shares them.
SHAPE_FIELDS = ('architecture', 'vocab_size', 'hidden_size', 'num_hidden_layers',
                'num_attention_heads', 'intermediate_size', 'max_position_embeddings',
                'type_vocab_size', 'num_labels', 'binarize.layers', 'binarize.embeddings',
                'binarize.granularity')


def _field(cfg: BertConfig, name: str):
  for part in name.split('.'):
    cfg = getattr(cfg, part, None)
  return cfg


def shape_differences(a: BertConfig, b: BertConfig, a_label: str = '') -> list:
  """'field A[ a_label] vs B' for each SHAPE_FIELDS field where the two configs differ."""
  return [f'{k} {_field(a, k)}{a_label} vs {_field(b, k)}' for k in SHAPE_FIELDS
          if _field(a, k) != _field(b, k)]


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class RunDir:
  """A run's directory, local or remote (gs://...). Reading methods raise `UserError` naming
  the file that is wrong."""

  def __init__(self, path: str):
    self.path = os.fspath(path)

  @classmethod
  def of(cls, run) -> 'RunDir':
    """`run` itself when it is a RunDir, else the RunDir of that path: the entry point builds
    the run directory once and hands it down; code called with a plain path still works."""
    return run if isinstance(run, cls) else cls(run)

  def file(self, name: str) -> str:
    return files.join(self.path, name)

  @property
  def checkpoint_dir(self) -> str:
    return self.file(CHECKPOINTS)

  @property
  def metrics_file(self) -> str:
    return self.file(METRICS)

  @property
  def vocab_file(self) -> str:
    return self.file(VOCAB)

  def eval_file(self, split: str) -> str:
    return self.file(f'eval_{split}.json')

  def is_run(self) -> bool:
    """Whether this directory was written by train.py (it has a model config)."""
    return files.isfile(self.file(MODEL_CONFIG))

  def has_checkpoints(self) -> bool:
    return checkpoints.has_checkpoints(self.checkpoint_dir)

  # ------------------------------------------------------------------------- reading

  def _read_json(self, name: str, what: str):
    path = self.file(name)
    files.check_reachable(path)
    if not files.isfile(path):
      raise UserError(f'{self.path}: not a run directory (no {name})')
    try:
      return json.loads(files.read_text(path))
    except (OSError, ValueError) as e:
      raise UserError(f'{path}: unreadable {what} ({e})') from None

  def model_config(self) -> BertConfig:
    d = self._read_json(MODEL_CONFIG, 'model config')
    try:
      return BertConfig.from_dict(d)
    except (UserError, TypeError) as e:
      raise UserError(f'{self.file(MODEL_CONFIG)}: {e}') from None

  def train_config(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(self._read_json(TRAIN_CONFIG, 'train config'))

  def checkpoint_store(self, **options) -> checkpoints.CheckpointStore:
    return checkpoints.CheckpointStore(self.checkpoint_dir, **options)

  def restore_params(self, step=None):
    """(params, step) of a checkpoint (default: the newest that reads back; a damaged one is
    reported on stderr and skipped), placed on this process's first device whatever devices
    saved it."""
    if not self.has_checkpoints():
      raise UserError(f'{self.checkpoint_dir}: no checkpoint to restore')
    store = self.checkpoint_store(read_only=True)  # the run may be training meanwhile
    try:
      if step is None:
        return store.restore_latest_params(
            report=lambda m: print(m, file=sys.stderr, flush=True))
      return store.restore_params(step), step
    finally:
      store.close()

  def load_model(self):
    """(BertConfig, params) of the latest checkpoint."""
    config = self.model_config()
    params, _ = self.restore_params()
    return config, params

  # ------------------------------------------------------------------------- writing

  def check_resumable(self, model_cfg: BertConfig, config=None):
    """Refuses a run whose checkpoints belong to another model or task (`config`: the
    requested training config), before anything in it is overwritten."""
    if not self.is_run() or not self.has_checkpoints():
      return
    if files.isfile(self.file(PARAMS_ONLY)):
      raise UserError(f'{self.path}: holds params only (see {PARAMS_ONLY}), no training state '
                      f'to resume; start a new workdir with --config.init_checkpoint='
                      f'{self.path}')
    named = ''  # the config field a change of model size came from, when it is that
    if config is not None and files.isfile(self.file(TRAIN_CONFIG)):
      saved = self.train_config()
      fields = list(RESUME_FIXED_FIELDS)
      if saved.get('init_checkpoint') or config.get('init_checkpoint'):
        fields.remove('model')  # the size comes from the checkpoint; compared by shape below
      for field in fields:
        if saved.get(field) != config.get(field) and field != 'model':  # model: below
          raise UserError(f'config.{field} {config.get(field)!r}: {self.path} holds a run '
                          f'with {field} {saved.get(field)!r}; use another workdir or the '
                          f'same {field}')
      if 'model' in fields and saved.get('model') != config.get('model'):
        named = f"config.model {config.get('model')!r}: "
    diff = shape_differences(self.model_config(), model_cfg, ' (saved)')
    if diff or named:
      what = '; '.join(diff) or 'another model setting'
      raise UserError(f'{named}{self.path}: holds checkpoints of another model ({what}); '
                      f'use another workdir or the same model settings')

  def write_run_files(self, config, model_cfg: BertConfig, vocab_source: str):
    """What a later eval.py, export or init_checkpoint needs: the model and training configs
    and the vocabulary."""
    self.create()
    if self.has_checkpoints() and files.isfile(self.file(TRAIN_CONFIG)):
      self._record_changes(self.train_config(), config)
    files.write_text(self.file(MODEL_CONFIG), json.dumps(model_cfg.to_dict(), indent=2))
    files.write_text(self.file(TRAIN_CONFIG), config.to_json(indent=2))
    src = vocab_source if files.isfile(vocab_source) else files.join(vocab_source, VOCAB)
    if files.isfile(src) and files.absolute(src) != files.absolute(self.vocab_file):
      files.copy(src, self.vocab_file)

  def _record_changes(self, saved, config):
    """A resumed run's changed settings (those safe on resume): printed, and appended to
    RUN/config_changes.jsonl, since train_config.json then holds only the new values."""
    before, after = _flat(saved.to_dict()), _flat(config.to_dict())
    changes = {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after))
               if before.get(k) != after.get(k)}
    if not changes:
      return
    print('resuming with changed settings: ' + ', '.join(
        f'{k} {old!r} -> {new!r}' for k, (old, new) in changes.items()), flush=True)
    path = self.file(CONFIG_CHANGES)
    previous = files.read_text(path) if files.isfile(path) else ''
    entry = {'time': time.strftime('%Y-%m-%d %H:%M:%S'), 'changes': changes}
    files.write_text(path, previous + json.dumps(entry) + '\n')

  def save_params(self, params, step: int, origin: dict):
    """A checkpoint of params alone (no optimizer or loop state), for a model that no
    training loop wrote (an average of runs): eval.py, export and init_checkpoint read it,
    train.py refuses to resume it. `origin` (what the params were made from) goes to
    RUN/params_only.json."""
    store = self.checkpoint_store(keep=1)
    try:
      store.save(int(step), {'params': params}, {'step': int(step)})
      store.wait()
    finally:
      store.close()
    self.write_json(PARAMS_ONLY, origin)

  def write_json(self, name: str, obj) -> str:
    path = self.file(name)
    files.write_text(path, json.dumps(obj, indent=2))
    return path

  # ------------------------------------------------------------------------- the lock

  def create(self):
    """Makes the directory, or says in one line why it cannot be written."""
    if files.is_remote(self.path):
      files.check_reachable(self.path)
      files.makedirs(self.path)  # a prefix in a bucket: permissions show at the first write
      return
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise UserError(f'{self.path}: workdir is a file, not a directory')
    try:
      os.makedirs(self.path, exist_ok=True)
    except OSError as e:
      raise UserError(f'{self.path}: cannot create the workdir ({e.strerror})') from None
    if not self.writable():
      raise UserError(f'{self.path}: workdir is not writable')

  def writable(self) -> bool:
    """Whether this process may write into the run (remote: assumed, shown at the first
    write)."""
    return files.is_remote(self.path) or os.access(self.path, os.W_OK | os.X_OK)

  @contextlib.contextmanager
  def lock(self, what: str = 'train'):
    """Holds RUN/run.lock so that one process at a time writes into the run. A lock left by
    a process that no longer runs on this host (killed with kill -9) is taken over. On a
    remote workdir the lock is an object written after a check: it catches a second run
    started later, not two started in the same instant."""
    self.create()
    path = self.file(LOCK)
    mine = {'pid': os.getpid(), 'host': socket.gethostname(), 'what': what,
            'since': time.strftime('%Y-%m-%d %H:%M:%S')}
    # One try block from before the lock exists: a signal raised between its creation and
    # the yield still releases it (the finally removes only a lock that names this process).
    try:
      for _ in range(3):
        if self._create_exclusive(path, json.dumps(mine)):
          break
        self._check_stale(path)
      else:
        raise UserError(f'{path}: could not take the run lock')
      yield
    finally:
      try:
        if json.loads(files.read_text(path)).get('pid') == mine['pid']:
          files.path(path).unlink()
      except (OSError, ValueError):
        pass

  @staticmethod
  def _create_exclusive(path: str, text: str) -> bool:
    if files.is_remote(path):
      if files.exists(path):
        return False
      files.write_text(path, text)
      return True
    # Written whole beside it, then linked into place: the lock never exists half-written
    # (a signal during the write would leave a lock that names no one).
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
      with open(tmp, 'w') as f:
        f.write(text)
      try:
        os.link(tmp, path)
      except FileExistsError:
        return False
      except OSError:  # a file system without hard links
        try:
          fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
          return False
        with os.fdopen(fd, 'w') as f:
          f.write(text)
      return True
    finally:
      try:
        os.unlink(tmp)
      except FileNotFoundError:
        pass

  def _check_stale(self, path: str):
    """Raises if the lock's holder still runs; removes a stale lock."""
    try:
      other = json.loads(files.read_text(path))
    except (OSError, ValueError):
      other = {}
    pid, host = other.get('pid'), other.get('host')
    if isinstance(pid, int) and host == socket.gethostname() and _pid_alive(pid):
      raise UserError(f'{self.path}: in use by process {pid} ({other.get("what", "run")} since '
                      f'{other.get("since", "?")}); wait for it or use another workdir')
    if isinstance(pid, int) and host and host != socket.gethostname():
      raise UserError(f'{self.path}: in use by process {pid} on host {host}; if that run has '
                      f'ended, delete {path}')
    try:
      files.path(path).unlink()  # stale: its process is gone
    except FileNotFoundError:
      pass
