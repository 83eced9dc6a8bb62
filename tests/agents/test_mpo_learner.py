"""Tests for the MPO update (agents.mpo.learning), MPOLearner and MPOConfig.

The learning tests use a one-step bandit: a fixed batch of terminal transitions
(discount 0) whose reward is a smooth function of the action, peaked at a = 0.5.
The critic target is then exactly the reward, so the critic must learn r(a), and
the policy must move its mean from its initial ~0 towards 0.5.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pickle
from typing import Dict, List, NamedTuple, Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import types
from acme.utils import counting, loggers

from agents.common.config import merge_overrides
from agents.common.errors import ConfigError
from agents.common.replay_config import ReplayConfig
from agents.mpo import learning, losses
from agents.mpo.config import MPOConfig, PMPOConfig
from agents.mpo.learner import MPOLearner, NonFiniteLossError
from networks.mpo import make_mpo_networks
from tests.fakes import Feed

OBS_DIM = 2
BATCH = 32
PEAK = 0.5
BANDIT_STEPS = 240
TARGET_PERIOD = 10

MPO_METRICS = (
  'critic_loss',
  'policy_loss',
  'temperature',
  'kl_mean',
  'kl_std',
  'alpha_mean',
  'alpha_std',
  'q_mean',
)


def _bandit_batch(reward_nan: bool = False) -> types.Transition:
  # Constant features: the critic only has to learn the action dependence.
  obs = np.tile(np.array([0.3, -0.2], np.float32), (BATCH, 1))
  # Actions cover [-1, 1] evenly so the critic sees the whole shape of r(a).
  actions = np.linspace(-1.0, 1.0, BATCH, dtype=np.float32)[:, None]
  # r(a) = 1 - (a - 0.5)^2 / 2.25 lies in [0, 1] on [-1, 1], with its maximum 1 at a = 0.5.
  reward = (1.0 - (actions[:, 0] - PEAK) ** 2 / 2.25).astype(np.float32)
  if reward_nan:
    reward[3] = np.nan
  return types.Transition(
    observation=obs,
    action=actions,
    reward=reward,
    discount=np.zeros(BATCH, np.float32),  # terminal: no bootstrap
    next_observation=obs + 1.0,
  )


def _tiny_config(**overrides) -> MPOConfig:
  kwargs = dict(
    policy_layer_sizes=(32, 32),
    critic_layer_sizes=(32, 32),
    num_atoms=51,
    target_update_period=TARGET_PERIOD,
    num_samples=8,
    replay=dict(batch_size=BATCH),
  )
  return MPOConfig.from_dict(merge_overrides(MPOConfig, kwargs, overrides))


def _leaves(tree) -> List[np.ndarray]:
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _trees_equal(a, b) -> bool:
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(la, lb))


# ---------------------------------------------------------------------------
# The update function on the bandit.
# ---------------------------------------------------------------------------


# discount 0.5 (not 0.99) keeps the distributional support at [0, 2]. With [0, 100] an
# untrained categorical critic values every action at ~50, so the actions the fixed batch
# never contains (policy samples beyond [-1, 1]) keep that optimistic value and the policy
# chases them: an artefact of learning from a fixed batch, not of the update. The discount
# field of the batch is 0, so the discount only sets the support. The critic learns fast
# (1e-2) so that the policy, at its default rate, follows a well-fitted Q within 240 updates.
def _bandit_config(**overrides) -> MPOConfig:
  return _tiny_config(replay=dict(discount=0.5), critic_learning_rate=1e-2, **overrides)


# Each variant costs one XLA compilation (seconds on a loaded machine): the update is compiled
# directly for these, and the expected-value critic (num_atoms=1) runs through MPOLearner
# below, whose tests need a compiled learner anyway.
VARIANTS = {
  'dmpo': dict(num_atoms=51),
  'pmpo_alpha_1': dict(num_atoms=51, policy_loss='pmpo', pmpo=dict(alpha=1.0)),
  'pmpo_alpha_0.5': dict(num_atoms=51, policy_loss='pmpo', pmpo=dict(alpha=0.5)),
}


def _policy_mean(nets, policy_params) -> np.ndarray:
  """Mean action of the policy at the bandit's observations: [B]."""
  obs = _bandit_batch().observation
  return np.asarray(nets.policy.apply(policy_params, obs)[0])[:, 0]


