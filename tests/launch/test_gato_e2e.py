"""`--algorithm gato` in the real program over two bodies (`--tasks`): online, its actors'
episodes stored with their tasks and trained on as windows, every task evaluated and scored;
then a relaunch offline on that store, resuming the learner's checkpoint."""

import re

import pytest

from environments.references import references
from launch.checkpointing import Checkpointer
from tests.e2e_util import log_rows, read_counts, run_to_end, stored_shapes

pytestmark = pytest.mark.slow

TASK, OTHER = 'cartpole:swingup', 'point_mass:easy'  # 5 observations, 1 action; 4 and 2
TINY_GATO = [
  *('--algorithm', 'gato', '--tasks', f'{TASK},{OTHER}', '--num_actors', '2'),
  *('--agent', 'model.model_size=32', '--agent', 'model.num_layers=1'),
  *('--agent', 'model.context=64', '--agent', 'replay.batch_size=8'),
  *('--eval_every_seconds', '600', '--eval_episodes', '1'),  # the final evaluations only
]


def _evaluations(run_dir, label='evaluator') -> int:
  return (run_dir / 'logs' / label / 'logs.csv').read_text().strip().count('\n')


def test_gato_trains_on_stored_windows_online_then_resumes_offline(tmp_path):
  run_dir = tmp_path / 'gato'
  # Online: actor 0 acts on cartpole, actor 1 on point_mass (round robin); the learner
  # waits for the first stored episode, then trains on windows of both bodies.
  online = run_to_end(run_dir, *TINY_GATO, '--max_actor_steps', '3000', timeout=240)
  assert online.returncode == 0, online.text[-5000:]
  assert online.leftover == [], 'node processes outlived the program'
  assert f'training on windows of the stored episodes of tasks {TASK}, {OTHER}' in online.text
  step, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert step == int(payload['learner_state'].steps) >= 1
  assert stored_shapes(run_dir / 'store') == {('actor_0', TASK): (5, 1), ('actor_1', OTHER): (4, 2)}
  # Every task evaluated: its own rows, each scored against the reference file's expert
  # (a task without one gets no score: tests/launch/test_tasks.py).
  assert _evaluations(run_dir) >= 1
  cartpole = log_rows(run_dir, 'evaluator_cartpole_swingup')
  point_mass = log_rows(run_dir, 'evaluator_point_mass_easy')
  assert len(cartpole) == len(point_mass) == _evaluations(run_dir)
  ref = references()[OTHER]
  by_hand = 100 * (float(point_mass[-1]['mean_return']) - ref.random) / (ref.expert - ref.random)
  assert float(point_mass[-1]['score']) == pytest.approx(by_hand, abs=1e-3)
  mean_score = (float(cartpole[-1]['score']) + by_hand) / 2
  assert float(log_rows(run_dir, 'evaluator')[-1]['mean_score']) == pytest.approx(
    mean_score, abs=1e-3
  )
  line = rf'{OTHER}: mean return [\d.]+, score -?[\d.]+\n'
  assert re.search(line, online.text), online.text[-5000:]

  # Relaunched offline on the same store: it resumes at the checkpoint and trains on.
  offline = run_to_end(
    run_dir, *TINY_GATO, '--mode', 'offline', '--max_learner_steps', str(step + 10), timeout=240
  )
  assert offline.returncode == 0, offline.text[-5000:]
  # The evaluator prompts each task with its best stored episode, as Gato is evaluated (the
  # online run's store was empty when it started: its own episodes prompted it there).
  assert f'no stored episode of {TASK} to prompt with' in online.text
  for task in (TASK, OTHER):
    assert re.search(
      rf'prompting {task} with a stored episode of return [\d.]+ \(actor_\d\)', offline.text
    ), offline.text[-5000:]
  resumed = re.search(r'resumed from checkpoint at learner step (\d+)', offline.text)
  assert resumed and int(resumed.group(1)) == step, offline.text[-5000:]
  final, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert final == int(payload['learner_state'].steps) >= step + 10
  assert read_counts(run_dir)['learner_steps'] >= step + 10
  assert _evaluations(run_dir) >= 2
  assert _evaluations(run_dir, 'evaluator_point_mass_easy') == _evaluations(run_dir)
