"""The replay node: Reverb tables from the builder, checkpointed inside the run directory."""

import logging
import os
import threading

import launchpad as lp
import reverb
from launchpad import address as lp_address
from launchpad.launch import worker_manager

from launch.logs import announce_process, quiet_node_logs
from launch.stopping import wait_for_stop

log = logging.getLogger('collect_infer.replay')


class CheckpointedReverbNode(lp.ReverbNode):
  """An `lp.ReverbNode` whose replay survives a relaunch.

  Reverb's default checkpointer writes to a fresh temp dir, so a relaunched
  program starts empty. This node checkpoints into the run directory (restored
  at start-up by `DefaultCheckpointer`) and once more when the program stops.
  """

  def __init__(self, priority_tables_fn, replay_dir: str):
    self._replay_dir = replay_dir
    super().__init__(priority_tables_fn,
                     checkpoint_ctor=lambda: reverb.checkpointers.DefaultCheckpointer(replay_dir))

  def run(self):
    quiet_node_logs()
    announce_process('replay')
    port = lp_address.get_port_from_address(self._address.resolve())
    server = reverb.Server(tables=self._priority_tables_fn(), port=port,
                           checkpointer=self._checkpoint_ctor())
    sizes = {n: i.current_size for n, i in reverb.Client(f'localhost:{port}').server_info().items()}
    print(f'[replay] serving on port {port}; restored table sizes {sizes} from {self._replay_dir}',
          flush=True)
    stop = worker_manager.stop_event()
    while not wait_for_stop(stop, 3600.0):
      pass
    try:
      path = reverb.Client(f'localhost:{port}').checkpoint()
      print(f'[replay] final checkpoint {path}', flush=True)
    except Exception as e:  # pylint: disable=broad-except
      print(f'[replay] final checkpoint failed: {e}', flush=True)
    # Actors parked on a rate-limited insert keep their streams open, and a
    # gRPC shutdown waits for them: give it a moment, then, with replay saved,
    # end this node's own process so those actors see the server go away.
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(timeout=5)
    if stopper.is_alive() and threading.current_thread() is threading.main_thread():
      print('[replay] stopped (in-flight inserts abandoned)', flush=True)
      os._exit(0)  # pylint: disable=protected-access
    print('[replay] stopped', flush=True)
