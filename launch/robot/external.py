"""Actors outside the program (robots attached with `launch.attach`): the shared pieces.

Program side: `ExternalEpisodeSink`, which the learner serves over Courier, appends
whole episodes from attached actors to the run's durable store, each exactly once.

Robot side:
* `ProgramLink` finds the program (its address book, re-read on every reconnect,
  or fixed addresses) and checks that a program it reconnects to still has the
  spec the robot was attached with;
* `ParameterFetcher` keeps the newest policy in `LatestParameters`, the local
  variable source the robot's actor reads, so acting never waits on the network;
* `EpisodeOutbox` keeps every validated episode on the robot PC's disk, with a
  ledger of what has been delivered;
* `Sender` delivers the outbox in order, with retries and exponential backoff:
  the episode to the program's store (`append_external_episode`), and its n-step
  transitions to the external replay table (acme's NStepTransitionAdder).

Both sides: the environment spec as plain data, and the comparison that names
every differing field.
"""

import dataclasses
import logging
import math
import os
import pathlib
import secrets
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

import dm_env
import numpy as np
from acme import core
from acme import specs

from agents.common.errors import RunDirError, UserError
from agents.common.files import atomic_write_bytes
from launch.run_dir import RunDir
from launch.store.episodes import Episode, EpisodeStore

log = logging.getLogger('collect_infer.external')

SPEC_FIELDS = ('observations', 'actions', 'rewards', 'discounts')
# Observations and actions must match in every respect; rewards and discounts
# in what the data carries (their names and bounds are conventions).
_COMPARED = {'observations': ('name', 'shape', 'dtype', 'bounds'),
             'actions': ('name', 'shape', 'dtype', 'bounds'),
             'rewards': ('shape', 'dtype'), 'discounts': ('shape', 'dtype')}
EXTERNAL_WRITER_PREFIX = 'external_'
# Metadata: '<outbox token>:<episode id in the outbox>', unique across outboxes (a
# wiped and recreated outbox has a new token, so its ids are never taken for resends).
EPISODE_KEY = 'robot_episode_id'
PARTS = ('store', 'replay')  # Where each episode goes.
POLICY = 'policy'
VERSION = 'learner_steps'


class SpecMismatchError(UserError):
  """The environment's spec differs from the program's; the message names every field."""


class ProgramUnavailable(Exception):
  """The program can't be reached now (not started, restarting, or gone); retry later."""


# ----------------------------------------------------------------------------
# Specs as plain data (Courier carries them; JSON-able too).


def spec_to_data(spec: specs.EnvironmentSpec) -> Dict[str, Any]:
  """An EnvironmentSpec as nested dicts and lists of plain values."""
  return {field: _nest_to_data(getattr(spec, field)) for field in SPEC_FIELDS}


def _nest_to_data(nest: Any) -> Dict[str, Any]:
  if isinstance(nest, Mapping):
    return {'kind': 'dict', 'items': {str(k): _nest_to_data(v) for k, v in nest.items()}}
  if isinstance(nest, (list, tuple)):
    return {'kind': 'list', 'items': [_nest_to_data(v) for v in nest]}
  data = {'kind': 'array', 'name': nest.name, 'shape': [int(d) for d in nest.shape],
          'dtype': np.dtype(nest.dtype).name}
  if isinstance(nest, specs.BoundedArray):
    data.update(minimum=np.asarray(nest.minimum).tolist(),
                maximum=np.asarray(nest.maximum).tolist())
  return data


def spec_from_data(data: Mapping[str, Any]) -> specs.EnvironmentSpec:
  """The inverse of `spec_to_data`."""
  return specs.EnvironmentSpec(**{field: _nest_from_data(data[field]) for field in SPEC_FIELDS})


def _nest_from_data(data: Mapping[str, Any]) -> Any:
  if data['kind'] == 'dict':
    return {k: _nest_from_data(v) for k, v in data['items'].items()}
  if data['kind'] == 'list':
    return [_nest_from_data(v) for v in data['items']]
  shape, dtype = tuple(data['shape']), np.dtype(data['dtype'])
  if 'minimum' in data:
    return specs.BoundedArray(shape, dtype, np.asarray(data['minimum'], dtype),
                              np.asarray(data['maximum'], dtype), name=data['name'])
  return specs.Array(shape, dtype, name=data['name'])


