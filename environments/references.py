"""Expert-normalised scores: 0 is a uniform-random policy's mean return, 100 the expert's.

The references live in one versioned file, `expert_references.json` beside this module:
per task, the random policy's and the expert's mean return, each with how it was measured
(command or run, episodes). A task without a measured expert has no score: it is left
out, never guessed.
"""

import functools
import json
import math
import pathlib
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence

REFERENCES_FILE = pathlib.Path(__file__).with_name('expert_references.json')


class Reference(NamedTuple):
  random: float  # Mean return of uniform random actions.
  expert: float  # Mean return of the expert policy.


def normalised_score(episode_return: float, reference: Reference) -> float:
  """100 * (return - random) / (expert - random)."""
  return 100.0 * (episode_return - reference.random) / (reference.expert - reference.random)


def read_references(path: Optional[pathlib.Path] = None) -> Dict[str, Reference]:
  """Task -> Reference, for the tasks of the file that have both means (ValueError naming
  the task on a malformed entry)."""
  data = json.loads(pathlib.Path(path or REFERENCES_FILE).read_text())
  found = {}
  for task, entry in data['tasks'].items():
    means = {}
    for kind in ('random', 'expert'):
      value = (entry.get(kind) or {}).get('mean_return')
      if value is None:
        continue
      if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f'{task}: {kind}.mean_return {value!r} is not a finite number')
      means[kind] = float(value)
    if len(means) == 2:
      if means['expert'] <= means['random']:
        raise ValueError(f'{task}: the expert mean must be above the random mean')
      found[task] = Reference(means['random'], means['expert'])
  return found


@functools.lru_cache(maxsize=1)
def references() -> Mapping[str, Reference]:
  """The project's references (read once a process)."""
  return read_references()


def score_tasks(
  returns: Mapping[str, Sequence[float]], refs: Mapping[str, Reference]
) -> Dict[str, Any]:
  """Per task and on average: mean raw return and (where a reference exists) score.

  Returns {'tasks': {task: {'mean_return', 'min_return', 'max_return'[, 'score']}},
  'mean_return': mean over tasks of their mean return, and 'mean_score', the mean over
  the tasks with a reference, only when there is one}.
  """
  rows = {}
  for task, values in returns.items():
    mean = float(sum(values) / len(values))
    row = {'mean_return': mean, 'min_return': float(min(values)), 'max_return': float(max(values))}
    if task in refs:
      row['score'] = normalised_score(mean, refs[task])
    rows[task] = row
  summary: Dict[str, Any] = {
    'tasks': rows,
    'mean_return': sum(r['mean_return'] for r in rows.values()) / len(rows),
  }
  scores = [r['score'] for r in rows.values() if 'score' in r]
  if scores:
    summary['mean_score'] = sum(scores) / len(scores)
  return summary
