"""The one path layer: every file a run reads or writes goes through here, so that a workdir,
an export or a checkpoint may be local or remote (gs://BUCKET/..., any URI etils epath knows).

etils epath is what orbax uses too. Libraries that only open local files (the tokenizer, the
TensorBoard writer) get a local copy or a local staging directory from here; nothing ever
turns a URI into a local directory named `gs:`.
"""

import contextlib
import errno
import os
import shutil
import tempfile
import threading

from etils import epath


def is_remote(path) -> bool:
  return '://' in os.fspath(path)


# How long a command waits for a bucket's first answer before it says it cannot reach it.
REMOTE_TIMEOUT_S = 30
_REACHABLE = set()  # buckets that answered, checked once per process


def _reason(error: BaseException) -> str:
  """Why a remote store could not be reached, in words a user acts on."""
  text = f'{type(error).__name__}: {error}'
  if any(k in text for k in ('DefaultCredentialsError', 'credentials', '401', '403',
                             'Unauthorized', 'Unauthenticated', 'Forbidden', 'PermissionDenied',
                             'RefreshError')):
    return 'no credentials, or they do not allow it'
  if any(k in text for k in ('ClientConnector', 'Cannot connect', 'DNS', 'Connection refused',
                             'TimeoutError', 'timed out', 'Network is unreachable',
                             'Name or service not known', 'Could not resolve')):
    return 'network unreachable'
  return text.strip().splitlines()[0][:200]


def check_reachable(p):
  """For a remote path: one line (a `UserError`) when its bucket cannot be reached (no
  credentials, no network) or does not exist, before any command waits on it; local paths
  pass. The client's retries bound the time it takes."""
  if not is_remote(p):
    return
  from bitmaps_jax.errors import UserError
  scheme, rest = os.fspath(p).split('://', 1)
  bucket = f'{scheme}://{rest.split("/", 1)[0]}'
  if bucket in _REACHABLE:
    return
  timeout = float(os.environ.get('BITMAPS_JAX_REMOTE_TIMEOUT', REMOTE_TIMEOUT_S))
  answer = []

  def probe():
    try:
      answer.append(epath.Path(bucket).exists())
    except Exception as e:  # noqa: BLE001 -- gcsfs, aiohttp and google-auth raise their own
      answer.append(e)

  # A daemon thread: the client's retries of an unreachable host may outlast the answer.
  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout)
  if not answer:
    raise UserError(f'{p}: cannot reach {bucket} (no answer in {timeout:.0f} s: network '
                    f'unreachable? BITMAPS_JAX_REMOTE_TIMEOUT sets the wait)')
  found = answer[0]
  if isinstance(found, Exception):
    raise UserError(f'{p}: cannot reach {bucket} ({_reason(found)})')
  if not found:
    raise UserError(f'{p}: bucket {bucket} not found (or not visible with these credentials)')
  _REACHABLE.add(bucket)


def path(p) -> epath.Path:
  return epath.Path(p)


def absolute(p) -> str:
  """`p` as an absolute path string; URIs are already absolute."""
  p = os.fspath(p)
  return p if is_remote(p) else os.path.abspath(p)


def join(*parts) -> str:
  return os.fspath(epath.Path(*parts))


def exists(p) -> bool:
  return path(p).exists()


def isfile(p) -> bool:
  return path(p).is_file()


def isdir(p) -> bool:
  return path(p).is_dir()


def listdir(p) -> list:
  return sorted(c.name for c in path(p).iterdir())


def makedirs(p):
  path(p).mkdir(parents=True, exist_ok=True)


def read_text(p) -> str:
  return path(p).read_text()


def read_bytes(p) -> bytes:
  return path(p).read_bytes()


def write_bytes(p, data: bytes):
  """Writes `p` whole or not at all: a local file through a temporary name and a rename;
  a remote object is replaced atomically by the store itself."""
  if is_remote(p):
    path(p).write_bytes(data)
    return
  tmp = os.fspath(p) + '.tmp'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, p)
  except BaseException:  # a full disk, a signal: no half-written file left behind
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_text(p, text: str):
  write_bytes(p, text.encode('utf-8'))


def copy(src, dst):
  write_bytes(dst, read_bytes(src))


def rename(src, dst):
  path(src).rename(dst)


def rmtree(p):
  path(p).rmtree()


def is_disk_full(error: BaseException) -> bool:
  """Whether `error`, or what caused it, is a full disk (ENOSPC, or EDQUOT: a quota)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if 'No space left on device' in str(error):  # tensorstore's errors are not OSErrors
      return True
    error = error.__cause__ or error.__context__
  return False


def free_space(p) -> str:
  """'N MiB free of M MiB' on the disk that holds local path `p` (or its nearest existing
  parent); '' for a remote path."""
  if is_remote(p):
    return ''
  p = os.path.abspath(os.fspath(p))
  while not os.path.exists(p) and os.path.dirname(p) != p:
    p = os.path.dirname(p)
  usage = shutil.disk_usage(p)
  return f'{usage.free / 2**20:.2f} MiB free of {usage.total / 2**20:.1f} MiB'


@contextlib.contextmanager
def local_copy(p):
  """A local path holding `p` (a file or a directory's files) for as long as the context
  lasts: `p` itself when it is local."""
  if not is_remote(p):
    yield os.fspath(p)
    return
  tmp = tempfile.mkdtemp()
  try:
    src = path(p)
    dst = os.path.join(tmp, src.name)
    if src.is_dir():
      os.makedirs(dst)
      for child in src.iterdir():
        if child.is_file():
          with open(os.path.join(dst, child.name), 'wb') as f:
            f.write(child.read_bytes())
    else:
      with open(dst, 'wb') as f:
        f.write(src.read_bytes())
    yield dst
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


class StagedDir:
  """A local directory standing in for `target` (remote) for writers that only write local
  files, such as TensorBoard's: `sync` copies what changed since the last call."""

  def __init__(self, target):
    self.target = target
    self.local = tempfile.mkdtemp()
    self._sizes = {}

  def sync(self):
    for dirpath, _, names in os.walk(self.local):
      for name in names:
        src = os.path.join(dirpath, name)
        size = os.path.getsize(src)
        if self._sizes.get(src) == size:
          continue
        dst = path(self.target) / os.path.relpath(src, self.local)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(src, 'rb') as f:
          dst.write_bytes(f.read())
        self._sizes[src] = size

  def close(self):
    self.sync()
    shutil.rmtree(self.local, ignore_errors=True)
