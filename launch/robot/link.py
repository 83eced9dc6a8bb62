"""Robot side: the way to the program (its gateway), and the newest policy fetched from it.

`ProgramLink` finds the program's gateway (its address book, re-read on every reconnect,
or a fixed address) and checks that a program it reconnects to still has the spec the
robot was attached with; `GatewayClient` makes the calls (frames over gRPC with the run's
token; nothing is unpickled); `ParameterFetcher` keeps the newest policy in
`LatestParameters`, the local variable source the robot's actor reads, so acting never
waits on the network.
"""

import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from acme import core

from agents.common.errors import RunDirError, UserError
from launch.robot import protocol
from launch.robot.frame import FrameError, encode_frame
from launch.robot.spec import SpecMismatchError
from launch.run_dir import RunDir

log = logging.getLogger('collect_infer.external')

VERSION = 'learner_steps'


class ProgramUnavailable(Exception):
  """The program can't be reached now (not started, restarting, or gone); retry later."""


class TokenRefused(UserError):
  """The gateway refused the robot's token: retrying cannot help (the robot stops)."""


# Errors that stop the robot: the program it would reach is not the one it attached to.
FATAL = (SpecMismatchError, TokenRefused)


@dataclasses.dataclass(frozen=True)
class Endpoints:
  """Where the program's gateway is."""

  gateway: str
  started: Optional[float] = None  # The address book's launch time, when read from one.


class GatewayClient:
  """Calls to the program's gateway: frames over gRPC, each call with the run's token.

  A failed call raises ProgramUnavailable (retry later), or TokenRefused; a reply that is
  not a well-formed frame raises ProgramUnavailable too: it is never unpickled or
  evaluated, only decoded as plain data within fixed limits.
  """

  def __init__(self, address: str, token: str, timeout_s: float = 10.0):
    import grpc  # Late: tests of the data pieces need no RPC stack.

    self._grpc = grpc
    self._address = address
    self._timeout = timeout_s
    self._metadata = protocol.auth_metadata(token)
    self._channel = grpc.insecure_channel(
      address,
      options=[
        ('grpc.max_receive_message_length', protocol.MAX_PARAMETER_BYTES + (1 << 20)),
        ('grpc.enable_retries', 0),  # The sender and the fetcher retry, with their backoff.
      ],
    )
    # No serializers: requests and replies are the frames' bytes as they are.
    self._calls = {m: self._channel.unary_unary(protocol.method_path(m)) for m in protocol.METHODS}

  @property
  def address(self) -> str:
    return self._address

  def close(self) -> None:
    self._channel.close()

  def _call(self, method: str, request: bytes) -> bytes:
    grpc = self._grpc
    try:
      return self._calls[method](request, timeout=self._timeout, metadata=self._metadata)
    except grpc.RpcError as e:
      code, details = e.code(), ' '.join(str(e.details() or '').split())[:500]
      if code == grpc.StatusCode.UNAUTHENTICATED:
        raise TokenRefused(
          f'the gateway at {self._address} refused this robot: {details}'
        ) from None
      raise ProgramUnavailable(
        f'gateway {self._address}: {method}: {code.name if code else "?"} ({details})'
      ) from None

  def hello(self, robot: str) -> Dict[str, Any]:
    """{'spec', 'config', 'limits'} of the program (plain data)."""
    reply = self._call(protocol.HELLO, encode_frame({'robot': robot}))
    try:
      meta = protocol.read_reply(reply)
    except FrameError as e:
      raise ProgramUnavailable(f'gateway {self._address}: a malformed hello ({e})') from None
    if not all(isinstance(meta.get(k), dict) for k in ('spec', 'config', 'limits')):
      raise ProgramUnavailable(f'gateway {self._address}: a hello without spec, config, limits')
    return meta

  def parameters(self, have: Optional[int]) -> Tuple[int, Any]:
    """(learner step, policy parameters, or None when unchanged since learner step `have`)."""
    reply = self._call(protocol.PARAMETERS, encode_frame({'have': have}))
    try:
      return protocol.read_parameters_reply(reply, have)
    except FrameError as e:
      raise ProgramUnavailable(f'gateway {self._address}: malformed parameters ({e})') from None

  def append_episode(self, robot: str, data: Mapping[str, Any]) -> Dict[str, Any]:
    """The gateway's answer: {'status': 'stored' | 'duplicate' | 'rejected', ...}."""
    reply = self._call(protocol.APPEND, protocol.episode_request(robot, data))
    try:
      return protocol.read_reply(reply)
    except FrameError as e:
      raise ProgramUnavailable(f'gateway {self._address}: a malformed answer ({e})') from None


