"""The planner's warm start from a policy: plans the policy makes through the model
(agents.planning.proposals), another run's MPO policy read and checked field by field
(launch.borrowed_policy), and the planning actor using it (agents.planning.builder)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import specs

from agents.common.errors import ConfigError
from agents.mpo.actor import make_policy
from agents.planning import planner as planner_lib
from agents.planning.config import PlanningConfig
from agents.planning.model_step import ModelStep
from agents.planning.proposals import ProposalPolicy, policy_proposals, predicted_observation
from environments.suite import make_environment
from launch import experiment
from launch.borrowed_policy import load_policy
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.run_dir import RunDir
from tests.fakes import tiny_config

GOAL = np.array([0.6, -0.3], np.float32)
# x' = x + a, reward -|x' - goal|^2 (as tests/agents/test_planner.py).
POINT_MASS = ModelStep(
  step=lambda x, a: (x + a, -jnp.sum((x + a - GOAL) ** 2)),
  initial_state=lambda obs: obs,
)
CONFIG = planner_lib.PlannerConfig(
  (-1.0, -1.0), (1.0, 1.0), horizon=3, num_candidates=4, iterations=1, num_elites=1,
  action_repeat=2,
)  # fmt: skip


def toward_goal(params, obs):
  """A Gaussian policy whose mean goes `params` of the way to the goal per model step."""
  return params * (GOAL - obs), jnp.full_like(obs, 0.2)


def test_the_first_proposal_is_the_policys_mean_through_the_model_and_the_rest_its_samples():
  key = jax.random.PRNGKey(5)
  plans = policy_proposals(toward_goal, 0.25, POINT_MASS, jnp.zeros(2), key, CONFIG, num=3)
  assert plans.shape == (3, 3, 2)
  # By hand: from 0 the mean is a quarter of the goal, held for 2 model steps, reaching
  # half of it; then a quarter of the other half, held twice, reaches 3/4; then 1/16.
  np.testing.assert_allclose(plans[0], [GOAL / 4, GOAL / 8, GOAL / 16], rtol=1e-6)
  # A sample follows its own decisions: mean at its own predicted state plus 0.2 * noise.
  noise = np.asarray(jax.random.normal(key, (3,) + CONFIG.plan_shape))
  x = np.zeros(2, np.float32)
  for h in range(3):
    action = np.clip(0.25 * (GOAL - x) + 0.2 * noise[1, h], -1.0, 1.0)
    np.testing.assert_allclose(plans[1, h], action, rtol=1e-5, atol=1e-6)
    x = x + 2 * action
  assert np.all(np.abs(plans) <= 1.0) and not np.allclose(plans[1], plans[2])


def test_an_ensembles_particles_are_seen_by_the_policy_as_their_mean():
  np.testing.assert_allclose(predicted_observation(jnp.array([[1.0, 2.0], [3.0, 6.0]]), 2), [2, 4])
  np.testing.assert_allclose(predicted_observation(jnp.array([1.0, 2.0]), 2), [1, 2])


def test_a_good_policys_proposal_is_what_a_tiny_search_finds():
  # Going all the way to the goal at once is optimal; 4 random candidates never find it.
  plans = policy_proposals(toward_goal, 1.0, POINT_MASS, jnp.zeros(2), jax.random.PRNGKey(0),
                           dataclasses.replace(CONFIG, action_repeat=1), num=2)  # fmt: skip
  config = dataclasses.replace(CONFIG, action_repeat=1)
  for method in planner_lib.METHODS:
    plan = planner_lib.make_planner(POINT_MASS.step, config, method)
    without = plan(jnp.zeros(2), jax.random.PRNGKey(0))
    result = plan(jnp.zeros(2), jax.random.PRNGKey(0), proposals=plans)
    np.testing.assert_allclose(result.best_plan, [GOAL, [0, 0], [0, 0]], atol=1e-6)
    assert float(result.value) == pytest.approx(0.0, abs=1e-6) and float(without.value) < -0.05


# ---------------------------------------------------------------------------------------
# Another run's policy.

TASK = 'cartpole:swingup'


def _mpo_run(tmp_path, name='mpo', task=TASK, edit=None):
  """A run directory holding an MPO learner's initial state as its checkpoint at step 0."""
  config = tiny_config(tmp_path / name, task=task)
  run = RunDir(config.run_dir)
  run.create()
  run.write_config(config.to_dict())
  state = experiment.make_builder(config).make_learner(iter(()), seed=1).save()
  if edit is not None:
    state = edit(state)
  Checkpointer(run.checkpoints).save({'learner_state': state, 'learner_steps': 0}, 0)
  return run.path, state


