"""Tests for launch.checkpointing, on real files."""

import fcntl
import hashlib
import io
import json
import logging
import os
import pathlib
import pickle
import subprocess
import sys
import threading
import time
import zipfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from acme import types

from agents.common.errors import ConfigError, RunDirError
from launch.checkpointing import STALE_TMP_SECONDS, Checkpointer
from tests.fakes import TINY_AGENT

LOGGER = 'collect_infer.checkpointing'


# Defined at module level on purpose: checkpoints store NamedTuples by the name of
# their importable class, so a class local to a test function could not be
# restored. Real learner states must likewise use importable classes.
class OptState(NamedTuple):
  mu: object
  nu: object
  count: int


def _state(scale: float = 1.0):
  return {
    'params': {
      'policy': {'w': jnp.ones((3, 2)) * scale, 'b': jnp.zeros((2,))},
      'critic': (np.arange(4, dtype=np.float32) * scale, jnp.array(7, jnp.int32)),
    },
    'opt': OptState(mu=jnp.full((2,), scale), nu=np.zeros(2), count=5),
    'counters': {'learner_steps': 1234, 'actor_episodes': 56, 'elapsed_s': 12.5},
    'rng': jnp.array([1, 2], dtype=jnp.uint32),
  }


def test_round_trip_nested_pytree(tmp_path):
  ckpt = Checkpointer(tmp_path / 'ckpts')
  assert ckpt.restore_latest() is None  # directory doesn't exist yet
  path = ckpt.save(_state(2.0), step=10)
  assert path.name == 'ckpt-000000000010.ckpt'

  step, restored = ckpt.restore_latest()
  assert step == 10
  # The NamedTuple comes back as the same class, not a plain tuple.
  assert type(restored['opt']) is OptState
  assert restored['opt'].count == 5
  np.testing.assert_array_equal(restored['opt'].mu, [2.0, 2.0])
  # jax arrays are stored as numpy arrays, dtypes preserved.
  w = restored['params']['policy']['w']
  assert type(w) is np.ndarray
  np.testing.assert_array_equal(w, np.full((3, 2), 2.0))
  critic = restored['params']['critic']
  assert isinstance(critic, tuple)
  assert critic[1].dtype == np.int32 and int(critic[1]) == 7
  assert restored['rng'].dtype == np.uint32
  # Plain Python numbers keep their types.
  assert restored['counters'] == {'learner_steps': 1234, 'actor_episodes': 56, 'elapsed_s': 12.5}
  assert type(restored['counters']['learner_steps']) is int
  np.testing.assert_array_equal(ckpt.restore(10)['params']['critic'][0], np.arange(4) * 2.0)


def test_keep_last_k(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=3)
  for step in range(1, 7):
    ckpt.save({'step': step}, step=step * 100)
  assert ckpt.all_steps() == [400, 500, 600]
  step, state = ckpt.restore_latest()
  assert (step, state) == (600, {'step': 6})
  # Saving the same step again overwrites it.
  ckpt.save({'step': 'again'}, step=600)
  assert ckpt.all_steps() == [400, 500, 600]
  assert ckpt.restore(600) == {'step': 'again'}
  with pytest.raises(RunDirError, match='No checkpoint for step 100'):
    ckpt.restore(100)


def test_saving_an_older_step_keeps_the_new_file(tmp_path):
  ckpt = Checkpointer(tmp_path, keep=2)
  ckpt.save('a', step=10)
  ckpt.save('b', step=20)
  ckpt.save('c', step=5)  # e.g. resumed from an older checkpoint
  assert ckpt.all_steps() == [5, 20]


