"""The shared transformer (networks.transformer) as a dynamics model over tokenised episodes.

No second network or tokeniser: an episode is tokenised exactly as for the generalist
policy (networks.tokenizer.TimestepLayout: observation, separator, action per timestep),
and the same next-token logits are read at different places. Where the policy's loss
counts the action tokens, the dynamics loss counts the observation tokens of every
timestep after the first: each is predicted from the whole history, the previous action
included, and from the earlier features of its own observation (autoregressive within the
observation). Continuous observation features only: discrete groups are not modelled yet.
The planning agent puts the reward in one more observation place (a reward slot), so it is
predicted as the observation's last feature (agents.planning.sequence_model).
"""

import jax.numpy as jnp
import numpy as np

from networks.tokenizer import TimestepLayout
from networks.transformer import SequenceModel


def dynamics_loss_mask(layout: TimestepLayout, num_timesteps: int) -> np.ndarray:
  """[num_timesteps * num_tokens] bool: the observation tokens of timesteps 1.. onwards.

  The first timestep's observation has no history to be predicted from, and the
  separators and actions are inputs, never targets.
  """
  observation = layout.positions < layout.separator_index
  mask = np.tile(observation, (num_timesteps, 1))
  mask[0] = False
  return mask.reshape(-1)


def episode_tokens(layout: TimestepLayout, obs, actions):
  """obs [..., T, obs_dim] and actions [..., T, action_dim] -> tokens and positions
  [..., T * num_tokens], as the sequence model takes them."""
  tokens = layout.timestep_tokens(obs, actions)
  positions = np.broadcast_to(layout.positions, tokens.shape)
  flat = tokens.shape[:-2] + (-1,)
  return tokens.reshape(flat), positions.reshape(flat)


def predict_next_observation(
  model: SequenceModel,
  params,
  layout: TimestepLayout,
  tokens: jnp.ndarray,
  positions: jnp.ndarray,
) -> jnp.ndarray:
  """The most likely next observation [B, obs_dim] after a history of whole timesteps.

  tokens, positions [B, L]: timesteps (each ending with its action), L + obs_dim within
  the model's max_len. Decodes greedily, one feature at a time through the key-value
  cache, choosing among the continuous bins only (never a special token).
  """
  vocab = layout.vocab
  batch = tokens.shape[0]
  logits, cache = model.apply_cached(params, model.init_cache(batch), tokens, positions)
  features = []
  for i in range(layout.obs_dim):
    token = jnp.argmax(logits[:, -1, : vocab.num_bins], axis=-1).astype(jnp.int32)
    features.append(token)
    if i + 1 < layout.obs_dim:
      position = jnp.full((batch, 1), i, jnp.int32)
      logits, cache = model.apply_cached(params, cache, token[:, None], position)
  return vocab.continuous_values(jnp.stack(features, axis=-1))
