"""Keeping the program's servers on loopback: a bind() shim preloaded into its processes.

Reverb 0.7 and Launchpad's Courier servers listen on `[::]:<port>` (every interface),
hard-coded in their C++; neither has a setting for the address. `shim.c` beside this
file, loaded with LD_PRELOAD, rewrites such a wildcard bind to loopback (127.0.0.1, or
::ffff:127.0.0.1 on a dual-stack IPv6 socket) and leaves binds to any other address
alone. Clients reach the servers at `localhost:<port>` (127.0.0.1), as Launchpad's local
addresses already say.

The shim is compiled on first need with the system's C compiler into a cache outside the
source tree (`cache_dir`): under the virtual environment, else ~/.cache. The file name
carries a hash of the source, so a changed shim is rebuilt and several checkouts can share
one environment. LD_PRELOAD only acts when a process starts: a launcher gives it to the
node processes it starts (`preload_env`); a process that runs servers itself (local_mt)
must have been started with it (`active` says whether it was).
"""

import hashlib
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Mapping, Optional

from agents.common.errors import UserError

SOURCE = pathlib.Path(__file__).with_name('shim.c')
CACHE_ENV = 'COLLECT_INFER_CACHE'
COMPILERS = ('cc', 'gcc', 'clang')


class LoopbackError(UserError):
  """The shim cannot be built here; the message says what to install or choose instead."""


def cache_dir() -> pathlib.Path:
  """Where built shims are kept: $COLLECT_INFER_CACHE, the venv, else ~/.cache/collect-infer."""
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV])
  if sys.prefix != sys.base_prefix:  # A virtual environment: its own, writable directory.
    return pathlib.Path(sys.prefix) / 'share' / 'collect-infer'
  xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(xdg) / 'collect-infer'


def library_path() -> pathlib.Path:
  """The built shim for the current source (it may not exist yet)."""
  digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
  return cache_dir() / f'loopback-bind-{digest}.so'


def _compiler() -> Optional[list]:
  if os.environ.get('CC'):
    return shlex.split(os.environ['CC'])
  for name in COMPILERS:
    if shutil.which(name):
      return [name]
  return None


def build() -> pathlib.Path:
  """The shim's path, compiling it first if this source was never built here."""
  path = library_path()
  if path.exists():
    return path
  if not sys.platform.startswith('linux'):
    raise LoopbackError(
      f'binding the servers to loopback needs Linux (LD_PRELOAD), not {sys.platform}: '
      'pass --bind all to listen on every interface (trusted networks only: README, Security)'
    )
  cc = _compiler()
  if cc is None:
    raise LoopbackError(
      'binding the servers to loopback needs a C compiler to build a small bind() shim, '
      'and none of $CC, cc, gcc, clang is here: install one (Debian/Ubuntu: apt-get install '
      'gcc; Fedora: dnf install gcc), or pass --bind all to listen on every interface '
      '(trusted networks only: README, Security)'
    )
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Built beside its final name and renamed: processes building at once never see half a file.
    fd, tmp = tempfile.mkstemp(prefix='.loopback-bind-', suffix='.so', dir=path.parent)
  except OSError as e:
    raise LoopbackError(
      f'cannot write the loopback bind shim into {path.parent} ({e.strerror}): set '
      f'{CACHE_ENV} to a writable directory'
    ) from None
  os.close(fd)
  try:
    done = subprocess.run(
      [*cc, '-shared', '-fPIC', '-O2', '-o', tmp, str(SOURCE), '-ldl'],
      capture_output=True,
      text=True,
    )
    if done.returncode != 0:
      said = ' '.join(done.stderr.split())[:500]
      raise LoopbackError(f'{" ".join(cc)} could not build {SOURCE}: {said or "no message"}')
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)
  return path


def preload_env(environ: Mapping[str, str] = os.environ) -> dict:
  """The LD_PRELOAD entry that keeps a process's servers on loopback (building the shim).

  The shim goes first, so that its rewrite happens before any bind() another preloaded
  library of the user's may add; the user's libraries stay after it.
  """
  shim = str(build())
  others = [p for p in environ.get('LD_PRELOAD', '').replace(':', ' ').split() if p != shim]
  return {'LD_PRELOAD': ' '.join([shim, *others])}


def active() -> bool:
  """Whether this process was started with the shim preloaded (its servers bind loopback)."""
  try:
    maps = pathlib.Path('/proc/self/maps').read_text()
  except OSError:
    return False
  return str(library_path()) in maps


def main() -> int:
  """`python -m launch.loopback`: builds the shim (if needed) and prints its path."""
  try:
    print(build())
  except LoopbackError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0
