"""The on-disk layout of one run: ``runs/<name>/``.

Layout::

    <run>/config.json      the run's configuration (its presence means "resumable")
    <run>/addresses.json   service addresses, owner-readable only
    <run>/gateway.token    the robot gateway's token, owner-readable only, kept for the run
    <run>/logs/
    <run>/checkpoints/     learner checkpoints (see launch.checkpointing)
    <run>/replay/          Reverb checkpoints
    <run>/.lock            flock held by the launcher of the program using the run
    <run>/.lock.nodes      shared flock held by each of that program's node processes
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import pathlib
import secrets
import socket
import time
from typing import List, Optional

from agents.common.errors import RunDirError
from agents.common.files import PathLike, atomic_write_bytes

_CONFIG = 'config.json'
_ADDRESSES = 'addresses.json'
GATEWAY_TOKEN_FILE = 'gateway.token'
_LOCK = '.lock'
_NODES_LOCK = '.lock.nodes'
# A node waits this long for a launcher's brief probe of the nodes lock to end.
_NODE_LOCK_WAIT_SECONDS = 10.0


def _one_line(text: str) -> str:
  """Collapses whitespace so a message stays on one line."""
  return ' '.join(str(text).split())


def _describe_os_error(err: OSError) -> str:
  reason = err.strerror or type(err).__name__
  if err.filename is not None:
    return f'{reason}: {err.filename}'
  return reason


class RunDir:
  """One run's directory: layout, single-user lock, config and addresses."""

  def __init__(self, path: PathLike) -> None:
    self._path = pathlib.Path(path).expanduser()
    self._lock_fd: Optional[int] = None
    self._node_fd: Optional[int] = None

  def __repr__(self) -> str:
    return f'RunDir({str(self._path)!r})'

  @property
  def path(self) -> pathlib.Path:
    """The run directory itself."""
    return self._path

  @property
  def checkpoints(self) -> pathlib.Path:
    """Learner checkpoints."""
    return self._path / 'checkpoints'

  @property
  def replay(self) -> pathlib.Path:
    """Reverb checkpoints."""
    return self._path / 'replay'

  @property
  def store(self) -> pathlib.Path:
    """The durable experience store: every completed episode."""
    return self._path / 'store'

  @property
  def logs(self) -> pathlib.Path:
    """Log files."""
    return self._path / 'logs'

  @property
  def gateway_token(self) -> pathlib.Path:
    """The token robots give the gateway (launch.robot.protocol.ensure_token_file makes it)."""
    return self._path / GATEWAY_TOKEN_FILE

  @property
  def lock_path(self) -> pathlib.Path:
    """The file that ``acquire_lock`` flocks."""
    return self._path / _LOCK

  def _unwritable(self, err: OSError) -> RunDirError:
    return RunDirError(
      _one_line(
        f'Cannot create or write to run directory {self._path} '
        f'({_describe_os_error(err)}); choose a writable --run_dir.'
      )
    )

  def create(self) -> None:
    """Creates the run directory and its subdirectories and checks it is writable.

    Raises:
      RunDirError: the directory or a parent can't be created or written to.
    """
    try:
      for directory in (self._path, self.logs, self.checkpoints, self.replay):
        directory.mkdir(parents=True, exist_ok=True)
      # Directory permission bits don't tell the whole story (read-only
      # mounts, ACLs, full disks), so prove writability by writing.
      probe = self._path / f'.write_probe.{os.getpid()}.{secrets.token_hex(4)}'
      fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
      try:
        os.write(fd, b'probe')
      finally:
        os.close(fd)
        try:
          os.unlink(probe)
        except FileNotFoundError:
          pass
    except OSError as err:
      raise self._unwritable(err) from err

  def exists(self) -> bool:
    """True if this is an existing run to resume (its config.json exists)."""
    return (self._path / _CONFIG).is_file()

  # ----------------------------------------------------------------- locking

  def _read_lock_holder(self) -> str:
    try:
      info = json.loads(self.lock_path.read_text())
      return (
        f'pid {info.get("pid", "unknown")} on host '
        f'{info.get("host", "unknown")}, started '
        f'{info.get("started", "unknown")}'
      )
    except (OSError, ValueError, AttributeError):
      # The holder may be between taking the flock and writing its info.
      return 'pid unknown'

  def acquire_lock(self) -> None:
    """Takes an exclusive lock on the run so two programs never share it.

    Uses a non-blocking ``flock`` on ``<run>/.lock``: the kernel drops it
    when the holder exits or crashes, so a lock file left by a dead process
    never blocks. The launcher holds it; its node processes each hold a shared
    lock on ``<run>/.lock.nodes`` (``hold_for_node``), so the run stays refused
    while any node of a program lives, even once its launcher is gone (killed
    with -9, or by the OOM killer). Calling this again while holding the lock
    is a no-op.

    Raises:
      RunDirError: another live process holds the lock, a node process of an
        earlier program still runs, or the lock files can't be opened.
    """
    if self._lock_fd is not None:
      return
    try:
      # os.open fds are non-inheritable, so the lock lives exactly as long
      # as this process (or until release_lock), not as long as children.
      fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
      raise self._unwritable(err) from err
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
      os.close(fd)
      if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise RunDirError(
          _one_line(
            f'Run directory {self._path} is in use by a live program '
            f'({self._read_lock_holder()}); choose another --run_dir or '
            f'stop that program.'
          )
        ) from err
      raise RunDirError(
        _one_line(
          f'Cannot lock run directory {self._path} '
          f'({_describe_os_error(err)}); choose a --run_dir on a local '
          f'filesystem.'
        )
      ) from err
    try:
      self._refuse_if_nodes_alive()
    except BaseException:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
      raise
    info = {
      'pid': os.getpid(),
      'host': socket.gethostname(),
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    try:
      # Rewritten in place rather than atomically replaced: replacing the
      # file would swap the inode that other processes flock.
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(info) + '\n').encode(), 0)
      os.fsync(fd)
    except OSError as err:
      fcntl.flock(fd, fcntl.LOCK_UN)
      os.close(fd)
      raise self._unwritable(err) from err
    self._lock_fd = fd

  def _refuse_if_nodes_alive(self) -> None:
    """Raises RunDirError while any process holds ``.lock.nodes`` (shared, by ``hold_for_node``)."""
    try:
      fd = os.open(self.nodes_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
      raise self._unwritable(err) from err
    try:
      # Only a probe: the launcher's own nodes take the lock shared once it is let go.
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as err:
      if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise RunDirError(
          _one_line(
            f'Cannot lock run directory {self._path} '
            f'({_describe_os_error(err)}); choose a --run_dir on a local '
            f'filesystem.'
          )
        ) from err
      pids = ' '.join(str(p) for p in self.node_holders())
      raise RunDirError(
        _one_line(
          f'Run directory {self._path} is still in use by node processes of an '
          f'earlier program whose launcher is gone (pids {pids or "unknown"} on host '
          f'{socket.gethostname()}); they stop on their own after saving their state: '
          f'wait a few seconds and launch again, or end them with: kill {pids or "<pid>"}'
        )
      ) from err
    finally:
      os.close(fd)

  @property
  def nodes_lock_path(self) -> pathlib.Path:
    """The file every node process of the program using the run flocks shared."""
    return self._path / _NODES_LOCK

  def node_holders(self) -> List[int]:
    """Pids on this host holding a lock on ``.lock.nodes`` (from /proc/locks; [] if unknown)."""
    try:
      st = os.stat(self.nodes_lock_path)
      with open('/proc/locks') as f:
        lines = f.read().splitlines()
    except OSError:
      return []
    # Each line: 'N: FLOCK  ADVISORY  READ  <pid> <major>:<minor>:<inode> 0 EOF'.
    wanted = f'{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}'
    pids = set()
    for line in lines:
      fields = line.split()
      if '->' in fields:
        continue  # A waiter, not a holder.
      if len(fields) >= 6 and fields[1] == 'FLOCK' and fields[5] == wanted:
        if fields[4].isdigit() and int(fields[4]) > 0:
          pids.add(int(fields[4]))
    return sorted(pids)

  def hold_for_node(self) -> None:
    """Holds a shared lock on ``.lock.nodes`` until this process exits (or ``release_node_hold``).

    Each node process of a local program calls this at start, so that
    ``acquire_lock`` refuses the run while any of them lives. Many nodes share
    it; only a launcher's short probe (``acquire_lock``) excludes them, so this
    waits for a probe to end rather than failing.

    Raises:
      RunDirError: the lock file can't be opened or locked.
    """
    if self._node_fd is not None:
      return
    try:
      fd = os.open(self.nodes_lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
      raise self._unwritable(err) from err
    deadline = time.monotonic() + _NODE_LOCK_WAIT_SECONDS
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        break
      except OSError as err:
        busy = err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
        if not busy or time.monotonic() > deadline:
          os.close(fd)
          why = 'held exclusively by another process' if busy else _describe_os_error(err)
          raise RunDirError(
            _one_line(f'Cannot take the node lock {self.nodes_lock_path} ({why}).')
          ) from err
        time.sleep(0.05)
    self._node_fd = fd

  def release_node_hold(self) -> None:
    """Lets go of ``hold_for_node``'s lock; a no-op if not held."""
    fd, self._node_fd = self._node_fd, None
    if fd is not None:
      os.close(fd)  # Closing the only descriptor of the open file drops its flock.

  def release_lock(self) -> None:
    """Releases the lock taken by ``acquire_lock``; a no-op if not held."""
    fd, self._lock_fd = self._lock_fd, None
    if fd is None:
      return
    try:
      # Clear our details so nobody reads them as a current holder. The
      # file itself stays: unlinking it would let two processes lock
      # different inodes under the same name.
      os.ftruncate(fd, 0)
    except OSError:
      pass
    finally:
      try:
        fcntl.flock(fd, fcntl.LOCK_UN)
      finally:
        os.close(fd)

  @property
  def locked(self) -> bool:
    """Whether this object currently holds the lock."""
    return self._lock_fd is not None

  # ---------------------------------------------------------- config/addresses

  def _read_json(self, name: str, missing_hint: str) -> dict:
    path = self._path / name
    try:
      text = path.read_text()
    except FileNotFoundError as err:
      raise RunDirError(_one_line(f'{path} does not exist; {missing_hint}')) from err
    except OSError as err:
      raise RunDirError(_one_line(f'Cannot read {path} ({_describe_os_error(err)}).')) from err
    try:
      value = json.loads(text)
    except ValueError as err:
      raise RunDirError(_one_line(f'{path} is not valid JSON ({err}); fix or delete it.')) from err
    if not isinstance(value, dict):
      raise RunDirError(
        _one_line(
          f'{path} should hold a JSON object, found {type(value).__name__}; fix or delete it.'
        )
      )
    return value

  def write_config(self, config: dict) -> None:
    """Atomically writes ``config`` as ``config.json``."""
    data = json.dumps(config, indent=2, sort_keys=True) + '\n'
    atomic_write_bytes(self._path / _CONFIG, data.encode())

  def read_config(self) -> dict:
    """Reads ``config.json``.

    Raises:
      RunDirError: it is missing or not a JSON object.
    """
    return self._read_json(_CONFIG, 'this is not an existing run; check --run_dir.')

  def write_addresses(self, addresses: dict) -> None:
    """Atomically writes ``addresses.json``, readable by the owner only (0o600)."""
    data = json.dumps(addresses, indent=2, sort_keys=True) + '\n'
    atomic_write_bytes(self._path / _ADDRESSES, data.encode(), mode=0o600)

  def read_addresses(self) -> dict:
    """Reads ``addresses.json``.

    Raises:
      RunDirError: it is missing (servers not started yet) or unreadable.
    """
    return self._read_json(
      _ADDRESSES,
      "the run's servers have not published their addresses yet; start "
      "the run's servers first or check --run_dir.",
    )


__all__ = ['RunDir', 'atomic_write_bytes']
