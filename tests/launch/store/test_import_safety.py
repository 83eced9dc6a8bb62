"""`launch.store import` on bad datasets: all or nothing, no duplicates, capped sizes.

Each bad dataset is written by the project's own exporter and then altered on disk.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import tracemalloc
import zlib
from typing import Callable, Dict, List

import numpy as np
import pytest
import tensorflow as tf

from launch.store import episodes as store_episodes
from launch.store import rlds_import
from launch.store.__main__ import main
from launch.store.episodes import Episode, EpisodeStore
from launch.store.rlds_export import export_rlds
from launch.store.rlds_import import import_rlds
from tests.fakes import random_episode

NAME = 'test_episodes'
ROOT = pathlib.Path(__file__).resolve().parents[3]


def _episodes(n: int = 5, seed: int = 3) -> List[Episode]:
  rng = np.random.default_rng(seed)
  return [random_episode(rng, 3 + i, metadata={'source': f'actor{i}', 'seed': i}) for i in range(n)]


def _export(tmp_path, episodes=None, shard_size: int = 3) -> pathlib.Path:
  out = tmp_path / 'rlds'
  export_rlds(_episodes() if episodes is None else episodes, out, NAME, shard_size=shard_size)
  return out


def _shards(out: pathlib.Path) -> List[pathlib.Path]:
  return sorted(out.glob(f'{NAME}-train.tfrecord-*'))


def _rewrite(path: pathlib.Path, index: int, mutate: Callable[[tf.train.Example], None]):
  """Rewrites a shard with record `index` changed by `mutate` (valid framing)."""
  records = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
  example = tf.train.Example.FromString(records[index])
  mutate(example)
  records[index] = example.SerializeToString()
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


def _set_metadata(path: pathlib.Path, index: int, text: bytes) -> None:
  def mutate(example):
    example.features.feature['episode_metadata/metadata_json'].bytes_list.value[0] = text

  _rewrite(path, index, mutate)


def _snapshot(directory: pathlib.Path) -> Dict[str, bytes]:
  """Every file under `directory` and its bytes (the staging lock file aside)."""
  return {
    str(p.relative_to(directory)): p.read_bytes()
    for p in sorted(directory.rglob('*'))
    if p.is_file() and p.name != '.staging.lock'
  }


def _store_with_one_episode(tmp_path) -> pathlib.Path:
  store = EpisodeStore(tmp_path / 'store')
  with store.writer('actor') as writer:
    writer.append(random_episode(np.random.default_rng(99), 4))
  return tmp_path / 'store'


def _cli(capsys, *args):
  capsys.readouterr()
  code = main(['import', *map(str, args)])
  out, err = capsys.readouterr()
  return code, out, err


def test_a_one_step_rlds_episode_is_left_out_and_counted(tmp_path, capsys):
  """It used to become an empty Episode that the store refused half-way through."""
  rng = np.random.default_rng(0)
  episodes = [random_episode(rng, 4), random_episode(rng, 0), random_episode(rng, 2)]
  out = _export(tmp_path, episodes)
  code, stdout, _ = _cli(capsys, out, tmp_path / 'store')
  assert code == 0
  assert 'loaded 3 of 3 episodes, skipped 0' in stdout and '1 empty' in stdout, stdout
  store = EpisodeStore(tmp_path / 'store')
  assert [info.length for info in store.index()] == [4, 2]


@pytest.mark.parametrize(
  'text, reason',
  [
    (b'{"source": "a", "x": NaN}', 'NaN is not a number JSON allows'),
    (b'{"x": -Infinity}', '-Infinity is not a number JSON allows'),
    (b'{"x": [1e999]}', '1e999 overflows to inf'),
    (b'{"success": "yes"}', "'success' must be true / false"),
    (b'{"policy_version": "7"}', "'policy_version' must be an integer"),
    (b'{"source": 3}', "'source' must be a string"),
  ],
)
def test_bad_metadata_in_the_middle_leaves_the_store_unchanged(tmp_path, capsys, text, reason):
  out = _export(tmp_path)
  shards = _shards(out)
  _set_metadata(shards[0], 1, text)  # Episode 1 of 5: episode 0 would come first.
  store_dir = _store_with_one_episode(tmp_path)
  before = _snapshot(store_dir)

  code, _, err = _cli(capsys, out, store_dir)
  assert code == 2
  assert err.count('\n') == 1 and err.startswith(f'error: {shards[0]}: episode 1: '), err
  assert reason in err, err
  assert _snapshot(store_dir) == before
  assert len(EpisodeStore(store_dir)) == 1

  # Skipping it imports the other four, once.
  code, stdout, _ = _cli(capsys, out, store_dir, '--on_error', 'skip')
  assert code == 0 and 'skipped 1' in stdout and reason in stdout, stdout
  assert len(EpisodeStore(store_dir)) == 5


def test_the_real_command_refuses_in_one_line(tmp_path):
  out = _export(tmp_path)
  shards = _shards(out)
  _set_metadata(shards[1], 0, b'{"x": NaN}')  # Episode 3.
  store_dir = _store_with_one_episode(tmp_path)
  before = _snapshot(store_dir)
  result = subprocess.run(
    [sys.executable, '-m', 'launch.store', 'import', str(out), str(store_dir)],
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=str(ROOT)),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith(f'error: {shards[1]}: episode 3: ')
  assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr, result.stderr
  assert _snapshot(store_dir) == before


def test_importing_the_same_data_again_is_a_no_op(tmp_path, capsys):
  out = _export(tmp_path)
  store_dir = tmp_path / 'store'
  code, stdout, _ = _cli(capsys, out, store_dir)
  assert code == 0 and 'stored 5 as writer import-' in stdout, stdout
  first = _snapshot(store_dir)

  code, stdout, _ = _cli(capsys, out, store_dir)
  assert code == 0, stdout
  assert 'stored nothing' in stdout and 'skipped 5 duplicates' in stdout, stdout
  assert _snapshot(store_dir) == first
  store = EpisodeStore(store_dir)
  assert len(store) == 5
  hashes = [info.metadata[rlds_import.HASH_KEY] for info in store.index()]
  assert len(set(hashes)) == 5
  assert hashes == [rlds_import.episode_sha256(e) for e in _episodes()]

  # The store exported and imported into itself: the same episodes, still no-op.
  assert main(['export', str(store_dir), str(tmp_path / 'again')]) == 0
  code, stdout, _ = _cli(capsys, tmp_path / 'again', store_dir)
  assert code == 0 and 'skipped 5 duplicates' in stdout, stdout
  assert len(EpisodeStore(store_dir)) == 5

  # A dataset overlapping the store: only the new episodes are stored.
  more = _episodes(7)  # The same five, then two more.
  export_rlds(more, tmp_path / 'more', NAME)
  code, stdout, _ = _cli(capsys, tmp_path / 'more', store_dir)
  assert code == 0 and 'stored 2' in stdout and 'skipped 5 duplicates' in stdout, stdout
  assert len(EpisodeStore(store_dir)) == 7

  # An episode repeated within a dataset is stored once.
  export_rlds(_episodes(1, seed=11) * 2, tmp_path / 'twice', NAME)
  code, stdout, _ = _cli(capsys, tmp_path / 'twice', store_dir)
  assert code == 0 and 'stored 1 ' in stdout and 'skipped 1 duplicates' in stdout, stdout
  assert len(EpisodeStore(store_dir)) == 8


def test_a_zlib_entry_is_never_inflated_past_one_step(tmp_path):
  """A few hundred kB of zlib data that expands to 200 MB is refused without expanding it."""
  rng = np.random.default_rng(5)
  episodes = [random_episode(rng, n, obs_dtype=np.float64) for n in (3, 4, 5)]
  out = tmp_path / 'rlds'
  export_rlds(episodes, out, NAME)
  features = json.loads((out / 'features.json').read_text())
  steps = features['featuresDict']['features']['steps']['sequence']['feature']
  steps['featuresDict']['features']['observation']['tensor']['encoding'] = 'zlib'
  (out / 'features.json').write_text(json.dumps(features))
  deflater = zlib.compressobj(9)
  bomb = b''.join(deflater.compress(bytes(1 << 20)) for _ in range(200)) + deflater.flush()
  assert len(bomb) < 1 << 20
  (shard,) = _shards(out)
  for index in range(3):

    def compress(example, index=index):
      values = example.features.feature['steps/observation'].bytes_list.value
      values[:] = [zlib.compress(v) for v in values]
      if index == 1:
        values[2] = bomb

    _rewrite(shard, index, compress)

  tracemalloc.start()
  try:
    loaded, report = import_rlds(out, on_error='skip')
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert peak < 50 << 20, f'peak {peak >> 20} MiB'
  (bad,) = report.bad
  assert bad.episode == 1
  assert 'steps/observation step 2 decompresses to more than the 32 bytes' in bad.reason
  assert len(loaded) == 2


def test_size_caps_apply_before_reading(tmp_path, capsys):
  episodes = _episodes()
  episodes[2] = random_episode(np.random.default_rng(1), 2000)  # A much longer record.
  out = _export(tmp_path, episodes)
  big = _shards(out)[0].stat().st_size // 2
  _, report = import_rlds(out, max_episode_bytes=big)
  (bad,) = report.bad
  assert bad.episode == 2 and 'more than the cap of' in bad.reason and 'declares' in bad.reason

  code, _, err = _cli(capsys, out, tmp_path / 'store', '--max_episode_mb', big / (1 << 20))
  assert code == 2 and err.startswith(f'error: {_shards(out)[0]}: episode 2: the record declares')
  assert not (tmp_path / 'store').exists()

  # A declared step shape whose product is absurd is refused before any record is read.
  features = json.loads((out / 'features.json').read_text())
  steps = features['featuresDict']['features']['steps']['sequence']['feature']
  steps['featuresDict']['features']['observation']['tensor']['shape']['dimensions'] = [
    str(1 << 31),
    str(1 << 31),
  ]
  (out / 'features.json').write_text(json.dumps(features))
  code, _, err = _cli(capsys, out, tmp_path / 'store')
  assert code == 2 and err.count('\n') == 1, err
  assert err.startswith(f'error: {out / "features.json"}: one step of ') and 'the cap' in err, err


def test_the_import_streams(tmp_path, capsys):
  """Peak memory stays near one episode's, not the dataset's."""
  rng = np.random.default_rng(2)
  episodes = [random_episode(rng, 1000, obs_shape=(256,)) for _ in range(12)]  # 1 MB each
  out = _export(tmp_path, episodes, shard_size=4)
  del episodes
  tracemalloc.start()
  try:
    code, stdout, _ = _cli(capsys, out, tmp_path / 'store')
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert code == 0 and 'stored 12' in stdout, stdout
  assert peak < 8 << 20, f'peak {peak / (1 << 20):.1f} MiB for a 12 MiB dataset'


def test_store_errors_are_one_line(tmp_path, capsys):
  out = _export(tmp_path)
  store_dir = _store_with_one_episode(tmp_path)
  before = _snapshot(store_dir)
  code, _, err = _cli(capsys, out, store_dir, '--writer', 'no spaces please')
  assert code == 2 and err.count('\n') == 1 and 'writer name' in err, err
  assert err.startswith(f'error: {store_dir}: '), err

  # Another import into the same store at the same time.
  with store_episodes.StagedWriter(store_dir, 'other-import'):
    code, _, err = _cli(capsys, out, store_dir)
  assert code == 2 and err.count('\n') == 1 and 'another import' in err, err
  assert _snapshot(store_dir) == before

  # A live writer named like the import prefix does not collide with it.
  with EpisodeStore(store_dir).writer('import'):
    code, stdout, _ = _cli(capsys, out, store_dir)
  assert code == 0 and 'stored 5' in stdout, stdout


def test_a_failed_batch_leaves_nothing(tmp_path):
  store_dir = _store_with_one_episode(tmp_path)
  before = _snapshot(store_dir)
  with pytest.raises(RuntimeError):
    with store_episodes.StagedWriter(store_dir, 'batch') as staged:
      for episode in _episodes():
        staged.append(episode)
      raise RuntimeError('interrupted')
  assert _snapshot(store_dir) == before
  assert len(EpisodeStore(store_dir)) == 1


_CRASH = textwrap.dedent(
  """
  import os, sys
  import numpy as np
  from launch.store import episodes
  from tests.fakes import random_episode

  real_rename = os.rename
  moved = []

  def crash_after_one_segment(src, dst):
    if str(dst).endswith('.index'):
      os._exit(17)  # Killed between moving the segments and publishing the index.
    real_rename(src, dst)
    moved.append(dst)

  episodes.os.rename = crash_after_one_segment
  staged = episodes.StagedWriter(sys.argv[1], 'crashed', max_segment_bytes=1)
  rng = np.random.default_rng(0)
  for _ in range(3):
    staged.append(random_episode(rng, 5))
  staged.publish()
  """
)


def test_a_crash_while_publishing_is_rolled_back(tmp_path, capsys):
  store_dir = _store_with_one_episode(tmp_path)
  before = _snapshot(store_dir)
  result = subprocess.run(
    [sys.executable, '-c', _CRASH, str(store_dir)],
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=str(ROOT)),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 17, result.stderr
  assert sorted(p.name for p in store_dir.glob('crashed.*.seg')) == [
    f'crashed.{i:06d}.seg' for i in range(3)
  ]
  # Readers never see the half-published batch.
  assert len(EpisodeStore(store_dir)) == 1

  # The next import removes what the crash left, then imports.
  out = _export(tmp_path)
  code, stdout, _ = _cli(capsys, out, store_dir)
  assert code == 0 and 'stored 5' in stdout, stdout
  assert not list(store_dir.glob('crashed*')) and not list(store_dir.glob('.staging-*'))
  after = _snapshot(store_dir)
  assert {k: v for k, v in after.items() if k in before} == before
  assert len(EpisodeStore(store_dir)) == 6