def _assert_policy_moved_to_the_peak(initial_mean, final_mean):
  start, end = np.abs(initial_mean - PEAK), np.abs(final_mean - PEAK)
  assert np.all(start > 0.45), initial_mean  # initial mean ~0
  # Most of the way from its start to the best action, at every observation.
  assert np.all(end < 0.3 * start), (initial_mean.mean(), final_mean.mean())


def _assert_finite(metrics: Sequence[Dict[str, float]]):
  keys = set(metrics[0])
  for step, m in enumerate(metrics):
    assert set(m) == keys
    bad = {k: v for k, v in m.items() if not math.isfinite(v)}
    assert not bad, f'non-finite metrics at update {step + 1}: {bad}'


class BanditRun(NamedTuple):
  config: MPOConfig
  networks: object
  metrics: List[Dict[str, float]]  # one dict per update
  snapshots: List[learning.TrainingState]  # state after k updates, k = 0 .. TARGET_PERIOD + 1
  initial_mean: np.ndarray
  final_mean: np.ndarray
  final_state: learning.TrainingState


@functools.lru_cache(maxsize=None)
def _train(variant: str) -> BanditRun:
  config = _bandit_config(**VARIANTS[variant])
  nets = make_mpo_networks(
    1, config.policy_layer_sizes, config.critic_layer_sizes, config.num_atoms
  )
  state = learning.initial_state(nets, config, OBS_DIM, jax.random.PRNGKey(0))
  batch = jax.tree_util.tree_map(jnp.asarray, _bandit_batch())
  # Unoptimised machine code compiles about 5x faster, and these tiny updates barely notice.
  update = (
    jax.jit(learning.make_update_fn(nets, config))
    .lower(state, batch)
    .compile(compiler_options={'xla_backend_optimization_level': 0})
  )

  initial_mean = _policy_mean(nets, state.policy_params)
  snapshots = [jax.device_get(state)]
  metrics = []
  for _ in range(BANDIT_STEPS):
    state, m = update(state, batch)
    metrics.append({k: float(v) for k, v in m.items()})
    if len(snapshots) <= TARGET_PERIOD + 1:
      snapshots.append(jax.device_get(state))
  return BanditRun(
    config, nets, metrics, snapshots, initial_mean, _policy_mean(nets, state.policy_params), state
  )


def test_bandit_distributional_critic_learns_the_reward():
  run = _train('dmpo')
  first, last = run.metrics[0]['critic_loss'], run.metrics[-1]['critic_loss']
  assert last < 0.5 * first, (first, last)

  config = run.config
  assert (config.v_min, config.v_max) == (0.0, pytest.approx(2.0))
  # Near-zero initial logits put equal mass on every atom: mean (v_min + v_max) / 2.
  assert run.metrics[0]['q_mean'] == pytest.approx((config.v_min + config.v_max) / 2, abs=0.02)
  # Trained, the expected value of the categorical matches the mean reward of the batch.
  batch = _bandit_batch()
  assert abs(run.metrics[-1]['q_mean'] - float(np.mean(batch.reward))) < 0.1

  logits = run.networks.critic.apply(run.final_state.critic_params, batch.observation, batch.action)
  assert logits.shape == (BATCH, 51)
  support = jnp.linspace(config.v_min, config.v_max, config.num_atoms)
  q = np.asarray(losses.categorical_mean(logits, support))
  # Each action's value sits near its reward ...
  assert np.mean(np.abs(q - batch.reward)) < 0.05
  assert np.max(np.abs(q - batch.reward)) < 0.1
  # ... and the best actions of the batch are valued well above the worst ones.
  order = np.argsort(batch.reward)
  assert q[order[-4:]].mean() > q[order[:4]].mean() + 0.4


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_bandit_policy_mean_moves_to_the_best_action(variant):
  run = _train(variant)
  _assert_policy_moved_to_the_peak(run.initial_mean, run.final_mean)


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_bandit_metrics_are_finite(variant):
  run = _train(variant)
  keys = set(run.metrics[0])
  if VARIANTS[variant].get('policy_loss') == 'pmpo':
    assert {'critic_loss', 'policy_loss', 'q_mean', 'pmpo_kl'} <= keys, sorted(keys)
  else:
    assert set(MPO_METRICS) <= keys, sorted(keys)
  _assert_finite(run.metrics)


