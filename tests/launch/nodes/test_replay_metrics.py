"""The replay node's table metrics, on a real in-process Reverb server (no Launchpad)."""

import math
import threading
import time

import numpy as np
import pytest
import reverb

from experiments import plot_run
from launch.nodes.replay import ReplayMetricsLogger, table_metrics

NAMES = (
  'size',
  'episodes',
  'inserts',
  'samples',
  'unique_samples',
  'insert_wait_s',
  'sample_wait_s',
)


@pytest.fixture
def server():
  tables = [
    reverb.Table(
      name,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=100,
      rate_limiter=reverb.rate_limiters.MinSize(1),
    )
    for name in ('main', 'waiting')
  ]
  server = reverb.Server(tables, port=None)
  yield server
  server.stop()


def _insert(client: reverb.Client, table: str, episodes: int, steps: int) -> None:
  """`steps` items per episode, one per step, each in its own writer episode."""
  with client.trajectory_writer(num_keep_alive_refs=1) as writer:
    for _ in range(episodes):
      for t in range(steps):
        writer.append({'x': np.full(2, t, np.float32)})
        writer.create_item(table, 1.0, {'x': writer.history['x'][-1]})
      writer.end_episode()


def test_table_metrics_counts_items_samples_and_waits(server):
  client = reverb.Client(f'localhost:{server.port}')
  _insert(client, 'main', episodes=3, steps=4)
  assert len(list(client.sample('main', num_samples=5))) == 5
  # A sample on the empty table waits for the limiter (MinSize(1)) until an insert comes.
  sampled = threading.Event()
  threading.Thread(
    target=lambda: (next(iter(client.sample('waiting'))), sampled.set()), daemon=True
  ).start()
  time.sleep(0.5)
  assert not sampled.is_set()
  _insert(client, 'waiting', episodes=1, steps=1)
  assert sampled.wait(30)

  m = table_metrics(client.server_info())
  assert set(m) == {f'{t}/{n}' for t in ('main', 'waiting') for n in NAMES}
  assert m['main/size'] == 12 and m['main/inserts'] == 12 and m['main/episodes'] == 3
  assert m['main/samples'] == 5 and 1 <= m['main/unique_samples'] <= 5
  assert m['waiting/size'] == m['waiting/inserts'] == m['waiting/samples'] == 1
  assert 0.3 <= m['waiting/sample_wait_s'] < 30
  for value in m.values():
    assert isinstance(value, float) and math.isfinite(value) and value >= 0


def test_metrics_logger_writes_csv_rows_and_tensorboard_events(server, tmp_path):
  client = reverb.Client(f'localhost:{server.port}')
  metrics = ReplayMetricsLogger(f'localhost:{server.port}', tmp_path)
  first = metrics.poll()
  assert first['elapsed_s'] == 0 and first['main/size'] == 0
  assert math.isnan(first['main/inserts_per_s'])  # No earlier poll to compare with.
  _insert(client, 'main', episodes=1, steps=10)
  time.sleep(0.2)
  second = metrics.poll()
  assert second['main/size'] == second['main/inserts'] == 10
  assert second['main/inserts_per_s'] > 0 and second['main/samples_per_s'] == 0
  metrics.close()

  cols = plot_run.read_csv(tmp_path / 'logs' / 'replay' / 'logs.csv')
  np.testing.assert_array_equal(cols['main/size'], [0, 10])
  np.testing.assert_array_equal(cols['waiting/size'], [0, 0])
  assert {'elapsed_s', 'main/insert_wait_s', 'main/sample_wait_s', 'waiting/samples_per_s'} <= set(
    cols
  )
  events = list((tmp_path / 'logs' / 'tb').rglob('events.out.tfevents.*'))
  # acme's TFSummaryLogger tags '<label>/<Key>', key title-cased without underscores.
  assert any(b'replay/Main/InsertWaitS' in e.read_bytes() for e in events)
  assert [p.name for p in plot_run.plot_run(tmp_path)] == ['replay.png']


def test_metrics_thread_logs_every_period_and_survives_a_stopped_server(server, tmp_path, capsys):
  metrics = ReplayMetricsLogger(
    f'localhost:{server.port}', tmp_path, period_s=0.1, server_info_timeout_s=1
  ).start()
  csv_path = tmp_path / 'logs' / 'replay' / 'logs.csv'
  deadline = time.monotonic() + 30
  while len(plot_run.read_csv(csv_path).get('main/size', [])) < 2:
    assert time.monotonic() < deadline, 'no rows logged'
    time.sleep(0.05)
  server.stop()  # Polls now fail; the thread reports that once and keeps going.
  printed = ''
  while 'table metrics not logged (1x)' not in printed:
    assert time.monotonic() < deadline + 30, printed
    time.sleep(0.05)
    printed += capsys.readouterr().out
  start = time.monotonic()
  metrics.close(timeout_s=2.0)
  assert time.monotonic() - start < 5.0
