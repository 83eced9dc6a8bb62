"""The bodies of a multi-task run: each task's environment spec and observation groups.

An agent whose config says `several_bodies` gets them all (`bodies`, in the run's task
order) besides the spec of the task it acts on; every other agent needs one spec for all
tasks, which `check_one_body` says in one line when it is not so.
"""

from typing import Any, Mapping, NamedTuple, Optional, Tuple

from agents.common.errors import ConfigError


class Body(NamedTuple):
  """One task's environment spec (acme.specs.EnvironmentSpec) and observation groups."""

  spec: Any
  obs_group_sizes: Optional[Tuple[int, ...]] = None


def describe(spec: Any) -> str:
  """'observations (5,) float32, actions (1,) float32 in [-1, 1]'."""
  obs, act = spec.observations, spec.actions
  bounds = ''
  if hasattr(act, 'minimum'):
    low, high = act.minimum.min(), act.maximum.max()
    bounds = f' in [{low:g}, {high:g}]'
  return f'observations {obs.shape} {obs.dtype}, actions {act.shape} {act.dtype}{bounds}'


def check_one_body(algorithm: str, bodies: Mapping[str, Body]) -> None:
  """ConfigError naming the tasks and their specs unless every task has the same spec."""
  described = {task: describe(body.spec) for task, body in bodies.items()}
  if len(set(described.values())) > 1:
    listed = '; '.join(f'{task}: {text}' for task, text in described.items())
    raise ConfigError(
      f'tasks: algorithm {algorithm!r} acts on one body, but the tasks differ ({listed}); '
      'give it tasks of one spec, or use an agent for several bodies (--algorithm gato)'
    )
