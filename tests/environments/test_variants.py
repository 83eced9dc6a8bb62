"""Named physics variants of the suite tasks (environments.variants)."""

import numpy as np
import pytest

from environments import variants


def _trajectory(env, steps=30):
  env.reset()
  action = np.full(env.action_spec().shape, 0.7, np.float32)
  return np.stack([env.step(action).observation for _ in range(steps)])


def test_a_variant_changes_the_trajectory_under_the_same_actions():
  base = _trajectory(variants.make('cartpole:swingup', seed=3))
  again = _trajectory(variants.make('cartpole:swingup@', seed=3))  # No parameters: the task.
  shorter = _trajectory(variants.make('cartpole:swingup@pole_length=0.5', seed=3))
  np.testing.assert_array_equal(base, again)
  assert shorter.shape == base.shape
  assert np.abs(shorter - base).max() > 0.1  # A shorter pendulum swings faster.


def test_named_parameters_read_back_and_survive_a_reset():
  name = 'cartpole:swingup@pole_mass=0.3,pole_length=0.8,gravity=5'
  env = variants.load(name)
  env.reset()
  physics = env.physics
  assert variants.read(physics, 'cartpole', 'pole_length') == pytest.approx(0.8)
  assert variants.read(physics, 'cartpole', 'pole_mass') == pytest.approx(0.3)
  assert variants.read(physics, 'cartpole', 'gravity') == pytest.approx(5.0)
  assert variants.read(physics, 'cartpole', 'cart_mass') == pytest.approx(1.0)  # Untouched.
  # The pole's inertia is the capsule's MuJoCo would have compiled for that length...
  pole = physics.model.name2id('pole_1', 'body')
  np.testing.assert_allclose(
    physics.model.body_inertia[pole], variants.capsule_inertia(0.3, 0.045, 0.8), rtol=1e-9
  )
  assert physics.model.body_subtreemass[physics.model.name2id('cart', 'body')] == pytest.approx(1.3)
  # ...the formula agreeing with MuJoCo's own on the suite's unchanged pole.
  suite_pole = variants.load('cartpole:swingup').physics
  np.testing.assert_allclose(
    suite_pole.model.body_inertia[pole], variants.capsule_inertia(0.1, 0.045, 1.0), rtol=1e-6
  )
  assert variants.parse(name).name == 'cartpole:swingup@gravity=5,pole_length=0.8,pole_mass=0.3'


def test_every_pole_of_a_multi_pole_cartpole_changes_and_hangs_from_the_one_below():
  physics = variants.load('cartpole:two_poles@pole_length=0.5').physics
  model = physics.model
  pole_1, pole_2 = (model.name2id(f'pole_{i}', 'body') for i in (1, 2))
  geoms = [model.name2id(f'pole_{i}', 'geom') for i in (1, 2)]
  np.testing.assert_allclose(model.geom_size[geoms, 1], [0.25, 0.25])
  np.testing.assert_allclose(model.body_pos[pole_2], [0.0, 0.0, 0.5])
  np.testing.assert_allclose(model.body_pos[pole_1], [0.0, 0.0, 0.0])


def test_walker_torso_mass_and_cheetah_friction():
  walker = variants.load('walker:walk@torso_mass=15').physics
  assert variants.read(walker, 'walker', 'torso_mass') == pytest.approx(15.0)
  cheetah = variants.load('cheetah:run@friction=0.2').physics
  np.testing.assert_allclose(cheetah.model.geom_friction[:, 0], 0.2)


@pytest.mark.parametrize(
  'name,message',
  [
    (
      'cartpole:swingup@pole_lenght=0.8',
      "unknown physics parameter 'pole_lenght' for cartpole in 'cartpole:swingup@pole_lenght="
      "0.8'; valid: cart_mass, friction, gravity, pole_length, pole_mass",
    ),
    ('walker:walk@pole_mass=1', 'valid: friction, gravity, torso_mass'),
    ('cartpole:swingup@pole_mass=-1', 'pole_mass in .* must be a positive number'),
    ('cartpole:swingup@pole_mass', "must be a positive number, as pole_mass=0.5; got ''"),
    ('cartpole:swingup@pole_mass=1,pole_mass=2', 'pole_mass is set twice'),
    ('cartpole:swingupp@pole_mass=1', "unknown task 'cartpole:swingupp'"),
  ],
)
def test_a_bad_variant_is_refused_in_one_line_naming_the_field(name, message):
  with pytest.raises(ValueError, match=message) as error:
    variants.parse(name)
  assert '\n' not in str(error.value)


def test_the_suite_factory_takes_a_variant_wherever_it_takes_a_task_name():
  from environments import suite

  name = 'cartpole:swingup@pole_length=0.5'
  assert suite.parse_task(name) == ('cartpole', 'swingup')
  assert suite.observation_group_sizes(name) == suite.observation_group_sizes('cartpole:swingup')
  via_suite = _trajectory(suite.make_environment(name, seed=3))
  np.testing.assert_array_equal(via_suite, _trajectory(variants.make(name, seed=3)))
  assert (
    np.abs(via_suite - _trajectory(suite.make_environment('cartpole:swingup', seed=3))).max() > 0.1
  )
  with pytest.raises(ValueError, match="unknown physics parameter 'pole_lenght' for cartpole"):
    suite.parse_task('cartpole:swingup@pole_lenght=0.8')
