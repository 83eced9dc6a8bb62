"""Episodes over the wire between an attached robot and the program, as plain data.

`EPISODE_KEY` names an episode for good, so the program stores each exactly once.
What the program requires of an episode before it stores it (everything the learner
relies on later), cheapest first: `check_data` (sizes, before anything is copied or
converted), `check_episode` (shapes, dtypes, values against the spec) and
`check_metadata` (a schema). They return a reason, or None; they do not depend on the
transport that carried the episode.
"""

import dataclasses
import json
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import dm_env
import numpy as np
from acme import specs

from launch.store.episodes import Episode

# Metadata: '<outbox token>:<episode id in the outbox>', unique across outboxes (a
# wiped and recreated outbox has a new token, so its ids are never taken for resends).
EPISODE_KEY = 'robot_episode_id'

ARRAY_FIELDS = ('observations', 'actions', 'rewards', 'discounts')
# Sent when the episode has it: a camera run's state features beside its images
# (--pixel_features; the program's observations are then {'features', 'pixels'}).
FEATURES_FIELD = 'observation_features'
ALL_ARRAY_FIELDS = ARRAY_FIELDS + (FEATURES_FIELD,)


def episode_nbytes(episode: Episode) -> int:
  """Bytes of the episode's arrays, the features beside its images included."""
  arrays = [getattr(episode, field) for field in ARRAY_FIELDS]
  if episode.observation_features is not None:
    arrays.append(episode.observation_features)
  return sum(getattr(a, 'nbytes', 0) for a in arrays)


@dataclasses.dataclass(frozen=True)
class EpisodeLimits:
  """The largest episode the program takes from a robot."""

  max_steps: int = 100_000
  max_bytes: int = 64 << 20  # Array data, all four fields together.
  max_metadata_bytes: int = 16 << 10  # As JSON.


def episode_to_data(episode: Episode) -> Dict[str, Any]:
  data = {
    'observations': np.asarray(episode.observations),
    'actions': np.asarray(episode.actions),
    'rewards': np.asarray(episode.rewards),
    'discounts': np.asarray(episode.discounts),
    'metadata': dict(episode.metadata),
  }
  if episode.observation_features is not None:
    data[FEATURES_FIELD] = np.asarray(episode.observation_features)
  return data


def episode_from_data(data: Mapping[str, Any]) -> Episode:
  features = data.get(FEATURES_FIELD)
  return Episode(
    observations=np.asarray(data['observations']),
    actions=np.asarray(data['actions']),
    rewards=np.asarray(data['rewards']),
    discounts=np.asarray(data['discounts']),
    metadata=dict(data['metadata']),
    observation_features=None if features is None else np.asarray(features),
  )


def episode_timesteps(
  episode: Episode,
) -> Tuple[dm_env.TimeStep, List[Tuple[np.ndarray, dm_env.TimeStep]]]:
  """The FIRST timestep and the (action, next timestep) pairs an adder is fed."""
  steps = episode.length
  first = dm_env.restart(episode.observation_at(0))
  rest = []
  for t in range(steps):
    kind = dm_env.StepType.LAST if t == steps - 1 else dm_env.StepType.MID
    rest.append(
      (
        episode.actions[t],
        dm_env.TimeStep(
          kind, episode.rewards[t], episode.discounts[t], episode.observation_at(t + 1)
        ),
      )
    )
  return first, rest


def check_data(data: Any, limits: EpisodeLimits) -> Optional[str]:
  """Why `data` is not an episode within `limits`, or None; looks only at sizes and types.

  Arrays must already be numpy arrays of a plain numeric or bool dtype (nothing is
  converted here), so this costs nothing however big the arrays are.
  """
  if not isinstance(data, Mapping):
    return f'not an episode: expected a mapping, got {type(data).__name__}'
  missing = [k for k in ARRAY_FIELDS + ('metadata',) if k not in data]
  if missing:
    return f'not an episode: missing {", ".join(missing)}'
  extra = sorted(str(k) for k in data if k not in ALL_ARRAY_FIELDS + ('metadata',))
  if extra:
    return f'not an episode: unexpected field(s) {", ".join(extra)}'
  total = 0
  for field in (f for f in ALL_ARRAY_FIELDS if f in data):
    value = data[field]
    if not isinstance(value, np.ndarray):
      return f'{field}: expected an array, got {type(value).__name__}'
    if value.dtype.kind not in 'biuf':
      return f'{field}: dtype {value.dtype} is not a plain numeric dtype'
    if value.ndim == 0:
      return f'{field}: expected an array with a time axis, got a scalar'
    total += value.nbytes
  steps = data['actions'].shape[0]
  if steps > limits.max_steps:
    return f'actions: {steps} steps, more than the limit of {limits.max_steps}'
  if total > limits.max_bytes:
    return f'{total} bytes of arrays, more than the limit of {limits.max_bytes}'
  metadata = data['metadata']
  if not isinstance(metadata, dict):
    return f'metadata: expected a dict, got {type(metadata).__name__}'
  try:
    size = len(json.dumps(metadata, allow_nan=False))
  except (TypeError, ValueError, RecursionError) as e:
    return f'metadata: not plain JSON ({e})'
  if size > limits.max_metadata_bytes:
    return f'metadata: {size} bytes as JSON, more than the limit of {limits.max_metadata_bytes}'
  return None


