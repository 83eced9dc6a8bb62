"""Program side: the robot gateway, the one door robots come through (gRPC, frames, a token).

`Gateway` serves the protocol of launch.robot.protocol on one address. Every call must
carry the run's token (compared in constant time; a wrong or missing one is refused with
UNAUTHENTICATED and logged with the peer) before its request is even decoded. Requests
are frames, checked field by field within the run's limits (the transport refuses a
message larger than an episode may be); episodes then go to `ExternalEpisodeSink`, and
the n-step transitions of each one stored (never of a duplicate) to the external replay
table by `ReplayInserter`, after the robot has its answer.
"""

import collections
import functools
import hmac
import ipaddress
import socket
import threading
import time
from concurrent import futures
from typing import Any, Callable, Deque, Dict, Optional, Tuple

import grpc

from agents.common.logs import get_logger
from launch.robot import protocol
from launch.robot.frame import FrameError, FrameLimits, decode_frame, encode_frame
from launch.robot.sink import ExternalEpisodeSink
from launch.robot.wire import (
  ALL_ARRAY_FIELDS,
  EPISODE_KEY,
  EpisodeLimits,
  episode_from_data,
  episode_nbytes,
  episode_timesteps,
)
from launch.run_dir import GATEWAY_TOKEN_FILE
from launch.store.episodes import Episode

log = get_logger('gateway')

# What a request for parameters or a hello may hold: a little JSON.
_SMALL_REQUEST = FrameLimits(max_array_bytes=0, max_arrays=0, max_header_bytes=64 << 10)
_REFUSALS_LOGGED = 10  # Then every 100th: a flood of bad tokens must not flood the log.


def bind_address(host: str, port: int) -> str:
  """The 'address:port' to listen on for the announced `host`: its own address, not all.

  'localhost' is 127.0.0.1; an IP address is itself (0.0.0.0 or :: only when announced
  so); a name is the IPv4 address it resolves to here.
  """
  if host == 'localhost':
    ip = '127.0.0.1'
  else:
    try:
      ip = str(ipaddress.ip_address(host.strip('[]')))
    except ValueError:
      try:
        ip = socket.gethostbyname(host)
      except OSError as e:
        raise OSError(f'the announced host {host!r} does not resolve here ({e})') from None
      if ipaddress.ip_address(ip).is_loopback:
        log.warning(
          'the announced host %r resolves to %s here (loopback): other machines cannot reach '
          'the gateway; announce this machine by an address they can reach',
          host,
          ip,
        )
  return f'[{ip}]:{port}' if ':' in ip else f'{ip}:{port}'


