"""What every node process does first: quiet logs, say who it is, bind to its launcher.

Binding a local program's node processes to their launcher:

The launcher holds the run's lock. Were it killed (kill -9, the OOM killer) its node
processes would run on, with the lock free, and a second program could start on the same
run directory. So each node process of a local multi-process program, when it starts:

- asks Linux to send it SIGTERM when its parent, the launcher, dies (prctl
  PR_SET_PDEATHSIG). SIGTERM, not SIGKILL: a node stops as on Ctrl-C, so the learner and
  replay still write their final checkpoints (Launchpad's handler in the node ends it
  after its termination notice if it hangs);
- holds the run's node lock (`RunDir.hold_for_node`): a launch on the run is refused
  while any node of the program lives, also while it saves its state after the launcher
  is gone;
- exits at once if the launcher already died before this hook ran (the signal is only
  sent for deaths after the prctl call).

Linux sends the parent-death signal when the *thread* that started the child exits. The
launcher starts every node (Launchpad's `lp.launch`, and actor restarts in
`launch.local.supervision.wait_local_mp`) from the thread that calls `launch()`, which
lives until the program has stopped, so only the launcher's death sends it.

The launcher passes its pid and the run directory in the nodes' environment
(`node_env`); without them (nodes as threads of the launcher, Slurm job steps, tests)
this does nothing.
"""

import ctypes
import os
import signal
import sys
from typing import Dict, List

from agents.common.logs import get_logger
from launch.run_dir import RunDir

# The program's node groups, in the order they start.
GROUPS = ('replay', 'counter', 'learner', 'gateway', 'actor', 'evaluator')
LAUNCHER_PID_ENV = 'COLLECT_INFER_LAUNCHER_PID'
RUN_DIR_ENV = 'COLLECT_INFER_RUN_DIR'

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = get_logger('launch')

# The node lock lives as long as its open file: keep the RunDir for the process's lifetime.
_held: List[RunDir] = []


def node_env(run_dir: os.PathLike) -> Dict[str, str]:
  """The environment entries that bind a node process started by this process to it."""
  return {LAUNCHER_PID_ENV: str(os.getpid()), RUN_DIR_ENV: os.fspath(run_dir)}


def process_env(group: str) -> Dict[str, str]:
  """Per-group environment: quiet TensorFlow; actors, evaluator and gateway on one CPU thread."""
  env = {
    'TF_CPP_MIN_LOG_LEVEL': '3',
    'XLA_PYTHON_CLIENT_PREALLOCATE': 'false',
    'PYTHONUNBUFFERED': '1',
    'PYTHONWARNINGS': 'ignore',
    # State features need no renderer; a user's choice (e.g. egl for pixels) wins.
    'MUJOCO_GL': os.environ.get('MUJOCO_GL', 'disable'),
  }
  if group in ('actor', 'evaluator', 'gateway'):
    env.update(
      JAX_PLATFORMS='cpu',
      OMP_NUM_THREADS='1',
      XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1',
    )
  return env


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
  """Has the kernel send `sig` to this process when its parent dies; False where unsupported."""
  if not sys.platform.startswith('linux'):
    return False
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err))
  return True


def bind_to_launcher() -> None:
  """In a node process: die with the launcher, hold the run's node lock (see the module doc)."""
  launcher = os.environ.pop(LAUNCHER_PID_ENV, '')
  run_dir = os.environ.pop(RUN_DIR_ENV, '')
  if not launcher.isdigit():
    return
  set_parent_death_signal(signal.SIGTERM)
  if run_dir:
    run = RunDir(run_dir)
    run.hold_for_node()
    _held.append(run)
  if os.getppid() != int(launcher):
    # Reparented: the launcher died before the signal was armed. Nothing is started yet.
    log.warning('the launcher (pid %s) is gone; exiting before starting', launcher)
    os._exit(1)  # pylint: disable=protected-access


def quiet_node_logs() -> None:
  """Keeps a node's terminal output to warnings and our own progress lines."""
  from absl import logging as absl_logging

  absl_logging.set_verbosity(absl_logging.WARNING)


def announce_process(name: str) -> None:
  """One line saying which process runs a node (for `kill`, `py-spy`, `top -p`).

  Every node calls it first thing, so it also binds a node process to its launcher
  (`bind_to_launcher` below: the node dies with the launcher and holds the run's
  node lock); a no-op for nodes that are not processes started by a local launcher.
  """
  import os
  import socket

  bind_to_launcher()
  get_logger(name).info('running as pid %d on %s', os.getpid(), socket.gethostname())
