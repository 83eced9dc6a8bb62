"""Launching a program for a run directory: lock, config, resume, address book, wait."""

import dataclasses
import json
import os
import socket
import time
from typing import Any, Dict, Optional, Sequence, Tuple

from agents import registry
from agents.common.errors import ConfigError, ProgramError
from agents.common.logs import get_logger
from launch import loopback
from launch.budget import Budget
from launch.checkpointing import Checkpointer, load_init_checkpoint
from launch.config import ExperimentConfig
from launch.local.launchpad_compat import python_process, set_node_log_dir
from launch.local.node_logs import NodeLogFollower
from launch.local.supervision import wait_local_mp
from launch.nodes.process import GROUPS, node_env, process_env
from launch.robot.protocol import ensure_token_file
from launch.run_dir import RunDir
from launch.slurm.addresses import free_port
from launch.tasks import tasks_without_actors

ANNOUNCE_HOST_ENV = 'COLLECT_INFER_HOST'

log = get_logger('launch')
# Seconds a node has to stop before Launchpad kills the program: the replay node saves its
# tables on stop, about 25 s for a full table of a million state transitions on 2 cores.
TERMINATION_NOTICE_SECS = 60


def prepare_run(
  config: ExperimentConfig, overrides: Optional[Dict[str, Any]] = None
) -> Tuple[ExperimentConfig, RunDir, bool]:
  """Checks the config, creates and locks the run directory, and stores or reloads its config.

  Returns (effective config, locked RunDir, resumed?).
  """
  from environments.pixels import check_task as check_pixels_task

  def check_task(config: ExperimentConfig) -> None:
    try:
      for task in config.task_names:
        check_pixels_task(task, config.pixels)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    from launch.experiment import check_pixel_agent

    check_pixel_agent(config)
    if len(config.task_names) > 1:
      from launch.experiment import bodies

      bodies(config)  # One line now when a one-body agent's tasks differ.

  run_dir = RunDir(os.path.abspath(config.run_dir))
  if not run_dir.exists():
    check_task(config)  # Before anything is created for a run that cannot start.
  run_dir.create()
  run_dir.acquire_lock()
  try:
    resumed = run_dir.exists()
    if resumed:
      stored = ExperimentConfig.from_dict(run_dir.read_config())
      config = effective_config(config, overrides, stored)
    else:
      config = effective_config(config, overrides)
    check_task(config)
    if resumed:
      # Fail here, in one line, rather than in the learner process after launch.
      Checkpointer(run_dir.checkpoints).restore_latest()
    _check_training_data(config, run_dir)
    idle = tasks_without_actors(config.task_weights, config.num_actors)
    if idle and config.mode != 'offline':
      log.warning(
        'no actor collects %s with --num_actors %d (evaluated only)',
        ', '.join(idle),
        config.num_actors,
      )
    run_dir.write_config(config.to_dict())
    ensure_token_file(run_dir.gateway_token)  # Made once; a relaunch keeps the robots' token.
  except BaseException:
    run_dir.release_lock()
    raise
  return config, run_dir, resumed


def effective_config(
  config: ExperimentConfig,
  overrides: Optional[Dict[str, Any]] = None,
  stored: Optional[ExperimentConfig] = None,
) -> ExperimentConfig:
  """The config a launch uses: the stored one (if resuming) with the overridable changes."""
  overrides = overrides or {}
  path = os.path.abspath(config.run_dir)
  if stored is not None:
    changes = {k: v for k, v in overrides.items() if k in ExperimentConfig.resumable_fields()}
    config = dataclasses.replace(stored, **changes)
  config = dataclasses.replace(config, run_dir=path)
  if overrides.get('slurm_settings'):
    config = dataclasses.replace(
      config, slurm=config.slurm.with_overrides(overrides['slurm_settings'])
    )
  return config


def _imitates(config: ExperimentConfig) -> bool:
  """Whether the run's agent learns stored actions as labels (its builder's `imitates`:
  BC, the generalist), so that it may train on episodes of an expert's labels."""
  return bool(getattr(registry.get(config.algorithm).builder_class(), 'imitates', False))


