"""Tests for the sequence models' tokeniser (networks.tokenizer).

Expected values are worked out by hand from the definitions: with mu = 100 and M = 256,
L = log(1 + mu M) = log(25601) = 10.150387, and F(x) = sign(x) log(1 + 100 |x|) / L.
A bin is 2 / 1024 wide; token k covers [-1 + k / 512, -1 + (k + 1) / 512).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks.tokenizer import (
  TimestepLayout,
  Vocabulary,
  flat_layout,
  max_timestep_tokens,
  mu_law_decode,
  mu_law_encode,
  mu_law_error_bound,
)

VOCAB = Vocabulary()


def test_mu_law_of_hand_computed_points():
  # F(0) = 0; F(1) = log(101) / L = 4.6151205 / 10.150387 = 0.4546744;
  # F(10) = log(1001) / L = 6.9087548 / 10.150387 = 0.6806396; F(256) = L / L = 1.
  x = np.array([0.0, 1.0, -1.0, 10.0, 256.0, -256.0], np.float32)
  np.testing.assert_allclose(
    mu_law_encode(x), [0.0, 0.4546744, -0.4546744, 0.6806396, 1.0, -1.0], atol=1e-6
  )
  np.testing.assert_allclose(mu_law_decode(mu_law_encode(x)), x, rtol=1e-5)


def test_tokens_of_hand_computed_points():
  # 0 -> y = 0, a bin edge: floor(512) = 512. 1 -> floor(1.4546744 * 512) = floor(744.79) = 744.
  # -1 -> floor(0.5453256 * 512) = floor(279.21) = 279. Past M the value clips to bin 0 / 1023.
  x = np.array([0.0, 1.0, -1.0, 1e6, -1e6, 256.0], np.float32)
  np.testing.assert_array_equal(VOCAB.continuous_tokens(x), [512, 744, 279, 1023, 0, 1023])
  # Without mu-law, a value in [-1, 1] is binned as it is: 0.5 -> floor(1.5 * 512) = 768.
  np.testing.assert_array_equal(
    VOCAB.continuous_tokens(np.array([0.5, -1.0, 1.0]), mu_law=False), [768, 0, 1023]
  )
  # Token 512's centre is y = 1/1024: x = (exp(L / 1024) - 1) / 100 = 0.0099618 / 100.
  np.testing.assert_allclose(VOCAB.continuous_values(np.array([512])), [9.96178e-5], rtol=1e-4)
  np.testing.assert_allclose(
    VOCAB.continuous_values(np.array([768]), mu_law=False), [0.5 + 1 / 1024]
  )


@pytest.mark.parametrize('limit', [1e-3, 1.0, 100.0, 256.0])
def test_round_trip_error_within_the_bound_on_every_range(limit):
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.uniform(-limit, limit, 20_000), [0.0, limit, -limit]]).astype(np.float32)
  error = np.abs(VOCAB.continuous_values(VOCAB.continuous_tokens(x)) - x)
  bound = mu_law_error_bound(x)
  # float32 may put a value sitting on a bin edge into the neighbouring bin: an error that
  # small beyond the bound, never a bin's worth.
  assert np.all(error <= bound * (1 + 1e-3) + 1e-7), np.max(error / bound)
  # The bound is tight: some value of the range comes near it.
  assert np.max(error / bound) > 0.9
  # In numbers: about 1% relative error plus 1e-4 (the bound at 0 is 0.01 * 0.00996).
  assert mu_law_error_bound(0.0) == pytest.approx(9.9618e-5, rel=1e-4)
  assert mu_law_error_bound(limit) <= 0.01 * limit + 1e-4


def test_values_beyond_clipping_decode_to_the_outermost_bin_centre():
  # Bin 1023's centre, y = 1 - 1/1024, decodes to (25601 exp(-L/1024) - 1) / 100 = 253.4748.
  x = np.array([300.0, 1e4, -1e9], np.float32)
  decoded = VOCAB.continuous_values(VOCAB.continuous_tokens(x))
  np.testing.assert_allclose(decoded, [253.4748, 253.4748, -253.4748], rtol=1e-5)


def test_uniform_bins_without_mu_law_are_within_half_a_bin():
  x = np.linspace(-1.0, 1.0, 10_001, dtype=np.float32)
  error = np.abs(VOCAB.continuous_values(VOCAB.continuous_tokens(x, False), False) - x)
  assert np.max(error) <= 1 / 1024 + 1e-6


def test_numpy_and_jax_agree_and_jit():
  x = np.random.default_rng(1).normal(0, 30, 1000).astype(np.float32)
  tokens = VOCAB.continuous_tokens(x)
  assert isinstance(tokens, np.ndarray) and tokens.dtype == np.int32
  jax_tokens = jax.jit(VOCAB.continuous_tokens)(jnp.asarray(x))
  assert isinstance(jax_tokens, jax.Array)
  # One ulp of float32 may move a value sitting on a bin edge by one bin.
  assert np.max(np.abs(np.asarray(jax_tokens) - tokens)) <= 1
  assert np.mean(np.asarray(jax_tokens) == tokens) > 0.99
  np.testing.assert_allclose(
    jax.jit(VOCAB.continuous_values)(jax_tokens), VOCAB.continuous_values(tokens), rtol=1e-5
  )


def test_vocabulary_layout():
  vocab = Vocabulary(num_tasks=3)
  assert (vocab.discrete_offset, vocab.separator, vocab.padding) == (1024, 2048, 2049)
  assert [vocab.task_token(i) for i in range(3)] == [2050, 2051, 2052]
  assert vocab.size == 2053
  np.testing.assert_array_equal(vocab.discrete_tokens(np.array([0, 5, 1023])), [1024, 1029, 2047])
  np.testing.assert_array_equal(vocab.discrete_values(np.array([1024, 1029])), [0, 5])
  with pytest.raises(ValueError, match='task index 3'):
    vocab.task_token(3)
  with pytest.raises(ValueError, match='num_bins must be even'):
    Vocabulary(num_bins=1023)


def test_timestep_layout_orders_groups_then_separator_then_actions():
  # Groups: 2 floats, 1 discrete id, 1 float; then 2 action dimensions.
  layout = TimestepLayout((2, 1, 1), action_dim=2, discrete_groups=(1,))
  assert (layout.obs_dim, layout.separator_index, layout.num_tokens) == (4, 4, 7)
  np.testing.assert_array_equal(layout.positions, np.arange(7))
  np.testing.assert_array_equal(layout.action_mask, [0, 0, 0, 0, 0, 1, 1])
  obs = np.array([[0.0, 1.0, 7.0, -1.0]], np.float32)
  action = np.array([[0.0, 1.0]], np.float32)
  tokens = layout.timestep_tokens(obs, action)
  np.testing.assert_array_equal(tokens, [[512, 744, 1024 + 7, 279, 2048, 512, 744]])
  # The same in jax, inside jit.
  jitted = jax.jit(layout.timestep_tokens)(jnp.asarray(obs), jnp.asarray(action))
  np.testing.assert_array_equal(jitted, tokens)
  # Actions decode from their tokens (bin centres), here within the mu-law bound.
  np.testing.assert_allclose(
    layout.actions(tokens[..., layout.action_mask]), action, atol=mu_law_error_bound(1.0)
  )
  # Uniformly binned actions (the option for actions that live in [-1, 1]).
  uniform = TimestepLayout((2, 1, 1), 2, discrete_groups=(1,), action_mu_law=False)
  np.testing.assert_array_equal(uniform.action_tokens(action), [[512, 1023]])


def test_bodies_differ_only_in_token_count():
  small, large = flat_layout(3, 1), TimestepLayout((5, 4), 6)
  assert (small.num_tokens, large.num_tokens) == (5, 16)
  assert max_timestep_tokens([small, large]) == 16
  with pytest.raises(ValueError, match='discrete_groups'):
    TimestepLayout((3,), 1, discrete_groups=(1,))
  with pytest.raises(ValueError, match='action_dim'):
    TimestepLayout((3,), 0)
