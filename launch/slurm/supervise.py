"""The batch step of a Slurm launch: starts a job step per node, follows them, stops them.

  python -m launch.slurm.supervise --run_dir R --job JOB     (run by the batch script)

The program ends when the evaluator spends the budget (it writes the job's
STOP file), when the job is cancelled (SIGTERM), or when a node other than an
actor fails. Dead actors follow the run's `actor_failures` policy, as with
`local_mp`. Every step gets `stop_grace_s` to checkpoint and exit.
"""

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from agents.common.logs import get_logger

POLL_SECONDS = 1.0

log = get_logger('slurm')


class Step:
  """One node's `srun`, with its log file."""

  def __init__(self, label: str, group: str, command: List[str], log: pathlib.Path):
    self.label, self.group, self.command, self.log = label, group, command, log
    self.restarts = 0
    self.proc: Optional[subprocess.Popen] = None

  def start(self) -> None:
    out = open(self.log, 'a')
    self.proc = subprocess.Popen(
      self.command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    out.close()


def _wait_for_step(job: str, label: str, step: Step, timeout: float = 30.0) -> None:
  """Waits until Slurm lists the step `label` of `job` (it holds its CPUs from then on)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and step.proc.poll() is None:
    out = subprocess.run(
      ['squeue', '-h', '-s', '-j', job, '-o', '%j'], capture_output=True, text=True
    )
    if label in out.stdout.split():
      return
    time.sleep(0.2)


def supervise(run_dir: pathlib.Path, job: str) -> int:
  from agents.common.errors import RunDirError
  from launch.config import ExperimentConfig
  from launch.local.node_logs import NodeLogFollower
  from launch.local.supervision import exit_reason, should_restart
  from launch.nodes.process import process_env
  from launch.run_dir import RunDir
  from launch.slurm.addresses import SERVERS, STOP_FILE, AddressBook, job_dir
  from launch.slurm.script import program_nodes, step_command

  run = RunDir(run_dir)
  config = ExperimentConfig.from_dict(run.read_config())
  try:
    run.acquire_lock()
  except RunDirError as e:
    log.error('%s', e)
    return 2
  jdir = job_dir(run_dir, job)
  jdir.mkdir(parents=True, exist_ok=True)
  stop_path = jdir / STOP_FILE
  logs = run.logs / 'slurm' / job
  logs.mkdir(parents=True, exist_ok=True)
  follower = NodeLogFollower(logs)
  follower.start()

  stop_signal: List[int] = []
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda s, _f: stop_signal.append(s))

  steps: Dict[str, Step] = {}

  # The largest requests first, each placed before the next starts: single-CPU
  # steps started together could otherwise fragment the allocation's CPUs so that
  # a multi-CPU learner fits on no node.
  def size(node):
    r = config.slurm.resources[node[0]]
    return (r['gpus'], r['cpus'])

  for group, index in sorted(program_nodes(config), key=size, reverse=True):
    label = f'{group}_{index}'
    cmd = step_command(config, job, group, index, sys.executable, process_env(group))
    steps[label] = Step(label, group, cmd, logs / label)
    steps[label].start()
    if size((group, index)) > (0, 1):
      _wait_for_step(job, label, steps[label])
  log.info(
    'job %s: started %d steps (%s); their logs are in %s', job, len(steps), ', '.join(steps), logs
  )

  reason, code = None, 0
  book_written = False
  while reason is None:
    time.sleep(POLL_SECONDS)
    if stop_signal:
      reason = f'the job was cancelled (signal {stop_signal[0]})'
      code = 0  # An orderly stop with a final checkpoint: resubmitting resumes.
      break
    if stop_path.exists():
      reason = 'the program stopped itself (budget spent)'
      break
    if not book_written:
      book = AddressBook(run_dir, job).all()
      if len(book) == len(SERVERS):  # Robots attach through <run>/addresses.json, as local_mp.
        run.write_addresses({**book, 'host': 'slurm', 'pid': 0, 'job': job, 'started': time.time()})
        book_written = True
    for label, step in list(steps.items()):
      rc = step.proc.poll()
      if rc is None:
        continue
      if step.group == 'evaluator':
        reason = 'the evaluator finished' if rc == 0 else f'{label} failed ({exit_reason(rc)})'
        code = 0 if rc == 0 else 1
        break
      if step.group == 'actor' and rc != 0 and config.actor_failures != 'stop':
        if should_restart(config.actor_failures, step.restarts, config.max_actor_restarts):
          step.restarts += 1
          step.start()
          log.info(
            '%s died (%s); restarted it (%d/%d restarts)',
            label,
            exit_reason(rc),
            step.restarts,
            config.max_actor_restarts,
          )
          continue
        del steps[label]
        left = sum(1 for s in steps.values() if s.group == 'actor')
        if left:
          log.info('%s died (%s); continuing with %d actor(s)', label, exit_reason(rc), left)
          continue
        reason, code = f'{label} died ({exit_reason(rc)}) and no actor is left', 1
        break
      reason, code = f'{label} exited unexpectedly ({exit_reason(rc)})', 1
      break

  log.info('stopping: %s', reason)
  stop_path.touch()  # Every node's watcher turns this into an orderly stop.
  # Recorded now: a cancelled job's batch step may be killed (KillWait) while it waits.
  (jdir / 'exit_code').write_text(f'{code}\n')
  (jdir / 'summary.json').write_text(json.dumps({'reason': reason, 'exit_code': code}))
  try:
    (run.path / 'addresses.json').unlink()
  except OSError:
    pass
  deadline = time.monotonic() + config.slurm.stop_grace_s
  while time.monotonic() < deadline and any(s.proc.poll() is None for s in steps.values()):
    time.sleep(0.5)
  stuck = [label for label, s in steps.items() if s.proc.poll() is None]
  if stuck:
    log.warning(
      'steps still running after %.0f s: %s; Slurm kills them when this job ends',
      config.slurm.stop_grace_s,
      ', '.join(stuck),
    )
    for s in steps.values():
      if s.proc.poll() is None:
        s.proc.kill()
  follower.stop()
  run.release_lock()
  log.info('job %s ended (%s); run directory %s', job, reason, run.path)
  return code


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--run_dir', required=True)
  p.add_argument('--job', required=True)
  args = p.parse_args(argv)
  return supervise(pathlib.Path(args.run_dir), args.job)


if __name__ == '__main__':
  sys.exit(main())