def spec_differences(program: Mapping[str, Any], environment: Mapping[str, Any]) -> List[str]:
  """Every field where `environment`'s spec differs from `program`'s (both as plain data).

  Each entry reads e.g. 'observations.shape: program (5,), environment (3,)'.
  """
  differences: List[str] = []
  for field in SPEC_FIELDS:
    _compare(program[field], environment[field], field, _COMPARED[field], differences)
  return differences


def _describe(data: Mapping[str, Any]) -> str:
  if data['kind'] == 'dict':
    return f'a dict with keys {sorted(data["items"])}'
  if data['kind'] == 'list':
    return f'a sequence of {len(data["items"])}'
  return 'one array'


def _compare(program: Mapping[str, Any], environment: Mapping[str, Any], path: str,
             attributes: Tuple[str, ...], out: List[str]) -> None:
  if program['kind'] != environment['kind'] or (
      program['kind'] == 'list' and len(program['items']) != len(environment['items'])):
    out.append(f'{path}: program {_describe(program)}, environment {_describe(environment)}')
    return
  if program['kind'] == 'dict':
    p_keys, e_keys = set(program['items']), set(environment['items'])
    if p_keys != e_keys:
      out.append(f'{path}: keys program {sorted(p_keys)}, environment {sorted(e_keys)}')
    for key in sorted(p_keys & e_keys):
      _compare(program['items'][key], environment['items'][key], f'{path}/{key}', attributes, out)
    return
  if program['kind'] == 'list':
    for i, (p, e) in enumerate(zip(program['items'], environment['items'])):
      _compare(p, e, f'{path}/{i}', attributes, out)
    return
  for attribute in attributes:
    if attribute == 'shape':
      p, e = tuple(program['shape']), tuple(environment['shape'])
    elif attribute == 'bounds':
      _compare_bounds(program, environment, path, out)
      continue
    else:
      p, e = program[attribute], environment[attribute]
    if p != e:
      out.append(f'{path}.{attribute}: program {p!r}, environment {e!r}')


def _compare_bounds(program: Mapping[str, Any], environment: Mapping[str, Any], path: str,
                    out: List[str]) -> None:
  p_bounded, e_bounded = 'minimum' in program, 'minimum' in environment
  if p_bounded != e_bounded:
    kind = lambda bounded: 'bounded' if bounded else 'unbounded'
    out.append(f'{path}.bounds: program {kind(p_bounded)}, environment {kind(e_bounded)}')
    return
  if not p_bounded:
    return
  for which in ('minimum', 'maximum'):
    p, e = np.asarray(program[which], np.float64), np.asarray(environment[which], np.float64)
    try:
      shape = tuple(program['shape'])
      same = np.array_equal(np.broadcast_to(p, shape), np.broadcast_to(e, shape))
    except ValueError:  # The shapes differ too (reported already): compare as given.
      same = np.array_equal(p, e)
    if not same:
      out.append(f'{path}.{which}: program {program[which]}, environment {environment[which]}')


def check_spec_matches(program: Mapping[str, Any], environment: Mapping[str, Any],
                       what: str = "the environment's spec does not match the program's") -> None:
  """Raises SpecMismatchError naming each differing field, if there is one.

  The message reads '<what> in N field(s): <field>: program <value>,
  environment <value>; ...'.
  """
  differences = spec_differences(program, environment)
  if differences:
    raise SpecMismatchError(f'{what} in {len(differences)} field(s): ' + '; '.join(differences))


# ----------------------------------------------------------------------------
# Episodes over the wire.


def episode_to_data(episode: Episode) -> Dict[str, Any]:
  return {'observations': np.asarray(episode.observations), 'actions': np.asarray(episode.actions),
          'rewards': np.asarray(episode.rewards), 'discounts': np.asarray(episode.discounts),
          'metadata': dict(episode.metadata)}


