"""The fork server with real processes: a node started through it looks, to Launchpad, like
one started as a fresh interpreter (exit codes, signals, output, environment)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launch.local.forkserver import ForkServer
from launch.nodes.process import LAUNCHER_PID_ENV
from tests.e2e_util import pid_alive

NODE = textwrap.dedent(
  """
  import json, os, signal, sys, time
  if sys.argv[1] == 'term':
    signal.signal(signal.SIGTERM, lambda *_: (print('stopping', flush=True), sys.exit(7)))
  print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'argv': sys.argv,
                    'cwd': os.getcwd(), 'foo': os.environ.get('FOO'),
                    'launcher': os.environ.get('COLLECT_INFER_LAUNCHER_PID'),
                    'numpy': 'numpy' in sys.modules}), flush=True)
  mode = sys.argv[1]
  if mode == 'exit':
    sys.exit(int(sys.argv[2]))
  if mode == 'raise':
    raise ValueError('the node failed')
  # Short sleeps: Python 3.10 misses a signal that lands just before a long sleep's select
  # and sleeps on (seen in CI: the SIGTERM test timed out).
  for _ in range(600):
    time.sleep(0.1)
  """
)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  server = ForkServer({}, preload=['numpy'], agents=False)
  server.wait_ready(timeout=120)
  yield server
  server.stop()


@pytest.fixture
def node(tmp_path):
  path = tmp_path / 'node.py'
  path.write_text(NODE)
  return str(path)


def _start(server, node, *args, **kwargs) -> subprocess.Popen:
  return subprocess.Popen(
    [server.interpreter, node, *args], stdout=subprocess.PIPE, text=True, **kwargs
  )


def _hello(proc) -> dict:
  import json

  return json.loads(proc.stdout.readline())


def test_the_node_runs_with_the_clients_arguments_environment_and_directory(server, node, tmp_path):
  env = {**os.environ, 'FOO': 'bar', LAUNCHER_PID_ENV: str(os.getpid())}
  proc = _start(server, node, 'exit', '3', env=env, cwd=tmp_path)
  hello = _hello(proc)
  assert proc.wait(timeout=30) == 3
  assert hello['argv'] == [node, 'exit', '3'] and hello['cwd'] == str(tmp_path)
  assert hello['foo'] == 'bar' and hello['numpy'], hello  # Preloaded, not imported again.
  # A fork of the server, which its nodes bind to in place of the launcher.
  assert hello['ppid'] == server.pid == int(hello['launcher']) != proc.pid


def test_a_failing_node_exits_1_with_its_traceback(server, node):
  proc = _start(server, node, 'raise', stderr=subprocess.PIPE)
  assert proc.wait(timeout=30) == 1
  assert 'ValueError: the node failed' in proc.stderr.read()


def test_sigterm_to_the_client_reaches_the_node(server, node):
  proc = _start(server, node, 'term')
  _hello(proc)
  proc.send_signal(signal.SIGTERM)  # What Launchpad sends to stop a node.
  assert proc.wait(timeout=30) == 7
  assert proc.stdout.read() == 'stopping\n'


def test_a_node_killed_by_a_signal_is_a_client_killed_by_that_signal(server, node):
  proc = _start(server, node, 'sleep')
  os.kill(_hello(proc)['pid'], signal.SIGKILL)
  assert proc.wait(timeout=30) == -signal.SIGKILL


def test_killing_the_client_kills_the_node(server, node):
  proc = _start(server, node, 'sleep')
  pid = _hello(proc)['pid']
  proc.kill()  # Launchpad's kill once the termination notice has passed.
  proc.wait(timeout=30)
  deadline = time.time() + 10
  while pid_alive(pid) and time.time() < deadline:
    time.sleep(0.1)
  assert not pid_alive(pid)


def test_the_server_ends_with_its_launcher_s_pipe_and_refuses_nothing_before(node):
  server = ForkServer({}, preload=[], agents=False)
  server.wait_ready(timeout=120)
  proc = _start(server, node, 'exit', '0')
  assert proc.wait(timeout=30) == 0
  server.stop(timeout=10)
  assert not pid_alive(server.pid) and not os.path.exists(server.socket_path)
  # A client started after its server is gone says so and fails.
  gone = subprocess.run(
    [sys.executable, '-I', '-S', 'launch/local/forkserver_client.py', server.socket_path, node],
    capture_output=True,
    text=True,
    env={**os.environ, 'PYTHONPATH': ''},
    timeout=200,
  )
  assert gone.returncode == 1 and 'fork server' in gone.stderr


LAUNCHER = textwrap.dedent(
  """
  import subprocess, sys, time
  from launch.local.forkserver import SharedForkServer
  shared = SharedForkServer(sys.argv[1])
  subprocess.Popen([shared.interpreter, sys.argv[2], 'term'])
  time.sleep(60)
  """
)


def test_a_shared_servers_node_stops_as_on_a_signal_when_its_launcher_is_killed(
  server, node, tmp_path
):
  # A shared server's nodes are not the launcher's children: the client passes the
  # launcher's death on to its node as SIGTERM (it saves its state and exits).
  script = tmp_path / 'launcher.py'
  script.write_text(LAUNCHER)
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  launcher = subprocess.Popen(
    [sys.executable, str(script), server.socket_path, node],
    stdout=subprocess.PIPE,
    text=True,
    env={**os.environ, 'PYTHONPATH': root},
  )
  hello = _hello(launcher)
  assert hello['ppid'] == server.pid and pid_alive(hello['pid'])
  launcher.kill()
  launcher.wait(timeout=10)
  assert launcher.stdout.readline().strip() == 'stopping'
  deadline = time.time() + 10
  while pid_alive(hello['pid']) and time.time() < deadline:
    time.sleep(0.05)
  assert not pid_alive(hello['pid'])
