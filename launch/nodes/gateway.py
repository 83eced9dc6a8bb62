"""The gateway node: robots' one way into the program (see launch.robot.gateway).

It listens on the announced host only, with the run's token (`<run>/gateway.token`, made
on the first launch and kept), stores robots' episodes through ExternalEpisodeSink,
inserts their transitions into the external replay table, and hands out the learner's
policy, which it fetches over the program's internal Courier link.
"""

import threading
from typing import Any, Dict, Optional, Tuple

import launchpad as lp

from agents.common.logs import get_logger
from launch import experiment
from launch.nodes.process import announce_process, quiet_node_logs
from launch.nodes.stopping import exit_process_if_stuck, wait_for_stop
from launch.robot.gateway import Gateway, ParameterCache, ReplayInserter, bind_address
from launch.robot.protocol import ensure_token_file
from launch.robot.sink import ExternalEpisodeSink
from launch.robot.spec import spec_to_data
from launch.robot.wire import EpisodeLimits
from launch.run_dir import RunDir

POLICY = 'policy'
LEARNER_STEPS = 'learner_steps'

log = get_logger('gateway')


def _resolve(address: Any) -> str:
  """A Launchpad address (bound by the launcher) or a plain 'host:port'."""
  return address if isinstance(address, str) else address.resolve()


class GatewayWorker:
  """Serves robots on `listen` ('host:port' with the announced host) until the program stops."""

  def __init__(
    self,
    config: Dict[str, Any],
    learner: Any,
    replay_address: Any,
    listen: str,
    fetch_timeout_s: float = 10.0,
    replay_timeout_s: float = 10.0,
  ):
    quiet_node_logs()
    announce_process('gateway')
    cfg = experiment.config_from_dict(config)
    self._config = cfg
    run = RunDir(cfg.run_dir)
    self._token_path = run.gateway_token
    token = ensure_token_file(self._token_path)
    spec = experiment.environment_spec(cfg)
    limits = EpisodeLimits(
      max_steps=cfg.external_max_episode_steps,
      max_bytes=int(cfg.external_max_episode_mb * (1 << 20)),
    )
    self._learner = learner
    self._fetch_timeout = fetch_timeout_s
    self._sink = ExternalEpisodeSink(run.store, spec, limits)
    self._builder = None
    self._builder_lock = threading.Lock()
    self._inserter = ReplayInserter(
      lambda: _resolve(replay_address), self._make_adder, timeout_s=replay_timeout_s
    )
    self._gateway = Gateway(
      token,
      hello={
        'spec': spec_to_data(spec),
        'config': cfg.to_dict(),
        'limits': {'max_episode_steps': limits.max_steps, 'max_episode_bytes': limits.max_bytes},
      },
      sink=self._sink,
      parameters=ParameterCache(self._fetch, timeout_s=fetch_timeout_s),
      inserter=self._inserter,
      limits=limits,
    )
    host, _, port = listen.rpartition(':')
    self._listen = bind_address(host, int(port))
    self.address: Optional[str] = None  # Where it listens, once serving.
    self.serving = threading.Event()

  def _make_adder(self, client: Any) -> Any:
    # The agent's own external adder; its builder (JAX, Reverb) only once a robot sent data.
    with self._builder_lock:
      if self._builder is None:
        self._builder = experiment.make_builder(self._config)
    return self._builder.make_external_adder(client)

  def _fetch(self) -> Tuple[Any, int]:
    names = [POLICY, LEARNER_STEPS]
    futures = getattr(self._learner, 'futures', None)
    if futures is not None:  # A Courier client: never wait on the learner without limit.
      params, steps = futures.get_variables(names).result(timeout=self._fetch_timeout)
    else:
      params, steps = self._learner.get_variables(names)
    return params, int(steps)

  @property
  def gateway(self) -> Gateway:
    return self._gateway

  @property
  def sink(self) -> ExternalEpisodeSink:
    return self._sink

  @property
  def inserter(self) -> ReplayInserter:
    return self._inserter

  def run(self, stop_event: Optional[threading.Event] = None) -> None:
    stop = stop_event or lp.stop_event()
    self.address = self._gateway.start(self._listen)
    self.serving.set()
    log.info('robots attach here: %s (token in %s)', self.address, self._token_path)
    idle = False
    try:
      while not wait_for_stop(stop, 1.0):
        pass
    finally:
      idle = self._gateway.stop()
      self._inserter.close()
      self._sink.close()  # Releases the robots' writer names.
      counts = dict(self._gateway.counts)
      log.info(
        'stopped; episodes %s, %d inserted into replay, %d calls refused for their token',
        counts or 'none',
        self._inserter.inserted,
        self._gateway.refused,
      )
    # A call still waiting on a learner that died would hold the process (gRPC's worker
    # threads are not daemons) until its timeout.
    exit_process_if_stuck(idle)
