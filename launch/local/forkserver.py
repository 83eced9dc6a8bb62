"""A fork server for a local program's node processes: import once per launch, fork per node.

Every node process imports TensorFlow (through Reverb), JAX, Haiku, Acme and dm_control
before it does any work: about 9 s of CPU each. A program of six nodes on two cores spent
half a minute starting. The fork server imports them once; each node is then a fork of it,
which applies the node's own environment and runs Launchpad's entry script.

Launchpad still starts and watches every node. Its command for a node is
`[interpreter, process_entry.py, --data_file=..., --lp_task_id=N]`; with the fork server the
interpreter is a small wrapper that runs `launch/local/forkserver_client.py` (standard
library only). The client hands its arguments, environment, working directory and
stdin/stdout/stderr to the server over a Unix socket in a private (0700) directory, and
then stands in for the node: see that module. What the node does is unchanged: Launchpad's
entry script unpickles its job file as always.

Lifetime: the server dies with its launcher (a parent-death signal; it then passes SIGTERM
to its nodes so they save their state, and waits for them), ends when the launcher closes
its stdin, and kills a node whose client was killed. Nodes bind to the server as they would
to the launcher (launch.nodes.process): they die with it and hold the run's node lock.
"""

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Dict, Optional, Sequence

from agents.common.logs import get_logger

log = get_logger('launch')

HEADER = struct.Struct('!I')
MAX_REQUEST_BYTES = 4 << 20  # Arguments and an environment: kilobytes.
CLIENT = pathlib.Path(__file__).with_name('forkserver_client.py')
# A fork server that outlives launches: its socket (see SharedForkServer).
SHARED_ENV = 'COLLECT_INFER_FORK_SERVER'
# What every node process imports (the agents' builders come from the registry).
PRELOAD = (
  'launch.program',
  'launch.nodes.replay',
  'launch.nodes.counter',
  'launch.nodes.learner',
  'launch.nodes.actor',
  'launch.nodes.batched_actor',
  'launch.nodes.evaluator',
  'dm_control.suite',
  'haiku',
  'optax',
  'cloudpickle',
)


def _send(conn: socket.socket, message: dict) -> None:
  body = json.dumps(message).encode()
  conn.sendall(HEADER.pack(len(body)) + body)


def _recv_exact(conn: socket.socket, size: int, data: bytes = b'') -> bytes:
  while len(data) < size:
    chunk = conn.recv(size - len(data))
    if not chunk:
      raise ConnectionError('the client closed the connection mid-request')
    data += chunk
  return data


def _read_request(conn: socket.socket):
  """(request dict, [stdin, stdout, stderr] descriptors) from a client."""
  first, fds, _, _ = socket.recv_fds(conn, 65536, 3)
  try:
    head = _recv_exact(conn, HEADER.size, first[: HEADER.size])
    (size,) = HEADER.unpack(head)
    if size > MAX_REQUEST_BYTES or len(fds) != 3:
      raise ValueError(f'bad request: {size} bytes, {len(fds)} descriptors')
    body = _recv_exact(conn, size, first[HEADER.size :])
    request = json.loads(body)
    argv, env, cwd = request['argv'], request['env'], request['cwd']
    if not (
      isinstance(argv, list)
      and argv
      and all(isinstance(a, str) for a in argv)
      and isinstance(env, dict)
      and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
      and isinstance(cwd, str)
    ):
      raise ValueError('bad request: argv, env or cwd of the wrong type')
    return request, fds
  except BaseException:
    for fd in fds:
      os.close(fd)
    raise


def _apply_import_time_settings() -> None:
  """Settings the libraries read from the environment when imported, re-read for this node."""
  if 'jax' in sys.modules:
    jax = sys.modules['jax']
    jax.config.update('jax_platforms', os.environ.get('JAX_PLATFORMS') or None)


def _become_node(request: dict, fds: Sequence[int], server_pid: int) -> None:
  """In the forked child: take the client's descriptors, environment and arguments; run."""
  code = 1
  try:
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT):
      signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
      os.close(fd)
    os.chdir(request['cwd'])
    env = dict(request['env'])
    from launch.nodes.process import LAUNCHER_PID_ENV

    if LAUNCHER_PID_ENV in env:
      env[LAUNCHER_PID_ENV] = str(server_pid)  # The node's parent is this server.
    os.environ.clear()
    os.environ.update(env)
    _apply_import_time_settings()
    script = request['argv'][0]
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    import runpy

    try:
      runpy.run_path(script, run_name='__main__')
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
  finally:
    for stream in (sys.stdout, sys.stderr):
      try:
        stream.flush()
      except Exception:  # pylint: disable=broad-except
        pass
  os._exit(code)  # pylint: disable=protected-access