def _check_training_data(config: ExperimentConfig, run_dir: RunDir) -> None:
  """Datasets exist and hold episodes; offline training has something to learn from; the
  checkpoint a new run starts from and the policy its actors borrow read."""
  from launch.store.episodes import EpisodeStore
  from launch.store.sampling import ACTION_LABEL_KEY

  for d in config.datasets:
    if not os.path.isdir(d):
      raise ConfigError(f'dataset {d!r} is not a directory (an episode store, e.g. <run>/store)')
    store = EpisodeStore(d)
    if len(store) == 0:
      raise ConfigError(f'dataset {d!r} holds no episodes')
    # (The builder's import only for such a dataset: the launcher does not import JAX.)
    if all(i.metadata.get(ACTION_LABEL_KEY) == 'expert' for i in store.index()) and not (
      _imitates(config)
    ):
      raise ConfigError(
        f"dataset {d!r} holds only episodes whose actions are an expert's labels, not the "
        f'executed ones (make_dataset --expert_labels): algorithm {config.algorithm!r} learns '
        'values from transitions and would leave them all out; train bc or gato on it'
      )
  if (
    config.mode == 'offline'
    and not config.datasets
    and (not run_dir.store.exists() or len(EpisodeStore(run_dir.store)) == 0)
  ):
    raise ConfigError(
      f'mode=offline needs stored episodes: {run_dir.store} is empty and no --datasets were given'
    )
  if config.init_checkpoint and Checkpointer(run_dir.checkpoints).all_steps() == []:
    load_init_checkpoint(config.init_checkpoint)  # Refuse a bad one before launch.
  if config.agent.policy_run is not None:  # Another run's policy the actors will use.
    from launch.borrowed_policy import check_policy_run

    setting, run = config.agent.policy_run
    check_policy_run(run, setting)


def _spent_budget(config: ExperimentConfig, run_dir: RunDir) -> Optional[str]:
  """Why the run's budget is already spent (a sentence), or None."""
  from launch.nodes.counter import COUNTER_FILE

  path = run_dir.path / COUNTER_FILE
  counts = json.loads(path.read_text()).get('counts', {}) if path.exists() else {}
  iterations_done = 0
  if config.mode == 'iterated':
    # The learner's checkpoints carry the iterations it has finished.
    restored = Checkpointer(run_dir.checkpoints).restore_latest()
    iterations_done = int(restored[1].get('iteration', 0)) if restored is not None else 0
  # Seconds are a budget per launch: a relaunch starts them afresh.
  return Budget.from_config(config).reason(
    actor_steps=int(counts.get('actor_steps', 0)),
    learner_steps=int(counts.get('learner_steps', 0)),
    iterations_done=iterations_done,
  )


def announce_host(config: ExperimentConfig) -> str:
  """The host other machines reach the servers at.

  The config's announce_host, then $COLLECT_INFER_HOST, then localhost.
  """
  host = config.announce_host or os.environ.get(ANNOUNCE_HOST_ENV, '').strip() or 'localhost'
  if any(c.isspace() for c in host):
    raise ConfigError(f'{ANNOUNCE_HOST_ENV}={host!r} is invalid: must be a host name or address')
  return host


def bind_env(config: ExperimentConfig) -> Dict[str, str]:
  """The environment that makes a local launch's node processes listen where config.bind says.

  bind='loopback': LD_PRELOAD with the loopback bind shim (launch.loopback; built on first
  use). A local_mt program's servers run in this process, which must then have been started
  with the shim (experiments.collect_infer restarts itself with it). bind='all': nothing;
  the servers listen on every interface, as Reverb and Courier do by themselves.
  """
  if config.bind == 'all':
    log.warning(
      'bind=all: the servers listen on every interface; anyone who can reach their ports '
      'can run code as this run (README, Security)'
    )
    return {}
  env = loopback.preload_env()
  if config.launch_type == 'local_mt' and not loopback.active():
    raise ConfigError(
      'launch_type=local_mt runs the servers in this process, which was started without the '
      f'loopback bind shim: start it with LD_PRELOAD={env["LD_PRELOAD"]}, run it through '
      '`python -m experiments.collect_infer` (which does that), or use local_mp'
    )
  return env


def write_address_book(
  run_dir: RunDir, addresses: Dict[str, Any], host: str = 'localhost'
) -> Dict[str, str]:
  """Resolves the launched servers' addresses and publishes them (owner-readable only).

  Launchpad resolves addresses as 'localhost:<port>'; `host` replaces 'localhost' so
  that other machines (robot PCs attaching with `launch.attach`) can use the book,
  which they reach only with bind='all' (see `bind_env`) or through a tunnel. A plain
  'host:port' string (the robot gateway's) is written with `host` too.
  """
  book = {}
  for name, address in addresses.items():
    resolved = address if isinstance(address, str) else address.resolve()
    _, sep, port = resolved.rpartition(':')
    book[name] = f'{host}:{port}' if sep and port.isdigit() else resolved
  book.update(host=socket.gethostname(), pid=os.getpid(), started=time.time())
  run_dir.write_addresses(book)
  return book


def planned_config(
  config: ExperimentConfig, overrides: Optional[Dict[str, Any]]
) -> ExperimentConfig:
  """The config a launch would use, read without creating or locking anything."""
  run_dir = RunDir(os.path.abspath(config.run_dir))
  stored = ExperimentConfig.from_dict(run_dir.read_config()) if run_dir.exists() else None
  return effective_config(config, overrides, stored)


