"""A Reverb server with the builder's tables in a process of its own, as the program runs it.

In the program the replay server is its own node, so an actor process pays only for the
client's side of each insert (appending, chunking, compressing, the gRPC stream); the
server's side (receiving, the table insert) runs in the replay node. The actor benchmarks
with an in-process server count both in one process; with this one they measure the
actor as its node runs, and `cpu_seconds` says what the server spent beside it.
"""

import multiprocessing
from typing import Any, Dict, Optional

from experiments.throughput.in_process import ReplayServer

START_TIMEOUT_S = 120.0


def _serve(task: str, preset: str, agent: Dict[str, Any], pixels, conn) -> None:
  """The child: the same tables as `ReplayServer(make_builder(...))`, until told to stop."""
  import reverb

  from experiments.throughput.in_process import make_builder

  server = reverb.Server(make_builder(task, preset, agent, pixels).make_replay_tables(), port=None)
  conn.send(server.port)
  try:
    conn.recv()  # The parent's stop (or EOFError when the parent is gone).
  except EOFError:
    pass
  server.stop()


def make_replay(
  builder, task: str, preset: str, agent: Dict[str, Any], pixels=None, own_process: bool = False
) -> ReplayServer:
  """The builder's tables in this process, or (`own_process`) in a child as the program has
  them; `task`, `preset`, `agent` and `pixels` must be what `builder` was made from."""
  if own_process:
    return ReplayProcess(task, preset, agent, pixels)
  return ReplayServer(builder)


class ReplayProcess(ReplayServer):
  """`ReplayServer`'s tables and client, with the server in a spawned child process."""

  def __init__(self, task: str, preset: str, agent: Dict[str, Any], pixels=None):  # pylint: disable=super-init-not-called
    import psutil
    import reverb

    # Spawned, not forked: the parent holds JAX and TensorFlow threads already.
    ctx = multiprocessing.get_context('spawn')
    self._conn, child = ctx.Pipe()
    self._process = ctx.Process(
      target=_serve, args=(task, preset, dict(agent), pixels, child), daemon=True
    )
    self._process.start()
    child.close()
    port = None
    if self._conn.poll(START_TIMEOUT_S):
      try:
        port = self._conn.recv()
      except EOFError:  # The child died first; its traceback is on stderr.
        self._process.join(5)
    if port is None:
      self._process.kill()
      raise RuntimeError(
        f'the replay process (pid {self._process.pid}) did not report its port within '
        f'{START_TIMEOUT_S:.0f} s (exit code {self._process.exitcode}); a script that '
        "starts it needs the `if __name__ == '__main__':` guard (the child is spawned)"
      )
    self.address = f'localhost:{port}'
    self.client = reverb.Client(self.address)
    self._ps = psutil.Process(self._process.pid)

  def cpu_seconds(self) -> Optional[float]:
    """User + system CPU seconds the server's process has used so far."""
    times = self._ps.cpu_times()
    return times.user + times.system

  def stop(self) -> None:
    if self._process.is_alive():
      try:
        self._conn.send('stop')
      except (BrokenPipeError, OSError):
        pass
      self._process.join(30)
    if self._process.is_alive():
      self._process.kill()
      self._process.join(5)
