"""The generalist's builder pieces together in one process: a real Reverb server from its
tables, a real dm_control cartpole, the episode store, windows, learner, actor, checkpoint."""

from __future__ import annotations

import acme
import jax
import numpy as np
import pytest
import reverb
from acme import specs, wrappers
from acme.utils import loggers

from agents import registry
from agents.builder import Builder, Learner
from agents.common.errors import ConfigError
from agents.gato.builder import GatoBuilder
from agents.gato.config import GatoConfig
from agents.replay_pipeline import EXTERNAL_TABLE
from environments.suite import make_environment, observation_group_sizes
from launch.checkpointing import Checkpointer
from launch.config import ExperimentConfig
from launch.store.episodes import EpisodeStore
from launch.store.recorder import EpisodeRecorder
from launch.store.windows import window_batches

TASK = 'cartpole:swingup'
# 7 tokens a cartpole timestep: a 6-timestep context, 2 of them prompt.
TINY_GATO = {
  'model': {'model_size': 16, 'num_heads': 2, 'num_layers': 1, 'context': 42},
  'window': {'prompt_tokens': 14, 'refresh_every': 2},
  'replay': {'batch_size': 4},
}
STEPS = 40  # per episode


def _builder(**overrides) -> GatoBuilder:
  spec = specs.make_environment_spec(make_environment(TASK, seed=0))
  config = GatoConfig.from_dict({**TINY_GATO, **overrides})
  return GatoBuilder(config, spec, observation_group_sizes(TASK))


def test_gato_builder_pieces_store_train_checkpoint_and_act(tmp_path):
  builder = _builder()
  assert isinstance(builder, Builder) and builder.layout.num_tokens == 7
  assert registry.get('gato').builder_class() is GatoBuilder

  # Replay: the program's tables never hold an insert back; actors insert nothing.
  server = reverb.Server(builder.make_replay_tables(), port=None)
  try:
    client = reverb.Client(f'localhost:{server.port}')
    assert builder.make_adder(client) is None
    external = builder.make_external_adder(client)
    env = wrappers.StepLimitWrapper(make_environment(TASK, seed=2), step_limit=5)
    timestep = env.reset()
    external.add_first(timestep)
    while not timestep.last():
      action = np.zeros(builder.action_dim, np.float32)
      timestep = env.step(action)
      external.add(action, timestep)
    external.reset()
    assert client.server_info()[EXTERNAL_TABLE].current_size > 0  # never held back
  finally:
    server.stop()

  # Windows of the store, which is empty at first: the iterator ends after its wait.
  store = EpisodeStore(tmp_path / 'store')
  empty = builder.make_store_iterator(
    [store.directory], [TASK], lambda *a, **k: window_batches(*a, wait_timeout_s=0.1, **k)
  )
  assert list(empty) == []
  learner = builder.make_learner(
    builder.make_store_iterator([tmp_path / 'store'], [TASK], window_batches, seed=0),
    logger=loggers.NoOpLogger(),
  )
  assert isinstance(learner, Learner)

  # Two episodes of the actor, with the learner's fresh parameters, into the store.
  actor = builder.make_actor(learner, adder=None, seed=1, version_name=None)
  recorder = EpisodeRecorder(store.writer('actor_0'), metadata={'source': 'actor_0', 'task': TASK})
  env = wrappers.StepLimitWrapper(make_environment(TASK, seed=1), step_limit=STEPS)
  loop = acme.EnvironmentLoop(env, actor, logger=loggers.NoOpLogger(), observers=[recorder])
  for _ in range(2):
    loop.run_episode()
  store.refresh()
  assert len(store) == 2 and actor.num_rebuilds > 2  # STEPS outgrow the 6-timestep cache

  for _ in range(3):
    learner.step()
  assert learner.steps == 3

  # The state round-trips through the project's checkpoints (no pickle).
  checkpointer = Checkpointer(tmp_path / 'checkpoints')
  checkpointer.save({'learner_state': learner.save()}, learner.steps)
  step, payload = checkpointer.restore_latest()
  again = builder.make_learner(iter(()), seed=5)
  again.restore(payload['learner_state'])
  assert step == again.steps == 3
  (before,), (after,) = learner.get_variables(['policy']), again.get_variables(['policy'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)
  with pytest.raises(KeyError, match='only "policy"'):
    learner.get_variables(['critic'])

  # A greedy actor acts with the trained parameters.
  greedy = builder.make_actor(again, adder=None, deterministic=True)
  greedy.observe_first(env.reset())
  action = greedy.select_action(env.reset().observation)
  assert action.shape == (builder.action_dim,) and np.all(np.abs(action) <= 1.0)


def test_a_window_of_k_timesteps_cuts_the_context_to_what_the_largest_body_needs():
  """Two bodies, cartpole (7 tokens a timestep) and point_mass (4 + 2 + 1 = 7 too) then
  walker (24 + 6 + 1 = 31): task token plus one timestep of the largest."""
  from agents.common.bodies import Body

  bodies = {
    t: Body(specs.make_environment_spec(make_environment(t, seed=0)), observation_group_sizes(t))
    for t in (TASK, 'walker:walk')
  }
  spec = bodies[TASK].spec
  config = GatoConfig.from_dict(
    {'window.conditioning': 'task_id', 'window.timesteps': 1, 'model.context': 128}
  )
  builder = GatoBuilder(config, spec, observation_group_sizes(TASK), bodies, TASK)
  assert builder.layouts['walker:walk'].num_tokens == 31
  assert builder.context() == 32 == builder.sizes().max_len == builder.window_fields()['length']
  assert builder.window_fields()['timesteps'] == 1
  assert builder.max_targets() == 6  # walker's 6 action tokens; cartpole's one timestep has 1
  # The actor's context holds one timestep too (the cartpole's 1 + 7 of 32 tokens).
  model = builder.make_networks()
  params = model.init(jax.random.PRNGKey(0), np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32))
  source = type('Source', (), {'get_variables': lambda self, names: [params for _ in names]})()
  actor = builder.make_actor(source, adder=None, deterministic=True)
  env = make_environment(TASK, seed=1)
  actor.observe_first(env.reset())
  assert actor.context_steps == 1
  # Unset, the context is model.context, filled with as many timesteps as fit.
  config = GatoConfig.from_dict({'window.conditioning': 'task_id', 'model.context': 128})
  builder = GatoBuilder(config, spec, observation_group_sizes(TASK), bodies, TASK)
  assert builder.context() == 128 and builder.window_fields()['timesteps'] == 0
  assert builder.max_targets() == 128 // 31 * 6  # walker's: more than cartpole's 18


