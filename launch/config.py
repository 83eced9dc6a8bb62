"""Experiment configuration: what to run, for how long, and where."""

import dataclasses
import math
from typing import Any, Dict, Optional, Tuple

from agents import registry
from agents.common.errors import ConfigError
from launch.slurm.config import SlurmConfig

# slurm: one batch job on a Slurm cluster, a job step per node (see launch/slurm).
LAUNCH_TYPES = ('local_mp', 'local_mt', 'slurm')
# online: actors and learner together. offline: no actors, the learner trains on
# stored episodes only. offline_to_online: start from stored data (and maybe a
# checkpoint), then add actors. iterated: collect K episodes, infer M steps on
# all stored data, evaluate; repeat.
MODES = ('online', 'offline', 'offline_to_online', 'iterated')


@dataclasses.dataclass
class ExperimentConfig:
  """One experiment: task, topology, budget, cadence of evaluation and checkpoints."""
  run_dir: str = 'runs/default'
  task: str = 'cartpole:swingup'
  seed: int = 0
  num_actors: int = 2
  launch_type: str = 'local_mp'
  # An actor process that dies (local_mp): 'restart' it (at most max_actor_restarts
  # times each), 'continue' with fewer, or 'stop' the program.
  actor_failures: str = 'restart'
  max_actor_restarts: int = 3
  mode: str = 'online'
  # A registered agent (agents/registry.py): 'mpo' (the MPO family: agent.policy_loss picks
  # mpo, pmpo or pac), 'bc' (behaviour cloning of the training data, the offline baseline).
  algorithm: str = 'mpo'
  # Durable store: every completed episode goes to <run>/store.
  store_episodes: bool = True
  # Fraction of each learner batch drawn from stored episodes (the run's own
  # store plus `datasets`); the rest comes from the online replay table.
  # Offline and iterated modes train on the store only.
  store_ratio: float = 0.0
  # Other episode stores (earlier runs, imported RLDS data) to train on too.
  datasets: Tuple[str, ...] = ()
  # Fraction of each learner batch drawn from the external table (experience of
  # robots attached with `launch.attach`) while it holds data. It comes out of
  # the replay share; while the table is empty the main table fills it instead,
  # so batch shapes never change.
  external_ratio: float = 0.25
  # Host written into addresses.json for the servers, e.g. the machine's LAN
  # name for robot PCs (the servers listen on every interface either way).
  # None: $COLLECT_INFER_HOST if set, else localhost.
  announce_host: Optional[str] = None
  # A checkpoint file, or a run directory, the learner starts from when this
  # run has no checkpoint of its own (e.g. offline-trained, then online).
  init_checkpoint: Optional[str] = None
  # Budget: the program stops itself at whichever comes first (None = unlimited).
  max_actor_steps: Optional[int] = 200_000
  max_seconds: Optional[float] = None
  max_learner_steps: Optional[int] = None
  # Iterated collect-and-infer: per iteration, collect this many episodes (all
  # actors together), then this many learner steps on the whole store.
  collect_episodes: int = 10
  infer_steps: int = 1000
  iterations: int = 10
  # Each iteration starts from the last one's learner (True) or from scratch.
  warm_start: bool = True
  # Evaluator-checkpointer cadence.
  eval_every_seconds: float = 120.0
  # Also evaluate (and checkpoint) every this many learner steps, if set.
  eval_every_learner_steps: Optional[int] = None
  eval_episodes: int = 5
  keep_checkpoints: int = 5
  progress_every_seconds: float = 15.0
  # Seconds a learner waits on the rate limiter before re-checking for shutdown.
  learner_sample_timeout_s: float = 2.0
  # The algorithm's config (its registry entry's config_class); None: its defaults. A dict
  # (config.json, nested or dotted keys) is read by that class.
  agent: Any = None
  # Partition, time limit and per-group resources of launch_type='slurm'.
  slurm: SlurmConfig = dataclasses.field(default_factory=SlurmConfig)

  def __post_init__(self):
    self.datasets = tuple(self.datasets)
    self.agent = _agent_config(self.algorithm, self.agent)
    if isinstance(self.slurm, dict):
      known = {f.name for f in dataclasses.fields(SlurmConfig)}
      bad = sorted(set(self.slurm) - known)
      if bad:
        raise ConfigError(f'unknown slurm config field(s) {bad}; known: {sorted(known)}')
      self.slurm = SlurmConfig(**self.slurm)
    self.validate()

  def validate(self) -> None:
    """Raises ConfigError naming the bad field and what it must be."""

    def need(cond: bool, field: str, rule: str):
      if not cond:
        raise ConfigError(f'{field}={getattr(self, field)!r} is invalid: must be {rule}')

    def is_int(v) -> bool:
      return isinstance(v, int) and not isinstance(v, bool)

    def pos_num(v) -> bool:
      return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    need(isinstance(self.run_dir, str) and self.run_dir.strip() != '', 'run_dir', 'a path')
    need(isinstance(self.task, str) and ':' in self.task, 'task', "'domain:task', e.g. cartpole:swingup")
    need(is_int(self.seed) and self.seed >= 0, 'seed', 'an int >= 0')
    need(is_int(self.num_actors) and 1 <= self.num_actors <= 256, 'num_actors', 'an int in [1, 256]')
    need(self.launch_type in LAUNCH_TYPES, 'launch_type', f'one of {", ".join(LAUNCH_TYPES)}')
    need(self.max_actor_steps is None or (is_int(self.max_actor_steps) and self.max_actor_steps > 0),
         'max_actor_steps', 'a positive int, or None for no step budget')
    need(self.max_seconds is None or pos_num(self.max_seconds), 'max_seconds',
         'a positive number of seconds, or None for no time budget')
    need(self.max_learner_steps is None or
         (is_int(self.max_learner_steps) and self.max_learner_steps > 0),
         'max_learner_steps', 'a positive int, or None for no learner-step budget')
    need(self.mode in MODES, 'mode', f'one of {", ".join(MODES)}')
    need(self.actor_failures in ('restart', 'continue', 'stop'), 'actor_failures',
         "'restart', 'continue' or 'stop'")
    need(is_int(self.max_actor_restarts) and self.max_actor_restarts >= 0, 'max_actor_restarts',
         'an int >= 0')
    need(isinstance(self.store_episodes, bool), 'store_episodes', 'true or false')
    need(isinstance(self.store_ratio, (int, float)) and 0.0 <= self.store_ratio <= 1.0,
         'store_ratio', 'a fraction in [0, 1]')
    need(all(isinstance(d, str) and d for d in self.datasets), 'datasets',
         'a list of episode store directories')
    need(isinstance(self.external_ratio, (int, float)) and not isinstance(self.external_ratio, bool)
         and 0.0 <= self.external_ratio <= 1.0, 'external_ratio', 'a fraction in [0, 1]')
    need(self.announce_host is None or (isinstance(self.announce_host, str) and
                                        self.announce_host.strip() != '' and
                                        not any(c.isspace() for c in self.announce_host)),
         'announce_host', 'a host name or address without spaces, or None')
    need(self.init_checkpoint is None or (isinstance(self.init_checkpoint, str) and
                                          self.init_checkpoint), 'init_checkpoint',
         'a checkpoint file or run directory, or None')
    for field in ('collect_episodes', 'infer_steps', 'iterations'):
      need(is_int(getattr(self, field)) and getattr(self, field) >= 1, field, 'an int >= 1')
    need(isinstance(self.warm_start, bool), 'warm_start', 'true or false')
    if self.mode == 'offline':
      need(self.max_learner_steps is not None or self.max_seconds is not None,
           'max_learner_steps', 'set (or max_seconds set) in offline mode: no actors count steps')
    elif self.mode != 'iterated':
      need(self.max_actor_steps is not None or self.max_seconds is not None, 'max_actor_steps',
           'set (or max_seconds set): an experiment needs a budget to stop by itself')
    if self.mode in ('iterated', 'offline') or self.store_ratio > 0:
      need(self.store_episodes or self.mode == 'offline', 'store_episodes',
           f'true when training draws on the store (mode={self.mode}, store_ratio={self.store_ratio})')
    labels = self.agent.learns_from_labels
    if labels and self.mode not in ('offline', 'iterated'):
      raise ConfigError(f'agent.{self.agent.labels_setting} learns from labelled stored episodes '
                        f"only: it needs mode 'offline' or 'iterated', not {self.mode!r} (replay "
                        'transitions carry no labels)')
    if labels and self.mode == 'iterated' and self.agent.success_return is None:
      raise ConfigError(f'agent.{self.agent.labels_setting} in iterated mode needs '
                        f'agent.{self.agent.success_return_setting}: the actors\' episodes carry '
                        'no success label, so their return decides')
    need(pos_num(self.eval_every_seconds), 'eval_every_seconds', 'a positive number')
    need(self.eval_every_learner_steps is None or
         (is_int(self.eval_every_learner_steps) and self.eval_every_learner_steps > 0),
         'eval_every_learner_steps', 'a positive int, or None')
    need(is_int(self.eval_episodes) and self.eval_episodes >= 1, 'eval_episodes', 'an int >= 1')
    need(is_int(self.keep_checkpoints) and self.keep_checkpoints >= 1, 'keep_checkpoints', 'an int >= 1')
    need(pos_num(self.progress_every_seconds) and self.progress_every_seconds <= 30,
         'progress_every_seconds', 'in (0, 30]')
    need(pos_num(self.learner_sample_timeout_s), 'learner_sample_timeout_s', 'a positive number')

  def to_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Dict[str, Any]) -> 'ExperimentConfig':
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f'unknown experiment config field(s) {unknown}; known: {sorted(known)}')
    return cls(**values)


def _agent_config(algorithm: str, agent: Any) -> Any:
  """`agent` as the registered algorithm's config: its defaults for None, read from a dict."""
  if not isinstance(algorithm, str):
    raise ConfigError(f'algorithm={algorithm!r} is invalid: must be one of '
                      f'{", ".join(registry.names())}')
  config_class = registry.get(algorithm).config_class
  if agent is None:
    return config_class()
  if isinstance(agent, dict):
    return config_class.from_dict(agent)
  if not isinstance(agent, config_class):
    raise ConfigError(f'agent is a {type(agent).__name__}; algorithm {algorithm!r} takes a '
                      f'{config_class.__name__}')
  return agent