def test_bandit_duals_adapt_and_bound_the_policy_step():
  run = _train('dmpo')
  config = run.config
  first, last = run.metrics[0], run.metrics[-1]
  assert last['temperature'] > 0.0
  assert abs(last['temperature'] - first['temperature']) > 0.01
  # The KL bounds hold the policy step: the mean stays well inside its (loose) bound ...
  assert max(m['kl_mean'] for m in run.metrics) < 2 * config.epsilon_mean
  # ... so its multiplier relaxes, while the very tight stddev bound makes its multiplier grow.
  assert 0.0 < last['alpha_mean'] < first['alpha_mean'] - 0.1
  assert last['alpha_std'] > first['alpha_std'] + 0.1


def test_target_networks_follow_the_online_networks_every_period():
  snaps = _train('dmpo').snapshots
  init = snaps[0]
  assert _trees_equal(init.target_policy_params, init.policy_params)
  assert _trees_equal(init.target_critic_params, init.critic_params)
  for k in range(1, TARGET_PERIOD):
    s = snaps[k]
    assert int(s.steps) == k
    # Targets keep the initial parameters while the online networks move.
    assert _trees_equal(s.target_policy_params, init.policy_params), k
    assert _trees_equal(s.target_critic_params, init.critic_params), k
    assert not _trees_equal(s.policy_params, s.target_policy_params), k
    assert not _trees_equal(s.critic_params, s.target_critic_params), k
  s = snaps[TARGET_PERIOD]
  assert int(s.steps) == TARGET_PERIOD
  assert _trees_equal(s.target_policy_params, s.policy_params)
  assert _trees_equal(s.target_critic_params, s.critic_params)
  assert not _trees_equal(s.target_policy_params, init.policy_params)
  s = snaps[TARGET_PERIOD + 1]
  assert _trees_equal(s.target_policy_params, snaps[TARGET_PERIOD].policy_params)
  assert _trees_equal(s.target_critic_params, snaps[TARGET_PERIOD].critic_params)
  assert not _trees_equal(s.policy_params, s.target_policy_params)


def _counting_critic(nets):
  """nets whose critic counts its applications (while traced), and the count."""
  calls = []

  def apply(*args, **kwargs):
    calls.append(1)
    return nets.critic.apply(*args, **kwargs)

  critic = hk.Transformed(nets.critic.init, apply)
  return dataclasses.replace(nets, critic=critic), calls


def test_shared_target_samples_run_the_critic_on_samples_once_and_improve_on_next_states():
  batch = jax.tree_util.tree_map(jnp.asarray, _bandit_batch())
  other = batch._replace(observation=batch.observation + 0.7)  # only the first states differ
  results = {}
  for share in (False, True):
    config = _bandit_config(share_target_samples=share)
    nets, calls = _counting_critic(
      make_mpo_networks(1, config.policy_layer_sizes, config.critic_layer_sizes, config.num_atoms)
    )
    state = learning.initial_state(nets, config, OBS_DIM, jax.random.PRNGKey(0))
    update = jax.jit(learning.make_update_fn(nets, config))
    a, _ = update(state, batch)
    # Online critic on the batch's actions, the target on the samples (twice without sharing).
    results[share] = (len(calls), a, update(state, other)[0])
  calls, a, b = results[False]
  assert calls == 3
  assert not _trees_equal(a.policy_params, b.policy_params)
  calls, a, b = results[True]
  assert calls == 2
  # The policy and its duals learn on the next states only; the critic still on the first.
  assert _trees_equal(a.policy_params, b.policy_params)
  assert _trees_equal(a.dual_params, b.dual_params)
  assert not _trees_equal(a.critic_params, b.critic_params)


