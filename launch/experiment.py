"""From an experiment config to the algorithm's builder and environments."""

import functools
from typing import TYPE_CHECKING, Any, Dict, Optional

import dm_env
from acme import specs

from agents import registry
from agents.common.bodies import Body, check_one_body
from environments.suite import make_environment, observation_group_sizes
from launch.config import ExperimentConfig

if TYPE_CHECKING:  # Importing it loads Reverb and TensorFlow: the gateway node needs neither.
  from agents.builder import Builder

EVAL_SEED_OFFSET = 1_000_000


def config_from_dict(values: Dict[str, Any]) -> ExperimentConfig:
  return ExperimentConfig.from_dict(values)


def make_env(config: ExperimentConfig, seed: int, task: Optional[str] = None) -> dm_env.Environment:
  """An environment of `task` (default: the run's `task`)."""
  return make_environment(task or config.task, seed=seed)


@functools.lru_cache(maxsize=16)
def _spec_for(task: str) -> specs.EnvironmentSpec:
  return specs.make_environment_spec(make_environment(task, seed=0))


def environment_spec(config: ExperimentConfig, task: Optional[str] = None) -> specs.EnvironmentSpec:
  """The spec of `task` (default: the run's `task`, the one replay tables and robots use)."""
  return _spec_for(task or config.task)


@functools.lru_cache(maxsize=16)
def _groups_for(task: str):
  return observation_group_sizes(task)


def bodies(config: ExperimentConfig) -> Dict[str, Body]:
  """Every task's Body, in the run's task order; ConfigError when the agent acts on one
  body and the tasks' specs differ."""
  groups = config.agent.needs_observation_groups
  found = {
    task: Body(_spec_for(task), _groups_for(task) if groups else None) for task in config.task_names
  }
  if not config.agent.several_bodies:
    check_one_body(config.algorithm, found)
  return found


def make_builder(config: ExperimentConfig, task: Optional[str] = None) -> 'Builder':
  """The builder of the registered agent `config.algorithm`, for the spec of `task`
  (default: the run's `task`); an agent for several bodies gets every task's too."""
  task = task or config.task
  groups = _groups_for(task) if config.agent.needs_observation_groups else None
  entry = registry.get(config.algorithm)
  spec = environment_spec(config, task)
  if len(config.task_names) == 1:
    return entry.make_builder(config.agent, spec, groups)
  every = bodies(config)  # Checks that a one-body agent's tasks share their spec.
  if not config.agent.several_bodies:
    return entry.make_builder(config.agent, spec, groups)
  return entry.make_builder(config.agent, spec, groups, bodies=every, task=task)
