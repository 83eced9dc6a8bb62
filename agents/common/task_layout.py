"""Several tasks' observations and actions in one layout, for a learner with one input size.

An MPO-family learner has one observation vector and one action vector. In a run of several
state-feature tasks, each task's observation goes into its body's slot of one long vector,
followed by a one-hot of the task (the task group: the Perceiver's task-embedding token);
its action is its body's slot of one action vector, zeros elsewhere. Tasks of one body
(same observation and action sizes and observation groups, e.g. cartpole:swingup and
cartpole:balance) share a slot and differ by their one-hot alone. networks.mpo.TaskMasks
tells the networks which groups and action dimensions each task has.

The environments, replay's robots and the store keep each task's own arrays: TaskActor
and TaskAdder place them on the way in and take the task's slot on the way out, and the
learner's store sampler places stored episodes with `place_episode`.
"""

from typing import Any, Dict, List, Mapping, Optional, Tuple

import dm_env
import numpy as np
from acme import adders, core, specs

from agents.common.bodies import Body, describe
from agents.common.errors import ConfigError
from networks.mpo import TaskMasks


def _slot_key(body: Body) -> Tuple:
  spec = body.spec
  return (
    tuple(spec.observations.shape),
    tuple(spec.actions.shape),
    tuple(body.obs_group_sizes or spec.observations.shape),
  )


class TaskLayout:
  """Where each task of a run puts its observation and action (see the module's text)."""

  def __init__(self, bodies: Mapping[str, Body]):
    if len(bodies) < 2:
      raise ValueError(f'a task layout is for several tasks, got {list(bodies)}')
    self.tasks: Tuple[str, ...] = tuple(bodies)
    for task, body in bodies.items():
      obs, act = body.spec.observations, body.spec.actions
      is_vector = len(getattr(obs, 'shape', ())) == 1 and np.dtype(obs.dtype).kind == 'f'
      if not is_vector or len(act.shape) != 1:
        raise ConfigError(
          f'tasks: {task} has {describe(body.spec)}; a run of several tasks takes state '
          'feature vectors and action vectors (camera runs: one task, or tasks of one spec)'
        )
    slots: Dict[Tuple, int] = {}
    groups: List[int] = []
    obs_at, act_at = [], []  # Per slot: (start, size).
    slot_groups: List[range] = []
    for body in bodies.values():
      key = _slot_key(body)
      if key in slots:
        continue
      slots[key] = len(slots)
      obs_size, act_size = key[0][0], key[1][0]
      obs_at.append((sum(s for _, s in obs_at), obs_size))
      act_at.append((sum(s for _, s in act_at), act_size))
      slot_groups.append(range(len(groups), len(groups) + len(key[2])))
      groups.extend(int(g) for g in key[2])
    k = len(self.tasks)
    self.obs_group_sizes: Tuple[int, ...] = tuple(groups) + (k,)
    self.obs_size = sum(self.obs_group_sizes)
    self.action_size = sum(s for _, s in act_at)
    self._one_hot_at = self.obs_size - k
    group_masks = np.zeros((k, len(self.obs_group_sizes)), np.float32)
    action_masks = np.zeros((k, self.action_size), np.float32)
    self._obs_slot: Dict[str, Tuple[int, int]] = {}
    self._act_slot: Dict[str, Tuple[int, int]] = {}
    for i, (task, body) in enumerate(bodies.items()):
      slot = slots[_slot_key(body)]
      self._obs_slot[task], self._act_slot[task] = obs_at[slot], act_at[slot]
      group_masks[i, list(slot_groups[slot])] = 1.0
      group_masks[i, -1] = 1.0  # The task group: every task has it.
      start, size = act_at[slot]
      action_masks[i, start : start + size] = 1.0
    self.masks = TaskMasks(group_masks, action_masks)
    first = next(iter(bodies.values())).spec
    self.spec = specs.EnvironmentSpec(
      observations=specs.Array((self.obs_size,), np.float32, name='observation'),
      actions=specs.BoundedArray((self.action_size,), np.float32, -1.0, 1.0, name='action'),
      rewards=first.rewards,
      discounts=first.discounts,
    )

  @property
  def num_slots(self) -> int:
    return len({slot for slot in self._obs_slot.values()})

  def _index(self, task: str) -> int:
    if task not in self._obs_slot:
      raise ValueError(f"task {task!r} is not one of the run's: {', '.join(self.tasks)}")
    return self.tasks.index(task)

  def observation(self, task: str, obs: np.ndarray) -> np.ndarray:
    """The task's observation(s) [..., O_task] placed: [..., obs_size] float32."""
    i = self._index(task)
    out = _into_slot(task, 'observation', obs, self._obs_slot[task], self.obs_size)
    out[..., self._one_hot_at + i] = 1.0
    return out

  def action(self, task: str, action: np.ndarray) -> np.ndarray:
    """The task's action(s) [..., A_task] placed: [..., action_size] float32, zeros elsewhere."""
    self._index(task)
    return _into_slot(task, 'action', action, self._act_slot[task], self.action_size)

  def task_action(self, task: str, action: np.ndarray) -> np.ndarray:
    """The task's own dimensions [..., A_task] of a placed action [..., action_size]."""
    self._index(task)
    start, size = self._act_slot[task]
    return np.asarray(action)[..., start : start + size]

  def place_episode(self, episode: Any) -> Optional[str]:
    """Places a stored episode (launch.store.episodes.Episode, as its task, metadata
    'task', recorded it) in this layout, in place; or says why it can't be."""
    task = episode.metadata.get('task')
    if task not in self._obs_slot:
      return f"task {task!r} is not one of the run's ({', '.join(self.tasks)})"
    if episode.observation_features is not None:
      return 'it has state features beside images; a run of several tasks takes state only'
    want = (self._obs_slot[task][1],)
    if tuple(episode.observations.shape[1:]) != want:
      return f'observations shape {episode.observations.shape[1:]} ({task} has {want})'
    size = self._act_slot[task][1]
    if tuple(episode.actions.shape[1:]) != (size,):
      return f'actions shape {episode.actions.shape[1:]} ({task} has ({size},))'
    episode.observations = self.observation(task, episode.observations)
    episode.actions = self.action(task, episode.actions)
    return None


