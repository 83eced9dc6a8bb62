"""Which TCP ports processes listen on, and on which address: read from /proc, no tools needed.

A process's sockets are its /proc/<pid>/fd links 'socket:[<inode>]'; the listening ones
(state 0A) are the rows of /proc/<pid>/net/tcp and tcp6 (its network namespace) with
those inodes.
"""

import dataclasses
import ipaddress
import os
import sys
from typing import Iterable, List, Set, Union

_LISTEN = '0A'


@dataclasses.dataclass(frozen=True)
class Listener:
  pid: int
  address: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
  port: int

  @property
  def loopback(self) -> bool:
    mapped = getattr(self.address, 'ipv4_mapped', None)
    return self.address.is_loopback or bool(mapped and mapped.is_loopback)

  @property
  def wildcard(self) -> bool:
    return self.address.is_unspecified

  def __str__(self) -> str:  # As `ss -ltn` writes it.
    mapped = getattr(self.address, 'ipv4_mapped', None)
    if self.address.version == 4:
      return f'{self.address}:{self.port}'
    return f'[::ffff:{mapped}]:{self.port}' if mapped else f'[{self.address}]:{self.port}'


def _socket_inodes(pid: int) -> Set[int]:
  inodes = set()
  try:
    fds = os.listdir(f'/proc/{pid}/fd')
  except OSError:  # Gone, or not ours.
    return inodes
  for fd in fds:
    try:
      target = os.readlink(f'/proc/{pid}/fd/{fd}')
    except OSError:
      continue
    if target.startswith('socket:['):
      inodes.add(int(target[len('socket:[') : -1]))
  return inodes


def _address(hex_address: str) -> Union[ipaddress.IPv4Address, ipaddress.IPv6Address]:
  raw = bytes.fromhex(hex_address)
  if sys.byteorder == 'little':  # The kernel prints 32-bit words in host byte order.
    raw = b''.join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
  return ipaddress.ip_address(raw)


def listening(pids: Iterable[int]) -> List[Listener]:
  """Every listening TCP socket (IPv4 and IPv6) that one of `pids` holds open."""
  found = []
  for pid in pids:
    inodes = _socket_inodes(pid)
    if not inodes:
      continue
    for table in ('tcp', 'tcp6'):
      try:
        with open(f'/proc/{pid}/net/{table}') as f:
          rows = f.read().splitlines()[1:]
      except OSError:
        continue
      for row in rows:
        fields = row.split()
        if fields[3] != _LISTEN or int(fields[9]) not in inodes:
          continue
        hex_address, hex_port = fields[1].split(':')
        found.append(Listener(pid, _address(hex_address), int(hex_port, 16)))
  return found
