"""`--algorithm planning` in one process: its config, the model learner's running
normalisation and update on a known system, checkpointing of its state, and the planning
actor on a real dm_control cartpole (agents.planning.builder, learner, actor)."""

import jax
import numpy as np
import pytest
from acme import specs, types
from acme.utils import loggers

from agents import registry
from agents.builder import Builder, Learner
from agents.common.errors import ConfigError
from agents.planning import config as config_lib
from agents.planning import learning
from agents.planning import model_step as model_step_lib
from agents.planning import planner as planner_lib
from agents.planning.builder import PlanningBuilder
from agents.planning.config import PlanningConfig
from environments import known_rewards
from environments.suite import make_environment
from launch.checkpointing import Checkpointer
from networks.dynamics import NormalizationStats, to_raw

# x' = A x + B a, reward -|x'|^2: a slow rotation, fully actuated.
A = np.array([[1.0, 0.1], [-0.1, 1.0]], np.float32)
B = np.array([[0.5, 0.0], [0.0, 0.5]], np.float32)
TINY = {
  'model': {'num_members': 2, 'hidden_sizes': [32, 32]},
  'optim': {'learning_rate': 3e-3},
  'planner': {'horizon': 4, 'num_candidates': 32, 'iterations': 2, 'num_elites': 4},
  'replay': {'batch_size': 64},
}
TASK = 'cartpole:swingup'


class LinearSystemFeed:
  """Endless batches of fresh random transitions of the linear system."""

  def __init__(self, batch_size: int, seed: int = 0):
    self._rng = np.random.default_rng(seed)
    self._batch_size = batch_size

  def __iter__(self):
    return self

  def __next__(self) -> types.Transition:
    obs = self._rng.uniform(-2, 2, (self._batch_size, 2)).astype(np.float32)
    action = self._rng.uniform(-1, 1, (self._batch_size, 2)).astype(np.float32)
    next_obs = obs @ A.T + action @ B.T
    reward = -np.sum(next_obs**2, axis=-1)
    discount = np.ones(self._batch_size, np.float32)
    return types.Transition(obs, action, reward, discount, next_obs)


LINEAR_SPEC = specs.EnvironmentSpec(
  observations=specs.Array((2,), np.float32),
  actions=specs.BoundedArray((2,), np.float32, -1.0, 1.0),
  rewards=specs.Array((), np.float32),
  discounts=specs.BoundedArray((), np.float32, 0.0, 1.0),
)


def test_the_config_wants_one_step_transitions_and_names_bad_fields():
  assert registry.get('planning').builder_class() is PlanningBuilder
  assert PlanningConfig().replay.n_step == 1
  with pytest.raises(ConfigError, match=r'^PlanningConfig.replay.n_step=5 is invalid: must be 1'):
    PlanningConfig.from_dict({'replay.n_step': 5})
  with pytest.raises(ConfigError, match=r'PlanningConfig.planner.num_elites=64 is invalid'):
    PlanningConfig.from_dict({'planner.num_candidates': 32, 'planner.num_elites': 64})
  with pytest.raises(ConfigError, match=r'PlanningConfig.planner.method=.mppi. is invalid'):
    PlanningConfig.from_dict({'planner.method': 'mppi'})
  # Spelled out in the config so reading one imports no JAX: they must agree.
  assert config_lib.METHODS == planner_lib.METHODS
  assert config_lib.PROPAGATIONS == model_step_lib.PROPAGATIONS
  assert config_lib.REWARDS == ('learned', *known_rewards.REWARDS)
  # The transformer predicts the reward too (its reward token): 'learned' is valid with it.
  assert PlanningConfig.from_dict({'model.kind': 'transformer'}).planner.reward == 'learned'
  with pytest.raises(ConfigError, match="reward='cartpole' is invalid for this task: it takes 5"):
    PlanningBuilder(PlanningConfig.from_dict({'planner.reward': 'cartpole'}), LINEAR_SPEC)


