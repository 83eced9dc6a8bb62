"""The job's address book: servers publish 'host:port' in the shared run directory, others wait.

One file per server under <run>/slurm/<job id>/addresses/, written
atomically, so a fresh job never reads a previous job's ports. A missing
entry after the timeout means the server's step failed to start, or the
steps do not share the run directory's file system.
"""

import json
import os
import pathlib
import socket
import time
from typing import Callable, Dict, Optional

from launchpad import address as lp_address

from agents.common.errors import UserError
from agents.common.files import atomic_write_bytes

# The program's servers; the gateway's address is for robots (launch.attach) only.
SERVERS = ('replay', 'counter', 'learner', 'gateway')
STOP_FILE = 'STOP'


class AddressTimeout(UserError):
  """A server never published its address."""


def job_dir(run_dir: pathlib.Path, job_id: str) -> pathlib.Path:
  return pathlib.Path(run_dir) / 'slurm' / str(job_id)


def node_host() -> str:
  """This step's host name as Slurm knows it (the node name), not localhost."""
  return os.environ.get('SLURMD_NODENAME') or socket.gethostname()


def free_port() -> int:
  """A free TCP port, never one this process has handed out already.

  Through portpicker, which Launchpad's addresses use too: a port closed after a bind to 0
  was seen handed to the learner as well as the gateway (the learner then failed to bind).
  """
  import portpicker  # pylint: disable=import-outside-toplevel

  return portpicker.pick_unused_port()


class AddressBook:
  """Reads and writes the server addresses of one job."""

  def __init__(self, run_dir: pathlib.Path, job_id: str):
    self.dir = job_dir(run_dir, job_id) / 'addresses'
    self.run_dir = pathlib.Path(run_dir)

  def publish(self, name: str, address: str) -> None:
    self.dir.mkdir(parents=True, exist_ok=True)
    entry = {'address': address, 'host': node_host(), 'pid': os.getpid(), 'time': time.time()}
    atomic_write_bytes(self.dir / f'{name}.json', json.dumps(entry).encode())

  def read(self, name: str) -> Optional[str]:
    try:
      return json.loads((self.dir / f'{name}.json').read_text())['address']
    except (OSError, ValueError, KeyError):
      return None

  def wait(
    self, name: str, timeout: float, poll: float = 0.5, alive: Callable[[], bool] = lambda: True
  ) -> str:
    """The address `name` published; raises AddressTimeout saying what to check."""
    deadline = time.monotonic() + timeout
    while True:
      address = self.read(name)
      if address:
        return address
      if time.monotonic() > deadline or not alive():
        raise AddressTimeout(
          f'the {name} step published no address in {self.dir} within {timeout:.0f} s '
          f'(seen from host {node_host()}): either it failed to start (see its log under '
          f'{self.run_dir / "logs" / "slurm"}), or {self.run_dir} is not on a file system '
          'that every Slurm node shares; put --run_dir on a shared file system '
          '(NFS, Lustre, ...)'
        )
      time.sleep(poll)

  def all(self) -> Dict[str, str]:
    return {n: a for n in SERVERS if (a := self.read(n))}


class FixedAddress(lp_address.AbstractAddressBuilder):
  """A server's own address: this node's host and a port it will bind."""

  def __init__(self, address: str):
    self._address = address

  def build(self) -> str:
    return self._address


class PublishedAddress(lp_address.AbstractAddressBuilder):
  """Another server's address, read from the book when first needed."""

  def __init__(self, book: AddressBook, name: str, timeout: float):
    self._book, self._name, self._timeout = book, name, timeout
    self._address: Optional[str] = None

  def build(self) -> str:
    if self._address is None:
      self._address = self._book.wait(self._name, self._timeout)
    return self._address
