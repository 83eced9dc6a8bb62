"""From an experiment config to the algorithm's builder and environments."""

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Dict, Optional

import dm_env
from acme import specs

from agents import registry
from agents.common.errors import ConfigError
from environments.pixels import PixelSettings, is_manipulation, make_pixel_environment
from environments.suite import make_environment, observation_group_sizes
from launch.config import ExperimentConfig

if TYPE_CHECKING:  # Importing it loads Reverb and TensorFlow: the gateway node needs neither.
  from agents.builder import Builder

EVAL_SEED_OFFSET = 1_000_000


def config_from_dict(values: Dict[str, Any]) -> ExperimentConfig:
  return ExperimentConfig.from_dict(values)


def pixel_settings(config: ExperimentConfig) -> Optional[PixelSettings]:
  """How a pixel run sees its task; None for a run on state features."""
  if not config.pixels:
    return None
  return PixelSettings(
    size=config.pixel_size,
    camera=config.camera,
    frame_stack=config.frame_stack,
    action_repeat=config.action_repeat,
  )


def _make(task: str, seed: int, pixels: Optional[PixelSettings]) -> dm_env.Environment:
  if pixels is not None:
    return make_pixel_environment(task, seed=seed, settings=pixels)
  return make_environment(task, seed=seed)


def make_env(config: ExperimentConfig, seed: int) -> dm_env.Environment:
  return _make(config.task, seed, pixel_settings(config))


@functools.lru_cache(maxsize=8)
def _spec_for(task: str, pixels: Optional[PixelSettings]) -> specs.EnvironmentSpec:
  # Reading the spec renders nothing: a launcher without a renderer can make it.
  return specs.make_environment_spec(_make(task, 0, pixels))


def environment_spec(config: ExperimentConfig) -> specs.EnvironmentSpec:
  """The task's environment spec: the one every builder of the program is made for."""
  return _spec_for(config.task, pixel_settings(config))


@functools.lru_cache(maxsize=8)
def _groups_for(task: str):
  return observation_group_sizes(task)


def pixel_replay_size(config: ExperimentConfig) -> Optional[int]:
  """A pixel run's replay size: the agent's max_replay_size, lowered so that its
  observations (uint8, one a step) fit in `replay_memory_gb`; None for a state run."""
  pixels = pixel_settings(config)
  replay = getattr(config.agent, 'replay', None)
  if pixels is None or replay is None:
    return None
  step_bytes = pixels.size * pixels.size * 3 * pixels.frame_stack
  fits = int(config.replay_memory_gb * 2**30 // step_bytes)
  return max(min(replay.max_replay_size, fits), replay.min_replay_size)


def make_builder(config: ExperimentConfig) -> 'Builder':
  """The builder of the registered agent `config.algorithm`, for the task's spec."""
  size = pixel_replay_size(config)
  if size is not None and size != config.agent.replay.max_replay_size:
    config = dataclasses.replace(
      config, agent=config.agent.with_overrides({'replay.max_replay_size': size})
    )
  needs_groups = getattr(config.agent, 'needs_observation_groups', False)
  if needs_groups and (config.pixels or is_manipulation(config.task)):
    raise ConfigError(
      f'agent: a network over observation groups (perceiver) takes state features of suite '
      f'tasks only, not pixels={config.pixels} task={config.task!r}'
    )
  groups = _groups_for(config.task) if needs_groups else None
  return registry.get(config.algorithm).make_builder(config.agent, environment_spec(config), groups)