def test_running_moments_are_the_moments_of_all_batches_then_settle_at_the_cap():
  rng = np.random.default_rng(0)
  batches = [rng.normal(3.0, 2.0, (n, 2)).astype(np.float32) for n in (5, 7, 4)]
  moments = learning.empty_moments(2, 2)
  stats = learning.stats_from_moments(moments)
  np.testing.assert_array_equal(stats.obs_std, np.ones(2))  # Before any data: units as they are.
  for x in batches:
    moments = learning.update_moments(moments, x, x[:, ::-1], 2 * x, x[:, 0])
  data = np.concatenate(batches)
  stats = learning.stats_from_moments(moments)
  assert float(moments.count) == 16
  np.testing.assert_allclose(stats.obs_mean, data.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats.obs_std, data.std(0), rtol=1e-5)
  np.testing.assert_allclose(stats.action_mean, data[:, ::-1].mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats.delta_std, data.std(0), rtol=1e-5)  # next_obs - obs = x
  np.testing.assert_allclose(stats.reward_mean, data[:, 0].mean(), rtol=1e-5)

  # Capped at 4: the old moments count as 4 samples. By hand, one dimension: mean 0, M2 8
  # over 8 samples is variance 1; capped, mean 0 and M2 4 over 4. A batch [4, 4, 4, 4]
  # (M2 0) moves the mean to 4 * 4/8 = 2 and M2 to 4 + 0 + 16 * 4 * 4 / 8 = 36: var 4.5.
  one = learning.RunningMoments(
    *(np.float32(v) for v in (8, 0, 8, 0, 8, 0, 8, 0, 8))
  )  # fmt: skip
  four = np.full((4,), 4.0, np.float32)
  capped = learning.update_moments(one, four, four, four, four, max_count=4.0)
  assert float(capped.count) == 8
  assert float(capped.obs_mean) == pytest.approx(2.0)
  assert float(capped.obs_m2) == pytest.approx(36.0)
  assert float(learning.stats_from_moments(capped).obs_std) == pytest.approx(np.sqrt(4.5))


def _trained_learner(steps: int = 200):
  builder = PlanningBuilder(PlanningConfig.from_dict(TINY), LINEAR_SPEC)
  logger = loggers.InMemoryLogger()
  learner = builder.make_learner(LinearSystemFeed(64), seed=1, logger=logger)
  for _ in range(steps):
    learner.step()
  # Every batch is fresh data: each step's loss is a held-out loss before its update.
  return builder, learner, [row['model_loss'] for row in logger.data]


def test_the_model_learner_fits_a_known_system_and_its_checkpoint_restores_it(tmp_path):
  builder, learner, losses = _trained_learner()
  assert isinstance(builder, Builder) and isinstance(learner, Learner)
  assert learner.steps == 200
  # The loss falls by a wide margin (two members' NLL summed).
  assert np.all(np.isfinite(losses)) and np.mean(losses[-20:]) < np.mean(losses[:20]) - 8.0
  # The learned units are the data's: obs uniform on [-2, 2] has std 2/sqrt(3).
  model = learner.get_variables(['policy'])[0]
  np.testing.assert_allclose(model['stats']['obs_std'], 2 / np.sqrt(3), rtol=0.05)

  # The served model predicts the system: one step from a held-out batch.
  batch = next(LinearSystemFeed(200, seed=5))
  stats = NormalizationStats(**model['stats'])
  apply = jax.jit(builder.make_networks().apply)  # One compilation, not one per op.
  raw = to_raw(apply(model['params'], batch.observation, batch.action, stats), stats)
  error = np.sqrt(np.mean((batch.observation + raw.delta_mean - batch.next_observation) ** 2))
  assert error < 0.1, error

  # Through a real checkpoint file: after more training, restoring it serves the model again.
  Checkpointer(tmp_path).save({'learner_state': learner.save()}, learner.steps)
  learner.step()
  assert learner.steps == 201
  step, payload = Checkpointer(tmp_path).restore_latest()
  learner.restore(payload['learner_state'])
  assert step == learner.steps == 200
  again = learner.get_variables(['policy'])[0]
  for got, want in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(model)):
    np.testing.assert_array_equal(got, want)


