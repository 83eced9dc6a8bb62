"""Tests for PAC (policy_loss='pac'): the BC term, its mix with the MPO M-step, the alpha
schedule, and the jitted update.

"Reduces to behaviour cloning" is checked precisely: at bc_alpha = 1 the PAC loss no longer
depends on the sampled actions or their E-step weights, and its gradient w.r.t. the policy
parameters equals the gradient of the BC loss whenever the trust region is inactive, i.e.
the online policy equals the target policy (the KL terms are then at their minimum, zero,
with zero gradient). Away from the target the only extra gradient is the trust region's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import types
from acme.utils import loggers

from agents.mpo import learning
from agents.mpo import losses as L
from agents.common.config import merge_overrides
from agents.mpo.config import MPOConfig, PACConfig, bc_alpha_for_iteration
from agents.mpo.learner import MPOLearner
from agents.common.errors import ConfigError
from networks.mpo import make_mpo_networks

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 64
# Dataset actions are this linear function of the observation; with observations in
# [-1, 1]^3 every action lies inside [-0.9, 0.9].
ACTION_MATRIX = np.array([[0.5, -0.3, 0.1], [0.2, 0.4, -0.3]], np.float32)

# Unoptimised machine code compiles several times faster; these tiny programs barely notice.
_FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _f32(x) -> jnp.ndarray:
  return jnp.asarray(np.asarray(x, dtype=np.float32))


def _linear_dataset(seed: int = 0) -> types.Transition:
  """A fixed batch whose actions are ACTION_MATRIX @ observation; rewards are random."""
  rng = np.random.default_rng(seed)
  obs = rng.uniform(-1.0, 1.0, (BATCH, OBS_DIM)).astype(np.float32)
  return types.Transition(
      observation=obs, action=obs @ ACTION_MATRIX.T,
      reward=rng.uniform(0.0, 1.0, BATCH).astype(np.float32),
      discount=rng.choice([0.0, 1.0], BATCH).astype(np.float32),
      next_observation=rng.uniform(-1.0, 1.0, (BATCH, OBS_DIM)).astype(np.float32))


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------
# behaviour_cloning_loss against hand-computed values.
# ---------------------------------------------------------------------------


def test_bc_loss_one_dim_hand_value():
  # Sample 1: N(0.5, 2^2) at 1.5: z = 0.5, NLL = 0.125 + log 2 + log sqrt(2 pi).
  # Sample 2: N(0, 1) at -1: z = -1, NLL = 0.5 + log sqrt(2 pi).
  mean, std, actions = _f32([[0.5], [0.0]]), _f32([[2.0], [1.0]]), _f32([[1.5], [-1.0]])
  expected = ((0.125 + math.log(2.0)) + 0.5) / 2.0 + _HALF_LOG_TWO_PI
  np.testing.assert_allclose(L.behaviour_cloning_loss(mean, std, actions), expected, rtol=1e-6)


def test_bc_loss_sums_action_dims():
  # z = (1, 1) in both dims: NLL = 2 * 0.5 + log 1 + log 0.5 + 2 log sqrt(2 pi).
  loss = L.behaviour_cloning_loss(_f32([[0.0, 0.0]]), _f32([[1.0, 0.5]]), _f32([[1.0, 0.5]]))
  np.testing.assert_allclose(loss, 1.0 - math.log(2.0) + 2.0 * _HALF_LOG_TWO_PI, rtol=1e-6)


def test_bc_loss_gradient_hand_value():
  mean, std, actions = _f32([[0.5], [0.0]]), _f32([[2.0], [1.0]]), _f32([[1.5], [-1.0]])
  g_mean, g_std, g_act = jax.jit(jax.grad(L.behaviour_cloning_loss, argnums=(0, 1, 2)))(
      mean, std, actions)
  # dNLL/dmean = -(a - m) / s^2, dNLL/ds = 1/s - (a - m)^2 / s^3, each over B = 2.
  np.testing.assert_allclose(g_mean, [[-0.25 / 2.0], [1.0 / 2.0]], rtol=1e-6)
  np.testing.assert_allclose(g_std, [[(0.5 - 0.125) / 2.0], [0.0]], atol=1e-7)
  # Dataset actions are data: no gradient flows into them.
  np.testing.assert_array_equal(g_act, np.zeros((2, 1)))


def test_bc_loss_is_minimised_at_the_dataset_action():
  actions = _f32([[0.3, -0.7]])
  std = _f32([[0.5, 0.5]])
  at = L.behaviour_cloning_loss(actions, std, actions)
  for shift in (0.1, -0.2):
    assert float(L.behaviour_cloning_loss(actions + shift, std, actions)) > float(at)


# ---------------------------------------------------------------------------
# pac_policy_loss: alpha = 0 is MPO, alpha = 1 is BC (plus the trust region).
# ---------------------------------------------------------------------------


class PacInputs(NamedTuple):
  t_mean: jnp.ndarray
  t_std: jnp.ndarray
  sampled: jnp.ndarray
  weights: jnp.ndarray
  dataset: jnp.ndarray
  a_mean: jnp.ndarray
  a_std: jnp.ndarray


def _pac_inputs(seed: int = 0, n: int = 4, b: int = 3, a: int = 2) -> PacInputs:
  rng = np.random.default_rng(seed)
  t_mean = rng.normal(size=(b, a))
  t_std = rng.uniform(0.5, 1.5, size=(b, a))
  w = rng.uniform(size=(n, b))
  return PacInputs(
      t_mean=_f32(t_mean), t_std=_f32(t_std),
      sampled=_f32(t_mean + t_std * rng.normal(size=(n, b, a))),
      weights=_f32(w / w.sum(0, keepdims=True)),
      dataset=_f32(rng.uniform(-1.0, 1.0, size=(b, a))),
      a_mean=_f32(rng.normal(size=a)), a_std=_f32(rng.normal(size=a)))


EPS_MEAN, EPS_STD = 0.05, 1e-3


def _pac(online_mean, online_std, x: PacInputs, bc_alpha, sampled=None, weights=None):
  return L.pac_policy_loss(
      online_mean, online_std, x.t_mean, x.t_std,
      x.sampled if sampled is None else sampled, x.weights if weights is None else weights,
      x.dataset, x.a_mean, x.a_std, EPS_MEAN, EPS_STD, bc_alpha)


def _mpo(online_mean, online_std, x: PacInputs, weights=None):
  return L.decoupled_mstep_loss(
      online_mean, online_std, x.t_mean, x.t_std, x.sampled,
      x.weights if weights is None else weights, x.a_mean, x.a_std, EPS_MEAN, EPS_STD)


def test_pac_alpha_zero_equals_the_mpo_mstep():
  x = _pac_inputs()
  om, os_ = x.t_mean + 0.2, x.t_std * 0.9
  pac_loss, pac_m = jax.jit(_pac)(om, os_, x, 0.0)
  mpo_loss, mpo_m = jax.jit(_mpo)(om, os_, x)
  np.testing.assert_allclose(pac_loss, mpo_loss, rtol=1e-6)
  for k, v in mpo_m.items():
    np.testing.assert_allclose(pac_m[k], v, rtol=1e-6, err_msg=k)
  assert float(pac_m['bc_alpha']) == 0.0

  g_pac = jax.jit(jax.grad(lambda m, s, p, q: L.pac_policy_loss(
      m, s, x.t_mean, x.t_std, x.sampled, x.weights, x.dataset, p, q, EPS_MEAN, EPS_STD,
      0.0)[0], argnums=(0, 1, 2, 3)))(om, os_, x.a_mean, x.a_std)
  g_mpo = jax.jit(jax.grad(lambda m, s, p, q: L.decoupled_mstep_loss(
      m, s, x.t_mean, x.t_std, x.sampled, x.weights, p, q, EPS_MEAN, EPS_STD)[0],
      argnums=(0, 1, 2, 3)))(om, os_, x.a_mean, x.a_std)
  for gp, gm in zip(g_pac, g_mpo):
    np.testing.assert_allclose(gp, gm, rtol=1e-6, atol=1e-7)


def _np_log_prob(mean, std, x):
  mean, std, x = (np.asarray(v, np.float64) for v in (mean, std, x))
  return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - _HALF_LOG_TWO_PI


def test_pac_alpha_one_at_the_target_is_bc_plus_multiplier_terms():
  x = _pac_inputs(seed=1)
  loss, metrics = jax.jit(_pac)(x.t_mean, x.t_std, x, 1.0)
  # Online = target: both KLs are 0, so the multiplier loss is sum(alpha * eps).
  softplus = lambda p: np.log1p(np.exp(np.asarray(p, np.float64))) + 1e-8
  multipliers = np.sum(softplus(x.a_mean) * EPS_MEAN + softplus(x.a_std) * EPS_STD)
  per_dim = _np_log_prob(x.t_mean, x.t_std, x.dataset)
  bc = -np.mean(per_dim.sum(-1))
  np.testing.assert_allclose(metrics['bc_loss'], bc, rtol=1e-5)
  np.testing.assert_allclose(loss, bc + multipliers, rtol=1e-5)
  np.testing.assert_allclose(metrics['policy_nll'], 0.0, atol=0.0)
  np.testing.assert_allclose(metrics['kl_mean'], 0.0, atol=1e-7)


def test_pac_alpha_one_ignores_sampled_actions_and_weights():
  x = _pac_inputs(seed=2)
  om, os_ = x.t_mean - 0.3, x.t_std * 1.1  # away from the target: the trust region acts
  grad = jax.jit(jax.grad(
      lambda m, s, sampled, w: _pac(m, s, x, 1.0, sampled, w)[0], argnums=(0, 1)))
  g1 = grad(om, os_, x.sampled, x.weights)
  other = _pac_inputs(seed=3)
  g2 = grad(om, os_, other.sampled * 3.0, other.weights)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  # What is left is BC's gradient plus the trust region's (the M-step with zero weights).
  bc_grad = jax.jit(jax.grad(L.behaviour_cloning_loss, argnums=(0, 1)))(om, os_, x.dataset)
  kl_grad = jax.jit(jax.grad(lambda m, s: _mpo(m, s, x, weights=jnp.zeros_like(x.weights))[0],
                             argnums=(0, 1)))(om, os_)
  assert np.abs(np.asarray(kl_grad[0])).max() > 1e-3  # the trust region does act here
  for g, b, k in zip(g1, bc_grad, kl_grad):
    np.testing.assert_allclose(g, b + k, rtol=1e-5, atol=1e-6)


def test_pac_alpha_one_policy_param_gradient_equals_bc_gradient():
  nets = make_mpo_networks(ACTION_DIM, (16, 16), (8,), 1)
  data = _linear_dataset()
  # Inputs stay numpy: every eager jnp op would cost a compilation of its own.
  obs, dataset_actions = data.observation[:8], data.action[:8]
  rng = np.random.default_rng(4)
  noise = rng.normal(size=(5, 8, ACTION_DIM)).astype(np.float32)
  logits = np.exp(rng.normal(size=(5, 8)))
  weights = (logits / logits.sum(0)).astype(np.float32)
  zeros = np.zeros(ACTION_DIM, np.float32)

  # One compilation: op-by-op haiku init and apply would take seconds.
  @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
  def gradients(key):
    init_key, perturb_key = jax.random.split(key)
    params = nets.policy.init(init_key, obs)
    # Perturbed so that the gradient is not that of the near-constant initial head.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(perturb_key, len(leaves))
    params = jax.tree_util.tree_unflatten(
        treedef, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])
    # The target is the online policy itself: the trust region is inactive.
    t_mean, t_std = jax.lax.stop_gradient(nets.policy.apply(params, obs))
    sampled = t_mean + noise

    def pac(p):
      mean, std = nets.policy.apply(p, obs)
      return L.pac_policy_loss(mean, std, t_mean, t_std, sampled, weights, dataset_actions,
                               zeros, zeros, EPS_MEAN, EPS_STD, 1.0)[0]

    def bc(p):
      mean, std = nets.policy.apply(p, obs)
      return L.behaviour_cloning_loss(mean, std, dataset_actions)

    return jax.grad(pac)(params), jax.grad(bc)(params)

  g_pac, g_bc = jax.device_get(gradients(jax.random.PRNGKey(1)))
  assert max(np.abs(g).max() for g in jax.tree_util.tree_leaves(g_bc)) > 1e-2
  for a, b in zip(jax.tree_util.tree_leaves(g_pac), jax.tree_util.tree_leaves(g_bc)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_pac_loss_is_affine_in_alpha():
  x = _pac_inputs(seed=5)
  # Dataset actions far from the sampled ones make the BC and MPO terms clearly different.
  x = x._replace(dataset=x.dataset + 2.0)
  om, os_ = x.t_mean + 0.1, x.t_std * 0.95
  fn = jax.jit(lambda alpha: _pac(om, os_, x, alpha)[0])
  l0, l1 = float(fn(jnp.float32(0.0))), float(fn(jnp.float32(1.0)))
  assert abs(l1 - l0) > 0.1  # the two ends differ, so the check below has teeth
  for alpha in (0.25, 0.7):
    np.testing.assert_allclose(fn(jnp.float32(alpha)), (1 - alpha) * l0 + alpha * l1, rtol=1e-5)
  assert fn._cache_size() == 1  # alpha is traced: one compilation for every value


# ---------------------------------------------------------------------------
# Config and the alpha schedule.
# ---------------------------------------------------------------------------


def test_bc_alpha_for_iteration_without_schedule():
  config = MPOConfig(policy_loss='pac', pac=PACConfig(alpha=0.3))
  assert [bc_alpha_for_iteration(config, i) for i in (0, 1, 50)] == [0.3, 0.3, 0.3]


def test_bc_alpha_schedule_steps_then_holds_its_last_value():
  config = MPOConfig(policy_loss='pac', pac=PACConfig(alpha=0.1, alpha_schedule=(0.9, 0.6, 0.3)))
  got = [bc_alpha_for_iteration(config, i) for i in range(6)]
  assert got == [0.9, 0.6, 0.3, 0.3, 0.3, 0.3]  # the schedule wins over pac.alpha
  assert bc_alpha_for_iteration(config, np.int64(1)) == 0.6
  for bad in (-1, 1.0, True, None):
    with pytest.raises(ValueError, match='iteration'):
      bc_alpha_for_iteration(config, bad)


@pytest.mark.parametrize('field, value', [
    ('pac.alpha', 1.5), ('pac.alpha', -0.1), ('pac.alpha', float('nan')), ('pac.alpha', '0.5'),
    ('pac.alpha_schedule', ()), ('pac.alpha_schedule', (0.5, 1.2)),
    ('pac.alpha_schedule', [0.5, float('inf')]), ('pac.alpha_schedule', '0.9,0.5'),
    ('policy_loss', 'PAC'),
])
def test_config_rejects_bad_pac_values_naming_the_field(field, value):
  with pytest.raises(ConfigError, match=rf'MPOConfig\.{re.escape(field)}='):
    MPOConfig.from_dict({'policy_loss': 'pac', field: value})


def test_config_pac_boundaries_and_json_round_trip():
  for alpha in (0.0, 1.0):
    assert MPOConfig(policy_loss='pac', pac=PACConfig(alpha=alpha)).pac.alpha == alpha
  config = MPOConfig(policy_loss='pac', pac=PACConfig(alpha_schedule=[1.0, 0.5, 0]))
  assert config.pac.alpha_schedule == (1.0, 0.5, 0)
  # config.json stores the schedule as a list; loading it gives back an equal config.
  assert MPOConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
  assert MPOConfig().policy_loss == 'mpo' and MPOConfig().pac.alpha_schedule is None


# ---------------------------------------------------------------------------
# The jitted update with policy_loss='pac'.
# ---------------------------------------------------------------------------

def _pac_config(**overrides) -> MPOConfig:
  kwargs = dict(policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32), num_atoms=11,
                num_samples=8, replay=dict(batch_size=BATCH, discount=0.5), policy_loss='pac',
                target_update_period=10, policy_learning_rate=1e-3)
  return MPOConfig.from_dict(merge_overrides(MPOConfig, kwargs, overrides))


class Compiled(NamedTuple):
  networks: object
  state: learning.TrainingState
  update: object  # jitted update(state, transitions, bc_alpha)


@functools.lru_cache(maxsize=None)
def _compiled(policy_loss: str) -> Compiled:
  config = _pac_config(policy_loss=policy_loss)
  nets = make_mpo_networks(ACTION_DIM, config.policy_layer_sizes, config.critic_layer_sizes,
                           config.num_atoms)
  # Jitted: op-by-op haiku initialisation compiles every op on its own.
  state = jax.jit(lambda key: learning.initial_state(nets, config, OBS_DIM, key),
                  compiler_options=_FAST_COMPILE)(jax.random.PRNGKey(0))
  update = jax.jit(learning.make_update_fn(nets, config), compiler_options=_FAST_COMPILE)
  return Compiled(nets, state, update)


def _batch() -> types.Transition:
  return jax.tree_util.tree_map(jnp.asarray, _linear_dataset())


def test_pac_update_changes_every_part_and_reports_finite_metrics():
  c = _compiled('pac')
  state, metrics = c.update(c.state, _batch(), np.float32(0.5))
  metrics = {k: float(v) for k, v in metrics.items()}
  assert {'critic_loss', 'policy_loss', 'bc_loss', 'bc_alpha', 'temperature', 'kl_mean',
          'q_mean'} <= set(metrics), sorted(metrics)
  assert all(math.isfinite(v) for v in metrics.values()), metrics
  assert metrics['bc_alpha'] == 0.5
  assert int(state.steps) == 1
  for part in ('policy_params', 'critic_params', 'dual_params'):
    assert not _leaves_equal(getattr(state, part), getattr(c.state, part)), part
  # The target networks only follow every target_update_period updates.
  assert _leaves_equal(state.target_policy_params, c.state.target_policy_params)


def test_pac_alpha_is_a_runtime_input_that_leaves_the_critic_alone():
  c = _compiled('pac')
  batch = _batch()
  results = {a: c.update(c.state, batch, np.float32(a)) for a in (0.0, 0.5, 1.0)}
  # A schedule changes alpha between iterations without compiling the update again.
  assert c.update._cache_size() == 1
  for a, (_, m) in results.items():
    assert float(m['bc_alpha']) == a
  (s0, m0), (s1, m1) = results[0.0], results[1.0]
  assert not _leaves_equal(s0.policy_params, s1.policy_params)
  # The critic's loss and update do not depend on alpha.
  assert float(m0['critic_loss']) == float(m1['critic_loss'])
  assert _leaves_equal(s0.critic_params, s1.critic_params)


def test_pac_alpha_zero_update_is_the_mpo_update():
  pac, mpo = _compiled('pac'), _compiled('mpo')
  assert _leaves_equal(pac.state, mpo.state)  # same seed, same networks
  batch = _batch()
  s_pac, m_pac = pac.update(pac.state, batch, np.float32(0.0))
  s_mpo, m_mpo = mpo.update(mpo.state, batch)
  for a, b in zip(jax.tree_util.tree_leaves(s_pac), jax.tree_util.tree_leaves(s_mpo)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  for k, v in m_mpo.items():
    np.testing.assert_allclose(m_pac[k], v, rtol=1e-5, atol=1e-7, err_msg=k)


def test_pac_alpha_one_fits_the_dataset_actions():
  c = _compiled('pac')
  batch = _batch()
  alpha = np.float32(1.0)

  def mean_error(state) -> np.ndarray:
    mean, _ = c.networks.policy.apply(state.policy_params, batch.observation)
    return np.abs(np.asarray(mean) - np.asarray(batch.action))

  state = c.state
  start = mean_error(state)
  assert start.max() > 0.5  # the initial policy mean is ~0, the actions are not
  for _ in range(300):
    state, metrics = c.update(state, batch, alpha)
  end = mean_error(state)
  assert np.sqrt(np.mean(end ** 2)) < 0.1 * np.sqrt(np.mean(start ** 2)), end
  assert end.max() < 0.15, end.max()
  assert math.isfinite(float(metrics['policy_loss']))
  # The trust region still held every step towards a moving target.
  assert float(metrics['kl_mean']) < 0.05


# ---------------------------------------------------------------------------
# MPOLearner follows the schedule.
# ---------------------------------------------------------------------------


class _Feed:
  def __init__(self, batch: types.Transition):
    self.batch = batch

  def __iter__(self):
    return self

  def __next__(self) -> types.Transition:
    return self.batch


def test_learner_uses_the_alpha_of_its_iteration_without_recompiling():
  config = _pac_config(policy_layer_sizes=(8,), critic_layer_sizes=(8,),
                       pac=dict(alpha_schedule=(0.9, 0.4)))
  nets = make_mpo_networks(ACTION_DIM, config.policy_layer_sizes, config.critic_layer_sizes,
                           config.num_atoms)
  logger = loggers.InMemoryLogger()
  learner = MPOLearner(nets, config, OBS_DIM, _Feed(_linear_dataset()), logger=logger)
  assert learner.bc_alpha == pytest.approx(0.9)
  learner.step()
  assert learner.set_iteration(1) == pytest.approx(0.4)
  learner.step()
  assert learner.set_iteration(7) == pytest.approx(0.4)  # the last entry holds
  learner.set_iteration(0)
  learner.step()
  logged = [m['bc_alpha'] for m in logger.data]
  np.testing.assert_allclose(logged, [0.9, 0.4, 0.9], rtol=1e-6)
  assert learner._update._cache_size() == 1  # pylint: disable=protected-access
  with pytest.raises(ValueError):
    learner.set_iteration(-1)
