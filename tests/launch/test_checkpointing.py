"""Tests for launch.checkpointing, on real files."""

import logging
import os
import time
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from agents.common.errors import RunDirError
from launch.checkpointing import STALE_TMP_SECONDS, Checkpointer

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