def _cartpole_actions(builder, source, seed, steps=6, deterministic=False):
  env = make_environment(TASK, seed=0)
  actor = builder.make_actor(source, adder=None, seed=seed, deterministic=deterministic)
  timestep = env.reset()
  actor.observe_first(timestep)
  actions = []
  for _ in range(steps):
    action = actor.select_action(timestep.observation)
    actions.append(action)
    timestep = env.step(action)
    actor.observe(action, timestep)
  return np.stack(actions)


def test_the_planning_actor_acts_within_bounds_and_a_fixed_seed_plans_the_same():
  spec = specs.make_environment_spec(make_environment(TASK, seed=0))
  builder = PlanningBuilder(PlanningConfig.from_dict(TINY), spec)
  # The learner as the variable source, as in the program (over Courier there).
  learner = builder.make_learner(iter(()), seed=0)
  first = _cartpole_actions(builder, learner, seed=3)
  assert first.shape == (6, 1) and first.dtype == np.float32
  assert np.all(first >= -1.0) and np.all(first <= 1.0)
  np.testing.assert_array_equal(_cartpole_actions(builder, learner, seed=3), first)
  assert not np.array_equal(_cartpole_actions(builder, learner, seed=4), first)
  # With action_repeat=2 it holds each decision for two steps, as its plans assume (here
  # scored with cartpole's known reward of the predicted states).
  repeat = dict(TINY, planner={**TINY['planner'], 'action_repeat': 2, 'reward': 'cartpole'})
  held = _cartpole_actions(PlanningBuilder(PlanningConfig.from_dict(repeat), spec), learner, seed=3)
  np.testing.assert_array_equal(held[0::2], held[1::2])
  assert not np.array_equal(held[0], held[2])


def _cartpole_transitions(steps: int = 300) -> types.Transition:
  env = make_environment(TASK, seed=0)
  rng = np.random.default_rng(0)
  timestep, rows = env.reset(), []
  for _ in range(steps):
    action = rng.uniform(-1, 1, (1,)).astype(np.float32)
    following = env.step(action)
    rows.append((timestep.observation, action, following.reward, 1.0, following.observation))
    timestep = following
  return types.Transition(*(np.asarray(x, np.float32) for x in zip(*rows)))


def test_the_transformer_model_learns_cartpole_transitions_and_plans_within_bounds():
  spec = specs.make_environment_spec(make_environment(TASK, seed=0))
  config = PlanningConfig.from_dict(
    {
      'model': {'kind': 'transformer', 'transformer_size': 32, 'transformer_heads': 2,
                'transformer_layers': 1},
      'optim': {'learning_rate': 3e-3},
      'planner': {'horizon': 3, 'num_candidates': 8, 'iterations': 1, 'num_elites': 2,
                  'reward': 'cartpole'},
      'replay': {'batch_size': 32},
    }
  )  # fmt: skip
  builder = PlanningBuilder(config, spec)
  data = _cartpole_transitions()
  rng = np.random.default_rng(1)
  batches = (
    jax.tree_util.tree_map(lambda x: x[rng.integers(0, 300, 32)], data) for _ in iter(int, 1)
  )
  logger = loggers.InMemoryLogger()
  learner = builder.make_learner(batches, seed=0, logger=logger)
  for _ in range(60):
    learner.step()
  losses = [row['model_loss'] for row in logger.data]
  # From about log(vocabulary size) = 7.6 nats a token of the change (to 6.2 here).
  assert losses[0] > 6.0 and np.mean(losses[-10:]) < losses[0] - 1.0, losses
  assert set(learner.get_variables(['policy'])[0]) == {'params'}
  actions = _cartpole_actions(builder, learner, seed=3, steps=3)
  assert actions.shape == (3, 1) and np.all(np.abs(actions) <= 1.0)


