"""MPO-family learner configuration, with the published defaults."""

import dataclasses
import math
import numbers
from typing import Optional, Tuple

from agents.common.errors import ConfigError


@dataclasses.dataclass
class MPOConfig:
  """Hyper-parameters of (distributional) MPO, PMPO and PAC.

  Defaults follow Abdolmaleki et al. (2018) and the DMPO setting used for the
  DeepMind control suite.
  """
  # Networks.
  policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
  critic_layer_sizes: Tuple[int, ...] = (512, 512, 256)
  num_atoms: int = 51  # 1 selects the non-distributional (expected value) critic.
  # 'mlp' (LayerNorm MLPs, sizes above) or 'perceiver': observation groups as
  # tokens, cross-attended into learned latents; Q decoded with the action as the
  # query. Its defaults are sized for CPU (compile time grows fast with size).
  network: str = 'mlp'
  perceiver_latent_dim: int = 32
  perceiver_num_latents: int = 8
  perceiver_num_heads: int = 4
  perceiver_blocks: int = 1
  # Rewards bound the critic's support: v_max = max_reward / (1 - discount).
  min_reward: float = 0.0
  max_reward: float = 1.0

  # Policy evaluation.
  discount: float = 0.99
  n_step: int = 5
  target_update_period: int = 100
  num_samples: int = 20

  # E-step (temperature dual).
  epsilon: float = 0.1
  init_temperature: float = 1.0
  # M-step (decoupled KL constraints, per action dimension).
  epsilon_mean: float = 0.0025
  epsilon_stddev: float = 1e-6
  init_alpha_mean: float = 1.0
  init_alpha_stddev: float = 10.0
  # Keeps sampled actions inside [-1, 1] through a second, tight E-step.
  action_penalty: bool = True
  epsilon_penalty: float = 0.001

  # Policy improvement: 'mpo' (weighted M-step), 'pmpo' (preferred / dis-preferred) or
  # 'pac' (MPO M-step mixed with behaviour cloning of the dataset actions).
  policy_loss: str = 'mpo'
  pmpo_alpha: float = 0.5
  pmpo_beta: float = 2.0  # alpha = 0 (negative-only) needs a strong KL anchor to stay stable
  pmpo_fraction: float = 0.25
  # Where PMPO's preferred / dis-preferred sets come from: 'q' ranks the N sampled
  # actions of each state by Q (top / bottom pmpo_fraction); 'labels' takes the
  # dataset actions of stored episodes labelled successful / failed (the episode's
  # metadata 'success' when it has one, else return >= pmpo_success_return).
  pmpo_source: str = 'q'
  pmpo_success_return: Optional[float] = None
  # With 'labels', a failed episode's action moves the policy mean away from it: not the
  # spread (shrinking the stddev is the cheapest way to make a far action unlikely, and
  # it collapses the policy), not past the action bounds [-1, 1], and only until the
  # policy finds the action this many nats less likely than the reference (target)
  # policy does (None: no limit). Without these, dataset actions far from the policy
  # make the loss unbounded below whatever pmpo_beta is. Not used by 'q' (its samples
  # come from the reference policy itself).
  pmpo_negative_margin: Optional[float] = 1.0

  # PAC: policy loss = (1 - alpha) * MPO M-step + alpha * BC NLL (+ the KL trust region).
  # alpha = 1 is pure behaviour cloning, alpha = 0 pure MPO. Only read when policy_loss='pac'.
  bc_alpha: float = 0.5
  # Alpha per collect-and-infer iteration: entry i for iteration i, the last entry held for
  # every later one (e.g. (0.9, 0.7, 0.5)). None uses bc_alpha for every iteration.
  bc_alpha_schedule: Optional[Tuple[float, ...]] = None

  # Optimisation.
  batch_size: int = 256
  policy_learning_rate: float = 1e-4
  critic_learning_rate: float = 1e-4
  dual_learning_rate: float = 1e-2
  max_grad_norm: float = 40.0

  # Replay.
  min_replay_size: int = 1_000
  max_replay_size: int = 1_000_000
  # Average number of times each transition is sampled; None disables rate limiting.
  samples_per_insert: Optional[float] = 32.0
  samples_per_insert_tolerance: float = 0.5

  # Actors refresh parameters from the learner every this many actor steps.
  variable_update_period: int = 250

  def __post_init__(self):
    self.policy_layer_sizes = tuple(self.policy_layer_sizes)
    self.critic_layer_sizes = tuple(self.critic_layer_sizes)
    # JSON (config.json, --agent) gives lists; a tuple keeps the config hashable and comparable.
    if isinstance(self.bc_alpha_schedule, list):
      self.bc_alpha_schedule = tuple(self.bc_alpha_schedule)
    self.validate()

  @property
  def v_max(self) -> float:
    return max(abs(self.max_reward), abs(self.min_reward)) / (1.0 - self.discount)

  @property
  def v_min(self) -> float:
    return 0.0 if self.min_reward >= 0.0 else -self.v_max

  @property
  def learns_from_labels(self) -> bool:
    """True when PMPO's preferred / dis-preferred sets come from stored episodes' labels."""
    return self.policy_loss == 'pmpo' and self.pmpo_source == 'labels'

  def validate(self) -> None:
    """Raises ConfigError naming the first bad field and what is allowed."""

    def need(cond: bool, field: str, rule: str):
      if not cond:
        raise ConfigError(f'MPOConfig.{field}={getattr(self, field)!r} is invalid: must be {rule}')

    def finite(x) -> bool:
      return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    for f in ('policy_layer_sizes', 'critic_layer_sizes'):
      sizes = getattr(self, f)
      need(len(sizes) > 0 and all(isinstance(s, int) and s > 0 for s in sizes), f,
           'a non-empty sequence of positive ints')
    need(self.network in ('mlp', 'perceiver'), 'network', "'mlp' or 'perceiver'")
    for f in ('perceiver_latent_dim', 'perceiver_num_latents', 'perceiver_num_heads',
              'perceiver_blocks'):
      v = getattr(self, f)
      need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f, 'an int >= 1')
    need(self.perceiver_latent_dim % self.perceiver_num_heads == 0, 'perceiver_latent_dim',
         'a multiple of perceiver_num_heads')
    need(isinstance(self.num_atoms, int) and (self.num_atoms == 1 or self.num_atoms >= 2),
         'num_atoms', 'an int >= 1 (1 = non-distributional)')
    need(finite(self.min_reward), 'min_reward', 'a finite number')
    need(finite(self.max_reward) and self.max_reward > self.min_reward, 'max_reward',
         'finite and > min_reward')
    need(finite(self.discount) and 0.0 < self.discount < 1.0, 'discount', 'in (0, 1)')
    for f in ('n_step', 'target_update_period', 'num_samples', 'batch_size',
              'min_replay_size', 'max_replay_size', 'variable_update_period'):
      v = getattr(self, f)
      need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f, 'an int >= 1')
    need(self.max_replay_size >= self.min_replay_size, 'max_replay_size', '>= min_replay_size')
    for f in ('epsilon', 'epsilon_mean', 'epsilon_stddev', 'epsilon_penalty', 'init_temperature',
              'init_alpha_mean', 'init_alpha_stddev', 'policy_learning_rate',
              'critic_learning_rate', 'dual_learning_rate', 'max_grad_norm'):
      need(finite(getattr(self, f)) and getattr(self, f) > 0, f, 'a finite number > 0')
    need(self.policy_loss in ('mpo', 'pmpo', 'pac'), 'policy_loss', "'mpo', 'pmpo' or 'pac'")
    need(finite(self.pmpo_alpha) and 0.0 <= self.pmpo_alpha <= 1.0, 'pmpo_alpha', 'in [0, 1]')
    need(finite(self.pmpo_beta) and self.pmpo_beta >= 0.0, 'pmpo_beta', '>= 0')
    need(finite(self.pmpo_fraction) and 0.0 < self.pmpo_fraction <= 0.5, 'pmpo_fraction',
         'in (0, 0.5]')
    need(self.pmpo_source in ('q', 'labels'), 'pmpo_source', "'q' or 'labels'")
    need(self.pmpo_success_return is None or finite(self.pmpo_success_return),
         'pmpo_success_return', 'None or a finite episode return')
    need(self.pmpo_negative_margin is None or
         (finite(self.pmpo_negative_margin) and self.pmpo_negative_margin > 0),
         'pmpo_negative_margin', 'None or a finite number of nats > 0')
    need(finite(self.bc_alpha) and 0.0 <= self.bc_alpha <= 1.0, 'bc_alpha', 'in [0, 1]')
    schedule = self.bc_alpha_schedule
    need(schedule is None or (isinstance(schedule, tuple) and len(schedule) > 0 and
                              all(finite(a) and 0.0 <= a <= 1.0 for a in schedule)),
         'bc_alpha_schedule', 'None or a non-empty sequence of numbers in [0, 1]')
    if self.samples_per_insert is not None:
      need(finite(self.samples_per_insert) and self.samples_per_insert > 0,
           'samples_per_insert', 'a finite number > 0, or None to disable rate limiting')
    need(finite(self.samples_per_insert_tolerance) and self.samples_per_insert_tolerance > 0,
         'samples_per_insert_tolerance', 'a finite number > 0')
    need(isinstance(self.action_penalty, bool), 'action_penalty', 'a bool')


def bc_alpha_for_iteration(config: MPOConfig, iteration: int) -> float:
  """PAC's behaviour-cloning weight for collect-and-infer iteration `iteration` (from 0).

  Entry `iteration` of `config.bc_alpha_schedule`, its last entry once the schedule has run
  out, or `config.bc_alpha` when there is no schedule.
  """
  if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
    raise ValueError(f'iteration must be an int >= 0, got {iteration!r}')
  schedule = config.bc_alpha_schedule
  if schedule is None:
    return float(config.bc_alpha)
  return float(schedule[min(iteration, len(schedule) - 1)])
