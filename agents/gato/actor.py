"""The generalist's acme Actor: one key-value cache per episode, one jitted call per step.

The context mirrors a training window (launch.store.windows): the conditioning, then the
episode's timesteps. At an episode's start the cache is emptied and the conditioning
pre-filled: nothing, the task's id token, or (prompt conditioning) the last timesteps of
the best-returning episode this actor knows: a demonstration it was given
(`use_demonstration`, as Gato is prompted at evaluation) or one it completed itself (without
either, its first episode has none). A timestep that would not fit in the cache any more
rebuilds it from the conditioning and the episode's latest timesteps: half of those that
fit, so a rebuild, a full pass over the context, comes once every so many steps.

A parameter refresh mid-episode keeps the cache: the keys and values of earlier tokens
stay those of the parameters that saw them until the next rebuild.
"""

from typing import List, Optional

import dm_env
import jax
import numpy as np
from acme import adders, core

from agents.gato.decoding import make_action_decoder
from agents.mpo.actor import prefer_inline_cpu_dispatch
from agents.variable_client import VariableClient
from networks.tokenizer import TimestepLayout
from networks.transformer import KVCache, SequenceModel


class GatoActor(core.Actor):
  """Decodes one action token per action dimension over the episode's cached context."""

  def __init__(
    self,
    model: SequenceModel,
    layout: TimestepLayout,
    variable_client: VariableClient,
    adder: Optional[adders.Adder] = None,
    seed: int = 0,
    deterministic: bool = False,
    greedy_decoding: str = 'mean',
    conditioning: str = 'none',
    prompt_tokens: int = 0,
    task_index: int = 0,
    max_timesteps: int = 0,
  ):
    prefer_inline_cpu_dispatch()
    self._cpu = jax.devices('cpu')[0]  # Actors run beside the environment (see MPOActor).
    self._model = model
    self._layout = layout
    self._client = variable_client
    self._adder = adder
    self._conditioning = conditioning
    self._prompt_steps = prompt_tokens // layout.num_tokens if conditioning == 'prompt' else 0
    self._task_index = task_index
    self._max_timesteps = max_timesteps  # 0: as many as the cache holds.
    decode = make_action_decoder(model, layout, greedy_decoding if deterministic else 'sample')

    def step(params, cache, obs, key):
      key, decode_key = jax.random.split(key)
      action, tokens, cache = decode(params, cache, obs[None], decode_key)
      return action[0], tokens[0], cache, key

    self._step = jax.jit(step)
    # Only the cache is kept from a pre-fill: jit drops the unused logits.
    self._prefill = jax.jit(lambda p, c, t, pos: model.apply_cached(p, c, t, pos)[1])
    self._key = jax.device_put(jax.random.PRNGKey(seed), self._cpu)
    self._host_params = None
    self._device_params = None
    # The current episode: its conditioning, its timesteps' tokens, its return.
    self._prefix = np.zeros(0, np.int32)
    self._prefix_positions = np.zeros(0, np.int32)
    self._timesteps: List[np.ndarray] = []
    self._return = 0.0
    self._cache: Optional[KVCache] = None
    self._length = 0  # Tokens in the cache, kept here: no device read per step.
    # The best episode so far (prompt conditioning): its tokens [T, n] and return.
    self._prompt: Optional[np.ndarray] = None
    self._prompt_return = -np.inf
    self.num_rebuilds = 0  # Cache rebuilds (episode starts included), for tests and logs.

  # --- the context ----------------------------------------------------------

  def _params(self):
    """The client's parameters on the CPU, copied once per refresh (see MPOActor)."""
    params = self._client.params
    if params is not self._host_params:
      self._device_params = jax.device_put(params, self._cpu)
      self._host_params = params
    return self._device_params

  def _conditioning_tokens(self):
    layout = self._layout
    if self._conditioning == 'task_id':
      return np.array([layout.vocab.task_token(self._task_index)], np.int32), np.zeros(1, np.int32)
    if self._prompt_steps and self._prompt is not None:
      prompt = self._prompt[-self._prompt_steps :]  # The end: the outcome to aim for.
      return prompt.reshape(-1), np.tile(layout.positions, len(prompt))
    return np.zeros(0, np.int32), np.zeros(0, np.int32)

  @property
  def context_steps(self) -> int:
    """The most timesteps the cache holds after the conditioning (at most max_timesteps,
    as training windows do)."""
    steps = (self._model.sizes.max_len - len(self._prefix)) // self._layout.num_tokens
    return min(steps, self._max_timesteps) if self._max_timesteps else steps

  def _rebuild(self) -> None:
    """A fresh cache holding the conditioning and the latest half-context of timesteps."""
    keep = min(len(self._timesteps), self.context_steps // 2)
    recent = self._timesteps[len(self._timesteps) - keep :]
    tokens = np.concatenate([self._prefix, *recent]).astype(np.int32)
    positions = np.concatenate(
      [self._prefix_positions, np.tile(self._layout.positions, keep)]
    ).astype(np.int32)
    cache = jax.device_put(self._model.init_cache(1), self._cpu)
    if len(tokens):
      cache = self._prefill(self._params(), cache, tokens[None], positions[None])
    self._cache = cache
    self._length = len(tokens)
    self.num_rebuilds += 1

  # --- acme's Actor ---------------------------------------------------------

  def select_action(self, observation: np.ndarray) -> np.ndarray:
    n = self._layout.num_tokens
    if self._cache is None or self._length + n > len(self._prefix) + self.context_steps * n:
      self._rebuild()
    observation = np.asarray(observation, dtype=np.float32)
    action, tokens, self._cache, self._key = self._step(
      self._params(), self._cache, observation, self._key
    )
    self._length += n
    self._timesteps.append(
      np.concatenate([self._layout.observation_tokens(observation), np.asarray(tokens)])
    )
    return np.asarray(action)

  def use_demonstration(
    self, observations: np.ndarray, actions: np.ndarray, episode_return: float
  ) -> bool:
    """Prompts later episodes with this episode of the task (observations [T or T + 1,
    obs], actions [T, action]) until an episode of its own returns more. False (nothing
    changes) unless the actor conditions on prompts; ValueError naming the field when the
    arrays do not fit its body."""
    if not self._prompt_steps:
      return False
    layout = self._layout
    observations = np.asarray(observations, np.float32)
    actions = np.asarray(actions, np.float32)
    if actions.ndim != 2 or actions.shape[1] != layout.action_dim or not len(actions):
      raise ValueError(
        f'demonstration actions: shape {actions.shape}, want [T >= 1, {layout.action_dim}]'
      )
    if observations.shape[1:] != (layout.obs_dim,) or len(observations) not in (
      len(actions),
      len(actions) + 1,
    ):
      raise ValueError(
        f'demonstration observations: shape {observations.shape}, want '
        f'[{len(actions)} or {len(actions) + 1}, {layout.obs_dim}]'
      )
    for name, x in (('observations', observations), ('actions', actions)):
      if not np.isfinite(x).all():
        raise ValueError(f'demonstration {name}: not finite')
    if not np.isfinite(episode_return):
      raise ValueError(f'demonstration episode_return: {episode_return} is not finite')
    self._prompt = layout.timestep_tokens(observations[: len(actions)], actions)
    self._prompt_return = float(episode_return)
    return True

  @property
  def policy_version(self) -> Optional[int]:
    """The learner step of the parameters acting now, when the source serves it."""
    return self._client.version

  def observe_first(self, timestep: dm_env.TimeStep):
    self._prefix, self._prefix_positions = self._conditioning_tokens()
    self._timesteps = []
    self._return = 0.0
    self._cache = None  # Rebuilt (conditioning pre-filled) at the first action.
    if self._adder:
      self._adder.add_first(timestep)

  def observe(self, action: np.ndarray, next_timestep: dm_env.TimeStep):
    self._return += float(next_timestep.reward or 0.0)
    if next_timestep.last() and self._prompt_steps and self._return >= self._prompt_return:
      self._prompt = np.stack(self._timesteps)
      self._prompt_return = self._return
    if self._adder:
      self._adder.add(action, next_timestep)

  def update(self, wait: bool = False):
    self._client.update(wait)