class ReplayInserter:
  """Inserts stored episodes' n-step transitions into the external table, one at a time.

  A failed insert (the replay restarting) is retried with backoff from a bounded queue
  (`max_episodes`, `max_bytes`); an episode that finds it full is not inserted, and the
  log says which (it is in the store either way). An insert that fails part-way is
  retried whole: Reverb has no keyed inserts, so its first items may then be in twice.
  Reverb (and TensorFlow) load on the first insert, or on `warm_up`, not before: a
  program no robot sends to never pays for them here.
  """

  def __init__(
    self,
    address: Callable[[], str],
    make_adder: Callable[[Any], Any],
    max_episodes: int = 1024,
    max_bytes: int = 256 << 20,
    timeout_s: float = 10.0,
    max_backoff_s: float = 30.0,
  ):
    self._address = address
    self._make_adder = make_adder
    self._max_episodes = max_episodes
    self._max_bytes = max_bytes
    self._timeout = timeout_s
    self._max_backoff = max_backoff_s
    self._queue: Deque[Tuple[str, Episode, int]] = collections.deque()
    self._bytes = 0
    self._busy = False
    self._cond = threading.Condition()
    self._closed = False
    self._warm = False
    self._adder = None
    self.inserted = 0
    self.failures = 0
    self.dropped = 0
    self._thread = threading.Thread(target=self._run, name='replay-inserter', daemon=True)
    self._thread.start()

  def put(self, key: str, episode: Episode) -> bool:
    """Queues `episode` for insertion; False (logged) when the queue is full."""
    size = episode_nbytes(episode)
    with self._cond:
      if len(self._queue) >= self._max_episodes or self._bytes + size > self._max_bytes:
        self.dropped += 1
        log.warning(
          'replay: %d episode(s) (%.1f MiB) wait for the external table already; episode %s '
          'is stored but not inserted (%d dropped so far)',
          len(self._queue),
          self._bytes / 2**20,
          key,
          self.dropped,
        )
        return False
      self._queue.append((key, episode, size))
      self._bytes += size
      self._cond.notify_all()
    return True

  def warm_up(self) -> None:
    """Loads Reverb and connects now, in the background (a robot said hello: episodes come)."""
    with self._cond:
      if self._adder is None:
        self._warm = True
        self._cond.notify_all()

  def flush(self, timeout_s: float) -> bool:
    """Waits until nothing is queued or being inserted; returns whether it got there."""
    with self._cond:
      return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout_s)

  def close(self, timeout_s: float = 5.0) -> None:
    with self._cond:
      self._closed = True
      left = len(self._queue)
      self._cond.notify_all()
    self._thread.join(timeout_s)
    if not self._thread.is_alive():
      self._drop_adder()  # Closes its writer's stream: a replay server stops without waiting.
    if left:
      log.warning('replay: %d stored episode(s) left uninserted at the stop', left)

  def _drop_adder(self) -> None:
    """Forgets the adder, closing its writer within a second (left to garbage collection,
    a writer flushes for up to 10 s against a server that may be gone)."""
    adder, self._adder = self._adder, None
    close = getattr(adder, 'close', None)
    if close is not None:
      try:
        close(timeout_ms=1000)
      except Exception as e:  # pylint: disable=broad-except
        log.info('replay: closing the writer: %s', ' '.join(str(e).split())[:200])

  def _connect(self) -> None:
    if self._adder is None:
      import reverb  # Late: only a program that robots send to needs it here.

      client = reverb.Client(self._address())
      client.server_info(timeout=max(1, int(self._timeout)))  # Fails fast when it is down.
      self._adder = self._make_adder(client)

  def _insert(self, episode: Episode) -> None:
    self._connect()
    first, rest = episode_timesteps(episode)
    self._adder.add_first(first)
    # The LAST step makes the adder flush and wait for the server's confirmation.
    for action, timestep in rest:
      self._adder.add(action, timestep)

  def _run(self) -> None:
    backoff = 0.5
    while True:
      with self._cond:
        self._cond.wait_for(lambda: self._queue or self._closed or self._warm)
        if self._closed:
          return
        warm_only, self._warm = not self._queue, False
        if not warm_only:
          key, episode, size = self._queue[0]
          self._busy = True
      if warm_only:
        try:
          self._connect()
        except Exception as e:  # pylint: disable=broad-except
          log.info('replay: not reachable yet (%s); the first insert tries again', e)
        continue
      try:
        self._insert(episode)
      except Exception as e:  # pylint: disable=broad-except
        self._drop_adder()  # A fresh client and writer for the retry.
        self.failures += 1
        if self.failures == 1 or self.failures % 10 == 0:
          log.warning(
            'replay: inserting episode %s failed (%s); retrying in %.1f s (%d failures)',
            key,
            ' '.join(str(e).split())[:300],
            backoff,
            self.failures,
          )
        with self._cond:
          self._busy = False
          self._cond.notify_all()
          self._cond.wait_for(lambda: self._closed, backoff)
        backoff = min(2 * backoff, self._max_backoff)
        continue
      backoff = 0.5
      with self._cond:
        self._queue.popleft()
        self._bytes -= size
        self.inserted += 1
        self._busy = False
        self._cond.notify_all()