def test_gato_config_is_checked_in_one_place():
  with pytest.raises(ConfigError, match=r'model.model_size=10 .* multiple of num_heads'):
    GatoConfig.from_dict({'model.model_size': 10, 'model.num_heads': 4})
  with pytest.raises(ConfigError, match=r'window.conditioning=.goal.'):
    GatoConfig.from_dict({'window.conditioning': 'goal'})
  with pytest.raises(ConfigError, match='prompt_tokens below model.context'):
    GatoConfig.from_dict({'window.prompt_tokens': 300})
  with pytest.raises(ConfigError, match='no room for one timestep'):
    _builder(model={'context': 20})
  # Gato trains on the store in every mode: the actors must store their episodes.
  with pytest.raises(ConfigError, match='store_episodes'):
    ExperimentConfig.from_dict(
      {'algorithm': 'gato', 'store_episodes': False, 'max_actor_steps': 10}
    )
  for field, value in (
    ('window.timesteps', -1),
    ('model.greedy_decoding', 'mode'),
    ('optim.value_token_jitter', -1),
    ('optim.value_token_jitter', 1.5),
    ('model.value_lookup', 'no'),
  ):
    with pytest.raises(ConfigError, match=field):
      GatoConfig.from_dict({field: value})
  # The evaluator may sample its tokens as Gato does: the config takes the choice.
  sampling = _builder(**{'model.greedy_decoding': 'sample'})
  assert sampling.config.model.greedy_decoding == 'sample'
  # Value tokens without a vector of their own need the place embedding.
  with pytest.raises(ConfigError, match='model.value_lookup=False .* unless value_embedding'):
    GatoConfig.from_dict({'model.value_lookup': False})
  smooth = _builder(**{'model.value_embedding': True, 'model.value_lookup': False})
  assert smooth.sizes().value_bins > 0 and not smooth.sizes().value_lookup
  cpu = GatoConfig.from_dict(registry.get('gato').preset('cpu'))
  assert (cpu.model.model_size, cpu.window.timesteps, cpu.replay.batch_size) == (64, 1, 256)