@pytest.mark.parametrize('variant', ['pmpo_alpha_0.5', 'pac'])
def test_shared_target_samples_leave_pmpo_and_pac_on_the_batch_states(variant):
  settings = {**VARIANTS.get(variant, {}), **({'policy_loss': 'pac'} if variant == 'pac' else {})}
  batch = jax.tree_util.tree_map(jnp.asarray, _bandit_batch())
  states = []
  for share in (False, True):
    config = _bandit_config(share_target_samples=share, **settings)
    nets = make_mpo_networks(1, config.policy_layer_sizes, config.critic_layer_sizes, 51)
    state = learning.initial_state(nets, config, OBS_DIM, jax.random.PRNGKey(0))
    states.append(jax.jit(learning.make_update_fn(nets, config))(state, batch)[0])
  assert _trees_equal(*states)


def test_shared_target_samples_move_the_policy_to_the_best_action():
  config = _bandit_config(share_target_samples=True)
  nets = make_mpo_networks(1, config.policy_layer_sizes, config.critic_layer_sizes, 51)
  state = learning.initial_state(nets, config, OBS_DIM, jax.random.PRNGKey(0))
  # The next states are the first states (terminal: the critic's target is the reward).
  data = _bandit_batch()
  batch = jax.tree_util.tree_map(jnp.asarray, data._replace(next_observation=data.observation))
  update = (
    jax.jit(learning.make_update_fn(nets, config))
    .lower(state, batch)
    .compile(compiler_options={'xla_backend_optimization_level': 0})
  )
  initial_mean = _policy_mean(nets, state.policy_params)
  for _ in range(BANDIT_STEPS):
    state, m = update(state, batch)
  assert all(math.isfinite(float(v)) for v in m.values())
  _assert_policy_moved_to_the_peak(initial_mean, _policy_mean(nets, state.policy_params))


# ---------------------------------------------------------------------------
# MPOLearner, on the bandit with the expected-value critic.
# ---------------------------------------------------------------------------


LEARNER_CONFIG = _bandit_config(num_atoms=1)


def _learner(feed: Feed, seed: int, counter=None, logger=None) -> MPOLearner:
  config = LEARNER_CONFIG
  nets = make_mpo_networks(
    1, config.policy_layer_sizes, config.critic_layer_sizes, config.num_atoms
  )
  return MPOLearner(
    nets, config, OBS_DIM, feed, seed=seed, counter=counter, logger=logger or loggers.NoOpLogger()
  )


class TrainedLearner(NamedTuple):
  learner: MPOLearner
  feed: Feed
  counter: counting.Counter
  logged: List[Dict[str, float]]
  initial_policy: dict
  final_policy: dict  # copies taken right after training
  final_critic: dict


@pytest.fixture(scope='module')
def trained() -> TrainedLearner:
  feed = Feed(_bandit_batch())
  counter = counting.Counter()
  logger = loggers.InMemoryLogger()
  learner = _learner(feed, seed=0, counter=counter, logger=logger)
  assert learner.steps == 0
  [initial_policy] = learner.get_variables(['policy'])
  for _ in range(BANDIT_STEPS):
    learner.step()
  policy, critic = learner.get_variables(['policy', 'critic'])
  return TrainedLearner(learner, feed, counter, list(logger.data), initial_policy, policy, critic)


def test_learner_steps_count_and_log(trained):
  assert trained.learner.steps >= BANDIT_STEPS  # later tests may step it further
  assert trained.feed.served >= BANDIT_STEPS
  assert len(trained.logged) == BANDIT_STEPS
  assert [int(m['steps']) for m in trained.logged] == list(range(1, BANDIT_STEPS + 1))
  assert set(MPO_METRICS) <= set(trained.logged[0])
  _assert_finite(trained.logged)


def test_learner_expected_value_critic_learns_the_reward(trained):
  first, last = trained.logged[0]['critic_loss'], trained.logged[-1]['critic_loss']
  assert last < 0.5 * first, (first, last)
  nets = make_mpo_networks(
    1, LEARNER_CONFIG.policy_layer_sizes, LEARNER_CONFIG.critic_layer_sizes, 1
  )
  batch = _bandit_batch()
  q = np.asarray(nets.critic.apply(trained.final_critic, batch.observation, batch.action))
  assert q.shape == (BATCH,)
  assert np.mean(np.abs(q - batch.reward)) < 0.03
  assert np.max(np.abs(q - batch.reward)) < 0.1