def _describe(field: str, value: np.ndarray, step: int, index: Tuple[int, ...]) -> str:
  where = f'{field}[{", ".join(map(str, index))}]' if index else field
  return f'step {step}: {where} = {value[(step,) + index]}'


def _first(mask: np.ndarray) -> Optional[Tuple[int, Tuple[int, ...]]]:
  """(step, index within the step) of the first True in `mask`, or None."""
  if not mask.any():
    return None
  where = tuple(int(i) for i in np.argwhere(mask)[0])
  return where[0], where[1:]


def check_episode(episode: Episode, spec: specs.EnvironmentSpec) -> Optional[str]:
  """Why `episode` does not fit a program with `spec` (one observation array, or an image
  with state features beside it, and an action vector), or None.

  Shapes and dtypes exactly as the spec says, every value finite, discounts in
  [0, 1], and observations, actions and rewards within the spec's bounds where it
  has them. A reason names the field, and the step for a bad value.
  """
  steps = episode.actions.shape[0] if episode.actions.ndim else 0
  observations, features = spec.observations, None
  if isinstance(observations, Mapping):  # {'features', 'pixels'}: a camera with features.
    observations, features = observations['pixels'], observations['features']
  if (episode.observation_features is None) != (features is None):
    return (
      f'{FEATURES_FIELD}: the program observes images with state features beside them; '
      'the episode has none'
      if features is not None
      else f'{FEATURES_FIELD}: the program takes no state features beside its observations'
    )
  expected = {
    'observations': ((steps + 1,) + tuple(observations.shape), observations.dtype),
    'actions': ((steps,) + tuple(spec.actions.shape), spec.actions.dtype),
    'rewards': ((steps,) + tuple(spec.rewards.shape), spec.rewards.dtype),
    'discounts': ((steps,) + tuple(spec.discounts.shape), spec.discounts.dtype),
  }
  if features is not None:
    expected[FEATURES_FIELD] = ((steps + 1,) + tuple(features.shape), features.dtype)
  for field, (shape, dtype) in expected.items():
    value = getattr(episode, field)
    if value.shape != shape or value.dtype != np.dtype(dtype):
      return (
        f'{field}: expected shape {shape} and dtype {np.dtype(dtype).name}, got '
        f'{value.shape} {value.dtype}'
      )
  if steps < 1:
    return 'actions: an episode needs at least one step'
  bounds = {
    'observations': observations,
    'actions': spec.actions,
    'rewards': spec.rewards,
    'discounts': specs.BoundedArray(spec.discounts.shape, spec.discounts.dtype, 0.0, 1.0),
  }
  if features is not None:
    bounds[FEATURES_FIELD] = features
  for field, field_spec in bounds.items():
    value = getattr(episode, field)
    if value.dtype.kind in 'fc':
      bad = _first(~np.isfinite(value))
      if bad is not None:
        return f'{_describe(field, value, *bad)}: not finite'
    if isinstance(field_spec, specs.BoundedArray):
      low, high = field_spec.minimum, field_spec.maximum
      bad = _first((value < low) | (value > high))
      if bad is not None:
        low, high = np.broadcast_to(low, value.shape[1:]), np.broadcast_to(high, value.shape[1:])
        index = bad[1]
        return f'{_describe(field, value, *bad)}: outside the bounds [{low[index]}, {high[index]}]'
  return None


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_string(value: Any) -> bool:
  return isinstance(value, str) and len(value) <= 1024


# What the learner and the tools read from a robot's metadata (attach writes all of
# these), and the type each must have. The success label follows agents.mpo.labels.
METADATA_SCHEMA = {
  'success': ('true / false (or 1 / 0)', lambda v: isinstance(v, bool) or v in (0, 1)),
  'source': ('a string', _is_string),
  'robot': ('a string', _is_string),
  'task': ('a string', _is_string),
  'host': ('a string', _is_string),
  EPISODE_KEY: ('a non-empty string', lambda v: _is_string(v) and bool(v)),
  'invalid_step': ('a string', _is_string),
  'policy_version': (
    '[first, last] learner steps (ints >= 0, first <= last)',
    lambda v: (
      isinstance(v, list)
      and len(v) == 2
      and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
      and v[0] <= v[1]
    ),
  ),
  'control_hz': ('a positive number', lambda v: _is_number(v) and v > 0),
  'episode_start_time': ('a number', _is_number),
  'buffered_time': ('a number', _is_number),
  'sent_time': ('a number', _is_number),
}


def check_metadata(metadata: Mapping[str, Any]) -> Optional[str]:
  """Why `metadata` does not fit the schema, or None.

  Known keys (METADATA_SCHEMA) must have their types; any other key may hold only a
  plain JSON scalar (a string of at most 1024 characters, a finite number, a bool or
  null): nested data has no reader in the program, so it is refused rather than kept.
  """
  for key, value in metadata.items():
    if not isinstance(key, str) or not key or len(key) > 64:
      return f'metadata: key {key!r}: expected a string of 1-64 characters'
    if key in METADATA_SCHEMA:
      what, ok = METADATA_SCHEMA[key]
      try:
        good = bool(ok(value))
      except TypeError:
        good = False
      if not good:
        return f'metadata[{key!r}] = {value!r:.100}: expected {what}'
    elif not (value is None or isinstance(value, bool) or _is_number(value) or _is_string(value)):
      return f'metadata[{key!r}] = {value!r:.100}: expected a JSON scalar (string, number, bool)'
  return None
