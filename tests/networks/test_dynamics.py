"""Shapes and units of the MLP ensemble dynamics model (networks.dynamics)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks import dynamics

SIZES = dynamics.EnsembleSizes(num_members=3, obs_dim=4, hidden_sizes=(16, 16))
BATCH, ACTION_DIM = 5, 2


@functools.lru_cache(maxsize=None)
def _model():
  model = dynamics.make_ensemble(SIZES)
  obs, action = jnp.zeros((1, SIZES.obs_dim)), jnp.zeros((1, ACTION_DIM))
  return model, model.init(jax.random.PRNGKey(0), obs, action), jax.jit(model.apply)


def _inputs(seed=0, members=()):
  rng = np.random.default_rng(seed)
  obs = rng.normal(size=members + (BATCH, SIZES.obs_dim)).astype(np.float32)
  return obs, rng.uniform(-1, 1, size=members + (BATCH, ACTION_DIM)).astype(np.float32)


def test_every_member_predicts_a_gaussian_of_the_right_shape_and_the_members_differ():
  _, params, apply = _model()
  obs, action = _inputs()
  stats = dynamics.identity_stats(SIZES.obs_dim, ACTION_DIM)
  out = apply(params, obs, action, stats)
  assert out.delta_mean.shape == out.delta_log_std.shape == (3, BATCH, SIZES.obs_dim)
  assert out.reward_mean.shape == out.reward_log_std.shape == (3, BATCH)
  for x in out:
    assert np.all(np.isfinite(x))
  assert not np.allclose(out.delta_mean[0], out.delta_mean[1])  # Own initialisations.
  for log_std in (out.delta_log_std, out.reward_log_std):
    assert np.all(log_std >= SIZES.min_log_std) and np.all(log_std <= SIZES.max_log_std)


def test_a_member_axis_gives_each_member_its_own_batch():
  _, params, apply = _model()
  stats = dynamics.identity_stats(SIZES.obs_dim, ACTION_DIM)
  obs, action = _inputs(seed=1, members=(3,))
  out = apply(params, obs, action, stats)
  for e in range(3):
    alone = apply(params, obs[e], action[e], stats)  # Member e's batch, sent to everyone.
    np.testing.assert_allclose(out.delta_mean[e], alone.delta_mean[e], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r'\[3, B, dim\]'):
    apply(params, obs[:2], action[:2], stats)


def test_statistics_make_the_prediction_independent_of_the_units():
  """Observations in other units, with statistics in those units, predict the same z-units
  and so the same raw prediction in the new units."""
  _, params, apply = _model()
  rng = np.random.default_rng(2)
  obs, action = _inputs(seed=2)
  next_obs = obs + rng.normal(size=obs.shape).astype(np.float32)
  reward = rng.normal(size=BATCH).astype(np.float32)
  stats = dynamics.stats_from_transitions(obs, action, next_obs, reward)
  scale, shift = np.float32(10.0), np.float32(3.0)
  scaled = dynamics.stats_from_transitions(obs * scale + shift, action, next_obs * scale + shift,
                                           reward)  # fmt: skip
  a = apply(params, obs, action, stats)
  b = apply(params, obs * scale + shift, action, scaled)
  np.testing.assert_allclose(a.delta_mean, b.delta_mean, rtol=1e-4, atol=1e-5)
  raw_a, raw_b = dynamics.to_raw(a, stats), dynamics.to_raw(b, scaled)
  np.testing.assert_allclose(raw_b.delta_mean, scale * raw_a.delta_mean, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
    raw_b.delta_log_std, raw_a.delta_log_std + np.log(scale), rtol=1e-4, atol=1e-4
  )
  # normalize_targets is to_raw's inverse on the means.
  delta_z, reward_z = dynamics.normalize_targets(stats, obs, next_obs, reward)
  back = dynamics.to_raw(dynamics.Prediction(delta_z, delta_z, reward_z, reward_z), stats)
  np.testing.assert_allclose(back.delta_mean, next_obs - obs, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(back.reward_mean, reward, rtol=1e-5, atol=1e-5)


def test_bad_sizes_are_refused_with_the_field_named():
  with pytest.raises(ValueError, match='num_members'):
    dynamics.EnsembleSizes(num_members=0, obs_dim=3)
  with pytest.raises(ValueError, match='hidden_sizes'):
    dynamics.EnsembleSizes(num_members=2, obs_dim=3, hidden_sizes=())
