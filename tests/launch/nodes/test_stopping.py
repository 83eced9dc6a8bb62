"""Stopping a node: the main thread must never sit inside the stop event's lock."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

from launch.nodes.counter import PersistentCounter
from launch.nodes.stopping import run_until_stopped, wait_for_stop
from tests.e2e_util import ROOT


class MainThreadMustNotWait(threading.Event):
  """A stop event that fails the test if the main thread blocks in `wait`.

  Launchpad sets its stop event from a signal handler on the main thread; a
  main thread inside `Event.wait` can hold the event's lock at that moment and
  the handler then deadlocks (seen in CI: a counter node that never stopped).
  """

  def wait(self, timeout=None):
    assert threading.current_thread() is not threading.main_thread(), (
      'the main thread waited on the stop event'
    )
    return super().wait(timeout)


def _set_later(event, seconds):
  timer = threading.Timer(seconds, event.set)
  timer.start()
  return timer


def test_wait_for_stop_times_out_and_sees_the_flag():
  stop = MainThreadMustNotWait()
  start = time.monotonic()
  assert wait_for_stop(stop, 0.2) is False
  assert 0.19 <= time.monotonic() - start < 2.0
  _set_later(stop, 0.1)
  start = time.monotonic()
  assert wait_for_stop(stop, 30.0) is True
  assert time.monotonic() - start < 2.0


def test_run_until_stopped_on_the_main_thread_polls(tmp_path):
  stop = MainThreadMustNotWait()
  ticks = []

  def work(s):
    while not s.wait(0.01):  # Off the main thread, a plain wait is fine.
      ticks.append(1)

  _set_later(stop, 0.3)
  assert run_until_stopped(work, stop, grace_seconds=2.0) is True
  assert ticks


def test_counter_run_on_the_main_thread_polls_and_saves(tmp_path):
  counter = PersistentCounter(str(tmp_path), save_every_seconds=0.05)
  stop = MainThreadMustNotWait()
  counter.increment(actor_steps=5)
  _set_later(stop, 0.3)
  counter.run(stop)
  assert PersistentCounter(str(tmp_path)).get_counts()['actor_steps'] == 5


def test_signal_handler_setting_the_event_stops_a_polling_main_thread(tmp_path):
  # The real arrangement: a process whose SIGTERM handler sets the event the
  # main thread is polling, with signals arriving while it polls.
  script = textwrap.dedent("""
      import signal, sys, threading
      from launch.nodes.stopping import wait_for_stop
      stop = threading.Event()
      signal.signal(signal.SIGTERM, lambda *_: stop.set())
      print('ready', flush=True)
      while not wait_for_stop(stop, 0.001):
        pass
      print('stopped', flush=True)
  """)
  proc = subprocess.Popen(
    [sys.executable, '-c', script],
    stdout=subprocess.PIPE,
    text=True,
    cwd=ROOT,
  )
  try:
    assert proc.stdout.readline().strip() == 'ready'
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == 'stopped' and proc.returncode == 0
  finally:
    proc.kill()
