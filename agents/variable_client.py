"""Fetches parameters from a VariableSource (the learner) every few actor steps."""

import logging
import time
from typing import Any, Optional, Sequence

from acme import core

log = logging.getLogger('collect_infer.variables')


class VariableClient:
  """Keeps a local copy of named variables, refreshed every `update_period` calls.

  Fetches are synchronous but rare; a failed fetch keeps the old parameters and
  is retried on the next period, so a restarting learner never stops an actor.
  """

  def __init__(self, source: core.VariableSource, names: Sequence[str],
               update_period: int = 1):
    self._source = source
    self._names = list(names)
    self._period = max(1, int(update_period))
    self._calls = 0
    self._params: Optional[Any] = None
    self.num_updates = 0
    self.last_update_time: Optional[float] = None

  def update(self, wait: bool = False) -> None:
    self._calls += 1
    if wait or self._params is None or self._calls >= self._period:
      self._calls = 0
      try:
        values = self._source.get_variables(self._names)
      except Exception as e:  # pylint: disable=broad-except
        if wait or self._params is None:
          raise
        log.warning('could not refresh parameters from the learner (%s); keeping the old ones', e)
        return
      self._params = values[0] if len(self._names) == 1 else values
      self.num_updates += 1
      self.last_update_time = time.time()

  def update_and_wait(self) -> None:
    self.update(wait=True)

  @property
  def params(self) -> Any:
    if self._params is None:
      self.update_and_wait()
    return self._params
