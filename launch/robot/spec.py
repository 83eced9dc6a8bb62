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
# What matters is what the data carries and what the checks enforce: shapes, dtypes and
# finite bounds (an action's range above all). Names are labels, and an infinite bound
# is no bound: neither is compared. A reward or discount is a number: the attach process
# stores it in the program's dtype (dm_env's default spec says float64), so only its
# shape must match; its bounds are conventions (discounts are checked in [0, 1] anyway).
_COMPARED = {
  'observations': ('shape', 'dtype', 'bounds'),
  'actions': ('shape', 'dtype', 'bounds'),
  'rewards': ('shape',),
  'discounts': ('shape',),
}
SPEC_HELP = (
  'names are not compared, and an infinite bound counts as none; README "Attaching robots" '
  'shows a wrapper (environments.adapt.adapt_to_program) that turns a typical robot '
  'environment into this'
)


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


def _finite_bounds(data: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
  """(minimum, maximum) over the array's shape; unbounded (or infinite) reads as +-inf."""
  shape = tuple(data['shape'])
  if 'minimum' not in data:
    return np.full(shape, -np.inf), np.full(shape, np.inf)
  low = _bound_from_data(data['minimum'], np.float64)
  high = _bound_from_data(data['maximum'], np.float64)
  return np.broadcast_to(low, shape), np.broadcast_to(high, shape)


def _show_bound(bound: np.ndarray) -> str:
  """A bound for a message: one number when all its elements agree, 'none' if infinite."""
  flat = np.unique(bound)
  if flat.size == 1:
    return 'none' if np.isinf(flat[0]) else f'{flat[0]:g}'
  return '[' + ', '.join('none' if np.isinf(v) else f'{v:g}' for v in bound.ravel()) + ']'


def _compare_bounds(
  program: Mapping[str, Any], environment: Mapping[str, Any], path: str, out: List[str]
) -> None:
  if tuple(program['shape']) != tuple(environment['shape']):
    return  # Reported already: the bounds cannot line up.
  try:
    p_low, p_high = _finite_bounds(program)
    e_low, e_high = _finite_bounds(environment)
  except ValueError as e:  # A bound whose shape does not fit its array's.
    out.append(f'{path}.bounds: {e}')
    return
  for which, p, e in (('minimum', p_low, e_low), ('maximum', p_high, e_high)):
    if not np.array_equal(p, e):
      out.append(f'{path}.{which}: program {_show_bound(p)}, environment {_show_bound(e)}')


def describe_spec(data: Mapping[str, Any]) -> List[str]:
  """The spec (plain data) field by field, e.g. 'actions: float32 (1,), in [-1, 1]'."""
  lines: List[str] = []

  def walk(node: Mapping[str, Any], path: str) -> None:
    if node['kind'] == 'dict':
      for key in sorted(node['items']):
        walk(node['items'][key], f'{path}/{key}')
      return
    if node['kind'] == 'list':
      for i, item in enumerate(node['items']):
        walk(item, f'{path}/{i}')
      return
    text = f'{path}: {node["dtype"]} {tuple(node["shape"])}'
    low, high = _finite_bounds(node)
    if np.isfinite(low).any() or np.isfinite(high).any():
      text += f', in [{_show_bound(low)}, {_show_bound(high)}]'
    elif path.split('/')[0] in ('observations', 'actions'):
      text += ', unbounded'
    lines.append(text)

  for field in SPEC_FIELDS:
    walk(data[field], field)
  return lines


def check_spec_matches(
  program: Mapping[str, Any],
  environment: Mapping[str, Any],
  what: str = "the environment's spec does not match the program's",
) -> None:
  """Raises SpecMismatchError naming each differing field, if there is one.

  The message's first line reads '<what> in N field(s): <field>: program <value>,
  environment <value>; ...'; the program's whole spec follows, one field a line.
  """
  differences = spec_differences(program, environment)
  if differences:
    expected = '\n'.join(f'  {line}' for line in describe_spec(program))
    raise SpecMismatchError(
      f'{what} in {len(differences)} field(s): '
      + '; '.join(differences)
      + f"\nthe program's spec ({SPEC_HELP}):\n{expected}"
    )
