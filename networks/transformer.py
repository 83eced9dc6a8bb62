"""A decoder-only transformer over token sequences, with a key-value cache for acting.

The sequence models (the Gato-style generalist, later a dynamics model) share it. A token
is embedded as its id's embedding plus the embedding of its position within its timestep
(networks.tokenizer.TimestepLayout.positions): no absolute position, so a window may start
at any timestep boundary and a context that outgrows the cache can be rebuilt from its
last timesteps without the model noticing. Order across timesteps comes from the causal
mask. Blocks are pre-LayerNorm: causal multi-head self-attention, then an MLP.

Two ways to run the same parameters:

  apply(params, tokens[B, L], positions[B, L]) -> logits[B, L, V], the whole sequence under
    a causal mask (training; padding goes at the end, where the mask keeps it from every
    real token);
  apply_cached(params, cache, tokens[B, k], positions[B, k]) -> (logits[B, k, V], cache),
    k new tokens after the cache's `length` (acting: a timestep's observation, then one
    action token per call). The cache has a fixed size, `max_len`; the caller keeps
    `length + k <= max_len` (inside jit an overflow cannot raise: the writes would clamp).
"""

import dataclasses
from typing import NamedTuple, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp

_W_INIT = hk.initializers.VarianceScaling(1.0, 'fan_avg', 'uniform')
# Far below any real attention logit, yet finite: exp() of it is exactly 0 in float32 and
# a fully masked row (which the causal mask never makes) would not turn into NaN.
_MASKED = -1e30
# Frequencies (multiples of pi, over places in [-1, 1]) of a value's features when value
# tokens have no vector of their own (TransformerSizes.value_lookup).
VALUE_FREQUENCIES = 8


@dataclasses.dataclass(frozen=True)
class TransformerSizes:
  """The shape of a DecoderTransformer."""

  vocab_size: int
  num_positions: int  # Positions within a timestep: the most tokens a timestep has.
  max_len: int  # The longest context, and the size of the key-value cache.
  model_size: int = 128
  num_heads: int = 4
  num_layers: int = 2
  widening_factor: int = 4
  # > 0: tokens below it are value bins (networks.tokenizer's continuous range), and each
  # is embedded with its bin's place in [-1, 1] besides its own vector, so that neighbouring
  # values start out alike instead of sharing nothing until data has taught each bin.
  value_bins: int = 0
  # With value_bins, False gives value tokens no vector of their own: they share one, and
  # differ only by their place's features (the place and its sines and cosines at
  # VALUE_FREQUENCIES frequencies), a smooth function of the value. A vector per bin lets
  # the model tell apart every observation it was trained on and learn each one's noisy
  # action by heart; smooth features make that much harder (it still fits some noise:
  # experiments/results/generalist_multitask, session 26).
  value_lookup: bool = True

  def __post_init__(self):
    if not isinstance(self.value_lookup, bool):
      raise ValueError(f'TransformerSizes.value_lookup must be a bool, got {self.value_lookup!r}')
    for f in dataclasses.fields(self):
      if f.name == 'value_lookup':
        continue
      value = getattr(self, f.name)
      least = 0 if f.name == 'value_bins' else 1
      if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f'TransformerSizes.{f.name} must be an int >= {least}, got {value!r}')
    if self.model_size % self.num_heads:
      raise ValueError(
        f'model_size={self.model_size} must be a multiple of num_heads={self.num_heads}'
      )

  @property
  def head_size(self) -> int:
    return self.model_size // self.num_heads


class KVCache(NamedTuple):
  """Every layer's keys and values of the tokens seen so far, in fixed-size arrays."""

  keys: jnp.ndarray  # [num_layers, B, max_len, num_heads, head_size]
  values: jnp.ndarray  # [num_layers, B, max_len, num_heads, head_size]
  length: jnp.ndarray  # [] int32: how many slots hold tokens (the same for the whole batch)


def init_cache(sizes: TransformerSizes, batch_size: int, dtype=jnp.float32) -> KVCache:
  """An empty cache for `batch_size` sequences."""
  shape = (sizes.num_layers, batch_size, sizes.max_len, sizes.num_heads, sizes.head_size)
  return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))


def _layer_norm(name: str) -> hk.LayerNorm:
  return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name=name)


class CausalSelfAttention(hk.Module):
  """Multi-head self-attention in which a token sees itself and the tokens before it."""

  def __init__(self, num_heads: int, head_size: int, name: Optional[str] = None):
    super().__init__(name=name)
    self._num_heads = num_heads
    self._head_size = head_size

  def _project(self, x: jnp.ndarray, name: str) -> jnp.ndarray:
    y = hk.Linear(self._num_heads * self._head_size, w_init=_W_INIT, name=name)(x)
    return y.reshape(x.shape[:-1] + (self._num_heads, self._head_size))

  def __call__(
    self,
    x: jnp.ndarray,
    cache: Optional[Tuple[jnp.ndarray, jnp.ndarray]] = None,
    offset: Optional[jnp.ndarray] = None,
  ) -> Tuple[jnp.ndarray, Optional[Tuple[jnp.ndarray, jnp.ndarray]]]:
    """x[B, k, D] -> (out[B, k, D], the layer's updated (keys, values) when cached).

    With `cache` (keys, values [B, max_len, H, K]) the k tokens sit at slots
    [offset, offset + k) and attend to every filled slot up to their own.
    """
    q = self._project(x, 'query')
    k = self._project(x, 'key')
    v = self._project(x, 'value')
    num_new = x.shape[-2]
    if cache is None:
      query_pos = key_pos = jnp.arange(num_new)
    else:
      start = (0, offset, 0, 0)
      k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), start)
      v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), start)
      query_pos = offset + jnp.arange(num_new)
      key_pos = jnp.arange(k.shape[1])  # Slots past the queries are masked below.
    logits = jnp.einsum('bqhd,bthd->bhqt', q, k) / jnp.sqrt(jnp.float32(self._head_size))
    visible = key_pos[None, :] <= query_pos[:, None]  # [q, t]
    weights = jax.nn.softmax(jnp.where(visible, logits, _MASKED), axis=-1)
    out = jnp.einsum('bhqt,bthd->bqhd', weights, v).reshape(x.shape[:-1] + (-1,))
    out = hk.Linear(x.shape[-1], w_init=_W_INIT, name='output')(out)
    return out, (None if cache is None else (k, v))


