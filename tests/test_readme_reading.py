"""README "Reading the data": its Python examples, run as they stand against a real Reverb
server (the program's tables), a real store and a real RLDS export."""

import re

import numpy as np
import reverb

from launch import experiment
from launch.config import ExperimentConfig
from launch.robot.wire import episode_timesteps
from launch.run_dir import RunDir
from launch.store.episodes import EpisodeStore
from launch.store.rlds_export import export_rlds
from tests.e2e_util import ROOT
from tests.fakes import TINY_AGENT, random_episode


def _reading_examples():
  text = (ROOT / 'README.md').read_text()
  section = text.split('## Reading the data', 1)[1].split('\n## ', 1)[0]
  return re.findall(r'```python\n(.*?)```', section, re.S)


def test_readme_reading_examples_run(tmp_path, monkeypatch):
  examples = _reading_examples()
  assert len(examples) == 3
  monkeypatch.chdir(tmp_path)
  agent = dict(TINY_AGENT, replay=dict(TINY_AGENT['replay'], min_replay_size=1))
  cfg = ExperimentConfig.from_dict(dict(run_dir='runs/cp', agent=agent))
  run = RunDir('runs/cp')
  run.create()
  builder = experiment.make_builder(cfg)
  server = reverb.Server(builder.make_replay_tables(), port=None)
  try:
    run.write_addresses({'replay': f'localhost:{server.port}'})
    episodes = [
      random_episode(np.random.default_rng(i), 6, obs_shape=(5,), action_shape=(1,))
      for i in range(2)
    ]
    adder = builder.make_adder(reverb.Client(f'localhost:{server.port}'))
    for episode in episodes:
      first, rest = episode_timesteps(episode)
      adder.add_first(first)
      for action, timestep in rest:
        adder.add(action, timestep)
    with EpisodeStore(run.store).writer('actor_0') as writer:
      for episode in episodes:
        writer.append(episode)
    export_rlds(iter(EpisodeStore(run.store)), tmp_path / 'exports' / 'cp_rlds')

    scope = {}
    exec(examples[0], scope)  # pylint: disable=exec-used
    assert scope['observation'].shape == (5,) and scope['action'].shape == (1,)
    assert np.shape(scope['reward']) == () and scope['next_observation'].shape == (5,)
    exec(examples[1], scope)  # pylint: disable=exec-used
    assert scope['episode'].actions.shape == (6, 1)
    exec(examples[2], scope)  # pylint: disable=exec-used
    assert len(scope['steps']) == 7 and isinstance(scope['metadata'], dict)
  finally:
    server.stop()
