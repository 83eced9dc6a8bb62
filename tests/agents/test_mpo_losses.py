"""Tests for agents.mpo.distributions and agents.mpo.losses against hand-computed values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.mpo import distributions as D
from agents.mpo import learning
from agents.mpo import losses as L
from agents.mpo.config import MPOConfig
from networks.mpo import make_mpo_networks


def _f32(x) -> jnp.ndarray:
    return jnp.asarray(np.asarray(x, dtype=np.float32))


def _np_log_prob_per_dim(mean, std, x):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2.0 * np.pi)


def _jit_grad(fn, argnums=0):
    # Compiling the whole gradient at once is far cheaper than eager op-by-op dispatch.
    return jax.jit(jax.grad(fn, argnums=argnums))


def _gd_solver(loss_fn, lr: float, steps: int, metric_fn):
    """Jitted plain gradient descent `(params, hyper) -> (final params, per-step metric)`.

    `hyper` is traced, so sweeping it reuses one compilation.
    """
    grad_fn = jax.grad(loss_fn)

    def solve(params, hyper):
        def step(p, _):
            g = grad_fn(p, hyper)
            p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
            return p, metric_fn(p, hyper)

        return jax.lax.scan(step, params, None, length=steps)

    return jax.jit(solve)


# ---------------------------------------------------------------------------
# Distributions.
# ---------------------------------------------------------------------------


def test_log_prob_matches_numpy_formula():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(2, 3)).astype(np.float32)
    std = rng.uniform(0.3, 2.0, size=(2, 3)).astype(np.float32)
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)
    expected = _np_log_prob_per_dim(mean, std, x)
    per_dim = D.gaussian_log_prob_per_dim(_f32(mean), _f32(std), _f32(x))
    assert per_dim.shape == (4, 2, 3)
    np.testing.assert_allclose(per_dim, expected, rtol=1e-5, atol=1e-5)
    total = D.gaussian_log_prob(_f32(mean), _f32(std), _f32(x))
    assert total.shape == (4, 2)
    np.testing.assert_allclose(total, expected.sum(-1), rtol=1e-5, atol=1e-5)


def test_log_prob_standard_normal_at_zero_hand_value():
    value = D.gaussian_log_prob(_f32([0.0, 0.0]), _f32([1.0, 1.0]), _f32([0.0, 0.0]))
    np.testing.assert_allclose(value, -math.log(2.0 * math.pi), rtol=1e-6)


def test_gaussian_kl_identical_is_zero():
    mean = _f32([[0.3, -1.0, 2.0]])
    std = _f32([[0.5, 1.0, 3.0]])
    np.testing.assert_allclose(D.gaussian_kl(mean, std, mean, std), np.zeros((1, 3)), atol=1e-6)


def test_gaussian_kl_hand_value():
    # KL(N(0,1) || N(1,2^2)) = log 2 + (1 + 1) / 8 - 1/2.
    kl = D.gaussian_kl(_f32([0.0]), _f32([1.0]), _f32([1.0]), _f32([2.0]))
    np.testing.assert_allclose(kl, [math.log(2.0) + 0.25 - 0.5], rtol=1e-6)


def test_gaussian_kl_matches_monte_carlo_per_dim():
    mean_p = np.array([0.0, 0.5, -1.0], np.float32)
    std_p = np.array([1.0, 0.7, 1.5], np.float32)
    mean_q = np.array([0.3, 0.0, -0.5], np.float32)
    std_q = np.array([1.2, 1.0, 1.0], np.float32)
    x = mean_p + std_p * np.random.default_rng(1).standard_normal((200_000, 3))
    mc = np.mean(_np_log_prob_per_dim(mean_p, std_p, x) - _np_log_prob_per_dim(mean_q, std_q, x), 0)
    kl = D.gaussian_kl(_f32(mean_p), _f32(std_p), _f32(mean_q), _f32(std_q))
    assert kl.shape == (3,)
    np.testing.assert_allclose(kl, mc, atol=1e-2)


def test_gaussian_sample_shape_and_moments():
    mean = _f32([[1.0, -2.0]])
    std = _f32([[0.5, 2.0]])
    samples = D.gaussian_sample(jax.random.PRNGKey(0), mean, std, num_samples=20_000)
    assert samples.shape == (20_000, 1, 2)
    assert samples.dtype == jnp.float32
    np.testing.assert_allclose(samples.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(samples.std(0), std, rtol=0.05)


# ---------------------------------------------------------------------------
# Distributional critic.
# ---------------------------------------------------------------------------

SUPPORT = _f32([-2.0, -1.0, 0.0, 1.0, 2.0])


def test_projection_identity_on_support_points():
    probs = _f32([[0.1, 0.2, 0.3, 0.25, 0.15]])
    out = L.categorical_projection(SUPPORT[None], probs, SUPPORT)
    np.testing.assert_allclose(out, probs, atol=1e-6)


def test_projection_halfway_splits_evenly():
    atoms = _f32([[0.5, 0.5, 0.5, 0.5, 0.5]])
    probs = _f32([[1.0, 0.0, 0.0, 0.0, 0.0]])
    out = L.categorical_projection(atoms, probs, SUPPORT)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 0.5, 0.0]], atol=1e-6)


def test_projection_clips_beyond_edges():
    atoms = _f32([[-10.0, -2.5, 0.25, 3.0, 7.0]])
    probs = _f32([[0.1, 0.2, 0.4, 0.2, 0.1]])
    out = L.categorical_projection(atoms, probs, SUPPORT)
    # 0.25 sits a quarter of the way from 0 to 1: 0.75 * 0.4 to atom 0, 0.25 * 0.4 to atom 1.
    np.testing.assert_allclose(out, [[0.3, 0.0, 0.3, 0.1, 0.3]], atol=1e-6)


def test_projection_discount_shift():
    # r = 1, gamma = 0.5: atoms {0, 0.5, 1, 1.5, 2} with mass 0.2 each.
    atoms = 1.0 + 0.5 * SUPPORT[None]
    probs = jnp.full((1, 5), 0.2, jnp.float32)
    out = jax.jit(L.categorical_projection)(atoms, probs, SUPPORT)
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.3, 0.4, 0.3]], atol=1e-6)


def test_projection_rows_sum_to_one():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(4, 5))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    atoms = rng.normal(size=(4, 1)) + 0.9 * np.asarray(SUPPORT)[None] * 1.7
    out = L.categorical_projection(_f32(atoms), _f32(probs), SUPPORT)
    assert out.shape == (4, 5)
    assert np.all(np.asarray(out) >= 0.0)
    np.testing.assert_allclose(out.sum(-1), np.ones(4), atol=1e-5)


def test_cross_entropy_hand_value_and_gradient():
    # softmax(logits) = [1/6, 2/6, 3/6].
    logits = jnp.log(_f32([[1.0, 2.0, 3.0]]))
    target = _f32([[0.5, 0.5, 0.0]])
    ce = L.categorical_cross_entropy(logits, target)
    np.testing.assert_allclose(ce, [0.5 * math.log(6.0) + 0.5 * math.log(3.0)], rtol=1e-6)

    grad_logits = _jit_grad(lambda z: L.categorical_cross_entropy(z, target).sum())(logits)
    np.testing.assert_allclose(grad_logits, [[1 / 6 - 0.5, 2 / 6 - 0.5, 3 / 6]], atol=1e-6)
    grad_target = _jit_grad(lambda t: L.categorical_cross_entropy(logits, t).sum())(target)
    np.testing.assert_allclose(grad_target, np.zeros((1, 3)), atol=0.0)


def test_categorical_mean_hand_value():
    logits = jnp.log(_f32([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(
        L.categorical_mean(logits, _f32([-1.0, 0.0, 1.0])), [-1 / 6 + 3 / 6], rtol=1e-6
    )


# ---------------------------------------------------------------------------
# E-step.
# ---------------------------------------------------------------------------


def test_temperature_param_roundtrip():
    for eta in [1e-3, 0.1, 1.0, 10.0, 100.0]:
        param = L.param_from_temperature(eta)
        np.testing.assert_allclose(L.temperature_from_param(param), eta, rtol=1e-5)
        param = L.param_from_multiplier(eta)
        np.testing.assert_allclose(L.multiplier_from_param(param), eta, rtol=1e-5)
    np.testing.assert_allclose(L.temperature_from_param(_f32(0.0)), math.log(2.0), rtol=1e-6)


def test_initial_duals_are_the_configured_temperature_and_multipliers():
    # What the learner starts from, read back through the transforms the losses use.
    config = MPOConfig(policy_layer_sizes=(4,), critic_layer_sizes=(4,), num_atoms=1,
                       init_temperature=0.3, init_alpha_mean=2.0, init_alpha_stddev=50.0)
    nets = make_mpo_networks(2, config.policy_layer_sizes, config.critic_layer_sizes,
                             config.num_atoms)
    duals = learning.initial_state(nets, config, 3, jax.random.PRNGKey(0)).dual_params
    for param in (duals.temperature, duals.penalty_temperature):
        assert param.shape == () and param.dtype == jnp.float32
        np.testing.assert_allclose(L.temperature_from_param(param), 0.3, rtol=1e-6)
    for param, alpha in ((duals.alpha_mean, 2.0), (duals.alpha_stddev, 50.0)):
        assert param.shape == (2,) and param.dtype == jnp.float32
        np.testing.assert_allclose(L.multiplier_from_param(param), [alpha, alpha], rtol=1e-6)


def test_estep_weights_match_numpy_softmax():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(5, 3)).astype(np.float32)
    eta = 0.7
    _, weights, temperature = L.temperature_dual(_f32(q), L.param_from_temperature(eta), 0.1)
    np.testing.assert_allclose(temperature, eta, rtol=1e-5)
    expected = np.exp(q / eta) / np.exp(q / eta).sum(0, keepdims=True)
    assert weights.shape == (5, 3)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights.sum(0), np.ones(3), atol=1e-6)


def test_estep_weights_carry_no_gradient():
    q = _f32([[1.0, 2.0], [3.0, 0.0]])
    c = _f32([[1.0, -2.0], [0.5, 3.0]])

    def weighted(q_values, param):
        return jnp.sum(c * L.temperature_dual(q_values, param, 0.1)[1])

    gq, gp = _jit_grad(weighted, argnums=(0, 1))(q, _f32(0.3))
    np.testing.assert_allclose(gq, np.zeros((2, 2)), atol=0.0)
    np.testing.assert_allclose(gp, 0.0, atol=0.0)


def test_temperature_dual_hand_value():
    # eta = 1, eps = 0.1, N = 2:
    # g = 0.1 + mean(logsumexp([1, 3]), logsumexp([2, 0])) - log 2
    #   = 0.1 + (3 + 2 + 2 * log(1 + e^-2)) / 2 - log 2.
    q = _f32([[1.0, 2.0], [3.0, 0.0]])
    loss, _, _ = L.temperature_dual(q, L.param_from_temperature(1.0), 0.1)
    expected = 0.1 + (5.0 + 2.0 * math.log1p(math.exp(-2.0))) / 2.0 - math.log(2.0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)

    # eta = 2: g = 2 * 0.1 + 2 * (mean(logsumexp([0.5, 1.5]), logsumexp([1, 0])) - log 2).
    loss2, _, _ = L.temperature_dual(q, L.param_from_temperature(2.0), 0.1)
    lse = (1.5 + math.log1p(math.exp(-1.0)) + 1.0 + math.log1p(math.exp(-1.0))) / 2.0
    np.testing.assert_allclose(loss2, 0.2 + 2.0 * (lse - math.log(2.0)), rtol=1e-5)


def test_temperature_dual_large_q_is_stable():
    q = _f32([[1000.0, -1000.0], [990.0, -990.0]])
    loss, weights, _ = L.temperature_dual(q, L.param_from_temperature(0.01), 0.1)
    grad = _jit_grad(lambda p: L.temperature_dual(q, p, 0.1)[0])(L.param_from_temperature(0.01))
    assert np.isfinite(loss) and np.isfinite(grad)
    assert np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights.sum(0), np.ones(2), atol=1e-6)


def _np_dual_argmin(q: np.ndarray, eps: float) -> float:
    etas = np.linspace(0.05, 20.0, 20_000)[:, None, None]
    log_mean_exp = np.log(np.mean(np.exp(q.astype(np.float64) / etas), axis=1))
    vals = etas[:, 0, 0] * (eps + np.mean(log_mean_exp, axis=-1))
    return float(etas[int(np.argmin(vals)), 0, 0])


def test_temperature_minimiser_moves_the_right_way():
    q = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)

    solve = _gd_solver(
        lambda p, eps: L.temperature_dual(_f32(q), p, eps)[0],
        lr=0.5,
        steps=400,
        metric_fn=lambda p, eps: p,
    )

    def minimise(eps: float) -> float:
        param, _ = solve(L.param_from_temperature(1.0), jnp.float32(eps))
        return float(L.temperature_from_param(param))

    eta_tight, eta_mid, eta_loose = minimise(0.01), minimise(0.1), minimise(0.5)
    # Smaller KL bound -> flatter weights -> larger temperature.
    assert eta_tight > eta_mid > eta_loose
    np.testing.assert_allclose(eta_mid, _np_dual_argmin(q, 0.1), rtol=0.02)
    np.testing.assert_allclose(eta_loose, _np_dual_argmin(q, 0.5), rtol=0.02)


# ---------------------------------------------------------------------------
# M-step.
# ---------------------------------------------------------------------------


def _mstep_inputs(seed: int = 0, n: int = 4, b: int = 3, a: int = 2):
    rng = np.random.default_rng(seed)
    target_mean = rng.normal(size=(b, a)).astype(np.float32)
    target_std = rng.uniform(0.5, 1.5, size=(b, a)).astype(np.float32)
    actions = (target_mean + target_std * rng.normal(size=(n, b, a))).astype(np.float32)
    w = rng.uniform(size=(n, b)).astype(np.float32)
    weights = w / w.sum(0, keepdims=True)
    return _f32(target_mean), _f32(target_std), _f32(actions), _f32(weights)


def test_mstep_equal_params_zero_kl_and_hand_loss():
    t_mean, t_std, actions, weights = _mstep_inputs()
    a_params = _f32([0.0, 1.0])
    eps_mean, eps_std = 0.1, 0.01
    loss, metrics = jax.jit(L.decoupled_mstep_loss)(
        t_mean, t_std, t_mean, t_std, actions, weights, a_params, a_params, eps_mean, eps_std
    )
    np.testing.assert_allclose(metrics["kl_mean"], 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics["kl_std"], 0.0, atol=1e-6)

    logp = _np_log_prob_per_dim(np.asarray(t_mean), np.asarray(t_std), np.asarray(actions)).sum(-1)
    nll = -np.mean(np.sum(np.asarray(weights) * logp, 0))
    alpha = np.log1p(np.exp(np.asarray(a_params))) + 1e-8
    expected = 2.0 * nll + np.sum(alpha * eps_mean + alpha * eps_std)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["policy_nll"], 2.0 * nll, rtol=1e-5)
    np.testing.assert_allclose(metrics["alpha_mean"], alpha.mean(), rtol=1e-5)


def test_mstep_multiplier_gradient_direction():
    t_mean, t_std, actions, weights = _mstep_inputs()
    online_mean = t_mean + 0.5
    online_std = t_std * 1.5

    def alpha_grads(eps):
        fn = lambda pm, ps: L.decoupled_mstep_loss(
            online_mean, online_std, t_mean, t_std, actions, weights, pm, ps, eps, eps
        )[0]
        return _jit_grad(fn, argnums=(0, 1))(jnp.zeros(2), jnp.zeros(2))

    # KL > eps: descent must raise alpha, i.e. negative gradient on the param.
    g_mean, g_std = alpha_grads(1e-6)
    assert np.all(np.asarray(g_mean) < 0.0) and np.all(np.asarray(g_std) < 0.0)
    # KL < eps: descent must lower alpha.
    g_mean, g_std = alpha_grads(100.0)
    assert np.all(np.asarray(g_mean) > 0.0) and np.all(np.asarray(g_std) > 0.0)

    # Hand value: d/dparam = sigmoid(0) * (eps - kl_mean_d) with kl_mean_d = mean_B 0.5^2/(2 s^2).
    eps = 1e-6
    g_mean, _ = alpha_grads(eps)
    kl_mean_d = np.mean(0.25 / (2.0 * np.asarray(t_std) ** 2), 0)
    np.testing.assert_allclose(g_mean, 0.5 * (eps - kl_mean_d), rtol=1e-4)


def test_mstep_mean_moves_towards_heavily_weighted_action():
    actions = _f32([[[1.0]], [[-1.0]]])
    weights = _f32([[0.9], [0.1]])
    mean, std = _f32([[0.0]]), _f32([[1.0]])
    alpha = _f32([0.0])

    def fn(om, tm):
        return L.decoupled_mstep_loss(om, std, tm, std, actions, weights, alpha, alpha, 0.1, 0.1)[0]

    g_online, g_target = _jit_grad(fn, argnums=(0, 1))(mean, mean)
    # d nll / d mean = -sum_N w (a - mean) / std^2 = -(0.9 - 0.1); KL gradient is zero here.
    np.testing.assert_allclose(g_online, [[-0.8]], rtol=1e-6)
    np.testing.assert_allclose(g_target, [[0.0]], atol=0.0)


def test_mstep_gradients_finite_and_target_is_constant():
    t_mean, t_std, actions, weights = _mstep_inputs(seed=4)

    def fn(om, os_, tm, ts, pm, ps):
        return L.decoupled_mstep_loss(om, os_, tm, ts, actions, weights, pm, ps, 0.1, 1e-3)[0]

    grads = _jit_grad(fn, argnums=tuple(range(6)))(
        t_mean + 0.2, t_std * 0.8, t_mean, t_std, jnp.zeros(2), jnp.ones(2)
    )
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(grads[2], np.zeros_like(t_mean), atol=0.0)
    np.testing.assert_allclose(grads[3], np.zeros_like(t_std), atol=0.0)


# ---------------------------------------------------------------------------
# Action penalty.
# ---------------------------------------------------------------------------


def test_action_penalty_values():
    actions = _f32([[[0.5, -0.5], [2.0, -3.0]], [[1.0, -1.0], [0.0, 1.5]]])
    low, high = _f32([-1.0, -1.0]), _f32([1.0, 1.0])
    out = L.action_penalty(actions, low, high)
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.0, -math.sqrt(5.0)], [0.0, -0.5]], atol=1e-6)
    grad = _jit_grad(lambda a: L.action_penalty(a, low, high).sum())(actions)
    assert np.all(np.isfinite(np.asarray(grad)))
    np.testing.assert_allclose(grad[0, 0], [0.0, 0.0], atol=0.0)


def test_action_penalty_weights_prefer_in_bound_actions():
    actions = _f32([[[0.0]], [[3.0]]])
    penalty = L.action_penalty(actions, _f32([-1.0]), _f32([1.0]))
    _, weights, _ = L.temperature_dual(penalty, L.param_from_temperature(1.0), 1e-3)
    assert float(weights[0, 0]) > float(weights[1, 0])


# ---------------------------------------------------------------------------
# PMPO.
# ---------------------------------------------------------------------------


def test_pmpo_masks_select_argmax_and_argmin():
    q = _f32([[0.1, 5.0, -1.0], [0.4, 2.0, -3.0], [0.3, 1.0, 4.0], [0.2, 3.0, 0.0]])
    pos, neg = jax.jit(L.pmpo_masks_from_q, static_argnums=1)(q, 0.25)
    expected_pos = np.zeros((4, 3), np.float32)
    expected_neg = np.zeros((4, 3), np.float32)
    expected_pos[np.argmax(q, 0), np.arange(3)] = 1.0
    expected_neg[np.argmin(q, 0), np.arange(3)] = 1.0
    assert pos.dtype == jnp.float32
    np.testing.assert_array_equal(pos, expected_pos)
    np.testing.assert_array_equal(neg, expected_neg)


def test_pmpo_masks_counts_and_validation():
    q = jnp.asarray(np.random.default_rng(5).normal(size=(10, 4)), jnp.float32)
    pos, neg = L.pmpo_masks_from_q(q, 0.3)
    np.testing.assert_array_equal(pos.sum(0), np.full(4, 3.0))
    np.testing.assert_array_equal(neg.sum(0), np.full(4, 3.0))
    assert float(jnp.max(pos * neg)) == 0.0
    with pytest.raises(ValueError):
        L.pmpo_masks_from_q(q, 0.6)


def test_pmpo_alpha_one_equals_weighted_nll_plus_kl():
    t_mean, t_std, actions, _ = _mstep_inputs(seed=6, n=4, b=3)
    pos_mask = _f32([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    neg_mask = 1.0 - pos_mask
    online_mean, online_std = t_mean + 0.3, t_std * 1.2
    beta = 0.7
    loss, metrics = jax.jit(L.pmpo_loss)(
        online_mean, online_std, t_mean, t_std, actions, pos_mask, actions, neg_mask, 1.0, beta
    )
    b = pos_mask.shape[1]
    weights = pos_mask / pos_mask.sum() * b
    kl = np.mean(
        np.sum(
            np.log(np.asarray(online_std) / np.asarray(t_std))
            + (np.asarray(t_std) ** 2 + 0.3**2) / (2.0 * np.asarray(online_std) ** 2)
            - 0.5,
            -1,
        )
    )
    np.testing.assert_allclose(metrics["pmpo_kl"], kl, rtol=1e-5)
    expected = L.weighted_nll(online_mean, online_std, actions, weights) + beta * kl
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def _pmpo_negative_only_solver():
    ref_mean, ref_std = jnp.zeros((3, 2)), jnp.ones((3, 2))
    actions = ref_mean + ref_std * jax.random.normal(jax.random.PRNGKey(0), (16, 3, 2))
    mask = jnp.ones((16, 3))

    def run(params, beta):
        mean, log_std = params
        return L.pmpo_loss(
            mean, jnp.exp(log_std), ref_mean, ref_std, actions, mask, actions, mask, 0.0, beta
        )

    solve = _gd_solver(
        lambda p, beta: run(p, beta)[0],
        lr=0.05,
        steps=300,
        metric_fn=lambda p, beta: run(p, beta)[1]["pmpo_kl"],
    )
    return lambda beta: solve((ref_mean, jnp.log(ref_std)), jnp.float32(beta))


def test_pmpo_negative_only_needs_kl_regulariser():
    solve = _pmpo_negative_only_solver()
    (mean, log_std), kls_reg = solve(2.0)
    kls_reg = np.asarray(kls_reg)
    assert np.all(np.isfinite(kls_reg))
    assert np.all(np.isfinite(np.asarray(mean))) and np.all(np.isfinite(np.asarray(log_std)))
    assert kls_reg.max() < 1.0

    _, kls_free = solve(0.0)
    kls_free = np.asarray(kls_free)
    # Without the KL term, pushing away from D- alone blows up (large KL or non-finite).
    assert np.nan_to_num(kls_free, nan=np.inf).max() > 100.0


# ---------------------------------------------------------------------------
# Gradients of every loss are finite.
# ---------------------------------------------------------------------------


def test_all_loss_gradients_finite():
    key = jax.random.PRNGKey(7)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    logits = jax.random.normal(k1, (3, 5))
    target = jax.nn.softmax(jax.random.normal(k2, (3, 5)))
    q = jax.random.normal(k3, (4, 3))
    t_mean, t_std, actions, weights = _mstep_inputs(seed=8)
    ref_mean = jax.random.normal(k4, (3, 2))
    pos, neg = L.pmpo_masks_from_q(q, 0.25)

    grads = [
        _jit_grad(lambda z: L.categorical_cross_entropy(z, target).sum())(logits),
        _jit_grad(lambda z: L.categorical_mean(z, SUPPORT).sum())(logits),
        _jit_grad(
            lambda p: L.categorical_projection(1.0 + 0.9 * SUPPORT[None], p, SUPPORT).sum()
        )(target),
        _jit_grad(lambda p: L.temperature_dual(q, p, 0.1)[0])(_f32(0.5)),
        _jit_grad(lambda a: L.action_penalty(a, -0.5, 0.5).sum())(actions),
        _jit_grad(
            lambda m, s: L.weighted_nll(m, s, actions, weights), argnums=(0, 1)
        )(t_mean, t_std),
        _jit_grad(
            lambda m, s: L.pmpo_loss(
                m, s, ref_mean, t_std, actions, pos, actions, neg, 0.5, 0.1
            )[0],
            argnums=(0, 1),
        )(t_mean, t_std),
        _jit_grad(
            lambda m, s, pm, ps: L.decoupled_mstep_loss(
                m, s, t_mean, t_std, actions, weights, pm, ps, 0.1, 1e-3
            )[0],
            argnums=(0, 1, 2, 3),
        )(t_mean + 0.1, t_std, jnp.zeros(2), jnp.zeros(2)),
    ]
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(np.asarray(leaf)))
