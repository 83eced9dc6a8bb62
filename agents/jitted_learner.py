"""The acme Learner shell the agents share: one jitted update per step, state kept finite.

An agent supplies its initial state, its update function and which metrics and batch
fields to check; this class does the rest of acme's Learner / VariableSource surface
(step, steps, save, restore, set_iterator), so actors, evaluator and checkpointing
serve any agent alike.
"""

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np
from acme import core
from acme.utils import counting, loggers

if TYPE_CHECKING:  # Reverb imports TensorFlow; a robot builds its actor without either.
  import reverb


class NonFiniteLossError(RuntimeError):
  """The update produced NaN/inf: the data or the hyper-parameters are broken."""


class JittedLearner(core.Learner):
  """Consumes one batch per step through `update(state, transitions, *update_args())`.

  Subclasses say which variables they serve (acme's abstract `get_variables`).
  """

  label = 'learner'
  # Metrics that must stay finite, and the batch fields the update reads (named in the
  # error when one of them holds the NaN/inf).
  loss_names: Tuple[str, ...] = ()
  batch_fields: Tuple[str, ...] = ()

  def __init__(
    self,
    state: Any,
    update: Callable[..., Tuple[Any, Dict[str, Any]]],
    iterator: Iterator['reverb.ReplaySample'],
    counter: Optional[counting.Counter] = None,
    logger: Optional[loggers.Logger] = None,
  ):
    self._state = state
    self._update = jax.jit(update)
    self._iterator = iterator
    self._counter = counter or counting.Counter()
    self._logger = logger or loggers.make_default_logger('learner', save_data=False)
    self._last_time: Optional[float] = None
    # The batch of the next step, drawn while this step's update computes, and whether the
    # iterator ended while drawing it (the next step then raises its StopIteration).
    self._next_sample: Any = None
    self._ended = False

  def update_args(self) -> tuple:
    """Extra arguments of the update after (state, transitions)."""
    return ()

  def step(self):
    if self._ended:
      self._ended = False
      raise StopIteration
    sample, self._next_sample = self._next_sample, None
    if sample is None:
      sample = next(self._iterator)
    transitions = getattr(sample, 'data', sample)
    state, metrics = self._update(self._state, transitions, *self.update_args())
    # JAX dispatches the update and returns: the next batch is drawn while it computes
    # (the batch's Python and TensorFlow work then overlaps XLA's, instead of following it).
    try:
      self._next_sample = next(self._iterator)
    except StopIteration:
      self._ended = True
    metrics = {k: float(v) for k, v in metrics.items()}
    bad = {k: metrics[k] for k in self.loss_names if not np.isfinite(metrics[k])}
    if bad:
      # self._state still holds the last finite state: variables served to actors and
      # checkpoints taken after this error must not carry the NaN parameters.
      losses = ', '.join(f'{k} {metrics[k]}' for k in self.loss_names)
      raise NonFiniteLossError(
        f'{self.label} step {int(state.steps)}: non-finite loss '
        f'({losses}); {self._find_non_finite(transitions)}'
      )
    self._state = state
    self.check_metrics(metrics)
    now = time.time()
    elapsed = now - self._last_time if self._last_time else 0.0
    self._last_time = now
    counts = self._counter.increment(steps=1, walltime=elapsed)
    self._logger.write({**metrics, **counts})

  def check_metrics(self, metrics: Dict[str, float]) -> None:
    """Called with each finite update's metrics: an agent warns here of what they show."""

  def _find_non_finite(self, transitions) -> str:
    for name in self.batch_fields:
      if not np.all(np.isfinite(np.asarray(getattr(transitions, name)))):
        return f'the batch has non-finite values in {name!r}'
    return 'the batch itself is finite, so the update diverged (lower the learning rates)'

  def set_iterator(self, iterator: Iterator['reverb.ReplaySample']) -> None:
    """Replaces an iterator that ended (e.g. a sampling timeout on the rate limiter). A
    batch drawn ahead from the old one is dropped: the next step reads the new one."""
    self._iterator = iterator
    self._next_sample = None
    self._ended = False

  @property
  def steps(self) -> int:
    return int(self._state.steps)

  def save(self) -> Any:
    return jax.device_get(self._state)

  def restore(self, state: Any):
    self._state = jax.tree_util.tree_map(jax.numpy.asarray, state)


def policy_only_variables(learner: str, names: Sequence[str], params: Any) -> List[Any]:
  """`get_variables` of a learner that serves only its policy (`params`) under 'policy'."""
  unknown = [n for n in names if n != 'policy']
  if unknown:
    raise KeyError(f'the {learner} learner has no {unknown} variables; it serves only "policy"')
  return [jax.device_get(params) for _ in names]
