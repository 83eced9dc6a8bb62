"""Hand-computed checks of the dynamics ensemble's loss (agents.planning.losses)."""

import jax.numpy as jnp
import numpy as np

from agents.planning.losses import ensemble_nll, gaussian_nll
from networks.dynamics import Prediction

C = 0.5 * np.log(2 * np.pi)  # 0.918938...: the NLL of a standard normal at its mean.


def test_gaussian_nll_by_hand():
  # N(3; 1, 2^2): z = (3 - 1) / 2 = 1, so 0.5 * 1 + log 2 + C = 2.1120857.
  np.testing.assert_allclose(gaussian_nll(1.0, jnp.log(2.0), 3.0), 2.1120857, rtol=1e-6)
  np.testing.assert_allclose(gaussian_nll(0.0, 0.0, 0.0), C, rtol=1e-6)
  np.testing.assert_allclose(gaussian_nll(0.0, 0.0, -2.0), 2.0 + C, rtol=1e-6)


def _prediction():
  # Two members, two transitions, a 1-d observation. Member 0: N(0, 1) for everything.
  # Member 1: delta N(1, 2^2), reward N(0, 1).
  return Prediction(
    delta_mean=jnp.array([[[0.0], [0.0]], [[1.0], [1.0]]]),
    delta_log_std=jnp.array([[[0.0], [0.0]], [[np.log(2.0)], [np.log(2.0)]]]),
    reward_mean=jnp.zeros((2, 2)),
    reward_log_std=jnp.zeros((2, 2)),
  )


def test_each_member_averages_its_own_batch_and_the_members_add_up():
  delta = jnp.array([[[0.0], [2.0]], [[3.0], [99.0]]])  # Member 1's second one is padding.
  reward = jnp.zeros((2, 2))
  mask = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  out = ensemble_nll(_prediction(), delta, reward, mask)
  # Member 0: transitions (C + C) and (2 + C + C): mean 1 + 2C.
  # Member 1: only the first counts: 2.1120857 (delta, as above) + C (reward).
  member = np.array([1.0 + 2 * C, 2.1120857 + C])
  np.testing.assert_allclose(out['member_nll'], member, rtol=1e-6)
  np.testing.assert_allclose(out['loss'], member.sum(), rtol=1e-6)
  np.testing.assert_allclose(out['reward_nll'], C, rtol=1e-6)
  np.testing.assert_allclose(out['delta_mse'], ((0 + 4) / 2 + 4) / 2, rtol=1e-6)
  # Without the reward term, each member loses exactly its reward NLL, C.
  no_reward = ensemble_nll(_prediction(), delta, reward, mask, reward_weight=0.0)
  np.testing.assert_allclose(no_reward['member_nll'], member - C, rtol=1e-6)


def test_shared_targets_broadcast_to_every_member_and_no_mask_counts_everything():
  out = ensemble_nll(_prediction(), jnp.array([[0.0], [2.0]]), jnp.zeros(2))
  # Member 1 on (0, 2): z = -1/2 and 1/2, so 0.125 + log 2 + C each, plus C for reward.
  expected = np.array([1.0 + 2 * C, 0.125 + np.log(2.0) + 2 * C])
  np.testing.assert_allclose(out['member_nll'], expected, rtol=1e-6)
