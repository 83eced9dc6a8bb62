"""Delivery from a robot's outbox to the program under faults, in one process: a real learner,
the real gateway node, real Reverb servers, real files (and a real full disk where this may
mount one).

Each episode reaches the program's store exactly once, and the gateway inserts it into
replay once, after acknowledging it (retrying, from a bounded queue, while the replay is
down); one episode's trouble does not hold up the others; delivered episodes leave the
robot's disk; a full disk costs the new episode, never the robot.
"""

import contextlib
import errno
import logging
import os
import pathlib
import subprocess
import threading
import time
import types

import portpicker
import pytest
import reverb
from acme.adders import reverb as reverb_adders

from agents.replay_pipeline import EXTERNAL_TABLE
from environments.robot import RobotEnvironment
from environments.simulated_robot import SimulatedRobot
from launch.robot.gateway import ReplayInserter
from launch.robot.link import ProgramLink
from launch.robot.outbox import REJECTED, EpisodeOutbox, OutboxFull
from launch.robot.sender import Sender
from launch.robot.wire import EPISODE_KEY
from launch.store.episodes import EpisodeStore
from tests.launch.robot.test_attach import (
  _episode,
  _robot_loop,
  _start_gateway,
  _start_program,
  _stop_gateway,
  _stop_program,
  _stored,
  _transitions,
)


@pytest.fixture(name='program', scope='module')
def _program(tmp_path_factory):
  program = _start_program(tmp_path_factory.mktemp('delivery') / 'run')
  yield program
  _stop_program(program)


def _sender(program, outbox, name, gateway=None):
  link = ProgramLink(program.token, gateway=gateway or program.gateway_address, rpc_timeout_s=5.0)
  return Sender(outbox, link, name, max_backoff_s=1.0, initial_backoff_s=0.1)


def _wait(condition, timeout_s: float, what: str) -> None:
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline, f'timed out waiting for {what}'
    time.sleep(0.05)


def _stop(sender) -> None:
  sender.halt()
  sender.join(timeout=10)


# ----------------------------------------------------------------------------
# Episodes go independently; the store path does not wait on the replay path.


def test_an_unreadable_episode_is_set_aside_and_later_ones_still_go(program, tmp_path):
  spec = program.builder.spec
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'bad1')
  ids = [outbox.append(_episode(spec, 6, seed=i)) for i in range(3)]
  assert outbox.pending() == ids  # Taken in whole: the damage comes afterwards.
  # The disk damages the first episode's record (bit rot): it reads back corrupt, every time.
  [segment] = [p for p in (tmp_path / 'outbox').rglob('*.seg')]
  info = EpisodeStore(segment.parent).index()[0]
  with open(segment, 'r+b') as f:
    f.seek(info.offset + info.size - 8)
    f.write(b'\xff' * 8)
  sender = _sender(program, outbox, 'bad1')
  sender.start()
  try:
    assert sender.flush(30), sender.last_error
  finally:
    _stop(sender)
  assert [i.metadata[EPISODE_KEY] for i in _stored(program, 'bad1')] == [
    outbox.key(i) for i in ids[1:]
  ]
  assert outbox.counts()['rejected'] == 1 and outbox.pending() == []
  outbox.close()
  # Set aside and pruned with the others; the rejections file says why, for good.
  assert list((tmp_path / 'outbox').rglob('*.seg')) == []
  [line] = (tmp_path / 'outbox' / 'bad1.rejected').read_text().splitlines()
  assert line.split(' ', 1)[1] == f'{ids[0]} unreadable in the outbox (record checksum mismatch)'


def _table(address: str) -> int:
  return int(reverb.Client(address).server_info(timeout=10)[EXTERNAL_TABLE].current_size)


def test_the_gateway_stores_while_the_replay_is_down_and_inserts_once_it_is_back(program, tmp_path):
  replay = [f'localhost:{portpicker.pick_unused_port()}']  # Nothing listens there yet.
  gateway = _start_gateway(
    program.cfg,
    program.learner,
    types.SimpleNamespace(resolve=lambda: replay[0]),
    replay_timeout_s=1.0,
  )
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'down1')
  lengths = [5, 6, 7]
  for i, n in enumerate(lengths):
    outbox.append(_episode(program.builder.spec, n, seed=i))
  sender = _sender(program, outbox, 'down1', gateway=gateway.address)
  before = _table(program.replay_address)
  sender.start()
  try:
    # Stored and acknowledged: the robot's outbox empties while no insert can succeed.
    assert sender.flush(30), sender.last_error
    assert len(_stored(program, 'down1')) == 3 and outbox.pending() == []
    inserter = gateway.worker.inserter
    _wait(lambda: inserter.failures >= 1, 30, 'a failed insert')
    assert not inserter.flush(0.1) and _table(program.replay_address) == before
    replay[0] = program.replay_address  # The replay is back.
    assert inserter.flush(60)
    n_step = program.cfg.agent.replay.n_step
    assert _table(program.replay_address) - before == sum(_transitions(n, n_step) for n in lengths)
    assert inserter.inserted == 3 and inserter.dropped == 0
  finally:
    _stop(sender)
    _stop_gateway(gateway)
    outbox.close()


