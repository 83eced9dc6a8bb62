"""A thin acme Learner around the generalist's jitted sequence update."""

from typing import Iterator, List, Optional, Sequence, Tuple

import jax
from acme.utils import counting, loggers

from agents.common.learning_rate import learning_rate
from agents.gato import learning
from agents.gato.config import GatoConfig
from agents.gato.types import SequenceBatch
from agents.jitted_learner import JittedLearner, policy_only_variables
from networks.transformer import SequenceModel


class GatoLearner(JittedLearner):
  """Fits the action tokens of windows of stored episodes, one batch of windows per step."""

  label = 'Gato learner'
  loss_names = ('sequence_loss',)
  batch_fields = ('tokens', 'positions', 'loss_mask')

  def __init__(
    self,
    model: SequenceModel,
    config: GatoConfig,
    iterator: Iterator[SequenceBatch],
    seed: int = 0,
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
    max_targets: Optional[int] = None,
    action_range: Tuple[int, int] = (0, 0),
    num_value_bins: int = 0,
  ):
    """`max_targets`: at least the action tokens any window holds (GatoBuilder.max_targets);
    the logits are computed there alone. None: at every position. `action_range`: the
    action bins (decoding.action_token_range) that optim.action_token_noise draws from.
    `num_value_bins`: the value tokens (below it) that optim.value_token_jitter moves."""
    o = config.optim
    optimizer = learning.make_optimizer(
      learning_rate(o.learning_rate, o.lr_decay), o.max_grad_norm, o.weight_decay
    )
    super().__init__(
      learning.initial_state(model, optimizer, jax.random.PRNGKey(seed)),
      learning.make_update_fn(
        model,
        optimizer,
        max_targets,
        o.action_token_noise,
        action_range,
        o.value_token_jitter,
        num_value_bins,
      ),
      iterator,
      counter,
      logger,
    )

  def get_variables(self, names: Sequence[str]) -> List[dict]:
    return policy_only_variables('Gato', names, self._state.params)
