"""An environment loop over K environments with one batched policy call per step.

Each environment runs its own episodes, as acme's EnvironmentLoop runs one actor's:
it resets when its episode has ended (they end at different times), its timesteps go
to its own stream of the actor (its adder) and to its own observers (its store
recorder), and the executed, clipped action is what both get (environments.actions).
"""

import time
from typing import Any, Dict, List, Optional, Sequence

import dm_env
import numpy as np
import tree
from acme.utils import counting
from acme.utils import observers as observers_lib

from agents.batched_actor import BatchedActor
from environments.actions import clip_action


class BatchedEnvironmentLoop:
  """Steps `envs` together; `step()` returns the results of the episodes that ended."""

  def __init__(
    self,
    envs: Sequence[dm_env.Environment],
    actor: BatchedActor,
    action_spec: Any,
    counter: Optional[counting.Counter] = None,
    observers: Optional[Sequence[Sequence[observers_lib.EnvLoopObserver]]] = None,
  ):
    self._envs = list(envs)
    self._actor = actor
    self._action_spec = action_spec
    self._counter = counter or counting.Counter()
    self._observers = [list(o) for o in (observers or [()] * len(self._envs))]
    if len(self._observers) != len(self._envs):
      raise ValueError(f'{len(self._observers)} observer lists for {len(self._envs)} envs')
    k = len(self._envs)
    self._timesteps: List[Optional[dm_env.TimeStep]] = [None] * k  # None: reset next step.
    self._steps = [0] * k
    self._returns = [0.0] * k
    self._starts = [0.0] * k

  @property
  def num_envs(self) -> int:
    return len(self._envs)

  def steps_in_progress(self) -> int:
    """Steps of the episodes running now (not yet counted: counts come at episode ends)."""
    return sum(s for s, t in zip(self._steps, self._timesteps) if t is not None)

  def _reset(self, i: int) -> dm_env.TimeStep:
    timestep = self._envs[i].reset()
    self._actor.observe_first(i, timestep)
    for observer in self._observers[i]:
      observer.observe_first(self._envs[i], timestep)
    self._steps[i], self._returns[i], self._starts[i] = 0, 0.0, time.time()
    return timestep

  def step(self) -> List[Dict[str, Any]]:
    """One step of every environment (resetting those whose episode ended first)."""
    for i, timestep in enumerate(self._timesteps):
      if timestep is None:
        self._timesteps[i] = self._reset(i)
    observations = tree.map_structure(
      lambda *x: np.stack(x), *[t.observation for t in self._timesteps]
    )
    actions = clip_action(self._actor.select_actions(observations), self._action_spec)
    results = []
    for i, env in enumerate(self._envs):
      action = actions[i]
      timestep = env.step(action)
      self._actor.observe(i, action, timestep)
      for observer in self._observers[i]:
        observer.observe(env, timestep, action)
      self._steps[i] += 1
      self._returns[i] += float(np.sum(timestep.reward))
      self._timesteps[i] = timestep
      if timestep.last():
        results.append(self._end_episode(i))
    self._actor.update()
    return results

  def _end_episode(self, i: int) -> Dict[str, Any]:
    steps = self._steps[i]
    self._timesteps[i] = None
    result = {
      'episode_length': steps,
      'episode_return': self._returns[i],
      'steps_per_second': steps / max(time.time() - self._starts[i], 1e-9),
      'stream': i,
    }
    result.update(self._counter.increment(episodes=1, steps=steps))
    for observer in self._observers[i]:
      result.update(observer.get_metrics())
    return result
