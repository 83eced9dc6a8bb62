"""A dm_env.Environment over a small robot interface, run at a fixed control rate.

The control loop is driven by the agent: `step(action)` sends the action and
returns the observation read at the next control tick. Ticks follow an
absolute schedule on the monotonic clock (tick k is at t0 + k / control_hz,
with t0 the time of the reset), so sleeping errors never accumulate.

Every control period gets exactly one command. Period k is the interval
[tick k, tick k+1); the agent's action for the observation read at tick k
is sent in period k. If the agent has not called `step()` by
`tick k + action_deadline_s`, a watchdog thread sends the robot's safe action
for period k instead, and keeps doing so once per period until the agent
answers; the late action then goes out at the start of the next free period.
Hardware therefore always receives a command at the control rate, and a
simulated robot that advances its physics once per command runs in real time.

Episodes end (StepType.LAST) when
* a step or time limit is reached: truncation, discount 1;
* `safety_check` returns a reason: the safe action is sent at once, an error
  is logged, and the step gets `safety_stop_discount` (1 by default: leaving
  the workspace is not a terminal state of the task);
* the action is not finite: the safe action is sent instead, discount 1;
* the robot itself ends the episode (`Reading.discount` is not None).
At every episode end the robot is parked with one safe action; between
episodes (after LAST, before `reset()`) the watchdog sends nothing.
"""

import abc
import dataclasses
import logging
import math
import threading
import time
from collections import deque
from typing import Any, Deque, List, NamedTuple, Optional

import dm_env
import numpy as np
from dm_env import specs

from agents.common.logs import get_logger

log = get_logger('robot')


class Reading(NamedTuple):
  """What the robot reports at a control tick.

  discount is None while the episode goes on. A number ends the episode:
  0.0 for a terminal state of the task, 1.0 when the robot stops it for
  another reason (e.g. a simulator's own time limit).
  """
  observation: Any
  reward: float
  discount: Optional[float] = None


class RobotInterface(abc.ABC):
  """The few operations a robot (real or simulated) offers to RobotEnvironment.

  Implementations may be called from two threads (the agent's and the
  watchdog's), but never concurrently: RobotEnvironment serialises calls.
  """

  @abc.abstractmethod
  def observation_spec(self) -> Any:
    """Spec (a nest of specs.Array) of what `read()` and `reset()` return."""

  @abc.abstractmethod
  def action_spec(self) -> specs.BoundedArray:
    """Bounded spec of the commands `send()` accepts."""

  @abc.abstractmethod
  def reset(self) -> Any:
    """Brings the robot to a start state; returns the first observation."""

  @abc.abstractmethod
  def read(self) -> Reading:
    """Reads the current observation, the reward and an optional episode end."""

  @abc.abstractmethod
  def send(self, action: np.ndarray) -> None:
    """Sends one command, applied for one control period."""

  def safe_action(self) -> np.ndarray:
    """A command that is always safe to send (default: zero, clipped to the bounds)."""
    spec = self.action_spec()
    zeros = np.zeros(spec.shape, dtype=spec.dtype)
    return np.clip(zeros, spec.minimum, spec.maximum).astype(spec.dtype)

  def safety_check(self, observation: Any) -> Optional[str]:
    """Returns why the robot must stop now (e.g. 'out of workspace'), or None."""
    del observation
    return None

  def close(self) -> None:
    """Releases the robot's resources."""


@dataclasses.dataclass(frozen=True)
class StepTiming:
  """Timing of one `step()`: from the previous reading to this one."""
  period_s: float  # Wall time since the previous reading.
  ticks: int  # Periods since the previous tick read: 1 unless the watchdog covered some.
  jitter_s: float  # |period_s - ticks / control_hz|.
  lateness_s: float  # How long after its scheduled tick this reading was taken.
  deadline_missed: bool  # The agent's action came after the deadline.
  watchdog_actions: int  # Safe actions the watchdog sent in that time.


