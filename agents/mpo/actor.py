"""Policies and the acme Actor that runs them inside actor processes."""

from typing import Callable, Optional

import dm_env
import jax
import jax.numpy as jnp
import numpy as np
from acme import adders
from acme import core

from agents.variable_client import VariableClient
from networks.mpo import MPONetworks


def make_policy(networks: MPONetworks, deterministic: bool) -> Callable:
  """policy(params, key, obs[O]) -> (action[A], next_key).

  The action is a sample, or the mean when deterministic. Splitting the key
  inside the jitted function keeps it to one dispatch per environment step.
  """

  def policy(params, key, obs):
    key, sample_key = jax.random.split(key)
    mean, std = networks.policy.apply(params, obs[None])
    if deterministic:
      return mean[0], key
    return (mean + std * jax.random.normal(sample_key, mean.shape))[0], key

  return policy


class MPOActor(core.Actor):
  """Selects actions with the latest learner parameters and feeds an adder."""

  def __init__(self, networks: MPONetworks, variable_client: VariableClient,
               adder: Optional[adders.Adder] = None, seed: int = 0,
               deterministic: bool = False):
    # Actors run beside the environment on CPU, whatever the learner uses.
    self._cpu = jax.devices('cpu')[0]
    self._policy = jax.jit(make_policy(networks, deterministic))
    self._client = variable_client
    self._adder = adder
    self._key = jax.random.PRNGKey(seed)

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    with jax.default_device(self._cpu):
      action, self._key = self._policy(self._client.params, self._key,
                                       jnp.asarray(observation, jnp.float32))
    return np.asarray(action, dtype=np.float32)

  @property
  def policy_version(self) -> Optional[int]:
    """The learner step of the parameters acting now, when the source serves it."""
    return self._client.version

  def observe_first(self, timestep: dm_env.TimeStep):
    if self._adder:
      self._adder.add_first(timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep):
    if self._adder:
      self._adder.add(action, next_timestep)

  def update(self, wait: bool = False):
    self._client.update(wait)
