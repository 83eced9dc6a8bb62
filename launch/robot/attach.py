"""Attach an actor outside the program (e.g. on a robot PC) to a running experiment.

  python -m launch.attach --run_dir runs/NAME --env mypackage.robot:make_env --name arm1
  python -m launch.attach --gateway HOST:PORT --token_file gateway.token \
      --env mypackage.robot:make_env

It speaks only to the program's robot gateway (gRPC carrying plain data, authenticated by
the run's token: --token_file, else $COLLECT_INFER_GATEWAY_TOKEN, else with --run_dir the
run's own RUN_DIR/gateway.token).

The actor builds its environment from any factory that returns a
dm_env.Environment (`--env module:function`, keyword arguments from `--env_arg`),
checks that its spec matches the program's, then runs episodes with the
program's policy until stopped (Ctrl-C / SIGTERM, or --max_episodes / --max_seconds):

* parameters are fetched by a background thread: the control loop never waits on
  the network;
* every step is validated (environments.validation) before anything leaves the
  process; an episode with a bad step is dropped or truncated (--on_invalid);
* each episode is first appended to a local on-disk outbox (--buffer_dir), then
  a sender thread delivers it, with retries and backoff, to the program's store
  (writer external_<name>, exactly once; the gateway inserts it into the external
  replay table); episodes finished while the program is away are sent once it is
  back (re-reading the address book, so a relaunched program is found); delivered
  episodes leave the disk; at --max_outbox_mb, or on a full disk, a new episode is
  dropped (counted, one line) and the robot keeps running;
* while the program is unreachable, --on_disconnect hold keeps acting with the
  last parameters; stop ends the current episode (the robot's watchdog holds it
  with the safe action) and waits for the program before starting another.

A status file (default <buffer_dir>/status.json) holds the counts, the policy
versions fetched and the control loop's timing. Exit codes: 0 stopped, 2 a
usage error (bad factory, spec mismatch, no or a refused token, program never reachable).
"""

import argparse
import dataclasses
import importlib
import json
import logging
import os
import pathlib
import re
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

log = logging.getLogger('collect_infer.attach')

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$')
_SWITCH_INTERVAL_S = 0.001  # How long the control thread may wait for the GIL (default 5 ms).


