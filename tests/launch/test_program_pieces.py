"""The program's nodes as plain objects in one process: real Reverb, real physics, real files."""

import json
import threading
import time

import numpy as np
import reverb

from launch import experiment
from launch.checkpointing import Checkpointer
from launch.local.node_logs import NodeLogFollower
from launch.nodes.actor import ActorWorker, _steps_so_far, actor_seed
from launch.nodes.counter import PersistentCounter
from launch.nodes.evaluator import EvaluatorWorker, WindowRates
from launch.nodes.learner import LearnerWorker
from launch.nodes.process import GROUPS
from launch.nodes.replay import newest_checkpoint
from launch.program import make_program
from tests.e2e_util import wait_for
from tests.fakes import TINY_AGENT, tiny_config


def test_counter_persists_and_restores(tmp_path):
  counter = PersistentCounter(str(tmp_path), save_every_seconds=0.05)
  stop = threading.Event()
  thread = threading.Thread(target=counter.run, args=(stop,))
  thread.start()
  counter.increment(actor_steps=7)
  time.sleep(0.3)
  assert json.loads((tmp_path / 'counter.json').read_text())['counts']['actor_steps'] == 7
  counter.increment(actor_steps=3)
  stop.set()
  thread.join(timeout=5)
  # The final save on stop keeps the last increment.
  assert PersistentCounter(str(tmp_path)).get_counts()['actor_steps'] == 10


def test_a_relaunched_actor_does_not_repeat_the_first_launchs_episodes(tmp_path):
  assert actor_seed(0, 0, 0) == 1 and actor_seed(2, 1, 0) == 2002  # fresh runs as before
  counter = PersistentCounter(str(tmp_path))
  assert _steps_so_far(counter) == 0
  counter.increment(actor_steps=5000)
  counter.persist()
  restored = _steps_so_far(PersistentCounter(str(tmp_path)))
  assert restored == 5000
  seeds = {actor_seed(0, i, steps) for i in (0, 1) for steps in (0, restored, restored + 1)}
  assert len(seeds) == 6 and all(0 <= s < 2**31 for s in seeds)
  assert actor_seed(0, 1, restored) == actor_seed(0, 1, restored)  # still reproducible
  # Real physics: the relaunched actor's first episode starts elsewhere.
  cfg = tiny_config(tmp_path)
  first = experiment.make_env(cfg, seed=actor_seed(0, 0, 0)).reset().observation
  again = experiment.make_env(cfg, seed=actor_seed(0, 0, restored)).reset().observation
  assert first.shape == again.shape and not np.array_equal(first, again)


def test_progress_rates_average_over_the_window_not_one_interval():
  rates = WindowRates(window_s=60.0)
  assert rates.update(0.0, {'actor_steps': 0}) == {'actor_steps': 0.0}
  # Episodes of 1000 steps land in bursts: 15 s with nothing, then a whole episode.
  assert rates.update(15.0, {'actor_steps': 0}) == {'actor_steps': 0.0}
  assert rates.update(30.0, {'actor_steps': 1000}) == {'actor_steps': 1000 / 30}
  assert rates.update(45.0, {'actor_steps': 1000}) == {'actor_steps': 1000 / 45}
  assert rates.update(60.0, {'actor_steps': 2000}) == {'actor_steps': 2000 / 60}
  # Past the window the start moves up to the newest sample at least 60 s old.
  assert rates.update(75.0, {'actor_steps': 2000}) == {'actor_steps': 2000 / 60}
  assert rates.update(90.0, {'actor_steps': 3000}) == {'actor_steps': 2000 / 60}


def test_make_program_has_every_group(tmp_path):
  program, addresses = make_program(tiny_config(tmp_path / 'r', num_actors=3))
  assert set(program.groups) == set(GROUPS)
  assert len(program.groups['actor']) == 3
  assert all(len(program.groups[g]) == 1 for g in GROUPS if g != 'actor')
  assert set(addresses) == {'replay', 'learner', 'counter'}


