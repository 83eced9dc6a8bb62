"""Tests for the behaviour-cloning baseline: config, update, BCLearner and BCBuilder.

The data is a fixed batch whose actions are a known linear function of the observations,
so a working learner must bring the policy mean close to those actions.
"""

from __future__ import annotations

import math
import pickle
from typing import Dict, List, NamedTuple

import jax
import numpy as np
import pytest
from acme import specs, types
from acme.utils import counting, loggers

from agents.bc import learning
from agents.bc.builder import BCBuilder
from agents.bc.config import BCConfig
from agents.bc.learner import BCLearner
from agents.common.errors import ConfigError
from agents.common.replay_config import ReplayConfig
from agents.mpo import losses
from agents.mpo.builder import MPOBuilder
from agents.mpo.config import MPOConfig
from agents.mpo.learner import NonFiniteLossError
from networks.mpo import make_mpo_networks
from tests.fakes import Feed

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 64
ACTION_MATRIX = np.array([[0.5, -0.3, 0.1], [0.2, 0.4, -0.3]], np.float32)
CONFIG = BCConfig(policy_layer_sizes=(32, 32), learning_rate=1e-3)
TRAIN_STEPS = 300


def _linear_dataset(seed: int = 0, action_nan: bool = False) -> types.Transition:
  """Actions = ACTION_MATRIX @ observation, inside [-0.9, 0.9]; BC reads nothing else."""
  rng = np.random.default_rng(seed)
  obs = rng.uniform(-1.0, 1.0, (BATCH, OBS_DIM)).astype(np.float32)
  action = obs @ ACTION_MATRIX.T
  if action_nan:
    action[5, 1] = np.nan
  return types.Transition(
    observation=obs,
    action=action,
    reward=np.zeros(BATCH, np.float32),
    discount=np.ones(BATCH, np.float32),
    next_observation=obs,
  )


def _networks(config: BCConfig = CONFIG):
  return make_mpo_networks(ACTION_DIM, config.policy_layer_sizes, (8,), 1)


# Jitted once: op-by-op haiku calls compile every op on their own.
_policy_apply = jax.jit(_networks().policy.apply)