def test_the_replay_queue_is_bounded_and_says_what_it_drops(program, caplog):
  dead = f'localhost:{portpicker.pick_unused_port()}'
  inserter = ReplayInserter(
    lambda: dead, program.builder.make_external_adder, max_episodes=2, timeout_s=1.0
  )
  try:
    episodes = [_episode(program.builder.spec, 5, seed=i) for i in range(3)]
    with caplog.at_level(logging.WARNING, logger='collect_infer.gateway'):
      assert [inserter.put(f'arm/k{i}', e) for i, e in enumerate(episodes)] == [True, True, False]
    assert inserter.dropped == 1
    assert any(
      'episode arm/k2 is stored but not inserted (1 dropped so far)' in r.getMessage()
      for r in caplog.records
    )
  finally:
    inserter.close(timeout_s=5)


def _blocking_replay(program):
  """A replay server whose external table takes a few items, then holds inserts until
  something samples (a rate limiter): an insert that hangs."""
  signature = reverb_adders.NStepTransitionAdder.signature(program.builder.spec)
  table = reverb.Table(
    name=EXTERNAL_TABLE,
    sampler=reverb.selectors.Uniform(),
    remover=reverb.selectors.Fifo(),
    max_size=100_000,
    rate_limiter=reverb.rate_limiters.SampleToInsertRatio(1.0, 1, 3.0),
    signature=signature,
  )
  return reverb.Server([table], port=None)


def test_a_hung_replay_insert_does_not_hold_the_store_and_is_never_doubled(program, tmp_path):
  server = _blocking_replay(program)
  address = f'localhost:{server.port}'
  gateway = _start_gateway(program.cfg, program.learner, address)
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'hang1')
  lengths = [10, 8]
  for n in lengths:
    outbox.append(_episode(program.builder.spec, n, seed=n))
  sender = _sender(program, outbox, 'hang1', gateway=gateway.address)
  sender.start()
  client = reverb.Client(address)
  stop = threading.Event()
  try:
    # The first insert hangs; the robot's episodes are stored and acknowledged anyway.
    assert sender.flush(30), sender.last_error
    assert len(_stored(program, 'hang1')) == 2 and outbox.pending() == []
    n_step = program.cfg.agent.replay.n_step
    assert _table(address) < _transitions(10, n_step)
    assert not gateway.worker.inserter.flush(1.0)

    # Something samples: the held insert finishes, then the second episode's.
    def drain():
      while not stop.is_set():
        list(client.sample(EXTERNAL_TABLE, num_samples=1, emit_timesteps=False))

    threading.Thread(target=drain, daemon=True).start()
    assert gateway.worker.inserter.flush(60)
    assert _table(address) == sum(_transitions(n, n_step) for n in lengths)  # Each item once.
    assert gateway.worker.inserter.inserted == 2 and gateway.worker.inserter.failures == 0
  finally:
    stop.set()
    _stop(sender)
    _stop_gateway(gateway)
    outbox.close()
    server.stop()


# ----------------------------------------------------------------------------
# The outbox on the robot's disk.


def _delivered_all(outbox, ids):
  for episode_id in ids:
    outbox.mark(episode_id, 'store')


def test_delivered_episodes_leave_the_disk_and_ids_are_never_reused(program, tmp_path):
  spec = program.builder.spec
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'arm')
  ids = [outbox.append(_episode(spec, 50, seed=i)) for i in range(3)]
  full = outbox.bytes_used()
  assert full > 3 * 50 * 5 * 4
  _delivered_all(outbox, ids[:2])
  outbox.prune()
  assert outbox.bytes_used() == full  # The third one holds its generation.
  outbox.mark(ids[2], 'store')
  outbox.mark(ids[2], REJECTED, 'a reason')
  outbox.prune()
  assert outbox.bytes_used() == 0 and outbox.pending() == []
  assert list((tmp_path / 'outbox').rglob('*.seg')) == []
  assert (tmp_path / 'outbox' / 'arm.delivered').read_text() == ''  # Compacted.
  later = outbox.append(_episode(spec, 5, seed=9))
  outbox.close()
  reopened = EpisodeOutbox(tmp_path / 'outbox', 'arm')
  assert reopened.pending() == [later]
  again = reopened.append(_episode(spec, 5, seed=10))
  assert len({*ids, later, again}) == 5  # Never an id (and so a store key) twice.
  reopened.close()