def _work_threads():
  """The daemon threads launch.stopping.run_until_stopped runs nodes' work in."""
  return {t for t in threading.enumerate() if t.name == 'node-work'}


def test_nodes_run_together_until_the_budget(tmp_path):
  # Evaluations are due by learner steps only (the seconds cadence is out of reach). The
  # rate limiter keeps the actor from spending the budget before the learner is well past
  # step 50: 2000 steps need ~960 learner steps at 8 samples per insert and batch 16, a
  # few seconds at the learner's pace. The counter hears from the learner once a second, so
  # the evaluator (looking five times a second) sees a step count between; at 4 samples per
  # insert, with one look a second, CI once saw step 1 and then step 296 with the budget
  # already spent, and no periodic evaluation saved the replay.
  cfg = tiny_config(
    tmp_path / 'run',
    eval_every_seconds=10_000.0,
    eval_every_learner_steps=50,
    progress_every_seconds=0.2,
    agent={**TINY_AGENT, 'replay.samples_per_insert': 8.0},
  )
  run_dir = tmp_path / 'run'
  (run_dir / 'replay').mkdir(parents=True)
  tables = experiment.make_builder(cfg).make_replay_tables()
  server = reverb.Server(
    tables,
    port=None,
    checkpointer=reverb.checkpointers.DefaultCheckpointer(str(run_dir / 'replay')),
  )
  client = reverb.Client(f'localhost:{server.port}')
  counter = PersistentCounter(str(run_dir))
  learner = LearnerWorker(cfg.to_dict(), client, counter)
  actor = ActorWorker(cfg.to_dict(), 0, client, learner, counter)
  evaluator = EvaluatorWorker(cfg.to_dict(), learner, counter, client)
  stop = threading.Event()
  evaluator._stop_program = stop.set  # What lp.stop() does for a real program.
  work_before = _work_threads()
  threads = [
    threading.Thread(target=n.run, args=(stop,), daemon=True)
    for n in (counter, learner, actor, evaluator)
  ]
  for t in threads:
    t.start()
  stop.wait(timeout=240)
  assert stop.is_set(), 'the evaluator never stopped the program at its budget'
  for t in threads:
    t.join(timeout=30)
    assert not t.is_alive(), f'{t} did not stop'
  counts = counter.get_counts()
  assert counts['actor_steps'] >= 2000 and counts['learner_steps'] > 0
  step, payload = Checkpointer(run_dir / 'checkpoints').restore_latest()
  assert step == learner.steps() > 0
  assert 'learner_state' in payload
  assert any(p.is_dir() for p in (run_dir / 'replay').iterdir())
  evaluations = (run_dir / 'logs' / 'evaluator' / 'logs.csv').read_text().strip().splitlines()
  assert len(evaluations) >= 3, evaluations  # header, >= 1 periodic, the final one
  # (Not two checkpoints: once the actors stop at the budget the rate limiter holds the
  # learner, so a periodic evaluation that comes late, at the budget on a busy machine,
  # checkpoints the same learner step as the final one.)
  # The actor closed its adder as it stopped (else collecting it later flushes it against a
  # server that is gone, up to 10 s inside whatever code the collection interrupts).
  assert [adder._writer for adder in actor._adders] == [None]
  server.stop()
  # Work threads abandoned on a parked insert or sample wake when the server goes; they
  # must end at once, not act on (a thread inside JAX at interpreter exit aborts it).
  wait_for(
    lambda: not any(t.is_alive() for t in _work_threads() - work_before),
    10,
    'the abandoned work threads to end',
  )