class ProgramLink:
  """The robot's way to the program: a client of its gateway.

  With `run_dir`, the address comes from `<run_dir>/addresses.json`, read again on
  every reconnect (a relaunched program has new ports); otherwise it is the fixed
  `gateway`. Each new connection is checked with `check(client)` before use (the
  attach command compares specs there). Thread-safe: the parameter fetcher and the
  sender share it.
  """

  def __init__(
    self,
    token: str,
    run_dir: Optional[str] = None,
    gateway: Optional[str] = None,
    rpc_timeout_s: float = 10.0,
    check: Optional[Callable[[GatewayClient], None]] = None,
  ):
    if (run_dir is None) == (gateway is None):
      raise UserError('give either --run_dir or --gateway')
    self._token = token
    self._run_dir = RunDir(run_dir) if run_dir else None
    self._fixed = None if run_dir else Endpoints(gateway)
    self._timeout = rpc_timeout_s
    self._check = check
    self._lock = threading.Lock()
    self._generation = 0
    self._current: Optional[Tuple[int, GatewayClient, Endpoints]] = None

  @property
  def where(self) -> str:
    """A human description of where the address comes from."""
    if self._run_dir is not None:
      return f'the address book {self._run_dir.path / "addresses.json"}'
    return f'the gateway {self._fixed.gateway}'

  def set_check(self, check: Callable[[GatewayClient], None]) -> None:
    self._check = check

  def endpoints(self) -> Endpoints:
    """The address now; ProgramUnavailable when the program has published none."""
    if self._fixed is not None:
      return self._fixed
    book_path = self._run_dir.path / 'addresses.json'
    if not book_path.exists():
      # A run whose program is not running, or is still starting.
      raise ProgramUnavailable(
        f'the run is not up yet: waiting for its program to write {book_path} with the '
        "gateway's address (launch the run if it is not running)"
      )
    try:
      book = self._run_dir.read_addresses()
    except RunDirError as e:
      raise ProgramUnavailable(str(e)) from None
    gateway, started = book.get('gateway'), book.get('started')
    if not isinstance(gateway, str):
      raise ProgramUnavailable('the address book has no gateway address (an older program?)')
    return Endpoints(gateway, started if isinstance(started, (int, float)) else None)

  def connect(self) -> Tuple[int, GatewayClient, Endpoints]:
    """(generation, gateway client, endpoints), connecting if needed."""
    with self._lock:
      if self._current is None:
        endpoints = self.endpoints()
        client = GatewayClient(endpoints.gateway, self._token, self._timeout)
        if self._check is not None:
          try:
            self._check(client)
          except BaseException:
            client.close()
            raise
        self._generation += 1
        self._current = (self._generation, client, endpoints)
        log.debug('using the gateway at %s', endpoints.gateway)
      return self._current

  def invalidate(self, generation: int) -> None:
    """Drops connection `generation` (after a failure); the next `connect` starts afresh."""
    with self._lock:
      if self._current is not None and self._current[0] == generation:
        self._current[1].close()
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
    """The parameters of learner step `version`; None: those held, still current."""
    with self._lock:
      if params is not None:
        self._params = params
      self._version = int(version)
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
  """Fetches the policy every `refresh_every_s` (through the gateway), backing off while the
  program is unreachable; a reply 'unchanged' costs no parameter bytes."""

  def __init__(
    self,
    link: ProgramLink,
    latest: LatestParameters,
    stop: threading.Event,
    refresh_every_s: float = 1.0,
    max_backoff_s: float = 30.0,
    on_fatal: Optional[Callable[[BaseException], None]] = None,
  ):
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
      have = self._latest.version if self._latest.updates else None
      version, params = client.parameters(have)
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
      except FATAL as e:
        if self._on_fatal:
          self._on_fatal(e)
        return
      except Exception as e:  # pylint: disable=broad-except
        self.failures += 1
        self.last_error = one_line(e)
        if self.failures == 1 or self.failures % 10 == 0:
          log.warning(
            'parameters: the learner is unreachable (%s); retrying in %.1f s (%d failures)',
            self.last_error,
            backoff,
            self.failures,
          )
        delay, backoff = backoff, min(2 * backoff, self._max_backoff)
      self._stopping.wait(delay)


def one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 300 else text[:297] + '...'
