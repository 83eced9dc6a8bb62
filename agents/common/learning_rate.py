"""A learning rate's course over training: linear warm-up, then cosine decay to a floor.

Gato trains with this shape (warm-up, then cosine decay by 10x). Here it also serves runs whose
policy swings between checkpoints at a constant rate (multi-task PAC, the generalist): the
decay settles the weights by the run's last checkpoint, which is the one a benchmark reports.
Without warm-up or decay the optimiser takes the plain number, so its state has the layout
runs kept before this existed.
"""

import dataclasses
import math
from typing import Any, Callable, Union

import jax.numpy as jnp
import optax

from agents.common.config import Config, Need, finite, is_int

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass
class LearningRateDecay(Config):
  """`warmup_steps` updates rising linearly from peak/warmup_steps to the peak, then `steps`
  updates of cosine decay from the peak to `final_fraction` of it, held from there on.
  steps=0 and warmup_steps=0: the constant peak (the default)."""

  steps: int = 0
  warmup_steps: int = 0
  final_fraction: float = 0.1

  @property
  def constant(self) -> bool:
    return self.steps == 0 and self.warmup_steps == 0

  def check(self, need: Need) -> None:
    need(is_int(self.steps) and self.steps >= 0, 'steps', 'an int >= 0 (0: no decay)')
    need(
      is_int(self.warmup_steps) and self.warmup_steps >= 0,
      'warmup_steps',
      'an int >= 0 (0: no warm-up)',
    )
    need(
      finite(self.final_fraction) and 0.0 <= self.final_fraction <= 1.0,
      'final_fraction',
      'a number in [0, 1]',
    )


def learning_rate(peak: float, decay: LearningRateDecay) -> Union[float, Schedule]:
  """What optax's optimisers take as their learning rate: `peak` itself when `decay` is
  constant, else a function of the update count (optax counts from 0, in the optimiser's
  state, so a resumed run goes on where it stopped)."""
  if decay.constant:
    return peak
  warmup, steps, floor = decay.warmup_steps, decay.steps, decay.final_fraction

  def schedule(count: jnp.ndarray) -> jnp.ndarray:
    count = jnp.asarray(count, jnp.float32)
    rise = jnp.minimum(1.0, (count + 1.0) / warmup) if warmup else 1.0
    if steps:
      done = jnp.clip((count - warmup) / steps, 0.0, 1.0)
      fall = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(math.pi * done))
    else:
      fall = 1.0
    return peak * rise * fall

  return schedule


def _is_course(node: Any) -> bool:
  return isinstance(node, optax.ScaleByScheduleState)


def with_fresh_courses(fresh: Any, loaded: Any) -> Any:
  """`loaded` (a learner state from another run, e.g. --init_checkpoint) with this run's
  learning-rate courses from `fresh` (its own new state) in place of the checkpoint's: a
  fine-tuning run starts its own warm-up and decay at update 0, whether or not the run it
  starts from had any. Everything else is `loaded`'s; where the two differ otherwise,
  `loaded` stays as it is, for the caller's check to name the difference."""
  if _is_course(fresh) or _is_course(loaded):
    return fresh
  if isinstance(fresh, tuple) and type(fresh) is type(loaded) and len(fresh) == len(loaded):
    parts = [with_fresh_courses(a, b) for a, b in zip(fresh, loaded)]
    return type(fresh)(*parts) if hasattr(fresh, '_fields') else tuple(parts)
  if isinstance(fresh, list) and isinstance(loaded, list) and len(fresh) == len(loaded):
    return [with_fresh_courses(a, b) for a, b in zip(fresh, loaded)]
  if isinstance(fresh, dict) and isinstance(loaded, dict) and fresh.keys() == loaded.keys():
    return {k: with_fresh_courses(fresh[k], loaded[k]) for k in loaded}
  return loaded