def serve(socket_path: str, preload: Sequence[str] = PRELOAD, agents: bool = True) -> None:
  """Imports `preload` (and with `agents` every registered agent's builder), then forks a
  node for each client until stdin closes."""
  from agents.common.quiet import quiet_third_party
  from launch.nodes.process import set_parent_death_signal

  set_parent_death_signal(signal.SIGTERM)
  quiet_third_party()  # Its nodes inherit the silence.
  started = time.monotonic()
  for module in preload:
    importlib.import_module(module)
  if agents:
    from agents import registry

    for name in registry.names():
      registry.get(name).builder_class()  # Imports each agent's learner, networks and actor.
  if 'jax' in sys.modules:
    from agents.common.jax_compat import backends_are_initialized

    if backends_are_initialized():
      raise RuntimeError('JAX started its backends while preloading: forking would be unsafe')

  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(socket_path)
  listener.listen(64)
  wake_r, wake_w = os.pipe()
  os.set_blocking(wake_w, False)
  signal.set_wakeup_fd(wake_w)
  orphaned = []
  signal.signal(signal.SIGTERM, lambda *_: orphaned.append(True))
  signal.signal(signal.SIGCHLD, lambda *_: None)
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the nodes themselves.
  selector = selectors.DefaultSelector()
  selector.register(listener, selectors.EVENT_READ, 'listen')
  selector.register(wake_r, selectors.EVENT_READ, 'wake')
  selector.register(sys.stdin, selectors.EVENT_READ, 'stdin')
  children: Dict[int, socket.socket] = {}
  accepting, passed_on = True, False
  print(f'imported the libraries in {time.monotonic() - started:.1f} s; forking nodes', flush=True)
  while accepting or children:
    for key, _ in selector.select(timeout=1.0):
      if key.data == 'wake':
        os.read(wake_r, 4096)
      elif key.data == 'stdin':
        if not os.read(sys.stdin.fileno(), 4096):
          selector.unregister(sys.stdin)
          accepting = False
      elif key.data == 'listen':
        conn, _ = listener.accept()
        _start_node(conn, listener, children, selector)
      else:  # A client: its connection closed (it was killed): so is its node.
        if not _peer_open(key.fileobj):
          selector.unregister(key.fileobj)
          with contextlib.suppress(ProcessLookupError):
            os.kill(key.data, signal.SIGKILL)
    if orphaned and not passed_on:
      passed_on, accepting = True, False
      for pid in children:
        with contextlib.suppress(ProcessLookupError):
          os.kill(pid, signal.SIGTERM)
    _reap(children, selector)
    if not accepting and listener.fileno() >= 0:
      selector.unregister(listener)
      listener.close()


def _peer_open(conn: socket.socket) -> bool:
  """False once the peer closed. Clients send nothing after their request; anything else
  is read and dropped, so a stray byte cannot keep the connection readable forever."""
  try:
    return conn.recv(4096, socket.MSG_DONTWAIT) != b''
  except BlockingIOError:
    return True
  except OSError:
    return False


def _start_node(conn, listener, children, selector) -> None:
  creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize('3i'))
  _, uid, _ = struct.unpack('3i', creds)
  if uid != os.getuid():
    conn.close()  # The directory is 0700; this is a second lock on the same door.
    return
  conn.settimeout(10.0)
  try:
    request, fds = _read_request(conn)
  except (OSError, ValueError, KeyError) as e:
    log.warning('fork server: refused a request (%s)', e)
    conn.close()
    return
  server_pid = os.getpid()
  pid = os.fork()
  if pid == 0:
    selector.close()
    listener.close()
    for other in children.values():
      other.close()
    conn.close()
    _become_node(request, fds, server_pid)
  for fd in fds:
    os.close(fd)
  children[pid] = conn
  try:
    _send(conn, {'pid': pid})
  except OSError:
    pass  # Its client is gone: the next select sees the closed connection.
  conn.setblocking(False)
  selector.register(conn, selectors.EVENT_READ, pid)


