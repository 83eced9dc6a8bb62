"""Validation of every step before it leaves the robot PC.

`StepValidator` checks timesteps and actions against an acme EnvironmentSpec:
structure, shape, dtype, NaN/inf, bounds, reward a finite scalar, discount in
[0, 1], step types in order. A bad step gives a `StepError` naming the field,
the step index, the offending value and the reason, and one log line saying so.

`EpisodeGate` applies the configured policy to a whole episode. It holds every
step back until the episode is over, so nothing reaches the program before
the episode is known to be clean:

* on_error='drop_episode': an episode with a bad step yields nothing;
* on_error='truncate': it yields the steps before the bad one, the last kept
  step turned into a truncation (StepType.LAST with its own discount, which
  is 1 for a step that is not terminal); an episode left without a single
  transition is dropped.

An actor loop that must never pass a bad step on runs each episode through a
gate and ships only what `finish()` returns (`collect_episode` is that loop):

  gate = EpisodeGate(StepValidator(spec, on_error='truncate'))
  timestep = env.reset()
  gate.begin(timestep)
  while not gate.done:
    action = policy(timestep.observation)
    if gate.act(action) is not None:  # A bad action is never sent.
      break
    timestep = env.step(action)
    gate.observe(timestep)
  episode = gate.finish()  # None: dropped. Otherwise validated steps to ship.

Step indices count timesteps within the episode: the FIRST timestep is step 0,
the action chosen from timestep t is action t, and `env.step(action t)`
returns step t + 1.
"""

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import dm_env
import numpy as np
import tree
from acme import specs

from agents.common.logs import get_logger
from environments.actions import clip_action

log = get_logger('validation')

ON_ERROR = ('drop_episode', 'truncate')

Policy = Callable[[Any], Any]  # Observation to action.


@dataclasses.dataclass(frozen=True)
class StepError:
  """Why a step is invalid."""

  field: str  # e.g. 'observation[2]', 'observation/joints[0]', 'reward', 'action', 'discount'.
  step_index: int
  value: Any  # The offending value: an element, a shape, a dtype, ...
  reason: str

  def __str__(self) -> str:
    return f'step {self.step_index}: {self.field} = {_short_repr(self.value)}: {self.reason}'


class StepValidator:
  """Checks timesteps and actions against an EnvironmentSpec; logs each bad step."""

  def __init__(self, spec: specs.EnvironmentSpec, on_error: str = 'drop_episode', name: str = ''):
    """Args: the spec steps must meet; what to do with an episode holding a bad
    step ('drop_episode' or 'truncate'); a name (e.g. the robot's) for log lines."""
    if on_error not in ON_ERROR:
      raise ValueError(f'on_error must be one of {ON_ERROR}, got {on_error!r}')
    self._spec = spec
    self._on_error = on_error
    self._prefix = f'{name}: ' if name else ''

  @property
  def spec(self) -> specs.EnvironmentSpec:
    return self._spec

  @property
  def on_error(self) -> str:
    return self._on_error

  def check_timestep(self, timestep: dm_env.TimeStep, step_index: int) -> Optional[StepError]:
    """None if `timestep` is a valid step `step_index` of an episode, else the error."""
    error = self._timestep_error(timestep, step_index)
    if error:
      self._log(error)
    return error

  def check_action(self, action: Any, step_index: int) -> Optional[StepError]:
    """None if `action` (chosen from step `step_index`) meets the action spec, else the error."""
    error = _first_error(action, self._spec.actions, 'action', step_index)
    if error:
      self._log(error)
    return error

  def _timestep_error(self, timestep: dm_env.TimeStep, index: int) -> Optional[StepError]:
    if not isinstance(timestep, dm_env.TimeStep):
      return StepError('timestep', index, type(timestep).__name__, 'not a dm_env.TimeStep')
    step_type = timestep.step_type
    first = index == 0
    if not isinstance(step_type, (dm_env.StepType, int, np.integer)) or step_type not in (0, 1, 2):
      return StepError('step_type', index, step_type, 'not a dm_env.StepType')
    if (step_type == dm_env.StepType.FIRST) != first:
      reason = (
        'the first step of an episode must be FIRST'
        if first
        else ('FIRST in the middle of an episode')
      )
      return StepError('step_type', index, dm_env.StepType(step_type), reason)
    error = _first_error(timestep.observation, self._spec.observations, 'observation', index)
    if error:
      return error
    # dm_env.restart() gives the first step no reward or discount.
    if not (first and timestep.reward is None):
      error = _first_error(timestep.reward, self._spec.rewards, 'reward', index)
      if error:
        return error
    if not (first and timestep.discount is None):
      error = _first_error(timestep.discount, self._spec.discounts, 'discount', index)
      if error:
        return error
      discount = np.asarray(timestep.discount)
      if np.any((discount < 0) | (discount > 1)):
        return StepError('discount', index, timestep.discount, 'outside [0, 1]')
    return None

  def _log(self, error: StepError) -> None:
    outcome = (
      'dropping the episode'
      if self._on_error == 'drop_episode'
      else 'truncating the episode before it'
    )
    log.error(
      '%sInvalid step %d, %s = %s: %s; %s',
      self._prefix,
      error.step_index,
      error.field,
      _short_repr(error.value),
      error.reason,
      outcome,
    )