class ParameterCache:
  """The newest policy from the learner, encoded once per learner step and shared by robots.

  A request older than `max_age_s` fetches again (one fetch at a time; callers wait for
  it, at most `timeout_s`).
  """

  def __init__(
    self, fetch: Callable[[], Tuple[Any, int]], max_age_s: float = 0.5, timeout_s: float = 10.0
  ):
    self._fetch = fetch
    self._max_age = max_age_s
    self._timeout = timeout_s
    self._lock = threading.Lock()
    self._version: Optional[int] = None
    self._frame: Optional[bytes] = None
    self._when = -float('inf')

  def get(self) -> Tuple[int, bytes]:
    """(learner step, the parameters reply); raises when the learner does not answer."""
    if not self._lock.acquire(timeout=self._timeout):
      raise TimeoutError(f'the learner has not answered for {self._timeout:g} s')
    try:
      if time.monotonic() - self._when > self._max_age or self._frame is None:
        params, version = self._fetch()
        version = int(version)
        if version != self._version or self._frame is None:
          self._frame = protocol.parameters_reply(version, params)
          self._version = version
        self._when = time.monotonic()
      return self._version, self._frame
    finally:
      self._lock.release()


class _TokenCheck(grpc.ServerInterceptor):
  """Lets a call through only with the run's token; refuses anything else before decoding."""

  def __init__(self, token: str):
    self._expected = (protocol.AUTH_SCHEME + token).encode()
    self._lock = threading.Lock()
    self.refused = 0

  def intercept_service(self, continuation, handler_call_details):
    given = [
      value
      for key, value in (handler_call_details.invocation_metadata or ())
      if key == protocol.AUTH_KEY
    ]
    if len(given) == 1 and isinstance(given[0], str):
      # Constant time: how much of a guess is right must not show in the timing.
      if hmac.compare_digest(given[0].encode('utf-8', 'replace'), self._expected):
        return continuation(handler_call_details)
    why = 'missing' if not given else 'wrong'
    return grpc.unary_unary_rpc_method_handler(
      functools.partial(self._refuse, why, handler_call_details.method)
    )

  def _refuse(self, why: str, method: str, request: bytes, context) -> bytes:
    del request
    with self._lock:
      self.refused += 1
      count = self.refused
    if count <= _REFUSALS_LOGGED or count % 100 == 0:
      log.warning(
        'refused a call to %s from %s: the token is %s (%d refused so far)',
        method,
        context.peer(),
        why,
        count,
      )
    context.abort(
      grpc.StatusCode.UNAUTHENTICATED,
      f"the gateway token is {why}: give the run's token (<run_dir>/{GATEWAY_TOKEN_FILE}) "
      f'with --token_file or ${protocol.TOKEN_ENV}',
    )


