"""Waiting on a local multi-process program, and what happens when an actor process dies.

Launchpad's own wait stops the whole program on the first failed process. An
actor is expendable: its completed episodes are already stored and replayed,
so by config the program restarts it (`actor_failures='restart'`, bounded by
`max_actor_restarts` per actor), goes on with fewer (`'continue'`) or stops
(`'stop'`, Launchpad's behaviour). Once no actor is left the program stops
(saving its state) with an error. Any other node failing stops the program.
"""

import os
import pathlib
import subprocess
import time
from typing import Callable, Dict

from agents.common.logs import get_logger

log = get_logger('launch')

ACTOR_FAILURE_POLICIES = ('restart', 'continue', 'stop')


def exit_reason(code: int) -> str:
  """A process's return code as words: 'signal 9' or 'exit code 1'."""
  return f'signal {-code}' if code < 0 else f'exit code {code}'


def should_restart(policy: str, restarts: int, max_restarts: int) -> bool:
  """Whether an actor that died, having been restarted `restarts` times, starts again.

  Shared by the local launcher and the Slurm supervisor; with 'continue' (or no
  restarts left) the program goes on with fewer actors, stopping once none is left.
  """
  return policy == 'restart' and restarts < max_restarts


def _actor_deaths(manager) -> Dict[str, subprocess.Popen]:
  """Actor processes that exited with an error, taken out of Launchpad's watch list."""
  dead = {}
  with manager._mutex:  # pylint: disable=protected-access
    if manager._stop_counter:  # pylint: disable=protected-access
      return dead  # Shutting down: exits are expected.
    for label, workers in manager._active_workers.items():  # pylint: disable=protected-access
      if not label.startswith('actor'):
        continue
      for worker in list(workers):
        if isinstance(worker, subprocess.Popen) and worker.poll() not in (None, 0):
          workers.remove(worker)
          dead[label] = worker
  return dead


def wait_local_mp(manager, policy: str, max_restarts: int, node_logs: pathlib.Path,
                  env_for: Callable[[str], Dict[str, str]], poll_seconds: float = 0.5) -> None:
  """Blocks until every process of the program has exited.

  Raises RuntimeError (as Launchpad's wait does) when a node fails in a way
  the policy does not absorb; Launchpad is then already stopping the rest.
  """
  restarts: Dict[str, int] = {}
  while True:
    lost = []
    if policy != 'stop':
      for label, worker in _actor_deaths(manager).items():
        why = exit_reason(worker.returncode)
        if should_restart(policy, restarts.get(label, 0), max_restarts):
          restarts[label] = restarts.get(label, 0) + 1
          out = open(node_logs / label, 'a')  # Launchpad names each node's log by its label.
          env = {**os.environ, **env_for('actor')}
          replacement = subprocess.Popen(worker.args, env=env, stdout=out, stderr=out)
          with manager._mutex:  # pylint: disable=protected-access
            manager._active_workers[label].append(replacement)  # pylint: disable=protected-access
          log.info('%s died (%s); restarted it (%d/%d restarts)', label, why, restarts[label],
                   max_restarts)
        else:
          lost.append(f'{label} died ({why})')
    if lost:
      with manager._mutex:  # pylint: disable=protected-access
        alive = sum(len(w) for l, w in manager._active_workers.items()  # pylint: disable=protected-access
                    if l.startswith('actor'))
      if alive == 0:
        reason = '; '.join(lost) + ' and no actor is left'
        log.info('%s: stopping the program', reason)
        # Nothing inserts any more, so the learner would wait on the rate limiter
        # forever; and Launchpad no longer watches these actors, so it would not
        # stop the program either. Stop it here: the nodes save their state.
        with manager._mutex:  # pylint: disable=protected-access
          manager._stop()  # pylint: disable=protected-access
        raise RuntimeError(reason)
      for death in lost:
        log.info('%s; continuing with %d actor(s)', death, alive)
    with manager._mutex:  # pylint: disable=protected-access
      manager._check_workers()  # pylint: disable=protected-access
      failure = manager._first_failure  # pylint: disable=protected-access
      if failure:
        manager._first_failure = None  # pylint: disable=protected-access
        raise failure
      if not any(manager._active_workers.values()):  # pylint: disable=protected-access
        return
    time.sleep(poll_seconds)