@dataclasses.dataclass
class ValidatedEpisode:
  """An episode whose every step passed validation.

  timesteps[0] is FIRST and timesteps[-1] LAST; actions[t] was chosen from
  timesteps[t]. error is the bad step that truncated it, if any.
  """

  timesteps: List[dm_env.TimeStep]
  actions: List[Any]
  error: Optional[StepError] = None

  @property
  def length(self) -> int:
    """Number of transitions."""
    return len(self.actions)

  @property
  def truncated(self) -> bool:
    """Whether it was cut short by a bad step."""
    return self.error is not None

  def as_arrays(self) -> Dict[str, Any]:
    """Stacked arrays: observations [T + 1], actions, rewards and discounts [T].

    rewards[t] and discounts[t] follow actions[t], as in launch.store's episodes.
    """
    stack = lambda *xs: np.stack([np.asarray(x) for x in xs])
    after = self.timesteps[1:]
    return {
      'observations': tree.map_structure(stack, *[t.observation for t in self.timesteps]),
      'actions': tree.map_structure(stack, *self.actions),
      'rewards': np.stack([np.asarray(t.reward) for t in after]),
      'discounts': np.stack([np.asarray(t.discount) for t in after]),
    }


class EpisodeGate:
  """Holds back one episode's steps until it is over and applies the error policy.

  Use one gate per episode: begin(), then act() and observe() per step until
  `done`, then finish(). See the module docstring.
  """

  def __init__(self, validator: StepValidator):
    self._validator = validator
    self._timesteps: List[dm_env.TimeStep] = []
    self._actions: List[Any] = []
    self._pending_action: Any = None
    self._error: Optional[StepError] = None
    self._error_at_action = False
    self._ended = False
    self._finished = False

  @property
  def done(self) -> bool:
    """True once the episode reached LAST or a step failed: stop acting."""
    return self._ended or self._error is not None

  @property
  def error(self) -> Optional[StepError]:
    """The first bad step, if any."""
    return self._error

  def begin(self, timestep: dm_env.TimeStep) -> Optional[StepError]:
    """Records the episode's FIRST timestep (step 0)."""
    if self._timesteps or self._error:
      raise RuntimeError('begin() called twice on one EpisodeGate')
    return self._accept(timestep)

  def act(self, action: Any) -> Optional[StepError]:
    """Checks the action chosen from the latest timestep, before it is sent."""
    self._check_open()
    if self._pending_action is not None:
      raise RuntimeError('act() twice without observe()')
    index = len(self._timesteps) - 1
    self._error = self._validator.check_action(action, index)
    if self._error:
      self._error_at_action = True
      return self._error
    # Copy: the caller may reuse its buffer, and the episode is shipped later.
    self._pending_action = tree.map_structure(np.array, action)
    return None

  def observe(self, timestep: dm_env.TimeStep) -> Optional[StepError]:
    """Records the environment's answer to the action passed to act()."""
    self._check_open()
    if self._pending_action is None:
      raise RuntimeError('observe() without act()')
    error = self._accept(timestep)
    if error is None:
      self._actions.append(self._pending_action)
    self._pending_action = None
    return error

  def finish(self) -> Optional[ValidatedEpisode]:
    """The validated episode to pass on, or None when there is none.

    None when the episode was dropped, or is unfinished and clean (a loop
    stopped it early: an incomplete episode is not passed on either).
    """
    if self._finished:
      raise RuntimeError('finish() called twice on one EpisodeGate')
    self._finished = True
    if self._error is None:
      if not self._ended:
        if self._timesteps:
          log.warning(
            'Episode stopped after %d steps without a LAST step; not passing it on',
            len(self._timesteps) - 1,
          )
        return None
      return ValidatedEpisode(self._timesteps, self._actions)
    if self._validator.on_error == 'drop_episode':
      return None
    # Keep the steps before the bad one. A bad action leaves its timestep
    # intact; a bad timestep was never added, and the action that led to it
    # goes with it.
    timesteps = list(self._timesteps)
    actions = list(self._actions)
    if len(actions) < 1:
      log.error(
        'Episode truncated before step %d has no transition left; dropping it',
        self._error.step_index,
      )
      return None
    last = timesteps[-1]
    timesteps[-1] = last._replace(step_type=dm_env.StepType.LAST)
    return ValidatedEpisode(timesteps, actions, error=self._error)

  def _accept(self, timestep: dm_env.TimeStep) -> Optional[StepError]:
    index = len(self._timesteps)
    self._error = self._validator.check_timestep(timestep, index)
    if self._error is None:
      self._timesteps.append(timestep)
      self._ended = timestep.last()
    return self._error

  def _check_open(self) -> None:
    if not self._timesteps and self._error is None:
      raise RuntimeError('begin() the episode first')
    if self.done or self._finished:
      raise RuntimeError('the episode is over; start a new EpisodeGate')


