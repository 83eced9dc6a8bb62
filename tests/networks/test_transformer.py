"""Tests for the decoder-only transformer and its key-value cache (networks.transformer)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from networks.transformer import KVCache, TransformerSizes, make_transformer

SIZES = TransformerSizes(
  vocab_size=37, num_positions=5, max_len=16, model_size=16, num_heads=2, num_layers=2
)
BATCH, LENGTH = 2, 12


def _compiled(fn):
  # Unoptimised compilation: on two busy cores compiling, not running, is what these cost.
  return jax.jit(fn, compiler_options={'xla_backend_optimization_level': 0})


@functools.lru_cache(maxsize=None)
def _model():
  """The model, its parameters and its two paths, compiled once for the module."""
  model = make_transformer(SIZES)
  tokens, positions = _sequence()
  params = _compiled(model.init)(jax.random.PRNGKey(0), tokens, positions)
  return model, params, _compiled(model.apply), _compiled(model.apply_cached)


def _sequence(seed: int = 0):
  tokens = np.random.default_rng(seed).integers(0, SIZES.vocab_size, (BATCH, LENGTH))
  # Timesteps of 4 tokens: positions 0..3 repeating, as a TimestepLayout gives them.
  positions = np.tile(np.arange(LENGTH) % 4, (BATCH, 1))
  return tokens.astype(np.int32), positions.astype(np.int32)


def test_logits_cover_the_vocabulary_and_depend_on_the_parameters():
  model, params, apply, _ = _model()
  tokens, positions = _sequence()
  logits = np.asarray(apply(params, tokens, positions))
  assert logits.shape == (BATCH, LENGTH, SIZES.vocab_size)
  assert np.all(np.isfinite(logits)) and np.std(logits) > 0.1
  other = jax.tree_util.tree_map(lambda x: 1.5 * x, params)
  assert not np.allclose(apply(other, tokens, positions), logits)


@pytest.mark.parametrize('changed', [0, 5, LENGTH - 1])
def test_changing_a_later_token_never_changes_earlier_logits(changed):
  _, params, apply, _ = _model()
  tokens, positions = _sequence()
  before = np.asarray(apply(params, tokens, positions))
  tokens = tokens.copy()
  tokens[:, changed] = (tokens[:, changed] + 1) % SIZES.vocab_size
  after = np.asarray(apply(params, tokens, positions))
  np.testing.assert_allclose(after[:, :changed], before[:, :changed], atol=1e-6)
  # ...and the changed token does reach its own and every later position.
  assert np.all(np.abs(after[:, changed:] - before[:, changed:]).max(axis=-1) > 1e-4)
  # A later position's embedding changes nothing earlier either.
  positions = positions.copy()
  positions[:, changed] = 4
  moved = np.asarray(apply(params, tokens, positions))
  np.testing.assert_allclose(moved[:, :changed], before[:, :changed], atol=1e-6)


def test_token_by_token_cached_logits_equal_the_full_forward_pass():
  model, params, apply, apply_cached = _model()
  tokens, positions = _sequence(seed=3)
  full = np.asarray(apply(params, tokens, positions))
  cache = model.init_cache(BATCH)
  assert isinstance(cache, KVCache) and int(cache.length) == 0
  assert cache.keys.shape == (2, BATCH, SIZES.max_len, 2, 8)
  stepped = []
  for t in range(LENGTH):
    logits, cache = apply_cached(params, cache, tokens[:, t : t + 1], positions[:, t : t + 1])
    stepped.append(np.asarray(logits[:, 0]))
  assert int(cache.length) == LENGTH
  np.testing.assert_allclose(np.stack(stepped, axis=1), full, atol=1e-5, rtol=1e-5)


def test_a_chunk_then_single_tokens_equal_the_full_forward_pass():
  """Acting feeds a timestep's observation as one chunk, then one action token per call."""
  model, params, apply, apply_cached = _model()
  tokens, positions = _sequence(seed=4)
  full = np.asarray(apply(params, tokens, positions))
  cache = model.init_cache(BATCH)
  logits, cache = apply_cached(params, cache, tokens[:, :7], positions[:, :7])
  np.testing.assert_allclose(logits, full[:, :7], atol=1e-5, rtol=1e-5)
  logits, cache = apply_cached(params, cache, tokens[:, 7:8], positions[:, 7:8])
  np.testing.assert_allclose(logits[:, 0], full[:, 7], atol=1e-5, rtol=1e-5)
  assert int(cache.length) == 8


