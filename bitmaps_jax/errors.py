"""User-facing errors: one clear line, no traceback."""

import os
import sys


class UserError(Exception):
  """A mistake the user can fix (bad path, bad config, bad file).

  Command-line entry points catch it and print its message as a single line.
  """


class DiskFullError(UserError):
  """A save ran out of space. The I/O libraries' writes still in flight fail later, on their
  own threads, each printing a traceback (closed event loops); so from the failure on, file
  descriptor 2 is silenced (`silence_stderr`) and the one line goes to the real stderr."""


_real_stderr = []  # the saved descriptor of stderr while descriptor 2 is silenced


def silence_stderr(real_fd=None):
  """Points file descriptor 2 at /dev/null for the rest of the process (what threads print
  there is lost), keeping the real stderr for `exit_with_error`: descriptor 2's, or `real_fd`
  when 2 is pointed elsewhere meanwhile (the real one is then never written in between)."""
  sys.stderr.flush()
  if not _real_stderr:
    _real_stderr.append(os.dup(2 if real_fd is None else real_fd))
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  os.close(devnull)


def exit_with_error(message) -> None:
  """Ends the process the way every entry point reports a user's mistake: one line, status 2."""
  if _real_stderr:
    sys.stderr.flush()
    os.write(_real_stderr[0], f'error: {message}\n'.encode('utf-8', 'replace'))
  else:
    print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)

