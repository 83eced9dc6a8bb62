"""An MLP ensemble dynamics model: E members, each a Gaussian over (next-obs delta, reward).

The baseline model for model-based control (as in PETS, Chua et al. 2018): every member
is its own MLP from (observation, action) to the mean and log-std of the change in the
observation and of the reward. The members differ by their initialisation and by the
batches they train on, and their disagreement is the model's epistemic uncertainty.

Everything inside the network is in normalised units: inputs are standardised with the
statistics passed in (`NormalizationStats`, computed once from the training data and
checkpointed with the parameters), and the outputs are standardised targets (`Prediction`
in z-units), so one learning rate suits every task. `to_raw` turns a prediction back into
the environment's units; `normalize_targets` does the inverse for the loss.

The members' layers are batched ([E, in, out] weights, one einsum) rather than E modules,
so E costs one matmul's batching, not E separate ones.
"""

import dataclasses
from typing import NamedTuple, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


class NormalizationStats(NamedTuple):
  """Means and stds of the model's inputs and targets, each [dim] (reward: [])."""

  obs_mean: jnp.ndarray
  obs_std: jnp.ndarray
  action_mean: jnp.ndarray
  action_std: jnp.ndarray
  delta_mean: jnp.ndarray
  delta_std: jnp.ndarray
  reward_mean: jnp.ndarray
  reward_std: jnp.ndarray


def stats_from_transitions(
  obs: np.ndarray,
  actions: np.ndarray,
  next_obs: np.ndarray,
  rewards: np.ndarray,
  min_std: float = 1e-3,
) -> NormalizationStats:
  """The statistics of a set of transitions ([N, dim] arrays, rewards [N]).

  Stds are floored at `min_std`: a constant feature (a fixed target position, say) would
  otherwise divide by zero.
  """
  obs, actions, next_obs = (np.asarray(x, np.float32) for x in (obs, actions, next_obs))
  rewards = np.asarray(rewards, np.float32)
  delta = next_obs - obs

  def moments(x):
    return x.mean(axis=0), np.maximum(x.std(axis=0), np.float32(min_std))

  return NormalizationStats(*moments(obs), *moments(actions), *moments(delta), *moments(rewards))


def identity_stats(obs_dim: int, action_dim: int) -> NormalizationStats:
  """Statistics that leave every value as it is (for tests and untrained models)."""
  z = lambda n: np.zeros(n, np.float32)
  o = lambda n: np.ones(n, np.float32)
  return NormalizationStats(
    z(obs_dim), o(obs_dim), z(action_dim), o(action_dim), z(obs_dim), o(obs_dim),
    np.float32(0), np.float32(1),
  )  # fmt: skip


class Prediction(NamedTuple):
  """Each member's Gaussian over the targets. Shapes [E, B, obs_dim] and [E, B]."""

  delta_mean: jnp.ndarray
  delta_log_std: jnp.ndarray
  reward_mean: jnp.ndarray
  reward_log_std: jnp.ndarray


def to_raw(prediction: Prediction, stats: NormalizationStats) -> Prediction:
  """A z-unit prediction in the environment's units (the delta still a delta)."""
  return Prediction(
    stats.delta_mean + stats.delta_std * prediction.delta_mean,
    prediction.delta_log_std + jnp.log(stats.delta_std),
    stats.reward_mean + stats.reward_std * prediction.reward_mean,
    prediction.reward_log_std + jnp.log(stats.reward_std),
  )


def normalize_targets(
  stats: NormalizationStats, obs: jnp.ndarray, next_obs: jnp.ndarray, reward: jnp.ndarray
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """The targets of a transition in the z-units the model predicts them in."""
  delta = (next_obs - obs - stats.delta_mean) / stats.delta_std
  return delta, (reward - stats.reward_mean) / stats.reward_std


@dataclasses.dataclass(frozen=True)
class EnsembleSizes:
  """The shape of an EnsembleDynamics model."""

  num_members: int
  obs_dim: int
  hidden_sizes: Tuple[int, ...] = (200, 200, 200)
  # Bounds on the predicted log-std in z-units, applied softly so gradients never vanish:
  # without an upper bound the NLL can explain errors away by growing the std, without a
  # lower one a member overfits a few points with a vanishing std.
  min_log_std: float = -5.0
  max_log_std: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, 'hidden_sizes', tuple(int(s) for s in self.hidden_sizes))
    for name in ('num_members', 'obs_dim'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'EnsembleSizes.{name} must be an int >= 1, got {value!r}')
    if not self.hidden_sizes or min(self.hidden_sizes) < 1:
      raise ValueError(f'EnsembleSizes.hidden_sizes must be sizes >= 1, got {self.hidden_sizes}')
    if not self.min_log_std < self.max_log_std:
      raise ValueError(f'min_log_std={self.min_log_std} must be below max_log_std')


