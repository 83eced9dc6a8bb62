"""A thin acme Learner around the jitted behaviour-cloning update.

Its public surface mirrors MPOLearner's (step, steps, get_variables, save, restore,
set_iterator), so actors, evaluator and checkpointing serve either learner alike.
"""

import time
from typing import Iterator, List, Optional, Sequence

import jax
import numpy as np
import reverb
from acme import core
from acme.utils import counting
from acme.utils import loggers

from agents.bc import learning
from agents.bc.config import BCConfig
from agents.mpo.learner import NonFiniteLossError
from networks.mpo import MPONetworks


class BCLearner(core.Learner):
  """Fits the policy to the dataset actions by maximum likelihood, one batch per step."""

  def __init__(self, networks: MPONetworks, config: BCConfig, obs_dim: int,
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

  def step(self):
    sample = next(self._iterator)
    transitions = getattr(sample, 'data', sample)
    state, metrics = self._update(self._state, transitions)
    metrics = {k: float(v) for k, v in metrics.items()}
    if not np.isfinite(metrics['bc_loss']):
      # self._state keeps the last finite parameters for actors and checkpoints.
      raise NonFiniteLossError(
          f'BC learner step {int(state.steps)}: non-finite loss {metrics["bc_loss"]}; '
          f'{self._find_non_finite(transitions)}')
    self._state = state
    now = time.time()
    elapsed = now - self._last_time if self._last_time else 0.0
    self._last_time = now
    counts = self._counter.increment(steps=1, walltime=elapsed)
    self._logger.write({**metrics, **counts})

  @staticmethod
  def _find_non_finite(transitions) -> str:
    # Behaviour cloning reads only these two fields.
    for name in ('observation', 'action'):
      if not np.all(np.isfinite(np.asarray(getattr(transitions, name)))):
        return f'the batch has non-finite values in {name!r}'
    return 'the batch itself is finite, so the update diverged (lower the learning rate)'

  def set_iterator(self, iterator: Iterator[reverb.ReplaySample]) -> None:
    """Replaces an iterator that ended (e.g. a sampling timeout on the rate limiter)."""
    self._iterator = iterator

  @property
  def steps(self) -> int:
    return int(self._state.steps)

  def get_variables(self, names: Sequence[str]) -> List[dict]:
    unknown = [n for n in names if n != 'policy']
    if unknown:
      raise KeyError(f'the BC learner has no {unknown} variables; it serves only "policy"')
    return [jax.device_get(self._state.policy_params) for _ in names]

  def save(self) -> learning.BCTrainingState:
    return jax.device_get(self._state)

  def restore(self, state: learning.BCTrainingState):
    self._state = jax.tree_util.tree_map(jax.numpy.asarray, state)