def _spec(task=TASK):
  return specs.make_environment_spec(make_environment(task, seed=0))


def test_a_loaded_policy_acts_as_the_runs_own_actor_would(tmp_path):
  run, state = _mpo_run(tmp_path)
  policy = load_policy(str(run), _spec(), 'agent.planner.proposals_from')
  obs = make_environment(TASK, seed=3).reset().observation
  mean, std = policy.apply(policy.params, obs[None])
  networks = experiment.make_builder(tiny_config(tmp_path / 'x')).make_networks()
  act = make_policy(networks, deterministic=True)
  expected, _ = act(state.policy_params, jax.random.PRNGKey(0), obs)
  np.testing.assert_allclose(mean[0], expected, rtol=1e-6)
  assert std.shape == (1, 1) and float(std[0, 0]) > 0


def _broken(field):
  def edit(state):
    params = jax.tree_util.tree_map(np.array, state.policy_params)
    module = sorted(params)[0]
    if field == 'nan':
      params[module]['w'][0, 0] = np.nan
    else:
      params[module]['w'] = params[module]['w'][:, :-1]
    return state._replace(policy_params=params)

  return edit


@pytest.mark.parametrize(
  'case, named',
  [
    ('no_run', "agent.planner.proposals_from='{missing}': not a run directory"),
    ('other_task', 'observations.shape (5,) there, (4,) here'),
    ('nan', 'holds NaN or infinity'),
    ('shape', 'has shape'),
    ('no_checkpoint', 'no checkpoint in'),
  ],
)
def test_a_bad_policy_run_is_refused_naming_the_field(tmp_path, case, named):
  spec = _spec()
  if case == 'no_run':
    run = tmp_path / 'missing'
  elif case == 'other_task':
    run, _ = _mpo_run(tmp_path)
    spec = _spec('point_mass:easy')
  elif case == 'no_checkpoint':
    config = tiny_config(tmp_path / 'empty')
    RunDir(config.run_dir).create()
    RunDir(config.run_dir).write_config(config.to_dict())
    run = tmp_path / 'empty'
  else:
    run, _ = _mpo_run(tmp_path, edit=_broken(case))
  with pytest.raises(ConfigError) as err:
    load_policy(str(run), spec, 'agent.planner.proposals_from')
  message = str(err.value)
  assert named.format(missing=run) in message and 'agent.planner.proposals_from' in message
  if case in ('nan', 'shape'):
    assert "['w']" in message  # The parameter's path.


# ---------------------------------------------------------------------------------------
# The planning actor with proposals.

ONE_CANDIDATE = {
  'model': {'num_members': 2, 'hidden_sizes': [16]},
  # One candidate in all, replaced by the one proposal: the policy's mean plan.
  'planner': {
    'method': 'random_shooting',
    'horizon': 3,
    'num_candidates': 1,
    'iterations': 1,
    'num_elites': 1,
    'num_proposals': 1,
  },  # fmt: skip
}


def test_the_program_lends_the_planning_actor_the_runs_policy(tmp_path):
  run, state = _mpo_run(tmp_path)
  agent = dict(ONE_CANDIDATE)
  agent['planner'] = {**agent['planner'], 'proposals_from': str(run)}
  config = ExperimentConfig.from_dict(
    {'run_dir': str(tmp_path / 'plan'), 'algorithm': 'planning', 'task': TASK, 'agent': agent}
  )
  builder = experiment.make_builder(config)
  assert builder.policy_run() == ('agent.planner.proposals_from', str(run))
  learner = builder.make_learner(iter(()), seed=0)
  actor = builder.make_actor(learner, adder=None, seed=0, deterministic=True)
  timestep = make_environment(TASK, seed=3).reset()
  actor.observe_first(timestep)
  networks = experiment.make_builder(tiny_config(tmp_path / 'x')).make_networks()
  mpo_mean, _ = make_policy(networks, True)(state.policy_params, jax.random.PRNGKey(0),
                                             timestep.observation)  # fmt: skip
  np.testing.assert_allclose(
    actor.select_action(timestep.observation), np.clip(mpo_mean, -1, 1), rtol=1e-5
  )


