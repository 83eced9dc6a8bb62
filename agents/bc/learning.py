"""The behaviour-cloning update: one pure function from (state, batch) to (state, metrics)."""

from typing import Dict, NamedTuple, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from acme import types

from agents.bc.config import BCConfig
from agents.common.learning_rate import learning_rate
from agents.common.observations import ObservationShape, example_observations
from agents.mpo import losses
from networks.mpo import MPONetworks


class BCTrainingState(NamedTuple):
  """Everything the learner needs to continue exactly where it stopped."""

  policy_params: hk.Params
  policy_opt_state: optax.OptState
  steps: jnp.ndarray


def make_optimizer(config: BCConfig) -> optax.GradientTransformation:
  return optax.chain(
    optax.clip_by_global_norm(config.max_grad_norm),
    optax.adam(learning_rate(config.learning_rate, config.lr_decay)),
  )


def initial_state(
  networks: MPONetworks, config: BCConfig, obs_dim: ObservationShape, key: jnp.ndarray
) -> BCTrainingState:
  """Fresh policy parameters; the critic of `networks` is never built."""
  params = networks.policy.init(key, example_observations(obs_dim))
  return BCTrainingState(
    policy_params=params,
    policy_opt_state=make_optimizer(config).init(params),
    steps=jnp.zeros((), jnp.int32),
  )


def make_update_fn(networks: MPONetworks, config: BCConfig):
  """Returns update(state, transitions) -> (state, metrics), pure and jittable.

  Only `observation` and `action` of the transitions are read.
  """
  opt = make_optimizer(config)

  def loss_fn(params, t: types.Transition):
    mean, std = networks.policy.apply(params, t.observation)
    loss = losses.behaviour_cloning_loss(mean, std, t.action)
    # The NLL mixes the fit of the mean with the width of the policy; the squared error
    # shows the fit of the mean (the greedy action) alone.
    metrics = {
      'bc_loss': loss,
      'action_mse': jnp.mean(jnp.sum(jnp.square(mean - t.action), axis=-1)),
      'policy_stddev': jnp.mean(std),
    }
    return loss, metrics

  def update(
    state: BCTrainingState, t: types.Transition
  ) -> Tuple[BCTrainingState, Dict[str, jnp.ndarray]]:
    if networks.augment is not None:  # e.g. DrQ's random shift; the state holds no key
      key = jax.random.fold_in(jax.random.PRNGKey(0), state.steps)
      t = t._replace(observation=networks.augment(key, t.observation))
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.policy_params, t)
    updates, opt_state = opt.update(grads, state.policy_opt_state)
    new_state = BCTrainingState(
      policy_params=optax.apply_updates(state.policy_params, updates),
      policy_opt_state=opt_state,
      steps=state.steps + 1,
    )
    # 'policy_loss' under the MPO learner's name, so logs and plots treat both alike.
    return new_state, {**metrics, 'policy_loss': loss, 'grad_norm_policy': optax.global_norm(grads)}

  return update
