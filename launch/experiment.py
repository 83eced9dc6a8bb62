"""From an experiment config to the algorithm's builder and environments."""

import functools
from typing import TYPE_CHECKING, Any, Dict

import dm_env
from acme import specs

from agents import registry
from environments.suite import make_environment, observation_group_sizes
from launch.config import ExperimentConfig

if TYPE_CHECKING:  # Importing it loads Reverb and TensorFlow: the gateway node needs neither.
  from agents.builder import Builder

EVAL_SEED_OFFSET = 1_000_000


def config_from_dict(values: Dict[str, Any]) -> ExperimentConfig:
  return ExperimentConfig.from_dict(values)


def make_env(config: ExperimentConfig, seed: int) -> dm_env.Environment:
  return make_environment(config.task, seed=seed)


@functools.lru_cache(maxsize=8)
def _spec_for(task: str) -> specs.EnvironmentSpec:
  return specs.make_environment_spec(make_environment(task, seed=0))


def environment_spec(config: ExperimentConfig) -> specs.EnvironmentSpec:
  """The task's environment spec: the one every builder of the program is made for."""
  return _spec_for(config.task)


@functools.lru_cache(maxsize=8)
def _groups_for(task: str):
  return observation_group_sizes(task)


def make_builder(config: ExperimentConfig) -> 'Builder':
  """The builder of the registered agent `config.algorithm`, for the task's spec."""
  groups = _groups_for(config.task) if config.agent.needs_observation_groups else None
  return registry.get(config.algorithm).make_builder(config.agent, environment_spec(config), groups)
