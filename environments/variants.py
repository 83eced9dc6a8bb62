"""Named physics variants of the dm_control suite tasks: 'domain:task@param=value,...'.

A variant is the suite task with some physical parameters changed, so pre-training and
held-out targets can be named, e.g.

  cartpole:swingup@pole_length=0.8           a shorter pole (the suite's is 1.0 m)
  cartpole:balance@pole_mass=0.3,cart_mass=2
  walker:walk@torso_mass=15                  (the suite's is about 10.7 kg)
  cheetah:run@friction=0.2                   slippery (the suite's geoms have 0.4 to 1)

Values are absolute, in MuJoCo's units (m, kg, m/s^2). The task is loaded as usual, then
`physics.model`'s fields are changed and MuJoCo's derived constants recomputed
(mj_setConst); the model is never reloaded on reset, so the change lasts the episode and
every later one. Which parameters a domain has: `valid_parameters(domain)`.

Wherever the program takes a task name (`--task cartpole:swingup@pole_length=0.8`), the
suite factory (environments.suite.make_environment, parse_task) hands a variant's name
here: `parse` checks it, `make` builds the environment.
"""

import dataclasses
import math
from typing import Callable, Dict, Tuple

import dm_env
import numpy as np

from environments import suite as suite_lib

SEPARATOR = suite_lib.VARIANT_SEPARATOR


def _body_ids(physics, prefix: str) -> Tuple[int, ...]:
  model = physics.model
  names = [model.id2name(i, 'body') for i in range(model.nbody)]
  return tuple(i for i, n in enumerate(names) if n == prefix or n.startswith(prefix + '_'))


def _set_mass(physics, body: str, mass: float) -> None:
  """Every body named `body` (or `body_<n>`) gets this mass; its inertia scales with it."""
  model = physics.model
  for i in _body_ids(physics, body):
    model.body_inertia[i] *= mass / model.body_mass[i]
    model.body_mass[i] = mass


def _read_mass(body: str) -> Callable:
  return lambda physics: float(physics.model.body_mass[_body_ids(physics, body)[0]])


def capsule_inertia(mass: float, radius: float, length: float) -> np.ndarray:
  """Principal inertia (about the centre; x, y across the axis, z along it) of a uniform
  capsule of this mass, radius and cylinder length: a cylinder plus two hemispheres, the
  mass split by volume, the caps moved to the ends (parallel axes)."""
  cap_mass = mass * 4 * radius / (4 * radius + 3 * length)
  cylinder_mass = mass - cap_mass
  across = cylinder_mass * (3 * radius**2 + length**2) / 12
  # The two caps: a sphere's 2/5 m r^2, plus each half's offset from the centre.
  across += cap_mass * 2 * radius**2 / 5 + cap_mass * length * (3 * radius + 2 * length) / 8
  along = cylinder_mass * radius**2 / 2 + cap_mass * 2 * radius**2 / 5
  return np.array([across, across, along])


def _set_pole_length(physics, length: float) -> None:
  """Every cartpole pole gets this length, hinged at one end, its mass kept."""
  model = physics.model
  poles = _body_ids(physics, 'pole')
  for body in poles:
    if model.body_parentid[body] in poles:  # A pole on a pole hangs from its tip.
      model.body_pos[body] = [0.0, 0.0, length]
    geom = model.name2id(model.id2name(body, 'body'), 'geom')
    radius = float(model.geom_size[geom][0])
    # The capsule runs from the hinge (the body's origin) along +z: its centre, and the
    # body's centre of mass, sit at half the length.
    model.geom_size[geom][1] = length / 2
    model.geom_pos[geom] = [0.0, 0.0, length / 2]
    model.body_ipos[body] = [0.0, 0.0, length / 2]
    model.body_inertia[body] = capsule_inertia(float(model.body_mass[body]), radius, length)


def _read_pole_length(physics) -> float:
  model = physics.model
  geom = model.name2id(model.id2name(_body_ids(physics, 'pole')[0], 'body'), 'geom')
  return 2 * float(model.geom_size[geom][1])


def _set_friction(physics, friction: float) -> None:
  # Contacts take the larger friction of their two geoms, so setting only the floor
  # could not make anything more slippery: every geom gets it.
  physics.model.geom_friction[:, 0] = friction


def _read_friction(physics) -> float:
  return float(np.max(physics.model.geom_friction[:, 0]))


def _set_gravity(physics, gravity: float) -> None:
  physics.model.opt.gravity[:] = [0.0, 0.0, -gravity]


def _read_gravity(physics) -> float:
  return float(-physics.model.opt.gravity[2])


@dataclasses.dataclass(frozen=True)
class _Parameter:
  apply: Callable
  read: Callable
  doc: str


