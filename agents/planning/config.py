"""Configuration of the planning agent: the dynamics ensemble, its optimiser, the planner."""

import dataclasses
from typing import Tuple

from agents.common.config import AgentConfig, Config, Need, finite, is_int, positive_ints
from agents.common.errors import ConfigError
from agents.common.replay_config import ReplayConfig

# agents.planning.planner.METHODS and model_step.PROPAGATIONS, spelled out: reading a config
# must not import JAX (tests/agents/test_planning_agent.py checks they agree).
METHODS = ('cem', 'random_shooting')
PROPAGATIONS = ('particles', 'mean')
# 'learned': the model's predicted reward (the ensemble's head, the transformer's token);
# else a task's known reward on the predicted states (environments.known_rewards.REWARDS,
# spelled out for the same reason).
REWARDS = ('learned', 'cartpole')
MODEL_KINDS = ('ensemble', 'transformer')


@dataclasses.dataclass
class PlanningModelConfig(Config):
  """The dynamics model: the MLP ensemble (networks.dynamics.EnsembleSizes) and how the
  planner rolls it out, or the shared transformer over tokens (networks.sequence_dynamics)."""

  # 'ensemble': MLP members with a reward head; 'transformer': the decoder-only transformer
  # predicting the tokens of next_obs - obs and of the reward after a timestep's (obs,
  # action) tokens.
  kind: str = 'ensemble'
  num_members: int = 5
  hidden_sizes: Tuple[int, ...] = (200, 200, 200)
  # 'particles': one particle per member, rewards averaged; 'mean': the members' mean step
  # (agents.planning.model_step).
  propagation: str = 'particles'
  # The transformer's sizes (kind='transformer').
  transformer_size: int = 64
  transformer_heads: int = 4
  transformer_layers: int = 2

  def __post_init__(self):
    self.hidden_sizes = tuple(self.hidden_sizes)  # JSON and --agent give lists.

  def check(self, need: Need) -> None:
    need(is_int(self.num_members) and self.num_members >= 1, 'num_members', 'an int >= 1')
    need(positive_ints(self.hidden_sizes), 'hidden_sizes', 'a list of ints > 0')
    need(self.propagation in PROPAGATIONS, 'propagation', f'one of {PROPAGATIONS}')
    need(self.kind in MODEL_KINDS, 'kind', f'one of {MODEL_KINDS}')
    for f in ('transformer_size', 'transformer_heads', 'transformer_layers'):
      need(is_int(getattr(self, f)) and getattr(self, f) >= 1, f, 'an int >= 1')
    need(
      self.transformer_size % self.transformer_heads == 0,
      'transformer_size',
      'a multiple of transformer_heads',
    )


@dataclasses.dataclass
class PlanningOptimConfig(Config):
  """AdamW with global-norm clipping on the ensemble's Gaussian NLL."""

  learning_rate: float = 1e-3
  max_grad_norm: float = 10.0
  weight_decay: float = 1e-5
  reward_weight: float = 1.0  # Weight of the reward head's NLL against the observation's.

  def check(self, need: Need) -> None:
    for f in ('learning_rate', 'max_grad_norm'):
      need(finite(getattr(self, f)) and getattr(self, f) > 0, f, 'a finite number > 0')
    for f in ('weight_decay', 'reward_weight'):
      need(finite(getattr(self, f)) and getattr(self, f) >= 0, f, 'a finite number >= 0')


