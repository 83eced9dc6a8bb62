"""The toy random agent (tests/fixtures/random_agent) meets the agent interface, in one process.

Its one registry line is the environment variable the registry reads for agents outside
agents/: COLLECT_INFER_AGENTS=tests.fixtures.random_agent. The real program runs it in
tests/launch/test_random_agent_e2e.py.
"""

import numpy as np
import pytest
import reverb
from acme import specs

from agents import registry
from agents.builder import Builder, Learner
from agents.common.errors import ConfigError
from agents.replay_pipeline import REPLAY_TABLE
from environments import suite
from launch import experiment
from launch.config import ExperimentConfig

AGENT_MODULE = 'tests.fixtures.random_agent'


@pytest.fixture
def random_agent(monkeypatch):
  monkeypatch.setenv(registry.EXTRA_AGENTS_ENV, AGENT_MODULE)  # The one registry line.
  return registry.get('random')


def test_the_registry_finds_the_agent_through_the_environment(random_agent):
  assert 'random' in registry.names()
  assert random_agent.config_class.__name__ == 'RandomConfig'
  cfg = ExperimentConfig.from_dict({'algorithm': 'random', 'agent': random_agent.preset('tiny')})
  assert cfg.agent.replay.batch_size == 16
  with pytest.raises(ConfigError, match=r"unknown RandomConfig field\(s\) \['num_atoms'\]"):
    ExperimentConfig.from_dict({'algorithm': 'random', 'agent': {'num_atoms': 3}})


def test_a_module_without_an_entry_is_a_clear_error(monkeypatch):
  monkeypatch.setenv(registry.EXTRA_AGENTS_ENV, 'tests.fixtures.no_such_agent')
  with pytest.raises(ConfigError, match=r"agent module 'tests.fixtures.no_such_agent'"):
    registry.get('random')


def test_builder_pieces_run_together_on_real_reverb(random_agent):
  cfg = ExperimentConfig.from_dict({'algorithm': 'random', 'task': 'cartpole:swingup', 'agent': {
      'replay': {'batch_size': 8, 'min_replay_size': 10, 'samples_per_insert': None,
                 'n_step': 2}}})
  builder = experiment.make_builder(cfg)
  assert isinstance(builder, Builder)
  assert builder.make_networks() is None
  env = suite.make_environment(cfg.task, seed=0)
  server = reverb.Server(builder.make_replay_tables(), port=None)
  try:
    address = f'localhost:{server.port}'
    client = reverb.Client(address)
    learner = builder.make_learner(builder.make_dataset_iterator(address, 5_000), seed=0)
    assert isinstance(learner, Learner)
    actor = builder.make_actor(learner, builder.make_adder(client), seed=3,
                               version_name='learner_steps_never_served')
    # The actor's first fetch asks for 'policy' (and a version the learner lacks here).
    with pytest.raises(KeyError, match='serves only "policy"'):
      actor.update(wait=True)
    actor = builder.make_actor(learner, builder.make_adder(client), seed=3)
    actions = []
    timestep = env.reset()
    actor.observe_first(timestep)
    for _ in range(50):
      action = actor.select_action(timestep.observation)
      actions.append(action)
      timestep = env.step(action)
      actor.observe(action, timestep)
    actions = np.array(actions)
    spec = specs.make_environment_spec(env).actions
    assert actions.shape == (50,) + spec.shape and actions.dtype == spec.dtype
    assert np.all(actions >= spec.minimum) and np.all(actions <= spec.maximum)
    assert len(np.unique(actions)) == actions.size  # drawn, not fixed
    # 49 two-step transitions of 50 steps, less those the writer has not confirmed yet.
    assert 10 <= client.server_info()[REPLAY_TABLE].current_size <= 49
    for _ in range(3):
      learner.step()
    assert learner.steps == 3 and int(learner.save().transitions_seen) == 24
    assert learner.get_variables(['policy']) == [{}]
    saved = learner.save()
    learner.step()
    learner.restore(saved)
    assert learner.steps == 3
  finally:
    server.stop()