def test_a_builder_made_by_hand_says_it_needs_a_policy_loader():
  from agents.planning.builder import PlanningBuilder

  agent = dict(ONE_CANDIDATE, planner={**ONE_CANDIDATE['planner'], 'proposals_from': '/r'})
  builder = PlanningBuilder(PlanningConfig.from_dict(agent), _spec())
  with pytest.raises(ConfigError, match='no policy loader was lent'):
    builder.make_actor(builder.make_learner(iter(())), adder=None)
  builder.lend_policy(lambda: ProposalPolicy(lambda p, o: (jnp.full((1, 1), p), o[:, :1]), 0.5))
  actor = builder.make_actor(builder.make_learner(iter(())), adder=None, deterministic=True)
  timestep = make_environment(TASK, seed=0).reset()
  actor.observe_first(timestep)
  np.testing.assert_allclose(actor.select_action(timestep.observation), [0.5])


def test_num_proposals_is_checked_against_the_candidates():
  with pytest.raises(ConfigError, match='num_proposals'):
    PlanningConfig.from_dict(
      {'planner': {'num_candidates': 8, 'num_elites': 4, 'num_proposals': 9, 'proposals_from': 'r'}}
    )
  PlanningConfig.from_dict({'planner': {'num_candidates': 8, 'num_elites': 4}})  # Unused: fine.
  with pytest.raises(ConfigError, match='proposals_from'):
    PlanningConfig.from_dict({'planner': {'proposals_from': 3}})


def test_a_runs_critic_gives_the_state_value_of_its_policys_mean_action(tmp_path):
  from agents.mpo.losses import categorical_mean

  run, state = _mpo_run(tmp_path)
  policy = load_policy(str(run), _spec(), 'agent.planner.proposals_from')
  obs = np.stack([make_environment(TASK, seed=s).reset().observation for s in (3, 4)])
  config = tiny_config(tmp_path / 'x')
  networks = experiment.make_builder(config).make_networks()
  mean, _ = networks.policy.apply(state.policy_params, obs)
  logits = networks.critic.apply(state.critic_params, obs, mean)
  support = jnp.linspace(config.agent.v_min, config.agent.v_max, config.agent.num_atoms)
  np.testing.assert_allclose(
    policy.value(policy.params, obs), categorical_mean(logits, support), rtol=1e-5
  )


def test_terminal_value_needs_a_policy_run_with_a_critic():
  from agents.planning.builder import PlanningBuilder

  with pytest.raises(ConfigError, match='terminal_value'):
    PlanningConfig.from_dict({'planner': {'terminal_value': True}})
  agent = dict(ONE_CANDIDATE)
  agent['planner'] = {**agent['planner'], 'proposals_from': '/r', 'terminal_value': True}
  builder = PlanningBuilder(PlanningConfig.from_dict(agent), _spec())
  builder.lend_policy(lambda: ProposalPolicy(lambda p, o: (o[:, :1], o[:, :1]), 0.0))
  with pytest.raises(ConfigError, match='has no critic'):
    builder.make_actor(builder.make_learner(iter(())), adder=None)


def test_the_launcher_refuses_a_bad_policy_run_before_launch(tmp_path):
  from launch.local.launcher import prepare_run

  agent = {
    **ONE_CANDIDATE,
    'planner': {**ONE_CANDIDATE['planner'], 'proposals_from': str(tmp_path)},
  }
  config = ExperimentConfig.from_dict(
    {'run_dir': str(tmp_path / 'plan'), 'algorithm': 'planning', 'task': TASK, 'agent': agent}
  )
  with pytest.raises(ConfigError, match='agent.planner.proposals_from=.*not a run directory'):
    prepare_run(config)
  assert not (tmp_path / 'plan' / 'config.json').exists()  # Refused before it was stored.