def _leaves_equal(a, b) -> bool:
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------
# BCConfig.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  'field, value',
  [
    ('learning_rate', 0.0),
    ('learning_rate', float('nan')),
    ('max_grad_norm', -1.0),
    ('policy_layer_sizes', ()),
    ('policy_layer_sizes', (8, 0)),
  ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
  with pytest.raises(ConfigError, match=rf'BCConfig\.{field}='):
    BCConfig(**{field: value})


def _legacy_flat(config: MPOConfig) -> dict:
  """The config.json agent entry of a BC run from before BCConfig stood alone: a flat MPOConfig."""
  old_name = {new: old for old, new in MPOConfig.legacy_keys.items()}
  flat = {old_name.get(k, k): v for k, v in MPOConfig.flatten(config.to_dict()).items()}
  # Fields added to the sub-configs since (e.g. perceiver.patch_size) were never stored flat.
  return {k: v for k, v in flat.items() if '.' not in k}


def test_config_from_a_stored_mpo_config_takes_the_policy_settings():
  mpo = MPOConfig(
    policy_layer_sizes=[16, 8],
    policy_learning_rate=3e-4,
    max_grad_norm=5.0,
    replay=ReplayConfig(batch_size=32),
  )
  stored = _legacy_flat(mpo)
  assert 'critic_layer_sizes' in stored and 'pmpo_alpha' in stored and 'batch_size' in stored
  assert BCConfig.from_dict(stored) == BCConfig(
    policy_layer_sizes=(16, 8),
    learning_rate=3e-4,
    max_grad_norm=5.0,
    replay=ReplayConfig(batch_size=32),
  )


def test_config_stands_alone_with_its_own_data_pipeline_settings():
  """BC is configured without MPOConfig: its own fields plus the shared replay sub-config."""
  config = BCConfig.from_dict(
    {'learning_rate': 1e-3, 'replay.batch_size': 64, 'replay': {'n_step': 3}}
  )
  assert config.replay == ReplayConfig(batch_size=64, n_step=3)
  assert not isinstance(config, MPOConfig)
  assert not issubclass(BCBuilder, MPOBuilder)
  # MPO's own fields are not BC's: a BC run rejects them, naming them.
  with pytest.raises(ConfigError, match=r"unknown BCConfig field\(s\) \['num_atoms'\]"):
    BCConfig.from_dict({'learning_rate': 1e-3, 'num_atoms': 5})


# ---------------------------------------------------------------------------
# The update.
# ---------------------------------------------------------------------------


def test_update_reports_the_nll_before_the_step_and_moves_only_the_policy():
  nets = _networks()
  state = jax.jit(lambda key: learning.initial_state(nets, CONFIG, OBS_DIM, key))(
    jax.random.PRNGKey(0)
  )
  batch = _linear_dataset()
  new_state, metrics = jax.jit(learning.make_update_fn(nets, CONFIG))(state, batch)
  mean, std = _policy_apply(state.policy_params, batch.observation)
  np.testing.assert_allclose(
    metrics['bc_loss'], losses.behaviour_cloning_loss(mean, std, batch.action), rtol=1e-5
  )
  np.testing.assert_allclose(metrics['policy_loss'], metrics['bc_loss'])
  np.testing.assert_allclose(
    metrics['action_mse'], np.mean(np.sum((np.asarray(mean) - batch.action) ** 2, -1)), rtol=1e-5
  )
  assert all(math.isfinite(float(v)) for v in metrics.values())
  assert int(new_state.steps) == 1
  assert not _leaves_equal(new_state.policy_params, state.policy_params)
  # Only a policy is built: the critic of the shared networks has no parameters here.
  assert set(state.policy_params) == set(new_state.policy_params)
  assert all(name.startswith(('policy_torso', 'gaussian_head')) for name in state.policy_params)


# ---------------------------------------------------------------------------
# BCLearner on the linear dataset.
# ---------------------------------------------------------------------------


def _learner(feed: Feed, seed: int, logger=None, counter=None) -> BCLearner:
  return BCLearner(
    _networks(),
    CONFIG,
    OBS_DIM,
    feed,
    seed=seed,
    counter=counter,
    logger=logger or loggers.NoOpLogger(),
  )


def _mean_error(policy_params) -> np.ndarray:
  batch = _linear_dataset()
  mean, _ = _policy_apply(policy_params, batch.observation)
  return np.abs(np.asarray(mean) - batch.action)


class Trained(NamedTuple):
  learner: BCLearner
  feed: Feed
  logged: List[Dict[str, float]]
  initial_policy: dict
  final_policy: dict


@pytest.fixture(scope='module')
def trained() -> Trained:
  feed = Feed(_linear_dataset())
  logger = loggers.InMemoryLogger()
  learner = _learner(feed, seed=0, logger=logger, counter=counting.Counter())
  assert learner.steps == 0
  [initial] = learner.get_variables(['policy'])
  for _ in range(TRAIN_STEPS):
    learner.step()
  [final] = learner.get_variables(['policy'])
  return Trained(learner, feed, list(logger.data), initial, final)


def test_learner_fits_the_dataset_actions(trained):
  start, end = _mean_error(trained.initial_policy), _mean_error(trained.final_policy)
  assert start.max() > 0.5  # the initial policy mean is ~0, the actions are not
  assert np.sqrt(np.mean(end**2)) < 0.1 * np.sqrt(np.mean(start**2)), end
  assert end.max() < 0.15, end.max()
  first, last = trained.logged[0], trained.logged[-1]
  assert last['bc_loss'] < first['bc_loss'] - 1.0
  assert last['action_mse'] < 0.02 * first['action_mse']


def test_learner_counts_logs_and_serves_numpy_policy(trained):
  assert trained.learner.steps >= TRAIN_STEPS  # later tests may step it further
  assert len(trained.logged) == TRAIN_STEPS
  assert [int(m['steps']) for m in trained.logged] == list(range(1, TRAIN_STEPS + 1))
  assert {'bc_loss', 'policy_loss', 'action_mse', 'policy_stddev'} <= set(trained.logged[0])
  assert all(math.isfinite(v) for m in trained.logged for v in m.values())
  leaves = jax.tree_util.tree_leaves(trained.final_policy)
  assert leaves and all(isinstance(x, np.ndarray) and x.dtype == np.float32 for x in leaves)
  with pytest.raises(KeyError, match='policy'):
    trained.learner.get_variables(['policy', 'critic'])


def test_learner_save_restore_round_trip_and_nan_actions(trained):
  a = trained.learner
  saved = pickle.loads(pickle.dumps(a.save()))  # the checkpointer's format
  steps = int(saved.steps)
  assert steps == a.steps

  feed_b = Feed(_linear_dataset())
  b = _learner(feed_b, seed=1)
  assert b.steps == 0
  assert not _leaves_equal(b.get_variables(['policy']), a.get_variables(['policy']))
  b.restore(saved)
  assert b.steps == steps
  assert _leaves_equal(b.get_variables(['policy']), a.get_variables(['policy']))

  # Same state (optimiser included) and same batch: the next update is bit-identical.
  a.step()
  b.step()
  assert a.steps == b.steps == steps + 1
  assert _leaves_equal(a.save(), b.save())
  assert not _leaves_equal(a.save().policy_params, saved.policy_params)
  assert int(saved.steps) == steps  # the snapshot is a copy

  # A NaN action fails loudly, names the field, and keeps the last finite state.
  state_b = b.save()
  # (set_iterator: the learner has drawn its next batch from the feed already.)
  feed_b.batch = _linear_dataset(action_nan=True)
  b.set_iterator(feed_b)
  with pytest.raises(NonFiniteLossError, match="'action'"):
    b.step()
  assert _leaves_equal(b.save(), state_b)
  feed_b.batch = _linear_dataset()
  b.set_iterator(feed_b)
  b.step()
  assert b.steps == steps + 2


# ---------------------------------------------------------------------------
# BCBuilder: the MPO data pipeline and actors with the BC learner.
# ---------------------------------------------------------------------------


def _spec() -> specs.EnvironmentSpec:
  return specs.EnvironmentSpec(
    observations=specs.Array((OBS_DIM,), np.float32),
    actions=specs.BoundedArray((ACTION_DIM,), np.float32, -1.0, 1.0),
    rewards=specs.Array((), np.float32),
    discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
  )


def test_builder_learner_serves_the_actor_policy(trained):
  config = BCConfig(policy_layer_sizes=(32, 32), learning_rate=1e-3)
  builder = BCBuilder(config, _spec())
  assert builder.config == CONFIG
  learner = builder.make_learner(Feed(_linear_dataset()), seed=3)
  assert isinstance(learner, BCLearner)
  # The trained parameters of a learner with the same config drop into the builder's learner,
  # and the builder's greedy actor then acts with the fitted policy.
  learner.restore(trained.learner.save())
  actor = builder.make_actor(learner, adder=None, deterministic=True)
  batch = _linear_dataset()
  action = actor.select_action(batch.observation[0])
  assert action.shape == (ACTION_DIM,) and action.dtype == np.float32
  np.testing.assert_allclose(action, batch.action[0], atol=0.15)
