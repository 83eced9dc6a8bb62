"""MPO-family learner configuration, with the published defaults."""

import dataclasses
import numbers
from typing import Optional, Tuple

from agents.common.config import (
  AgentConfig,
  Config,
  Need,
  finite,
  is_int,
  positive_ints,
  tuple_or_none,
)
from agents.common.encoder_config import EncoderConfig
from agents.common.learning_rate import LearningRateDecay
from agents.common.replay_config import LEGACY_REPLAY_KEYS, ReplayConfig


@dataclasses.dataclass
class PerceiverConfig(Config):
  """The 'perceiver' network: observation groups as tokens, cross-attended into learned
  latents; Q decoded with the action as the query. Sized for CPU (compile time grows fast)."""

  latent_dim: int = 32
  num_latents: int = 8
  num_heads: int = 4
  blocks: int = 1
  # Pixel runs: each patch_size x patch_size square of the image is a token (64x64: 64).
  patch_size: int = 8

  def check(self, need: Need) -> None:
    for f in ('latent_dim', 'num_latents', 'num_heads', 'blocks', 'patch_size'):
      need(is_int(getattr(self, f)) and getattr(self, f) >= 1, f, 'an int >= 1')
    need(self.latent_dim % self.num_heads == 0, 'latent_dim', 'a multiple of num_heads')


@dataclasses.dataclass
class PMPOConfig(Config):
  """PMPO (policy_loss='pmpo'): preferred / dis-preferred actions instead of weights."""

  alpha: float = 0.5
  beta: float = 2.0  # alpha = 0 (negative-only) needs a strong KL anchor to stay stable
  fraction: float = 0.25
  # Where the preferred / dis-preferred sets come from: 'q' ranks the N sampled actions of
  # each state by Q (top / bottom `fraction`); 'labels' takes the dataset actions of stored
  # episodes labelled successful / failed (the episode's metadata 'success' when it has
  # one, else return >= success_return).
  source: str = 'q'
  success_return: Optional[float] = None
  # With 'labels', a failed episode's action moves the policy mean away from it: not the
  # spread (shrinking the stddev is the cheapest way to make a far action unlikely, and
  # it collapses the policy), not past the action bounds [-1, 1], and only until the
  # policy finds the action this many nats less likely than the reference (target)
  # policy does (None: no limit). Without these, dataset actions far from the policy
  # make the loss unbounded below whatever beta is. Not used by 'q' (its samples
  # come from the reference policy itself).
  negative_margin: Optional[float] = 1.0

  def check(self, need: Need) -> None:
    need(finite(self.alpha) and 0.0 <= self.alpha <= 1.0, 'alpha', 'in [0, 1]')
    need(finite(self.beta) and self.beta >= 0.0, 'beta', '>= 0')
    need(finite(self.fraction) and 0.0 < self.fraction <= 0.5, 'fraction', 'in (0, 0.5]')
    need(self.source in ('q', 'labels'), 'source', "'q' or 'labels'")
    need(
      self.success_return is None or finite(self.success_return),
      'success_return',
      'None or a finite episode return',
    )
    need(
      self.negative_margin is None or (finite(self.negative_margin) and self.negative_margin > 0),
      'negative_margin',
      'None or a finite number of nats > 0',
    )


@dataclasses.dataclass
class PACConfig(Config):
  """PAC (policy_loss='pac'): policy loss = (1 - alpha) * MPO M-step + alpha * BC NLL of the
  dataset actions (+ the KL trust region). alpha = 1 is pure behaviour cloning, 0 pure MPO."""

  alpha: float = 0.5
  # Alpha per collect-and-infer iteration: entry i for iteration i, the last entry held for
  # every later one (e.g. (0.9, 0.7, 0.5)). None uses `alpha` for every iteration.
  alpha_schedule: Optional[Tuple[float, ...]] = None

  def __post_init__(self):
    self.alpha_schedule = tuple_or_none(self.alpha_schedule)

  def check(self, need: Need) -> None:
    need(finite(self.alpha) and 0.0 <= self.alpha <= 1.0, 'alpha', 'in [0, 1]')
    schedule = self.alpha_schedule
    need(
      schedule is None
      or (
        isinstance(schedule, tuple)
        and len(schedule) > 0
        and all(finite(a) and 0.0 <= a <= 1.0 for a in schedule)
      ),
      'alpha_schedule',
      'None or a non-empty sequence of numbers in [0, 1]',
    )


