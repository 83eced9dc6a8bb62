"""The replay node as Launchpad sees it, importing Reverb only in the node's own process.

It is what `lp.ReverbNode` is (a Python node with one 'reverb' address whose handle
dereferences to a `reverb.Client`), but Launchpad's module imports Reverb, and so
TensorFlow (about 10 s of CPU), in whatever process builds the program: the launcher.
Here Reverb is imported where it is used: the replay process (launch.nodes.replay.serve)
and the processes that dereference the handle.
"""

from typing import Callable, Sequence

from launchpad import address as lp_address
from launchpad.nodes import base
from launchpad.nodes.python import node as python

REVERB_PORT_NAME = 'reverb'  # As lp.ReverbNode names its address.


class ReplayHandle(base.Handle):
  """Dereferences to a `reverb.Client` of the replay node."""

  def __init__(self, address: lp_address.Address):
    self._address = address

  def dereference(self):
    import reverb

    return reverb.Client(self._address.resolve())


class CheckpointedReverbNode(python.PyNode):
  """A Reverb server whose replay survives a relaunch (see launch.nodes.replay.serve)."""

  def __init__(self, priority_tables_fn: Callable[[], Sequence], replay_dir: str):
    super().__init__(self.run)
    self._priority_tables_fn = priority_tables_fn
    self._replay_dir = replay_dir
    self._address = lp_address.Address(REVERB_PORT_NAME)
    self.allocate_address(self._address)

  def create_handle(self) -> ReplayHandle:
    return self._track_handle(ReplayHandle(self._address))

  @property
  def reverb_address(self) -> lp_address.Address:
    return self._address

  def run(self) -> None:
    from launch.nodes.replay import serve

    port = lp_address.get_port_from_address(self._address.resolve())
    serve(port, self._priority_tables_fn, self._replay_dir)