_GENERIC = {
  'friction': _Parameter(_set_friction, _read_friction, 'sliding friction of every geom'),
  'gravity': _Parameter(_set_gravity, _read_gravity, 'downward gravity, m/s^2'),
}
_TORSO = {
  'torso_mass': _Parameter(
    lambda p, v: _set_mass(p, 'torso', v), _read_mass('torso'), 'torso mass, kg'
  ),
}
_DOMAINS: Dict[str, Dict[str, _Parameter]] = {
  'cartpole': {
    'pole_length': _Parameter(_set_pole_length, _read_pole_length, 'each pole, m'),
    'pole_mass': _Parameter(lambda p, v: _set_mass(p, 'pole', v), _read_mass('pole'), 'kg'),
    'cart_mass': _Parameter(lambda p, v: _set_mass(p, 'cart', v), _read_mass('cart'), 'kg'),
  },
  'walker': _TORSO,
  'cheetah': _TORSO,
  'hopper': _TORSO,
}


def valid_parameters(domain: str) -> Tuple[str, ...]:
  """The physical parameters a variant of this domain may set, sorted."""
  return tuple(sorted({**_GENERIC, **_DOMAINS.get(domain, {})}))


def _parameter(domain: str, name: str) -> _Parameter:
  return {**_GENERIC, **_DOMAINS.get(domain, {})}[name]


@dataclasses.dataclass(frozen=True)
class Variant:
  """A suite task and the physical parameters changed in it (empty: the task as it is)."""

  task: str
  parameters: Tuple[Tuple[str, float], ...] = ()

  @property
  def domain(self) -> str:
    return self.task.split(':')[0]

  @property
  def name(self) -> str:
    """The name that parses back to this variant."""
    if not self.parameters:
      return self.task
    return self.task + SEPARATOR + ','.join(f'{k}={v:g}' for k, v in self.parameters)


def parse(name: str) -> Variant:
  """'domain:task[@param=value,...]' -> Variant; a ValueError (one line) names what is wrong."""
  if not isinstance(name, str):
    raise ValueError(f'a task variant is a string, got {name!r}')
  task, _, spec = name.partition(SEPARATOR)
  domain, _ = suite_lib.parse_task(task)
  valid = valid_parameters(domain)
  parameters = {}
  for item in filter(None, (s.strip() for s in spec.split(','))):
    key, eq, text = (s.strip() for s in item.partition('='))
    if key not in valid:
      raise ValueError(
        f'unknown physics parameter {key!r} for {domain} in {name!r}; valid: {", ".join(valid)}'
      )
    try:
      value = float(text) if eq else math.nan
    except ValueError:
      value = math.nan
    if not math.isfinite(value) or value <= 0:
      raise ValueError(f'{key} in {name!r} must be a positive number, as {key}=0.5; got {text!r}')
    if key in parameters:
      raise ValueError(f'{key} is set twice in {name!r}')
    parameters[key] = value
  if spec.strip() and not parameters:
    raise ValueError(f'nothing after {SEPARATOR!r} in {name!r}; e.g. {task}@{valid[0]}=0.5')
  return Variant(task, tuple(sorted(parameters.items())))


def apply(physics, variant: Variant) -> None:
  """Changes `physics.model` to the variant's parameters (the task's physics, in place)."""
  from dm_control.mujoco.wrapper.mjbindings import mjlib  # Lazy: importing MuJoCo is slow.

  for key, value in variant.parameters:
    _parameter(variant.domain, key).apply(physics, value)
  # Masses, inertias and geometry feed constants MuJoCo derives once at compile time
  # (subtree masses, the inverse weights its solver scales by): derive them again.
  mjlib.mj_setConst(physics.model.ptr, physics.data.ptr)
  physics.forward()


def read(physics, domain: str, key: str) -> float:
  """The current value of one of the domain's parameters (valid_parameters) in `physics`."""
  if key not in valid_parameters(domain):
    raise ValueError(
      f'unknown physics parameter {key!r} for {domain}; valid: '
      f'{", ".join(valid_parameters(domain))}'
    )
  return _parameter(domain, key).read(physics)


def load(name: str, seed: int = 0):
  """The variant's raw dm_control environment (dict observations, the task's own action
  bounds), e.g. to read its physics."""
  from dm_control import suite

  variant = parse(name)
  domain, task = suite_lib.parse_task(variant.task)
  env = suite.load(domain, task, task_kwargs={'random': seed})
  apply(env.physics, variant)
  return env


def make(name: str, seed: int = 0) -> dm_env.Environment:
  """The variant as the program's environments are (see environments.suite.make_environment)."""
  from environments.adapt import adapt_to_program

  return adapt_to_program(load(name, seed))
