"""A thin acme Learner around the jitted MPO update."""

from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence

import jax
import numpy as np
from acme.utils import counting, loggers

from agents.common.logs import get_logger
from agents.jitted_learner import JittedLearner, NonFiniteLossError
from agents.mpo import learning
from agents.mpo.config import MPOConfig, bc_alpha_for_iteration
from networks.mpo import MPONetworks

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb

__all__ = ['MPOLearner', 'NonFiniteLossError']

log = get_logger('learner')


class MPOLearner(JittedLearner):
  """Consumes batches of n-step transitions, runs one jitted update per step."""

  loss_names = ('critic_loss', 'policy_loss')
  batch_fields = ('observation', 'action', 'reward', 'discount', 'next_observation')

  def __init__(
    self,
    networks: MPONetworks,
    config: MPOConfig,
    obs_dim: int,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ):
    self._config = config
    # The n-step rewards the critic's support can value; None once warned, and for an
    # expected-value critic, which clips nothing.
    self._reward_bounds = None if config.num_atoms == 1 else config.n_step_reward_bounds
    self._bc_alpha = np.float32(bc_alpha_for_iteration(config, 0))
    super().__init__(
      learning.initial_state(networks, config, obs_dim, jax.random.PRNGKey(seed)),
      learning.make_update_fn(networks, config),
      iterator,
      counter,
      logger,
    )

  def update_args(self) -> tuple:
    return (self._bc_alpha,)

  def check_metrics(self, metrics: Dict[str, float]) -> None:
    """Warns once when the batch's rewards leave what the critic's support can value."""
    if self._reward_bounds is None or 'reward_max' not in metrics:
      return
    low, high = self._reward_bounds
    slack = 1e-3 * (high - low)
    worst = None
    if metrics['reward_max'] > high + slack:
      worst = f'n-step reward {metrics["reward_max"]:.3g} above the {high:.3g}'
    elif metrics['reward_min'] < low - slack:
      worst = f'n-step reward {metrics["reward_min"]:.3g} below the {low:.3g}'
    if worst is None:
      return
    self._reward_bounds = None
    c = self._config
    log.warning(
      f'step {self.steps}: {worst} that min_reward={c.min_reward:g} and '
      f'max_reward={c.max_reward:g} allow: the critic clips values outside '
      f'[{c.v_min:.4g}, {c.v_max:.4g}], so it cannot tell such states apart. Set '
      "min_reward / max_reward to the environment's reward range per step "
      '(--agent max_reward=...). Warned once.'
    )

  def set_iteration(self, iteration: int) -> float:
    """Uses PAC's behaviour-cloning weight for collect-and-infer `iteration`; returns it.

    The weight is not part of the saved state: whoever counts iterations sets it again
    after a restore. No effect on the 'mpo' and 'pmpo' losses.
    """
    # A float32 array, like the initial one, so the jitted update is not compiled again.
    self._bc_alpha = np.float32(bc_alpha_for_iteration(self._config, iteration))
    return float(self._bc_alpha)

  def iteration_note(self) -> Optional[str]:
    """What `set_iteration` set, for the log: PAC's weight; None for the other losses."""
    if self._config.policy_loss != 'pac':
      return None
    return f'behaviour-cloning weight {self._bc_alpha:.2f}'

  @property
  def bc_alpha(self) -> float:
    """The behaviour-cloning weight the next PAC update uses."""
    return float(self._bc_alpha)

  def get_variables(self, names: Sequence[str]) -> List[dict]:
    variables = {'policy': self._state.policy_params, 'critic': self._state.critic_params}
    return [jax.device_get(variables[n]) for n in names]
