"""Submitting a run to Slurm (`launch_type='slurm'`), printing the plan, following the job."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
from typing import Optional

from agents.common.errors import UserError
from agents.common.logs import get_logger
from launch.config import ExperimentConfig
from launch.slurm.script import batch_log, batch_script, program_nodes, step_command

log = get_logger('slurm')

JOB_FILE = 'job_id'


class SlurmError(UserError):
  """Slurm is missing, or refused the job; the message says what to change."""


def _slurm_dir(config: ExperimentConfig) -> pathlib.Path:
  return pathlib.Path(config.run_dir) / 'slurm'


def require_slurm() -> None:
  missing = [c for c in ('sbatch', 'squeue', 'srun') if not shutil.which(c)]
  if missing:
    raise SlurmError(
      f'Slurm is not available here ({", ".join(missing)} not on PATH): run '
      'from a login node of a Slurm cluster, or use --launch_type local_mp'
    )


def job_state(job: str) -> Optional[str]:
  """The job's state in the queue (PENDING, RUNNING, ...), or None once it has left it."""
  out = subprocess.run(['squeue', '-h', '-j', job, '-o', '%T'], capture_output=True, text=True)
  states = out.stdout.split()
  return states[0] if out.returncode == 0 and states else None


def active_job(config: ExperimentConfig) -> Optional[str]:
  """A job of this run directory still queued or running, if any."""
  path = _slurm_dir(config) / JOB_FILE
  if not path.exists():
    return None
  job = path.read_text().strip()
  return job if job and job_state(job) else None


def refuse_if_running(config: ExperimentConfig) -> None:
  running = active_job(config)
  if running:
    raise SlurmError(
      f'{config.run_dir} is already used by Slurm job {running} ({job_state(running)}'
      f'); wait for it or stop it with: scancel {running}'
    )


def refuse_if_queued(config: ExperimentConfig) -> None:
  """For a launch outside Slurm: refuses while a job of this run is pending or running.

  Skipped quietly where Slurm's `squeue` is absent (the job, if any, cannot be asked about).
  """
  if not shutil.which('squeue'):
    return
  refuse_if_running(config)


def describe(config: ExperimentConfig, workdir: str) -> str:
  """The batch script and each step's command, as a dry run prints them."""
  from launch.nodes.process import process_env

  out = [
    f'# batch script (sbatch {batch_log(config.run_dir, "<job>").parent}/...)',
    batch_script(config, sys.executable, workdir),
    '# job steps started by the supervisor:',
  ]
  for group, index in program_nodes(config):
    cmd = step_command(config, '<job id>', group, index, sys.executable, process_env(group))
    out.append(' '.join(shlex.quote(c) for c in cmd))
  return '\n'.join(out) + '\n'


def submit(config: ExperimentConfig, workdir: Optional[str] = None) -> str:
  """Writes the batch script into the run directory and submits it; returns the job id."""
  require_slurm()
  refuse_if_running(config)
  workdir = workdir or os.getcwd()
  sdir = _slurm_dir(config)
  sdir.mkdir(parents=True, exist_ok=True)
  batch_log(config.run_dir).parent.mkdir(parents=True, exist_ok=True)
  script = sdir / 'job.sh'
  script.write_text(batch_script(config, sys.executable, workdir))
  done = subprocess.run(['sbatch', '--parsable', str(script)], capture_output=True, text=True)
  if done.returncode != 0:
    said = ' '.join(line.strip() for line in done.stderr.splitlines() if line.strip())
    raise SlurmError(
      f'sbatch refused the job: {said or "no message"}. Check the partition, time '
      'limit and per-group resources (--slurm partition=..., --slurm '
      'learner.mem_gb=..., see `sinfo`); the script is ' + str(script)
    )
  job = done.stdout.strip().split(';')[0]
  (sdir / JOB_FILE).write_text(job + '\n')
  return job


def announce(config: ExperimentConfig, job: str) -> None:
  batch = batch_log(config.run_dir, job)
  log.info('submitted job %s for %s', job, config.run_dir)
  log.info(
    'follow it: tail -f %s    (state: squeue -j %s; per-node logs in %s)',
    batch,
    job,
    batch.parent / job,
  )
  log.info(
    'stop it:   scancel %s    (every step stops; the learner writes a final checkpoint)', job
  )
  log.info('resume it: run the same command with the same --run_dir')


def follow(config: ExperimentConfig, job: str, poll: float = 2.0) -> int:
  """Echoes the job's log until it leaves the queue; returns its exit code (1 if unknown)."""
  batch = batch_log(config.run_dir, job)
  offset = 0
  try:
    while True:
      state = job_state(job)
      if batch.exists():
        with open(batch, errors='replace') as f:
          f.seek(offset)
          text = f.read()
          offset = f.tell()
        sys.stdout.write(text)
        sys.stdout.flush()
      if state is None:
        break
      time.sleep(poll)
  except KeyboardInterrupt:
    sys.stdout.write('\n')  # After the terminal's ^C.
    log.info('stopped following; job %s keeps running (scancel %s stops it)', job, job)
    return 130
  code_file = _slurm_dir(config) / job / 'exit_code'
  if not code_file.exists():
    log.warning(
      'job %s left the queue without an exit code: it was killed or never started; see %s',
      job,
      batch,
    )
    return 1
  return int(code_file.read_text().strip() or 1)
