"""Robot side: the way to the program, and the newest policy fetched from it.

`ProgramLink` finds the program (its address book, re-read on every reconnect, or
fixed addresses) and checks that a program it reconnects to still has the spec the
robot was attached with; `ParameterFetcher` keeps the newest policy in
`LatestParameters`, the local variable source the robot's actor reads, so acting
never waits on the network.
"""

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from acme import core

from agents.common.errors import RunDirError, UserError
from launch.robot.spec import SpecMismatchError
from launch.run_dir import RunDir

log = logging.getLogger('collect_infer.external')

POLICY = 'policy'
VERSION = 'learner_steps'


class ProgramUnavailable(Exception):
  """The program can't be reached now (not started, restarting, or gone); retry later."""



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
        self.last_error = one_line(e)
        if self.failures == 1 or self.failures % 10 == 0:
          log.warning('parameters: the learner is unreachable (%s); retrying in %.1f s '
                      '(%d failures)', self.last_error, backoff, self.failures)
        delay, backoff = backoff, min(2 * backoff, self._max_backoff)
      self._stopping.wait(delay)


def one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 300 else text[:297] + '...'