def test_learner_policy_mean_moves_to_the_best_action(trained):
  nets = make_mpo_networks(
    1, LEARNER_CONFIG.policy_layer_sizes, LEARNER_CONFIG.critic_layer_sizes, 1
  )
  _assert_policy_moved_to_the_peak(
    _policy_mean(nets, trained.initial_policy), _policy_mean(nets, trained.final_policy)
  )


def test_learner_variables_are_numpy(trained):
  policy, initial = trained.final_policy, trained.initial_policy
  leaves = jax.tree_util.tree_leaves(policy)
  assert leaves and all(isinstance(x, np.ndarray) for x in leaves)
  assert all(x.dtype == np.float32 and np.all(np.isfinite(x)) for x in leaves)
  assert jax.tree_util.tree_structure(policy) == jax.tree_util.tree_structure(initial)
  assert not _trees_equal(policy, initial)


def test_learner_draws_each_batch_ahead_in_order_and_ends_after_the_last():
  data = _bandit_batch()
  batches = [data._replace(reward=data.reward * scale) for scale in (1.0, 0.5, 0.25, 0.8)]
  drawn = []

  def finite(items):
    for b in items:
      drawn.append(b)
      yield b

  learner = _learner(finite(batches[:3]), seed=0)
  state = learner.save()
  expected = [state]
  for b in batches:
    state, _ = learner._update(state, b, *learner.update_args())
    expected.append(state)
  learner.step()
  assert len(drawn) == 2  # the second batch is drawn while the first update computes
  learner.step()
  learner.step()
  assert _trees_equal(learner.save(), expected[3])  # each batch once, in order
  with pytest.raises(StopIteration):  # only now: the three updates were all done
    learner.step()
  # A new iterator is read at once; a batch drawn ahead from the one it replaces is dropped.
  learner.restore(expected[1])
  learner.set_iterator(finite([batches[1], batches[3]]))
  learner.step()
  learner.set_iterator(finite([batches[2]]))
  learner.step()
  assert _trees_equal(learner.save(), expected[3])


def test_learner_restores_exactly_and_rejects_nan_rewards(trained):
  a = trained.learner
  # The saved state survives pickling (the checkpointer's format).
  saved = pickle.loads(pickle.dumps(a.save()))
  steps = int(saved.steps)
  assert steps == a.steps

  feed_b = Feed(_bandit_batch())
  b = _learner(feed_b, seed=1)
  assert b.steps == 0
  assert not _trees_equal(b.get_variables(['policy']), a.get_variables(['policy']))
  b.restore(saved)
  assert b.steps == steps
  assert _trees_equal(b.get_variables(['policy', 'critic']), a.get_variables(['policy', 'critic']))

  # Same state (rng included) and same batch: the next update is bit-identical.
  a.step()
  b.step()
  assert a.steps == b.steps == steps + 1
  state_a, state_b = a.save(), b.save()
  assert _trees_equal(state_a, state_b)
  assert not _trees_equal(state_a.policy_params, saved.policy_params)
  assert int(saved.steps) == steps  # the snapshot is a copy

  # A NaN reward fails loudly, names the field, and leaves the last finite state in place.
  # (set_iterator: the learner has drawn its next batch from the feed already.)
  feed_b.batch = _bandit_batch(reward_nan=True)
  b.set_iterator(feed_b)
  with pytest.raises(NonFiniteLossError, match="'reward'"):
    b.step()
  assert b.steps == steps + 1
  assert _trees_equal(b.save(), state_b)
  feed_b.batch = _bandit_batch()
  b.set_iterator(feed_b)
  b.step()
  assert b.steps == steps + 2


