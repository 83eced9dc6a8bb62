"""Policies and the acme Actor that runs them inside actor processes."""

from typing import Callable, Optional

import dm_env
import jax
import numpy as np
from acme import adders, core

from agents.common.jax_compat import backends_are_initialized
from agents.common.observations import as_policy_input
from agents.variable_client import VariableClient
from networks.mpo import MPONetworks


def make_policy(networks: MPONetworks, deterministic: bool) -> Callable:
  """policy(params, key, obs[O]) -> (action[A], next_key).

  The action is a sample, or the mean when deterministic. Splitting the key
  inside the jitted function keeps it to one dispatch per environment step.
  """

  def policy(params, key, obs):
    key, sample_key = jax.random.split(key)
    batch = jax.tree_util.tree_map(lambda x: x[None], obs)  # A dict observation's arrays too.
    mean, std = networks.policy.apply(params, batch)
    if deterministic:
      return mean[0], key
    return (mean + std * jax.random.normal(sample_key, mean.shape))[0], key

  return policy


def prefer_inline_cpu_dispatch() -> bool:
  """Runs JAX's CPU computations on the calling thread, if JAX has not started yet.

  By default each CPU computation goes to a worker thread and the caller waits for
  it; for a policy step of a few tens of microseconds that handoff costs as much
  again, and several times that on a busy machine. The CPU client reads the
  setting once, when it is made, so this only acts in a process that has not used
  JAX yet (an actor's, an evaluator's) and leaves a running learner's alone.
  Returns whether it took effect.
  """
  if backends_are_initialized() is not False:  # Started, or another JAX: keep its default.
    return False
  try:
    jax.config.update('jax_cpu_enable_async_dispatch', False)
  except AttributeError:  # A JAX without the setting.
    return False
  return True


class MPOActor(core.Actor):
  """Selects actions with the latest learner parameters and feeds an adder."""

  def __init__(
    self,
    networks: MPONetworks,
    variable_client: VariableClient,
    adder: Optional[adders.Adder] = None,
    seed: int = 0,
    deterministic: bool = False,
  ):
    prefer_inline_cpu_dispatch()
    # Actors run beside the environment on CPU, whatever the learner uses. The
    # parameters and the key are committed to the CPU once, so every policy call
    # runs there without a device context per step (the numpy observation, being
    # uncommitted, follows them).
    self._cpu = jax.devices('cpu')[0]
    self._policy = jax.jit(make_policy(networks, deterministic))
    self._client = variable_client
    self._adder = adder
    self._key = jax.device_put(jax.random.PRNGKey(seed), self._cpu)
    self._host_params = None
    self._device_params = None

  def _params(self):
    """The client's parameters on the CPU device, copied once per refresh, not per step
    (a refresh is a new object: the VariableClient replaces, never mutates, them)."""
    params = self._client.params
    if params is not self._host_params:
      self._device_params = jax.device_put(params, self._cpu)
      self._host_params = params
    return self._device_params

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    # jit takes numpy as it is: no jnp.asarray (a separate device_put) per step. The
    # cast keeps the policy's input type fixed.
    observation = as_policy_input(observation)
    action, self._key = self._policy(self._params(), self._key, observation)
    return np.asarray(action)  # The one device -> host transfer of the step.

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
