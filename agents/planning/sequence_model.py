"""The transformer dynamics model (model.kind='transformer'): its update on one-step
transitions and its use as the planner's step.

A transition is two timesteps of the shared tokeniser (networks.tokenizer.TimestepLayout),
whose observation part has one feature more than the task's, the reward slot: first the
observation (reward slot 0), the separator, the action; then the change of the
observation over the step, next_obs - obs, in the observation's places, and the step's
reward in the reward slot (the second timestep's separator and action are masked out of
the loss and, the model being causal, change nothing). The loss is
networks.sequence_dynamics' dynamics mask: the change's tokens and then the reward's, each
predicted from the (observation, action) and the tokens before it.
Observations are Markov states here (dm_control's), so one timestep of history is all
the model needs, and replay's transitions are its data.

Why the change, not the next observation: the tokeniser's bins are about 0.02 wide near 1
and 0.1 near 5, while one 10 ms step moves cartpole's cart by 0.005 and cos(angle) by
0.001 on average. Tokenised, the next observation falls in the same bin as the observation
for 59% and 95% of steps on those two features (a random-action episode), so a perfect
model of the tokens still predicts a cart that barely moves: planning through it scored
0.7 on cartpole:swingup. The change is small, where mu-law's bins are finest: its
tokenised round trip is within 0.6-5% of each feature's mean change.

As a planner step it decodes the change and the reward greedily through the key-value
cache (networks.sequence_dynamics.predict_next_observation) and adds the change to the
state; plans are scored with the predicted reward, or with a known reward of the predicted
states (environments.known_rewards) where the planner is given one.
"""

from typing import Dict, NamedTuple, Optional, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from agents.gato.losses import next_token_loss
from agents.planning.model_step import ModelStep, RewardFn
from networks.sequence_dynamics import dynamics_loss_mask, predict_next_observation
from networks.tokenizer import TimestepLayout, flat_layout
from networks.transformer import SequenceModel, TransformerSizes, make_transformer


class SequenceDynamics(NamedTuple):
  """The transformer and its timestep layout: what the builder's make_networks gives for
  model.kind='transformer'."""

  model: SequenceModel
  layout: TimestepLayout


class SequenceLearnerState(NamedTuple):
  """Everything the transformer's learner needs to continue exactly where it stopped."""

  params: hk.Params
  opt_state: optax.OptState
  steps: jnp.ndarray


def dynamics_layout(obs_dim: int, action_dim: int) -> TimestepLayout:
  """One timestep's layout: the observation's features and the reward slot, the action's."""
  return flat_layout(obs_dim + 1, action_dim)


def make_sequence_dynamics(
  obs_dim: int, action_dim: int, model_size: int, num_heads: int, num_layers: int
) -> SequenceDynamics:
  """The transformer and the layout of one timestep, sized for one transition (two
  timesteps' tokens)."""
  layout = dynamics_layout(obs_dim, action_dim)
  sizes = TransformerSizes(
    vocab_size=layout.vocab.size,
    num_positions=layout.num_tokens,
    max_len=2 * layout.num_tokens,
    model_size=model_size,
    num_heads=num_heads,
    num_layers=num_layers,
  )
  return SequenceDynamics(make_transformer(sizes), layout)


def _with_reward_slot(values, reward):
  return jnp.concatenate([values, jnp.asarray(reward, values.dtype)[..., None]], axis=-1)


def transition_tokens(layout: TimestepLayout, obs, action, next_obs, reward):
  """[B, 2 * num_tokens] tokens and positions of transitions: (obs and a 0 reward slot,
  action), then (the change next_obs - obs and the reward, a zero action)."""
  obs = jnp.asarray(obs, jnp.float32)
  first = layout.timestep_tokens(_with_reward_slot(obs, jnp.zeros(obs.shape[:-1])), action)
  change = _with_reward_slot(jnp.asarray(next_obs, jnp.float32) - obs, reward)
  second = layout.timestep_tokens(change, jnp.zeros_like(action))
  tokens = jnp.concatenate([first, second], axis=-1)
  positions = jnp.broadcast_to(jnp.tile(layout.positions, 2), tokens.shape)
  return tokens, positions


def initial_sequence_state(
  model: SequenceModel, optimizer: optax.GradientTransformation, key: jnp.ndarray
) -> SequenceLearnerState:
  @jax.jit  # One compilation rather than one per op.
  def init(key):
    dummy = jnp.zeros((1, 1), jnp.int32)
    params = model.init(key, dummy, dummy)
    return SequenceLearnerState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

  return init(key)


def make_sequence_loss_fn(model: SequenceModel, layout: TimestepLayout):
  """loss(params, transitions) -> (nats a token of the change, next_token_loss's dict)."""
  mask = jnp.asarray(dynamics_loss_mask(layout, 2))

  def loss(params, transitions):
    obs = jnp.asarray(transitions.observation, jnp.float32)
    action = jnp.asarray(transitions.action, jnp.float32)
    next_obs = jnp.asarray(transitions.next_observation, jnp.float32)
    reward = jnp.asarray(transitions.reward, jnp.float32)
    tokens, positions = transition_tokens(layout, obs, action, next_obs, reward)
    logits = model.apply(params, tokens, positions)
    out = next_token_loss(logits, tokens, jnp.broadcast_to(mask, tokens.shape))
    return out['loss'], out

  return loss


def make_sequence_update_fn(
  model: SequenceModel, layout: TimestepLayout, optimizer: optax.GradientTransformation
):
  """update(state, transitions) -> (state, metrics), pure and jittable."""
  loss_fn = make_sequence_loss_fn(model, layout)

  def update(state: SequenceLearnerState, transitions) -> Tuple[SequenceLearnerState, Dict]:
    (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, transitions)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
      'model_loss': out['loss'],
      'token_accuracy': out['accuracy'],
      'grad_norm': optax.global_norm(grads),
    }
    return SequenceLearnerState(params, opt_state, state.steps + 1), metrics

  return update


def predict_change_and_reward(
  model: SequenceModel, params: hk.Params, layout: TimestepLayout, obs, action
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """The most likely change [B, obs_dim] and reward [B] of one step from obs [B, obs_dim]
  with action [B, action_dim], decoded greedily one token at a time."""
  obs = jnp.asarray(obs, jnp.float32)
  tokens = layout.timestep_tokens(
    _with_reward_slot(obs, jnp.zeros(obs.shape[:-1])), jnp.asarray(action, jnp.float32)
  )
  positions = jnp.broadcast_to(jnp.asarray(layout.positions), tokens.shape)
  decoded = predict_next_observation(model, params, layout, tokens, positions)
  return decoded[:, :-1], decoded[:, -1]


def make_sequence_model_step(
  model: SequenceModel,
  params: hk.Params,
  layout: TimestepLayout,
  reward_fn: Optional[RewardFn] = None,
) -> ModelStep:
  """The transformer as a planner step: state = the observation [obs_dim]; the reward is
  the predicted one, or `reward_fn`'s of the predicted states when given."""

  def initial_state(obs):
    return jnp.asarray(obs, jnp.float32)

  def step(state, action):
    change, reward = predict_change_and_reward(model, params, layout, state[None], action[None])
    next_obs = state + change[0]
    if reward_fn is None:
      return next_obs, reward[0]
    return next_obs, reward_fn(state, action, next_obs)

  return ModelStep(step, initial_state)
