"""The generalist's update: one pure function from (state, windows) to (state, metrics).

Shaped for agents.jitted_learner.JittedLearner (state a NamedTuple with `steps`, update
jitted once), so a sequence learner node can wrap it as the MPO and BC learners do.
"""

from typing import Dict, NamedTuple, Optional, Tuple, Union

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from agents.common.learning_rate import Schedule
from agents.gato.losses import next_token_loss, next_token_loss_at, target_positions
from agents.gato.types import SequenceBatch
from networks.transformer import SequenceModel


class GatoTrainingState(NamedTuple):
  """Everything the learner needs to continue exactly where it stopped."""

  params: hk.Params
  opt_state: optax.OptState
  steps: jnp.ndarray


def make_optimizer(
  learning_rate: Union[float, Schedule],
  max_grad_norm: float = 1.0,
  weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
  """AdamW after global-norm clipping; `learning_rate` a number or a function of the update
  count (agents.common.learning_rate)."""
  return optax.chain(
    optax.clip_by_global_norm(max_grad_norm),
    optax.adamw(learning_rate, weight_decay=weight_decay),
  )


def initial_state(
  model: SequenceModel, optimizer: optax.GradientTransformation, key: jnp.ndarray
) -> GatoTrainingState:
  """Fresh parameters (they do not depend on the window length) and optimiser state."""
  dummy = jnp.zeros((1, 1), jnp.int32)
  params = model.init(key, dummy, dummy)
  return GatoTrainingState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def corrupt_action_tokens(
  tokens: jnp.ndarray,
  loss_mask: jnp.ndarray,
  key: jnp.ndarray,
  share: float,
  action_range: Tuple[int, int],
) -> jnp.ndarray:
  """`tokens` with each action token (where `loss_mask`) replaced, with probability
  `share`, by a uniformly drawn action bin in [low, high]; the other tokens as they are."""
  hit_key, bin_key = jax.random.split(key)
  hit = loss_mask.astype(bool) & (jax.random.uniform(hit_key, tokens.shape) < share)
  low, high = action_range
  noise = jax.random.randint(bin_key, tokens.shape, low, high + 1, dtype=tokens.dtype)
  return jnp.where(hit, noise, tokens)


def jitter_value_tokens(
  tokens: jnp.ndarray, key: jnp.ndarray, bins: int, num_value_bins: int
) -> jnp.ndarray:
  """`tokens` with each value token (below `num_value_bins`) moved by a uniform random
  number of bins in [-bins, bins], kept inside the value range; other tokens as they are.

  One timestep of tokenised observations is a unique combination of bin ids, which a
  transformer memorises with its noisy sampled action (training accuracy 0.95 on the
  experts' noisy actions). Jittered, neighbouring bins share targets, and the model learns the
  action's distribution around a state instead of the one action drawn there.
  """
  shift = jax.random.randint(key, tokens.shape, -bins, bins + 1, dtype=tokens.dtype)
  moved = jnp.clip(tokens + shift, 0, num_value_bins - 1)
  return jnp.where(tokens < num_value_bins, moved, tokens)


def make_update_fn(
  model: SequenceModel,
  optimizer: optax.GradientTransformation,
  max_targets: Optional[int] = None,
  action_token_noise: float = 0.0,
  action_range: Tuple[int, int] = (0, 0),
  value_token_jitter: int = 0,
  num_value_bins: int = 0,
):
  """update(state, batch: SequenceBatch) -> (state, metrics), pure and jittable.

  With `max_targets` (at least the action tokens any window holds) the logits are computed
  at the targets' positions only: the same loss, with the output layer over the vocabulary
  (most of a small model's cost) on a fraction of the tokens. With `action_token_noise`,
  that share of the input's action tokens is replaced by random bins of `action_range`
  (corrupt_action_tokens; drawn from the step count, so a resumed run draws the same).
  With `value_token_jitter`, every value token of the input (below `num_value_bins`:
  observations and past actions) moves by up to that many bins (jitter_value_tokens);
  the targets stay.
  """
  if value_token_jitter and num_value_bins < 1:
    raise ValueError('value_token_jitter needs num_value_bins (the value range) >= 1')

  def loss_fn(params, batch: SequenceBatch, steps: jnp.ndarray):
    inputs = batch.tokens
    key = jax.random.fold_in(jax.random.PRNGKey(0), steps)
    if action_token_noise > 0:
      inputs = corrupt_action_tokens(inputs, batch.loss_mask, key, action_token_noise, action_range)
    if value_token_jitter > 0:
      jitter_key = jax.random.fold_in(key, 1)
      inputs = jitter_value_tokens(inputs, jitter_key, value_token_jitter, num_value_bins)
    if max_targets is None:
      logits = model.apply(params, inputs, batch.positions)
      out = next_token_loss(logits, batch.tokens, batch.loss_mask)
    else:
      at, valid = target_positions(batch.loss_mask, max_targets)
      logits = model.apply(params, inputs, batch.positions, at=at)
      out = next_token_loss_at(logits, batch.tokens, at, valid)
    return out['loss'], out

  def update(
    state: GatoTrainingState, batch: SequenceBatch
  ) -> Tuple[GatoTrainingState, Dict[str, jnp.ndarray]]:
    (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, state.steps)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    new_state = GatoTrainingState(
      optax.apply_updates(state.params, updates), opt_state, state.steps + 1
    )
    metrics = {
      'sequence_loss': out['loss'],
      'action_accuracy': out['accuracy'],
      'action_tokens': out['num_targets'],
      'grad_norm': optax.global_norm(grads),
    }
    return new_state, metrics

  return update
