"""Tests for launch.run_dir, on real files and real processes."""

import json
import os
import pathlib
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from agents.common.errors import RunDirError, UserError
from agents.common.files import atomic_write_bytes
from launch.run_dir import RunDir

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Takes the lock, reports "locked", then holds it until stdin closes, so the
# test controls exactly how long the lock is held without sleeping.
_HOLDER = textwrap.dedent("""
    import sys
    from launch.run_dir import RunDir
    run = RunDir(sys.argv[1])
    run.acquire_lock()
    print("locked", flush=True)
    sys.stdin.read()
""")


def _start_holder(run_path: pathlib.Path) -> subprocess.Popen:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
    [str(REPO_ROOT)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else [])
  )
  proc = subprocess.Popen(
    [sys.executable, '-c', _HOLDER, str(run_path)],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    env=env,
    text=True,
  )
  line = proc.stdout.readline()
  if line.strip() != 'locked':
    proc.kill()
    _, err = proc.communicate(timeout=10)
    pytest.fail(f'lock holder failed to start: {err}')
  return proc


def test_create_makes_layout(tmp_path):
  run = RunDir(tmp_path / 'runs' / 'exp1')
  run.create()
  assert run.path == tmp_path / 'runs' / 'exp1'
  for directory in (run.path, run.logs, run.checkpoints, run.replay):
    assert directory.is_dir()
  assert run.checkpoints == run.path / 'checkpoints'
  assert run.replay == run.path / 'replay'
  assert run.logs == run.path / 'logs'
  # The writability probe is cleaned up; creating twice is fine.
  run.create()
  assert sorted(p.name for p in run.path.iterdir()) == ['checkpoints', 'logs', 'replay']


def test_create_under_a_file_is_a_one_line_error(tmp_path):
  # Tests run as root, so permissions can't make a path unwritable; a regular
  # file in the parent chain can.
  (tmp_path / 'afile').write_text('not a directory')
  bad = tmp_path / 'afile' / 'run'
  with pytest.raises(RunDirError) as info:
    RunDir(bad).create()
  message = str(info.value)
  assert '\n' not in message
  assert str(bad) in message
  assert '--run_dir' in message
  assert isinstance(info.value, UserError)


def test_create_when_run_path_is_a_file(tmp_path):
  target = tmp_path / 'run'
  target.write_text('oops')
  with pytest.raises(RunDirError, match='writable --run_dir'):
    RunDir(target).create()


@pytest.mark.skipif(os.geteuid() == 0, reason='root ignores directory permissions')
def test_create_in_read_only_parent(tmp_path):
  parent = tmp_path / 'ro'
  parent.mkdir()
  parent.chmod(0o500)
  try:
    with pytest.raises(RunDirError, match='writable --run_dir'):
      RunDir(parent / 'run').create()
  finally:
    parent.chmod(0o700)


def test_exists_means_config_written(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  assert not run.exists()
  run.write_config({'seed': 3, 'env': {'name': 'cartpole'}})
  assert run.exists()
  assert run.read_config() == {'seed': 3, 'env': {'name': 'cartpole'}}


def test_read_config_missing_or_bad(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  with pytest.raises(RunDirError, match='config.json'):
    run.read_config()
  (run.path / 'config.json').write_text('{truncated')
  with pytest.raises(RunDirError, match='not valid JSON'):
    run.read_config()


def test_lock_refused_while_live_process_holds_it(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  holder = _start_holder(run.path)
  try:
    with pytest.raises(RunDirError) as info:
      run.acquire_lock()
    message = str(info.value)
    assert '\n' not in message
    assert f'pid {holder.pid}' in message
    assert socket.gethostname() in message
    assert 'in use by a live program' in message
    assert '--run_dir' in message
    assert not run.locked
  finally:
    holder.stdin.close()
    holder.wait(timeout=10)
  # Holder exited normally: the lock is free.
  run.acquire_lock()
  assert run.locked
  info = json.loads(run.lock_path.read_text())
  assert info['pid'] == os.getpid()
  run.release_lock()
  assert not run.locked


def test_lock_freed_when_holder_is_killed(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  holder = _start_holder(run.path)
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=10)
  holder.stdin.close()
  # The lock file still names the dead holder, but the kernel dropped the flock.
  assert json.loads(run.lock_path.read_text())['pid'] == holder.pid
  run.acquire_lock()
  assert json.loads(run.lock_path.read_text())['pid'] == os.getpid()
  run.release_lock()


def test_stale_lock_file_does_not_block(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  run.lock_path.write_text(
    json.dumps({'pid': 999999, 'host': 'elsewhere', 'started': '2001-01-01T00:00:00+00:00'})
  )
  run.acquire_lock()
  info = json.loads(run.lock_path.read_text())
  assert info['pid'] == os.getpid()
  assert info['host'] == socket.gethostname()
  assert 'started' in info
  run.release_lock()


def test_lock_is_exclusive_within_one_process(tmp_path):
  first = RunDir(tmp_path / 'run')
  first.create()
  first.acquire_lock()
  first.acquire_lock()  # re-acquiring on the same object is a no-op
  second = RunDir(tmp_path / 'run')
  with pytest.raises(RunDirError, match=f'pid {os.getpid()}'):
    second.acquire_lock()
  first.release_lock()
  first.release_lock()  # releasing twice is harmless
  second.acquire_lock()
  second.release_lock()


def test_addresses_are_private_and_round_trip(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  with pytest.raises(RunDirError, match='addresses.json'):
    run.read_addresses()
  # A pre-existing world-readable file must be replaced by a private one.
  (run.path / 'addresses.json').write_text('{}')
  os.chmod(run.path / 'addresses.json', 0o644)
  addresses = {'replay': 'localhost:1234', 'inference': ['10.0.0.1:5000', '10.0.0.2:5000']}
  run.write_addresses(addresses)
  mode = stat.S_IMODE(os.stat(run.path / 'addresses.json').st_mode)
  assert mode == 0o600
  assert run.read_addresses() == addresses
  assert not [p for p in run.path.iterdir() if p.name.endswith('.tmp')]


def test_atomic_write_bytes(tmp_path):
  target = tmp_path / 'file.bin'
  atomic_write_bytes(target, b'one')
  atomic_write_bytes(target, b'two')
  assert target.read_bytes() == b'two'
  assert stat.S_IMODE(os.stat(target).st_mode) == 0o644 & ~_umask()
  assert sorted(p.name for p in tmp_path.iterdir()) == ['file.bin']


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path):
  target = tmp_path / 'file.bin'
  atomic_write_bytes(target, b'old')
  with pytest.raises(TypeError):
    atomic_write_bytes(target, object())  # not bytes: fails mid-write
  assert target.read_bytes() == b'old'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['file.bin']


def _umask() -> int:
  current = os.umask(0)
  os.umask(current)
  return current
