"""Tests for the random-shooting and CEM planner (agents.planning.planner)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.planning import planner as planner_lib
from agents.planning.planner import PlannerConfig

GOAL = np.array([0.6, -0.3], np.float32)
# x' = x + a, reward -|x' - goal|^2, from x = 0: the optimal plan steps onto the goal at
# once (a_0 = goal) and then stays (a_t = 0), and no other plan does as well.
CONFIG = PlannerConfig(
  action_minimum=(-1.0, -1.0),
  action_maximum=(1.0, 1.0),
  horizon=3,
  num_candidates=256,
  iterations=5,
  num_elites=16,
)


def point_mass(state, action):
  next_state = state + action
  return next_state, -jnp.sum((next_state - GOAL) ** 2)


def _optimal_plan(config=CONFIG):
  plan = np.zeros(config.plan_shape, np.float32)
  plan[0] = GOAL
  return plan


@functools.lru_cache(maxsize=None)
def _planner(method, config=CONFIG):
  return planner_lib.make_planner(point_mass, config, method)


X0 = jnp.zeros(2, jnp.float32)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_cem_finds_the_optimal_first_action_and_beats_random_shooting_on_the_same_budget(seed):
  cem = _planner('cem')(X0, jax.random.PRNGKey(seed))
  shooting = _planner('random_shooting')(X0, jax.random.PRNGKey(seed))
  np.testing.assert_allclose(cem.action, GOAL, atol=0.05)
  np.testing.assert_allclose(cem.plan, _optimal_plan(), atol=0.1)
  cem_return = planner_lib.rollout_return(point_mass, X0, cem.plan, CONFIG)
  assert cem_return > shooting.value
  assert np.abs(cem.action - GOAL).max() < np.abs(shooting.action - GOAL).max()
  # The reported value is the best candidate's, and the returned action is in its plan.
  np.testing.assert_allclose(
    shooting.value, planner_lib.rollout_return(point_mass, X0, shooting.plan, CONFIG), rtol=1e-5
  )
  np.testing.assert_array_equal(shooting.action, shooting.plan[0])


@pytest.mark.parametrize('method', planner_lib.METHODS)
def test_a_fixed_key_plans_the_same_and_another_key_differently(method):
  plan = _planner(method)
  a = plan(X0, jax.random.PRNGKey(3))
  b = plan(X0, jax.random.PRNGKey(3))
  c = plan(X0, jax.random.PRNGKey(4))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.plan, c.plan)


@pytest.mark.parametrize('method', planner_lib.METHODS)
def test_actions_stay_within_the_bounds_even_when_the_goal_lies_beyond_them(method):
  config = PlannerConfig(
    action_minimum=(-0.5, 0.0),
    action_maximum=(0.25, 1.0),
    horizon=3,
    num_candidates=64,
    iterations=6,
    num_elites=4,
    init_std=3.0,
  )
  far = lambda s, a: (s + a, -jnp.sum((s + a - jnp.array([-9.0, 9.0])) ** 2))
  result = planner_lib.make_planner(far, config, method)(X0, jax.random.PRNGKey(1))
  for plan in (result.plan, result.best_plan):
    assert np.all(plan >= np.array([-0.5, 0.0])) and np.all(plan <= np.array([0.25, 1.0]))
  if method == 'cem':  # Samples clipped onto the bounds reach the optimal corner.
    np.testing.assert_allclose(result.action, [-0.5, 1.0], atol=0.05)


def test_action_repeat_holds_each_decision_for_that_many_model_steps():
  config = PlannerConfig((-1.0,), (1.0,), horizon=3, action_repeat=4, num_elites=1)
  clock = lambda t, a: (t + 1, a[0] * 10.0**t)  # The reward says which action came when.
  plan = jnp.array([[0.1], [0.2], [0.3]])
  final, rewards = planner_lib.rollout(clock, 0, plan, config)
  assert int(final) == 12
  np.testing.assert_allclose(rewards / 10.0 ** np.arange(12), np.repeat([0.1, 0.2, 0.3], 4))
  discounted = PlannerConfig((-1.0,), (1.0,), horizon=3, action_repeat=4, discount=0.5)
  step = lambda s, a: (s, a[0])
  np.testing.assert_allclose(
    planner_lib.rollout_return(step, 0.0, plan, discounted),
    sum(0.5**t * np.repeat([0.1, 0.2, 0.3], 4)[t] for t in range(12)),
    rtol=1e-6,
  )


def test_warm_start_proposals_and_a_shifted_plan_are_used():
  # A budget far too small to find the optimum by chance: a proposal holding it wins.
  tiny = PlannerConfig(
    (-1.0, -1.0), (1.0, 1.0), horizon=5, num_candidates=4, iterations=1, num_elites=1
  )
  proposals = jnp.stack([jnp.zeros(tiny.plan_shape), _optimal_plan(tiny)])
  for method in planner_lib.METHODS:
    plan = planner_lib.make_planner(point_mass, tiny, method)
    result = plan(X0, jax.random.PRNGKey(0), proposals=proposals)
    np.testing.assert_allclose(result.best_plan, _optimal_plan(tiny), atol=1e-6)
    np.testing.assert_allclose(result.value, 0.0, atol=1e-6)
  # The previous plan, shifted, centres CEM: at the goal, the optimum is to stay.
  shifted = planner_lib.shift_plan(jnp.asarray(_optimal_plan()), CONFIG)
  np.testing.assert_allclose(shifted, np.zeros(CONFIG.plan_shape))
  result = _planner('cem')(jnp.asarray(GOAL), jax.random.PRNGKey(0), shifted)
  np.testing.assert_allclose(result.action, [0.0, 0.0], atol=0.05)


def test_bad_settings_are_refused_with_the_field_named():
  with pytest.raises(ValueError, match='num_elites=9 exceeds num_candidates=8'):
    PlannerConfig((-1.0,), (1.0,), num_candidates=8, num_elites=9)
  with pytest.raises(ValueError, match='horizon'):
    PlannerConfig((-1.0,), (1.0,), horizon=0)
  with pytest.raises(ValueError, match='minimum < maximum'):
    PlannerConfig((1.0,), (-1.0,))
  with pytest.raises(ValueError, match='valid: cem, random_shooting'):
    planner_lib.make_planner(point_mass, CONFIG, 'mppi')


def test_a_terminal_value_is_added_discounted_and_can_decide_the_plan():
  # Return by hand: rewards 1 each of 3 steps at discount 0.5, then value 10 * x_3, at 0.5^3.
  step = lambda x, a: (x + a, jnp.ones(()))  # noqa: E731
  config = PlannerConfig((-1.0,), (1.0,), horizon=3, discount=0.5)
  plan = jnp.array([[0.5], [0.25], [0.25]])
  value = lambda x: 10.0 * jnp.sum(x)  # noqa: E731
  expected = 1 + 0.5 + 0.25 + 0.125 * 10.0 * 1.0
  np.testing.assert_allclose(
    planner_lib.rollout_return(step, jnp.zeros(1), plan, config, value), expected, rtol=1e-6
  )
  # No reward inside the horizon: only the value at its end says where to go.
  flat = lambda x, a: (x + a, jnp.zeros(()))  # noqa: E731
  to_goal = lambda x: -jnp.sum((x - GOAL) ** 2)  # noqa: E731
  for method in planner_lib.METHODS:
    blind = planner_lib.make_planner(flat, CONFIG, method)(X0, jax.random.PRNGKey(0))
    seeing = planner_lib.make_planner(flat, CONFIG, method, to_goal)(X0, jax.random.PRNGKey(0))
    assert float(blind.value) == 0.0
    reached = X0 + jnp.sum(seeing.best_plan, axis=0)
    assert float(jnp.abs(reached - GOAL).max()) < 0.1, (method, reached)