def _dry_run(config: ExperimentConfig, overrides: Optional[Dict[str, Any]]) -> ExperimentConfig:
  from launch.slurm.submit import describe

  config = planned_config(config, overrides)
  if config.launch_type != 'slurm':
    raise ConfigError('--dry_run prints a Slurm job: use it with --launch_type slurm')
  # The dry run's answer (a batch script and step commands), not a log line.
  print(describe(config, os.getcwd()), end='', flush=True)
  return config


def _launch_slurm(config: ExperimentConfig, resumed: bool, follow: bool) -> ExperimentConfig:
  from launch.slurm.submit import announce, submit
  from launch.slurm.submit import follow as follow_job

  log.info(
    '%s %s (%s) on Slurm in %s',
    'resuming' if resumed else 'starting',
    config.task,
    config.mode,
    config.run_dir,
  )
  job = submit(config)
  announce(config, job)
  if follow:
    code = follow_job(config, job)
    if code != 0:
      raise ProgramError(
        f'Slurm job {job} ended with exit code {code}; logs in '
        f'{os.path.join(config.run_dir, "logs", "slurm")}'
      )
  return config


# The groups whose nodes the fork server starts. The gateway binds the announced host itself
# and must not get the loopback shim the server was started with; it imports little anyway.
FORKED_GROUPS = ('replay', 'counter', 'learner', 'actor', 'evaluator')


def fork_server_env(bind: Dict[str, str]) -> Dict[str, str]:
  """The environment a fork server starts with, for nodes that listen as `bind` says
  (bind_env). The libraries read it when imported, which the server does once: the
  learner's (the common one), with numpy's BLAS on one thread as the actors want it."""
  return {**process_env('learner'), **bind, 'OMP_NUM_THREADS': '1'}


def _start_fork_server(config: ExperimentConfig, node_logs, bind: Dict[str, str]):
  """The fork server for a local_mp launch (launch.local.forkserver), starting; or None
  with --no_fork_server (nodes then start as fresh interpreters: the same, only slower).

  A server named by $COLLECT_INFER_FORK_SERVER (started with fork_server_env for
  bind=loopback, e.g. by the test suite) is used instead of starting one, for loopback
  launches.
  """
  if not config.fork_server:
    return None
  from launch.local.forkserver import SHARED_ENV, ForkServer, SharedForkServer

  shared = os.environ.get(SHARED_ENV)
  if shared and config.bind == 'loopback':
    return SharedForkServer(shared)
  node_logs.mkdir(parents=True, exist_ok=True)
  return ForkServer(fork_server_env(bind), log_path=node_logs / 'forkserver')


def _ready_or_none(server):
  """`server` once it has imported everything; None (nodes start as fresh interpreters) if
  it failed to."""
  if server is None:
    return None
  try:
    server.wait_ready()
  except RuntimeError as e:
    server.stop(timeout=1.0)
    log.warning('%s; starting each node as a fresh interpreter instead', e)
    return None
  log.info('fork server ready: node processes start as forks of it')
  return server


def use_renderer(config: ExperimentConfig) -> None:
  """Sets MUJOCO_GL for the node processes: a headless renderer when the run renders (pixels,
  or the evaluator's GIFs); a pixel run without one stops here, in one line."""
  if not (config.pixels or config.eval_gifs):
    return
  from environments.pixels import RendererError, choose_renderer

  try:
    backend = choose_renderer(required=config.pixels)
  except RendererError as e:
    raise ConfigError(f'pixels: {e}') from None
  if backend is None:
    log.warning('no headless renderer here: the evaluator writes no GIFs')


