"""When an episode succeeds, for tasks with a goal condition (dm_control.manipulation).

A manipulation task's reward is 1 exactly when its goal holds (the hand within the target's
radius, the brick at its lift height, the bricks stacked and let go) and less otherwise. An
episode succeeds when some step reached the goal: a step's reward, per environment step
(a pixel run's action repeat sums that many), at least SUCCESS_REWARD. Reaching it at any
step is the success rate most manipulation benchmarks report (Meta-World's, for one).
"""

from typing import Any, Dict

import dm_env

from environments.pixels import is_manipulation

SUCCESS_REWARD = 0.99


def has_success(task: str) -> bool:
  """Whether `task` has a goal condition, and its evaluations a success rate."""
  return is_manipulation(task)


class SuccessObserver:
  """An acme EnvironmentLoop observer: the episode's `success` (1.0 or 0.0) in its result."""

  def __init__(self, action_repeat: int = 1):
    if action_repeat < 1:
      raise ValueError(f'action_repeat must be >= 1, got {action_repeat}')
    self._threshold = SUCCESS_REWARD * action_repeat
    self._best = float('-inf')

  def observe_first(self, env: Any, timestep: dm_env.TimeStep) -> None:
    del env, timestep
    self._best = float('-inf')

  def observe(self, env: Any, timestep: dm_env.TimeStep, action: Any) -> None:
    del env, action
    if timestep.reward is not None:
      self._best = max(self._best, float(timestep.reward))

  def get_metrics(self) -> Dict[str, float]:
    return {'success': float(self._best >= self._threshold)}