def test_truncated_newest_falls_back_with_warning(tmp_path, caplog):
  ckpt = Checkpointer(tmp_path)
  ckpt.save(_state(1.0), step=1)
  newest = ckpt.save(_state(3.0), step=2)
  data = newest.read_bytes()
  newest.write_bytes(data[: len(data) // 2])  # simulate a half-written file

  with caplog.at_level(logging.WARNING, logger=LOGGER):
    step, state = ckpt.restore_latest()
  assert step == 1
  np.testing.assert_array_equal(state['opt'].mu, [1.0, 1.0])
  warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert newest.name in warnings[0].getMessage()
  with pytest.raises(RunDirError, match='damaged'):
    ckpt.restore(2)


def test_corrupted_byte_is_detected(tmp_path, caplog):
  ckpt = Checkpointer(tmp_path)
  ckpt.save({'x': np.arange(100)}, step=1)
  newest = ckpt.save({'x': np.arange(100) + 1}, step=2)
  data = bytearray(newest.read_bytes())
  data[-10] ^= 0xFF  # same length, different content
  newest.write_bytes(bytes(data))
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    step, state = ckpt.restore_latest()
  assert step == 1
  assert 'sha256' in caplog.text and newest.name in caplog.text


def test_garbage_only_directory_raises(tmp_path, caplog):
  (tmp_path / 'ckpt-000000000001.ckpt').write_bytes(b'garbage')
  (tmp_path / 'ckpt-000000000002.ckpt').write_bytes(b'')
  (tmp_path / 'ckpt-000000000003.pkl').write_bytes(b'an old-format file, damaged')
  (tmp_path / 'ckpt-weird.pkl').write_bytes(b'also garbage')
  ckpt = Checkpointer(tmp_path)
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    with pytest.raises(RunDirError) as info:
      ckpt.restore_latest()
  message = str(info.value)
  assert '\n' not in message
  assert str(tmp_path) in message
  assert 'No intact checkpoint' in message


def test_leftover_tmp_ignored_and_cleaned(tmp_path, caplog):
  ckpt = Checkpointer(tmp_path)
  # Only crash leftovers: nothing to restore, and not an error.
  (tmp_path / '.ckpt-000000000003.pkl.deadbeef.tmp').write_bytes(b'half')
  assert ckpt.restore_latest() is None

  ckpt.save({'v': 1}, step=1)
  (tmp_path / '.ckpt-000000000002.ckpt.0badf00d.tmp').write_bytes(b'half a checkpoint')
  (tmp_path / 'ckpt-000000000002.ckpt.tmp').write_bytes(b'another leftover')
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    assert ckpt.restore_latest() == (1, {'v': 1})
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert ckpt.all_steps() == [1]

  # Leftovers of a crashed writer are old by the time the run is resumed; a fresh
  # temp file may be another save's in flight (see test_fresh_foreign_temp_file_survives).
  for name in os.listdir(tmp_path):
    if name.endswith('.tmp'):
      age = time.time() - STALE_TMP_SECONDS - 1
      os.utime(tmp_path / name, (age, age))
  ckpt.save({'v': 2}, step=2)
  assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]
  assert ckpt.restore_latest() == (2, {'v': 2})


def test_invalid_arguments(tmp_path):
  with pytest.raises(ValueError):
    Checkpointer(tmp_path, keep=0)
  with pytest.raises(ValueError):
    Checkpointer(tmp_path).save({}, step=-1)


# ----------------------------------------------------------------------------
# No code runs on load: the format, legacy pickles, init_checkpoint.

_SENTINEL_NAME = 'pwned'


class _RunsCode:
  """Unpickling this creates a file: the proof that loading ran code."""

  def __init__(self, marker: str):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


def _framed(magic: bytes, payload: bytes) -> bytes:
  digest = hashlib.sha256(payload).hexdigest()
  return magic + f'{digest} {len(payload)}\n'.encode() + payload


def _legacy_pickle(path, state) -> None:
  """A checkpoint as older versions wrote it (header v1 + pickle)."""
  path.write_bytes(_framed(b'COLLECT_INFER_CKPT v1\n', pickle.dumps(state)))


def _archive(manifest, arrays=()) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as archive:
    archive.writestr('manifest.json', json.dumps(manifest))
    for i, data in enumerate(arrays):
      archive.writestr(f'{i}.npy', data)
  return buffer.getvalue()


def test_the_file_is_an_npz_with_a_json_manifest_and_no_pickle(tmp_path):
  path = Checkpointer(tmp_path).save(_state(), step=3)
  data = path.read_bytes()
  header_end = data.index(b'\n', data.index(b'\n') + 1) + 1
  payload = data[header_end:]
  assert payload[:4] == b'PK\x03\x04'  # a zip archive, not a pickle
  with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
    manifest = json.loads(npz['manifest.json'])
    assert manifest['version'] == 2 and manifest['arrays'] == len(npz.files) - 1
  assert 'tests.launch.test_checkpointing:OptState' in json.dumps(manifest)


def _malicious_payloads(marker: str):
  # A pickle where the archive should be.
  yield pickle.dumps({'learner_state': _RunsCode(marker)})
  # A manifest naming a function, or a class outside the allowed packages, as a NamedTuple.
  node = {'kind': 'namedtuple', 'fields': [], 'items': []}
  for name in ('os:system', 'subprocess:Popen', 'antigravity:x', 'agents.registry:AgentEntry'):
    tree = {**node, 'class': name}
    yield _archive({'format': 'collect_infer checkpoint', 'version': 2, 'tree': tree, 'arrays': 0})
  # An object array: .npy members hold a pickle in that case.
  buffer = io.BytesIO()
  np.save(buffer, np.array([_RunsCode(marker)], dtype=object), allow_pickle=True)
  tree = {'kind': 'array', 'index': 0, 'dtype': '|O', 'shape': [1]}
  yield _archive(
    {'format': 'collect_infer checkpoint', 'version': 2, 'tree': tree, 'arrays': 1},
    [buffer.getvalue()],
  )


def test_crafted_files_are_refused_without_running_code(tmp_path):
  marker = tmp_path / _SENTINEL_NAME
  for i, payload in enumerate(_malicious_payloads(str(marker))):
    directory = tmp_path / f'case{i}'
    directory.mkdir()
    path = directory / 'ckpt-000000000001.ckpt'
    path.write_bytes(_framed(b'COLLECT_INFER_CKPT v2\n', payload))  # intact sha256
    with pytest.raises(RunDirError, match='intact but cannot be read') as info:
      Checkpointer(directory).restore_latest()
    assert '\n' not in str(info.value)
    assert not marker.exists(), f'case {i} ran code on load'
  assert 'antigravity' not in sys.modules  # never imported for a crafted class name


def test_legacy_pickles_are_read_only_from_the_runs_own_directory(tmp_path, caplog):
  own = tmp_path / 'run' / 'checkpoints'
  own.mkdir(parents=True)
  _legacy_pickle(own / 'ckpt-000000000010.pkl', {'learner_steps': 10, 'v': np.arange(3)})
  _legacy_pickle(own / 'ckpt-000000000020.pkl', {'learner_steps': 20, 'v': np.arange(4)})
  with caplog.at_level(logging.WARNING, logger=LOGGER):
    step, state = Checkpointer(own).restore_latest()
  assert step == 20 and state['learner_steps'] == 20
  assert 'pickle checkpoint of an older version' in caplog.text
  assert 'ckpt-000000000020.pkl' in caplog.text
  # Outside a run's own directory, never unpickled: a one-line refusal saying how to convert.
  marker = tmp_path / _SENTINEL_NAME
  _legacy_pickle(own / 'ckpt-000000000030.pkl', {'learner_state': _RunsCode(str(marker))})
  for attempt in (
    lambda: Checkpointer(own, read_pickles=False).restore_latest(),
    lambda: Checkpointer(own, read_pickles=False).restore(30),
  ):
    with pytest.raises(RunDirError) as info:
      attempt()
    message = str(info.value)
    assert '\n' not in message and 'can run any code' in message
    assert 'python -m launch.checkpointing convert' in message
  assert not marker.exists()
  (own / 'ckpt-000000000030.pkl').unlink()
  # A new save writes the new format next to them; pruning removes old pickles as well.
  ckpt = Checkpointer(own, keep=2)
  ckpt.save({'learner_steps': 30}, 30)
  assert ckpt.all_steps() == [20, 30]
  assert sorted(p.name for p in own.glob('ckpt-*')) == [
    'ckpt-000000000020.pkl',
    'ckpt-000000000030.ckpt',
  ]


def test_init_checkpoint_refuses_a_pickle_from_elsewhere(tmp_path):
  from launch.checkpointing import load_init_checkpoint

  other = tmp_path / 'downloaded' / 'checkpoints'
  other.mkdir(parents=True)
  marker = tmp_path / _SENTINEL_NAME
  pkl = other / 'ckpt-000000000005.pkl'
  _legacy_pickle(pkl, {'learner_state': _RunsCode(str(marker))})
  for where in (pkl, other, other.parent):
    with pytest.raises(ConfigError) as info:
      load_init_checkpoint(str(where))
    message = str(info.value)
    assert '\n' not in message and f'init_checkpoint={str(where)!r}' in message
    assert f'python -m launch.checkpointing convert {pkl}' in message
  assert not marker.exists()
  # A trusted pickle, converted, then loads (the conversion is the owner's explicit act).
  _legacy_pickle(pkl, {'learner_steps': 5, 'w': np.arange(3, dtype=np.int16)})
  proc = subprocess.run(
    [sys.executable, '-m', 'launch.checkpointing', 'convert', str(pkl)],
    capture_output=True,
    text=True,
    env={**os.environ, 'PYTHONPATH': str(pathlib.Path(__file__).parents[2])},
  )
  assert proc.returncode == 0, proc.stderr
  assert 'ckpt-000000000005.ckpt' in proc.stdout
  for where in (other / 'ckpt-000000000005.ckpt', other.parent):
    payload = load_init_checkpoint(str(where))
    assert payload['learner_steps'] == 5 and payload['w'].dtype == np.int16


def _batch(spec, size: int) -> types.Transition:
  rng = np.random.default_rng(0)
  obs = rng.standard_normal((size,) + spec.observations.shape).astype(np.float32)
  return types.Transition(
    observation=obs,
    action=rng.uniform(-1, 1, (size,) + spec.actions.shape).astype(np.float32),
    reward=rng.standard_normal(size).astype(np.float32),
    discount=np.full(size, 0.99, np.float32),
    next_observation=obs + 0.1,
  )


def _assert_same_tree(a, b):
  leaves_a, structure_a = jax.tree_util.tree_flatten(a)
  leaves_b, structure_b = jax.tree_util.tree_flatten(b)
  assert structure_a == structure_b
  for x, y in zip(leaves_a, leaves_b):
    assert type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('algorithm', ['mpo', 'bc'])
def test_learner_states_round_trip_exactly_and_training_continues(tmp_path, algorithm):
  from launch import experiment
  from tests.fakes import Feed, tiny_config

  agent = TINY_AGENT if algorithm == 'mpo' else {'policy_layer_sizes': (16, 16)}
  cfg = tiny_config(tmp_path / 'run', algorithm=algorithm, agent=agent)
  builder = experiment.make_builder(cfg)
  feed = Feed(_batch(builder.spec, cfg.agent.replay.batch_size))
  learner = builder.make_learner(feed, seed=0)
  learner.step()
  state = learner.save()
  ckpt = Checkpointer(tmp_path / 'ckpts')
  ckpt.save({'learner_state': state, 'learner_steps': learner.steps}, learner.steps)
  restored = ckpt.restore(1)['learner_state']
  assert type(restored) is type(state)  # e.g. TrainingState, with optax's states inside
  _assert_same_tree(restored, state)
  # A learner built afresh (another seed) continues exactly where the saved one would.
  resumed = builder.make_learner(feed, seed=7)
  resumed.restore(restored)
  learner.step()
  resumed.step()
  assert resumed.steps == learner.steps == 2
  _assert_same_tree(resumed.save(), learner.save())


# ----------------------------------------------------------------------------
# Concurrent saves: a lock per directory; only own or stale temp files are removed.

_SAVER = """
import sys
import numpy as np
from launch.checkpointing import Checkpointer
ckpt = Checkpointer(sys.argv[1], keep=1000)
first, count = int(sys.argv[2]), int(sys.argv[3])
for step in range(first, first + 2 * count, 2):
  ckpt.save({'step': step, 'w': np.full(1 << 20, step, np.float32)}, step)
"""


def test_two_processes_saving_at_once_lose_nothing(tmp_path):
  env = {**os.environ, 'PYTHONPATH': str(pathlib.Path(__file__).parents[2])}
  count = 25
  procs = [
    subprocess.Popen(
      [sys.executable, '-c', _SAVER, str(tmp_path), str(first), str(count)],
      env=env,
      stderr=subprocess.PIPE,
      text=True,
    )
    for first in (0, 1)
  ]
  errors = [p.communicate(timeout=240)[1] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], errors
  ckpt = Checkpointer(tmp_path, keep=1000)
  assert ckpt.all_steps() == list(range(2 * count))
  for step in (0, 1, 2 * count - 2, 2 * count - 1):
    state = ckpt.restore(step)
    assert state['step'] == step and state['w'][0] == step
  assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_a_save_waits_for_the_directory_lock(tmp_path):
  ckpt = Checkpointer(tmp_path)
  ckpt.save({'v': 0}, 0)  # Creates the directory and its lock file.
  holder = os.open(tmp_path / '.lock', os.O_RDWR)
  fcntl.flock(holder, fcntl.LOCK_EX)  # Another writer (a separate open file) saving now.
  try:
    thread = threading.Thread(target=ckpt.save, args=({'v': 1}, 1))
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and ckpt.all_steps() == [0]
  finally:
    os.close(holder)
  thread.join(timeout=10)
  assert not thread.is_alive() and ckpt.restore(1) == {'v': 1}


def test_fresh_foreign_temp_file_survives_a_save(tmp_path):
  ckpt = Checkpointer(tmp_path)
  ckpt.save({'v': 0}, 0)
  theirs = tmp_path / '.ckpt-000000000005.ckpt.99999999.0123456789ab.tmp'  # in flight elsewhere
  mine = tmp_path / f'.ckpt-000000000004.ckpt.{os.getpid()}.0123456789ab.tmp'  # my crash leftover
  theirs.write_bytes(b'half')
  mine.write_bytes(b'half')
  ckpt.save({'v': 1}, 1)
  assert theirs.exists() and not mine.exists()
  old = time.time() - STALE_TMP_SECONDS - 1
  os.utime(theirs, (old, old))
  ckpt.save({'v': 2}, 2)
  assert not theirs.exists()


# ----------------------------------------------------------------------------
# The learner's saves: one payload, callers add counts and never replace its fields.


def _learner_with_checkpoints(tmp_path, steps, **overrides):
  """A LearnerWorker resumed from real checkpoints at `steps` (the newest last)."""
  import reverb

  from launch import experiment
  from launch.nodes.counter import PersistentCounter
  from launch.nodes.learner import LearnerWorker
  from tests.fakes import tiny_config

  cfg = tiny_config(tmp_path / 'run', **overrides)
  builder = experiment.make_builder(cfg)
  fresh = builder.make_learner(iter(()), seed=0).save()
  ckpt = Checkpointer(tmp_path / 'run' / 'checkpoints', keep=cfg.keep_checkpoints)
  for step in steps:
    state = fresh._replace(steps=np.asarray(step, fresh.steps.dtype))
    ckpt.save(
      {'learner_state': state, 'learner_steps': step, 'iteration': 1, 'collect_target': 7}, step
    )
  server = reverb.Server(builder.make_replay_tables(), port=None)
  client = reverb.Client(f'localhost:{server.port}')
  learner = LearnerWorker(cfg.to_dict(), client, PersistentCounter(str(tmp_path)))
  return learner, ckpt, server


EVALUATOR_EXTRA = {
  'counts': {'counts': {'actor_steps': 300, 'learner_steps': 50.0}, 'cache': {}},
  'last_eval_return': -12.5,
}


def test_save_checkpoint_adds_counts_but_never_replaces_the_learners_fields(tmp_path):
  steps = [10, 20, 30, 40, 50]
  learner, ckpt, server = _learner_with_checkpoints(tmp_path, steps)
  try:
    before = {s: ckpt.path_for(s).read_bytes() for s in steps}
    # The attack of issue 20: steps far ahead, five times, used to prune every real checkpoint.
    hostile = [{'learner_steps': 10**9 + i} for i in range(5)]
    hostile += [{'learner_state': {}}, {'iteration': 99}, {'collect_target': 0}, {'time': 0}]
    for extra in hostile:
      (name,) = extra
      with pytest.raises(ValueError, match=f"extra field '{name}' is the learner's own"):
        learner.save_checkpoint(extra)
    not_plain = [
      ({'counts': np.zeros(3)}, "'counts' is a ndarray"),
      ({'counts': [1, 2]}, "'counts' is a list"),
      ({'a': {'b': {'c': {'d': 1}}}}, "'a'\\['b'\\]\\['c'\\] is a dict"),
      ({'a': {str(i): i for i in range(2000)}}, 'more than 1000 values'),
      ({'a': 'x' * 1000}, 'longer than'),
      ({1: 2}, 'not a short string'),
      ('counts', 'must be a dict'),
    ]
    for extra, why in not_plain:
      with pytest.raises(ValueError, match=why):
        learner.save_checkpoint(extra)
    assert ckpt.all_steps() == steps
    assert {s: ckpt.path_for(s).read_bytes() for s in steps} == before

    # The evaluator's save, again and again at the same step: the older ones stay.
    for _ in range(6):
      path = learner.save_checkpoint(EVALUATOR_EXTRA)
    assert path == str(ckpt.path_for(50)) and ckpt.all_steps() == steps
    payload = ckpt.restore(50)
    assert payload['learner_steps'] == 50 == int(payload['learner_state'].steps)
    assert payload['counts'] == EVALUATOR_EXTRA['counts'] and payload['last_eval_return'] == -12.5
    assert (payload['iteration'], payload['collect_target']) == (1, 7)

    # The final save is built by the same payload function: the counts stay in it.
    stop = threading.Event()
    stop.set()
    learner.run(stop)
    final = ckpt.restore(50)
    assert final['time'] > payload['time']
    assert {k: v for k, v in final.items() if k not in ('time', 'learner_state')} == {
      k: v for k, v in payload.items() if k not in ('time', 'learner_state')
    }
  finally:
    server.stop()


def _counts_after_resume(run_root, counted: str, steps) -> dict:
  """The counter's counts once a learner resumed at `steps[-1]` started with `counted` saved."""
  run_root.mkdir(parents=True, exist_ok=True)
  (run_root / 'counter.json').write_text(f'{{"counts": {counted}, "cache": {{}}}}')
  learner, _, server = _learner_with_checkpoints(run_root, steps)
  try:
    stop = threading.Event()
    stop.set()
    learner.run(stop)
    return learner._counter.get_counts()
  finally:
    server.stop()


def test_a_resumed_learner_raises_a_lagging_counter_to_its_checkpoints_step(tmp_path):
  # A Ctrl-C can save the counter's file before the learner's last counts reach it.
  counts = _counts_after_resume(
    tmp_path / 'behind', '{"learner_steps": 35, "actor_steps": 900}', [20, 50]
  )
  assert (counts['learner_steps'], counts['actor_steps']) == (50, 900)
  # Ahead of the checkpoint (updates after it, then a kill): those updates were done.
  counts = _counts_after_resume(tmp_path / 'ahead', '{"learner_steps": 80}', [50])
  assert counts['learner_steps'] == 80


def test_a_checkpoint_of_another_layout_is_named_before_it_is_restored(tmp_path):
  """A one-task MPO learner's checkpoint (cartpole) against a two-task learner (cartpole and
  point_mass placed in one layout): the first differing field, by path, not a failure deep
  in the jitted update; the same learner's own checkpoint fits."""
  from acme.utils import loggers

  from launch import experiment
  from launch.checkpointing import state_mismatch
  from tests.fakes import tiny_config

  def learner(**overrides):
    builder = experiment.make_builder(tiny_config(tmp_path / 'r', **overrides))
    return builder.make_learner(iter(()), logger=loggers.NoOpLogger())

  one = learner()
  two = learner(tasks='cartpole:swingup,point_mass:easy')
  ckpt = Checkpointer(tmp_path / 'ckpt')
  ckpt.save({'learner_state': one.save()}, 1)
  _, payload = ckpt.restore_latest()
  assert state_mismatch(one.save(), payload['learner_state']) is None
  problem = state_mismatch(two.save(), payload['learner_state'])
  assert problem is not None and 'has shape' in problem and "this run's learner" in problem
  assert 'policy_params' in problem
  assert 'is missing' in state_mismatch({'a': np.zeros(2), 'b': np.zeros(1)}, {'a': np.zeros(2)})
  assert 'is not in this run' in state_mismatch({'a': np.zeros(2)}, {'a': np.zeros(2), 'c': 1})
