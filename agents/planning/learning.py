"""The dynamics ensemble's update: one pure function from (state, batch) to (state, metrics).

Shaped for agents.jitted_learner.JittedLearner (state a NamedTuple with `steps`), as the
generalist's update is. The normalisation statistics live in the state, so a checkpoint
restores the model's units along with its parameters.
"""

from typing import Dict, NamedTuple, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from agents.planning.losses import ensemble_nll
from networks.dynamics import EnsembleModel, NormalizationStats, normalize_targets


class TransitionBatch(NamedTuple):
  """Transitions, [E, B, ...] (each member its own batch) or [B, ...] (shared)."""

  obs: jnp.ndarray
  action: jnp.ndarray
  reward: jnp.ndarray
  next_obs: jnp.ndarray
  mask: jnp.ndarray  # 1 for a real transition, 0 for padding.


class DynamicsTrainingState(NamedTuple):
  """Everything the model learner needs to continue exactly where it stopped."""

  params: hk.Params
  opt_state: optax.OptState
  stats: NormalizationStats
  steps: jnp.ndarray


def make_optimizer(
  learning_rate: float = 1e-3, max_grad_norm: float = 10.0, weight_decay: float = 1e-5
) -> optax.GradientTransformation:
  return optax.chain(
    optax.clip_by_global_norm(max_grad_norm),
    optax.adamw(learning_rate, weight_decay=weight_decay),
  )


def initial_state(
  model: EnsembleModel,
  optimizer: optax.GradientTransformation,
  stats: NormalizationStats,
  key: jnp.ndarray,
) -> DynamicsTrainingState:
  """Fresh parameters for observations and actions of the statistics' sizes."""
  obs = jnp.zeros((1, len(stats.obs_mean)), jnp.float32)
  action = jnp.zeros((1, len(stats.action_mean)), jnp.float32)
  params = model.init(key, obs, action)
  stats = NormalizationStats(*(jnp.asarray(x, jnp.float32) for x in stats))
  return DynamicsTrainingState(params, optimizer.init(params), stats, jnp.zeros((), jnp.int32))


def bootstrap_indices(
  key: jnp.ndarray, num_members: int, num_data: int, batch_size: int
) -> jnp.ndarray:
  """[E, batch_size] indices into the data, drawn with replacement for each member.

  Independent draws per member are the minibatch form of bootstrapping: each member sees
  its own resampling of the data, which keeps the members' errors from being identical.
  """
  return jax.random.randint(key, (num_members, batch_size), 0, num_data)


def make_update_fn(
  model: EnsembleModel, optimizer: optax.GradientTransformation, reward_weight: float = 1.0
):
  """update(state, batch: TransitionBatch) -> (state, metrics), pure and jittable."""

  def loss_fn(params, stats, batch: TransitionBatch):
    prediction = model.apply(params, batch.obs, batch.action, stats)
    delta, reward = normalize_targets(stats, batch.obs, batch.next_obs, batch.reward)
    out = ensemble_nll(prediction, delta, reward, batch.mask, reward_weight)
    return out['loss'], out

  def update(
    state: DynamicsTrainingState, batch: TransitionBatch
  ) -> Tuple[DynamicsTrainingState, Dict[str, jnp.ndarray]]:
    (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, state.stats, batch)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = DynamicsTrainingState(params, opt_state, state.stats, state.steps + 1)
    metrics = {k: v for k, v in out.items() if k != 'member_nll'}
    metrics['model_loss'] = metrics.pop('loss')
    metrics['grad_norm'] = optax.global_norm(grads)
    return new_state, metrics

  return update