def test_sizes_are_checked():
  with pytest.raises(ValueError, match='multiple of num_heads'):
    TransformerSizes(vocab_size=8, num_positions=2, max_len=4, model_size=10, num_heads=4)
  with pytest.raises(ValueError, match='max_len'):
    TransformerSizes(vocab_size=8, num_positions=2, max_len=0)


def test_cache_stays_on_jax_arrays_under_jit():
  model, params, _, apply_cached = _model()
  cache = jax.jit(model.init_cache, static_argnums=0)(1)
  logits, cache = apply_cached(
    params, cache, jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 1), jnp.int32)
  )
  assert logits.shape == (1, 1, SIZES.vocab_size) and int(cache.length) == 1


def test_value_tokens_are_embedded_by_their_place_too():
  sizes = dataclasses.replace(SIZES, value_bins=30)  # Tokens 0-29 are value bins.
  model = make_transformer(sizes)
  tokens, positions = _sequence(seed=5)
  params = model.init(jax.random.PRNGKey(0), tokens, positions)
  assert params['decoder/value_embedding']['w'].shape == (2, SIZES.model_size)
  assert not any('value_embedding' in k for k in _model()[1])  # Off by default.
  # The place: bin b of 30 is at (2b + 1) / 30 - 1; other tokens have none. Doubling the
  # place weights moves the logits of value tokens alone.
  more = dict(params)
  more['decoder/value_embedding'] = {
    'w': params['decoder/value_embedding']['w'] * jnp.array([[2.0], [1.0]]),
    'b': params['decoder/value_embedding']['b'],
  }
  tokens[:, 0] = [14, 31]  # A value bin (place 29/30 - 1 = -1/30, not 0), then a non-value.
  before = np.asarray(model.apply(params, tokens[:, :1], positions[:, :1]))
  after = np.asarray(model.apply(more, tokens[:, :1], positions[:, :1]))
  assert np.abs(after[0] - before[0]).max() > 1e-6
  np.testing.assert_allclose(after[1], before[1], atol=1e-6)
  # The cache reads tokens through the same embedding.
  cache = model.init_cache(BATCH)
  stepped, _ = model.apply_cached(params, cache, tokens, positions)
  np.testing.assert_allclose(stepped, model.apply(params, tokens, positions), atol=1e-5)
  with pytest.raises(ValueError, match='value_bins must be an int >= 0'):
    dataclasses.replace(SIZES, value_bins=-1)


def test_without_a_lookup_value_tokens_differ_by_their_place_alone():
  sizes = dataclasses.replace(SIZES, value_bins=30, value_lookup=False)
  model = make_transformer(sizes)
  tokens, positions = _sequence(seed=5)
  params = model.init(jax.random.PRNGKey(0), tokens, positions)
  # Place, is-value, then sines and cosines at 8 frequencies.
  assert params['decoder/value_embedding']['w'].shape == (18, SIZES.model_size)
  tokens[:, 0] = [14, 31]  # A value bin, then a non-value token.
  first = (tokens[:, :1], positions[:, :1])
  before = np.asarray(model.apply(params, *first))
  # Value bins other than 0 never read their own vector (all share bin 0's): rewriting
  # bin 14's row changes nothing; rewriting token 31's changes its logits.
  table = params['decoder/token_embedding']['embeddings']
  # Not a constant: the layer norms would take it out again.
  shift = jax.random.normal(jax.random.PRNGKey(1), table.shape[1:])
  for row, moved in ((14, False), (0, True), (31, True)):
    changed = dict(params)
    changed['decoder/token_embedding'] = {'embeddings': table.at[row].add(shift)}
    delta = np.abs(np.asarray(model.apply(changed, *first)) - before).max(axis=(1, 2))
    assert (delta > 1e-4).tolist() == ([True, False] if row == 0 else [False, moved])
  # Neighbouring bins get nearby logits (the features are smooth in the place); bins far
  # apart differ more.
  near, far = tokens.copy(), tokens.copy()
  near[0, 0], far[0, 0] = 15, 29
  gap = lambda t: np.abs(
    np.asarray(model.apply(params, t[:, :1], positions[:, :1]))[0] - before[0]
  ).max()
  assert 0 < gap(near) < gap(far)
  # The cache reads tokens through the same embedding.
  cache = model.init_cache(BATCH)
  stepped, _ = model.apply_cached(params, cache, tokens, positions)
  np.testing.assert_allclose(stepped, model.apply(params, tokens, positions), atol=1e-5)
  with pytest.raises(ValueError, match='value_lookup must be a bool'):
    dataclasses.replace(SIZES, value_lookup=1)