def episode_from_data(data: Mapping[str, Any]) -> Episode:
  return Episode(observations=np.asarray(data['observations']),
                 actions=np.asarray(data['actions']), rewards=np.asarray(data['rewards']),
                 discounts=np.asarray(data['discounts']), metadata=dict(data['metadata']))


def episode_timesteps(episode: Episode) -> Tuple[dm_env.TimeStep, List[Tuple[np.ndarray,
                                                                              dm_env.TimeStep]]]:
  """The FIRST timestep and the (action, next timestep) pairs an adder is fed."""
  steps = episode.length
  first = dm_env.restart(episode.observations[0])
  rest = []
  for t in range(steps):
    kind = dm_env.StepType.LAST if t == steps - 1 else dm_env.StepType.MID
    rest.append((episode.actions[t], dm_env.TimeStep(kind, episode.rewards[t],
                                                     episode.discounts[t],
                                                     episode.observations[t + 1])))
  return first, rest


def check_episode(episode: Episode, spec: specs.EnvironmentSpec) -> Optional[str]:
  """Why `episode` does not fit a program with `spec` (one flat observation and action), or None."""
  steps = episode.actions.shape[0] if episode.actions.ndim else 0
  expected = {'observations': ((steps + 1,) + tuple(spec.observations.shape),
                               spec.observations.dtype),
              'actions': ((steps,) + tuple(spec.actions.shape), spec.actions.dtype),
              'rewards': ((steps,) + tuple(spec.rewards.shape), spec.rewards.dtype),
              'discounts': ((steps,) + tuple(spec.discounts.shape), spec.discounts.dtype)}
  for field, (shape, dtype) in expected.items():
    value = getattr(episode, field)
    if value.shape != shape or value.dtype != np.dtype(dtype):
      return (f'{field}: expected shape {shape} and dtype {np.dtype(dtype).name}, got '
              f'{value.shape} {value.dtype}')
  if steps < 1:
    return 'actions: an episode needs at least one step'
  actions = spec.actions
  if isinstance(actions, specs.BoundedArray):
    with np.errstate(invalid='ignore'):
      outside = (episode.actions < actions.minimum) | (episode.actions > actions.maximum)
    if np.any(outside):
      step = int(np.argwhere(outside)[0][0])
      return f'actions: outside the action bounds at step {step}'
  return None


# ----------------------------------------------------------------------------
# Program side.


class ExternalEpisodeSink:
  """Appends attached actors' episodes to a store: writer f'external_{name}', each once.

  An episode carries its id in the robot's outbox (metadata 'robot_episode_id');
  one already stored under that name is acknowledged again, not stored twice,
  so a robot that lost an acknowledgement can simply resend. Thread-safe
  (Courier serves calls on several threads).
  """

  def __init__(self, directory: os.PathLike, spec: specs.EnvironmentSpec):
    self._dir = pathlib.Path(directory)
    self._spec = spec
    self._lock = threading.Lock()
    self._writers: Dict[str, Any] = {}
    self._stored: Dict[str, Dict[str, str]] = {}  # name -> robot episode id -> store id

  def append(self, name: str, data: Mapping[str, Any]) -> Dict[str, Any]:
    """{'status': 'stored' | 'duplicate', 'id': store id} or {'status': 'rejected', 'reason'}."""
    try:
      episode = episode_from_data(data)
    except (KeyError, TypeError, ValueError) as e:
      return {'status': 'rejected', 'reason': f'not an episode ({e!r})'}
    key = episode.metadata.get(EPISODE_KEY)
    if not isinstance(key, str) or not key:
      return {'status': 'rejected', 'reason': f'metadata {EPISODE_KEY!r} is missing'}
    problem = check_episode(episode, self._spec)
    if problem:
      return {'status': 'rejected', 'reason': problem}
    with self._lock:
      try:
        writer, stored = self._writer(name)
      except ValueError as e:  # A bad name.
        return {'status': 'rejected', 'reason': str(e)}
      if key in stored:
        return {'status': 'duplicate', 'id': stored[key]}
      episode.metadata.update(source=name, external=True, received_time=time.time())
      try:
        episode_id = writer.append(episode)
      except ValueError as e:  # Non-finite values and the like: the store refuses them.
        return {'status': 'rejected', 'reason': str(e)}
      except Exception:  # pylint: disable=broad-except
        self._writers.pop(name, None)  # A failed append closes the writer; reopen next time.
        raise
      stored[key] = episode_id
    return {'status': 'stored', 'id': episode_id}

  def _writer(self, name: str):
    writer = self._writers.get(name)
    if writer is None or writer.closed:
      if not isinstance(name, str):
        raise ValueError(f'robot name {name!r}: not a string')
      store = EpisodeStore(self._dir, verify=False)
      writer = store.writer(EXTERNAL_WRITER_PREFIX + name)
      # What this robot delivered before (maybe to an earlier learner process).
      self._stored[name] = {
          info.metadata[EPISODE_KEY]: info.episode_id for info in store.index()
          if info.writer == writer.name and isinstance(info.metadata.get(EPISODE_KEY), str)}
      self._writers[name] = writer
    return writer, self._stored[name]

  def close(self) -> None:
    with self._lock:
      for writer in self._writers.values():
        writer.close()
      self._writers.clear()


