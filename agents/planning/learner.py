"""The model learner: a thin acme Learner around the model's jitted update.

It serves the model as the planning actors' 'policy': {'params': the model's parameters,
and for the ensemble 'stats', its normalisation statistics as a dict}: plain nested
arrays, as every learner's 'policy' is (a robot fetching it through the gateway gets
plain data too).
"""

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Union

import jax
from acme.utils import counting, loggers

from agents.jitted_learner import JittedLearner, policy_only_variables
from agents.planning import learning, sequence_model
from agents.planning.config import PlanningConfig
from agents.planning.sequence_model import SequenceDynamics
from networks.dynamics import EnsembleModel, NormalizationStats

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb


class ModelLearner(JittedLearner):
  """Fits the dynamics model (the ensemble and its reward head, or the transformer) to
  one-step transitions, one batch per step."""

  label = 'model learner'
  loss_names = ('model_loss',)
  batch_fields = ('observation', 'action', 'reward', 'next_observation')

  def __init__(
    self,
    model: Union[EnsembleModel, SequenceDynamics],
    config: PlanningConfig,
    obs_dim: int,
    action_dim: int,
    iterator: Iterator['reverb.ReplaySample'],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ):
    o = config.optim
    optimizer = learning.make_optimizer(o.learning_rate, o.max_grad_norm, o.weight_decay)
    key = jax.random.PRNGKey(seed)
    if isinstance(model, SequenceDynamics):
      state = sequence_model.initial_sequence_state(model.model, optimizer, key)
      update = sequence_model.make_sequence_update_fn(model.model, model.layout, optimizer)
    else:
      state = learning.initial_learner_state(model, optimizer, obs_dim, action_dim, key)
      update = learning.make_learner_update_fn(model, optimizer, o.reward_weight)
    super().__init__(state, update, iterator, counter, logger)

  def get_variables(self, names: Sequence[str]) -> List[Dict[str, Any]]:
    state = self._state  # Replaced whole per update: params and stats stay a pair.
    model = {'params': state.params}
    if hasattr(state, 'stats'):  # The ensemble's normalisation (the transformer has tokens).
      model['stats'] = dict(state.stats._asdict())
    return policy_only_variables('model', names, model)


def model_from_variables(variables: Dict[str, Any]):
  """(params, NormalizationStats) from what ModelLearner serves as 'policy'."""
  return variables['params'], NormalizationStats(**variables['stats'])