# ---------------------------------------------------------------------------
# MPOConfig.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
  'field, value',
  [
    ('replay.discount', 1.0),
    ('replay.discount', 0.0),
    ('num_samples', 0),
    ('policy_loss', 'foo'),
    ('pmpo.fraction', 0.7),
    ('replay.batch_size', -1),
    ('num_atoms', 0),
    ('max_reward', -1.0),
    ('replay.samples_per_insert', 0.0),
    ('critic_layer_sizes', ()),
    ('target_update_period', 2.5),
    ('share_target_samples', 'yes'),
  ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
  with pytest.raises(ConfigError) as info:
    MPOConfig.from_dict({field: value})
  assert f'MPOConfig.{field}=' in str(info.value)
  assert isinstance(info.value, ValueError)


def test_config_accepts_boundary_values():
  config = MPOConfig(
    num_atoms=1,
    pmpo=PMPOConfig(fraction=0.5, alpha=0.0),
    replay=ReplayConfig(samples_per_insert=None),
    policy_layer_sizes=[8],
    critic_layer_sizes=[8, 4],
  )
  assert config.policy_layer_sizes == (8,) and config.critic_layer_sizes == (8, 4)


def test_n_step_rewards_that_keep_targets_inside_the_support():
  # v_max = 2 / (1 - 0.5) = 4; a 2-step reward may reach 2 + 0.5 * 2 = 3 = (1 - 0.25) * 4.
  config = MPOConfig(max_reward=2.0, replay=ReplayConfig(discount=0.5, n_step=2))
  assert config.n_step_reward_bounds == (0.0, pytest.approx(3.0))
  # Signed: v_min = -v_max = -4 / (1 - 0.5) = -8, one step keeps (1 - 0.5) of it.
  config = MPOConfig(min_reward=-4.0, max_reward=1.0, replay=ReplayConfig(discount=0.5, n_step=1))
  assert config.n_step_reward_bounds == (pytest.approx(-4.0), pytest.approx(4.0))


def _distributional_learner(reward_scale: float) -> MPOLearner:
  # Support [0, 2]; 5-step rewards up to (1 - 0.5^5) * 2 = 1.94 keep targets inside it.
  config = _bandit_config(num_atoms=11)
  assert config.n_step_reward_bounds == (0.0, pytest.approx(1.9375))
  batch = _bandit_batch()
  feed = Feed(batch._replace(reward=batch.reward * np.float32(reward_scale)))
  nets = make_mpo_networks(
    1, config.policy_layer_sizes, config.critic_layer_sizes, config.num_atoms
  )
  return MPOLearner(nets, config, OBS_DIM, feed, logger=loggers.NoOpLogger())


def test_learner_warns_once_of_rewards_the_support_clips(capsys):
  # The bandit's rewards reach 1.0: no warning.
  learner = _distributional_learner(1.0)
  learner.step()
  assert 'warning' not in capsys.readouterr().out
  # Eight times that (an action repeat of 8 that max_reward does not know of): warned
  # once, naming the bound and the setting.
  learner = _distributional_learner(8.0)
  for _ in range(3):
    learner.step()
  out = capsys.readouterr().out
  assert out.count('warning') == 1, out
  assert 'n-step reward 8 above the 1.94' in out and 'max_reward=1 ' in out, out
  # Below min_reward's bound (0 here): told as well.
  learner = _distributional_learner(-1.0)
  learner.step()
  assert 'below the 0' in capsys.readouterr().out


def test_config_value_range_follows_rewards():
  config = MPOConfig(min_reward=0.0, max_reward=1.0, replay=ReplayConfig(discount=0.99))
  assert config.v_min == 0.0
  assert config.v_max == pytest.approx(100.0)
  config = MPOConfig(min_reward=-1.0, max_reward=1.0, replay=ReplayConfig(discount=0.99))
  assert config.v_max == pytest.approx(100.0)
  assert config.v_min == -config.v_max
  config = MPOConfig(min_reward=-3.0, max_reward=1.0, replay=ReplayConfig(discount=0.9))
  assert config.v_max == pytest.approx(30.0)
  assert config.v_min == pytest.approx(-30.0)
  config = MPOConfig(min_reward=0.0, max_reward=2.0, replay=ReplayConfig(discount=0.5))
  assert (config.v_min, config.v_max) == (0.0, pytest.approx(4.0))
