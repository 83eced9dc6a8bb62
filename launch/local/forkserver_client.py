"""Stands in for one node process that the fork server runs (see launch.local.forkserver).

Launchpad starts it as the node's interpreter: `<wrapper> process_entry.py --data_file ...`,
where the wrapper runs `python -I -S forkserver_client.py SOCKET "$@"`. Standard library
only, and no site packages: it starts in tens of milliseconds, where a node's own imports
take about 9 s of CPU.

It hands the server its arguments, environment, working directory and stdin/stdout/stderr,
then mirrors the node: signals it gets are passed on, and it exits as the node did (the
same exit code, or killed by the same signal). If it is killed itself, its connection
closes and the server kills the node.

With `--die-with-launcher PID` (a server shared by many launches, whose nodes are not the
launcher's children) it also takes a parent-death SIGTERM, passed on like any other, so
the node stops and saves its state when its launcher dies.
"""

import json
import os
import select
import signal
import socket
import struct
import sys
import time

# What Launchpad (or a user) sends this process is meant for the node.
FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
# The terminal sends these to its whole process group, the node included: passing them on
# would deliver them twice (Launchpad's node takes a second Ctrl-C as "kill now").
GROUP_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
CONNECT_TIMEOUT_S = 120.0  # The server may still be importing when the first nodes start.
HEADER = struct.Struct('!I')


def _connect(path: str) -> socket.socket:
  deadline = time.monotonic() + CONNECT_TIMEOUT_S
  while True:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
      sock.connect(path)
      return sock
    except (FileNotFoundError, ConnectionRefusedError):
      sock.close()
      # The launcher makes the socket's directory before any client starts and removes
      # it with the server: without it, there is nothing to wait for.
      if time.monotonic() > deadline or not os.path.isdir(os.path.dirname(path)):
        raise
      time.sleep(0.1)


def _recv(sock: socket.socket, size: int, wake: int) -> bytes:
  """Up to `size` bytes, running signal handlers while it waits.

  A blocking recv would not: a signal that lands after the interpreter's last check and
  before the call only sets a flag, and its handler would wait for the node to exit, which
  waits for the signal (seen under load: SIGTERM never passed on). The wakeup fd gets a
  byte for every signal, so the select returns and the handler runs.
  """
  while True:
    ready, _, _ = select.select([sock, wake], [], [])
    if wake in ready:
      os.read(wake, 4096)  # The handlers run at the next bytecode.
    if sock in ready:
      return sock.recv(size)


def _read_message(sock: socket.socket, wake: int) -> dict:
  """One length-prefixed JSON message; {} when the server closed the connection."""
  data = b''
  while len(data) < HEADER.size:
    chunk = _recv(sock, HEADER.size - len(data), wake)
    if not chunk:
      return {}
    data += chunk
  (size,) = HEADER.unpack(data)
  body = b''
  while len(body) < size:
    chunk = _recv(sock, size - len(body), wake)
    if not chunk:
      return {}
    body += chunk
  return json.loads(body)


def _die_with_parent(launcher: int, sig: int) -> None:
  """`sig` to this process when its parent (the launcher, `launcher`) dies."""
  import ctypes  # pylint: disable=import-outside-toplevel

  libc = ctypes.CDLL(None, use_errno=True)
  libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
  if os.getppid() != launcher:  # Died before the signal was armed: start nothing.
    sys.stderr.write(f'[launch] the launcher (pid {launcher}) is gone; not starting the node\n')
    os._exit(1)


def main(argv) -> None:
  launcher = None
  if len(argv) > 2 and argv[1] == '--die-with-launcher':
    launcher, argv = int(argv[2]), argv[:1] + argv[3:]
  if len(argv) < 3:
    sys.stderr.write(
      'usage: forkserver_client.py [--die-with-launcher PID] SOCKET SCRIPT [ARGS...]\n'
    )
    os._exit(2)
  path, command = argv[1], argv[2:]
  pending = []
  child = []

  def forward(sig, frame):
    del frame
    if child:
      try:
        os.kill(child[0], sig)
      except ProcessLookupError:
        pass
    else:
      pending.append(sig)

  wake, wake_w = os.pipe()
  os.set_blocking(wake, False)
  os.set_blocking(wake_w, False)
  signal.set_wakeup_fd(wake_w)
  for sig in FORWARDED:
    signal.signal(sig, forward)
  for sig in GROUP_SIGNALS:
    signal.signal(sig, signal.SIG_IGN)
  if launcher is not None:
    _die_with_parent(launcher, signal.SIGTERM)
  try:
    sock = _connect(path)
  except OSError as e:
    sys.stderr.write(f'[launch] the fork server at {path} is not reachable: {e}\n')
    os._exit(1)
  request = json.dumps({'argv': command, 'env': dict(os.environ), 'cwd': os.getcwd()}).encode()
  data = HEADER.pack(len(request)) + request
  sent = socket.send_fds(sock, [data], [0, 1, 2])
  sock.sendall(data[sent:])
  reply = _read_message(sock, wake)
  if 'pid' not in reply:
    sys.stderr.write(f'[launch] the fork server refused to start {command[:1]}: {reply}\n')
    os._exit(1)
  child.append(int(reply['pid']))
  for sig in pending:
    forward(sig, None)
  status = _read_message(sock, wake)  # Signals in between are forwarded.
  if 'signal' in status:
    sig = int(status['signal'])
    for forwarded in FORWARDED + GROUP_SIGNALS:
      signal.signal(forwarded, signal.SIG_DFL)
    if sig not in (signal.SIGKILL, signal.SIGSTOP):
      signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # A signal whose default is to be ignored.
  if 'exit' in status:
    os._exit(int(status['exit']))
  sys.stderr.write('[launch] the fork server went away before the node exited\n')
  os._exit(1)


if __name__ == '__main__':
  main(sys.argv)