def test_the_evaluator_spends_at_most_its_share_of_the_run_on_replay_saves(tmp_path):
  """A replay save that took d seconds makes the next checkpoint's wait d / share; the final
  checkpoint leaves the replay to the replay node, which saves it on stop."""
  run_dir = tmp_path / 'run'
  replay_dir = run_dir / 'replay'
  replay_dir.mkdir(parents=True)
  cfg = tiny_config(run_dir, replay_checkpoint_max_share=1e-6)  # ~10 ms -> hours
  server = reverb.Server(
    experiment.make_builder(cfg).make_replay_tables(),
    port=None,
    checkpointer=reverb.checkpointers.DefaultCheckpointer(str(replay_dir)),
  )
  client = reverb.Client(f'localhost:{server.port}')
  counter = PersistentCounter(str(run_dir))
  learner = LearnerWorker(cfg.to_dict(), client, counter)
  try:
    rare = EvaluatorWorker(cfg.to_dict(), learner, counter, client)
    rare.checkpoint()
    first = newest_checkpoint(str(replay_dir))
    assert first is not None
    learner_file = next((run_dir / 'checkpoints').glob('ckpt-*'))
    written = learner_file.stat().st_mtime_ns
    time.sleep(0.05)
    rare.checkpoint()
    assert newest_checkpoint(str(replay_dir)) == first, 'saved again within its share'
    assert next((run_dir / 'checkpoints').glob('ckpt-*')).stat().st_mtime_ns > written
    every = EvaluatorWorker(
      tiny_config(run_dir, replay_checkpoint_max_share=1.0).to_dict(), learner, counter, client
    )
    every.checkpoint()
    second = newest_checkpoint(str(replay_dir))
    assert second not in (None, first)
    time.sleep(1.0)  # Reverb names checkpoints by the time; d / 1.0 has passed.
    every.checkpoint(replay=False)
    assert newest_checkpoint(str(replay_dir)) == second
    every.checkpoint()
    assert newest_checkpoint(str(replay_dir)) not in (None, second)
  finally:
    server.stop()


def test_learner_waiting_on_an_empty_replay_still_stops(tmp_path):
  """With no actors the rate limiter never lets the learner sample: stop must still work."""
  cfg = tiny_config(tmp_path / 'run')
  server = reverb.Server(experiment.make_builder(cfg).make_replay_tables(), port=None)
  client = reverb.Client(f'localhost:{server.port}')
  learner = LearnerWorker(cfg.to_dict(), client, PersistentCounter(str(tmp_path)))
  stop = threading.Event()
  thread = threading.Thread(target=learner.run, args=(stop,), daemon=True)
  thread.start()
  time.sleep(2)
  start = time.time()
  stop.set()
  thread.join(timeout=10)
  assert not thread.is_alive() and time.time() - start < 10
  assert Checkpointer(tmp_path / 'run' / 'checkpoints').all_steps() == [0]
  server.stop()


def test_a_periodic_save_stuck_behind_a_parked_update_does_not_cost_the_final_checkpoint(
  tmp_path,
):
  """A save waiting on an update that never ends (a sample from a vanished server) gives up
  when the learner stops, so the final checkpoint is written within Launchpad's 10 s."""
  cfg = tiny_config(tmp_path / 'run')
  server = reverb.Server(experiment.make_builder(cfg).make_replay_tables(), port=None)
  client = reverb.Client(f'localhost:{server.port}')
  learner = LearnerWorker(cfg.to_dict(), client, PersistentCounter(str(tmp_path)))
  learner._lock.acquire()  # The update in progress, parked for good.
  stop = threading.Event()
  run = threading.Thread(target=learner.run, args=(stop,), daemon=True)
  run.start()
  saved = []

  def periodic_save():  # What the evaluator asks for over Courier.
    try:
      saved.append(learner.save_checkpoint({'actor_steps': 5}))
    except RuntimeError as e:
      saved.append(e)

  save = threading.Thread(target=periodic_save, daemon=True)
  save.start()
  time.sleep(1.0)
  assert save.is_alive(), 'the periodic save did not wait for the update'
  start = time.time()
  stop.set()
  run.join(timeout=15)
  took = time.time() - start
  try:
    assert not run.is_alive() and took < 8, f'stopping took {took:.1f} s'
    save.join(timeout=5)
    assert saved and isinstance(saved[0], RuntimeError) and 'stopping' in str(saved[0])
    step, payload = Checkpointer(tmp_path / 'run' / 'checkpoints').restore_latest()
    assert step == 0 and payload['actor_steps'] == 5  # the final save, with the caller's counts
  finally:
    learner._lock.release()
    server.stop()