# ----------------------------------------------------------------------------
# Robot side.


@dataclasses.dataclass(frozen=True)
class Endpoints:
  """Where the program's servers are."""
  learner: str
  replay: str
  started: Optional[float] = None  # The address book's launch time, when read from one.


class ProgramLink:
  """The robot's way to the program: a Courier client to its learner and the replay address.

  With `run_dir`, addresses come from `<run_dir>/addresses.json`, read again on
  every reconnect (a relaunched program has new ports); otherwise from the
  fixed `learner` and `replay` addresses. Each new connection is checked with
  `check(learner_client)` before use (the attach command compares specs there).
  Thread-safe: the parameter fetcher and the sender share it.
  """

  def __init__(self, run_dir: Optional[str] = None, learner: Optional[str] = None,
               replay: Optional[str] = None, rpc_timeout_s: float = 10.0,
               check: Optional[Callable[[Any], None]] = None):
    if (run_dir is None) == (learner is None or replay is None):
      raise UserError('give either --run_dir, or both --learner and --replay')
    self._run_dir = RunDir(run_dir) if run_dir else None
    self._fixed = None if run_dir else Endpoints(learner, replay)
    self._timeout = rpc_timeout_s
    self._check = check
    self._lock = threading.Lock()
    self._generation = 0
    self._current: Optional[Tuple[int, Any, Endpoints]] = None

  @property
  def where(self) -> str:
    """A human description of where the addresses come from."""
    if self._run_dir is not None:
      return f'the address book {self._run_dir.path / "addresses.json"}'
    return f'learner {self._fixed.learner}, replay {self._fixed.replay}'

  def set_check(self, check: Callable[[Any], None]) -> None:
    self._check = check

  def endpoints(self) -> Endpoints:
    """The addresses now; ProgramUnavailable when the program has published none."""
    if self._fixed is not None:
      return self._fixed
    try:
      book = self._run_dir.read_addresses()
    except RunDirError as e:
      raise ProgramUnavailable(str(e)) from None
    try:
      return Endpoints(str(book['learner']), str(book['replay']), book.get('started'))
    except KeyError as e:
      raise ProgramUnavailable(f'the address book has no {e} address') from None

  def connect(self) -> Tuple[int, Any, Endpoints]:
    """(generation, learner Courier client, endpoints), connecting if needed."""
    import courier  # Late: tests of the data pieces need no RPC stack.
    with self._lock:
      if self._current is None:
        endpoints = self.endpoints()
        # wait_for_ready=False: a server that is down fails the call at once
        # instead of holding it for the whole timeout.
        client = courier.Client(endpoints.learner, call_timeout=self._timeout,
                                wait_for_ready=False)
        if self._check is not None:
          try:
            self._check(client)
          except SpecMismatchError:
            raise
          except Exception as e:  # pylint: disable=broad-except
            raise ProgramUnavailable(f'learner at {endpoints.learner}: {e}') from None
        self._generation += 1
        self._current = (self._generation, client, endpoints)
        log.debug('using learner %s, replay %s', endpoints.learner, endpoints.replay)
      return self._current

  def invalidate(self, generation: int) -> None:
    """Drops connection `generation` (after a failure); the next `connect` starts afresh."""
    with self._lock:
      if self._current is not None and self._current[0] == generation:
        self._current = None


