"""The program's pieces as the actor, replay and learner benchmarks run them in one process."""

import itertools
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from agents.mpo.presets import PRESETS


def make_builder(task: str, preset: str, agent: Dict[str, Any], pixels=None):
  """The project's MPOBuilder for `task` with a preset and overrides (no rate limiting:
  nothing here waits for a learner to sample); for its camera images with `pixels`
  (environments.pixels.PixelSettings)."""
  from acme import specs

  from agents.mpo.builder import MPOBuilder

  config = mpo_config(preset, agent, {'replay.samples_per_insert': None})
  spec = specs.make_environment_spec(make_env(task, 0, None, pixels))
  return MPOBuilder(config, spec)


def mpo_config(preset: str, *layers: Dict[str, Any]):
  """MPOConfig of a preset with override layers (dotted, nested or old flat names)."""
  from agents.common.config import merge_overrides
  from agents.mpo.config import MPOConfig

  return MPOConfig.from_dict(merge_overrides(MPOConfig, PRESETS[preset], *layers))


def configured_spi(preset: str, agent: Dict[str, Any]) -> Optional[float]:
  """The samples_per_insert a real run of this preset uses."""
  return mpo_config(preset, agent).replay.samples_per_insert


def make_env(task: str, seed: int, max_episode_steps: Optional[int], pixels=None):
  """The task as actor nodes make it (through its camera with `pixels`); optionally with
  shorter episodes (tests)."""
  from environments.pixels import make_pixel_environment
  from environments.suite import make_environment

  if pixels is not None:
    env = make_pixel_environment(task, seed=seed, settings=pixels)
  else:
    env = make_environment(task, seed=seed)
  if max_episode_steps:
    from acme import wrappers

    env = wrappers.StepLimitWrapper(env, step_limit=max_episode_steps)
  return env


class LocalVariableSource:
  """A learner's variables served in-process, as LearnerWorker.get_variables serves them."""

  def __init__(self, learner):
    self._learner = learner

  def get_variables(self, names: Sequence[str]) -> List[Any]:
    from launch.nodes.learner import LEARNER_STEPS

    return [
      self._learner.steps if n == LEARNER_STEPS else self._learner.get_variables([n])[0]
      for n in names
    ]


class ConstantActor:
  """An acme Actor with a constant action: the EnvironmentLoop's own overhead."""

  def __init__(self, action: np.ndarray):
    self._action = action

  def select_action(self, observation):
    del observation
    return self._action

  def observe_first(self, timestep):
    pass

  def observe(self, action, next_timestep):
    pass

  def update(self, wait: bool = False):
    pass


class ReplayServer:
  """An in-process Reverb server with the builder's tables, and a client to it."""

  def __init__(self, builder):
    import reverb

    self.server = reverb.Server(builder.make_replay_tables(), port=None)
    self.address = f'localhost:{self.server.port}'
    self.client = reverb.Client(self.address)

  def inserts(self) -> int:
    """Items inserted into the replay table so far."""
    from agents.replay_pipeline import REPLAY_TABLE

    info = self.client.server_info()[REPLAY_TABLE]
    return int(info.rate_limiter_info.insert_stats.completed)

  def size(self) -> int:
    from agents.replay_pipeline import REPLAY_TABLE

    return int(self.client.server_info()[REPLAY_TABLE].current_size)

  def cpu_seconds(self) -> Optional[float]:
    """None: an in-process server's CPU time is its process's own."""
    return None

  def stop(self) -> None:
    self.server.stop()


def constant_action(env) -> np.ndarray:
  spec = env.action_spec()
  return ((spec.minimum + spec.maximum) / 2.0).astype(spec.dtype)


def bare_episode(env, action: np.ndarray) -> Callable[[], int]:
  """One episode of env.step with a constant action; returns its steps."""

  def run() -> int:
    timestep, steps = env.reset(), 0
    while not timestep.last():
      timestep = env.step(action)
      steps += 1
    return steps

  return run


def record_episode(env, seed: int):
  """(first timestep, [(action, timestep)]) of one episode with uniform random actions."""
  spec = env.action_spec()
  rng = np.random.default_rng(seed)
  first = env.reset()
  steps, timestep = [], first
  while not timestep.last():
    action = rng.uniform(spec.minimum, spec.maximum).astype(spec.dtype)
    timestep = env.step(action)
    steps.append((action, timestep))
  return first, steps


def adder_episode(adder, episode) -> Callable[[], None]:
  """Feeds a recorded episode through an adder, as an actor's observe calls would."""
  first, steps = episode

  def run() -> None:
    adder.add_first(first)
    for action, timestep in steps:
      adder.add(action, timestep)

  return run


def fill_replay(replay: ReplayServer, builder, episode, items: int, adder=None) -> int:
  """Writes recorded episodes through `adder` (default: the builder's) until the table holds
  `items`."""
  adder = adder or builder.make_adder(replay.client)
  feed = adder_episode(adder, episode)
  while replay.size() < items:
    feed()
  return replay.size()


def learner_in_memory(builder, batch, seed: int = 0):
  """An MPOLearner stepping on one batch held in memory, warmed up (compiled)."""
  from acme.utils import loggers

  learner = builder.make_learner(itertools.repeat(batch), seed=seed, logger=loggers.NoOpLogger())
  for _ in range(3):
    learner.step()
  return learner


def one_step(learner) -> Callable[[], int]:
  def step() -> int:
    learner.step()
    return 1

  return step