def test_outbox_of_the_earlier_layout_is_taken_over(program, tmp_path):
  spec = program.builder.spec
  with EpisodeStore(tmp_path).writer('old') as writer:
    old_ids = [writer.append(_episode(spec, 4, seed=i)) for i in range(2)]
  (tmp_path / 'old.delivered').write_text(f'store {old_ids[0]}\nreplay {old_ids[0]}\n')
  (tmp_path / 'old.token').write_text('abc\n')
  outbox = EpisodeOutbox(tmp_path, 'old')
  assert outbox.pending() == [f'000000/{old_ids[1]}']
  assert outbox.token == 'abc'
  assert outbox.read(f'000000/{old_ids[1]}').length == 4
  new = outbox.append(_episode(spec, 4, seed=5))
  assert new.startswith('000001/')
  outbox.close()


def test_outbox_cap_keeps_what_it_holds_and_refuses_new_episodes(program, tmp_path):
  spec = program.builder.spec
  outbox = EpisodeOutbox(tmp_path / 'outbox', 'cap', max_bytes=20_000)
  ids = []
  with pytest.raises(OutboxFull, match='cap 0.0 MiB'):
    for seed in range(100):
      ids.append(outbox.append(_episode(spec, 100, seed=seed)))
  assert 1 <= len(ids) < 100 and outbox.pending() == ids
  assert all(outbox.read(i).length == 100 for i in ids)
  _delivered_all(outbox, ids)
  outbox.prune()
  outbox.append(_episode(spec, 100, seed=0))  # Room again once delivered.
  outbox.close()


@contextlib.contextmanager
def _small_disk(path: pathlib.Path):
  """A 1 MiB tmpfs at `path` (needs root), else skip."""
  path.mkdir()
  proc = subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', str(path)], capture_output=True
  )
  if proc.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs here ({proc.stderr.decode().strip()})')
  try:
    yield path
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


def _fill(path: pathlib.Path) -> pathlib.Path:
  """Takes every free byte of the file system at `path`."""
  filler = path / 'filler'
  fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
  try:
    block = b'\0' * 4096
    while True:
      try:
        os.write(fd, block)
      except OSError as e:
        assert e.errno == errno.ENOSPC
        if len(block) == 1:
          break
        block = block[: len(block) // 2]
  finally:
    os.close(fd)
  return filler


def test_a_full_disk_costs_the_new_episode_not_the_robot(program, tmp_path, capsys):
  with _small_disk(tmp_path / 'disk') as disk:
    env = RobotEnvironment(
      # Episodes of 150 steps: a record is more than a page, the slack the disk may have left.
      SimulatedRobot('cartpole:swingup', control_hz=100.0),
      control_hz=100.0,
      max_episode_steps=150,
    )
    robot = _robot_loop(program, disk, env, 'full1')
    try:
      stop = threading.Event()
      robot.loop.run_episode(stop)
      [first] = robot.outbox.pending()
      filler = _fill(disk)
      robot.loop.run_episode(stop)  # No room for it: dropped, said so, the loop goes on.
      assert robot.loop.counts.dropped_outbox == 1 and robot.loop.counts.buffered == 1
      assert robot.outbox.pending() == [first] and robot.outbox.read(first).length == 150
      out = capsys.readouterr().out
      assert (
        '[attach] full1: outbox full (No space left on device): episode dropped (1 so far); '
        'the robot keeps running, the buffered episodes are kept and still go out'
      ) in out
      commands = env.robot.sent_commands()
      assert commands and commands[-1].action.tolist() == [0.0]  # Parked with the safe action.
      filler.unlink()  # Room again: the next episode is buffered, the first is still there.
      robot.loop.run_episode(stop)
      assert robot.loop.counts.buffered == 2 and robot.outbox.pending()[0] == first
      robot.sender.start()
      assert robot.sender.flush(30), robot.sender.last_error
      assert len(_stored(program, 'full1')) == 2
      assert robot.outbox.bytes_used() == 0
    finally:
      robot.sender.halt()
      env.close()
      robot.outbox.close()
