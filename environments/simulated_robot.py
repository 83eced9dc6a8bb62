"""A simulated robot: a dm_control suite task behind the RobotInterface.

Its physics advances by one control period per command received, and
RobotEnvironment sends exactly one command per period (the agent's action or
the watchdog's safe action), so the simulation runs in real time and the whole
robot path (pacing, clipping, watchdog, safety stops) is exercised without
hardware.
"""

import threading
import time
from collections import deque
from typing import Any, Callable, Deque, List, NamedTuple, Optional

import dm_env
import numpy as np
from dm_env import specs

from environments import suite
from environments.robot import Reading, RobotEnvironment, RobotInterface

SafetyCheck = Callable[[np.ndarray], Optional[str]]


class SentCommand(NamedTuple):
  """One command the simulated robot received."""

  time: float  # time.monotonic() when it arrived.
  action: np.ndarray
  applied: bool  # False when it arrived after the simulated episode had ended.


class SimulatedRobot(RobotInterface):
  """A dm_control task (flat float32 observations) that steps once per command."""

  def __init__(
    self,
    task: str = suite.DEFAULT_TASK,
    control_hz: float = 50.0,
    seed: int = 0,
    safety_check: Optional[SafetyCheck] = None,
    command_log_size: int = 100_000,
  ):
    """Builds the task.

    Args:
      task: a dm_control suite 'domain:task'.
      control_hz: the control rate; each command is applied for
        1 / control_hz seconds of simulated time (as a whole number of the
        task's own control steps, summing their rewards).
      seed: the task's random seed.
      safety_check: returns why the robot must stop for an observation, or
        None; by default the robot is always safe.
      command_log_size: how many recent commands `sent_commands()` keeps.
    """
    self._env = suite.make_environment(task, seed=seed)
    task_dt = float(self._env.control_timestep())
    period = 1.0 / control_hz
    self._substeps = int(round(period / task_dt))
    if self._substeps < 1 or abs(self._substeps * task_dt - period) > 1e-6 * period:
      raise ValueError(
        f'{task} steps its control in {task_dt:g} s, so a control period of {period:g} s '
        f'({control_hz:g} Hz) cannot run in real time; use a rate that divides '
        f'{1 / task_dt:g} Hz'
      )
    self._safety_check = safety_check
    self._lock = threading.Lock()
    self._commands: Deque[SentCommand] = deque(maxlen=command_log_size)
    self._timestep: Optional[dm_env.TimeStep] = None
    self._reward = np.float32(0.0)
    self._ended_discount: Optional[float] = None

  @property
  def substeps(self) -> int:
    """Task control steps per command."""
    return self._substeps

  def observation_spec(self) -> specs.Array:
    return self._env.observation_spec()

  def action_spec(self) -> specs.BoundedArray:
    return self._env.action_spec()

  def reset(self) -> np.ndarray:
    with self._lock:
      self._timestep = self._env.reset()
      self._reward = np.float32(0.0)
      self._ended_discount = None
      return self._timestep.observation

  def send(self, action: np.ndarray) -> None:
    action = np.array(action, dtype=self.action_spec().dtype, copy=True)
    with self._lock:
      # Stepping a finished dm_control episode would silently reset it.
      applied = self._timestep is not None and self._ended_discount is None
      self._commands.append(SentCommand(time.monotonic(), action, applied))
      if not applied:
        return
      reward = np.float32(0.0)
      for _ in range(self._substeps):
        self._timestep = self._env.step(action)
        reward += np.float32(self._timestep.reward)
        if self._timestep.last():
          self._ended_discount = float(self._timestep.discount)
          break
      self._reward = reward

  def read(self) -> Reading:
    with self._lock:
      if self._timestep is None:
        raise RuntimeError('read() before reset()')
      return Reading(self._timestep.observation, self._reward, self._ended_discount)

  def safety_check(self, observation: Any) -> Optional[str]:
    return self._safety_check(observation) if self._safety_check else None

  def sent_commands(self) -> List[SentCommand]:
    """The commands received so far (the most recent `command_log_size`), oldest first."""
    with self._lock:
      return list(self._commands)

  def close(self) -> None:
    self._env.close()


def make_simulated_robot_env(
  task: str = suite.DEFAULT_TASK,
  control_hz: float = 50.0,
  seed: int = 0,
  safety_check: Optional[SafetyCheck] = None,
  **env_kwargs: Any,
) -> RobotEnvironment:
  """A RobotEnvironment over a SimulatedRobot; `env_kwargs` go to RobotEnvironment."""
  robot = SimulatedRobot(task, control_hz=control_hz, seed=seed, safety_check=safety_check)
  return RobotEnvironment(robot, control_hz=control_hz, **env_kwargs)