def _into_slot(
  task: str, what: str, values: np.ndarray, slot: Tuple[int, int], width: int
) -> np.ndarray:
  """values [..., size] in slot (start, size) of zeros [..., width] float32."""
  start, size = slot
  values = np.asarray(values)
  if values.shape[-1:] != (size,):
    raise ValueError(f'{task}: {what} shape {values.shape} (expected [..., {size}])')
  out = np.zeros(values.shape[:-1] + (width,), np.float32)
  out[..., start : start + size] = values
  return out


def _placed(layout: TaskLayout, task: str, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
  return timestep._replace(observation=layout.observation(task, timestep.observation))


class TaskActor(core.Actor):
  """An actor of the placed layout acting on one task's environment: observations are
  placed on the way in, the task's slot of the action taken on the way out; what reaches
  the inner actor's adder is placed (the action as executed, zeros in other slots)."""

  def __init__(self, actor: core.Actor, layout: TaskLayout, task: str):
    layout._index(task)  # A clear error for a task the layout lacks.
    self._actor, self._layout, self._task = actor, layout, task

  def select_action(self, observation: Any) -> np.ndarray:
    placed = self._layout.observation(self._task, observation)
    return self._layout.task_action(self._task, self._actor.select_action(placed))

  def observe_first(self, timestep: dm_env.TimeStep) -> None:
    self._actor.observe_first(_placed(self._layout, self._task, timestep))

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    self._actor.observe(
      self._layout.action(self._task, action), _placed(self._layout, self._task, next_timestep)
    )

  def update(self, wait: bool = False) -> None:
    self._actor.update(wait)

  def __getattr__(self, name: str) -> Any:  # policy_version and the like.
    return getattr(self._actor, name)


class TaskAdder(adders.Adder):
  """An adder that takes one task's timesteps and actions (an attached robot's) and writes
  them placed."""

  def __init__(self, adder: adders.Adder, layout: TaskLayout, task: str):
    layout._index(task)
    self._adder, self._layout, self._task = adder, layout, task

  def add_first(self, timestep: dm_env.TimeStep) -> None:
    self._adder.add_first(_placed(self._layout, self._task, timestep))

  def add(self, action, next_timestep, extras=()) -> None:
    self._adder.add(
      self._layout.action(self._task, action),
      _placed(self._layout, self._task, next_timestep),
      extras,
    )

  def reset(self) -> None:
    self._adder.reset()

  def __getattr__(self, name: str) -> Any:  # close() and the like, where the inner has them.
    return getattr(self._adder, name)
