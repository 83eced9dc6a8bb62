"""Pure-JAX loss functions for the MPO family (MPO, DMPO, MO-MPO action penalty, PMPO, PAC).

Shape conventions: N sampled actions per state, B states, A action dims, K atoms.
Every function is side-effect free and jit-able.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from agents.mpo.distributions import gaussian_kl, gaussian_log_prob

Array = jax.Array
Metrics = Dict[str, Array]

_sg = jax.lax.stop_gradient
_MIN_POSITIVE = 1e-8


# ---------------------------------------------------------------------------
# Distributional critic.
# ---------------------------------------------------------------------------


def categorical_projection(target_atoms: Array, target_probs: Array, support: Array) -> Array:
  """Project a categorical on arbitrary atoms onto a fixed, evenly spaced support.

  Args:
    target_atoms: [B, M] atom locations (e.g. r + discount * z); may lie outside the support.
    target_probs: [B, M] probabilities of those atoms.
    support: [K] increasing, evenly spaced grid (K >= 2).

  Returns:
    [B, K] probabilities on `support`; each row sums to the row sum of `target_probs`.
  """
  v_min, v_max = support[0], support[-1]
  delta = (v_max - v_min) / (support.shape[0] - 1)
  atoms = jnp.clip(target_atoms, v_min, v_max)
  # Triangular kernel of width one grid step: an atom's mass goes linearly to its two
  # neighbouring support points, and all of it to a point it sits exactly on.
  distance = jnp.abs(atoms[..., :, None] - support) / delta
  kernel = jnp.clip(1.0 - distance, 0.0, 1.0)
  return jnp.sum(target_probs[..., :, None] * kernel, axis=-2)


def categorical_cross_entropy(logits: Array, target_probs: Array) -> Array:
  """Cross-entropy -sum(target * log_softmax(logits)) over the last axis: [B].

  The target is a constant: no gradient flows into `target_probs`.
  """
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(_sg(target_probs) * log_probs, axis=-1)


def categorical_mean(logits: Array, support: Array) -> Array:
  """Expected value of softmax(logits) over `support` (last axis reduced)."""
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * support, axis=-1)


# ---------------------------------------------------------------------------
# Positive-parameter transforms for the temperature and Lagrange multipliers.
# ---------------------------------------------------------------------------


def _positive_from_param(param: Array) -> Array:
  # The offset keeps the value strictly positive even when softplus underflows.
  return jax.nn.softplus(param) + _MIN_POSITIVE


def temperature_from_param(param: Array) -> Array:
  """Temperature eta = softplus(param) + 1e-8."""
  return _positive_from_param(param)


def _param_from_positive(value: Array) -> Array:
  y = jnp.asarray(value, dtype=jnp.result_type(value, 1.0)) - _MIN_POSITIVE
  # log(expm1(y)) rewritten so that it neither overflows for large y nor loses precision.
  return y + jnp.log(-jnp.expm1(-y))


def param_from_temperature(eta: Array) -> Array:
  """Inverse of `temperature_from_param`, for initialising the parameter from a temperature."""
  return _param_from_positive(eta)


def multiplier_from_param(param: Array) -> Array:
  """Lagrange multiplier alpha = softplus(param) + 1e-8."""
  return _positive_from_param(param)


def param_from_multiplier(alpha: Array) -> Array:
  """Inverse of `multiplier_from_param`, for initialising the parameter from a multiplier."""
  return _param_from_positive(alpha)


# ---------------------------------------------------------------------------
# MPO E-step and M-step.
# ---------------------------------------------------------------------------


def temperature_dual(
  q_values: Array, temperature_param: Array, epsilon: float
) -> Tuple[Array, Array, Array]:
  """MPO E-step: temperature dual loss and non-parametric sample weights.

  Args:
    q_values: [N, B] Q-values of N sampled actions for each of B states.
    temperature_param: scalar unconstrained temperature parameter.
    epsilon: KL bound of the E-step.

  Returns:
    (dual loss scalar, weights [N, B] with each column summing to 1 and carrying no
    gradient, temperature eta scalar).
  """
  # The dual only trains the temperature; the critic is trained by its own loss.
  q = _sg(q_values)
  eta = temperature_from_param(temperature_param)
  num_samples = q.shape[0]
  log_mean_exp = jax.nn.logsumexp(q / eta, axis=0) - jnp.log(float(num_samples))
  loss = eta * epsilon + eta * jnp.mean(log_mean_exp)
  weights = jax.nn.softmax(q / _sg(eta), axis=0)
  return loss, weights, eta


def _mean_over_batch(x: Array, mask: Optional[Array] = None) -> Array:
  """Average over every axis except the last (action) axis; with `mask` (x's shape, 1
  where a dimension exists for that state), each dimension over the states that have it."""
  axes = tuple(range(x.ndim - 1))
  if mask is None:
    return jnp.mean(x, axis=axes)
  return jnp.sum(x * mask, axis=axes) / jnp.maximum(jnp.sum(mask, axis=axes), 1.0)


def weighted_nll(mean: Array, std: Array, actions: Array, weights: Array) -> Array:
  """Weighted negative log-likelihood -(sum_N weights * log pi(a)).mean_B.

  Args:
    mean, std: [B, A] parameters of pi.
    actions: [N, B, A] actions (constants).
    weights: [N, B] weights (constants).
  """
  log_prob = gaussian_log_prob(mean, std, _sg(actions))
  return -jnp.mean(jnp.sum(_sg(weights) * log_prob, axis=0))


def decoupled_mstep_loss(
  online_mean: Array,
  online_std: Array,
  target_mean: Array,
  target_std: Array,
  actions: Array,
  weights: Array,
  alpha_mean_param: Array,
  alpha_std_param: Array,
  epsilon_mean: float,
  epsilon_std: float,
  action_mask: Optional[Array] = None,
) -> Tuple[Array, Metrics]:
  """MPO M-step with decoupled, per-dimension mean and stddev KL constraints.

  Args:
    online_mean, online_std: [B, A] policy being trained (the only policy gradient path).
    target_mean, target_std: [B, A] target policy (constants).
    actions: [N, B, A] sampled actions; weights: [N, B] E-step weights (constants).
    alpha_mean_param, alpha_std_param: [A] unconstrained Lagrange multiplier parameters.
    epsilon_mean, epsilon_std: KL bounds (scalars or [A]).
    action_mask: [B, A], 1 where the state's task has the dimension (several tasks in one
      layout); each dimension's KL is then its mean over the states that have it, so that
      a task's share of the batch does not loosen its trust region. None: all have all.

  Returns:
    (policy loss + multiplier loss, metrics).
  """
  t_mean, t_std = _sg(target_mean), _sg(target_std)
  # Each half only updates one of mean / stddev, so each is regularised independently.
  nll_mean = weighted_nll(online_mean, t_std, actions, weights)
  nll_std = weighted_nll(t_mean, online_std, actions, weights)
  kl_mean = _mean_over_batch(gaussian_kl(t_mean, t_std, online_mean, t_std), action_mask)
  kl_std = _mean_over_batch(gaussian_kl(t_mean, t_std, t_mean, online_std), action_mask)

  alpha_mean = multiplier_from_param(alpha_mean_param)
  alpha_std = multiplier_from_param(alpha_std_param)
  policy_loss = nll_mean + nll_std + jnp.sum(_sg(alpha_mean) * kl_mean + _sg(alpha_std) * kl_std)
  # Descent on this term raises alpha exactly when the KL exceeds its bound.
  multiplier_loss = jnp.sum(
    alpha_mean * (epsilon_mean - _sg(kl_mean)) + alpha_std * (epsilon_std - _sg(kl_std))
  )
  metrics = {
    'kl_mean': jnp.sum(kl_mean),
    'kl_std': jnp.sum(kl_std),
    'alpha_mean': jnp.mean(alpha_mean),
    'alpha_std': jnp.mean(alpha_std),
    'policy_nll': nll_mean + nll_std,
  }
  return policy_loss + multiplier_loss, metrics


def action_penalty(actions: Array, low: Array, high: Array) -> Array:
  """MO-MPO action-bound objective: -||a - clip(a, low, high)||_2 over A: [N, B].

  Zero inside the bounds; feed it to `temperature_dual` (small epsilon) as a second
  objective so its weights favour in-bound actions.
  """
  excess = actions - jnp.clip(actions, low, high)
  squared = jnp.sum(jnp.square(excess), axis=-1)
  # sqrt has an infinite derivative at 0, so route in-bound entries through a dummy value.
  is_outside = squared > 0.0
  safe_squared = jnp.where(is_outside, squared, 1.0)
  return -jnp.where(is_outside, jnp.sqrt(safe_squared), 0.0)


# ---------------------------------------------------------------------------
# PAC: MPO policy improvement regularised towards the dataset actions.
# ---------------------------------------------------------------------------


def behaviour_cloning_loss(mean: Array, std: Array, actions: Array) -> Array:
  """Negative log-likelihood of dataset actions under pi, averaged over the batch.

  Args:
    mean, std: [B, A] parameters of the diagonal Gaussian pi (the gradient path).
    actions: [B, A] dataset actions (constants).

  Returns:
    -mean_B sum_A log N(actions | mean, std^2), a scalar.
  """
  return -jnp.mean(gaussian_log_prob(mean, std, _sg(actions)))


def pac_policy_loss(
  online_mean: Array,
  online_std: Array,
  target_mean: Array,
  target_std: Array,
  sampled_actions: Array,
  weights: Array,
  dataset_actions: Array,
  alpha_mean_param: Array,
  alpha_std_param: Array,
  epsilon_mean: float,
  epsilon_std: float,
  bc_alpha: Array,
  action_mask: Optional[Array] = None,
) -> Tuple[Array, Metrics]:
  """PAC policy loss (Springenberg et al., 2024).

  (1 - bc_alpha) * [MPO M-step weighted NLL] + bc_alpha * [BC NLL of the dataset actions]
  + the decoupled KL trust region to the target policy and its multiplier loss, both at
  full weight whatever bc_alpha is. bc_alpha = 0 gives `decoupled_mstep_loss` exactly;
  bc_alpha = 1 drops the sampled actions and weights entirely.

  Args:
    online_mean, online_std, target_mean, target_std, sampled_actions, weights,
    alpha_mean_param, alpha_std_param, epsilon_mean, epsilon_std: as in
      `decoupled_mstep_loss`.
    dataset_actions: [B, A] actions stored with the batch's states (constants).
    bc_alpha: scalar weight in [0, 1]; may be traced, so a schedule needs no recompile.
    action_mask: as in `decoupled_mstep_loss`.

  Returns:
    (loss, metrics); metrics["policy_nll"] is the M-step NLL already scaled by
    (1 - bc_alpha), metrics["bc_loss"] the unscaled BC NLL.
  """
  bc_alpha = _sg(jnp.asarray(bc_alpha, dtype=jnp.result_type(online_mean)))
  # The weighted NLL is linear in the weights, so scaling them scales the MPO term alone and
  # leaves the trust region, which must hold at any alpha, untouched.
  mstep_loss, metrics = decoupled_mstep_loss(
    online_mean,
    online_std,
    target_mean,
    target_std,
    sampled_actions,
    (1.0 - bc_alpha) * weights,
    alpha_mean_param,
    alpha_std_param,
    epsilon_mean,
    epsilon_std,
    action_mask,
  )
  bc = behaviour_cloning_loss(online_mean, online_std, dataset_actions)
  metrics = {**metrics, 'bc_loss': bc, 'bc_alpha': bc_alpha}
  return mstep_loss + bc_alpha * bc, metrics


# ---------------------------------------------------------------------------
# PMPO: learning from unpaired preferred / dis-preferred samples.
# ---------------------------------------------------------------------------


def pmpo_masks_from_q(q_values: Array, fraction: float) -> Tuple[Array, Array]:
  """Mark the top / bottom `fraction` of the N actions of each state by Q.

  Args:
    q_values: [N, B] Q-values (N >= 2).
    fraction: static Python float in (0, 0.5]; count per state is
      min(max(1, round(fraction * N)), N // 2) so the two sets never overlap.

  Returns:
    (pos_mask, neg_mask), float32 [N, B] each. Ties are broken by sample index.
  """
  num_samples = q_values.shape[0]
  if not 0.0 < fraction <= 0.5:
    raise ValueError(f'fraction must be in (0, 0.5], got {fraction}')
  if num_samples < 2:
    raise ValueError('pmpo_masks_from_q needs at least 2 samples per state')
  count = min(max(1, round(fraction * num_samples)), num_samples // 2)
  # Rank 0 is the lowest Q-value of each state.
  ranks = jnp.argsort(jnp.argsort(q_values, axis=0), axis=0)
  pos_mask = (ranks >= num_samples - count).astype(jnp.float32)
  neg_mask = (ranks < count).astype(jnp.float32)
  return pos_mask, neg_mask


def _masked_mean(values: Array, mask: Array) -> Array:
  return jnp.sum(mask * values) / jnp.maximum(jnp.sum(mask), 1.0)


def pmpo_loss(
  online_mean: Array,
  online_std: Array,
  ref_mean: Array,
  ref_std: Array,
  pos_actions: Array,
  pos_mask: Array,
  neg_actions: Array,
  neg_mask: Array,
  alpha: float,
  beta: float,
  neg_margin: float | None = None,
  neg_mean_only: bool = False,
  neg_mean_bound: float | None = None,
) -> Tuple[Array, Metrics]:
  """Negated PMPO objective.

  Maximises alpha * E_{D+}[log pi(a)] - (1 - alpha) * E_{D-}[log pi(a)]
  - beta * KL(pi_ref || pi), where each expectation is a mask-weighted mean over all
  [N, B] entries and the KL is summed over A and averaged over B.

  Args:
    online_mean, online_std: [B, A] policy pi being trained.
    ref_mean, ref_std: [B, A] reference policy (constants).
    pos_actions, neg_actions: [N, B, A] actions (may be the same array).
    pos_mask, neg_mask: [N, B] membership of the preferred / dis-preferred sets.
    alpha: weight of the preferred term in [0, 1]; beta: KL regularisation weight.
    neg_margin: None, or nats: a dis-preferred log-likelihood counts as at least
      log pi_ref(a) - neg_margin, so the push away from an action stops once the policy
      finds it that much less likely than the reference does.
    neg_mean_only: the dis-preferred term moves the mean only (its stddev is a constant).
    neg_mean_bound: None, or b: the dis-preferred term sees the mean clipped to [-b, b],
      so it pushes no mean past the action bounds.

  The last two are for dis-preferred actions from stored data, which can lie many
  reference stddevs away (samples drawn from the reference stay near it). There
  -log pi(a) grows as 1 / stddev^2 when the stddev shrinks, faster than the KL term
  holds it back, so shrinking the spread would be the cheapest way to "avoid" the
  action and the loss would be unbounded below for any beta.
  """
  log_prob_pos = gaussian_log_prob(online_mean, online_std, _sg(pos_actions))
  neg_std = _sg(online_std) if neg_mean_only else online_std
  neg_mean = online_mean
  if neg_mean_bound is not None:
    neg_mean = jnp.clip(online_mean, -neg_mean_bound, neg_mean_bound)
  log_prob_neg = gaussian_log_prob(neg_mean, neg_std, _sg(neg_actions))
  metrics = {}
  if neg_margin is not None:
    floor = _sg(gaussian_log_prob(ref_mean, ref_std, neg_actions)) - neg_margin
    metrics['pmpo_neg_clipped'] = _masked_mean(
      (log_prob_neg < floor).astype(jnp.float32), _sg(neg_mask)
    )
    log_prob_neg = jnp.maximum(log_prob_neg, floor)
  pos_term = _masked_mean(log_prob_pos, _sg(pos_mask))
  neg_term = _masked_mean(log_prob_neg, _sg(neg_mask))
  kl_per_state = jnp.sum(gaussian_kl(_sg(ref_mean), _sg(ref_std), online_mean, online_std), -1)
  kl = jnp.mean(kl_per_state)
  objective = alpha * pos_term - (1.0 - alpha) * neg_term - beta * kl
  metrics.update({'pmpo_pos_logp': pos_term, 'pmpo_neg_logp': neg_term, 'pmpo_kl': kl})
  return -objective, metrics
