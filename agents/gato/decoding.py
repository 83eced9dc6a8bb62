"""Acting with the generalist: one action token per action dimension, decoded over the cache.

Each environment step appends the timestep's observation tokens and separator to the
key-value cache in one call, then chooses the action tokens one by one, each fed back so
the next is conditioned on it. A body's TimestepLayout fixes how many tokens there are, so
bodies of different observation and action sizes share the parameters; each layout gets
its own compiled decoder (its shapes are static).
"""

from typing import Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from networks.tokenizer import TimestepLayout
from networks.transformer import KVCache, SequenceModel

# Every environment acts in the canonical box [-1, 1] (see environments/suite.py).
ACTION_BOUNDS = (-1.0, 1.0)

Decoder = Callable[
  [dict, KVCache, jnp.ndarray, jnp.ndarray], Tuple[jnp.ndarray, jnp.ndarray, KVCache]
]


def action_token_range(layout: TimestepLayout, bounds=ACTION_BOUNDS) -> Tuple[int, int]:
  """The first and last bin token whose bin holds an action inside `bounds`.

  With mu-law actions only bins 279..744 of 1024 do: the others stand for actions the
  environment would clip, and an untrained model must not wander there.
  """
  low, high = layout.action_tokens(np.asarray(bounds, np.float32))
  return int(low), int(high)


# How a token is chosen from a dimension's logits: a sample from the softmax; its most
# likely bin; or the bin holding the softmax's expected action (a regression's answer, read
# from the classifier: on the experts' noisy actions the argmax is the bin the noise hit
# most often, the mean is the expert's action).
CHOICES = ('sample', 'argmax', 'mean')


def choose_tokens(
  logits: jnp.ndarray,
  key: jnp.ndarray,
  allowed: Tuple[int, int],
  how: str,
  layout: Optional[TimestepLayout] = None,
) -> jnp.ndarray:
  """logits[B, V] -> action tokens[B] inside the inclusive id range `allowed`, chosen `how`
  (CHOICES) from the softmax restricted to the range. 'mean' needs the body's `layout`
  (which action each bin stands for)."""
  if how not in CHOICES:
    raise ValueError(f'how must be one of {CHOICES}, not {how!r}')
  ids = jnp.arange(logits.shape[-1])
  inside = (ids >= allowed[0]) & (ids <= allowed[1])
  logits = jnp.where(inside, logits, -jnp.inf)
  if how == 'argmax':
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  if how == 'sample':
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
  if layout is None:
    raise ValueError("how='mean' needs the body's layout")
  values = jnp.where(inside, layout.actions(ids), 0.0)
  mean = jnp.sum(jax.nn.softmax(logits, axis=-1) * values, axis=-1)
  # The mean of bins inside `allowed` lies inside it; the clip guards the rounding.
  return jnp.clip(layout.action_tokens(mean), allowed[0], allowed[1]).astype(jnp.int32)


def make_action_decoder(
  model: SequenceModel, layout: TimestepLayout, how: str, bounds=ACTION_BOUNDS
) -> Decoder:
  """decode(params, cache, obs[B, obs_dim], key) -> (action[B, A], tokens[B, A], cache).

  The returned cache holds the whole timestep (observation, separator, action tokens),
  ready for the next one; the caller keeps `cache.length + layout.num_tokens <= max_len`.
  The action is the chosen bins' centres (`how`: one of CHOICES), clipped to `bounds`.
  Pure and jittable; the decoder splits `key` once per action dimension.
  """
  allowed = action_token_range(layout, bounds)
  positions = jnp.asarray(layout.positions)
  num_obs = layout.separator_index + 1

  def decode(params, cache: KVCache, obs: jnp.ndarray, key: jnp.ndarray):
    batch = obs.shape[0]
    obs_tokens = layout.observation_tokens(obs)
    obs_positions = jnp.broadcast_to(positions[:num_obs], (batch, num_obs))
    logits, cache = model.apply_cached(params, cache, obs_tokens, obs_positions)

    def one_dimension(carry, position):
      cache, last_logits, key = carry
      key, sample_key = jax.random.split(key)
      token = choose_tokens(last_logits, sample_key, allowed, how, layout)
      # Fed back even for the last dimension: the next timestep must see this action.
      logits, cache = model.apply_cached(
        params, cache, token[:, None], jnp.full((batch, 1), position, jnp.int32)
      )
      return (cache, logits[:, 0], key), token

    (cache, _, _), tokens = jax.lax.scan(
      one_dimension, (cache, logits[:, -1], key), positions[num_obs:]
    )
    tokens = tokens.T  # [A, B] -> [B, A]
    action = jnp.clip(layout.actions(tokens), bounds[0], bounds[1])
    return action, tokens, cache

  return decode


def make_full_pass_decoder(
  model: SequenceModel, layout: TimestepLayout, how: str, bounds=ACTION_BOUNDS
):
  """The cached decoder's reference and the cost it saves: one forward pass over the whole
  context per action dimension, no cache.

  decode(params, tokens[B, max_len], positions[B, max_len], length, obs[B, obs_dim], key)
  -> (action[B, A], tokens[B, A], tokens', positions', length'): the context holds `length`
  tokens (the rest is padding the causal mask keeps out of the logits read); the returned
  one has the timestep appended. The caller keeps `length + layout.num_tokens <= max_len`.
  Keys are split as make_action_decoder splits them, so the two choose the same tokens.
  """
  allowed = action_token_range(layout, bounds)
  layout_positions = jnp.asarray(layout.positions, jnp.int32)
  num_obs = layout.separator_index + 1

  def write(array, values, at):
    return jax.lax.dynamic_update_slice(array, values.astype(array.dtype), (0, at))

  def decode(params, tokens, positions, length, obs, key):
    batch = obs.shape[0]
    tokens = write(tokens, layout.observation_tokens(obs), length)
    positions = write(
      positions, jnp.broadcast_to(layout_positions[:num_obs], (batch, num_obs)), length
    )
    length = length + num_obs

    def one_dimension(carry, position):
      tokens, positions, length, key = carry
      logits = model.apply(params, tokens, positions)
      last = jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)
      key, sample_key = jax.random.split(key)
      token = choose_tokens(last, sample_key, allowed, how, layout)
      tokens = write(tokens, token[:, None], length)
      positions = write(positions, jnp.full((batch, 1), position, jnp.int32), length)
      return (tokens, positions, length + 1, key), token

    (tokens, positions, length, _), chosen = jax.lax.scan(
      one_dimension, (tokens, positions, length, key), layout_positions[num_obs:]
    )
    chosen = chosen.T  # [A, B] -> [B, A]
    action = jnp.clip(layout.actions(chosen), bounds[0], bounds[1])
    return action, chosen, tokens, positions, length

  return decode