class DecoderTransformer(hk.Module):
  """tokens[B, L] and within-timestep positions[B, L] -> logits[B, L, vocab_size].

  With `at[B, K]` (indices into L) only those positions' logits are computed: the output
  layer over the vocabulary is most of a small model's cost, and a loss on some tokens
  needs the logits of those alone.
  """

  def __init__(self, sizes: TransformerSizes, name: str = 'decoder'):
    super().__init__(name=name)
    self._sizes = sizes

  def __call__(
    self,
    tokens: jnp.ndarray,
    positions: jnp.ndarray,
    cache: Optional[KVCache] = None,
    at: Optional[jnp.ndarray] = None,
  ) -> Tuple[jnp.ndarray, Optional[KVCache]]:
    s = self._sizes
    is_value = tokens < s.value_bins
    looked_up = tokens if s.value_lookup else jnp.where(is_value, 0, tokens)
    x = hk.Embed(s.vocab_size, s.model_size, name='token_embedding')(looked_up)
    x = x + hk.Embed(s.num_positions, s.model_size, name='position_embedding')(positions)
    if s.value_bins:
      place = jnp.where(is_value, (2.0 * tokens + 1.0) / s.value_bins - 1.0, 0.0)
      features = jnp.stack([place, is_value.astype(place.dtype)], axis=-1)
      if not s.value_lookup:
        angles = place[..., None] * jnp.pi * jnp.arange(1, VALUE_FREQUENCIES + 1)
        waves = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
        features = jnp.concatenate([features, waves * features[..., 1:]], axis=-1)
      x = x + hk.Linear(s.model_size, name='value_embedding')(features)
    new_keys, new_values = [], []
    for i in range(s.num_layers):
      layer_cache = None if cache is None else (cache.keys[i], cache.values[i])
      offset = None if cache is None else cache.length
      attention = CausalSelfAttention(s.num_heads, s.head_size, name=f'attention_{i}')
      h, layer_cache = attention(_layer_norm(f'attention_norm_{i}')(x), layer_cache, offset)
      x = x + h
      mlp = hk.nets.MLP(
        [s.widening_factor * s.model_size, s.model_size],
        w_init=_W_INIT,
        activation=jax.nn.gelu,
        name=f'mlp_{i}',
      )
      x = x + mlp(_layer_norm(f'mlp_norm_{i}')(x))
      if cache is not None:
        new_keys.append(layer_cache[0])
        new_values.append(layer_cache[1])
    if at is not None:
      x = jnp.take_along_axis(x, at[..., None].astype(jnp.int32), axis=1)
    logits = hk.Linear(s.vocab_size, w_init=_W_INIT, name='logits')(_layer_norm('final_norm')(x))
    if cache is None:
      return logits, None
    new_cache = KVCache(jnp.stack(new_keys), jnp.stack(new_values), cache.length + tokens.shape[-1])
    return logits, new_cache


@dataclasses.dataclass(frozen=True)
class SequenceModel:
  """Pure functions of one DecoderTransformer's parameters (see the module's docstring)."""

  sizes: TransformerSizes
  transformed: hk.Transformed

  def init(self, key: jnp.ndarray, tokens: jnp.ndarray, positions: jnp.ndarray) -> hk.Params:
    return self.transformed.init(key, tokens, positions)

  def apply(
    self,
    params: hk.Params,
    tokens: jnp.ndarray,
    positions: jnp.ndarray,
    at: Optional[jnp.ndarray] = None,
  ) -> jnp.ndarray:
    """The whole sequence under the causal mask: logits[B, L, V] (logits[B, K, V] at the
    positions `at[B, K]` only, when given)."""
    return self.transformed.apply(params, tokens, positions, None, at)[0]

  def apply_cached(
    self, params: hk.Params, cache: KVCache, tokens: jnp.ndarray, positions: jnp.ndarray
  ) -> Tuple[jnp.ndarray, KVCache]:
    """k new tokens after the cache's contents: (logits[B, k, V], the extended cache)."""
    return self.transformed.apply(params, tokens, positions, cache)

  def init_cache(self, batch_size: int) -> KVCache:
    return init_cache(self.sizes, batch_size)


def make_transformer(sizes: TransformerSizes) -> SequenceModel:
  """A decoder-only transformer of these sizes, as pure functions."""

  def forward(tokens, positions, cache=None, at=None):
    return DecoderTransformer(sizes)(tokens, positions, cache, at)

  return SequenceModel(sizes, hk.without_apply_rng(hk.transform(forward)))
