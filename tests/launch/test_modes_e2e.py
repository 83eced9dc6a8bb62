"""The training modes end to end, as a user chains them: online -> offline -> offline-to-online,
and iterated."""

import re

import jax
import optax
import pytest

from launch.checkpointing import Checkpointer
from launch.store.episodes import EpisodeStore
from tests.e2e_util import (
  kill_session,
  leftover_processes,
  output,
  read_counts,
  start_cli,
  wait_exit,
)
from tests.fakes import TINY

pytestmark = pytest.mark.slow


def _run(run_dir, *args, timeout=300):
  proc = start_cli(run_dir, *args)
  try:
    rc = wait_exit(proc, timeout=timeout)
    text = output(proc)
    assert rc == 0, text[-5000:]
    assert leftover_processes(proc.pid) == [], 'node processes outlived the program'
    return text
  finally:
    kill_session(proc)


def _eval_rows(run_dir):
  return (run_dir / 'logs' / 'evaluator' / 'logs.csv').read_text().strip().count('\n')


def test_online_then_offline_then_offline_to_online(tmp_path, budget_run):
  # The online run is the session's shared budget run (2000 actor steps); only read here.
  online = budget_run.run_dir
  assert budget_run.returncode == 0, budget_run.text[-5000:]
  assert budget_run.leftover == [], 'node processes outlived the program'
  store = EpisodeStore(online / 'store')
  assert len(store) >= 1, 'the actors stored no complete episodes'
  sources = {info.metadata['source'] for info in store.index()}
  assert sources == {'actor_0', 'actor_1'}, sources

  offline = tmp_path / 'offline'
  text = _run(
    offline,
    '--mode',
    'offline',
    '--datasets',
    str(online / 'store'),
    '--max_learner_steps',
    '150',
    *TINY,
  )
  assert 'no actors' in text
  assert 'training on 32/32 of each batch from stored episodes' in text, text[-3000:]
  step, _ = Checkpointer(offline / 'checkpoints').restore_latest()
  assert step >= 150
  assert read_counts(offline).get('actor_steps', 0) == 0
  assert _eval_rows(offline) >= 1
  assert not (offline / 'store').exists() or len(EpisodeStore(offline / 'store')) == 0

  # PMPO from the stored episodes' labels: the best episode(s) successful, the rest failed.
  returns = [info.episode_return for info in store.index()]
  best = max(returns)
  pmpo = tmp_path / 'pmpo'
  text = _run(
    pmpo,
    '--mode',
    'offline',
    '--datasets',
    str(online / 'store'),
    '--max_learner_steps',
    '60',
    '--agent',
    'policy_loss="pmpo"',
    '--agent',
    'pmpo.source="labels"',
    '--agent',
    f'pmpo.success_return={best}',
    *TINY,
  )
  wins = sum(r >= best for r in returns)
  assert (
    f"PMPO from episode labels (metadata 'success', else return >= {best:g}): {wins} of "
    f'{len(returns)} stored episodes successful'
  ) in text, text[-3000:]
  step, _ = Checkpointer(pmpo / 'checkpoints').restore_latest()
  assert step >= 60
  learner_log = (pmpo / 'logs' / 'learner' / 'logs.csv').read_text()
  assert 'pmpo_success_fraction' in learner_log.splitlines()[0]

  o2o = tmp_path / 'o2o'
  text = _run(
    o2o,
    '--mode',
    'offline_to_online',
    '--datasets',
    str(online / 'store'),
    '--init_checkpoint',
    str(offline),
    '--store_ratio',
    '0.5',
    '--max_actor_steps',
    '1200',
    '--agent',
    'lr_decay.steps=100000',  # The offline run had no course: this run's starts at update 0.
    *TINY,
  )
  assert re.search(r'initialised from .*offline \(trained \d+ steps there\)', text), text[-3000:]
  step, payload = Checkpointer(o2o / 'checkpoints').restore_latest()
  nodes = jax.tree_util.tree_leaves(
    payload['learner_state'].policy_opt_state,
    is_leaf=lambda n: isinstance(n, optax.ScaleByScheduleState),
  )
  courses = [int(n.count) for n in nodes if isinstance(n, optax.ScaleByScheduleState)]
  assert courses == [step], courses  # Counted from this run's first update, not the offline's.
  assert 'training on 16/32 of each batch' in text
  counts = read_counts(o2o)
  assert counts['actor_steps'] >= 1200 and counts['learner_steps'] > 0, counts
  assert len(EpisodeStore(o2o / 'store')) >= 1


# Iterated collect-and-infer runs end to end in tests/launch/test_iterated_resume_e2e.py.