def test_the_transformer_is_taught_each_steps_change_and_reward_which_its_tokens_resolve():
  """Its targets are next_obs - obs and the reward: tokenised, the next observation itself
  falls in the observation's own bin for most steps on cart position and cos(angle), and a
  model of those tokens could not see the cart move (planning through one scored 0.7)."""
  from agents.planning.sequence_model import make_sequence_dynamics, transition_tokens
  from networks.sequence_dynamics import dynamics_loss_mask

  data = _cartpole_transitions()
  obs_dim, change = data.observation.shape[1], data.next_observation - data.observation
  layout = make_sequence_dynamics(obs_dim, 1, 8, 1, 1).layout
  assert layout.obs_dim == obs_dim + 1  # The reward slot.
  tokens, _ = transition_tokens(
    layout, data.observation, data.action, data.next_observation, data.reward
  )
  tokens = np.asarray(tokens)
  # The first timestep's reward slot is 0 (the bin centre nearest it); the second's holds
  # the reward.
  first_slot = layout.vocab.continuous_values(tokens[:, obs_dim])
  np.testing.assert_allclose(first_slot, 0.0, atol=1e-3)
  target = tokens[:, layout.num_tokens : layout.num_tokens + obs_dim + 1]
  decoded = np.asarray(layout.vocab.continuous_values(target))
  error = np.abs(data.observation + decoded[:, :-1] - data.next_observation).mean(0)
  # Within 10% of every feature's mean change (the next observation's own tokens: 98-400%
  # on position and cos(angle)).
  assert np.all(error < 0.1 * np.abs(change).mean(0)), (error, np.abs(change).mean(0))
  spread = np.ptp(data.reward)
  assert spread > 0.01 and np.abs(decoded[:, -1] - data.reward).max() < 0.05 * spread
  # The loss counts the second timestep's change and reward, never the first's slot.
  mask = dynamics_loss_mask(layout, 2).reshape(2, layout.num_tokens)
  assert not mask[0].any() and mask[1, : obs_dim + 1].all() and not mask[1, obs_dim + 1 :].any()


def test_the_transformer_plans_with_its_own_reward_token():
  from agents.planning.sequence_model import make_sequence_model_step, predict_change_and_reward

  spec = specs.make_environment_spec(make_environment(TASK, seed=0))
  config = PlanningConfig.from_dict(
    {
      'model': {'kind': 'transformer', 'transformer_size': 16, 'transformer_heads': 2,
                'transformer_layers': 1},
      'planner': {'horizon': 2, 'num_candidates': 4, 'iterations': 1, 'num_elites': 2},
    }
  )  # fmt: skip
  builder = PlanningBuilder(config, spec)
  assert builder.reward_fn() is None  # 'learned', the default: its own token.
  learner = builder.make_learner(iter(()), seed=0)
  params = learner.get_variables(['policy'])[0]['params']
  sequence = builder.make_networks()
  obs = _cartpole_transitions(2).observation
  step = make_sequence_model_step(sequence.model, params, sequence.layout)
  next_obs, reward = step.step(obs[0], np.array([0.3], np.float32))
  change, predicted = predict_change_and_reward(
    sequence.model, params, sequence.layout, obs[:1], np.array([[0.3]], np.float32)
  )
  np.testing.assert_allclose(next_obs, obs[0] + change[0], rtol=1e-6)
  np.testing.assert_allclose(reward, predicted[0], rtol=1e-6)
  known = make_sequence_model_step(
    sequence.model, params, sequence.layout, known_rewards.REWARDS['cartpole'][0]
  )
  _, by_physics = known.step(obs[0], np.array([0.3], np.float32))
  np.testing.assert_allclose(
    by_physics, known_rewards.REWARDS['cartpole'][0](obs[0], np.array([0.3]), next_obs), rtol=1e-5
  )
  actions = _cartpole_actions(builder, learner, seed=3, steps=2)
  assert actions.shape == (2, 1) and np.all(np.abs(actions) <= 1.0)
