"""dm_control suite environments, wrapped for the learners."""

from typing import Any, List, Tuple

import dm_env
import numpy as np
import tree

from environments.pixels import is_manipulation  # It imports this module only lazily.

DEFAULT_TASK = 'cartpole:swingup'
VARIANT_SEPARATOR = '@'  # environments.variants.SEPARATOR: 'domain:task@param=value,...'.


def valid_tasks() -> List[str]:
  """All 'domain:task' names of the dm_control suite."""
  from dm_control import suite  # Lazy: importing MuJoCo is slow.

  return [f'{d}:{t}' for d, t in suite.ALL_TASKS]


def parse_task(name: str) -> Tuple[str, str]:
  """Splits and checks 'domain:task', or a physics variant of it ('domain:task@param=value,...',
  environments.variants); raises ValueError (one line) listing valid names or parameters."""
  if isinstance(name, str) and VARIANT_SEPARATOR in name:
    from environments import variants  # It imports this module.

    name = variants.parse(name).task  # Checks the parameters too.
  tasks = valid_tasks()
  if not isinstance(name, str) or name not in tasks:
    domains = sorted({t.split(':')[0] for t in tasks})
    domain = name.split(':')[0] if isinstance(name, str) else ''
    if domain in domains:
      options = ', '.join(t for t in tasks if t.startswith(domain + ':'))
      raise ValueError(f'unknown task {name!r}; valid tasks of {domain!r}: {options}')
    raise ValueError(
      f'unknown domain or task {name!r}; use domain:task with domain one of '
      f'{", ".join(domains)} (e.g. {DEFAULT_TASK})'
    )
  domain, task = name.split(':')
  return domain, task


def make_environment(task: str = DEFAULT_TASK, seed: int = 0) -> dm_env.Environment:
  """A seeded suite task (or a physics variant of one, 'cartpole:swingup@pole_length=0.8',
  or a 'manipulation:*_features' task) with one float32 observation vector (the readings
  flattened in sorted key order) and actions in [-1, 1]."""
  from environments.adapt import adapt_to_program

  if is_manipulation(task):
    return adapt_to_program(_manipulation_task(task, seed))
  from dm_control import suite

  domain, task_name = parse_task(task)
  if VARIANT_SEPARATOR in task:
    from environments import variants

    return variants.make(task, seed=seed)
  return adapt_to_program(suite.load(domain, task_name, task_kwargs={'random': seed}))


def _manipulation_task(task: str, seed: int) -> dm_env.Environment:
  """The Jaco arm task from its joint and prop readings; ValueError (one line) for a
  '*_vision' task or an unknown name."""
  from environments import pixels

  pixels.check_task(task, pixels=False)
  return pixels.load_raw(task, seed)


def obs_group_sizes_from_spec(observation_spec: Any) -> Tuple[int, ...]:
  """Group sizes of a nested observation spec, in the order Acme concatenates them.

  `acme.wrappers.ConcatObservationWrapper` flattens the observation dict with
  `tree.flatten`, which sorts dict keys: the flat vector follows the sorted key
  order, not the spec's. Flattening the spec the same way keeps the two aligned.
  """
  return tuple(int(np.prod(spec.shape)) for spec in tree.flatten(observation_spec))


def observation_group_sizes(task: str) -> Tuple[int, ...]:
  """Sizes of the task's observation groups, in the order the flat vector holds them (a
  variant's are its task's: physics variants change no observation)."""
  if is_manipulation(task):
    return obs_group_sizes_from_spec(_manipulation_task(task, 0).observation_spec())
  from dm_control import suite

  domain, task_name = parse_task(task)
  return obs_group_sizes_from_spec(suite.load(domain, task_name).observation_spec())
