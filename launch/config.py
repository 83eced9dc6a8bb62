"""Experiment configuration: what to run, for how long, and where."""

import dataclasses
import math
from typing import Any, Dict, Optional

from agents.mpo.config import MPOConfig
from launch.errors import ConfigError

LAUNCH_TYPES = ('local_mp', 'local_mt')


@dataclasses.dataclass
class ExperimentConfig:
  """One experiment: task, topology, budget, cadence of evaluation and checkpoints."""
  run_dir: str = 'runs/default'
  task: str = 'cartpole:swingup'
  seed: int = 0
  num_actors: int = 2
  launch_type: str = 'local_mp'
  # Budget: the program stops itself at whichever comes first (None = unlimited).
  max_actor_steps: Optional[int] = 200_000
  max_seconds: Optional[float] = None
  # Evaluator-checkpointer cadence.
  eval_every_seconds: float = 120.0
  # Also evaluate (and checkpoint) every this many learner steps, if set.
  eval_every_learner_steps: Optional[int] = None
  eval_episodes: int = 5
  keep_checkpoints: int = 5
  progress_every_seconds: float = 15.0
  # Seconds a learner waits on the rate limiter before re-checking for shutdown.
  learner_sample_timeout_s: float = 2.0
  agent: MPOConfig = dataclasses.field(default_factory=MPOConfig)

  def __post_init__(self):
    if isinstance(self.agent, dict):
      self.agent = MPOConfig(**self.agent)
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
    need(self.max_actor_steps is not None or self.max_seconds is not None, 'max_actor_steps',
         'set (or max_seconds set): an experiment needs a budget to stop by itself')
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
    agent = dict(values.get('agent', {}))
    agent_known = {f.name for f in dataclasses.fields(MPOConfig)}
    bad = sorted(set(agent) - agent_known)
    if bad:
      raise ConfigError(f'unknown agent config field(s) {bad}; known: {sorted(agent_known)}')
    return cls(**{**values, 'agent': MPOConfig(**agent)})
