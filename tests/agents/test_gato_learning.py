"""Tests for the generalist's update (agents.gato.learning) on windows of a real store."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

from agents.gato import learning
from launch.store.episodes import Episode, EpisodeStore
from launch.store.windows import WindowConfig, WindowSampler
from networks.tokenizer import TimestepLayout, Vocabulary, max_timestep_tokens
from networks.transformer import TransformerSizes, make_transformer

VOCAB = Vocabulary()
LAYOUTS = {'walker': TimestepLayout((2, 1), 2), 'cart': TimestepLayout((3,), 1)}
WINDOW = 24
STEPS = 40


def _episode(task: str, seed: int, length: int = 6) -> Episode:
  layout = LAYOUTS[task]
  rng = np.random.default_rng(seed)
  return Episode(
    observations=rng.normal(0.0, 1.0, (length + 1, layout.obs_dim)).astype(np.float32),
    actions=rng.uniform(-1.0, 1.0, (length, layout.action_dim)).astype(np.float32),
    rewards=np.zeros(length, np.float32),
    discounts=np.ones(length, np.float32),
    metadata={'task': task},
  )


def _model():
  return make_transformer(
    TransformerSizes(
      vocab_size=VOCAB.size,
      num_positions=max_timestep_tokens(LAYOUTS.values()),
      max_len=WINDOW,
      model_size=32,
      num_heads=2,
      num_layers=1,
    )
  )


def test_updates_fit_the_action_tokens_of_stored_windows(tmp_path):
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor_0') as writer:
    for seed, task in enumerate(['walker', 'walker', 'cart', 'cart']):
      writer.append(_episode(task, seed))
  sampler = WindowSampler(store, LAYOUTS, WindowConfig(WINDOW, prompt_tokens=6), seed=0)
  sampler.refresh()
  batch = sampler.sample(8)

  model = _model()
  optimizer = learning.make_optimizer(3e-3)
  options = {'xla_backend_optimization_level': 0}
  state = jax.jit(
    lambda key: learning.initial_state(model, optimizer, key), compiler_options=options
  )(jax.random.PRNGKey(0))
  update = jax.jit(learning.make_update_fn(model, optimizer), compiler_options=options)

  logged = []
  for _ in range(STEPS):
    state, metrics = update(state, batch)
    logged.append({k: float(v) for k, v in metrics.items()})
  assert int(state.steps) == STEPS
  assert all(np.isfinite(v) for m in logged for v in m.values())
  # The first loss is about a uniform guess over the vocabulary; a fixed batch is learned.
  assert abs(logged[0]['sequence_loss'] - np.log(VOCAB.size)) < 1.5
  assert logged[-1]['sequence_loss'] < logged[0]['sequence_loss'] - 3.0
  assert logged[-1]['action_accuracy'] > 0.4 > logged[0]['action_accuracy']
  assert logged[0]['action_tokens'] == float(batch.loss_mask[:, 1:].sum())


def test_logits_at_the_targets_alone_make_the_same_update(tmp_path):
  """The learner's update computes logits where the loss needs them (GatoBuilder.max_targets
  of the layouts); it is the update of logits at every position."""
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor_0') as writer:
    for seed, task in enumerate(['walker', 'walker', 'cart', 'cart']):
      writer.append(_episode(task, seed, length=12))
  sampler = WindowSampler(store, LAYOUTS, WindowConfig(WINDOW, conditioning='none'), seed=1)
  sampler.refresh()
  batch = sampler.sample(8)
  bound = max(WINDOW // x.num_tokens * x.action_dim for x in LAYOUTS.values())
  # Some window is full: the bound is reached, not only respected.
  assert int(batch.loss_mask[:, 1:].sum(1).max()) == bound < WINDOW - 1
  model = _model()
  # Plain gradient steps: the parameters after one are the gradients' images (Adam's first
  # step would turn float noise in near-zero gradients into whole steps).
  optimizer = optax.sgd(1.0)
  state = learning.initial_state(model, optimizer, jax.random.PRNGKey(0))
  full_state, full = jax.jit(learning.make_update_fn(model, optimizer))(state, batch)
  at_state, at = jax.jit(learning.make_update_fn(model, optimizer, bound))(state, batch)
  for name in full:
    np.testing.assert_allclose(at[name], full[name], rtol=1e-5, err_msg=name)
  jax.tree_util.tree_map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), at_state, full_state
  )


def _eight_windows_and_a_fresh_model(tmp_path):
  """A batch of 8 windows of a real store of both bodies, a model, SGD and its state."""
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor_0') as writer:
    for seed, task in enumerate(['walker', 'cart']):
      writer.append(_episode(task, seed, length=12))
  sampler = WindowSampler(store, LAYOUTS, WindowConfig(WINDOW, conditioning='none'), seed=1)
  sampler.refresh()
  batch = sampler.sample(8)
  model = _model()
  optimizer = optax.sgd(1.0)
  state = learning.initial_state(model, optimizer, jax.random.PRNGKey(0))
  return batch, model, optimizer, state


def test_action_token_noise_replaces_input_action_tokens_alone():
  layout = LAYOUTS['walker']  # 3 observation tokens, a separator, 2 action tokens.
  mask = np.tile(layout.action_mask, (64, 4))
  tokens = np.tile(np.arange(mask.shape[1], dtype=np.int32) + 2000, (64, 1))
  key = jax.random.PRNGKey(0)
  assert np.array_equal(learning.corrupt_action_tokens(tokens, mask, key, 0.0, (10, 20)), tokens)
  every = np.asarray(learning.corrupt_action_tokens(tokens, mask, key, 0.999999, (10, 20)))
  np.testing.assert_array_equal(every[~mask], tokens[~mask])  # Observations, separators.
  assert every[mask].min() >= 10 and every[mask].max() <= 20
  assert set(np.unique(every[mask])) == set(range(10, 21))  # The whole range, bounds included.
  half = np.asarray(learning.corrupt_action_tokens(tokens, mask, key, 0.5, (10, 20)))
  changed = (half != tokens)[mask].mean()
  assert 0.4 < changed < 0.6 and np.array_equal(half[~mask], tokens[~mask])


def test_the_update_reads_noisy_inputs_and_scores_the_true_targets(tmp_path):
  batch, model, optimizer, state = _eight_windows_and_a_fresh_model(tmp_path)
  clean = jax.jit(learning.make_update_fn(model, optimizer))(state, batch)[1]
  noisy_update = jax.jit(learning.make_update_fn(model, optimizer, None, 0.5, (279, 744)))
  noisy = noisy_update(state, batch)[1]
  # The same targets counted; the inputs differ, so the loss does; the draw is the step's.
  assert float(noisy['action_tokens']) == float(clean['action_tokens'])
  assert float(noisy['sequence_loss']) != float(clean['sequence_loss'])
  assert float(noisy_update(state, batch)[1]['sequence_loss']) == float(noisy['sequence_loss'])


def test_value_token_jitter_moves_value_tokens_within_the_range_alone():
  # Value bins 0..9, then ids of other kinds (separator, task, discrete) from 10 on.
  tokens = np.tile(np.array([0, 1, 5, 9, 8, 10, 11, 2000], np.int32), (2000, 1))
  key = jax.random.PRNGKey(3)
  moved = np.asarray(learning.jitter_value_tokens(tokens, key, 2, 10))
  np.testing.assert_array_equal(moved[:, 5:], tokens[:, 5:])  # Not value tokens.
  # Inside [-2, 2] bins of their own, clipped to the value range 0..9; every shift drawn.
  assert set(np.unique(moved[:, 2])) == {3, 4, 5, 6, 7}
  assert set(np.unique(moved[:, 0])) == {0, 1, 2}  # -1, -2 clipped to 0.
  assert set(np.unique(moved[:, 3])) == {7, 8, 9}  # 10, 11 clipped to 9.
  assert 0.55 < np.mean(moved[:, 0] == 0) < 0.65  # Shifts -2, -1, 0 land on bin 0: 3/5.
  assert np.array_equal(learning.jitter_value_tokens(tokens, key, 0, 10), tokens)


def test_the_update_jitters_value_inputs_and_keeps_the_targets(tmp_path):
  batch, model, optimizer, state = _eight_windows_and_a_fresh_model(tmp_path)
  clean = jax.jit(learning.make_update_fn(model, optimizer))(state, batch)[1]
  update = jax.jit(learning.make_update_fn(model, optimizer, None, 0.0, (0, 0), 3, VOCAB.num_bins))
  jittered = update(state, batch)[1]
  assert float(jittered['action_tokens']) == float(clean['action_tokens'])
  assert float(jittered['sequence_loss']) != float(clean['sequence_loss'])
  assert float(update(state, batch)[1]['sequence_loss']) == float(jittered['sequence_loss'])
  with pytest.raises(ValueError, match='num_value_bins'):
    learning.make_update_fn(model, optimizer, None, 0.0, (0, 0), 3, 0)