@dataclasses.dataclass(frozen=True)
class TimingStats:
  """Counts since construction; percentiles over the most recent steps."""
  control_hz: float
  steps: int
  episodes: int
  deadline_misses: int
  watchdog_actions: int
  clipped_actions: int
  invalid_actions: int
  safety_stops: int
  skipped_ticks: int  # Ticks without a reading (late agent, or a read stalled past a tick).
  period_p50_s: float
  jitter_p50_s: float
  jitter_p90_s: float
  jitter_p99_s: float
  jitter_max_s: float
  lateness_p99_s: float
  lateness_max_s: float

  def summary(self) -> str:
    """One human-readable line."""
    ms = 1e3
    return (f'{self.steps} steps at {self.control_hz:g} Hz, {self.episodes} episodes; '
            f'period p50 {self.period_p50_s * ms:.2f} ms; jitter p50/p90/p99/max '
            f'{self.jitter_p50_s * ms:.2f}/{self.jitter_p90_s * ms:.2f}/'
            f'{self.jitter_p99_s * ms:.2f}/{self.jitter_max_s * ms:.2f} ms; '
            f'lateness p99 {self.lateness_p99_s * ms:.2f} ms; '
            f'deadline misses {self.deadline_misses}, watchdog actions '
            f'{self.watchdog_actions}, skipped ticks {self.skipped_ticks}, clipped actions '
            f'{self.clipped_actions}, invalid actions {self.invalid_actions}, '
            f'safety stops {self.safety_stops}')


