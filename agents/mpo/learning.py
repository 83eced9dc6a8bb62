"""The MPO / PMPO / PAC update: one pure function from (state, batch) to (state, metrics)."""

from typing import Any, Dict, NamedTuple, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax
from acme import types

from agents.common.learning_rate import learning_rate
from agents.common.observations import ObservationShape, example_observations
from agents.mpo import losses
from agents.mpo.config import MPOConfig, bc_alpha_for_iteration
from agents.mpo.distributions import gaussian_sample
from networks.mpo import ACTION_BOUND, MPONetworks


class DualParams(NamedTuple):
  """Unconstrained parameters of the temperature(s) and the KL multipliers."""

  temperature: jnp.ndarray
  penalty_temperature: jnp.ndarray
  alpha_mean: jnp.ndarray  # [A]
  alpha_stddev: jnp.ndarray  # [A]


class TrainingState(NamedTuple):
  """Everything the learner needs to continue exactly where it stopped."""

  policy_params: hk.Params
  target_policy_params: hk.Params
  critic_params: hk.Params
  target_critic_params: hk.Params
  dual_params: DualParams
  policy_opt_state: optax.OptState
  critic_opt_state: optax.OptState
  dual_opt_state: optax.OptState
  steps: jnp.ndarray
  rng: jnp.ndarray


class Optimizers(NamedTuple):
  policy: optax.GradientTransformation
  critic: optax.GradientTransformation
  dual: optax.GradientTransformation


def make_optimizers(config: MPOConfig) -> Optimizers:
  clip = optax.clip_by_global_norm(config.max_grad_norm)
  decay = config.lr_decay
  return Optimizers(
    policy=optax.chain(clip, optax.adam(learning_rate(config.policy_learning_rate, decay))),
    critic=optax.chain(clip, optax.adam(learning_rate(config.critic_learning_rate, decay))),
    dual=optax.adam(config.dual_learning_rate),
  )


def initial_state(
  networks: MPONetworks, config: MPOConfig, obs_dim: ObservationShape, key: jnp.ndarray
) -> TrainingState:
  """Fresh parameters, targets equal to the online networks."""
  opts = make_optimizers(config)
  k_policy, k_critic, k_rng = jax.random.split(key, 3)
  obs = example_observations(obs_dim)
  act = jnp.zeros((1, networks.action_dim), jnp.float32)
  policy_params = networks.policy.init(k_policy, obs)
  critic_params = networks.critic.init(k_critic, obs, act)
  if networks.share_encoder is not None:
    policy_params = networks.share_encoder(policy_params, critic_params)
  a = networks.action_dim
  duals = DualParams(
    temperature=losses.param_from_temperature(jnp.float32(config.init_temperature)),
    penalty_temperature=losses.param_from_temperature(jnp.float32(config.init_temperature)),
    alpha_mean=jnp.full((a,), losses.param_from_multiplier(jnp.float32(config.init_alpha_mean))),
    alpha_stddev=jnp.full(
      (a,), losses.param_from_multiplier(jnp.float32(config.init_alpha_stddev))
    ),
  )
  return TrainingState(
    policy_params=policy_params,
    target_policy_params=policy_params,
    critic_params=critic_params,
    target_critic_params=critic_params,
    dual_params=duals,
    policy_opt_state=opts.policy.init(policy_params),
    critic_opt_state=opts.critic.init(critic_params),
    dual_opt_state=opts.dual.init(duals),
    steps=jnp.zeros((), jnp.int32),
    rng=k_rng,
  )


