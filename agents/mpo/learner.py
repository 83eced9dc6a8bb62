"""A thin acme Learner around the jitted MPO update."""

import logging
import time
from typing import Iterator, List, Optional, Sequence

import jax
import numpy as np
import reverb
from acme import core
from acme.utils import counting
from acme.utils import loggers

from agents.mpo import learning
from agents.mpo.config import MPOConfig, bc_alpha_for_iteration
from networks.mpo import MPONetworks

log = logging.getLogger('collect_infer.learner')


class NonFiniteLossError(RuntimeError):
  """The update produced NaN/inf: the data or the hyper-parameters are broken."""


class MPOLearner(core.Learner):
  """Consumes batches of n-step transitions, runs one jitted update per step."""

  def __init__(self, networks: MPONetworks, config: MPOConfig, obs_dim: int,
               iterator: Iterator[reverb.ReplaySample], seed: int = 0,
               counter: Optional[counting.Counter] = None,
               logger: Optional[loggers.Logger] = None):
    self._config = config
    self._iterator = iterator
    self._counter = counter or counting.Counter()
    self._logger = logger or loggers.make_default_logger('learner', save_data=False)
    self._state = learning.initial_state(networks, config, obs_dim, jax.random.PRNGKey(seed))
    self._update = jax.jit(learning.make_update_fn(networks, config))
    self._last_time: Optional[float] = None
    self._bc_alpha = np.float32(bc_alpha_for_iteration(config, 0))

  def step(self):
    sample = next(self._iterator)
    transitions = getattr(sample, 'data', sample)
    state, metrics = self._update(self._state, transitions, self._bc_alpha)
    metrics = {k: float(v) for k, v in metrics.items()}
    if not np.isfinite(metrics['critic_loss']) or not np.isfinite(metrics['policy_loss']):
      bad = self._find_non_finite(transitions)
      # self._state still holds the last finite state: variables served to actors and
      # checkpoints taken after this error must not carry the NaN parameters.
      raise NonFiniteLossError(
          f'learner step {int(state.steps)}: non-finite loss '
          f'(critic {metrics["critic_loss"]}, policy {metrics["policy_loss"]}); {bad}')
    self._state = state
    now = time.time()
    elapsed = now - self._last_time if self._last_time else 0.0
    self._last_time = now
    counts = self._counter.increment(steps=1, walltime=elapsed)
    self._logger.write({**metrics, **counts})

  @staticmethod
  def _find_non_finite(transitions) -> str:
    for name in ('observation', 'action', 'reward', 'discount', 'next_observation'):
      value = np.asarray(getattr(transitions, name))
      if not np.all(np.isfinite(value)):
        return f'the batch has non-finite values in {name!r}'
    return 'the batch itself is finite, so the update diverged (lower the learning rates)'

  def set_iterator(self, iterator: Iterator[reverb.ReplaySample]) -> None:
    """Replaces an iterator that ended (e.g. a sampling timeout on the rate limiter)."""
    self._iterator = iterator

  def set_iteration(self, iteration: int) -> float:
    """Uses PAC's behaviour-cloning weight for collect-and-infer `iteration`; returns it.

    The weight is not part of the saved state: whoever counts iterations sets it again
    after a restore. No effect on the 'mpo' and 'pmpo' losses.
    """
    # A float32 array, like the initial one, so the jitted update is not compiled again.
    self._bc_alpha = np.float32(bc_alpha_for_iteration(self._config, iteration))
    return float(self._bc_alpha)

  @property
  def bc_alpha(self) -> float:
    """The behaviour-cloning weight the next PAC update uses."""
    return float(self._bc_alpha)

  @property
  def steps(self) -> int:
    return int(self._state.steps)

  def get_variables(self, names: Sequence[str]) -> List[dict]:
    variables = {'policy': self._state.policy_params, 'critic': self._state.critic_params}
    return [jax.device_get(variables[n]) for n in names]

  def save(self) -> learning.TrainingState:
    return jax.device_get(self._state)

  def restore(self, state: learning.TrainingState):
    self._state = jax.tree_util.tree_map(jax.numpy.asarray, state)
