"""One program per run directory: the node lock, nodes bound to their launcher, Slurm's queue.

Real files, real flocks, real processes and real signals. The Slurm check runs against a
fake `squeue` script on PATH: the external tool's interface, not our code.
"""

import ctypes
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agents.common.errors import RunDirError
from launch.config import ExperimentConfig
from launch.nodes import process as node_process
from launch.run_dir import RunDir
from launch.slurm.submit import SlurmError, refuse_if_queued
from tests.e2e_util import ROOT, pid_alive

_PR_GET_PDEATHSIG = 2


def _env() -> dict:
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
    [str(ROOT)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else [])
  )
  for name in (node_process.LAUNCHER_PID_ENV, node_process.RUN_DIR_ENV):
    env.pop(name, None)
  return env


def _wait_gone(pid: int, timeout: float) -> bool:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if not pid_alive(pid):
      return True
    time.sleep(0.05)
  return not pid_alive(pid)


# ----------------------------------------------------------------------------- the node lock


def test_a_node_holding_the_run_refuses_a_launch_until_it_lets_go(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  node = RunDir(run.path)
  node.hold_for_node()
  try:
    with pytest.raises(RunDirError) as info:
      run.acquire_lock()
    message = str(info.value)
    assert '\n' not in message
    assert 'still in use by node processes' in message
    assert f'pids {os.getpid()} ' in message and f'kill {os.getpid()}' in message
    assert not run.locked
  finally:
    node.release_node_hold()
  run.acquire_lock()  # Refusing released the launcher's own lock: the run is free now.
  assert run.locked
  run.release_lock()


def test_the_launchers_probe_lets_its_own_nodes_share_the_run(tmp_path):
  launcher = RunDir(tmp_path / 'run')
  launcher.create()
  launcher.acquire_lock()
  nodes = [RunDir(launcher.path) for _ in range(3)]
  try:
    for node in nodes:
      node.hold_for_node()  # Shared: every node of the program holds it at once.
    assert launcher.node_holders() == [os.getpid()]
    second = RunDir(launcher.path)
    with pytest.raises(RunDirError, match='in use by a live program'):
      second.acquire_lock()
  finally:
    for node in nodes:
      node.release_node_hold()
    launcher.release_lock()


# ------------------------------------------------------------------- nodes bound to a launcher

# A stand-in launcher: starts a node process bound to it as the real launcher does
# (node_process.node_env in the node's environment), prints the node's pid, then waits.
_LAUNCHER = textwrap.dedent("""
    import os, subprocess, sys
    from launch.nodes.process import node_env
    node = subprocess.Popen([sys.executable, '-c', sys.argv[2]],
                            env={**os.environ, **node_env(sys.argv[1])})
    print(node.pid, flush=True)
    sys.stdin.read()
""")

# A stand-in node: binds itself like every node (announce_process), says so, then runs until
# SIGTERM, which it answers as a node does on stop: it saves its state, then exits.
_NODE = textwrap.dedent("""
    import pathlib, signal, sys, time
    from launch.nodes.process import announce_process
    done = pathlib.Path(sys.argv[1])
    def on_term(signum, frame):
      done.write_text('saved on SIGTERM')
      sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    announce_process('fake_node')
    done.with_suffix('.bound').write_text('bound')
    while True:
      time.sleep(0.1)
""")


def test_a_node_gets_sigterm_when_its_launcher_is_killed_and_holds_the_run_until_it_exits(
  tmp_path,
):
  run = RunDir(tmp_path / 'run')
  run.create()
  saved = tmp_path / 'node.saved'
  node_code = _NODE.replace('sys.argv[1]', repr(str(saved)))
  launcher = subprocess.Popen(
    [sys.executable, '-c', _LAUNCHER, str(run.path), node_code],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    env=_env(),
    cwd=ROOT,
    text=True,
  )
  node_pid = int(launcher.stdout.readline())
  try:
    deadline = time.monotonic() + 60
    while not saved.with_suffix('.bound').exists():
      assert time.monotonic() < deadline and pid_alive(node_pid), 'the node never bound itself'
      time.sleep(0.05)
    os.kill(node_pid, signal.SIGSTOP)  # Holds it (alive, lock held) past the launcher's death.
    launcher.kill()
    launcher.wait(timeout=10)
    with pytest.raises(
      RunDirError, match=f'earlier program whose launcher is gone .pids {node_pid} '
    ):
      run.acquire_lock()
    os.kill(node_pid, signal.SIGCONT)  # The parent-death SIGTERM is pending: now it is handled.
    assert _wait_gone(node_pid, timeout=10), 'the node outlived its launcher'
    assert saved.read_text() == 'saved on SIGTERM'
    run.acquire_lock()
    run.release_lock()
  finally:
    for pid in (node_pid, launcher.pid):
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    launcher.stdin.close()


def test_a_node_whose_launcher_is_already_gone_exits_before_starting(tmp_path):
  run = RunDir(tmp_path / 'run')
  run.create()
  # The parent here is this test process, not the "launcher" the environment names.
  env = {**_env(), node_process.LAUNCHER_PID_ENV: '1', node_process.RUN_DIR_ENV: str(run.path)}
  done = subprocess.run(
    [
      sys.executable,
      '-c',
      "from launch.nodes.process import announce_process; announce_process('n'); print('started')",
    ],
    env=env,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert done.returncode == 1, done.stderr
  assert 'started' not in done.stdout
  assert 'the launcher (pid 1) is gone' in done.stdout + done.stderr


def test_a_process_not_started_by_a_local_launcher_is_not_bound(tmp_path, monkeypatch):
  monkeypatch.delenv(node_process.LAUNCHER_PID_ENV, raising=False)
  monkeypatch.setenv(node_process.RUN_DIR_ENV, str(tmp_path))
  from launch.nodes.process import announce_process

  # Nodes as threads of the launcher (local_mt), Slurm job steps, in-process tests.
  announce_process('in_process')
  libc = ctypes.CDLL(None, use_errno=True)
  sig = ctypes.c_int(-1)
  assert libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0) == 0
  assert sig.value == 0
  assert not (tmp_path / '.lock.nodes').exists()


# ---------------------------------------------------------------------------- Slurm's queue


def _fake_squeue(bin_dir: pathlib.Path, state: str) -> None:
  """`squeue -h -j JOB -o %T` answering `state` for job 4242 (nothing for others)."""
  bin_dir.mkdir(exist_ok=True)
  script = bin_dir / 'squeue'
  script.write_text(
    textwrap.dedent(f"""\
      #!/bin/sh
      case "$*" in *"-j 4242"*) [ -n "{state}" ] && echo "{state}";; esac
      exit 0
      """)
  )
  script.chmod(0o755)


def _run_with_job(tmp_path: pathlib.Path) -> ExperimentConfig:
  run = tmp_path / 'run'
  (run / 'slurm').mkdir(parents=True)
  (run / 'slurm' / 'job_id').write_text('4242\n')
  return ExperimentConfig(run_dir=str(run))


@pytest.mark.parametrize('state', ['PENDING', 'RUNNING'])
def test_a_local_launch_is_refused_while_the_runs_slurm_job_is_queued(tmp_path, monkeypatch, state):
  config = _run_with_job(tmp_path)
  _fake_squeue(tmp_path / 'bin', state)
  monkeypatch.setenv('PATH', f'{tmp_path / "bin"}:{os.environ["PATH"]}')
  with pytest.raises(SlurmError) as info:
    refuse_if_queued(config)
  assert '\n' not in str(info.value)
  assert f'Slurm job 4242 ({state})' in str(info.value) and 'scancel 4242' in str(info.value)


def test_a_finished_job_or_no_slurm_does_not_refuse_a_local_launch(tmp_path, monkeypatch):
  config = _run_with_job(tmp_path)
  _fake_squeue(tmp_path / 'bin', '')  # The job has left the queue.
  monkeypatch.setenv('PATH', f'{tmp_path / "bin"}:{os.environ["PATH"]}')
  refuse_if_queued(config)
  monkeypatch.setenv('PATH', str(tmp_path / 'empty'))  # No squeue at all: skipped quietly.
  refuse_if_queued(config)


def test_the_command_refuses_a_local_run_while_its_slurm_job_runs(tmp_path):
  config = _run_with_job(tmp_path)
  _fake_squeue(tmp_path / 'bin', 'RUNNING')
  env = {**_env(), 'PATH': f'{tmp_path / "bin"}:{os.environ["PATH"]}'}
  done = subprocess.run(
    [sys.executable, '-m', 'experiments.collect_infer', '--run_dir', config.run_dir],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 2, done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'Slurm job 4242 (RUNNING)' in errors[0], done.stderr
  assert 'Traceback' not in done.stderr
  assert not (pathlib.Path(config.run_dir) / 'config.json').exists()  # Nothing was started.
