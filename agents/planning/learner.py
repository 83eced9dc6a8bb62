"""The model learner: a thin acme Learner around the ensemble's jitted update.

It serves the model as the planning actors' 'policy': {'params': the ensemble's parameters,
'stats': its normalisation statistics as a dict}, plain nested arrays, as every learner's
'policy' is (a robot fetching it through the gateway gets plain data too).
"""

from typing import Any, Dict, Iterator, List, Optional, Sequence

import jax
import reverb
from acme.utils import counting, loggers

from agents.jitted_learner import JittedLearner, policy_only_variables
from agents.planning import learning
from agents.planning.config import PlanningConfig
from networks.dynamics import EnsembleModel, NormalizationStats


class ModelLearner(JittedLearner):
  """Fits the dynamics ensemble and its reward head to transitions, one batch per step."""

  label = 'model learner'
  loss_names = ('model_loss',)
  batch_fields = ('observation', 'action', 'reward', 'next_observation')

  def __init__(
    self,
    model: EnsembleModel,
    config: PlanningConfig,
    obs_dim: int,
    action_dim: int,
    iterator: Iterator[reverb.ReplaySample],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ):
    o = config.optim
    optimizer = learning.make_optimizer(o.learning_rate, o.max_grad_norm, o.weight_decay)
    super().__init__(
      learning.initial_learner_state(
        model, optimizer, obs_dim, action_dim, jax.random.PRNGKey(seed)
      ),
      learning.make_learner_update_fn(model, optimizer, o.reward_weight),
      iterator,
      counter,
      logger,
    )

  def get_variables(self, names: Sequence[str]) -> List[Dict[str, Any]]:
    state = self._state  # Replaced whole per update: params and stats stay a pair.
    model = {'params': state.params, 'stats': dict(state.stats._asdict())}
    return policy_only_variables('model', names, model)


def model_from_variables(variables: Dict[str, Any]):
  """(params, NormalizationStats) from what ModelLearner serves as 'policy'."""
  return variables['params'], NormalizationStats(**variables['stats'])
