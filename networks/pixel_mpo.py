"""MPO's policy and critic over camera images: one encoder, trained by the critic.

As in DrQ, the critic's loss trains the convolutional encoder; the policy reads the same
encoder's features with the gradient stopped, so the policy loss never moves it. The two
haiku transforms each hold an 'encoder' with the same parameter names; the learner copies
the critic's into the policy's after every step (`share_encoder`), so actors, which get
the policy's parameters only, see the trained encoder.

An observation may also be {'features': float32 [*B, F], 'pixels': uint8 [*B, H, W, C]}
(a pixel run with the task's state features): the features join the encoder's output, as
they are, before the heads; the learner shifts the image only.
"""

from typing import Dict, NamedTuple, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp

from networks.augment import random_shift
from networks.critic import CategoricalCriticHead
from networks.encoder import ENCODER_NAME, FEATURES, PIXELS, ConvEncoder
from networks.mlp import LayerNormMLP
from networks.mpo import ACTION_BOUND, MPONetworks, clip_to_action_box
from networks.policy import GaussianHead, GaussianParams


class Encoded(NamedTuple):
  """An observation already through the encoder (MPONetworks.encode): [*B, feature_dim (+ F)]."""

  features: jnp.ndarray


# An image [*B, H, W, C], or {'features': [*B, F], 'pixels': [*B, H, W, C]}, or Encoded.
Observation = Union[jnp.ndarray, Dict[str, jnp.ndarray], Encoded]


def share_encoder(policy_params: hk.Params, critic_params: hk.Params) -> hk.Params:
  """`policy_params` with every encoder module's parameters taken from `critic_params`."""
  return {
    name: critic_params[name] if name.split('/')[0] == ENCODER_NAME else value
    for name, value in policy_params.items()
  }


def make_pixel_mpo_networks(
  action_dim: int,
  policy_layer_sizes: Sequence[int] = (256, 256),
  critic_layer_sizes: Sequence[int] = (256, 256),
  num_atoms: int = 51,
  channels: Sequence[int] = (32, 32, 32),
  blocks: int = 1,
  feature_dim: int = 64,
  shift_pad: int = 4,
  init_stddev: float = 0.7,
  action_bound: Optional[float] = ACTION_BOUND,
  policy_trains_encoder: bool = False,
) -> MPONetworks:
  """Policy and critic over uint8 images [*B, H, W, C] (see networks.mpo.MPONetworks).

  The critic encodes each observation once and broadcasts its features over the action's
  sample dimensions; `shift_pad` is the learner's random shift (0: none).
  `policy_trains_encoder`: for a learner without a critic (behaviour cloning), the policy's
  loss trains its own encoder and nothing is shared.
  """

  def encode(obs: Observation, stop_gradient: bool = False) -> jnp.ndarray:
    """[*B, feature_dim (+ F)]: the image's features, then the state features if any."""
    if isinstance(obs, Encoded):
      return jax.lax.stop_gradient(obs.features) if stop_gradient else obs.features
    image = obs[PIXELS] if isinstance(obs, dict) else obs
    features = ConvEncoder(channels, blocks, feature_dim, name=ENCODER_NAME)(image)
    if stop_gradient:
      features = jax.lax.stop_gradient(features)
    if isinstance(obs, dict):
      state = obs[FEATURES].astype(jnp.float32)
      features = jnp.concatenate([features, state], axis=-1)
    return features

  def policy_fn(obs: Observation) -> GaussianParams:
    # Trained through the critic only: the policy loss must not move the encoder.
    features = encode(obs, stop_gradient=not policy_trains_encoder)
    torso = LayerNormMLP(policy_layer_sizes, name='policy_torso')
    return GaussianHead(action_dim, init_scale=init_stddev)(torso(features))

  def critic_fn(obs: Observation, action: jnp.ndarray) -> jnp.ndarray:
    features = encode(obs)  # [*B, F], once per observation
    try:
      batch = jnp.broadcast_shapes(features.shape[:-1], action.shape[:-1])
    except ValueError:
      raise ValueError(
        f'critic: observation batch {tuple(features.shape[:-1])} does not broadcast against '
        f'action batch {tuple(action.shape[:-1])} (expected obs[*B, H, W, C] with '
        'action[*S, *B, A])'
      ) from None
    features = jnp.broadcast_to(features, batch + features.shape[-1:])
    action = jnp.broadcast_to(clip_to_action_box(action, action_bound), batch + action.shape[-1:])
    torso = LayerNormMLP(critic_layer_sizes, name='critic_torso')
    return CategoricalCriticHead(num_atoms)(torso(jnp.concatenate([features, action], axis=-1)))

  def encode_fn(obs: Observation) -> Encoded:
    return Encoded(encode(obs))

  def augment(key: jnp.ndarray, obs: Observation) -> Observation:
    if isinstance(obs, dict):
      return {**obs, PIXELS: random_shift(key, obs[PIXELS], shift_pad)}
    return random_shift(key, obs, shift_pad)

  return MPONetworks(
    policy=hk.without_apply_rng(hk.transform(policy_fn)),
    critic=hk.without_apply_rng(hk.transform(critic_fn)),
    action_dim=action_dim,
    augment=augment if shift_pad > 0 else None,
    share_encoder=None if policy_trains_encoder else share_encoder,
    # Only where policy and critic share one encoder can one encoding serve both.
    encode=None if policy_trains_encoder else hk.without_apply_rng(hk.transform(encode_fn)),
  )
