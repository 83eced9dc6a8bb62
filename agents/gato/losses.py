"""The generalist's loss: next-token cross-entropy on the action tokens only."""

from typing import Dict, Tuple

import jax
import jax.numpy as jnp


def masked_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray):
  """Mean of -log softmax(logits)[target] over the positions where `mask` is set.

  logits[..., V], targets[...] (ints), mask[...] (bool or 0/1). Unmasked positions get no
  weight (no gradient); with nothing masked in, the loss is 0, not NaN.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  weights = mask.astype(jnp.float32)
  return jnp.sum(nll * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def masked_accuracy(logits: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray):
  """Fraction of the masked positions whose most likely token is the target."""
  hits = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  weights = mask.astype(jnp.float32)
  return jnp.sum(hits * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def next_token_loss(
  logits: jnp.ndarray, tokens: jnp.ndarray, loss_mask: jnp.ndarray
) -> Dict[str, jnp.ndarray]:
  """The sequence loss: logits[B, L, V] at t predict tokens[B, t + 1], counted where
  loss_mask[B, t + 1] is set (the action tokens of a window, never prompt or padding).

  Returns {'loss', 'accuracy', 'num_targets'}.
  """
  logits, targets, mask = logits[:, :-1], tokens[:, 1:], loss_mask[:, 1:]
  return {
    'loss': masked_cross_entropy(logits, targets, mask),
    'accuracy': masked_accuracy(logits, targets, mask),
    'num_targets': jnp.sum(mask.astype(jnp.float32)),
  }


def target_positions(loss_mask: jnp.ndarray, max_targets: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """The positions t whose next token is a target (loss_mask[:, t + 1]), for logits there.

  Returns at[B, max_targets] (ints into the first L - 1 positions: the targets' positions in
  order, then filler) and valid[B, max_targets] (False at the filler). A window with more
  targets than `max_targets` loses its last ones: size it from the layouts (at most the
  action tokens of the whole timesteps that fit a window).
  """
  targets = loss_mask[:, 1:].astype(bool)
  at = jnp.argsort(jnp.logical_not(targets).astype(jnp.int32), axis=1, stable=True)
  at = at[:, :max_targets]
  return at, jnp.take_along_axis(targets, at, axis=1)


def next_token_loss_at(
  logits: jnp.ndarray, tokens: jnp.ndarray, at: jnp.ndarray, valid: jnp.ndarray
) -> Dict[str, jnp.ndarray]:
  """next_token_loss with the logits at the positions `at` alone (target_positions): the
  same values where no window has more targets than `at` has room for."""
  targets = jnp.take_along_axis(tokens[:, 1:], at, axis=1)
  return {
    'loss': masked_cross_entropy(logits, targets, valid),
    'accuracy': masked_accuracy(logits, targets, valid),
    'num_targets': jnp.sum(valid.astype(jnp.float32)),
  }
