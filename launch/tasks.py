"""Several tasks in one program: the `--tasks` list, its weights, and which actor runs what.

`--tasks 'cartpole:swingup=2,walker:walk'` names the tasks, comma-separated, each with an
optional weight after '=' (default 1). A physics variant's own parameters
(`cartpole:swingup@pole_length=0.8,pole_mass=0.2`) keep their commas: a piece without ':'
continues the task before it, and its weight is a third '=' part of its last parameter
(`...@pole_length=0.8=2`).

Actors are spread over the tasks by a smooth weighted round robin (`assign_task`): actor i
takes the i-th pick, so an actor's task depends on its index and the weights only, and
adding actors to a run never moves the ones it has.
"""

import math
import re
from typing import List, Sequence, Tuple

from agents.common.errors import ConfigError

TaskWeights = Tuple[Tuple[str, float], ...]


def _split_weight(entry: str) -> Tuple[str, float]:
  """'domain:task[@params][=weight]' -> (name, weight)."""
  head, at, params = entry.partition('@')
  last = params.split(',')[-1] if at else head
  # A variant's parameter holds one '=' of its own; a weight is one more.
  if last.count('=') == (2 if at else 1):
    name, _, text = entry.rpartition('=')
    try:
      weight = float(text)
    except ValueError:
      raise ConfigError(f'tasks: weight {text!r} of {name!r} is not a number') from None
    return name.strip(), weight
  return entry.strip(), 1.0


def parse_tasks(text: str) -> TaskWeights:
  """'a=2,b' -> (('a', 2.0), ('b', 1.0)); ConfigError naming the field on bad input."""
  if not isinstance(text, str):
    raise ConfigError(f"tasks={text!r} is invalid: must be a string like 'a:b=2,c:d'")
  entries: List[str] = []
  for piece in (p.strip() for p in text.split(',')):
    if not piece:
      raise ConfigError(f'tasks={text!r} has an empty entry')
    if ':' in piece.split('=')[0].split('@')[0]:
      entries.append(piece)
    elif entries and '@' in entries[-1]:
      entries[-1] += ',' + piece  # The next parameter of a physics variant.
    else:
      raise ConfigError(f"tasks: {piece!r} is not 'domain:task' (e.g. cartpole:swingup=2)")
  pairs = tuple(_split_weight(e) for e in entries)
  names = [name for name, _ in pairs]
  for name, weight in pairs:
    if not math.isfinite(weight) or weight <= 0:
      raise ConfigError(f'tasks: weight {weight:g} of {name!r} must be a finite number > 0')
  duplicates = sorted({n for n in names if names.count(n) > 1})
  if duplicates:
    raise ConfigError(f'tasks: {", ".join(duplicates)} listed more than once')
  return pairs


def assign_task(actor_id: int, weights: Sequence[Tuple[str, float]]) -> str:
  """The task of actor `actor_id`: the actor_id-th pick of a smooth weighted round robin.

  Each pick adds every task's weight to its credit, takes the task with the most credit
  (the first listed on a tie) and takes the total weight off that task's credit. Equal
  weights give plain round robin (actor i runs task i mod k); weights 2, 1 give a, b, a,
  a, b, a, ...
  """
  if actor_id < 0:
    raise ValueError(f'actor_id must be >= 0, got {actor_id}')
  total = sum(w for _, w in weights)
  credit = [0.0] * len(weights)
  pick = 0
  for _ in range(actor_id + 1):
    credit = [c + w for c, (_, w) in zip(credit, weights)]
    pick = max(range(len(weights)), key=lambda i: (credit[i], -i))
    credit[pick] -= total
  return weights[pick][0]


def task_log_label(task: str) -> str:
  """The log label of one task's rows: 'evaluator_cartpole_swingup'."""
  return 'evaluator_' + re.sub(r'[^A-Za-z0-9.-]+', '_', task)


def tasks_without_actors(weights: Sequence[Tuple[str, float]], num_actors: int) -> List[str]:
  """The tasks no actor runs with `num_actors` actors (the evaluator still evaluates them)."""
  acting = {assign_task(i, weights) for i in range(num_actors)}
  return [name for name, _ in weights if name not in acting]
