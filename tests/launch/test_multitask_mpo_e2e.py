"""MPO-family agents over two bodies in the real program (`--tasks`): PAC with the Perceiver,
online with half of each batch from the store; each actor acts on its own task through the
placed layout, replay and the store sampler feed the learner placed transitions, the store
keeps each task's own arrays, and every task is evaluated and scored."""

import pytest

from launch.checkpointing import Checkpointer
from tests.e2e_util import log_rows, run_to_end, stored_shapes

pytestmark = pytest.mark.slow

TASK, OTHER = 'cartpole:swingup', 'point_mass:easy'  # 5 observations, 1 action; 4 and 2
TINY_PAC = [
  *('--tasks', f'{TASK},{OTHER}', '--num_actors', '2', '--store_ratio', '0.5'),
  *('--agent', 'network=perceiver', '--agent', 'policy_loss=pac', '--agent', 'num_samples=4'),
  *('--agent', 'perceiver.latent_dim=16', '--agent', 'perceiver.num_latents=4'),
  *('--agent', 'perceiver.num_heads=2', '--agent', 'perceiver.blocks=1'),
  *('--agent', 'replay.batch_size=16', '--agent', 'replay.min_replay_size=100'),
  *('--agent', 'replay.samples_per_insert=2'),
  *('--eval_every_seconds', '600', '--eval_episodes', '1', '--no_eval_gifs'),
]


def test_pac_over_two_bodies_online_with_the_store(tmp_path):
  run_dir = tmp_path / 'pac'
  run = run_to_end(run_dir, *TINY_PAC, '--max_actor_steps', '2200', timeout=240)
  assert run.returncode == 0, run.text[-5000:]
  assert run.leftover == [], 'node processes outlived the program'
  assert 'training on 8/16 of each batch from stored episodes' in run.text, run.text[-3000:]
  assert 'does not fit' not in run.text and 'quarantined' not in run.text
  step, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert step == int(payload['learner_state'].steps) >= 100
  # One policy for both bodies: a token a group (cartpole's 3 and 2 values, point_mass's 2
  # and 2), then the task token (the one-hot of 2 tasks); three action dimensions.
  params = payload['learner_state'].policy_params
  groups = [params[f'policy_encoder/group_{i}']['w'].shape[0] for i in range(5)]
  assert groups == [3, 2, 2, 2, 2] and 'policy_encoder/group_5' not in params
  assert params['gaussian_head/mean']['w'].shape == (16, 3)
  # The store keeps each task's own arrays, recorded by the actor of that task.
  assert stored_shapes(run_dir / 'store') == {('actor_0', TASK): (5, 1), ('actor_1', OTHER): (4, 2)}
  # Every task evaluated (its environment driven by the greedy policy through the layout).
  cartpole = log_rows(run_dir, 'evaluator_cartpole_swingup')
  point_mass = log_rows(run_dir, 'evaluator_point_mass_easy')
  assert len(cartpole) == len(point_mass) >= 1
  assert float(point_mass[-1]['mean_return']) >= 0.0
  # The store is empty until an actor ends an episode: replay fills its share till then (the
  # actors' inserts wait on the learner's samples, so waiting for the store would stall).
  assert 'its share comes from replay until it does' in run.text
  assert 'the store holds episodes: its share of each batch comes from it now' in run.text
  assert 'score' in cartpole[-1] and 'score' in point_mass[-1]
