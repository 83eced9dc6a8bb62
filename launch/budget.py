"""When a program is done: one budget, read alike by the launcher, the learner and the evaluator.

The program stops at whichever limit comes first:
- `max_seconds` of this launch (all modes);
- the learner's part: all `iterations` in iterated mode, else `max_learner_steps` (if set);
- `max_actor_steps` in the modes whose actors count toward it (online, offline_to_online).
Iterated mode ends by its iterations (or seconds) only; offline mode has no actors to count.
"""

import dataclasses
from typing import Optional

from launch.config import ExperimentConfig

# Modes whose actor steps count toward max_actor_steps.
ACTOR_BUDGET_MODES = ('online', 'offline_to_online')


@dataclasses.dataclass(frozen=True)
class Budget:
  """The limits of one run, and the sentence that says which one a run has reached."""
  mode: str
  max_actor_steps: Optional[int] = None
  max_learner_steps: Optional[int] = None
  max_seconds: Optional[float] = None
  iterations: int = 1

  @classmethod
  def from_config(cls, cfg: ExperimentConfig) -> 'Budget':
    return cls(mode=cfg.mode, max_actor_steps=cfg.max_actor_steps,
               max_learner_steps=cfg.max_learner_steps, max_seconds=cfg.max_seconds,
               iterations=cfg.iterations)

  @property
  def actor_steps_limit(self) -> Optional[int]:
    """The environment-step budget, where actors count toward one."""
    return self.max_actor_steps if self.mode in ACTOR_BUDGET_MODES else None

  @property
  def ends_with_learner(self) -> bool:
    """Whether the learner's own part (iterations or learner steps) can end the program."""
    return self.mode == 'iterated' or self.max_learner_steps is not None

  def out_of_time(self, seconds: float) -> bool:
    """Whether this launch has run its `max_seconds`."""
    return self.max_seconds is not None and seconds >= self.max_seconds

  def learner_finished(self, learner_steps: int, iterations_done: int = 0) -> bool:
    """The learner's part: all iterations done (iterated mode), else its step budget reached."""
    if self.mode == 'iterated':
      return iterations_done >= self.iterations
    return self.max_learner_steps is not None and learner_steps >= self.max_learner_steps

  def reason(self, actor_steps: int = 0, learner_steps: int = 0, seconds: float = 0.0,
             iterations_done: int = 0, learner_done: Optional[bool] = None) -> Optional[str]:
    """Why the run is done, as a sentence that says how to continue it; None while it is not.

    `learner_done` is the learner's own word on its part, where known (the evaluator asks
    it: the shared counter lags the learner); without it, `learner_steps` and
    `iterations_done` decide. `seconds` is the time this launch has run.
    """
    if self.out_of_time(seconds):
      return (f'its budget of {self.max_seconds:g} seconds ({seconds:.0f} elapsed); '
              'pass a larger --max_seconds to continue')
    finished = (self.learner_finished(learner_steps, iterations_done) if learner_done is None
                else learner_done and self.ends_with_learner)
    if finished and self.mode == 'iterated':
      done = 'all done' if learner_done is not None else f'{iterations_done} done'
      return (f'its budget of {self.iterations} iterations ({done}); '
              'pass a larger --iterations to continue')
    if finished:
      done = 'the learner reached it' if learner_done is not None else f'{learner_steps} done'
      return (f'its budget of {self.max_learner_steps} learner steps ({done}); '
              'pass a larger --max_learner_steps to continue')
    limit = self.actor_steps_limit
    if limit is not None and actor_steps >= limit:
      return (f'its budget of {limit} environment steps ({actor_steps} done); '
              'pass a larger --max_actor_steps to continue')
    return None

  def done(self, actor_steps: int = 0, learner_steps: int = 0, seconds: float = 0.0,
           iterations_done: int = 0, learner_done: Optional[bool] = None) -> bool:
    """Whether any limit is reached (see `reason`)."""
    return self.reason(actor_steps, learner_steps, seconds, iterations_done,
                       learner_done) is not None
