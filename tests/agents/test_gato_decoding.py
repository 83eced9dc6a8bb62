"""Tests for the generalist's action decoder (agents.gato.decoding).

The reference decodes with full forward passes over the whole context, one per action
dimension; the decoder under test uses the key-value cache. Randomly initialised
parameters spread the logits over the vocabulary, so a mismatch between the two paths
shows up as different tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.gato.decoding import CHOICES, action_token_range, choose_tokens, make_action_decoder
from networks.tokenizer import TimestepLayout, Vocabulary, max_timestep_tokens
from networks.transformer import TransformerSizes, make_transformer

VOCAB = Vocabulary()
# Two bodies sharing the parameters: different observation groups and action sizes.
BODIES = (TimestepLayout((2, 1), action_dim=3), TimestepLayout((4,), action_dim=1))
SIZES = TransformerSizes(
  vocab_size=VOCAB.size,
  num_positions=max_timestep_tokens(BODIES),
  max_len=24,
  model_size=16,
  num_heads=2,
  num_layers=2,
)
BATCH, HISTORY = 2, 2  # timesteps already in the context


def _compiled(fn, **kwargs):
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0}, **kwargs)


@functools.lru_cache(maxsize=None)
def _model():
  model = make_transformer(SIZES)
  params = _compiled(model.init)(
    jax.random.PRNGKey(0), np.zeros((1, 4), np.int32), np.zeros((1, 4), np.int32)
  )
  return model, params, _compiled(model.apply), _compiled(model.apply_cached)


def _episode(layout: TimestepLayout, seed: int):
  rng = np.random.default_rng(seed)
  obs = rng.normal(0.0, 2.0, (BATCH, HISTORY + 1, layout.obs_dim)).astype(np.float32)
  actions = rng.uniform(-1.0, 1.0, (BATCH, HISTORY, layout.action_dim)).astype(np.float32)
  history = layout.timestep_tokens(obs[:, :HISTORY], actions).reshape(BATCH, -1)
  positions = np.tile(layout.positions, (BATCH, HISTORY))
  return history, positions, obs[:, HISTORY]


_choose = _compiled(choose_tokens, static_argnums=(2, 3, 4))


@functools.lru_cache(maxsize=None)
def _decoder(body: int, how: str):
  model, *_ = _model()
  return _compiled(make_action_decoder(model, BODIES[body], how))


def _decode_with_full_passes(params, layout, history, positions, obs, key, how):
  """One full forward pass over the whole context per action dimension."""
  _, _, apply, _ = _model()
  allowed = action_token_range(layout)
  tokens = np.concatenate([history, layout.observation_tokens(obs)], axis=1)
  positions = np.concatenate(
    [positions, np.tile(layout.positions[: layout.separator_index + 1], (BATCH, 1))], axis=1
  )
  chosen = []
  for d in range(layout.action_dim):
    # Padded to one length, so one compilation serves every pass; the causal mask keeps
    # the padding from the logits read.
    length = tokens.shape[1]
    padding = np.zeros((BATCH, SIZES.max_len - length), np.int32)
    logits = apply(
      params, np.concatenate([tokens, padding], 1), np.concatenate([positions, padding], 1)
    )[:, length - 1]
    key, sample_key = jax.random.split(key)
    token = np.asarray(_choose(logits, sample_key, allowed, how, layout))
    chosen.append(token)
    tokens = np.concatenate([tokens, token[:, None]], axis=1)
    position = layout.separator_index + 1 + d
    positions = np.concatenate([positions, np.full((BATCH, 1), position)], axis=1)
  return np.stack(chosen, axis=1)


@pytest.mark.parametrize('how', CHOICES)
@pytest.mark.parametrize('body', [0, 1])
def test_cached_decoding_chooses_the_actions_of_full_forward_passes(body, how):
  model, params, _, apply_cached = _model()
  layout = BODIES[body]
  history, positions, obs = _episode(layout, seed=body)
  key = jax.random.PRNGKey(7)
  expected = _decode_with_full_passes(params, layout, history, positions, obs, key, how)

  cache = model.init_cache(BATCH)
  _, cache = apply_cached(params, cache, history, positions)
  decode = _decoder(body, how)
  action, tokens, cache = decode(params, cache, obs, key)
  np.testing.assert_array_equal(tokens, expected)
  assert tokens.shape == (BATCH, layout.action_dim)
  assert int(cache.length) == (HISTORY + 1) * layout.num_tokens
  # The actions are the tokens' bin centres, inside the action box.
  np.testing.assert_allclose(
    action, np.clip(layout.actions(np.asarray(tokens)), -1, 1), rtol=1e-6, atol=1e-7
  )
  assert np.all(np.abs(np.asarray(action)) <= 1.0)
  low, high = action_token_range(layout)
  assert np.all((np.asarray(tokens) >= low) & (np.asarray(tokens) <= high))


def test_the_cache_after_decoding_holds_the_whole_timestep():
  """The next token's logits see the chosen action as a full pass over the timestep does."""
  model, params, apply, apply_cached = _model()
  layout = BODIES[0]
  _, _, obs = _episode(layout, seed=5)
  decode = _decoder(0, 'argmax')
  _, tokens, cache = decode(params, model.init_cache(BATCH), obs, jax.random.PRNGKey(0))
  probe = np.zeros((BATCH, 1), np.int32)
  cached, _ = apply_cached(params, cache, probe, probe)
  timestep = np.concatenate([layout.observation_tokens(obs), np.asarray(tokens), probe], 1)
  length = timestep.shape[1]
  padding = np.zeros((BATCH, SIZES.max_len - length), np.int32)
  positions = np.concatenate([np.tile(layout.positions, (BATCH, 1)), probe, padding], 1)
  expected = apply(params, np.concatenate([timestep, padding], 1), positions)[:, length - 1]
  np.testing.assert_allclose(cached[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_action_token_range_covers_the_action_box():
  assert action_token_range(TimestepLayout((1,), 1)) == (279, 744)  # F(+-1) = +-0.4547
  assert action_token_range(TimestepLayout((1,), 1, action_mu_law=False)) == (0, 1023)
  logits = jnp.asarray(np.arange(10, dtype=np.float32)[None])
  assert int(_choose(logits, jax.random.PRNGKey(0), (2, 5), 'argmax', None)[0]) == 5


def test_the_mean_choice_is_the_bin_of_the_expected_action():
  """Uniform bins: token t stands for (t + 0.5) / 512 - 1. Odds 3:1 on bins 256 and 768
  (-0.49902 and 0.50098): the mean is -0.24902, in bin 384; argmax says 256."""
  layout = TimestepLayout((1,), 1, action_mu_law=False)
  logits = np.full((1, layout.vocab.size), -np.inf, np.float32)
  logits[0, 256], logits[0, 768] = np.log(3.0), 0.0
  key = jax.random.PRNGKey(0)
  assert int(_choose(jnp.asarray(logits), key, (0, 1023), 'mean', layout)[0]) == 384
  assert int(_choose(jnp.asarray(logits), key, (0, 1023), 'argmax', layout)[0]) == 256
  # Only the allowed range counts: with bin 768 outside it, the mean is bin 256's.
  assert int(_choose(jnp.asarray(logits), key, (0, 700), 'mean', layout)[0]) == 256
  with pytest.raises(ValueError, match='layout'):
    choose_tokens(jnp.asarray(logits), key, (0, 1023), 'mean')
  with pytest.raises(ValueError, match='how must be one of'):
    choose_tokens(jnp.asarray(logits), key, (0, 1023), 'greedy')


@pytest.mark.parametrize('how', CHOICES)
def test_the_full_pass_decoder_chooses_what_the_cached_one_does(how):
  from agents.gato.decoding import make_full_pass_decoder

  model, params, _, apply_cached = _model()
  layout = BODIES[0]
  history, positions, obs = _episode(layout, seed=3)
  key = jax.random.PRNGKey(11)
  cache = model.init_cache(BATCH)
  _, cache = apply_cached(params, cache, history, positions)
  _, cached_tokens, _ = _decoder(0, how)(params, cache, obs, key)
  padding = np.zeros((BATCH, SIZES.max_len - history.shape[1]), np.int32)
  decode = _compiled(make_full_pass_decoder(model, layout, how))
  action, tokens, context, _, length = decode(
    params,
    np.concatenate([history, padding], 1),
    np.concatenate([positions, padding], 1),
    history.shape[1],
    obs,
    key,
  )
  np.testing.assert_array_equal(tokens, cached_tokens)
  assert int(length) == (HISTORY + 1) * layout.num_tokens
  # The context now ends with the whole timestep: observation, separator, actions.
  timestep = np.concatenate([layout.observation_tokens(obs), np.asarray(tokens)], 1)
  np.testing.assert_array_equal(np.asarray(context)[:, history.shape[1] : int(length)], timestep)
  assert np.all(np.abs(np.asarray(action)) <= 1.0)