@dataclasses.dataclass
class PlannerSettings(Config):
  """Model-predictive control (agents.planning.planner.PlannerConfig, bounds from the spec)."""

  method: str = 'cem'  # 'cem' or 'random_shooting' (the same number of model rollouts).
  horizon: int = 30  # Decisions per plan.
  num_candidates: int = 500  # Plans per CEM iteration.
  iterations: int = 5
  num_elites: int = 50
  # Steps each decision is held for, in the model and by the actor (which plans every
  # action_repeat environment steps).
  action_repeat: int = 1
  init_std: float = 0.5  # CEM's first std, a fraction of the action range.
  min_std: float = 0.01
  smoothing: float = 0.0
  discount: float = 1.0  # Per model step.
  # Start each step's search from the last plan shifted by one decision.
  warm_start: bool = True
  # The reward plans are scored with: 'learned' (the model's predicted reward, any task) or
  # 'cartpole' (cartpole:balance/swingup's own reward of the predicted states).
  reward: str = 'learned'
  # Collecting actors add Gaussian noise of this std (fraction of the range) to the planned
  # action; the evaluator never does.
  exploration_std: float = 0.0
  # Warm start from a policy: a run directory of an MPO-family agent (mpo, bc) on this
  # task's spec; its newest checkpoint's policy proposes `num_proposals` plans through the
  # model (its mean and samples) among each search's first candidates. '' for none.
  proposals_from: str = ''
  num_proposals: int = 16
  # Add the proposals_from run's state value (its critic's Q of its policy's mean action) at
  # each plan's end, discounted as the step after it: plans are judged beyond the horizon.
  # The critic's returns are discounted (the run's replay.discount): set `discount` to it
  # for one consistent sum.
  terminal_value: bool = False

  def check(self, need: Need) -> None:
    need(self.method in METHODS, 'method', f'one of {METHODS}')
    for f in ('horizon', 'num_candidates', 'iterations', 'num_elites', 'action_repeat'):
      need(is_int(getattr(self, f)) and getattr(self, f) >= 1, f, 'an int >= 1')
    need(self.num_elites <= self.num_candidates, 'num_elites', '<= num_candidates')
    for f in ('init_std', 'min_std'):
      need(finite(getattr(self, f)) and getattr(self, f) > 0, f, 'a finite number > 0')
    need(finite(self.smoothing) and 0 <= self.smoothing < 1, 'smoothing', 'in [0, 1)')
    need(finite(self.discount) and 0 < self.discount <= 1, 'discount', 'in (0, 1]')
    need(isinstance(self.warm_start, bool), 'warm_start', 'true or false')
    need(self.reward in REWARDS, 'reward', f'one of {REWARDS}')
    need(
      finite(self.exploration_std) and self.exploration_std >= 0,
      'exploration_std',
      'a finite number >= 0',
    )
    need(isinstance(self.proposals_from, str), 'proposals_from', "a run directory or ''")
    need(is_int(self.num_proposals) and self.num_proposals >= 1, 'num_proposals', 'an int >= 1')
    if self.proposals_from:  # They take candidate slots of the first iteration.
      need(self.num_proposals <= self.num_candidates, 'num_proposals', '<= num_candidates')
    need(isinstance(self.terminal_value, bool), 'terminal_value', 'true or false')
    need(
      not self.terminal_value or bool(self.proposals_from),
      'terminal_value',
      'false unless proposals_from names the run whose critic gives the value',
    )


@dataclasses.dataclass
class PlanningConfig(AgentConfig):
  """A model learner (dynamics ensemble and reward head) and planning actors.

  The model learns one-step transitions, so `replay.n_step` must be 1; of `replay` it reads
  the batch, the replay sizes and rate limit, and the actors' refresh period.
  """

  model: PlanningModelConfig = dataclasses.field(default_factory=PlanningModelConfig)
  optim: PlanningOptimConfig = dataclasses.field(default_factory=PlanningOptimConfig)
  planner: PlannerSettings = dataclasses.field(default_factory=PlannerSettings)
  replay: ReplayConfig = dataclasses.field(
    default_factory=lambda: ReplayConfig(n_step=1, batch_size=256, min_replay_size=1000)
  )

  @property
  def policy_run(self):
    run = self.planner.proposals_from
    return ('agent.planner.proposals_from', run) if run else None

  def check(self, need: Need) -> None:
    if self.replay.n_step != 1:
      raise ConfigError(
        f'PlanningConfig.replay.n_step={self.replay.n_step!r} is invalid: must be 1 (the '
        'dynamics model learns one-step transitions)'
      )