def make_update_fn(networks: MPONetworks, config: MPOConfig):
  """Returns update(state, transitions, bc_alpha=None) -> (state, metrics), pure and jittable.

  `bc_alpha` is PAC's behaviour-cloning weight (ignored by 'mpo' and 'pmpo'). It is an
  argument, not part of the state, so a schedule can change it between calls: pass it as a
  float32 array (a Python float is weakly typed and would compile a second version). None
  uses the weight of iteration 0.
  """
  opts = make_optimizers(config)
  default_bc_alpha = bc_alpha_for_iteration(config, 0)
  support = jnp.linspace(config.v_min, config.v_max, config.num_atoms)
  distributional = config.num_atoms > 1
  n = config.num_samples
  if networks.encode is not None and networks.share_encoder is None:
    raise ValueError('networks.encode needs share_encoder: one encoder for policy and critic')
  # Where the policy improves on the next states with the critic target's samples (see
  # MPOConfig.share_target_samples).
  share = (
    config.share_target_samples
    and config.policy_loss == 'mpo'
    and networks.encode is None
    and networks.action_mask is None
  )

  def encoded(params, obs):
    """obs as the networks take it: through `params`' encoder once, where they share one.

    The policy's encoder is the critic's (share_encoder after every step, and both targets
    are copied on the same step), so one encoding per (parameters, observations) serves
    every call: three encoder passes an update instead of eight.
    """
    return obs if networks.encode is None else networks.encode.apply(params, obs)

  def expected_q(out):
    """The critic's output as expected Q values (a distributional critic's mean)."""
    return losses.categorical_mean(out, support) if distributional else out

  def q_value(critic_params, obs, actions):
    """Expected Q of each action: obs [B, O], actions [N, B, A] -> [N, B]."""
    # The critic broadcasts obs over the samples: an encoder (e.g. the
    # Perceiver's) then runs once per observation, not once per sample.
    return expected_q(networks.critic.apply(critic_params, obs, actions))

  def critic_loss(critic_params, state: TrainingState, t: types.Transition, key, next_obs):
    """Returns (loss, (metrics, the observations as encoded by critic_params, samples)):
    samples are the target policy's sampled actions at next_obs, their target Q values and
    the target policy's mean and stddev there."""
    t_mean, t_std = networks.policy.apply(state.target_policy_params, next_obs)
    next_actions = gaussian_sample(key, t_mean, t_std, n)  # [N, B, A]
    target_out = networks.critic.apply(state.target_critic_params, next_obs, next_actions)
    samples = (next_actions, expected_q(target_out), t_mean, t_std)
    # The adder's discount already holds gamma^(n-1) * env discounts.
    bootstrap = config.replay.discount * t.discount
    obs = encoded(critic_params, t.observation)
    online_out = networks.critic.apply(critic_params, obs, t.action)
    if distributional:
      # Expectation over target-policy actions of the return distribution.
      next_probs = jnp.mean(jax.nn.softmax(target_out, axis=-1), axis=0)  # [B, K]
      atoms = t.reward[:, None] + bootstrap[:, None] * support[None, :]
      target = losses.categorical_projection(atoms, next_probs, support)
      loss = jnp.mean(losses.categorical_cross_entropy(online_out, target))
      q = losses.categorical_mean(online_out, support)
    else:
      target = jax.lax.stop_gradient(t.reward + bootstrap * jnp.mean(target_out, axis=0))
      loss = 0.5 * jnp.mean(jnp.square(online_out - target))
      q = online_out
    return loss, ({'critic_loss': loss, 'q_mean': jnp.mean(q)}, obs, samples)

  def policy_loss(
    params, state: TrainingState, t: types.Transition, key, bc_alpha, obs, target_obs, shared
  ):
    """`obs`: the states to improve on as the online networks take them; `target_obs`, as
    the targets. `shared`: None, or the critic target's samples at those states."""
    policy_params, duals = params
    dataset_actions = t.action
    mean, std = networks.policy.apply(policy_params, obs)
    if shared is None:
      t_mean, t_std = networks.policy.apply(state.target_policy_params, target_obs)
    else:
      _, _, t_mean, t_std = shared
    if config.learns_from_labels:
      # Stored data: the dataset action of a successful episode is preferred, that of a
      # failed one dis-preferred; the target policy is the KL reference.
      success = t.extras['success'].astype(jnp.float32)[None]  # [1, B]
      taken = dataset_actions[None]  # [1, B, A]
      loss, m = losses.pmpo_loss(
        mean,
        std,
        t_mean,
        t_std,
        taken,
        success,
        taken,
        1.0 - success,
        config.pmpo.alpha,
        config.pmpo.beta,
        neg_margin=config.pmpo.negative_margin,
        neg_mean_only=True,
        neg_mean_bound=ACTION_BOUND,
      )
      return loss, {**m, 'pmpo_success_fraction': jnp.mean(success), 'policy_stddev': jnp.mean(std)}
    action_mask = None
    if shared is not None:
      actions, q, _, _ = shared
    else:
      actions = gaussian_sample(key, t_mean, t_std, n)  # [N, B, A]
      if networks.action_mask is not None:
        # Several tasks in one layout: other tasks' dimensions are exactly 0, as in the data.
        action_mask = networks.action_mask(t.observation)
        actions = actions * action_mask
      q = q_value(state.target_critic_params, target_obs, actions)
    q = jax.lax.stop_gradient(q)
    metrics: Dict[str, Any] = {'sampled_q_mean': jnp.mean(q)}
    if config.policy_loss == 'pmpo':
      pos, neg = losses.pmpo_masks_from_q(q, config.pmpo.fraction)
      loss, m = losses.pmpo_loss(
        mean, std, t_mean, t_std, actions, pos, actions, neg, config.pmpo.alpha, config.pmpo.beta
      )
      metrics.update(m)
      return loss, metrics
    temp_loss, weights, eta = losses.temperature_dual(q, duals.temperature, config.epsilon)
    metrics['temperature'] = eta
    loss = temp_loss
    if config.action_penalty:
      penalty = losses.action_penalty(actions, -ACTION_BOUND, ACTION_BOUND)
      p_loss, p_weights, p_eta = losses.temperature_dual(
        penalty, duals.penalty_temperature, config.epsilon_penalty
      )
      # The weighted likelihood is linear in the weights: summing them sums the objectives.
      weights = weights + p_weights
      loss = loss + p_loss
      metrics['penalty_temperature'] = p_eta
    if config.policy_loss == 'pac':
      m_loss, m = losses.pac_policy_loss(
        mean,
        std,
        t_mean,
        t_std,
        actions,
        weights,
        dataset_actions,
        duals.alpha_mean,
        duals.alpha_stddev,
        config.epsilon_mean,
        config.epsilon_stddev,
        bc_alpha,
        action_mask,
      )
    else:
      m_loss, m = losses.decoupled_mstep_loss(
        mean,
        std,
        t_mean,
        t_std,
        actions,
        weights,
        duals.alpha_mean,
        duals.alpha_stddev,
        config.epsilon_mean,
        config.epsilon_stddev,
        action_mask,
      )
    metrics.update(m)
    if action_mask is None:
      metrics['policy_stddev'] = jnp.mean(std)
    else:  # Over the dimensions the states' tasks have, not the fixed 1s of the others.
      metrics['policy_stddev'] = jnp.sum(std * action_mask) / jnp.sum(action_mask)
    return loss + m_loss, metrics

  def update(
    state: TrainingState, t: types.Transition, bc_alpha: Optional[jnp.ndarray] = None
  ) -> Tuple[TrainingState, Dict]:
    if bc_alpha is None:
      bc_alpha = jnp.float32(default_bc_alpha)
    rng, k_critic, k_policy = jax.random.split(state.rng, 3)
    if networks.augment is not None:  # e.g. DrQ's random shift of image observations
      # Keys of their own (state runs draw exactly what they drew before).
      k_obs, k_next = jax.random.split(jax.random.fold_in(k_critic, 1))
      t = t._replace(
        observation=networks.augment(k_obs, t.observation),
        next_observation=networks.augment(k_next, t.next_observation),
      )
    next_obs = encoded(state.target_critic_params, t.next_observation)
    (c_loss, (c_metrics, obs, samples)), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(
      state.critic_params, state, t, k_critic, next_obs
    )
    if share:  # State observations: the online and the target networks take them as they are.
      obs = target_obs = t.next_observation
    else:
      target_obs = encoded(state.target_critic_params, t.observation)
    (p_loss, p_metrics), (pol_grads, dual_grads) = jax.value_and_grad(policy_loss, has_aux=True)(
      (state.policy_params, state.dual_params),
      state,
      t,
      k_policy,
      bc_alpha,
      jax.lax.stop_gradient(obs),
      target_obs,
      jax.lax.stop_gradient(samples) if share else None,
    )

    c_updates, critic_opt_state = opts.critic.update(c_grads, state.critic_opt_state)
    critic_params = optax.apply_updates(state.critic_params, c_updates)
    p_updates, policy_opt_state = opts.policy.update(pol_grads, state.policy_opt_state)
    policy_params = optax.apply_updates(state.policy_params, p_updates)
    if networks.share_encoder is not None:  # The critic trains it; the policy reads it.
      policy_params = networks.share_encoder(policy_params, critic_params)
    d_updates, dual_opt_state = opts.dual.update(dual_grads, state.dual_opt_state)
    dual_params = optax.apply_updates(state.dual_params, d_updates)

    steps = state.steps + 1
    copy = steps % config.target_update_period == 0
    pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(copy, a, b), new, old)
    new_state = TrainingState(
      policy_params=policy_params,
      target_policy_params=pick(policy_params, state.target_policy_params),
      critic_params=critic_params,
      target_critic_params=pick(critic_params, state.target_critic_params),
      dual_params=dual_params,
      policy_opt_state=policy_opt_state,
      critic_opt_state=critic_opt_state,
      dual_opt_state=dual_opt_state,
      steps=steps,
      rng=rng,
    )
    metrics = {
      **c_metrics,
      **p_metrics,
      'policy_loss': p_loss,
      'grad_norm_critic': optax.global_norm(c_grads),
      'grad_norm_policy': optax.global_norm(pol_grads),
      # The batch's n-step rewards, which the learner holds against the critic's support.
      'reward_max': jnp.max(t.reward),
      'reward_min': jnp.min(t.reward),
    }
    return new_state, metrics

  return update
