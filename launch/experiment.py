"""From an experiment config to the algorithm's builder and environments."""

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Dict, Optional

import dm_env
from acme import specs

from agents import registry
from agents.common.bodies import Body, check_one_body
from agents.common.errors import ConfigError
from environments.pixels import PixelSettings, make_pixel_environment
from environments.suite import make_environment, observation_group_sizes
from launch.borrowed_policy import lend_policy
from launch.config import ExperimentConfig

if TYPE_CHECKING:  # Importing it loads Reverb and TensorFlow: the gateway node needs neither.
  from agents.builder import Builder

EVAL_SEED_OFFSET = 1_000_000


def config_from_dict(values: Dict[str, Any]) -> ExperimentConfig:
  return ExperimentConfig.from_dict(values)


def pixel_settings(config: ExperimentConfig) -> Optional[PixelSettings]:
  """How a pixel run sees its tasks; None for a run on state features."""
  if not config.pixels:
    return None
  return PixelSettings(
    size=config.pixel_size,
    camera=config.camera,
    frame_stack=config.frame_stack,
    action_repeat=config.action_repeat,
    features=config.pixel_features,
  )


def _make(task: str, seed: int, pixels: Optional[PixelSettings]) -> dm_env.Environment:
  if pixels is not None:
    return make_pixel_environment(task, seed=seed, settings=pixels)
  return make_environment(task, seed=seed)


def make_env(config: ExperimentConfig, seed: int, task: Optional[str] = None) -> dm_env.Environment:
  """An environment of `task` (default: the run's `task`), through its camera in a pixel run."""
  return _make(task or config.task, seed, pixel_settings(config))


@functools.lru_cache(maxsize=16)
def _spec_for(task: str, pixels: Optional[PixelSettings]) -> specs.EnvironmentSpec:
  # Reading the spec renders nothing: a launcher without a renderer can make it.
  return specs.make_environment_spec(_make(task, 0, pixels))


def environment_spec(config: ExperimentConfig, task: Optional[str] = None) -> specs.EnvironmentSpec:
  """The spec of `task` (default: the run's `task`, the one replay tables and robots use)."""
  return _spec_for(task or config.task, pixel_settings(config))


@functools.lru_cache(maxsize=16)
def _groups_for(task: str):
  return observation_group_sizes(task)


def bodies(config: ExperimentConfig) -> Dict[str, Body]:
  """Every task's Body, in the run's task order; ConfigError when the agent acts on one
  body and the tasks' specs differ."""
  groups = config.agent.needs_observation_groups and not config.pixels
  pixels = pixel_settings(config)
  found = {
    task: Body(_spec_for(task, pixels), _groups_for(task) if groups else None)
    for task in config.task_names
  }
  if not config.agent.several_bodies:
    check_one_body(config.algorithm, found)
  return found


def pixel_replay_size(config: ExperimentConfig) -> Optional[int]:
  """A pixel run's replay size: the agent's max_replay_size, lowered so that its
  observations (uint8, one a step) fit in `replay_memory_gb`; None for a state run."""
  pixels = pixel_settings(config)
  replay = getattr(config.agent, 'replay', None)
  if pixels is None or replay is None:
    return None
  step_bytes = pixels.size * pixels.size * 3 * pixels.frame_stack
  if pixels.features:
    step_bytes += 4 * int(_spec_for(config.task, pixels).observations['features'].shape[0])
  fits = int(config.replay_memory_gb * 2**30 // step_bytes)
  return max(min(replay.max_replay_size, fits), replay.min_replay_size)


def agent_for_action_repeat(config: ExperimentConfig) -> Any:
  """The agent config with its reward bounds for rewards summed over action_repeat steps.

  An agent's min_reward / max_reward bound one step of the task (dm_control's are in
  [0, 1]); a pixel run's action is action_repeat steps whose rewards are summed, so a
  critic's support must be that many times wider, or it clips the values of good states
  alike (it did: cartpole:swingup from pixels at action repeat 8 stalled at ~300).
  """
  agent = config.agent
  repeat = config.action_repeat if config.pixels else 1
  if repeat == 1 or not hasattr(agent, 'max_reward'):
    return agent
  return agent.with_overrides(
    {'min_reward': agent.min_reward * repeat, 'max_reward': agent.max_reward * repeat}
  )


def check_pixel_agent(config: ExperimentConfig) -> None:
  """ConfigError (one line) for a pixel run of an agent that takes state features only."""
  if config.pixels and not config.agent.takes_pixels:
    takers = [n for n in registry.names() if registry.get(n).config_class().takes_pixels]
    raise ConfigError(
      f'algorithm={config.algorithm} takes state features only, not camera images '
      f'(--pixels); agents that do: {", ".join(takers)}'
    )


def make_builder(config: ExperimentConfig, task: Optional[str] = None) -> 'Builder':
  """The builder of the registered agent `config.algorithm`, for the spec of `task`
  (default: the run's `task`); an agent for several bodies gets every task's too."""
  check_pixel_agent(config)
  config = dataclasses.replace(config, agent=agent_for_action_repeat(config))
  size = pixel_replay_size(config)
  if size is not None and size != config.agent.replay.max_replay_size:
    config = dataclasses.replace(
      config, agent=config.agent.with_overrides({'replay.max_replay_size': size})
    )
  # A pixel run's groups are its image's patches, which the builder cuts.
  needs_groups = getattr(config.agent, 'needs_observation_groups', False) and not config.pixels
  task = task or config.task
  groups = _groups_for(task) if needs_groups else None
  entry = registry.get(config.algorithm)
  spec = environment_spec(config, task)
  if len(config.task_names) == 1 or not config.agent.several_bodies:
    if len(config.task_names) > 1:
      bodies(config)  # Checks that a one-body agent's tasks share their spec.
    builder = entry.make_builder(config.agent, spec, groups)
  else:
    builder = entry.make_builder(config.agent, spec, groups, bodies=bodies(config), task=task)
  lend_policy(builder)
  return builder
