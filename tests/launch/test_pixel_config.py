"""Pixel settings: command-line flags, one-line errors, the replay size that fits in memory."""

import argparse

import jax
import jax.numpy as jnp
import pytest

from agents.common.errors import ConfigError
from agents.common.observations import example_observations
from launch.cli import add_config_flags, given_values
from launch.config import ExperimentConfig
from launch.experiment import pixel_replay_size


def test_flags_come_from_the_config():
  parser = argparse.ArgumentParser()
  add_config_flags(parser, ExperimentConfig)
  args = parser.parse_args(
    [
      '--pixels',
      '--pixel_size',
      '32',
      '--frame_stack',
      '2',
      '--action_repeat',
      '8',
      '--no_eval_gifs',
    ]
  )
  given = given_values(args, ExperimentConfig)
  assert given == dict(pixels=True, pixel_size=32, frame_stack=2, action_repeat=8, eval_gifs=False)
  assert ExperimentConfig(**given).camera is None  # the task's own camera
  assert given_values(parser.parse_args(['--camera', '-1']), ExperimentConfig) == dict(camera=-1)


@pytest.mark.parametrize(
  'field, value', [('pixel_size', 4), ('frame_stack', 0), ('action_repeat', 1.5), ('camera', -2)]
)
def test_bad_pixel_settings_name_the_field(field, value):
  with pytest.raises(ConfigError, match=f'^{field}={value!r} is invalid'):
    ExperimentConfig(pixels=True, **{field: value})


def test_replay_size_fits_the_memory_setting():
  # 24 GiB / (64 * 64 * 3 * 3 bytes) = 699050.67 stacked observations.
  assert pixel_replay_size(ExperimentConfig(pixels=True)) == 699_050
  # One frame a step: 2.1M would fit, the agent's 1M stands.
  assert pixel_replay_size(ExperimentConfig(pixels=True, frame_stack=1)) == 1_000_000
  # 1 GiB of 84x84x9: 16,908; never below the agent's min_replay_size.
  small = ExperimentConfig(pixels=True, pixel_size=84, replay_memory_gb=1.0)
  assert pixel_replay_size(small) == 2**30 // (84 * 84 * 9)
  tiny = ExperimentConfig(pixels=True, replay_memory_gb=0.001)
  assert pixel_replay_size(tiny) == tiny.agent.replay.min_replay_size
  assert pixel_replay_size(ExperimentConfig()) is None  # state runs keep theirs


@pytest.mark.parametrize('policy_loss', ['mpo', 'pac'])
def test_the_critic_values_rewards_summed_over_the_action_repeat(policy_loss):
  from launch.experiment import make_builder

  # dm_control's rewards are in [0, 1] a step; an action of 8 steps earns up to 8.
  repeat = ExperimentConfig(pixels=True, action_repeat=8, agent={'policy_loss': policy_loss})
  config = make_builder(repeat).config
  assert (config.min_reward, config.max_reward) == (0.0, 8.0)
  assert config.v_max == pytest.approx(800.0)  # discount 0.99
  assert repeat.agent.max_reward == 1.0  # the run's own config (config.json) is unchanged
  # Signed rewards scale on both sides; settings other than the bounds are kept.
  signed = ExperimentConfig(
    pixels=True, action_repeat=4, agent={'min_reward': -0.5, 'max_reward': 2.0, 'num_samples': 7}
  )
  config = make_builder(signed).config
  assert (config.min_reward, config.max_reward, config.num_samples) == (-2.0, 8.0, 7)
  # No repeat, or a state run (which ignores action_repeat): the bounds stand.
  assert make_builder(ExperimentConfig(pixels=True)).config.max_reward == 1.0
  assert make_builder(ExperimentConfig(action_repeat=8)).config.max_reward == 1.0


def test_a_pixel_run_may_use_the_perceiver_on_image_patches():
  from launch.experiment import make_builder

  config = ExperimentConfig(
    pixels=True, agent={'network': 'perceiver', 'perceiver.patch_size': 16}, frame_stack=2
  )
  builder = make_builder(config)
  assert builder.pixels and builder.spec.observations.shape == (64, 64, 6)
  networks = builder.make_networks()
  assert networks.augment is not None  # DrQ's shift, as for the convolutional encoder.
  with pytest.raises(ConfigError, match='perceiver.patch_size=24'):
    make_builder(
      ExperimentConfig(pixels=True, agent={'network': 'perceiver', 'perceiver.patch_size': 24})
    )


def test_state_features_beside_the_image_need_pixels_and_size_the_replay():
  with pytest.raises(ConfigError, match=r'pixel_features=True needs pixels=True'):
    ExperimentConfig(pixel_features=True)
  # 24 GiB / (64 * 64 * 9 + 4 * 5 bytes): cartpole's 5 float32 features ride along.
  with_features = ExperimentConfig(pixels=True, pixel_features=True)
  assert pixel_replay_size(with_features) == 24 * 2**30 // (64 * 64 * 9 + 20)
  from launch.experiment import make_builder

  spec = make_builder(with_features).spec.observations
  assert set(spec) == {'features', 'pixels'} and spec['features'].shape == (5,)
  # The Perceiver reads the features as one more token after the image's patches.
  perceiver = make_builder(
    ExperimentConfig(
      pixels=True, pixel_features=True, frame_stack=1, agent={'network': 'perceiver'}
    )
  )
  networks = perceiver.make_networks()
  obs = example_observations(perceiver.spec.observations)
  params = networks.policy.init(jax.random.PRNGKey(0), obs)
  mean, _ = networks.policy.apply(params, obs)
  assert mean.shape == (1, 1)
  moved = {**obs, 'features': obs['features'] + 1.0}
  assert not jnp.allclose(networks.policy.apply(params, moved)[0], mean)  # it reads them
  shifted = networks.augment(jax.random.PRNGKey(1), obs)
  assert shifted['features'] is obs['features'] and shifted['pixels'].shape == (1, 64, 64, 3)


@pytest.mark.parametrize('algorithm', ['gato', 'planning'])
def test_an_agent_of_state_features_refuses_a_pixel_run_before_launch(tmp_path, algorithm):
  from launch.local.launcher import prepare_run

  config = ExperimentConfig(run_dir=str(tmp_path / 'run'), algorithm=algorithm, pixels=True)
  with pytest.raises(
    ConfigError, match=f'algorithm={algorithm} takes state features only.*bc, mpo'
  ):
    prepare_run(config)
  assert not (tmp_path / 'run').exists()  # nothing created for a run that cannot start
