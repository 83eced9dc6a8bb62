"""Tests for the generalist's actor (agents.gato.actor): its cache, per episode and past full.

The reference decodes every step with one full forward pass over the context the actor
should hold (the module's rule: conditioning, then the episode's latest timesteps; when
the next one would not fit, half of those that fit), so a cache that is stale, not reset
or rebuilt from the wrong timesteps shows up as different action tokens.
"""

from __future__ import annotations

import functools
from typing import Optional

import dm_env
import jax
import numpy as np
import pytest

from agents.gato.actor import GatoActor
from agents.gato.decoding import CHOICES, action_token_range, choose_tokens
from agents.variable_client import VariableClient
from networks.tokenizer import TimestepLayout, Vocabulary
from networks.transformer import TransformerSizes, make_transformer

VOCAB = Vocabulary(num_tasks=2)
LAYOUT = TimestepLayout((3, 2), action_dim=2, vocab=VOCAB)  # 8 tokens a timestep
N = LAYOUT.num_tokens
SIZES = TransformerSizes(
  vocab_size=VOCAB.size, num_positions=N, max_len=5 * N, model_size=16, num_heads=2, num_layers=1
)
STEPS = 9  # Past two rebuilds of a 5-timestep cache.


class _Source:
  """A VariableSource serving fixed parameters."""

  def __init__(self, params):
    self.params = params

  def get_variables(self, names):
    return [self.params for _ in names]


@functools.lru_cache(maxsize=None)
def _model():
  model = make_transformer(SIZES)
  params = model.init(jax.random.PRNGKey(1), np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32))
  return model, params, jax.jit(model.apply)


def _actor(
  how: str,
  conditioning: str = 'none',
  prompt_tokens: int = 0,
  max_timesteps: int = 0,
  deterministic: Optional[bool] = None,
):
  """An actor choosing its tokens `how` (agents.gato.decoding.CHOICES): a training actor
  when sampling, else an evaluator's (`deterministic` says which where sampling)."""
  model, params, _ = _model()
  client = VariableClient(_Source(params), ['policy'])
  return GatoActor(
    model,
    LAYOUT,
    client,
    seed=3,
    deterministic=how != 'sample' if deterministic is None else deterministic,
    greedy_decoding=how if deterministic or how != 'sample' else 'mean',
    conditioning=conditioning,
    prompt_tokens=prompt_tokens,
    task_index=1,
    max_timesteps=max_timesteps,
  )


def _run_episode(actor, rng, steps=STEPS, reward=0.0):
  """Observations and actions of one episode of `steps` steps."""
  obs = rng.normal(0.0, 2.0, (steps + 1, LAYOUT.obs_dim)).astype(np.float32)
  actions = []
  actor.observe_first(dm_env.restart(obs[0]))
  for t in range(steps):
    actions.append(actor.select_action(obs[t]))
    step = dm_env.termination if t == steps - 1 else dm_env.transition
    actor.observe(actions[-1], step(reward, obs[t + 1]))
  return obs[:-1], np.stack(actions)


def _reference(obs, prefix, key, how, max_timesteps=0):
  """(action tokens [T, A], keys) decoded with full passes over the rule's context."""
  _, params, apply = _model()
  allowed = action_token_range(LAYOUT)
  room = (SIZES.max_len - len(prefix)) // N
  room = min(room, max_timesteps) if max_timesteps else room
  timesteps, chosen, held = [], [], 0
  for o in obs:
    if held + 1 > room:
      held = room // 2
    tokens = np.concatenate([prefix, *timesteps[len(timesteps) - held :]] if held else [prefix])
    tokens = np.concatenate([tokens, LAYOUT.observation_tokens(o)]).astype(np.int32)
    key, decode_key = jax.random.split(key)
    actions = []
    for _ in range(LAYOUT.action_dim):
      positions = np.concatenate([np.arange(len(prefix)) % N, np.tile(LAYOUT.positions, held + 1)])[
        : len(tokens)
      ]
      pad = SIZES.max_len - len(tokens)
      logits = apply(
        params,
        np.pad(tokens, (0, pad))[None],
        np.pad(positions.astype(np.int32), (0, pad))[None],
      )[0, len(tokens) - 1]
      decode_key, sample_key = jax.random.split(decode_key)
      token = int(choose_tokens(logits[None], sample_key, allowed, how, LAYOUT)[0])
      actions.append(token)
      tokens = np.append(tokens, token).astype(np.int32)
    chosen.append(actions)
    timesteps.append(tokens[-N:])
    held += 1
  return np.array(chosen)


