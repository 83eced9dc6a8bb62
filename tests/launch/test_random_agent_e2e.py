"""The toy random agent runs in the real program: a new agent is one folder plus one line.

The folder is tests/fixtures/random_agent; the line registers it for every process of the
program through the environment: COLLECT_INFER_AGENTS=tests.fixtures.random_agent.
"""

import json

import pytest

from agents import registry
from launch.checkpointing import Checkpointer
from launch.store.episodes import EpisodeStore
from tests.e2e_util import (kill_session, leftover_processes, output, read_counts, start_cli,
                            wait_exit)

pytestmark = pytest.mark.slow


def test_random_agent_collects_stores_and_evaluates(tmp_path, monkeypatch):
  run_dir = tmp_path / 'random'
  unregistered = start_cli(run_dir, '--algorithm', 'random')
  assert wait_exit(unregistered, timeout=120) == 2  # argparse: not a registered algorithm
  assert "invalid choice: 'random'" in output(unregistered)

  monkeypatch.setenv(registry.EXTRA_AGENTS_ENV, 'tests.fixtures.random_agent')
  proc = start_cli(run_dir, '--algorithm', 'random', '--preset', 'tiny',
                   '--max_actor_steps', '2000', '--eval_every_seconds', '5',
                   '--eval_episodes', '1')
  try:
    rc = wait_exit(proc, timeout=300)
    text = output(proc)
    assert rc == 0, text[-5000:]
    assert leftover_processes(proc.pid) == [], 'node processes outlived the program'
  finally:
    kill_session(proc)
  config = json.loads((run_dir / 'config.json').read_text())
  assert config['algorithm'] == 'random' and config['agent']['replay']['batch_size'] == 16
  counts = read_counts(run_dir)
  assert counts['actor_steps'] >= 2000 and counts['learner_steps'] > 0, counts
  assert len(EpisodeStore(run_dir / 'store')) >= 1, 'the actors stored no complete episodes'
  evaluations = (run_dir / 'logs' / 'evaluator' / 'logs.csv').read_text().strip().splitlines()
  assert len(evaluations) >= 2, evaluations  # a header and at least one evaluation
  step, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert step == int(payload['learner_state'].steps) > 0
  assert int(payload['learner_state'].transitions_seen) == 16 * step
