"""Launching a program for a run directory: lock, config, resume, address book, wait."""

import dataclasses
import json
import os
import socket
import time
from typing import Any, Dict, Optional, Tuple

from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.errors import ConfigError, ProgramError
from launch.node_logs import NodeLogFollower
from launch.run_dir import RunDir

# Fields a relaunch may change; everything else comes from the stored config.
RESUME_OVERRIDABLE = ('max_actor_steps', 'max_seconds', 'eval_every_seconds',
                      'eval_every_learner_steps', 'eval_episodes',
                      'progress_every_seconds', 'launch_type', 'num_actors')
TERMINATION_NOTICE_SECS = 20


def prepare_run(config: ExperimentConfig, overrides: Optional[Dict[str, Any]] = None
                ) -> Tuple[ExperimentConfig, RunDir, bool]:
  """Checks the config, creates and locks the run directory, and stores or reloads its config.

  Returns (effective config, locked RunDir, resumed?).
  """
  from environments.suite import parse_task

  def check_task(task: str) -> None:
    try:
      parse_task(task)
    except ValueError as e:
      raise ConfigError(str(e)) from None

  run_dir = RunDir(os.path.abspath(config.run_dir))
  if not run_dir.exists():
    check_task(config.task)  # Before anything is created for a run that cannot start.
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
    check_task(config.task)
    if resumed:
      # Fail here, in one line, rather than in the learner process after launch.
      Checkpointer(run_dir.checkpoints).restore_latest()
    run_dir.write_config(config.to_dict())
  except BaseException:
    run_dir.release_lock()
    raise
  return config, run_dir, resumed


def _spent_step_budget(config: ExperimentConfig, run_dir: RunDir) -> Optional[int]:
  """Environment steps already done, if they meet the step budget (else None)."""
  from launch.counter_node import COUNTER_FILE
  path = run_dir.path / COUNTER_FILE
  if config.max_actor_steps is None or not path.exists():
    return None
  done = int(json.loads(path.read_text()).get('counts', {}).get('actor_steps', 0))
  return done if done >= config.max_actor_steps else None


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
    done = _spent_step_budget(config, run_dir)
    if done is not None:
      print(f'[launch] {run_dir.path} already reached its budget of {config.max_actor_steps} '
            f'environment steps ({done} done); pass a larger --max_actor_steps to continue',
            flush=True)
      return config
    print(f'[launch] {"resuming" if resumed else "starting"} {config.task} with '
          f'{config.num_actors} actors in {run_dir.path} ({config.launch_type})', flush=True)
    program, addresses = make_program(config)
    if not flags.FLAGS.is_parsed():
      flags.FLAGS(['launch'], known_only=True)
    flags.FLAGS.lp_termination_notice_secs = TERMINATION_NOTICE_SECS
    follower = None
    if config.launch_type == 'local_mp':
      from launchpad.launch.run_locally import launch_local_output_to_files
      from launchpad.nodes.python.local_multi_processing import PythonProcess
      # Each node writes its own file (unbuffered); the follower echoes them here.
      node_logs = run_dir.logs / 'nodes' / time.strftime('%Y%m%d-%H%M%S')
      launch_local_output_to_files._LOGGING_DIR = str(node_logs)  # pylint: disable=protected-access
      resources = {g: PythonProcess(env=process_env(g)) for g in GROUPS}
      manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_PROCESSING,
                          terminal='output_to_files', local_resources=resources)
      follower = NodeLogFollower(node_logs)
      follower.start()
      print(f'[launch] per-node logs in {node_logs}', flush=True)
    else:
      manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_THREADING)
    book = write_address_book(run_dir, addresses)
    print(f'[launch] address book {run_dir.path / "addresses.json"}: '
          f'replay {book["replay"]}, learner {book["learner"]}', flush=True)
    try:
      if config.launch_type == 'local_mt':
        # Actor threads blocked on a rate-limited insert cannot be interrupted
        # in-process. Every other node has stopped and checkpointed when this
        # returns; the caller ends the process (see experiments.collect_infer).
        manager.wait(labels_to_wait_for=[g for g in GROUPS if g != 'actor'])
      else:
        manager.wait()
    except RuntimeError as e:
      # A node crashed: Launchpad is stopping the others; let them finish
      # (they save their state) before reporting.
      manager.wait(raise_error=False)
      where = f'; per-node logs in {run_dir.logs / "nodes"}' if follower else ''
      raise ProgramError(f'a node failed ({e}){where}') from None
    finally:
      if follower:
        follower.stop()
  finally:
    try:
      (run_dir.path / 'addresses.json').unlink()
    except OSError:
      pass
    run_dir.release_lock()
  print(f'[launch] stopped; run directory {run_dir.path}', flush=True)
  return config
