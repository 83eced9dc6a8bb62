"""The environment spec as plain data (strict JSON: the gateway carries it), and the
comparison that names every differing field: both sides, robot and program, use it.

Bounds that are not finite (an unbounded observation's -inf and inf) are written as the
strings '-inf', 'inf' and 'nan', since JSON has no such numbers.
"""

from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
from acme import specs

from agents.common.errors import UserError

SPEC_FIELDS = ('observations', 'actions', 'rewards', 'discounts')
# Observations and actions must match in every respect; rewards and discounts
# in what the data carries (their names and bounds are conventions).
_COMPARED = {
  'observations': ('name', 'shape', 'dtype', 'bounds'),
  'actions': ('name', 'shape', 'dtype', 'bounds'),
  'rewards': ('shape', 'dtype'),
  'discounts': ('shape', 'dtype'),
}


class SpecMismatchError(UserError):
  """The environment's spec differs from the program's; the message names every field."""


def spec_to_data(spec: specs.EnvironmentSpec) -> Dict[str, Any]:
  """An EnvironmentSpec as nested dicts and lists of plain values."""
  return {field: _nest_to_data(getattr(spec, field)) for field in SPEC_FIELDS}


def _nest_to_data(nest: Any) -> Dict[str, Any]:
  if isinstance(nest, Mapping):
    return {'kind': 'dict', 'items': {str(k): _nest_to_data(v) for k, v in nest.items()}}
  if isinstance(nest, (list, tuple)):
    return {'kind': 'list', 'items': [_nest_to_data(v) for v in nest]}
  data = {
    'kind': 'array',
    'name': nest.name,
    'shape': [int(d) for d in nest.shape],
    'dtype': np.dtype(nest.dtype).name,
  }
  if isinstance(nest, specs.BoundedArray):
    data.update(minimum=_bound_to_data(nest.minimum), maximum=_bound_to_data(nest.maximum))
  return data


def _bound_to_data(bound: Any) -> Any:
  def plain(value: Any) -> Any:
    if isinstance(value, list):
      return [plain(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
      return str(value)  # 'inf', '-inf' or 'nan'.
    return value

  return plain(np.asarray(bound).tolist())


def _bound_from_data(data: Any, dtype: np.dtype) -> np.ndarray:
  """The inverse of `_bound_to_data`; ValueError for anything but numbers and those strings."""

  def number(value: Any) -> Any:
    if isinstance(value, list):
      return [number(v) for v in value]
    if isinstance(value, str):
      if value not in ('inf', '-inf', 'nan'):
        raise ValueError(f'a bound {value!r:.40} is not a number')
      return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ValueError(f'a bound {value!r:.40} is not a number')
    return value

  return np.asarray(number(data), dtype)


def spec_from_data(data: Mapping[str, Any]) -> specs.EnvironmentSpec:
  """The inverse of `spec_to_data`."""
  return specs.EnvironmentSpec(**{field: _nest_from_data(data[field]) for field in SPEC_FIELDS})


def _nest_from_data(data: Mapping[str, Any]) -> Any:
  if data['kind'] == 'dict':
    return {k: _nest_from_data(v) for k, v in data['items'].items()}
  if data['kind'] == 'list':
    return [_nest_from_data(v) for v in data['items']]
  shape, dtype = tuple(data['shape']), np.dtype(data['dtype'])
  if 'minimum' in data:
    return specs.BoundedArray(
      shape,
      dtype,
      _bound_from_data(data['minimum'], dtype),
      _bound_from_data(data['maximum'], dtype),
      name=data['name'],
    )
  return specs.Array(shape, dtype, name=data['name'])


def spec_differences(program: Mapping[str, Any], environment: Mapping[str, Any]) -> List[str]:
  """Every field where `environment`'s spec differs from `program`'s (both as plain data).

  Each entry reads e.g. 'observations.shape: program (5,), environment (3,)'.
  """
  differences: List[str] = []
  for field in SPEC_FIELDS:
    _compare(program[field], environment[field], field, _COMPARED[field], differences)
  return differences


def _describe(data: Mapping[str, Any]) -> str:
  if data['kind'] == 'dict':
    return f'a dict with keys {sorted(data["items"])}'
  if data['kind'] == 'list':
    return f'a sequence of {len(data["items"])}'
  return 'one array'


def _compare(
  program: Mapping[str, Any],
  environment: Mapping[str, Any],
  path: str,
  attributes: Tuple[str, ...],
  out: List[str],
) -> None:
  if program['kind'] != environment['kind'] or (
    program['kind'] == 'list' and len(program['items']) != len(environment['items'])
  ):
    out.append(f'{path}: program {_describe(program)}, environment {_describe(environment)}')
    return
  if program['kind'] == 'dict':
    p_keys, e_keys = set(program['items']), set(environment['items'])
    if p_keys != e_keys:
      out.append(f'{path}: keys program {sorted(p_keys)}, environment {sorted(e_keys)}')
    for key in sorted(p_keys & e_keys):
      _compare(program['items'][key], environment['items'][key], f'{path}/{key}', attributes, out)
    return
  if program['kind'] == 'list':
    for i, (p, e) in enumerate(zip(program['items'], environment['items'])):
      _compare(p, e, f'{path}/{i}', attributes, out)
    return
  for attribute in attributes:
    if attribute == 'shape':
      p, e = tuple(program['shape']), tuple(environment['shape'])
    elif attribute == 'bounds':
      _compare_bounds(program, environment, path, out)
      continue
    else:
      p, e = program[attribute], environment[attribute]
    if p != e:
      out.append(f'{path}.{attribute}: program {p!r}, environment {e!r}')


def _compare_bounds(
  program: Mapping[str, Any], environment: Mapping[str, Any], path: str, out: List[str]
) -> None:
  p_bounded, e_bounded = 'minimum' in program, 'minimum' in environment
  if p_bounded != e_bounded:
    kind = lambda bounded: 'bounded' if bounded else 'unbounded'
    out.append(f'{path}.bounds: program {kind(p_bounded)}, environment {kind(e_bounded)}')
    return
  if not p_bounded:
    return
  for which in ('minimum', 'maximum'):
    p = _bound_from_data(program[which], np.float64)
    e = _bound_from_data(environment[which], np.float64)
    try:
      shape = tuple(program['shape'])
      same = np.array_equal(np.broadcast_to(p, shape), np.broadcast_to(e, shape))
    except ValueError:  # The shapes differ too (reported already): compare as given.
      same = np.array_equal(p, e)
    if not same:
      out.append(f'{path}.{which}: program {program[which]}, environment {environment[which]}')


def check_spec_matches(
  program: Mapping[str, Any],
  environment: Mapping[str, Any],
  what: str = "the environment's spec does not match the program's",
) -> None:
  """Raises SpecMismatchError naming each differing field, if there is one.

  The message reads '<what> in N field(s): <field>: program <value>,
  environment <value>; ...'.
  """
  differences = spec_differences(program, environment)
  if differences:
    raise SpecMismatchError(f'{what} in {len(differences)} field(s): ' + '; '.join(differences))
