"""Tests for the generalist's loss (agents.gato.losses) against hand-computed values."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from agents.gato import losses
from networks.tokenizer import TimestepLayout

V = 5


def test_uniform_logits_cost_log_v_on_masked_positions_only():
  logits = np.zeros((2, 3, V), np.float32)
  # Unmasked positions hold confident, wrong logits: they must add nothing.
  logits[0, 1] = [50.0, -50.0, 0.0, 0.0, 0.0]
  targets = np.array([[0, 1, 2], [3, 4, 0]])
  mask = np.array([[1, 0, 1], [0, 1, 0]], bool)
  loss = losses.masked_cross_entropy(logits, targets, mask)
  np.testing.assert_allclose(loss, math.log(V), rtol=1e-6)
  # Zero weight elsewhere: no gradient reaches an unmasked position.
  grad = jax.grad(losses.masked_cross_entropy)(jnp.asarray(logits), targets, mask)
  assert np.all(np.asarray(grad)[~mask] == 0.0)
  assert np.all(np.abs(np.asarray(grad)[mask]).sum(-1) > 0)


def test_hand_computed_cross_entropy_and_accuracy():
  # Two tokens with logits (0, log 3): p = (1/4, 3/4). Target 1 costs log(4/3), target 0 log 4.
  logits = np.array([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]], np.float32)
  targets = np.array([[1, 0]])
  mask = np.ones((1, 2), bool)
  expected = (math.log(4.0 / 3.0) + math.log(4.0)) / 2
  np.testing.assert_allclose(losses.masked_cross_entropy(logits, targets, mask), expected, 1e-6)
  np.testing.assert_allclose(losses.masked_accuracy(logits, targets, mask), 0.5)
  # Nothing masked in: 0, not NaN.
  assert float(losses.masked_cross_entropy(logits, targets, np.zeros((1, 2), bool))) == 0.0


def test_next_token_loss_scores_the_action_tokens_of_a_timestep():
  layout = TimestepLayout((2,), action_dim=2)  # obs, obs, separator, action, action
  mask = np.tile(layout.action_mask, 2)[None]  # two timesteps
  tokens = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4]])
  # The logits at t put log 3 on token t + 1 (mod V): every target has p = 3 / (3 + 4) there.
  logits = np.zeros((1, 10, V), np.float32)
  for t in range(10):
    logits[0, t, (t + 1) % V] = math.log(3.0)
  out = losses.next_token_loss(logits, tokens, mask)
  np.testing.assert_allclose(out['loss'], math.log(7.0 / 3.0), rtol=1e-6)
  assert float(out['num_targets']) == 4.0 and float(out['accuracy']) == 1.0
  # Only the action targets count: spoiling the prediction of an observation token,
  # the separator or anything after the window's last token changes nothing...
  spoiled = logits.copy()
  spoiled[0, [0, 1, 4, 5, 6, 9]] = np.array([9.0, -9.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(losses.next_token_loss(spoiled, tokens, mask)['loss'], out['loss'])
  # ...while spoiling the one that predicts an action token does.
  spoiled[0, 2] = np.array([9.0, -9.0, 0.0, 0.0, 0.0])
  assert float(losses.next_token_loss(spoiled, tokens, mask)['loss']) > float(out['loss']) + 1


def test_target_positions_pick_the_positions_that_predict_action_tokens():
  layout = TimestepLayout((2,), action_dim=2)  # obs, obs, separator, action, action
  mask = np.tile(layout.action_mask, 2)[None]  # Targets at tokens 3, 4, 8, 9.
  at, valid = losses.target_positions(jnp.asarray(mask), 5)
  # Positions 2, 3, 7, 8 predict them; one filler slot, not valid.
  np.testing.assert_array_equal(np.asarray(at)[0, :4], [2, 3, 7, 8])
  np.testing.assert_array_equal(np.asarray(valid), [[True, True, True, True, False]])
  # The loss at those positions alone is the full loss, whatever the other positions hold.
  rng = np.random.default_rng(0)
  logits = rng.normal(0.0, 2.0, (1, 10, V)).astype(np.float32)
  tokens = rng.integers(0, V, (1, 10))
  full = losses.next_token_loss(logits, tokens, mask)
  gathered = np.take_along_axis(logits, np.asarray(at)[..., None], axis=1)
  sparse = losses.next_token_loss_at(gathered, tokens, at, valid)
  for name in ('loss', 'accuracy', 'num_targets'):
    np.testing.assert_allclose(sparse[name], full[name], rtol=1e-6)
  # Room for fewer than there are: the last targets are left out (sized from the layouts).
  at, valid = losses.target_positions(jnp.asarray(mask), 3)
  np.testing.assert_array_equal(np.asarray(at), [[2, 3, 7]])
  assert bool(np.asarray(valid).all())
