"""`--algorithm planning` in the real program, on a physics variant named on the command line:
the actor plans through the model learner's ensemble, its episodes reach the store tagged
with their source and task, the model learner trains on them, the evaluator evaluates the
planner and the run ends with a checkpoint of the model."""

import json

import numpy as np
import pytest

from environments.suite import make_environment
from launch.checkpointing import Checkpointer
from launch.store.episodes import EpisodeStore
from tests.e2e_util import read_counts, run_to_end

pytestmark = pytest.mark.slow

TASK = 'cartpole:swingup@pole_length=0.8'
TINY_PLANNING = [
  *('--algorithm', 'planning', '--task', TASK, '--num_actors', '1'),
  *('--agent', 'model.num_members=2', '--agent', 'model.hidden_sizes=[16]'),
  *('--agent', 'planner.horizon=4', '--agent', 'planner.num_candidates=16'),
  *('--agent', 'planner.iterations=2', '--agent', 'planner.num_elites=4'),
  *('--agent', 'replay.batch_size=32', '--agent', 'replay.min_replay_size=100'),
  # One 1000-step episode; the evaluator's one evaluation is the final one.
  *('--max_actor_steps', '1000', '--eval_every_seconds', '600', '--eval_episodes', '1'),
]


def _replayed(task: str, seed: int, actions: np.ndarray) -> np.ndarray:
  """The observations of `actions` from the first reset of `task`'s environment of `seed`."""
  env = make_environment(task, seed=seed)
  observations = [env.reset().observation]
  observations += [env.step(a).observation for a in actions]
  return np.stack(observations)


def test_planning_actors_store_the_variants_episodes_and_the_model_learns_them(tmp_path):
  run_dir = tmp_path / 'planning'
  run = run_to_end(run_dir, *TINY_PLANNING, timeout=300)
  assert run.returncode == 0, run.text[-5000:]
  assert run.leftover == [], 'node processes outlived the program'
  config = json.loads((run_dir / 'config.json').read_text())
  assert (config['algorithm'], config['task']) == ('planning', TASK)
  assert config['agent']['replay']['n_step'] == 1  # The agent's default under the overrides.

  # The actor's episode, tagged with its source and the variant, acted with the model.
  store = EpisodeStore(run_dir / 'store')
  assert len(store) >= 1
  episode = store.read(store.index()[0].episode_id)
  metadata = episode.metadata
  assert (metadata['source'], metadata['task']) == ('actor_0', TASK)
  # The learner steps of the first and last model it planned with: it refreshed mid-episode.
  first, last = metadata['policy_version']
  assert 0 <= first < last, metadata
  actions = np.asarray(episode.actions)
  assert actions.shape == (1000, 1) and np.all(np.abs(actions) <= 1.0)
  # The program ran the variant's physics: the stored actions replayed in the variant give
  # the stored observations, in the suite's own cartpole they do not.
  observations = np.asarray(episode.observations)
  np.testing.assert_allclose(_replayed(TASK, metadata['seed'], actions), observations, atol=1e-5)
  base = _replayed('cartpole:swingup', metadata['seed'], actions)
  assert np.abs(base - observations).max() > 0.1

  # The model learner trained on those transitions: its normalisation comes from them.
  step, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  state = payload['learner_state']
  assert step == int(state.steps) > 0
  assert read_counts(run_dir)['learner_steps'] > 0  # (Sent at most once a second: behind.)
  assert float(state.moments.count) >= 100
  # Means of samples of the episode (replay grew as it went: not the whole episode's mean).
  low, high = observations.min(0) - 1e-4, observations.max(0) + 1e-4
  assert np.all((low <= state.stats.obs_mean) & (state.stats.obs_mean <= high)), state.stats
  assert np.all(state.stats.obs_std <= high - low), state.stats

  # The evaluator evaluated the planner once, at the end.
  rows = (run_dir / 'logs' / 'evaluator' / 'logs.csv').read_text().strip().splitlines()
  assert len(rows) == 2, rows  # A header and the final evaluation.
  header, values = rows[0].split(','), rows[1].split(',')
  assert np.isfinite(float(values[header.index('mean_return')]))
