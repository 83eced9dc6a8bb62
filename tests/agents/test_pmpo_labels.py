"""PMPO from stored data: episode-level success labels, carried by the sampler into batches,
and the update that prefers successful episodes' actions and pushes away from failed ones'."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import types

from agents.mpo import learning
from agents.mpo import losses as L
from agents.common.config import merge_overrides
from agents.mpo.config import MPOConfig, PMPOConfig
from agents.mpo.labels import episode_success, make_labeller
from launch.config import ExperimentConfig
from agents.common.errors import ConfigError
from launch.store.episodes import Episode, EpisodeStore
from launch.store.mixing import MixedBatches
from launch.store.sampling import StoreSampler, transition_starts
from networks.mpo import make_mpo_networks

OBS_DIM, ACTION_DIM, BATCH = 3, 2, 64
_FAST_COMPILE = {'xla_backend_optimization_level': 0}


# ---------------------------------------------------------------------------
# The labelling rule.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('label, expected', [(True, True), (False, False), (1, True), (0, False)])
def test_metadata_label_wins_over_the_return_threshold(label, expected):
  # The return says the opposite of the label whichever way the threshold points.
  assert episode_success({'success': label}, 10.0, success_return=5.0) is expected
  assert episode_success({'success': label}, 0.0, success_return=5.0) is expected


def test_unlabelled_episode_is_successful_from_the_threshold_on():
  assert episode_success({}, 5.0, success_return=5.0) is True
  assert episode_success({'source': 'actor_0'}, 4.999, success_return=5.0) is False
  assert episode_success({}, -3.0, success_return=-4.0) is True


@pytest.mark.parametrize('metadata, threshold, words', [
    ({'success': 'yes'}, 1.0, "must be true / false"),
    ({'success': 0.5}, 1.0, "must be true / false"),
    ({}, None, 'pmpo.success_return'),
])
def test_bad_or_missing_label_is_a_clear_error(metadata, threshold, words):
  with pytest.raises(ValueError, match=words):
    episode_success(metadata, 1.0, threshold)


def test_non_finite_return_is_refused():
  with pytest.raises(ValueError, match='not finite'):
    episode_success({}, float('nan'), success_return=0.0)


# ---------------------------------------------------------------------------
# The sampler carries each episode's label on its transitions.
# ---------------------------------------------------------------------------


def _episode(index: int, length: int, reward: float, metadata=None) -> Episode:
  """Observations [index, t, 0]; every reward equal, so the return is length * reward."""
  obs = np.stack([np.full(length + 1, index), np.arange(length + 1), np.zeros(length + 1)],
                 axis=1).astype(np.float32)
  return Episode(observations=obs, actions=np.zeros((length, ACTION_DIM), np.float32),
                 rewards=np.full(length, reward, np.float32),
                 discounts=np.ones(length, np.float32), metadata=dict(metadata or {}))


def _store(tmp_path, episodes) -> EpisodeStore:
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor_0') as writer:
    for ep in episodes:
      writer.append(ep)
  return store


def test_every_transition_carries_its_episodes_label(tmp_path):
  # 0: labelled successful despite a low return; 1: return 12 >= 10; 2: return 3 < 10;
  # 3: labelled failed despite a high return.
  episodes = [_episode(0, 7, 0.1, {'success': True}), _episode(1, 6, 2.0),
              _episode(2, 3, 1.0), _episode(3, 9, 5.0, {'success': False})]
  expected = {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}
  sampler = StoreSampler(_store(tmp_path, episodes), n_step=3, discount=0.9, seed=0,
                         labeller=make_labeller(10.0))
  assert sampler.refresh() == 4
  assert (sampler.num_episodes, sampler.num_successes) == (4, 2)
  every = sampler.all_transitions()
  labels = every.extras['success']
  assert labels.dtype == np.float32 and labels.shape == (sampler.num_transitions,)
  for index, label in expected.items():
    mine = every.observation[:, 0] == index
    # The n-step adder's count of transitions for the episode, every one labelled.
    assert mine.sum() == len(transition_starts(episodes[index].length, 3)[0])
    assert np.all(labels[mine] == label), index
  # Random batches keep the pairing of transition and label.
  batch = sampler.sample(256)
  want = np.array([expected[int(i)] for i in batch.observation[:, 0]], np.float32)
  np.testing.assert_array_equal(batch.extras['success'], want)


def test_unlabelled_sampler_adds_no_extras(tmp_path):
  sampler = StoreSampler(_store(tmp_path, [_episode(0, 4, 1.0)]), n_step=2, discount=0.9)
  sampler.refresh()
  assert sampler.sample(8).extras == ()
  assert sampler.num_successes == 0


def test_an_episode_that_can_not_be_labelled_is_named(tmp_path):
  store = _store(tmp_path, [_episode(0, 4, 1.0)])
  sampler = StoreSampler(store, n_step=2, discount=0.9, labeller=make_labeller(None))
  with pytest.raises(ValueError, match=rf"episode {store.index()[0].episode_id} can not be "
                                       r"labelled: .*pmpo\.success_return"):
    sampler.refresh()
  assert sampler.num_transitions == 0  # nothing half-added


def test_store_batches_keep_labels_and_mixing_with_replay_is_refused(tmp_path):
  store = _store(tmp_path, [_episode(0, 5, 1.0, {'success': True}), _episode(1, 5, 1.0)])
  sampler = StoreSampler(store, n_step=2, discount=0.9, seed=1, labeller=make_labeller(100.0))
  batch = next(MixedBatches(None, sampler, store_batch=16))
  want = (batch.observation[:, 0] == 0).astype(np.float32)
  np.testing.assert_array_equal(batch.extras['success'], want)

  replay_part = types.Transition(*(np.asarray(x) for x in sampler.sample(4)[:5]))
  mixed = MixedBatches(iter([replay_part]), sampler, store_batch=4)
  with pytest.raises(ValueError, match='every batch from the store'):
    next(mixed)


# ---------------------------------------------------------------------------
# Configuration.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize('field, value', [('source', 'ranked'), ('source', None),
                                          ('success_return', float('nan')),
                                          ('success_return', 'high')])
def test_config_rejects_bad_label_settings_naming_the_field(field, value):
  with pytest.raises(ConfigError, match=f'MPOConfig.pmpo.{field}='):
    MPOConfig(pmpo=PMPOConfig(**{field: value}))


def test_labels_need_a_mode_that_trains_on_the_store_only():
  agent = dict(policy_loss='pmpo', pmpo=PMPOConfig(source='labels', success_return=500.0))
  for mode in ('online', 'offline_to_online'):
    with pytest.raises(ConfigError, match="needs mode 'offline' or 'iterated'"):
      ExperimentConfig(mode=mode, agent=MPOConfig(**agent))
  ExperimentConfig(mode='offline', max_learner_steps=10, agent=MPOConfig(**agent))
  ExperimentConfig(mode='iterated', agent=MPOConfig(**agent))
  # The actors' own episodes have no label: iterated mode needs the return threshold.
  no_threshold = MPOConfig(policy_loss='pmpo', pmpo=PMPOConfig(source='labels'))
  with pytest.raises(ConfigError, match=r'iterated mode needs agent\.pmpo\.success_return'):
    ExperimentConfig(mode='iterated', agent=no_threshold)
  # Offline datasets may carry their own labels.
  ExperimentConfig(mode="offline", max_learner_steps=10, agent=no_threshold)
  # Ranking sampled actions by Q works on any data.
  ExperimentConfig(mode='online', agent=MPOConfig(policy_loss='pmpo'))
  # pmpo.source is PMPO's alone: the MPO and PAC losses ignore it, in any mode.
  for loss in ('mpo', 'pac'):
    ignored = MPOConfig(policy_loss=loss, pmpo=PMPOConfig(source='labels'))
    assert not ignored.learns_from_labels
    ExperimentConfig(mode='online', agent=ignored)
  assert MPOConfig(**agent).learns_from_labels


# ---------------------------------------------------------------------------
# The update.
# ---------------------------------------------------------------------------


def _config(**overrides) -> MPOConfig:
  kwargs = dict(policy_layer_sizes=(32, 32), critic_layer_sizes=(32, 32), num_atoms=11,
                num_samples=8, replay=dict(batch_size=BATCH, discount=0.5), policy_loss='pmpo',
                pmpo=dict(source='labels'), target_update_period=10, policy_learning_rate=1e-3)
  return MPOConfig.from_dict(merge_overrides(MPOConfig, kwargs, overrides))


GOOD_ACTION = np.array([0.6, -0.4], np.float32)
BAD_ACTION = -GOOD_ACTION


def _labelled_batch(seed: int = 0) -> types.Transition:
  """Half the transitions took GOOD_ACTION in successful episodes, half BAD_ACTION in failed
  ones, from the same spread of observations."""
  rng = np.random.default_rng(seed)
  success = (np.arange(BATCH) % 2 == 0).astype(np.float32)
  actions = np.where(success[:, None] > 0, GOOD_ACTION, BAD_ACTION).astype(np.float32)
  return types.Transition(
      observation=rng.uniform(-1.0, 1.0, (BATCH, OBS_DIM)).astype(np.float32), action=actions,
      reward=rng.uniform(0.0, 1.0, BATCH).astype(np.float32),
      discount=np.ones(BATCH, np.float32),
      next_observation=rng.uniform(-1.0, 1.0, (BATCH, OBS_DIM)).astype(np.float32),
      extras={'success': success})


def _setup(config: MPOConfig):
  nets = make_mpo_networks(ACTION_DIM, config.policy_layer_sizes, config.critic_layer_sizes,
                           config.num_atoms)
  state = jax.jit(lambda key: learning.initial_state(nets, config, OBS_DIM, key),
                  compiler_options=_FAST_COMPILE)(jax.random.PRNGKey(0))
  update = jax.jit(learning.make_update_fn(nets, config), compiler_options=_FAST_COMPILE)
  return nets, state, update


def _log_prob(mean, std, x):
  return np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi), -1)


def test_alpha_one_without_kl_is_the_nll_of_successful_actions_only():
  nets, state, update = _setup(_config(pmpo=dict(alpha=1.0, beta=0.0)))
  batch = _labelled_batch()
  _, metrics = update(state, jax.tree_util.tree_map(jnp.asarray, batch))
  mean, std = (np.asarray(x) for x in nets.policy.apply(state.policy_params, batch.observation))
  good = batch.extras['success'] > 0
  want = -np.mean(_log_prob(mean[good], std[good], batch.action[good]))
  np.testing.assert_allclose(float(metrics['policy_loss']), want, rtol=1e-5)
  assert float(metrics['pmpo_success_fraction']) == 0.5


def test_alpha_half_without_kl_is_the_difference_of_the_two_sets_nlls():
  nets, state, update = _setup(_config(pmpo=dict(alpha=0.5, beta=0.0)))
  batch = _labelled_batch(seed=3)
  _, metrics = update(state, jax.tree_util.tree_map(jnp.asarray, batch))
  mean, std = (np.asarray(x) for x in nets.policy.apply(state.policy_params, batch.observation))
  lp = _log_prob(mean, std, batch.action)
  good = batch.extras['success'] > 0
  want = -(0.5 * lp[good].mean() - 0.5 * lp[~good].mean())
  np.testing.assert_allclose(float(metrics['policy_loss']), want, rtol=1e-5, atol=1e-6)


def test_the_policy_step_ignores_rewards_and_the_critic():
  _, state, update = _setup(_config())
  batch = _labelled_batch()
  other = batch._replace(reward=batch.reward + 5.0)
  s1, m1 = update(state, jax.tree_util.tree_map(jnp.asarray, batch))
  s2, m2 = update(state, jax.tree_util.tree_map(jnp.asarray, other))
  assert float(m1['critic_loss']) != float(m2['critic_loss'])
  for a, b in zip(jax.tree_util.tree_leaves(s1.policy_params),
                  jax.tree_util.tree_leaves(s2.policy_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_negative_margin_stops_the_push_once_the_action_is_that_much_less_likely():
  ref_mean, ref_std = jnp.zeros((1, 1)), jnp.ones((1, 1))
  far = jnp.full((1, 1, 1), 3.0)  # the dis-preferred action, 3 reference stddevs away
  none = jnp.zeros((1, 1))
  one = jnp.ones((1, 1))

  def neg_loss(mean, std, margin):
    loss, m = L.pmpo_loss(mean, std, ref_mean, ref_std, far, none, far, one, 0.0, 0.0,
                          neg_margin=margin, neg_mean_only=True)
    return loss, m

  # log N(3; 0, 1) = -4.5 - log sqrt(2 pi); with margin 1 the floor is one nat lower.
  ref_lp = -4.5 - 0.5 * math.log(2 * math.pi)
  near = jnp.full((1, 1), 0.5)  # log N(3; 0.5, 1) is above the floor: the push is on
  loss, m = neg_loss(near, ref_std, 1.0)
  np.testing.assert_allclose(float(loss), -3.125 - 0.5 * math.log(2 * math.pi), rtol=1e-6)
  assert float(m['pmpo_neg_clipped']) == 0.0
  grad = jax.grad(lambda mu: neg_loss(mu, ref_std, 1.0)[0])(near)
  # The loss is log pi(3) = -(3 - mu)^2 / 2 + c: gradient 3 - mu, so descent lowers the mean.
  np.testing.assert_allclose(np.asarray(grad), [[2.5]], rtol=1e-6)
  # Mean at -1: log N(3; -1, 1) = -8 - ... is below the floor (ref - 1): clipped, no push.
  away = jnp.full((1, 1), -1.0)
  loss, m = neg_loss(away, ref_std, 1.0)
  np.testing.assert_allclose(float(loss), ref_lp - 1.0, rtol=1e-6)
  assert float(m['pmpo_neg_clipped']) == 1.0
  assert float(jax.grad(lambda mu: neg_loss(mu, ref_std, 1.0)[0])(away)[0, 0]) == 0.0
  # Without a margin the push goes on.
  np.testing.assert_allclose(
      float(jax.grad(lambda mu: neg_loss(mu, ref_std, None)[0])(away)[0, 0]), 4.0, rtol=1e-6)


def test_negative_term_can_move_only_the_mean_when_asked():
  mean, std = jnp.zeros((1, 1)), jnp.ones((1, 1))
  far = jnp.full((1, 1, 1), 3.0)
  none, one = jnp.zeros((1, 1)), jnp.ones((1, 1))

  def std_grad(mean_only):
    return float(jax.grad(lambda s: L.pmpo_loss(mean, s, mean, std, far, none, far, one, 0.0,
                                                0.0, neg_mean_only=mean_only)[0])(std)[0, 0])

  # The loss is log N(3; 0, sigma), whose derivative at sigma 1 is -1 + 9 = 8: descent would
  # shrink the stddev to make the far action unlikely. Mean-only leaves the stddev alone.
  np.testing.assert_allclose(std_grad(False), 8.0, rtol=1e-6)
  assert std_grad(True) == 0.0


def test_negative_term_pushes_no_mean_past_the_bound():
  std = jnp.ones((1, 1))
  bad = jnp.full((1, 1, 1), 0.0)
  none, one = jnp.zeros((1, 1)), jnp.ones((1, 1))

  def mean_grad(mean, bound):
    return float(jax.grad(lambda m: L.pmpo_loss(m, std, m, std, bad, none, bad, one, 0.0, 0.0,
                                                neg_mean_bound=bound)[0])(
                                                    jnp.full((1, 1), mean))[0, 0])

  # log N(0; mu, 1) has gradient -mu: inside the bound the push is on ...
  np.testing.assert_allclose(mean_grad(0.5, 1.0), -0.5, rtol=1e-6)
  # ... past it, none (without a bound it would go on).
  assert mean_grad(1.5, 1.0) == 0.0
  np.testing.assert_allclose(mean_grad(1.5, None), -1.5, rtol=1e-6)


@pytest.mark.parametrize('alpha', [1.0, 0.5, 0.0])
def test_repeated_updates_move_the_policy_towards_success_within_the_trust_region(alpha):
  nets, state, update = _setup(_config(pmpo=dict(alpha=alpha)))
  batch = jax.tree_util.tree_map(jnp.asarray, _labelled_batch())
  direction = GOOD_ACTION / np.linalg.norm(GOOD_ACTION)

  def along(state) -> float:
    mean, _ = nets.policy.apply(state.policy_params, batch.observation)
    return float(np.mean(np.asarray(mean) @ direction))

  start = along(state)
  largest_kl = 0.0
  for _ in range(300):
    state, metrics = update(state, batch)
    assert all(math.isfinite(float(v)) for v in metrics.values()), metrics
    largest_kl = max(largest_kl, float(metrics['pmpo_kl']))
  end = along(state)
  # Even with negative feedback alone (alpha = 0) the mean moves away from the failed
  # actions, i.e. towards the successful ones.
  assert end > start + 0.2, (start, end)
  mean, std = nets.policy.apply(state.policy_params, batch.observation)
  # Failed actions push no mean far past the action bounds (Adam's momentum carries it
  # a little beyond; without the bound alpha = 0 takes it past 70 here).
  assert float(np.max(np.abs(mean))) < 2.5, float(np.max(np.abs(mean)))
  if alpha == 1.0:
    np.testing.assert_allclose(np.asarray(mean).mean(0), GOOD_ACTION, atol=0.1)
  else:
    # Failed actions never shrink the spread, so no state's policy collapses, and each
    # update stays close to the reference (the target policy). Pushing with the stddev too
    # and without the margin, the stddev hits its floor and the KL reaches 1e8 here.
    assert float(np.min(std)) > 0.05, float(np.min(std))
    assert largest_kl < 1.0, largest_kl
