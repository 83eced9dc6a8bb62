"""Fetches parameters from a VariableSource (the learner) every few actor steps."""

import time
from typing import Any, List, Optional, Sequence

from acme import core

from agents.common.logs import get_logger

log = get_logger('variables')


class VariableClient:
  """Keeps a local copy of named variables, refreshed every `update_period` calls.

  Fetches are synchronous but rare; a failed fetch keeps the old parameters and
  is retried on the next period, so a restarting learner never stops an actor.
  """

  def __init__(
    self,
    source: core.VariableSource,
    names: Sequence[str],
    update_period: int = 1,
    version_name: Optional[str] = None,
  ):
    """`version_name`, when the source serves one (e.g. 'learner_steps'), is
    fetched with the parameters and kept as `version`: which policy acted."""
    self._source = source
    self._names = list(names)
    self._version_name = version_name
    self.version: Optional[int] = None
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
        names = self._names + ([self._version_name] if self._version_name else [])
        values = list(self._source.get_variables(names))
      except Exception as e:  # pylint: disable=broad-except
        if wait or self._params is None:
          raise
        log.warning('could not refresh parameters from the learner (%s); keeping the old ones', e)
        return
      if self._version_name:
        self.version = int(values.pop())
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


class FixedVariables(core.VariableSource):
  """A VariableSource serving one set of parameters under every name (a kept checkpoint's
  policy, acting outside a running program); set `params` to serve another."""

  def __init__(self, params: Any):
    self.params = params

  def get_variables(self, names: Sequence[str]) -> List[Any]:
    return [self.params for _ in names]


def acting_params(learner_state: Any) -> Any:
  """What a learner state's actors act with: the MPO family keeps `policy_params`, the
  generalist its one `params`."""
  if hasattr(learner_state, 'policy_params'):
    return learner_state.policy_params
  return learner_state.params