class RobotEnvironment(dm_env.Environment):
  """A dm_env.Environment running a RobotInterface at `control_hz` with a watchdog."""

  def __init__(self,
               robot: RobotInterface,
               control_hz: float,
               max_episode_steps: Optional[int] = None,
               max_episode_seconds: Optional[float] = None,
               action_deadline_s: Optional[float] = None,
               safety_stop_discount: float = 1.0,
               log_every_s: float = 60.0,
               clip_log_every_s: float = 10.0,
               stats_window: int = 10_000):
    """Creates the environment; the watchdog starts with the first `reset()`.

    Args:
      robot: the robot to control.
      control_hz: control rate; one command per period of 1 / control_hz.
      max_episode_steps: truncate an episode after this many steps.
      max_episode_seconds: truncate an episode at the first tick this long
        after its reset.
      action_deadline_s: how long after a tick the agent's action may come
        before the watchdog sends the safe action; must be below the period.
        Default: 80% of the period.
      safety_stop_discount: discount of the step a failed safety check ends.
      log_every_s: interval of the timing summary log line.
      clip_log_every_s: at most one "clipped actions" log line per interval.
      stats_window: how many recent steps the percentiles cover.
    """
    if not control_hz > 0:
      raise ValueError(f'control_hz must be positive, got {control_hz}')
    self._period = 1.0 / control_hz
    if action_deadline_s is None:
      action_deadline_s = 0.8 * self._period
    if not 0 < action_deadline_s < self._period:
      raise ValueError(
          f'action_deadline_s must be in (0, {self._period:g}) (one control period): the '
          f'command of a period has to go out within it; got {action_deadline_s}')
    if max_episode_steps is not None and max_episode_steps < 1:
      raise ValueError(f'max_episode_steps must be at least 1, got {max_episode_steps}')
    if max_episode_seconds is not None and not max_episode_seconds > 0:
      raise ValueError(f'max_episode_seconds must be positive, got {max_episode_seconds}')
    if not 0.0 <= safety_stop_discount <= 1.0:
      raise ValueError(f'safety_stop_discount must be in [0, 1], got {safety_stop_discount}')
    action_spec = robot.action_spec()
    if not isinstance(action_spec, specs.BoundedArray):
      raise TypeError(f'the robot action spec must be a BoundedArray, got {action_spec!r}')

    self._robot = robot
    self._control_hz = float(control_hz)
    self._max_steps = max_episode_steps
    self._max_seconds = max_episode_seconds
    self._deadline = float(action_deadline_s)
    self._safety_stop_discount = float(safety_stop_discount)
    self._log_every = float(log_every_s)
    self._clip_log_every = float(clip_log_every_s)
    self._action_spec = action_spec
    self._safe_action = np.asarray(robot.safe_action(), dtype=action_spec.dtype)
    action_spec.validate(self._safe_action)

    # The condition's lock guards the schedule state below and every call
    # that sends a command, so no period ever gets two commands.
    self._cond = threading.Condition()
    self._t0 = 0.0
    self._slot = 0  # Tick of the latest reading; the agent's action is for this period.
    self._commanded_through = -1  # Last period that got a command.
    self._awaiting_agent = False  # The watchdog is armed.
    self._closed = False
    self._watchdog: Optional[threading.Thread] = None
    self._watchdog_sent = 0  # Watchdog actions since the latest reading.

    self._reset_next_step = True
    self._episode_steps = 0
    self._last_read_time = 0.0
    self._last_action: Optional[np.ndarray] = None

    self._timings: Deque[StepTiming] = deque(maxlen=stats_window)
    self._steps = 0
    self._episodes = 0
    self._deadline_misses = 0
    self._watchdog_actions = 0
    self._clipped = 0
    self._clipped_unlogged = 0
    self._invalid_actions = 0
    self._safety_stops = 0
    self._skipped_ticks = 0
    self._next_clip_log = 0.0
    self._next_stats_log = time.monotonic() + self._log_every

  # dm_env.Environment.

  def observation_spec(self) -> Any:
    return self._robot.observation_spec()

  def action_spec(self) -> specs.BoundedArray:
    return self._action_spec

  def reward_spec(self) -> specs.Array:
    return specs.Array((), np.float32, name='reward')

  def discount_spec(self) -> specs.BoundedArray:
    return specs.BoundedArray((), np.float32, 0.0, 1.0, name='discount')

  def reset(self) -> dm_env.TimeStep:
    """Resets the robot and starts the tick schedule at the first observation."""
    if self._closed:
      raise RuntimeError('the robot environment is closed')
    with self._cond:
      self._awaiting_agent = False
    observation = self._robot.reset()
    reason = self._robot.safety_check(observation)
    if reason:
      with self._cond:
        self._robot.send(self._safe_action)
      log.error('Robot safety check failed right after reset: %s; not starting an episode',
                reason)
      raise RuntimeError(f'robot safety check failed after reset: {reason}')
    with self._cond:
      self._t0 = time.monotonic()
      self._last_read_time = self._t0
      self._slot = 0
      self._commanded_through = -1
      self._watchdog_sent = 0
      self._awaiting_agent = True
      if self._watchdog is None:
        self._watchdog = threading.Thread(
            target=self._watchdog_loop, name='robot-watchdog', daemon=True)
        self._watchdog.start()
      self._cond.notify_all()
    self._reset_next_step = False
    self._episode_steps = 0
    self._episodes += 1
    return dm_env.restart(observation)

  def step(self, action: Any) -> dm_env.TimeStep:
    """Sends `action` (clipped to the spec) and returns the next tick's reading."""
    if self._reset_next_step:
      return self.reset()
    command, invalid_reason = self._prepare_action(action)

    with self._cond:
      self._awaiting_agent = False
      self._cond.notify_all()
      now = time.monotonic()
      deadline_missed = now > self._tick_time(self._slot) + self._deadline
      period = max(self._period_index(now), self._commanded_through + 1)
    # When the watchdog already covered the current period, the action waits
    # for the next one instead of giving the robot two commands in a period.
    # The watchdog is disarmed, so nothing else sends meanwhile.
    _sleep_until(self._tick_time(period))
    with self._cond:
      self._robot.send(command)
      self._commanded_through = period
    self._last_action = command

    _sleep_until(self._tick_time(period + 1))
    with self._cond:
      reading = self._robot.read()
      read_time = time.monotonic()
    scheduled = period + 1
    period_s = read_time - self._last_read_time
    ticks = scheduled - self._slot
    timing = StepTiming(
        period_s=period_s,
        ticks=ticks,
        jitter_s=abs(period_s - ticks * self._period),
        lateness_s=read_time - self._tick_time(scheduled),
        deadline_missed=deadline_missed,
        watchdog_actions=self._watchdog_sent)
    # A stall may have carried the reading past later ticks: the agent's next
    # action is then for the period the reading fell in, and the ticks in
    # between get no command (the robot holds its last one).
    tick = max(scheduled, self._period_index(read_time))
    self._record(timing, stalled_ticks=tick - scheduled)
    self._last_read_time = read_time
    self._episode_steps += 1

    end_discount, end_reason = self._episode_end(reading, tick, invalid_reason)
    with self._cond:
      self._slot = tick
      self._watchdog_sent = 0
      if end_discount is None:
        self._awaiting_agent = True
        self._cond.notify_all()
      else:
        # Park the robot for the next period; the watchdog stays disarmed
        # until the next reset.
        self._robot.send(self._safe_action)
        self._commanded_through = max(self._commanded_through, tick)
    self._maybe_log_stats(read_time)

    reward = np.float32(reading.reward)
    if end_discount is None:
      return dm_env.transition(reward, reading.observation, discount=np.float32(1.0))
    log.log(logging.ERROR if end_reason.startswith('safety') else logging.INFO,
            'Episode %d ended at step %d: %s', self._episodes, self._episode_steps, end_reason)
    self._reset_next_step = True
    return dm_env.TimeStep(dm_env.StepType.LAST, reward, np.float32(end_discount),
                           reading.observation)

  def close(self) -> None:
    """Stops the watchdog, parks the robot and closes it."""
    with self._cond:
      if self._closed:
        return
      self._closed = True
      self._awaiting_agent = False
      self._cond.notify_all()
      watchdog = self._watchdog
    if watchdog is not None:
      watchdog.join(timeout=5.0)
    if self._steps:
      log.info('Robot control timing: %s', self.timing_stats().summary())
    try:
      with self._cond:
        self._robot.send(self._safe_action)
    finally:
      self._robot.close()

  # Introspection.

  @property
  def robot(self) -> RobotInterface:
    """The robot this environment drives."""
    return self._robot

  @property
  def control_hz(self) -> float:
    return self._control_hz

  @property
  def last_action(self) -> Optional[np.ndarray]:
    """The command the latest `step()` sent: clipped, or the safe action if invalid."""
    return self._last_action

  def step_timings(self) -> List[StepTiming]:
    """Per-step timing of the most recent steps, oldest first."""
    return list(self._timings)

  def timing_stats(self) -> TimingStats:
    """Counts since construction and jitter percentiles over recent steps."""
    jitter = np.array([t.jitter_s for t in self._timings])
    lateness = np.array([t.lateness_s for t in self._timings])
    periods = np.array([t.period_s / t.ticks for t in self._timings])

    def pct(values: np.ndarray, q: float) -> float:
      return float(np.percentile(values, q)) if values.size else 0.0

    return TimingStats(
        control_hz=self._control_hz,
        steps=self._steps,
        episodes=self._episodes,
        deadline_misses=self._deadline_misses,
        watchdog_actions=self._watchdog_actions,
        clipped_actions=self._clipped,
        invalid_actions=self._invalid_actions,
        safety_stops=self._safety_stops,
        skipped_ticks=self._skipped_ticks,
        period_p50_s=pct(periods, 50),
        jitter_p50_s=pct(jitter, 50),
        jitter_p90_s=pct(jitter, 90),
        jitter_p99_s=pct(jitter, 99),
        jitter_max_s=float(jitter.max()) if jitter.size else 0.0,
        lateness_p99_s=pct(lateness, 99),
        lateness_max_s=float(lateness.max()) if lateness.size else 0.0)

  # Internals.

  def _tick_time(self, tick: int) -> float:
    return self._t0 + tick * self._period

  def _period_index(self, now: float) -> int:
    return int(math.floor((now - self._t0) / self._period))

  def _prepare_action(self, action: Any):
    """The command to send for `action`, and why it was refused (or None)."""
    spec = self._action_spec
    action = np.asarray(action)
    if action.shape != spec.shape:
      raise ValueError(f'action shape {action.shape} does not match the action spec '
                       f'shape {spec.shape}')
    if not np.all(np.isfinite(action)):
      self._invalid_actions += 1
      log.error('Refusing non-finite action %s; sending the safe action and ending the '
                'episode', np.array2string(action, precision=4))
      return self._safe_action, f'invalid action {action.tolist()}'
    clipped = np.clip(action, spec.minimum, spec.maximum).astype(spec.dtype)
    if np.any(clipped != action):
      self._clipped += 1
      self._clipped_unlogged += 1
      now = time.monotonic()
      # Policies with unbounded distributions clip often: one line per interval.
      if now >= self._next_clip_log:
        log.warning('Clipped %d action(s) to the spec bounds %s..%s (latest: %s)',
                    self._clipped_unlogged, np.array2string(np.asarray(spec.minimum)),
                    np.array2string(np.asarray(spec.maximum)),
                    np.array2string(action, precision=4))
        self._clipped_unlogged = 0
        self._next_clip_log = now + self._clip_log_every
    return clipped, None

  def _episode_end(self, reading: Reading, tick: int, invalid_reason: Optional[str]):
    """(discount, reason) when this reading ends the episode, else (None, None)."""
    reason = self._robot.safety_check(reading.observation)
    if reason:
      self._safety_stops += 1
      # The park command goes out with the condition lock held right after;
      # the ERROR line is logged by step() once the robot is safe.
      return self._safety_stop_discount, f'safety stop ({reason}); safe action sent'
    if invalid_reason is not None:
      return 1.0, f'{invalid_reason}; safe action sent instead'
    if reading.discount is not None:
      return float(reading.discount), f'the robot ended it (discount {reading.discount})'
    if self._max_steps is not None and self._episode_steps >= self._max_steps:
      return 1.0, f'step limit {self._max_steps} reached (truncated)'
    if self._max_seconds is not None and tick * self._period >= self._max_seconds - 1e-9:
      return 1.0, f'time limit {self._max_seconds:g} s reached (truncated)'
    return None, None

  def _record(self, timing: StepTiming, stalled_ticks: int) -> None:
    self._timings.append(timing)
    self._steps += 1
    self._deadline_misses += int(timing.deadline_missed)
    self._skipped_ticks += timing.ticks - 1 + stalled_ticks

  def _maybe_log_stats(self, now: float) -> None:
    if now >= self._next_stats_log:
      self._next_stats_log = now + self._log_every
      log.info('Robot control timing: %s', self.timing_stats().summary())

  def _watchdog_loop(self) -> None:
    """Sends the safe action for every period the agent leaves without a command."""
    with self._cond:
      while not self._closed:
        if not self._awaiting_agent:
          self._cond.wait()
          continue
        # The first period without a command from the agent's current one on.
        period = max(self._commanded_through + 1, self._slot)
        delay = self._tick_time(period) + self._deadline - time.monotonic()
        if delay > 0:
          # Woken early when the agent answers; the loop then re-checks.
          self._cond.wait(delay)
          continue
        # If this thread was starved past whole periods, cover the current one.
        period = max(period, self._period_index(time.monotonic()))
        self._robot.send(self._safe_action)
        self._commanded_through = period
        self._watchdog_sent += 1
        self._watchdog_actions += 1


def _sleep_until(deadline: float) -> None:
  """Sleeps until the monotonic clock reaches `deadline` (returns at once if past)."""
  while True:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      return
    time.sleep(remaining)