def test_node_log_follower_echoes_new_lines_and_drops_noise(tmp_path):
  import io

  out = io.StringIO()
  (tmp_path / 'learner').mkdir()
  log = tmp_path / 'learner' / '0'
  log.write_text(
    '[learner] hello\nGym has been unmaintained since 2022\n'
    'I1125 12:37:26.704574 1402 node.py:62] Reverb client connecting\npartial'
  )
  follower = NodeLogFollower(tmp_path, out=out)
  follower.poll()
  assert out.getvalue() == '[learner/0] [learner] hello\n'
  with open(log, 'a') as f:
    f.write(' line\n')
  follower.poll()
  assert out.getvalue().splitlines()[-1] == '[learner/0] partial line'


def _table_size(client) -> int:
  return client.server_info()['priority_table'].current_size


def test_an_actor_acts_no_more_once_the_step_budget_is_spent(tmp_path, caplog):
  """Past the budget it idles until the program stops (the evaluator's final evaluation
  runs meanwhile), rather than playing episodes nobody asked for."""
  cfg = tiny_config(tmp_path / 'run', max_actor_steps=500)  # cartpole: 1000-step episodes
  server = reverb.Server(experiment.make_builder(cfg).make_replay_tables(), port=None)
  client = reverb.Client(f'localhost:{server.port}')
  counter = PersistentCounter(str(tmp_path))
  actor = ActorWorker(
    cfg.to_dict(), 0, client, LearnerWorker(cfg.to_dict(), client, counter), counter
  )
  stop = threading.Event()
  thread = threading.Thread(target=actor.run, args=(stop,), daemon=True)
  thread.start()
  try:
    wait_for(lambda: counter.get_counts().get('actor_steps', 0) >= 1000, 120, 'one episode')
    time.sleep(1.0)  # the writer's last items
    idle = _table_size(client)
    time.sleep(2.0)  # acting on, the actor would insert hundreds of items meanwhile
    assert _table_size(client) == idle
    assert counter.get_counts()['actor_steps'] == 1000
    assert thread.is_alive()  # idle, not ended: the program ends it
    assert 'the budget of 500 env steps is spent (1000): no more episodes' in caplog.text
  finally:
    stop.set()
    thread.join(timeout=30)
    del actor
    server.stop()
  assert not thread.is_alive()


def test_actor_stops_within_a_step_of_the_stop(tmp_path):
  """A stop in the middle of an episode ends it there: the rest is not played out."""
  cfg = tiny_config(tmp_path / 'run')  # cartpole: 1000-step episodes, no rate limit
  server = reverb.Server(experiment.make_builder(cfg).make_replay_tables(), port=None)
  client = reverb.Client(f'localhost:{server.port}')
  counter = PersistentCounter(str(tmp_path))
  learner = LearnerWorker(cfg.to_dict(), client, counter)
  actor = ActorWorker(cfg.to_dict(), 0, client, learner, counter)
  stop = threading.Event()
  thread = threading.Thread(target=actor.run, args=(stop,), daemon=True)
  thread.start()
  deadline = time.time() + 120
  while _table_size(client) < 20 and time.time() < deadline:
    time.sleep(0.01)
  assert _table_size(client) >= 20, 'the actor never inserted'
  stop.set()
  thread.join(timeout=30)
  assert not thread.is_alive()
  time.sleep(0.5)  # the writer's last items
  # Played out to its end, the episode would have left ~1000 items.
  assert _table_size(client) < 500, _table_size(client)
  counts = counter.get_counts()
  assert counts.get('actor_episodes', 0) == 0
  # The cut episode's steps are counted all the same (acme's loop counts whole episodes).
  assert 20 <= counts.get('actor_steps', 0) < 500, counts
  del actor  # its writer flushes now, not after the server has gone
  server.stop()
