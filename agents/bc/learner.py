"""A thin acme Learner around the jitted behaviour-cloning update.

Its public surface is MPOLearner's (both are JittedLearners), so actors, evaluator and
checkpointing serve either learner alike.
"""

from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence

import jax
from acme.utils import counting, loggers

from agents.bc import learning
from agents.bc.config import BCConfig
from agents.jitted_learner import JittedLearner, policy_only_variables
from networks.mpo import MPONetworks

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb


class BCLearner(JittedLearner):
  """Fits the policy to the dataset actions by maximum likelihood, one batch per step."""

  label = 'BC learner'
  loss_names = ('bc_loss',)
  batch_fields = ('observation', 'action')  # all that behaviour cloning reads

  def __init__(
    self,
    networks: MPONetworks,
    config: BCConfig,
    obs_dim: int,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ):
    self._config = config
    super().__init__(
      learning.initial_state(networks, config, obs_dim, jax.random.PRNGKey(seed)),
      learning.make_update_fn(networks, config),
      iterator,
      counter,
      logger,
    )

  def get_variables(self, names: Sequence[str]) -> List[dict]:
    return policy_only_variables('BC', names, self._state.policy_params)
