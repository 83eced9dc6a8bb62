"""`--algorithm gato` in the real program: online, its actors' episodes stored and trained on
as windows; then a relaunch offline on that store, resuming the learner's checkpoint."""

import re

import pytest

from launch.checkpointing import Checkpointer
from launch.store.episodes import EpisodeStore
from tests.e2e_util import read_counts, run_to_end

pytestmark = pytest.mark.slow

TASK = 'cartpole:swingup'
TINY_GATO = [
  *('--algorithm', 'gato', '--task', TASK, '--num_actors', '1'),
  *('--agent', 'model.model_size=32', '--agent', 'model.num_layers=1'),
  *('--agent', 'model.context=64', '--agent', 'replay.batch_size=8'),
  *('--eval_every_seconds', '30', '--eval_episodes', '1'),
]


def _evaluations(run_dir) -> int:
  return (run_dir / 'logs' / 'evaluator' / 'logs.csv').read_text().strip().count('\n')


def test_gato_trains_on_stored_windows_online_then_resumes_offline(tmp_path):
  run_dir = tmp_path / 'gato'
  # Online: the learner waits for the first stored episode, then trains 10 steps on windows.
  online = run_to_end(
    run_dir, *TINY_GATO, '--max_learner_steps', '10', '--max_actor_steps', '100000', timeout=240
  )
  assert online.returncode == 0, online.text[-5000:]
  assert online.leftover == [], 'node processes outlived the program'
  assert 'training on windows of the stored episodes of task cartpole:swingup' in online.text
  step, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert step == int(payload['learner_state'].steps) >= 10
  assert _evaluations(run_dir) >= 1
  store = EpisodeStore(run_dir / 'store')
  assert len(store) >= 1
  metadata = store.read(store.index()[0].episode_id).metadata
  assert (metadata['source'], metadata['task']) == ('actor_0', TASK)

  # Relaunched offline on the same store: it resumes at the checkpoint and trains on.
  offline = run_to_end(
    run_dir, *TINY_GATO, '--mode', 'offline', '--max_learner_steps', '20', timeout=240
  )
  assert offline.returncode == 0, offline.text[-5000:]
  resumed = re.search(r'resumed from checkpoint at learner step (\d+)', offline.text)
  assert resumed and int(resumed.group(1)) == step, offline.text[-5000:]
  final, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert final == int(payload['learner_state'].steps) >= 20
  assert read_counts(run_dir)['learner_steps'] >= 20
  assert _evaluations(run_dir) >= 2
