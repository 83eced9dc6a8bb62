"""The tokeniser of the sequence models: floats and ids to one shared vocabulary, and back.

Continuous values are mu-law encoded (mu = 100, M = 256), clipped to [-1, 1] and cut into
1024 uniform bins, as Gato does; a token decodes to its bin's centre. The vocabulary is

    [0, num_bins)                          continuous bins
    [num_bins, num_bins + num_discrete)    discrete values (their own id range)
    separator, padding                     one token each
    task ids                               num_tasks tokens (task conditioning by id)

A timestep is its observation tokens (the observation groups in their fixed order, as the
flat observation holds them), the separator, then one token per action dimension
(`TimestepLayout`). Every function takes numpy or jax arrays and returns the same kind, so
the host's data pipeline tokenises in numpy and the actor inside jit.
"""

import dataclasses
import math
from typing import Sequence, Tuple

import jax.numpy as jnp
import numpy as np

MU = 100.0
M = 256.0
NUM_BINS = 1024


def _xp(*arrays):
  """numpy when every input is numpy (or a Python number), else jax.numpy."""
  return np if all(isinstance(a, (np.ndarray, np.generic, int, float)) for a in arrays) else jnp


def mu_law_encode(x, mu: float = MU, m: float = M):
  """sign(x) * log(1 + mu |x|) / log(1 + mu m): [-m, m] onto [-1, 1], finer near 0."""
  xp = _xp(x)
  x = xp.asarray(x, xp.float32)
  return xp.sign(x) * xp.log1p(mu * xp.abs(x)) / np.float32(math.log1p(mu * m))


def mu_law_decode(y, mu: float = MU, m: float = M):
  """The inverse of `mu_law_encode` on [-1, 1]."""
  xp = _xp(y)
  y = xp.asarray(y, xp.float32)
  return xp.sign(y) * xp.expm1(xp.abs(y) * np.float32(math.log1p(mu * m))) / np.float32(mu)