class Gateway:
  """The gRPC server robots talk to: hello, parameters, episodes; see launch.robot.protocol."""

  def __init__(
    self,
    token: str,
    hello: Dict[str, Any],
    sink: ExternalEpisodeSink,
    parameters: ParameterCache,
    inserter: Optional[ReplayInserter],
    limits: EpisodeLimits,
    max_workers: int = 8,
  ):
    self._token_check = _TokenCheck(protocol.check_token(token, 'the gateway token'))
    self._hello = encode_frame(hello)
    self._sink = sink
    self._parameters = parameters
    self._inserter = inserter
    self._limits = FrameLimits(max_array_bytes=limits.max_bytes, max_arrays=len(ALL_ARRAY_FIELDS))
    self._max_message = limits.max_bytes + self._limits.max_header_bytes + 4096
    self._max_workers = max_workers
    self._server: Optional[grpc.Server] = None
    self._counts_lock = threading.Lock()
    self._in_flight = 0
    self._idle = threading.Condition()
    self.counts: Dict[str, int] = collections.Counter()  # stored, duplicate, rejected, malformed.

  @property
  def refused(self) -> int:
    """Calls refused for a wrong or missing token."""
    return self._token_check.refused

  def start(self, address: str) -> str:
    """Listens on `address` ('ip:port', port 0: a free one); returns the address bound."""
    server = grpc.server(
      futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix='gateway'),
      interceptors=[self._token_check],
      options=[
        ('grpc.max_receive_message_length', self._max_message),
        ('grpc.max_send_message_length', protocol.MAX_PARAMETER_BYTES + (1 << 20)),
        ('grpc.so_reuseport', 0),  # A port in use is an error, never shared.
      ],
      maximum_concurrent_rpcs=4 * self._max_workers,
    )
    handlers = {
      protocol.HELLO: self._hello_call,
      protocol.PARAMETERS: self._parameters_call,
      protocol.APPEND: self._append_call,
    }
    server.add_generic_rpc_handlers(
      (
        grpc.method_handlers_generic_handler(
          protocol.SERVICE,
          {
            name: grpc.unary_unary_rpc_method_handler(self._tracked(fn))
            for name, fn in handlers.items()
          },
        ),
      )
    )
    try:
      bound = server.add_insecure_port(address)
    except RuntimeError as e:
      raise OSError(f'the gateway cannot listen on {address} ({e})') from None
    if not bound:
      raise OSError(f'the gateway cannot listen on {address}')
    server.start()
    self._server = server
    return f'{address.rpartition(":")[0]}:{bound}'

  def stop(self, grace_s: float = 2.0) -> bool:
    """Stops serving; whether every call has returned (one may wait on a learner that died)."""
    if self._server is not None:
      self._server.stop(grace_s).wait(grace_s + 1.0)
      self._server = None
    with self._idle:
      return self._idle.wait_for(lambda: self._in_flight == 0, 1.0)

  def _tracked(self, method: Callable[[bytes, Any], bytes]) -> Callable[[bytes, Any], bytes]:
    """`method`, counted while it runs (`stop` says whether any still does)."""

    def call(request: bytes, context) -> bytes:
      with self._idle:
        self._in_flight += 1
      try:
        return method(request, context)
      finally:
        with self._idle:
          self._in_flight -= 1
          self._idle.notify_all()

    return call

  def _count(self, what: str) -> None:
    with self._counts_lock:
      self.counts[what] += 1

  # --------------------------------------------------------------------------
  # The methods (bytes in, bytes out; the token is checked already).

  @staticmethod
  def _small_request(request: bytes, context, method: str) -> Dict[str, Any]:
    """The metadata of a Hello or GetParameters request; INVALID_ARGUMENT if malformed."""
    try:
      meta, _ = decode_frame(request, _SMALL_REQUEST)
    except FrameError as e:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT, f'{method}: {e}')
    return meta

  def _hello_call(self, request: bytes, context) -> bytes:
    meta = self._small_request(request, context, 'Hello')
    robot = meta.get('robot')
    log.info('hello from robot %.100r at %s', robot, context.peer())
    if self._inserter is not None:
      self._inserter.warm_up()
    return self._hello

  def _parameters_call(self, request: bytes, context) -> bytes:
    meta = self._small_request(request, context, 'GetParameters')
    have = meta.get('have')
    try:
      version, frame = self._parameters.get()
    except Exception as e:  # pylint: disable=broad-except
      why = ' '.join(str(e).split())[:300] or type(e).__name__
      context.abort(grpc.StatusCode.UNAVAILABLE, f'the learner did not give parameters ({why})')
    if have == version and isinstance(have, int):
      return encode_frame({'status': 'unchanged', 'learner_steps': version})
    return frame

  def _append_call(self, request: bytes, context) -> bytes:
    try:
      robot, data = protocol.read_episode_request(request, self._limits)
    except FrameError as e:
      self._count('malformed')
      reason = f'a malformed episode frame: {e}'
      log.warning('rejected an episode from %s: %s', context.peer(), reason)
      return encode_frame({'status': 'rejected', 'reason': reason})
    try:
      reply = self._sink.append(robot, data)
    except Exception as e:  # pylint: disable=broad-except
      # The store could not take it now (a disk error): the robot sends it again later.
      log.error('could not store an episode of %.100r: %s', robot, e)
      context.abort(grpc.StatusCode.UNAVAILABLE, f'the store could not take the episode ({e})')
    self._count(reply['status'])
    if reply['status'] == 'stored' and self._inserter is not None:
      key = data['metadata'][EPISODE_KEY]
      self._inserter.put(f'{robot}/{key}', episode_from_data(data))
    return encode_frame(reply)