@pytest.mark.parametrize(
  'how, deterministic', [(how, None) for how in CHOICES] + [('sample', True)]
)
def test_cached_actions_match_full_passes_and_the_cache_resets_each_episode(how, deterministic):
  """Every choice, and the evaluator's sampling (model.greedy_decoding=sample, as Gato
  acts) draws the training actor's tokens from the same seed."""
  actor = _actor(how, deterministic=deterministic)
  rng = np.random.default_rng(0)
  key = jax.random.PRNGKey(3)
  for episode in range(2):
    obs, actions = _run_episode(actor, rng)
    tokens = np.stack([t[-LAYOUT.action_dim :] for t in actor._timesteps])
    expected = _reference(obs, np.zeros(0, np.int32), key, how)
    np.testing.assert_array_equal(tokens, expected, err_msg=f'episode {episode}')
    for _ in range(STEPS):
      key = jax.random.split(key)[0]
    # The actions are the tokens' values, inside the action box.
    np.testing.assert_allclose(actions, LAYOUT.actions(tokens), rtol=1e-6)
    assert actions.dtype == np.float32 and np.all(np.abs(actions) <= 1.0)
    # Each episode: a fresh cache, then rebuilds at steps 5 and 8 (5 fit, 2 are kept).
    assert actor.num_rebuilds == 3 * (episode + 1)


@pytest.mark.parametrize('timesteps, rebuilds', [(1, 9), (3, 4)])
def test_a_context_of_k_timesteps_acts_as_full_passes_over_k(timesteps, rebuilds):
  """As training windows of window.timesteps = k: one timestep (a rebuild every step, the
  cache holds the observation alone) or 3 (the first step's build, then rebuilds at steps
  3, 5, 7 keeping one)."""
  actor = _actor('argmax', max_timesteps=timesteps)
  obs, _ = _run_episode(actor, np.random.default_rng(4))
  tokens = np.stack([t[-LAYOUT.action_dim :] for t in actor._timesteps])
  expected = _reference(obs, np.zeros(0, np.int32), jax.random.PRNGKey(3), 'argmax', timesteps)
  np.testing.assert_array_equal(tokens, expected)
  assert actor.context_steps == timesteps and actor.num_rebuilds == rebuilds


def test_prompt_and_task_conditioning_are_prefilled():
  rng = np.random.default_rng(1)
  actor = _actor('argmax', 'prompt', prompt_tokens=2 * N)
  obs, _ = _run_episode(actor, rng, steps=3, reward=1.0)
  best = np.stack(actor._timesteps)
  _run_episode(actor, rng, steps=3, reward=0.0)  # A worse episode: not the prompt.
  obs, _ = _run_episode(actor, rng)
  prompt = best[-2:].reshape(-1)
  np.testing.assert_array_equal(actor._prefix, prompt)
  tokens = np.stack([t[-LAYOUT.action_dim :] for t in actor._timesteps])
  np.testing.assert_array_equal(tokens, _reference(obs, prompt, jax.random.PRNGKey(0), 'argmax'))

  actor = _actor('argmax', 'task_id')
  obs, _ = _run_episode(actor, rng, steps=4)
  task = np.array([VOCAB.task_token(1)], np.int32)
  tokens = np.stack([t[-LAYOUT.action_dim :] for t in actor._timesteps])
  np.testing.assert_array_equal(tokens, _reference(obs, task, jax.random.PRNGKey(0), 'argmax'))


def test_a_demonstration_prompts_until_an_own_episode_returns_more():
  rng = np.random.default_rng(2)
  actor = _actor('argmax', 'prompt', prompt_tokens=2 * N)
  observations = rng.normal(0.0, 1.0, (5, LAYOUT.obs_dim)).astype(np.float32)
  actions = rng.uniform(-1.0, 1.0, (4, LAYOUT.action_dim)).astype(np.float32)
  assert actor.use_demonstration(observations, actions, episode_return=3.0)
  # Its last two timesteps (observation tokens, separator, action tokens) are the prompt.
  prompt = LAYOUT.timestep_tokens(observations[2:4], actions[2:]).reshape(-1)
  obs, _ = _run_episode(actor, rng, steps=3, reward=0.5)  # Returns 1.5: not better.
  np.testing.assert_array_equal(actor._prefix, prompt)
  tokens = np.stack([t[-LAYOUT.action_dim :] for t in actor._timesteps])
  np.testing.assert_array_equal(tokens, _reference(obs, prompt, jax.random.PRNGKey(0), 'argmax'))
  _run_episode(actor, rng, steps=3, reward=0.5)
  np.testing.assert_array_equal(actor._prefix, prompt)
  _run_episode(actor, rng, steps=4, reward=1.0)  # Returns 4: its own episode is the prompt now.
  own = np.stack(actor._timesteps)[-2:].reshape(-1)
  _run_episode(actor, rng, steps=2)
  np.testing.assert_array_equal(actor._prefix, own)
  # Arrays that do not fit the body are refused naming the field; nothing changes.
  for bad, field in (
    ((observations[:, :3], actions, 1.0), 'observations'),
    ((observations[:2], actions, 1.0), 'observations'),
    ((observations, actions[:, :1], 1.0), 'actions'),
    ((observations, actions * np.nan, 1.0), 'actions'),
    ((observations, actions, float('nan')), 'episode_return'),
  ):
    with pytest.raises(ValueError, match=f'demonstration {field}'):
      actor.use_demonstration(*bad)
  np.testing.assert_array_equal(actor._prompt[-2:].reshape(-1), own)
  # Without prompt conditioning a demonstration is not used.
  assert not _actor('argmax', 'task_id').use_demonstration(observations, actions, 3.0)
