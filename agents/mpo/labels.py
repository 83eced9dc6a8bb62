"""Episode-level success / failure labels: where PMPO's sets come from in stored data.

An episode is successful when its metadata says so (`success`: true / false, or 1 / 0,
written by whoever recorded it, e.g. a robot's success detector); an episode without
that label is successful when its return reaches a threshold. Every transition of an
episode carries the episode's label.
"""

import math
from typing import Any, Callable, Mapping, Optional

SUCCESS_KEY = 'success'


def episode_success(metadata: Mapping[str, Any], episode_return: float,
                    success_return: Optional[float]) -> bool:
  """The episode's label: metadata['success'] if present, else return >= success_return.

  Raises ValueError for a label that is not a bool or 0 / 1, and for an unlabelled
  episode when there is no threshold.
  """
  if SUCCESS_KEY in metadata:
    value = metadata[SUCCESS_KEY]
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
      return bool(value)
    raise ValueError(f"metadata {SUCCESS_KEY!r} must be true / false (or 1 / 0), got {value!r}")
  if success_return is None:
    raise ValueError(f"no {SUCCESS_KEY!r} label in the episode's metadata and no return "
                     'threshold to label it by (set agent pmpo.success_return)')
  if not math.isfinite(episode_return):
    raise ValueError(f'episode return {episode_return} is not finite')
  return episode_return >= success_return


def make_labeller(success_return: Optional[float]) -> Callable[[Any], bool]:
  """labeller(episode) for `StoreSampler`: reads an Episode's metadata and return."""
  return lambda episode: episode_success(episode.metadata, episode.episode_return, success_return)