def collect_episode(
  env: dm_env.Environment, policy: Policy, validator: StepValidator, clip_actions: bool = True
) -> Tuple[Optional[ValidatedEpisode], Optional[StepError]]:
  """Runs one episode through an EpisodeGate; returns (episode or None, first error).

  With clip_actions, actions are clipped to a bounded action spec before they
  are checked and sent (as RobotEnvironment would clip them), so the episode
  records the commands that were actually executed; NaN survives clipping
  and is still caught. The episode stops at the first bad step: no bad action
  reaches the environment, and the environment is left mid-episode for the
  next reset() (a RobotEnvironment's watchdog keeps it safe meanwhile).
  """
  spec = validator.spec.actions
  gate = EpisodeGate(validator)
  timestep = env.reset()
  gate.begin(timestep)
  while not gate.done:
    action = policy(timestep.observation)
    if clip_actions:
      action = clip_action(action, spec)
    if gate.act(action) is not None:
      break
    timestep = env.step(action)
    gate.observe(timestep)
  return gate.finish(), gate.error


def _first_error(value: Any, spec: Any, field: str, index: int) -> Optional[StepError]:
  for error in _errors(value, spec, field, index):
    return error
  return None


def _errors(value: Any, spec: Any, field: str, index: int) -> Iterator[StepError]:
  """Errors of `value` against a nest of specs, the first one first."""
  if isinstance(spec, Mapping):
    if not isinstance(value, Mapping) or set(value) != set(spec):
      got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
      yield StepError(field, index, got, f'structure differs from the spec keys {sorted(spec)}')
      return
    for key in spec:
      yield from _errors(value[key], spec[key], f'{field}/{key}', index)
  elif isinstance(spec, (list, tuple)):
    if (
      not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or len(value) != len(spec)
    ):
      yield StepError(
        field,
        index,
        type(value).__name__,
        f'structure differs from the spec (a sequence of {len(spec)})',
      )
      return
    for i, (v, s) in enumerate(zip(value, spec)):
      yield from _errors(v, s, f'{field}/{i}', index)
  else:
    error = _leaf_error(value, spec, field, index)
    if error:
      yield error


def _leaf_error(value: Any, spec: specs.Array, field: str, index: int) -> Optional[StepError]:
  """The first problem of one array against its spec."""
  if value is None:
    return StepError(field, index, None, 'missing')
  try:
    array = np.asarray(value)
  except (ValueError, TypeError) as e:
    return StepError(field, index, type(value).__name__, f'not an array ({e})')
  if array.shape != tuple(spec.shape):
    return StepError(field, index, array.shape, f'shape differs from the spec shape {spec.shape}')
  if isinstance(value, (np.ndarray, np.generic)):
    dtype_ok = array.dtype == spec.dtype
  else:
    # Python numbers carry no precision: accept any of the spec's kind.
    dtype_ok = np.can_cast(array.dtype, spec.dtype, casting='same_kind')
  if not dtype_ok:
    return StepError(field, index, array.dtype, f'dtype differs from the spec dtype {spec.dtype}')
  if array.dtype.kind in 'fc':
    bad = ~np.isfinite(array)
    if np.any(bad):
      return _element_error(field, index, array, bad, 'not finite')
  if isinstance(spec, specs.BoundedArray):
    minimum = np.broadcast_to(spec.minimum, array.shape)
    maximum = np.broadcast_to(spec.maximum, array.shape)
    below = array < minimum
    if np.any(below):
      i = _first_index(below)
      return _element_error(field, index, array, below, f'below the minimum {minimum[i]}')
    above = array > maximum
    if np.any(above):
      i = _first_index(above)
      return _element_error(field, index, array, above, f'above the maximum {maximum[i]}')
  return None


def _first_index(mask: np.ndarray) -> Tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(mask)[0])


def _element_error(
  field: str, index: int, array: np.ndarray, mask: np.ndarray, reason: str
) -> StepError:
  """Names the first offending element, e.g. observation[3]."""
  where = _first_index(mask)
  name = f'{field}[{", ".join(map(str, where))}]' if where else field
  count = int(np.sum(mask))
  if count > 1:
    reason += f' ({count} elements)'
  return StepError(name, index, array[where].item(), reason)


def _short_repr(value: Any) -> str:
  text = repr(value)
  return text if len(text) <= 120 else text[:117] + '...'
