"""Launching a program for a run directory: lock, config, resume, address book, wait."""

import dataclasses
import logging
import os
import socket
import time
from typing import Any, Dict, Optional

from launch.config import ExperimentConfig
from launch.errors import ConfigError, RunDirError
from launch.run_dir import RunDir

log = logging.getLogger('collect_infer.launcher')

# Fields a relaunch may change; everything else comes from the stored config.
RESUME_OVERRIDABLE = ('max_actor_steps', 'max_seconds', 'eval_every_seconds', 'eval_episodes',
                      'progress_every_seconds', 'launch_type', 'num_actors')
TERMINATION_NOTICE_SECS = 20


def prepare_run(config: ExperimentConfig, overrides: Optional[Dict[str, Any]] = None
                ) -> (ExperimentConfig, RunDir, bool):
  """Checks the config, creates and locks the run directory, and stores or reloads its config.

  Returns (effective config, locked RunDir, resumed?).
  """
  from environments.suite import parse_task
  run_dir = RunDir(os.path.abspath(config.run_dir))
  run_dir.create()
  run_dir.acquire_lock()
  try:
    resumed = run_dir.exists()
    if resumed:
      stored = ExperimentConfig.from_dict(run_dir.read_config())
      changes = {k: v for k, v in (overrides or {}).items() if k in RESUME_OVERRIDABLE}
      config = dataclasses.replace(stored, run_dir=str(run_dir.path), **changes)
    else:
      config = dataclasses.replace(config, run_dir=str(run_dir.path))
    try:
      parse_task(config.task)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    run_dir.write_config(config.to_dict())
  except BaseException:
    run_dir.release_lock()
    raise
  return config, run_dir, resumed


def write_address_book(run_dir: RunDir, addresses: Dict[str, Any]) -> Dict[str, str]:
  """Resolves the launched servers' addresses and publishes them (owner-readable only)."""
  book = {name: address.resolve() for name, address in addresses.items()}
  book.update(host=socket.gethostname(), pid=os.getpid(), started=time.time())
  run_dir.write_addresses(book)
  return book


def launch(config: ExperimentConfig, overrides: Optional[Dict[str, Any]] = None) -> ExperimentConfig:
  """Runs the experiment until its budget is spent or it is interrupted; blocks."""
  import launchpad as lp
  from absl import flags
  from launch.program import GROUPS, make_program, process_env

  config, run_dir, resumed = prepare_run(config, overrides)
  try:
    print(f'[launch] {"resuming" if resumed else "starting"} {config.task} with '
          f'{config.num_actors} actors in {run_dir.path} ({config.launch_type})', flush=True)
    program, addresses = make_program(config)
    if not flags.FLAGS.is_parsed():
      flags.FLAGS(['launch'], known_only=True)
    flags.FLAGS.lp_termination_notice_secs = TERMINATION_NOTICE_SECS
    if config.launch_type == 'local_mp':
      from launchpad.nodes.python.local_multi_processing import PythonProcess
      resources = {g: PythonProcess(env=process_env(g)) for g in GROUPS}
      manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_PROCESSING,
                          terminal='current_terminal', local_resources=resources)
    else:
      manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_THREADING)
    book = write_address_book(run_dir, addresses)
    print(f'[launch] address book {run_dir.path / "addresses.json"}: '
          f'replay {book["replay"]}, learner {book["learner"]}', flush=True)
    manager.wait()
  finally:
    try:
      (run_dir.path / 'addresses.json').unlink()
    except OSError:
      pass
    run_dir.release_lock()
  print(f'[launch] stopped; run directory {run_dir.path}', flush=True)
  return config
