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


# --- the model learner's state: normalisation learned from the data as it arrives -----------

# Past this many transitions the running moments weigh a new batch as if this many came
# before: the statistics settle, yet still follow the data as the actors' behaviour drifts.
MAX_MOMENT_COUNT = 1_000_000.0
MIN_STD = 1e-3  # As networks.dynamics.stats_from_transitions floors a constant feature.


class RunningMoments(NamedTuple):
  """Count, means and sums of squared deviations (M2) of the model's inputs and targets."""

  count: jnp.ndarray  # [] transitions seen (capped at MAX_MOMENT_COUNT).
  obs_mean: jnp.ndarray
  obs_m2: jnp.ndarray
  action_mean: jnp.ndarray
  action_m2: jnp.ndarray
  delta_mean: jnp.ndarray
  delta_m2: jnp.ndarray
  reward_mean: jnp.ndarray
  reward_m2: jnp.ndarray


class ModelLearnerState(NamedTuple):
  """Everything the model learner checkpoints: the model, its units, its RNG, its step."""

  params: hk.Params
  opt_state: optax.OptState
  stats: NormalizationStats  # Made from `moments` before each update.
  moments: RunningMoments
  key: jnp.ndarray
  steps: jnp.ndarray


def empty_moments(obs_dim: int, action_dim: int) -> RunningMoments:
  z = lambda *shape: jnp.zeros(shape, jnp.float32)
  return RunningMoments(
    z(), z(obs_dim), z(obs_dim), z(action_dim), z(action_dim), z(obs_dim), z(obs_dim), z(), z()
  )


def _combine(count, mean, m2, x, max_count):
  """Chan et al.'s parallel update of (mean, M2) by a batch x [B, ...]; the old count is
  capped at `max_count` first (see MAX_MOMENT_COUNT)."""
  # M2 sums over `count` samples: scaled down with the count, the variance it means stays.
  m2 = m2 * jnp.minimum(1.0, max_count / jnp.maximum(count, 1.0))
  count = jnp.minimum(count, max_count)
  n = x.shape[0]
  batch_mean = jnp.mean(x, axis=0)
  batch_m2 = jnp.sum((x - batch_mean) ** 2, axis=0)
  total = count + n
  delta = batch_mean - mean
  new_mean = mean + delta * n / total
  new_m2 = m2 + batch_m2 + delta**2 * count * n / total
  return new_mean, new_m2


def update_moments(
  moments: RunningMoments,
  obs: jnp.ndarray,
  action: jnp.ndarray,
  next_obs: jnp.ndarray,
  reward: jnp.ndarray,
  max_count: float = MAX_MOMENT_COUNT,
) -> RunningMoments:
  """The moments after a batch of transitions ([B, dim], reward [B])."""
  m = moments
  values = (obs, action, next_obs - obs, reward)
  pairs = ((m.obs_mean, m.obs_m2), (m.action_mean, m.action_m2))
  pairs += ((m.delta_mean, m.delta_m2), (m.reward_mean, m.reward_m2))
  merged = [_combine(m.count, mean, m2, x, max_count) for (mean, m2), x in zip(pairs, values)]
  count = jnp.minimum(m.count, max_count) + obs.shape[0]
  return RunningMoments(count, *(v for pair in merged for v in pair))


def stats_from_moments(moments: RunningMoments, min_std: float = MIN_STD) -> NormalizationStats:
  """Means and stds (floored at `min_std`; 1 before any data) of the moments."""
  m = moments

  def std(m2):
    var = m2 / jnp.maximum(m.count, 1.0)
    return jnp.where(m.count > 0, jnp.maximum(jnp.sqrt(var), min_std), jnp.ones_like(m2))

  return NormalizationStats(
    m.obs_mean, std(m.obs_m2), m.action_mean, std(m.action_m2),
    m.delta_mean, std(m.delta_m2), m.reward_mean, std(m.reward_m2),
  )  # fmt: skip


def initial_learner_state(
  model: EnsembleModel,
  optimizer: optax.GradientTransformation,
  obs_dim: int,
  action_dim: int,
  key: jnp.ndarray,
) -> ModelLearnerState:
  """Fresh parameters, no data seen yet."""

  # One compilation: run op by op, each of the many small ops compiles on its own (seconds).
  @jax.jit
  def init(key):
    init_key, key = jax.random.split(key)
    moments = empty_moments(obs_dim, action_dim)
    stats = stats_from_moments(moments)
    inner = initial_state(model, optimizer, stats, init_key)
    return ModelLearnerState(inner.params, inner.opt_state, stats, moments, key, inner.steps)

  return init(key)


def make_learner_update_fn(
  model: EnsembleModel,
  optimizer: optax.GradientTransformation,
  reward_weight: float = 1.0,
  max_count: float = MAX_MOMENT_COUNT,
):
  """update(state, transitions) -> (state, metrics): acme Transitions (observation, action,
  reward, next_observation; [B, ...]) in, each member fitted on its own bootstrap of them."""
  fit = make_update_fn(model, optimizer, reward_weight)

  def update(state: ModelLearnerState, transitions) -> Tuple[ModelLearnerState, Dict]:
    obs = jnp.asarray(transitions.observation, jnp.float32)
    action = jnp.asarray(transitions.action, jnp.float32)
    next_obs = jnp.asarray(transitions.next_observation, jnp.float32)
    reward = jnp.asarray(transitions.reward, jnp.float32).reshape(obs.shape[0])
    moments = update_moments(state.moments, obs, action, next_obs, reward, max_count)
    stats = stats_from_moments(moments)
    key, sample_key = jax.random.split(state.key)
    idx = bootstrap_indices(sample_key, model.sizes.num_members, obs.shape[0], obs.shape[0])
    batch = TransitionBatch(
      obs[idx], action[idx], reward[idx], next_obs[idx], jnp.ones(idx.shape, jnp.float32)
    )
    inner = DynamicsTrainingState(state.params, state.opt_state, stats, state.steps)
    inner, metrics = fit(inner, batch)
    new_state = ModelLearnerState(inner.params, inner.opt_state, stats, moments, key, inner.steps)
    return new_state, metrics

  return update