def mu_law_error_bound(x, num_bins: int = NUM_BINS, mu: float = MU, m: float = M):
  """The largest |x - decode(encode(x))| for |x| <= m (mu-law, then bins of width 2/num_bins).

  y = F(x) lies within half a bin, 1/num_bins, of the decoded centre c, on the same side of
  0 (0 is a bin edge when num_bins is even). F^-1(y) = (exp(|y| L) - 1) / mu, L = log(1 + mu
  m), is convex in |y|, so the gap is largest one half-bin above |y|:
  F^-1(|y| + 1/num_bins) - F^-1(|y|) = (|x| + 1/mu) (exp(L / num_bins) - 1).
  With the defaults that is (|x| + 0.01) * 0.00996: about 1% of |x| plus 1e-4.
  """
  return (np.abs(x) + 1.0 / mu) * math.expm1(math.log1p(mu * m) / num_bins)


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Which token ids mean what (see the module's docstring for the layout)."""

  num_bins: int = NUM_BINS
  num_discrete: int = 1024
  num_tasks: int = 0
  mu: float = MU
  m: float = M

  def __post_init__(self):
    for name in ('num_bins', 'num_discrete', 'num_tasks'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f'Vocabulary.{name} must be an int >= 0, got {value!r}')
    if self.num_bins < 2 or self.num_bins % 2:
      # An even count puts 0 on a bin edge, so no bin mixes signs (see mu_law_error_bound).
      raise ValueError(f'Vocabulary.num_bins must be even and >= 2, got {self.num_bins}')

  @property
  def discrete_offset(self) -> int:
    return self.num_bins

  @property
  def separator(self) -> int:
    """Ends a timestep's observation: the next tokens are its action."""
    return self.num_bins + self.num_discrete

  @property
  def padding(self) -> int:
    """Fills a window past the end of its data; never a target of the loss."""
    return self.separator + 1

  @property
  def task_offset(self) -> int:
    return self.separator + 2

  @property
  def size(self) -> int:
    return self.task_offset + self.num_tasks

  def task_token(self, task_index: int) -> int:
    if not 0 <= task_index < self.num_tasks:
      raise ValueError(f'task index {task_index} outside [0, {self.num_tasks})')
    return self.task_offset + task_index

  def continuous_tokens(self, x, mu_law: bool = True):
    """Floats -> bin tokens (int32). Without mu-law, x is only clipped to [-1, 1] and binned
    (for values that live in [-1, 1] already)."""
    xp = _xp(x)
    y = mu_law_encode(x, self.mu, self.m) if mu_law else xp.asarray(x, xp.float32)
    y = xp.clip(y, -1.0, 1.0)
    bins = xp.floor((y + 1.0) * np.float32(self.num_bins / 2)).astype(xp.int32)
    return xp.clip(bins, 0, self.num_bins - 1)  # y = 1 lands on the top edge

  def continuous_values(self, tokens, mu_law: bool = True):
    """Bin tokens -> the bins' centres (float32), inverse mu-law applied if `mu_law`.

    Tokens outside the bins (discrete, special) decode to a clipped, meaningless value:
    callers decode only positions that hold bins (an action decoder restricts its choice).
    """
    xp = _xp(tokens)
    tokens = xp.clip(xp.asarray(tokens), 0, self.num_bins - 1).astype(xp.float32)
    centre = (tokens + 0.5) * np.float32(2.0 / self.num_bins) - 1.0
    return mu_law_decode(centre, self.mu, self.m) if mu_law else centre

  def discrete_tokens(self, values):
    """Discrete values in [0, num_discrete) -> their tokens (int32)."""
    xp = _xp(values)
    return xp.asarray(values).astype(xp.int32) + self.discrete_offset

  def discrete_values(self, tokens):
    xp = _xp(tokens)
    return xp.asarray(tokens).astype(xp.int32) - self.discrete_offset


@dataclasses.dataclass(frozen=True)
class TimestepLayout:
  """The tokens of one timestep of one body: observation, separator, action.

  `obs_group_sizes` splits the flat observation into its groups in their fixed order (the
  order of the flat vector, see environments.suite.obs_group_sizes_from_spec); groups named
  in `discrete_groups` hold ids in [0, vocab.num_discrete), the others floats. Each
  observation feature, and each action dimension, is one token, so bodies of different
  sizes differ in the number of tokens per timestep, never in the network.
  """

  obs_group_sizes: Tuple[int, ...]
  action_dim: int
  vocab: Vocabulary = Vocabulary()
  discrete_groups: Tuple[int, ...] = ()
  # The tokeniser mu-law encodes every continuous value. Actions already in [-1, 1]
  # use only the middle 45% of the bins that way (F(1) = 0.455); False bins them uniformly.
  action_mu_law: bool = True

  def __post_init__(self):
    object.__setattr__(self, 'obs_group_sizes', tuple(int(s) for s in self.obs_group_sizes))
    object.__setattr__(self, 'discrete_groups', tuple(sorted(set(self.discrete_groups))))
    if not self.obs_group_sizes or any(s < 1 for s in self.obs_group_sizes):
      raise ValueError(f'obs_group_sizes must be sizes >= 1, got {self.obs_group_sizes}')
    if self.action_dim < 1:
      raise ValueError(f'action_dim must be >= 1, got {self.action_dim}')
    if any(not 0 <= g < len(self.obs_group_sizes) for g in self.discrete_groups):
      raise ValueError(
        f'discrete_groups {self.discrete_groups} name groups outside the '
        f'{len(self.obs_group_sizes)} observation groups'
      )

  @property
  def obs_dim(self) -> int:
    return sum(self.obs_group_sizes)

  @property
  def separator_index(self) -> int:
    """Where the separator sits in the timestep (= the number of observation tokens)."""
    return self.obs_dim

  @property
  def num_tokens(self) -> int:
    return self.obs_dim + 1 + self.action_dim

  @property
  def positions(self) -> np.ndarray:
    """Position of each token within its timestep, [num_tokens] int32."""
    return np.arange(self.num_tokens, dtype=np.int32)

  @property
  def action_mask(self) -> np.ndarray:
    """[num_tokens] bool: True at the action tokens (the only targets of the loss)."""
    return self.positions > self.separator_index

  def _discrete_features(self) -> np.ndarray:
    flags = [g in self.discrete_groups for g, size in enumerate(self.obs_group_sizes)]
    return np.repeat(np.array(flags, bool), self.obs_group_sizes)

  def observation_tokens(self, obs):
    """obs[..., obs_dim] -> [..., obs_dim + 1]: the observation's tokens and the separator."""
    xp = _xp(obs)
    obs = xp.asarray(obs)
    tokens = self.vocab.continuous_tokens(obs)
    if self.discrete_groups:
      discrete = self.vocab.discrete_tokens(xp.round(obs))
      tokens = xp.where(self._discrete_features(), discrete, tokens)
    separator = xp.full(obs.shape[:-1] + (1,), self.vocab.separator, xp.int32)
    return xp.concatenate([tokens, separator], axis=-1)

  def action_tokens(self, action):
    """action[..., action_dim] -> [..., action_dim] bin tokens."""
    return self.vocab.continuous_tokens(action, mu_law=self.action_mu_law)

  def actions(self, tokens):
    """[..., action_dim] action tokens -> the actions they stand for (float32)."""
    return self.vocab.continuous_values(tokens, mu_law=self.action_mu_law)

  def timestep_tokens(self, obs, action):
    """(obs[..., obs_dim], action[..., action_dim]) -> tokens[..., num_tokens]."""
    xp = _xp(obs, action)
    return xp.concatenate([self.observation_tokens(obs), self.action_tokens(action)], axis=-1)


def flat_layout(obs_dim: int, action_dim: int, **kwargs) -> TimestepLayout:
  """A layout of one observation group of `obs_dim` features."""
  return TimestepLayout((obs_dim,), action_dim, **kwargs)


def max_timestep_tokens(layouts: Sequence[TimestepLayout]) -> int:
  """How many within-timestep positions a model serving all these bodies must embed."""
  return max(layout.num_tokens for layout in layouts)