def launch(
  config: ExperimentConfig,
  overrides: Optional[Dict[str, Any]] = None,
  dry_run: bool = False,
  follow: bool = False,
  fixed_flags: Sequence[str] = (),
) -> ExperimentConfig:
  """Runs the experiment until its budget is spent or it is interrupted; blocks.

  With launch_type 'slurm' it submits a batch job instead and returns (or, with
  `follow`, echoes the job's log until it ends); `dry_run` prints its batch
  script and step commands without submitting.
  """
  if dry_run:
    return _dry_run(config, overrides)
  planned = planned_config(config, overrides)
  use_renderer(planned)  # Before dm_control loads here (local_mt renders in this process).
  bind: Dict[str, str] = {}  # The node processes' environment for config.bind (local launches).
  if planned.launch_type == 'slurm':
    from launch.slurm.submit import refuse_if_running, require_slurm

    require_slurm()  # Before the run directory is created or changed.
    refuse_if_running(planned)
  else:
    from launch.slurm.submit import refuse_if_queued

    # A job's supervisor takes the run lock only once the job starts: a pending
    # job holds no lock, so ask Slurm (where it exists) before running here too.
    refuse_if_queued(planned)
    # Where the servers listen; a missing C compiler fails before the run directory is touched.
    bind = bind_env(planned)
  config, run_dir, resumed = prepare_run(config, overrides)
  if resumed and fixed_flags:
    log.info(
      'resuming keeps the stored %s of %s (only fields marked [resumable] in --help '
      'change on a relaunch)',
      ', '.join(fixed_flags),
      run_dir.path,
    )
  fork_server = None
  try:
    spent = _spent_budget(config, run_dir)
    if spent is not None:
      log.info('%s already reached %s', run_dir.path, spent)
      return config
    if config.launch_type == 'slurm':
      run_dir.release_lock()  # The job's supervisor takes it when the job starts.
      return _launch_slurm(config, resumed, follow)
    actors = 'no actors' if config.mode == 'offline' else f'{config.num_actors} actors'
    log.info(
      '%s %s (%s) with %s in %s (%s)',
      'resuming' if resumed else 'starting',
      ', '.join(config.task_names),
      config.mode,
      actors,
      run_dir.path,
      config.launch_type,
    )
    host = announce_host(config)  # A bad $COLLECT_INFER_HOST fails before anything starts.
    if config.bind == 'loopback' and host not in ('localhost', '127.0.0.1'):
      log.info(
        'addresses.json names %s, but the servers listen on loopback: other machines reach '
        'them through a tunnel only (or with --bind all; README, Security)',
        host,
      )
    follower = None

    def node_process_env(group: str) -> Dict[str, str]:
      # Binds each node process to this one: it dies with it and holds the run's node
      # lock (launch.nodes.process). Every node, restarted actors included, starts
      # from this thread, which lives until the program has stopped.
      # The gateway binds the announced host itself (0.0.0.0 only when announced so), which
      # the loopback shim must not narrow: it gets no preload.
      return {
        **process_env(group),
        **node_env(run_dir.path),
        **(bind if group != 'gateway' else {}),
      }

    if config.launch_type == 'local_mp':
      # Each node writes its own file (unbuffered); the follower echoes them here.
      node_logs = run_dir.logs / 'nodes' / time.strftime('%Y%m%d-%H%M%S')
      # Started first: it imports the libraries while this process does the same below.
      fork_server = _start_fork_server(config, node_logs, bind)
    # Late, though light (the nodes' libraries load in the node processes): a refused launch
    # (a bad setting, a spent budget, a run in use) needs none of it.
    import launchpad as lp
    from absl import flags

    from launch.program import make_program

    gateway = f'{host}:{config.gateway_port or free_port()}'
    program, addresses = make_program(config, gateway)
    if not flags.FLAGS.is_parsed():
      flags.FLAGS(['launch'], known_only=True)
    flags.FLAGS.lp_termination_notice_secs = TERMINATION_NOTICE_SECS

    if config.launch_type == 'local_mp':
      set_node_log_dir(node_logs)
      follower = NodeLogFollower(node_logs)
      follower.start()
      fork_server = _ready_or_none(fork_server)
      resources = {
        g: python_process(
          node_process_env(g),
          fork_server.interpreter if fork_server and g in FORKED_GROUPS else None,
        )
        for g in GROUPS
        if g in program.groups
      }
      manager = lp.launch(
        program,
        launch_type=lp.LaunchType.LOCAL_MULTI_PROCESSING,
        terminal='output_to_files',
        local_resources=resources,
      )
      log.info('per-node logs in %s', node_logs)
    else:
      manager = lp.launch(program, launch_type=lp.LaunchType.LOCAL_MULTI_THREADING)
    book = write_address_book(run_dir, {**addresses, 'gateway': gateway}, host)
    log.info(
      'address book %s: robots attach through the gateway at %s with the token in %s',
      run_dir.path / 'addresses.json',
      book['gateway'],
      run_dir.gateway_token,
    )
    try:
      if config.launch_type == 'local_mt':
        # Actor threads blocked on a rate-limited insert cannot be interrupted
        # in-process. Every other node has stopped and checkpointed when this
        # returns; the caller ends the process (see experiments.collect_infer).
        manager.wait(labels_to_wait_for=[g for g in GROUPS if g != 'actor' and g in program.groups])
      else:
        wait_local_mp(
          manager, config.actor_failures, config.max_actor_restarts, node_logs, node_process_env
        )
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
    if fork_server:
      fork_server.stop()
    try:
      (run_dir.path / 'addresses.json').unlink()
    except OSError:
      pass
    run_dir.release_lock()
  log.info('stopped; run directory %s', run_dir.path)
  return config