@dataclasses.dataclass
class MPOConfig(AgentConfig):
  """Hyper-parameters of (distributional) MPO, PMPO and PAC.

  Defaults follow Abdolmaleki et al. (2018) and the DMPO setting used for the
  DeepMind control suite.
  """

  # Networks.
  policy_layer_sizes: Tuple[int, ...] = (256, 256, 256)
  critic_layer_sizes: Tuple[int, ...] = (512, 512, 256)
  num_atoms: int = 51  # 1 selects the non-distributional (expected value) critic.
  # 'mlp' (LayerNorm MLPs, sizes above) or 'perceiver' (see PerceiverConfig).
  network: str = 'mlp'
  perceiver: PerceiverConfig = dataclasses.field(default_factory=PerceiverConfig)
  # Pixel observations (--pixels) go through this encoder, shared by critic and policy.
  encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
  # Rewards bound the critic's support: v_max = max_reward / (1 - replay.discount).
  min_reward: float = 0.0
  max_reward: float = 1.0

  # Policy evaluation (discount and n_step are the data pipeline's: `replay`).
  target_update_period: int = 100
  num_samples: int = 20
  # True: the E-step and M-step run on the next observations, with the actions the critic's
  # target sampled there and their target Q values (as acme's TF MPO learner does), so an
  # update runs the target critic on sampled actions once, not twice. Read by the 'mpo'
  # policy loss on state observations of one body; 'pmpo' and 'pac' (whose M-step reads the
  # batch's own actions), pixel encoders and several-body layouts improve on the batch's
  # own states either way.
  share_target_samples: bool = False

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
  pmpo: PMPOConfig = dataclasses.field(default_factory=PMPOConfig)  # read by 'pmpo' only
  pac: PACConfig = dataclasses.field(default_factory=PACConfig)  # read by 'pac' only

  # Optimisation.
  policy_learning_rate: float = 1e-4
  critic_learning_rate: float = 1e-4
  dual_learning_rate: float = 1e-2
  max_grad_norm: float = 40.0
  # Warm-up and cosine decay of the policy's and the critic's learning rates (not the duals');
  # default constant (agents.common.learning_rate).
  lr_decay: LearningRateDecay = dataclasses.field(default_factory=LearningRateDecay)

  # Discount, n-step, batches, replay, actors' refresh period.
  replay: ReplayConfig = dataclasses.field(default_factory=ReplayConfig)

  legacy_keys = {
    **LEGACY_REPLAY_KEYS,
    # The flat names runs stored before the sub-configs (patch_size came later).
    **{
      f'perceiver_{f}': f'perceiver.{f}'
      for f in ('latent_dim', 'num_latents', 'num_heads', 'blocks')
    },
    **{f'pmpo_{f.name}': f'pmpo.{f.name}' for f in dataclasses.fields(PMPOConfig)},
    'bc_alpha': 'pac.alpha',
    'bc_alpha_schedule': 'pac.alpha_schedule',
  }
  labels_setting = "pmpo.source='labels'"
  success_return_setting = 'pmpo.success_return'

  def __post_init__(self):
    self.policy_layer_sizes = tuple_or_none(self.policy_layer_sizes)
    self.critic_layer_sizes = tuple_or_none(self.critic_layer_sizes)
    super().__post_init__()

  @property
  def v_max(self) -> float:
    return max(abs(self.max_reward), abs(self.min_reward)) / (1.0 - self.replay.discount)

  @property
  def v_min(self) -> float:
    return 0.0 if self.min_reward >= 0.0 else -self.v_max

  @property
  def n_step_reward_bounds(self) -> Tuple[float, float]:
    """The n-step rewards that keep the critic's targets inside its support.

    A target's top atom is r + gamma^n * v_max: it stays at most v_max while r is at most
    (1 - gamma^n) * v_max (for rewards in [min_reward, max_reward] it always is). Above,
    the support clips, and states whose values differ look alike to the critic.
    """
    keep = 1.0 - self.replay.discount**self.replay.n_step
    return self.v_min * keep, self.v_max * keep

  @property
  def learns_from_labels(self) -> bool:
    """True when PMPO's preferred / dis-preferred sets come from stored episodes' labels."""
    return self.policy_loss == 'pmpo' and self.pmpo.source == 'labels'

  @property
  def success_return(self) -> Optional[float]:
    return self.pmpo.success_return

  @property
  def takes_pixels(self) -> bool:
    return True  # Through the convolutional encoder or the Perceiver's patches.

  @property
  def needs_observation_groups(self) -> bool:
    return self.network == 'perceiver'

  @property
  def several_bodies(self) -> bool:
    return True  # State tasks in one placed layout (agents.common.task_layout).

  def check(self, need: Need) -> None:
    for f in ('policy_layer_sizes', 'critic_layer_sizes'):
      need(positive_ints(getattr(self, f)), f, 'a non-empty sequence of positive ints')
    need(self.network in ('mlp', 'perceiver'), 'network', "'mlp' or 'perceiver'")
    need(
      is_int(self.num_atoms) and (self.num_atoms == 1 or self.num_atoms >= 2),
      'num_atoms',
      'an int >= 1 (1 = non-distributional)',
    )
    need(finite(self.min_reward), 'min_reward', 'a finite number')
    need(
      finite(self.max_reward) and self.max_reward > self.min_reward,
      'max_reward',
      'finite and > min_reward',
    )
    for f in ('target_update_period', 'num_samples'):
      need(is_int(getattr(self, f)) and getattr(self, f) >= 1, f, 'an int >= 1')
    for f in (
      'epsilon',
      'epsilon_mean',
      'epsilon_stddev',
      'epsilon_penalty',
      'init_temperature',
      'init_alpha_mean',
      'init_alpha_stddev',
      'policy_learning_rate',
      'critic_learning_rate',
      'dual_learning_rate',
      'max_grad_norm',
    ):
      need(finite(getattr(self, f)) and getattr(self, f) > 0, f, 'a finite number > 0')
    need(self.policy_loss in ('mpo', 'pmpo', 'pac'), 'policy_loss', "'mpo', 'pmpo' or 'pac'")
    need(isinstance(self.action_penalty, bool), 'action_penalty', 'a bool')
    need(isinstance(self.share_target_samples, bool), 'share_target_samples', 'a bool')


def bc_alpha_for_iteration(config: MPOConfig, iteration: int) -> float:
  """PAC's behaviour-cloning weight for collect-and-infer iteration `iteration` (from 0).

  Entry `iteration` of `config.pac.alpha_schedule`, its last entry once the schedule has run
  out, or `config.pac.alpha` when there is no schedule.
  """
  if isinstance(iteration, bool) or not isinstance(iteration, numbers.Integral) or iteration < 0:
    raise ValueError(f'iteration must be an int >= 0, got {iteration!r}')
  schedule = config.pac.alpha_schedule
  if schedule is None:
    return float(config.pac.alpha)
  return float(schedule[min(iteration, len(schedule) - 1)])
