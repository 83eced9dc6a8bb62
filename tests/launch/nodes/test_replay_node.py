"""The replay node's final checkpoint: the one Reverb keeps, also after the server stops."""

import pathlib

import reverb

from launch import experiment
from launch.nodes.replay import newest_checkpoint
from tests.fakes import tiny_config


def test_newest_checkpoint_is_the_one_reverb_keeps_after_stopping(tmp_path):
  replay_dir = tmp_path / 'replay'
  replay_dir.mkdir()
  assert newest_checkpoint(str(replay_dir)) is None
  tables = experiment.make_builder(tiny_config(tmp_path / 'run')).make_replay_tables()
  server = reverb.Server(
    tables, port=None, checkpointer=reverb.checkpointers.DefaultCheckpointer(str(replay_dir))
  )
  ours = reverb.Client(f'localhost:{server.port}').checkpoint()
  assert newest_checkpoint(str(replay_dir)) == ours
  (replay_dir / '9999-half-written').mkdir()  # no DONE marker: not a checkpoint
  assert newest_checkpoint(str(replay_dir)) == ours
  server.stop()
  # Stopping may checkpoint again, and Reverb then deletes the older one.
  newest = newest_checkpoint(str(replay_dir))
  assert newest is not None and pathlib.Path(newest, 'DONE').exists()
  assert pathlib.Path(newest).name >= pathlib.Path(ours).name  # never an older one
