"""Running a node's work so that shutdown never waits on a call that cannot return."""

import os
import threading
import time
from typing import Callable

_POLL_SECONDS = 0.05


def wait_for_stop(stop: threading.Event, seconds: float) -> bool:
  """`stop.wait(seconds)` that is safe on the thread that runs signal handlers.

  Launchpad sets its stop event from a SIGINT/SIGTERM handler, and Python runs
  handlers on the main thread between bytecodes. Were the main thread inside
  `Event.wait`, holding the event's (non-reentrant) lock at that instant, the
  handler's `set()` would wait on that lock forever and the node would never
  stop. The main thread therefore only polls the flag, which takes no lock.
  """
  if threading.current_thread() is not threading.main_thread():
    return stop.wait(seconds)
  deadline = time.monotonic() + seconds
  while not stop.is_set():
    left = deadline - time.monotonic()
    if left <= 0:
      return False
    time.sleep(min(_POLL_SECONDS, left))
  return True


def run_until_stopped(
  work: Callable[[threading.Event], None], stop: threading.Event, grace_seconds: float
) -> bool:
  """Runs `work(stop)` in a daemon thread until it returns or `stop` is set.

  Returns whether the work finished within `grace_seconds` of the stop. Calls
  parked on a server that is gone (a rate-limited insert, a sample, an RPC)
  never return, so the caller must not wait on them forever. Re-raises the
  work's exception, after setting `stop`.
  """
  failure = []

  def target():
    try:
      work(stop)
    except BaseException as e:  # pylint: disable=broad-except
      failure.append(e)
      stop.set()

  thread = threading.Thread(target=target, name='node-work', daemon=True)
  thread.start()
  while thread.is_alive() and not wait_for_stop(stop, 1.0):
    pass
  thread.join(timeout=grace_seconds)
  if failure:
    raise failure[0]
  return not thread.is_alive()


def exit_process_if_stuck(finished: bool) -> None:
  """In a node's own process (main thread), ends it when its work is still parked."""
  if not finished and threading.current_thread() is threading.main_thread():
    os._exit(0)  # pylint: disable=protected-access


def close_adders(adders) -> None:
  """Closes each adder that can be closed (agents.nstep_adder.NStepAdder.close), so that
  none is left for garbage collection to flush against a server that may be gone by then."""
  for adder in adders:
    close = getattr(adder, 'close', None)
    if close is not None:
      close()