def _value(text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def _env_arg(text: str):
  key, sep, value = text.partition('=')
  if not sep or not key.isidentifier():
    raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
  return key, _value(value)


def parse_args(argv: List[str]) -> argparse.Namespace:
  from launch.robot.protocol import TOKEN_ENV

  p = argparse.ArgumentParser(
    prog='python -m launch.attach',
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  where = p.add_argument_group("the program (a run directory, or its gateway's address)")
  where.add_argument(
    '--run_dir',
    help="read the gateway's address from RUN_DIR/addresses.json (again on every reconnect)",
  )
  where.add_argument(
    '--gateway',
    metavar='HOST:PORT',
    help="the gateway's address (from the program's addresses.json)",
  )
  where.add_argument(
    '--token_file',
    help=f"the run's gateway token, a copy of RUN_DIR/gateway.token (default: ${TOKEN_ENV}, "
    'else RUN_DIR/gateway.token with --run_dir)',
  )
  p.add_argument(
    '--env',
    required=True,
    metavar='MODULE:FACTORY',
    help='a callable returning a dm_env.Environment, e.g. '
    'environments.simulated_robot:make_simulated_robot_env',
  )
  p.add_argument(
    '--env_arg',
    action='append',
    default=[],
    type=_env_arg,
    metavar='KEY=VALUE',
    help='keyword argument for the factory (JSON value, else a string); repeatable',
  )
  p.add_argument(
    '--name',
    default=None,
    help='robot name: the source tag, and the store writer external_NAME (default: this host name)',
  )
  p.add_argument(
    '--buffer_dir',
    default=None,
    help='local outbox of episodes not yet delivered (default: attach_buffers/NAME)',
  )
  p.add_argument(
    '--on_disconnect',
    choices=('hold', 'stop'),
    default='hold',
    help='hold: keep acting with the last parameters; stop: end the episode and '
    'wait for the program (default: hold)',
  )
  p.add_argument(
    '--on_invalid',
    choices=('drop_episode', 'truncate'),
    default='drop_episode',
    help='what an invalid step does to its episode (default: drop_episode)',
  )
  p.add_argument('--seed', type=int, default=0, help="the policy's sampling seed")
  p.add_argument('--refresh_every_s', type=float, default=1.0, help='parameter refresh period')
  p.add_argument(
    '--disconnect_after_s',
    type=float,
    default=5.0,
    help='the program counts as unreachable after this long without parameters',
  )
  p.add_argument('--rpc_timeout_s', type=float, default=10.0, help='per call to the program')
  p.add_argument('--max_backoff_s', type=float, default=30.0, help='longest wait between retries')
  p.add_argument(
    '--connect_timeout_s',
    type=float,
    default=120.0,
    help='how long to wait for the program at start',
  )
  p.add_argument('--max_episodes', type=int, default=None, help='stop after this many episodes')
  p.add_argument('--max_seconds', type=float, default=None, help='stop after this long')
  p.add_argument(
    '--flush_timeout_s',
    type=float,
    default=30.0,
    help='at exit, how long to wait for undelivered episodes (the rest stay in '
    'the outbox and go out next time)',
  )
  p.add_argument(
    '--max_outbox_mb',
    type=float,
    default=4096.0,
    help='cap on the outbox (undelivered episodes) on disk; at the cap new episodes are '
    'dropped, counted and reported, and what is already buffered is kept (default: 4096)',
  )
  p.add_argument('--status_file', default=None, help='default: BUFFER_DIR/status.json')
  p.add_argument('--status_every_s', type=float, default=2.0)
  p.add_argument(
    '--rt_priority',
    type=int,
    default=0,
    help='Linux: run this process (control loop, robot watchdog, and the threads '
    'sharing their GIL) under SCHED_FIFO at this priority (1-99; needs '
    'CAP_SYS_NICE); 0: normal scheduling',
  )
  args = p.parse_args(argv)
  if (args.run_dir is None) == (args.gateway is None):
    p.error('give --run_dir or --gateway (one of them)')
  for field in (
    'refresh_every_s',
    'disconnect_after_s',
    'rpc_timeout_s',
    'max_backoff_s',
    'connect_timeout_s',
    'status_every_s',
    'max_outbox_mb',
  ):
    if not getattr(args, field) > 0:
      p.error(f'--{field} must be positive')
  if args.max_episodes is not None and args.max_episodes < 1:
    p.error('--max_episodes must be at least 1')
  if args.max_seconds is not None and not args.max_seconds > 0:
    p.error('--max_seconds must be positive')
  if args.flush_timeout_s < 0:
    p.error('--flush_timeout_s must be >= 0')
  if not 0 <= args.rt_priority <= 99:
    p.error('--rt_priority must be in [0, 99]')
  args.name = args.name or re.sub(r'[^A-Za-z0-9_.-]', '-', socket.gethostname()) or 'robot'
  if not _NAME_RE.match(args.name):
    p.error(
      f'--name {args.name!r}: use 1-100 letters, digits, "_", "-" or ".", starting with '
      'a letter or digit'
    )
  args.buffer_dir = args.buffer_dir or os.path.join('attach_buffers', args.name)
  args.status_file = args.status_file or os.path.join(args.buffer_dir, 'status.json')
  return args


def make_env(factory: str, kwargs: Dict[str, Any]):
  """Calls MODULE:FACTORY(**kwargs); UserError unless it gives a dm_env.Environment."""
  import dm_env

  from agents.common.errors import UserError

  module_name, sep, attr = factory.partition(':')
  if not sep or not module_name or not attr:
    raise UserError(
      f'--env {factory!r}: expected MODULE:FACTORY, e.g. '
      'environments.simulated_robot:make_simulated_robot_env'
    )
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise UserError(f'--env {factory!r}: cannot import {module_name!r} ({e})') from None
  function = getattr(module, attr, None)
  if not callable(function):
    raise UserError(f'--env {factory!r}: {module_name} has no callable {attr!r}')
  try:
    env = function(**kwargs)
  except (TypeError, ValueError) as e:  # Wrong or out-of-range arguments.
    raise UserError(f'--env {factory!r} with {kwargs}: {e}') from None
  if not isinstance(env, dm_env.Environment):
    raise UserError(f'--env {factory!r} returned {type(env).__name__}, not a dm_env.Environment')
  return env


@dataclasses.dataclass
class Counts:
  """What the control loop did (read by the status writer)."""

  episodes: int = 0  # Episodes run to their end (buffered or dropped).
  buffered: int = 0
  dropped_invalid: int = 0
  truncated_invalid: int = 0
  abandoned: int = 0  # Cut short by a stop or a disconnect (stop mode): never sent.
  dropped_outbox: int = 0  # Finished, but the outbox was full (its cap, or the disk).
  steps: int = 0
  last_invalid: Optional[str] = None
  waiting_for_program: bool = False


class AttachedActor:
  """The control loop: validated episodes with the latest fetched policy, into the outbox."""

  def __init__(
    self,
    env,
    actor,
    validator,
    outbox,
    sender,
    fetcher,
    name: str,
    metadata: Dict[str, Any],
    on_disconnect: str,
    disconnect_after_s: float,
    stored_spec: Optional[Any] = None,
  ):
    """`stored_spec` (default: the validator's) gives the dtypes episodes are stored in:
    the program's, whose rewards and discounts may be narrower than the environment's."""
    self._env = env
    self._actor = actor
    self._validator = validator
    self._outbox = outbox
    self._sender = sender
    self._fetcher = fetcher
    self._name = name
    self._metadata = metadata
    self._on_disconnect = on_disconnect
    self._disconnect_after = disconnect_after_s
    self.counts = Counts()
    self.timing: Optional[Dict[str, Any]] = None
    self._action_spec = validator.spec.actions
    self._stored_spec = stored_spec or validator.spec

  def _connected(self) -> bool:
    return self._fetcher.connected(self._disconnect_after)

  def _wait_for_program(self, stop: threading.Event) -> bool:
    """Stop mode: waits until parameters flow again; False if stopped first."""
    if self._on_disconnect != 'stop' or self._connected():
      return True
    self.counts.waiting_for_program = True
    print(
      f'[attach] {self._name}: program unreachable; waiting for it before the next episode',
      flush=True,
    )
    while not stop.is_set() and not self._connected():
      stop.wait(0.2)
    self.counts.waiting_for_program = False
    if not stop.is_set():
      print(f'[attach] {self._name}: program reachable again', flush=True)
    return not stop.is_set()

  def run_episode(self, stop: threading.Event) -> None:
    """One episode through an EpisodeGate; a clean or truncated one goes to the outbox."""
    from environments.actions import clip_action
    from environments.validation import EpisodeGate

    if not self._wait_for_program(stop):
      return
    gate = EpisodeGate(self._validator)
    versions = []
    started = time.time()
    timestep = self._env.reset()
    gate.begin(timestep)
    cut_short = None
    while not gate.done:
      if stop.is_set():
        cut_short = 'stopped'
        break
      if self._on_disconnect == 'stop' and not self._connected():
        # The robot environment's watchdog sends the safe action every period
        # from here on, until the next reset().
        cut_short = 'program unreachable (--on_disconnect stop); safe action held'
        break
      self._actor.update()  # Local: picks up the newest fetched parameters.
      action = self._actor.select_action(timestep.observation)
      versions.append(self._actor.policy_version)
      # As the program's actors do: the episode records what the robot executes.
      action = clip_action(action, self._action_spec)
      if gate.act(action) is not None:
        break
      timestep = self._env.step(action)
      self.counts.steps += 1
      gate.observe(timestep)
    episode = gate.finish()
    self._snapshot_timing()
    if cut_short:
      self.counts.abandoned += 1
      print(f'[attach] {self._name}: episode cut short ({cut_short}); not sent', flush=True)
      return
    self.counts.episodes += 1
    if gate.error is not None:
      self.counts.last_invalid = str(gate.error)
      outcome = 'dropped' if episode is None else f'truncated to {episode.length} steps'
      print(f'[attach] {self._name}: invalid step, episode {outcome}: {gate.error}', flush=True)
      if episode is None:
        self.counts.dropped_invalid += 1
        return
      self.counts.truncated_invalid += 1
    if episode is None:
      return
    self._buffer(episode, versions, started)

  def _buffer(self, episode, versions: List[Optional[int]], started: float) -> None:
    from launch.robot.outbox import OutboxFull
    from launch.store.episodes import Episode

    spec = self._stored_spec
    arrays = episode.as_arrays()
    known = [v for v in versions if v is not None]
    metadata = dict(
      self._metadata, source=self._name, episode_start_time=started, buffered_time=time.time()
    )
    if known:
      metadata['policy_version'] = [int(min(known)), int(max(known))]
    if episode.error is not None:
      metadata['invalid_step'] = str(episode.error)
    observations, observation_spec, features = arrays['observations'], spec.observations, None
    if isinstance(observation_spec, dict):  # Camera images with state features beside them.
      features = np.asarray(observations['features'], observation_spec['features'].dtype)
      observations, observation_spec = observations['pixels'], observation_spec['pixels']
    stored = Episode(
      observation_features=features,
      observations=np.asarray(observations, observation_spec.dtype),
      actions=np.asarray(arrays['actions'], spec.actions.dtype),
      rewards=np.asarray(arrays['rewards'], spec.rewards.dtype),
      discounts=np.asarray(arrays['discounts'], spec.discounts.dtype),
      metadata=metadata,
    )
    try:
      episode_id = self._outbox.append(stored)
    except (OSError, OutboxFull) as e:
      # The robot stays under the control loop (the environment holds it with the
      # safe action between episodes); what the outbox held before is intact.
      self.counts.dropped_outbox += 1
      why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
      print(
        f'[attach] {self._name}: outbox full ({why}): episode dropped '
        f'({self.counts.dropped_outbox} so far); the robot keeps running, the '
        'buffered episodes are kept and still go out',
        flush=True,
      )
      return
    self.counts.buffered += 1
    self._sender.notify()
    log.info(
      'episode %s (%d steps, return %.2f) buffered',
      episode_id,
      stored.length,
      stored.episode_return,
    )

  def _snapshot_timing(self) -> None:
    # Between episodes: timing_stats walks the step history the loop appends to.
    if hasattr(self._env, 'timing_stats'):
      self.timing = dataclasses.asdict(self._env.timing_stats())


def _status(
  args, actor: AttachedActor, outbox, fetcher, sender, latest, link, state: str
) -> Dict[str, Any]:
  counts = dataclasses.asdict(actor.counts) if actor else {}
  try:
    program = dataclasses.asdict(link.endpoints())
  except Exception as e:  # pylint: disable=broad-except
    program = {'error': str(e)}
  return {
    'name': args.name,
    'pid': os.getpid(),
    'state': state,
    'time': time.time(),
    'on_disconnect': args.on_disconnect,
    'connected': bool(fetcher and fetcher.connected(args.disconnect_after_s)),
    'program': program,
    'episodes': counts,
    'delivery': dict(
      outbox.counts(),
      bytes=outbox.bytes_used(),
      failures=sender.failures if sender else 0,
      last_error=sender.last_error if sender else None,
    ),
    'parameters': {
      'updates': latest.updates,
      'version': latest.version,
      'versions': list(latest.versions),
      'fetch_failures': fetcher.failures if fetcher else 0,
      'last_error': fetcher.last_error if fetcher else None,
    },
    'timing': actor.timing if actor else None,
  }


class StatusWriter(threading.Thread):
  """Writes the status file every few seconds (atomically), and once more at the end."""

  def __init__(self, path: str, snapshot: Callable[[], Dict[str, Any]], every_s: float):
    super().__init__(name='status-writer', daemon=True)
    self._path = path
    self._snapshot = snapshot
    self._every = every_s
    self._stopping = threading.Event()

  def write(self) -> None:
    from agents.common.files import atomic_write_bytes

    try:
      data = json.dumps(self._snapshot(), indent=1, default=str).encode()
      atomic_write_bytes(self._path, data)
    except Exception as e:  # pylint: disable=broad-except
      log.warning('could not write the status file %s: %s', self._path, e)

  def run(self) -> None:
    while not self._stopping.wait(self._every):
      self.write()

  def close(self) -> None:
    self._stopping.set()
    self.join(timeout=5)
    self.write()


def _token(args) -> str:
  """The run's gateway token: --token_file, $COLLECT_INFER_GATEWAY_TOKEN, RUN_DIR/gateway.token."""
  from agents.common.errors import UserError
  from launch.robot.protocol import TOKEN_ENV, check_token, read_token_file
  from launch.run_dir import RunDir

  try:
    if args.token_file:
      return read_token_file(args.token_file)
    if os.environ.get(TOKEN_ENV):
      return check_token(os.environ[TOKEN_ENV], f'${TOKEN_ENV}')
    if args.run_dir and RunDir(args.run_dir).gateway_token.exists():
      return read_token_file(RunDir(args.run_dir).gateway_token)
  except (OSError, ValueError) as e:
    raise UserError(f'the gateway token: {e}') from None
  raise UserError(
    "no gateway token: the program's gateway takes robots with the run's token only. Copy "
    "RUN_DIR/gateway.token from the program's machine and give it with --token_file "
    f'(or ${TOKEN_ENV})'
  )


def check_run_dir(run_dir: str) -> None:
  """UserError at once unless `run_dir` is a run (a directory with a readable config.json).

  Only a real run whose program is not up yet is worth waiting for; a mistyped path must
  not look like a stopped program.
  """
  from agents.common.errors import RunDirError, UserError
  from launch.run_dir import RunDir

  path = pathlib.Path(run_dir)
  if not path.exists():
    raise UserError(f'--run_dir {run_dir}: no such directory')
  if not path.is_dir():
    raise UserError(f'--run_dir {run_dir}: not a directory')
  run = RunDir(path)
  if not run.exists():
    raise UserError(
      f'--run_dir {run_dir}: not a run directory (no config.json); give the --run_dir the '
      'program was launched with'
    )
  try:
    run.read_config()
  except RunDirError as e:
    raise UserError(f'--run_dir {run_dir}: not a run directory ({e})') from None


def _first_contact(link, name: str, timeout_s: float, max_backoff_s: float):
  """The program's hello (spec, config, limits) once it answers; UserError after timeout."""
  from agents.common.errors import UserError
  from launch.robot.link import TokenRefused

  deadline = time.monotonic() + timeout_s
  backoff, last = 0.5, None
  while True:
    generation = None
    try:
      generation, client, _ = link.connect()
      return client.hello(name)
    except TokenRefused:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if generation is not None:
        link.invalidate(generation)
      last = ' '.join(str(e).split()) or type(e).__name__
    if time.monotonic() + backoff > deadline:
      raise UserError(
        f'could not reach the program through {link.where} within '
        f'{timeout_s:g} s ({last}); is it running?'
      )
    left = max(0.0, deadline - time.monotonic())
    print(f'[attach] waiting for the program ({left:.0f} s left): {last}', flush=True)
    time.sleep(backoff)
    backoff = min(2 * backoff, max_backoff_s)


def _synchronous_jax() -> None:
  """Runs the policy on the control thread itself (its priority), not on XLA's dispatch pool.

  For a small network this also trims the latency tail; set before JAX's first computation.
  """
  import jax

  try:
    jax.config.update('jax_cpu_enable_async_dispatch', False)
  except AttributeError:  # Older JAX: asynchronous dispatch only.
    pass


def _realtime(priority: int) -> None:
  """SCHED_FIFO for the calling thread and every thread it starts later.

  The control loop and the robot's watchdog need it; the background threads
  (parameters, sender, status) get it too, as they share the GIL with the
  loop. They sleep almost always, and Linux keeps 5% of each second for other
  processes (sched_rt_runtime_us) whatever an RT thread does.
  """
  try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
  except (AttributeError, OSError) as e:
    print(
      f'[attach] could not switch the control loop to SCHED_FIFO {priority} ({e}); '
      'running with normal scheduling',
      flush=True,
    )
    return
  print(f'[attach] running under SCHED_FIFO priority {priority}', flush=True)


def _first_parameters(fetcher, timeout_s: float) -> int:
  """The learner step of the first parameters fetched (the program answered a moment ago)."""
  from agents.common.errors import UserError
  from launch.robot.link import FATAL

  deadline = time.monotonic() + timeout_s
  while True:
    try:
      return fetcher.fetch_once()
    except FATAL:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if time.monotonic() > deadline:
        raise UserError(f'could not fetch parameters from the learner: {e}') from None
      time.sleep(1.0)


def attach(args: argparse.Namespace) -> int:
  """Runs the attached actor until stopped; returns the exit code."""
  if args.rt_priority:
    # Before any thread exists, so that every thread inherits it: a background
    # thread holding the GIL must not wait behind the machine's other processes
    # while the control loop waits for the GIL.
    _realtime(args.rt_priority)
  stop = threading.Event()
  fatal: List[BaseException] = []

  def on_signal(signum, frame):
    del frame
    print(
      f'[attach] {signal.Signals(signum).name}: stopping after this step (send it again to abort)',
      flush=True,
    )
    stop.set()
    # A second one raises KeyboardInterrupt: delivery is abandoned, the robot still parked.
    signal.signal(signum, signal.default_int_handler)

  if args.run_dir:
    check_run_dir(args.run_dir)  # A wrong path fails now, not after --connect_timeout_s.
  token = _token(args)  # Refused before the robot's environment starts.
  env = make_env(args.env, dict(args.env_arg))
  closed = []

  def close_env() -> None:
    if not closed:  # Parks a robot environment; once is enough.
      closed.append(True)
      env.close()

  try:
    return _attached(args, token, env, close_env, stop, fatal, on_signal)
  finally:
    close_env()


def _attached(
  args: argparse.Namespace,
  token: str,
  env,
  close_env: Callable[[], None],
  stop: threading.Event,
  fatal: List[BaseException],
  on_signal,
) -> int:
  """`attach` once the environment exists (the caller closes it)."""
  from acme import specs

  from agents import registry
  from agents.common.errors import ConfigError, UserError
  from environments.validation import StepValidator
  from launch.config import ExperimentConfig
  from launch.robot.link import LatestParameters, ParameterFetcher, ProgramLink
  from launch.robot.outbox import EpisodeOutbox
  from launch.robot.sender import Sender
  from launch.robot.spec import check_spec_matches, spec_from_data, spec_to_data
  from launch.store.episodes import WriterBusyError

  def on_fatal(error: BaseException) -> None:
    fatal.append(error)
    stop.set()

  env_spec = specs.make_environment_spec(env)
  link = ProgramLink(
    token, run_dir=args.run_dir, gateway=args.gateway, rpc_timeout_s=args.rpc_timeout_s
  )
  print(f'[attach] {args.name}: connecting to the program through {link.where}', flush=True)
  hello = _first_contact(link, args.name, args.connect_timeout_s, args.max_backoff_s)
  program_spec = hello['spec']
  try:
    program_env_spec = spec_from_data(program_spec)
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"the program's spec does not read as a spec here ({e!r})") from None
  check_spec_matches(program_spec, spec_to_data(env_spec))
  # A program found later (a relaunch) must have the same spec.
  link.set_check(
    lambda client: check_spec_matches(
      program_spec,
      client.hello(args.name)['spec'],
      what="the program's spec changed since the robot attached (program = then, "
      'environment = now)',
    )
  )
  try:
    cfg = ExperimentConfig.from_dict(hello['config'])
  except (ConfigError, TypeError, ValueError) as e:
    raise UserError(
      f"the program's config does not load here ({e}); run the same version of "
      'this code on the robot PC as the program'
    ) from None
  # The program's own actor, reading parameters from local memory every step.
  agent = cfg.agent.with_overrides({'replay.variable_update_period': 1})
  if len(cfg.task_names) > 1:
    # A program of several tasks may learn in one layout of all their bodies; the robot
    # acts as the program's task (its spec was checked above against that task's).
    from launch import experiment  # pylint: disable=g-import-not-at-top

    builder = experiment.make_builder(dataclasses.replace(cfg, agent=agent), cfg.task)
  else:
    builder = registry.get(cfg.algorithm).make_builder(agent, program_env_spec)
  latest = LatestParameters()
  fetcher = ParameterFetcher(
    link,
    latest,
    stop,
    refresh_every_s=args.refresh_every_s,
    max_backoff_s=args.max_backoff_s,
    on_fatal=on_fatal,
  )
  version = _first_parameters(fetcher, args.connect_timeout_s)
  actor = builder.make_actor(latest, adder=None, seed=args.seed, version_name='learner_steps')
  # Compile the policy now rather than in the first control period.
  import tree  # pylint: disable=g-import-not-at-top

  actor.select_action(tree.map_structure(lambda s: s.generate_value(), env_spec.observations))
  try:
    outbox = EpisodeOutbox(
      args.buffer_dir, args.name, max_bytes=int(args.max_outbox_mb * (1 << 20))
    )
  except WriterBusyError:
    raise UserError(
      f'another attach process is running as {args.name!r} with the outbox '
      f'{args.buffer_dir}; give each robot its own --name'
    ) from None
  sender = Sender(
    outbox,
    link,
    args.name,
    limits=hello['limits'],
    max_backoff_s=args.max_backoff_s,
    on_fatal=on_fatal,
  )
  metadata = {'robot': args.name, 'task': cfg.task, 'host': socket.gethostname()}
  if hasattr(env, 'control_hz'):
    metadata['control_hz'] = env.control_hz
  loop = AttachedActor(
    env,
    actor,
    StepValidator(env_spec, on_error=args.on_invalid, name=args.name),
    outbox,
    sender,
    fetcher,
    args.name,
    metadata,
    args.on_disconnect,
    args.disconnect_after_s,
    stored_spec=program_env_spec,
  )
  state = ['running']
  status = StatusWriter(
    args.status_file,
    lambda: _status(args, loop, outbox, fetcher, sender, latest, link, state[0]),
    args.status_every_s,
  )
  pending = outbox.counts()['pending']
  print(
    f'[attach] {args.name}: attached to {cfg.task} (policy at learner step {version}); '
    f'outbox {outbox.directory} ({pending} episode(s) left to send)',
    flush=True,
  )
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, on_signal)
  fetcher.start()
  sender.start()
  status.start()
  deadline = None if args.max_seconds is None else time.monotonic() + args.max_seconds
  try:
    while not stop.is_set():
      if args.max_episodes is not None and loop.counts.episodes >= args.max_episodes:
        break
      if deadline is not None and time.monotonic() >= deadline:
        break
      loop.run_episode(stop)
  finally:
    state[0] = 'stopping'
    stop.set()
    close_env()  # Parks the robot first; delivery can wait.
    flushed = sender.flush(args.flush_timeout_s) if sender.is_alive() else False
    sender.halt()
    sender.join(timeout=args.rpc_timeout_s)  # Lets an episode in flight be recorded.
    state[0] = 'stopped'
    status.close()
    left = outbox.counts()['pending']
    outbox.close()
    print(
      f'[attach] {args.name}: stopped after {loop.counts.episodes} episodes '
      f'({loop.counts.buffered} buffered, {loop.counts.dropped_invalid} dropped as invalid); '
      f'{left} left to send'
      + ('' if flushed or not left else f' (kept in {outbox.directory} for next time)'),
      flush=True,
    )
  if fatal:
    raise fatal[0]
  return 0


def _configure_process() -> None:
  """Before JAX and TensorFlow load: CPU only, one XLA thread, no TensorFlow chatter.

  The control loop shares the robot PC's cores with everything else (the
  program's actor nodes get the same settings from launch.nodes.process.process_env).
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  os.environ.setdefault('OMP_NUM_THREADS', '1')
  os.environ.setdefault(
    'XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1'
  )
  from agents.common.quiet import quiet_third_party

  quiet_third_party()  # No gym banner; MUJOCO_GL=disable unless set.


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  _configure_process()
  sys.setswitchinterval(_SWITCH_INTERVAL_S)
  _synchronous_jax()
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  # Library chatter (absl, jax) stays at warnings.
  for name in ('absl', 'jax'):
    logging.getLogger(name).setLevel(logging.WARNING)
  from agents.common.errors import UserError

  try:
    return attach(args)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # Ctrl-C before the control loop started, or a second one.
    return 130


if __name__ == '__main__':
  sys.exit(main())