class LatestParameters(core.VariableSource):
  """The newest policy fetched from the learner: the robot actor's local variable source."""

  def __init__(self):
    self._lock = threading.Lock()
    self._params: Any = None
    self._version: Optional[int] = None
    self.updates = 0
    self.versions: List[int] = []  # Each distinct learner step fetched, in order (recent ones).

  def set(self, params: Any, version: int) -> None:
    with self._lock:
      self._params, self._version = params, int(version)
      self.updates += 1
      if not self.versions or self.versions[-1] != self._version:
        self.versions = (self.versions + [self._version])[-100:]

  @property
  def version(self) -> Optional[int]:
    return self._version

  def get_variables(self, names: List[str]) -> List[Any]:
    with self._lock:
      if self._params is None:
        raise ProgramUnavailable('no parameters fetched from the learner yet')
      return [self._version if n == VERSION else self._params for n in names]


class ParameterFetcher(threading.Thread):
  """Fetches the learner's policy every `refresh_every_s`, backing off while it is unreachable."""

  def __init__(self, link: ProgramLink, latest: LatestParameters, stop: threading.Event,
               refresh_every_s: float = 1.0, max_backoff_s: float = 30.0,
               on_fatal: Optional[Callable[[BaseException], None]] = None):
    super().__init__(name='parameter-fetcher', daemon=True)
    self._link = link
    self._latest = latest
    self._stopping = stop
    self._refresh = refresh_every_s
    self._max_backoff = max_backoff_s
    self._on_fatal = on_fatal
    self.last_success: Optional[float] = None  # time.monotonic() of the last fetch.
    self.failures = 0
    self.last_error: Optional[str] = None

  def fetch_once(self) -> int:
    """One fetch; returns the learner step of the parameters. Raises on failure."""
    generation = None
    try:
      generation, client, _ = self._link.connect()
      params, version = client.get_variables([POLICY, VERSION])
    except Exception:
      if generation is not None:
        self._link.invalidate(generation)
      raise
    self._latest.set(params, int(version))
    self.last_success = time.monotonic()
    return int(version)

  def connected(self, within_s: float) -> bool:
    """Whether a fetch succeeded in the last `within_s` seconds."""
    return self.last_success is not None and time.monotonic() - self.last_success <= within_s

  def run(self) -> None:
    backoff = self._refresh
    while not self._stopping.is_set():
      try:
        version = self.fetch_once()
        if backoff > self._refresh:
          log.info('parameters: the learner answers again (learner step %d)', version)
        backoff, delay = self._refresh, self._refresh
      except SpecMismatchError as e:
        if self._on_fatal:
          self._on_fatal(e)
        return
      except Exception as e:  # pylint: disable=broad-except
        self.failures += 1
        self.last_error = _one_line(e)
        if self.failures == 1 or self.failures % 10 == 0:
          log.warning('parameters: the learner is unreachable (%s); retrying in %.1f s '
                      '(%d failures)', self.last_error, backoff, self.failures)
        delay, backoff = backoff, min(2 * backoff, self._max_backoff)
      self._stopping.wait(delay)


