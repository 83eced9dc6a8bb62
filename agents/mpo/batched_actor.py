"""The MPO policy for K environments: one jitted call per step, a key per stream."""

from typing import Optional, Sequence

import dm_env
import jax
import numpy as np
from acme import adders

from agents.common.observations import as_policy_input
from agents.mpo.actor import make_policy, prefer_inline_cpu_dispatch
from agents.variable_client import VariableClient
from networks.mpo import MPONetworks


class MPOBatchedActor:
  """agents.batched_actor.BatchedActor for the MPO family's Gaussian policy.

  The single-environment policy is mapped over the streams' keys and observations, so
  stream i draws exactly the actions an MPOActor seeded `seeds[i]` would for the same
  observations and parameters. The parameters refresh every `update_period` calls of
  `update()`, one a step of all streams: each stream acts on parameters at most that
  many of its own steps old, as a single actor does.
  """

  def __init__(
    self,
    networks: MPONetworks,
    variable_client: VariableClient,
    stream_adders: Sequence[Optional[adders.Adder]],
    seeds: Sequence[int],
    deterministic: bool = False,
  ):
    prefer_inline_cpu_dispatch()
    self._cpu = jax.devices('cpu')[0]  # As MPOActor: acting stays on the CPU.
    self._policy = jax.jit(jax.vmap(make_policy(networks, deterministic), in_axes=(None, 0, 0)))
    self._client = variable_client
    self._adders = list(stream_adders)
    keys = np.stack([np.asarray(jax.random.PRNGKey(s)) for s in seeds])
    self._keys = jax.device_put(keys, self._cpu)
    self._host_params = None
    self._device_params = None

  def _params(self):
    params = self._client.params
    if params is not self._host_params:  # A refresh is a new object (see MPOActor).
      self._device_params = jax.device_put(params, self._cpu)
      self._host_params = params
    return self._device_params

  def select_actions(self, observations: np.ndarray) -> np.ndarray:
    observations = as_policy_input(observations)  # Images stay uint8, a dict stays a dict.
    actions, self._keys = self._policy(self._params(), self._keys, observations)
    return np.asarray(actions)

  @property
  def policy_version(self) -> Optional[int]:
    return self._client.version

  def observe_first(self, stream: int, timestep: dm_env.TimeStep) -> None:
    if self._adders[stream]:
      self._adders[stream].add_first(timestep)

  def observe(self, stream: int, action: np.ndarray, next_timestep: dm_env.TimeStep) -> None:
    if self._adders[stream]:
      self._adders[stream].add(action, next_timestep)

  def update(self, wait: bool = False) -> None:
    self._client.update(wait)