def _reap(children, selector) -> None:
  while children:
    try:
      pid, status = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
      return
    if pid == 0:
      return
    conn = children.pop(pid, None)
    if conn is None:
      continue
    if os.WIFSIGNALED(status):
      message = {'signal': os.WTERMSIG(status)}
    else:
      message = {'exit': os.waitstatus_to_exitcode(status)}
    try:
      selector.unregister(conn)
    except (KeyError, ValueError):
      pass
    try:
      conn.setblocking(True)
      _send(conn, message)
    except OSError:
      pass
    conn.close()


def _write_wrapper(directory: str, socket_path: str, client_args: Sequence[str] = ()) -> str:
  """The interpreter Launchpad runs for a node: the client, standing in for it."""
  path = os.path.join(directory, 'python')
  # -I -S: no site packages, no PYTHON* variables; the client needs the standard library.
  args = ' '.join(f'"{a}"' for a in (*client_args, socket_path))
  pathlib.Path(path).write_text(
    f'#!/bin/sh\nexec "{sys.executable}" -I -S "{CLIENT}" {args} "$@"\n'
  )
  os.chmod(path, 0o700)
  return path


class ForkServer:
  """The launcher's handle: starts the server, names the interpreter Launchpad should use."""

  def __init__(
    self,
    env: Dict[str, str],
    log_path: Optional[pathlib.Path] = None,
    preload: Sequence[str] = PRELOAD,
    agents: bool = True,
  ):
    self._dir = tempfile.mkdtemp(prefix='collect-infer-fork-')  # Mode 0700.
    self.socket_path = os.path.join(self._dir, 'socket')
    self.interpreter = _write_wrapper(self._dir, self.socket_path)
    out = open(log_path, 'a') if log_path else subprocess.DEVNULL
    self._process = subprocess.Popen(
      [sys.executable, '-m', 'launch.local.forkserver', '--socket', self.socket_path]
      + ['--preload', ','.join(preload)]
      + ([] if agents else ['--no_agents']),
      env={**os.environ, **env},
      stdin=subprocess.PIPE,
      stdout=out,
      stderr=subprocess.STDOUT,
    )
    self.pid = self._process.pid

  def wait_ready(self, timeout: float = 300.0) -> None:
    """Until the socket exists (the server has imported everything)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(self.socket_path):
      if self._process.poll() is not None:
        raise RuntimeError(f'the fork server exited ({self._process.returncode}) while starting')
      if time.monotonic() > deadline:
        raise RuntimeError(f'the fork server was not ready within {timeout:.0f} s')
      time.sleep(0.1)

  def stop(self, timeout: float = 10.0) -> None:
    """Ends the server once its nodes have exited (kills it after `timeout`)."""
    try:
      self._process.stdin.close()
      self._process.wait(timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
      self._process.kill()
      self._process.wait()
    shutil.rmtree(self._dir, ignore_errors=True)


class SharedForkServer:
  """A launch's handle on a fork server that outlives it (SHARED_ENV names its socket).

  Many launches in turn (a test session, a sweep) then pay for the imports once. Its
  nodes are the server's children, not the launcher's, so each node's client is told to
  die with this launcher: it then passes SIGTERM on to its node, which saves its state and
  exits, as when a per-launch server dies with its launcher.
  """

  def __init__(self, socket_path: str):
    self.socket_path = socket_path
    self._dir = tempfile.mkdtemp(prefix='collect-infer-fork-')  # Mode 0700.
    self.interpreter = _write_wrapper(
      self._dir, socket_path, ('--die-with-launcher', str(os.getpid()))
    )

  def wait_ready(self, timeout: float = 300.0) -> None:
    del timeout  # Shared: it is up, or it is gone.
    if not os.path.exists(self.socket_path):
      raise RuntimeError(f'the shared fork server {self.socket_path} ({SHARED_ENV}) is gone')

  def stop(self, timeout: float = 10.0) -> None:
    del timeout  # The server is not this launch's to stop.
    shutil.rmtree(self._dir, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--socket', required=True, help='Unix socket path to listen on')
  parser.add_argument('--preload', default=','.join(PRELOAD), help='modules to import first')
  parser.add_argument('--no_agents', action='store_true', help="skip the agents' builders")
  args = parser.parse_args(argv)
  serve(args.socket, [m for m in args.preload.split(',') if m], agents=not args.no_agents)


if __name__ == '__main__':
  main()