class EpisodeOutbox:
  """The robot PC's durable outbox: every validated episode and what has been delivered.

  Episodes go into an EpisodeStore in `directory` under writer `name` (appended
  and fsynced before `append` returns). `<name>.delivered` is an append-only
  ledger of '<part> <episode id>' lines (part: store, replay or rejected),
  fsynced per line, so a restarted attach process sends exactly what is left.
  `<name>.token` names this outbox for good (see `key`). `append` is for the
  control loop; the rest for the sender thread.
  """

  def __init__(self, directory: os.PathLike, name: str):
    self._dir = pathlib.Path(directory)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._writer = EpisodeStore(self._dir).writer(name)  # Holds the name: one process per outbox.
    self._store = EpisodeStore(self._dir)
    self._lock = threading.Lock()  # The store reader and the ledger: sender and status threads.
    self._name = name
    self._ledger_path = self._dir / f'{name}.delivered'
    self.token = self._token()
    self._delivered: Dict[str, Set[str]] = {}
    self._load_ledger()
    self._ledger = os.open(self._ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

  def _token(self) -> str:
    path = self._dir / f'{self._name}.token'
    try:
      return path.read_text().strip()
    except FileNotFoundError:
      token = secrets.token_hex(8)
      atomic_write_bytes(path, token.encode() + b'\n')
      return token

  def key(self, episode_id: str) -> str:
    """The episode's name in the program's store (metadata EPISODE_KEY)."""
    return f'{self.token}:{episode_id}'

  def _load_ledger(self) -> None:
    try:
      text = self._ledger_path.read_bytes().decode(errors='replace')
    except FileNotFoundError:
      return
    for line in text.split('\n')[:-1]:  # A torn last line (no newline) is ignored.
      part, _, episode_id = line.partition(' ')
      if part in PARTS + ('rejected',) and episode_id:
        self._delivered.setdefault(episode_id, set()).add(part)

  @property
  def directory(self) -> pathlib.Path:
    return self._dir

  def append(self, episode: Episode) -> str:
    """Stores `episode` durably; returns its id. ValueError if it can't be stored."""
    return self._writer.append(episode)

  def _done(self, episode_id: str) -> bool:
    parts = self._delivered.get(episode_id, set())
    return 'rejected' in parts or all(p in parts for p in PARTS)

  def _ids(self) -> List[str]:
    self._store.refresh()
    return [i.episode_id for i in self._store.index() if i.writer == self._name]

  def pending(self) -> List[str]:
    """Ids of buffered episodes not yet fully delivered, oldest first."""
    with self._lock:
      return [i for i in self._ids() if not self._done(i)]

  def counts(self) -> Dict[str, int]:
    """Buffered episodes, and how many reached the store, the replay, or were rejected."""
    with self._lock:
      ids = self._ids()
      parts = [self._delivered.get(i, set()) for i in ids]
      return {'buffered': len(ids), 'store': sum('store' in p for p in parts),
              'replay': sum('replay' in p for p in parts),
              'rejected': sum('rejected' in p for p in parts),
              'pending': sum(not self._done(i) for i in ids)}

  def read(self, episode_id: str) -> Episode:
    with self._lock:
      return self._store.read(episode_id)

  def delivered(self, episode_id: str) -> Set[str]:
    with self._lock:
      return set(self._delivered.get(episode_id, set()))

  def mark(self, episode_id: str, part: str) -> None:
    """Records durably that `part` of the episode was delivered (or that it was rejected)."""
    with self._lock:
      os.write(self._ledger, f'{part} {episode_id}\n'.encode())
      os.fsync(self._ledger)
      self._delivered.setdefault(episode_id, set()).add(part)

  def close(self) -> None:
    with self._lock:
      self._writer.close()
      if self._ledger >= 0:
        os.close(self._ledger)
        self._ledger = -1


class Sender(threading.Thread):
  """Delivers the outbox in order: each episode to the program's store, then to its replay.

  Failures are retried with exponential backoff (up to `max_backoff_s`),
  reconnecting through the link, so episodes finished while the program was
  away go out once it is back. A replay insert runs on a helper thread with a
  deadline: acme's adder waits without limit for a server that vanished
  mid-episode, and such an attempt is abandoned rather than waited on.
  """

  def __init__(self, outbox: EpisodeOutbox, link: ProgramLink, make_adder: Callable[[Any], Any],
               name: str, rpc_timeout_s: float = 10.0, max_backoff_s: float = 30.0,
               initial_backoff_s: float = 0.5,
               on_fatal: Optional[Callable[[BaseException], None]] = None):
    super().__init__(name='episode-sender', daemon=True)
    self._outbox = outbox
    self._link = link
    self._make_adder = make_adder
    self._name = name
    self._timeout = rpc_timeout_s
    self._max_backoff = max_backoff_s
    self._initial_backoff = initial_backoff_s
    self._on_fatal = on_fatal
    self._halt = threading.Event()
    self._wake = threading.Event()
    self._idle = threading.Event()
    self.failures = 0
    self.last_error: Optional[str] = None
    self.last_delivery: Optional[float] = None  # time.time() of the last delivered episode.

  def notify(self) -> None:
    """A new episode is in the outbox."""
    self._idle.clear()
    self._wake.set()

  def flush(self, timeout_s: float) -> bool:
    """Waits up to `timeout_s` until nothing is pending; returns whether it got there."""
    self._wake.set()
    return self._idle.wait(timeout_s)

  def halt(self) -> None:
    self._halt.set()
    self._wake.set()

  def run(self) -> None:
    backoff = self._initial_backoff
    while not self._halt.is_set():
      pending = self._outbox.pending()
      if not pending:
        self._idle.set()
        self._wake.wait(1.0)
        self._wake.clear()
        continue
      self._idle.clear()
      for episode_id in pending:
        if self._halt.is_set():
          return
        try:
          self._deliver(episode_id)
          if backoff > self._initial_backoff:
            log.info('delivering again: %s reached the program', episode_id)
          backoff = self._initial_backoff
        except SpecMismatchError as e:
          if self._on_fatal:
            self._on_fatal(e)
          return
        except Exception as e:  # pylint: disable=broad-except
          self.failures += 1
          self.last_error = _one_line(e)
          if self.failures == 1 or self.failures % 10 == 0:
            log.warning('delivery of %s failed (%s); %d episode(s) wait; retrying in %.1f s '
                        '(%d failures)', episode_id, self.last_error, len(pending), backoff,
                        self.failures)
          self._halt.wait(backoff)
          backoff = min(2 * backoff, self._max_backoff)
          break

  def _deliver(self, episode_id: str) -> None:
    episode = self._outbox.read(episode_id)
    done = self._outbox.delivered(episode_id)
    generation, learner, endpoints = self._link.connect()
    try:
      if 'store' not in done:
        data = episode_to_data(episode)
        data['metadata'].update({EPISODE_KEY: self._outbox.key(episode_id),
                                 'sent_time': time.time()})
        reply = learner.append_external_episode(self._name, data)
        if reply.get('status') == 'rejected':
          # Validated here, so this is a bug or a changed program: keep the
          # episode in the outbox, record why, and go on with the others.
          log.error('the program rejected episode %s: %s; it stays in %s', episode_id,
                    reply.get('reason'), self._outbox.directory)
          self._outbox.mark(episode_id, 'rejected')
          return
        self._outbox.mark(episode_id, 'store')
      if 'replay' not in done:
        self._insert(endpoints.replay, episode)
        self._outbox.mark(episode_id, 'replay')
    except Exception:
      self._link.invalidate(generation)
      raise
    self.last_delivery = time.time()

  def _insert(self, address: str, episode: Episode) -> None:
    import reverb  # Late: heavy, and only the sender needs it.
    outcome: Dict[str, BaseException] = {}

    def work():
      try:
        client = reverb.Client(address)
        client.server_info(timeout=max(1, int(math.ceil(self._timeout))))  # Fails fast if down.
        adder = self._make_adder(client)
        first, rest = episode_timesteps(episode)
        adder.add_first(first)
        # The LAST step makes the adder flush and wait for the server's confirmation.
        for action, timestep in rest:
          adder.add(action, timestep)
      except BaseException as e:  # pylint: disable=broad-except
        outcome['error'] = e

    worker = threading.Thread(target=work, name='replay-insert', daemon=True)
    worker.start()
    worker.join(self._timeout + 0.01 * episode.length)
    if worker.is_alive():
      raise ProgramUnavailable(f'replay insert into {address} did not finish; abandoned it')
    if 'error' in outcome:
      raise outcome['error']


def _one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 300 else text[:297] + '...'
