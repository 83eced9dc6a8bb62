"""The loopback bind shim (launch.loopback) and the bind setting that uses it."""

import os
import pathlib
import subprocess
import sys

import pytest

from agents.common.errors import ConfigError
from launch import loopback
from launch.config import ExperimentConfig
from launch.local.launcher import bind_env
from tests.listening import listening

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A child that starts a Reverb server, a Courier server and a socket bound explicitly to
# 127.0.0.2, calls both servers at localhost, prints the three ports, and waits for its
# stdin to close.
SERVERS = """
import socket, sys
import courier, reverb
replay = reverb.Server([reverb.Table.queue('q', 10)], port=None)
reverb.Client(f'localhost:{replay.port}').insert([1], {'q': 1.0})
assert replay.localhost_client().server_info()['q'].current_size == 1
rpc = courier.Server('rpc')
rpc.Bind('ping', lambda: 'pong')
rpc.Start()
assert courier.Client(f'localhost:{rpc.port}').ping() == 'pong'
explicit = socket.socket()
explicit.bind(('127.0.0.2', 0))
explicit.listen()
print(replay.port, rpc.port, explicit.getsockname()[1], flush=True)
sys.stdin.read()
"""


def _start_servers(env) -> subprocess.Popen:
  """A child that starts the servers (SERVERS) with `env`; see _listening_servers."""
  return subprocess.Popen(
    [sys.executable, '-c', SERVERS],
    cwd=ROOT,
    env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', **env},
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )


def _listening_servers(child: subprocess.Popen):
  """{'replay' | 'courier' | 'explicit': [Listener]} of a child of _start_servers."""
  try:
    ports = dict(zip(('replay', 'courier', 'explicit'), map(int, child.stdout.readline().split())))
    assert len(ports) == 3, f'the child printed no ports (exit code {child.poll()})'
    found = listening([child.pid])
    return {name: [s for s in found if s.port == port] for name, port in ports.items()}
  finally:
    child.stdin.close()
    child.wait(timeout=60)


def test_servers_listen_on_every_interface_without_the_shim_and_on_loopback_with_it():
  # Both children at once: each spends most of its time importing Reverb (TensorFlow).
  plain_child = _start_servers({'LD_PRELOAD': ''})
  shimmed_child = _start_servers(loopback.preload_env({}))
  plain = _listening_servers(plain_child)
  for name in ('replay', 'courier'):  # Reverb and Courier hard-code [::]:<port>.
    assert plain[name] and all(s.wildcard for s in plain[name]), (name, plain)
  # With it, the same servers listen on loopback only, and clients reach them at localhost.
  shimmed = _listening_servers(shimmed_child)
  for name in ('replay', 'courier'):
    assert shimmed[name], (name, shimmed)
    assert all(s.loopback and not s.wildcard for s in shimmed[name]), (name, shimmed)
  # A bind to a named address is left as it was.
  assert [str(s.address) for s in shimmed['explicit']] == ['127.0.0.2'], shimmed


def test_the_shim_is_built_outside_the_source_tree_and_kept(tmp_path, monkeypatch):
  monkeypatch.setenv(loopback.CACHE_ENV, str(tmp_path / 'cache'))
  path = loopback.build()
  assert path.parent == tmp_path / 'cache' and path.exists()
  mtime = path.stat().st_mtime_ns
  assert loopback.build() == path and path.stat().st_mtime_ns == mtime  # Built once.
  monkeypatch.delenv(loopback.CACHE_ENV)
  # By default in the environment's (or the user's) cache, never among the sources: a
  # .venv inside the checkout is fine, the package folder or another tracked one is not.
  default = loopback.library_path()
  assert loopback.SOURCE.parent not in default.parents
  assert pathlib.Path(sys.prefix) in default.parents or ROOT not in default.parents, default


def test_no_compiler_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setenv(loopback.CACHE_ENV, str(tmp_path / 'cache'))
  monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
  monkeypatch.delenv('CC', raising=False)
  with pytest.raises(loopback.LoopbackError, match='apt-get install gcc') as e:
    loopback.build()
  assert '\n' not in str(e.value) and '--bind all' in str(e.value)


def test_a_users_ld_preload_is_kept_after_the_shim():
  env = loopback.preload_env({'LD_PRELOAD': '/opt/a.so:/opt/b.so'})
  assert env['LD_PRELOAD'].split() == [str(loopback.library_path()), '/opt/a.so', '/opt/b.so']
  again = loopback.preload_env({'LD_PRELOAD': env['LD_PRELOAD']})
  assert again == env  # Not added twice (a node's environment passed on).


def test_local_launches_preload_the_shim_unless_bind_is_all(tmp_path):
  config = ExperimentConfig(run_dir=str(tmp_path / 'run'))
  assert config.bind == 'loopback'
  assert str(loopback.library_path()) in bind_env(config)['LD_PRELOAD']
  assert bind_env(ExperimentConfig(run_dir=str(tmp_path / 'run'), bind='all')) == {}


def test_local_mt_refuses_loopback_in_a_process_started_without_the_shim(tmp_path):
  assert not loopback.active()
  config = ExperimentConfig(run_dir=str(tmp_path / 'run'), launch_type='local_mt')
  with pytest.raises(ConfigError, match='started without the loopback bind shim'):
    bind_env(config)


def test_slurm_needs_bind_all_and_says_why():
  with pytest.raises(ConfigError, match=r'--bind all.*run code') as e:
    ExperimentConfig(launch_type='slurm')
  assert 'trusted' in str(e.value)
  assert ExperimentConfig(launch_type='slurm', bind='all').bind == 'all'
  with pytest.raises(ConfigError, match='bind='):
    ExperimentConfig(bind='everywhere')