class EnsembleLinear(hk.Module):
  """x[E, B, in] -> x @ w[e] + b[e] for each member e: E independent linear layers."""

  def __init__(self, num_members: int, output_size: int, name: str = 'ensemble_linear'):
    super().__init__(name=name)
    self._num_members = num_members
    self._output_size = output_size

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    fan_in = x.shape[-1]
    # Each member's own fan-in scaling (a VarianceScaling over [E, in, out] would count E
    # into the fan and shrink the weights).
    w_init = hk.initializers.TruncatedNormal(1.0 / np.sqrt(fan_in))
    w = hk.get_parameter('w', (self._num_members, fan_in, self._output_size), x.dtype, w_init)
    b = hk.get_parameter('b', (self._num_members, self._output_size), x.dtype, jnp.zeros)
    return jnp.einsum('ebi,eio->ebo', x, w) + b[:, None, :]


def _soft_clamp(x: jnp.ndarray, low: float, high: float) -> jnp.ndarray:
  x = high - jax.nn.softplus(high - x)
  return low + jax.nn.softplus(x - low)


class EnsembleDynamics(hk.Module):
  """(obs, action, stats) -> each member's z-unit Prediction.

  obs [B, obs_dim] and action [B, action_dim] go to every member; with a leading member
  axis ([E, B, ...]) each member gets its own batch (training on bootstrapped batches, or
  planning with one particle per member).
  """

  def __init__(self, sizes: EnsembleSizes, name: str = 'ensemble_dynamics'):
    super().__init__(name=name)
    self._sizes = sizes

  def __call__(
    self, obs: jnp.ndarray, action: jnp.ndarray, stats: NormalizationStats
  ) -> Prediction:
    s = self._sizes
    x = jnp.concatenate(
      [(obs - stats.obs_mean) / stats.obs_std, (action - stats.action_mean) / stats.action_std],
      axis=-1,
    )
    if x.ndim == 2:
      x = jnp.broadcast_to(x, (s.num_members,) + x.shape)
    if x.ndim != 3 or x.shape[0] != s.num_members:
      raise ValueError(
        f'inputs must be [B, dim] or [{s.num_members}, B, dim], got obs {obs.shape} and '
        f'action {action.shape}'
      )
    for i, size in enumerate(s.hidden_sizes):
      x = jax.nn.swish(EnsembleLinear(s.num_members, size, name=f'hidden_{i}')(x))
    out = EnsembleLinear(s.num_members, 2 * s.obs_dim + 2, name='output')(x)
    delta_mean, delta_log_std = out[..., : s.obs_dim], out[..., s.obs_dim : 2 * s.obs_dim]
    reward_mean, reward_log_std = out[..., -2], out[..., -1]
    clamp = lambda v: _soft_clamp(v, s.min_log_std, s.max_log_std)
    return Prediction(delta_mean, clamp(delta_log_std), reward_mean, clamp(reward_log_std))


@dataclasses.dataclass(frozen=True)
class EnsembleModel:
  """Pure functions of one EnsembleDynamics model's parameters."""

  sizes: EnsembleSizes
  transformed: hk.Transformed

  def init(self, key: jnp.ndarray, obs: jnp.ndarray, action: jnp.ndarray) -> hk.Params:
    stats = identity_stats(obs.shape[-1], action.shape[-1])
    return self.transformed.init(key, obs, action, stats)

  def apply(
    self, params: hk.Params, obs: jnp.ndarray, action: jnp.ndarray, stats: NormalizationStats
  ) -> Prediction:
    """Each member's z-unit prediction, [E, B, ...] (see EnsembleDynamics)."""
    return self.transformed.apply(params, obs, action, stats)


def make_ensemble(sizes: EnsembleSizes) -> EnsembleModel:
  """An ensemble dynamics model of these sizes, as pure functions."""

  def forward(obs, action, stats):
    return EnsembleDynamics(sizes)(obs, action, stats)

  return EnsembleModel(sizes, hk.without_apply_rng(hk.transform(forward)))
