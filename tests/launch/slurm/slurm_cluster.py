"""A real single-machine Slurm cluster (munged, slurmctld, slurmd on loopback) for tests.

Everything lives in one private directory: the munge key and socket, the
generated slurm.conf, state, spool and logs. Commands see the cluster through
`SLURM_CONF` (see `env()`), so nothing in /etc is changed and a Slurm the
machine may already run is left alone.
"""

import os
import pathlib
import shutil
import socket
import subprocess
import time
from typing import Dict, List, Optional

PACKAGES = ['slurmctld', 'slurmd', 'slurm-client', 'munge']
DAEMONS = ['munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue']


def _which(name: str) -> Optional[str]:
  return shutil.which(name, path=os.environ.get('PATH', '') + ':/usr/sbin:/sbin')


def ensure_installed() -> Optional[str]:
  """Installs Slurm and munge from Debian's packages if missing; returns why not, or None."""
  if all(_which(d) for d in DAEMONS):
    return None
  if os.geteuid() != 0:
    return 'Slurm is not installed and installing it needs root (apt-get install slurm-wlm munge)'
  if not shutil.which('apt-get'):
    return 'Slurm is not installed and this machine has no apt-get to install it'
  env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
  for cmd in (
    ['apt-get', 'update', '-qq'],
    ['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *PACKAGES],
  ):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 and cmd[1] == 'install':
      return f'apt-get could not install {" ".join(PACKAGES)}: {done.stderr.strip()[-500:]}'
  missing = [d for d in DAEMONS if not _which(d)]
  return f'installed, but {missing} are still missing' if missing else None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class SlurmCluster:
  """One controller and `nodes` compute nodes, partition `debug`.

  With one node, it is this host on loopback. With more, each compute node is a
  slurmd in its own network namespace, on a bridge with its own address and host
  name (resolvable by the nodes through a hosts file bind-mounted in their own
  mount namespace), so a job's steps on different nodes reach each other over
  real host addresses.
  """

  def __init__(self, root: pathlib.Path, nodes: int = 1, cpus: int = 16, memory_mb: int = 64000):
    self.root = pathlib.Path(root)
    self.host = socket.gethostname()
    self.cpus = cpus
    self.memory_mb = memory_mb
    self._procs: List[subprocess.Popen] = []
    self.conf = self.root / 'slurm.conf'
    self.munge_socket = self.root / 'munge' / 'munge.socket'
    self._tag = f'{os.getpid() % 100000}'
    if nodes == 1:
      self.nodes = {self.host: '127.0.0.1'}
      self.controller_addr = '127.0.0.1'
    else:
      net = f'10.213.{os.getpid() % 250}'
      self.controller_addr = f'{net}.1'
      self.nodes = {f'ci{self._tag}n{i}': f'{net}.{10 + i}' for i in range(1, nodes + 1)}
    self._namespaces: List[str] = []
    self._links: List[str] = []

  @property
  def node(self) -> str:
    """The first compute node's name."""
    return next(iter(self.nodes))

  def _ip(self, *args: str, ns: Optional[str] = None) -> None:
    cmd = (['ip', 'netns', 'exec', ns, 'ip'] if ns else ['ip']) + list(args)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
      raise RuntimeError(f'{" ".join(cmd)}: {done.stderr.strip()}')

  def _make_network(self) -> None:
    bridge = f'cb{self._tag}'
    self._ip('link', 'add', bridge, 'type', 'bridge')
    self._links.append(bridge)
    self._ip('addr', 'add', f'{self.controller_addr}/24', 'dev', bridge)
    self._ip('link', 'set', bridge, 'up')
    hosts = f'127.0.0.1 localhost\n{self.controller_addr} {self.host}\n' + ''.join(
      f'{addr} {name}\n' for name, addr in self.nodes.items()
    )
    for i, (name, addr) in enumerate(self.nodes.items(), 1):
      self._ip('netns', 'add', name)
      self._namespaces.append(name)
      outer, inner = f'cv{self._tag}{i}a', f'cv{self._tag}{i}b'
      self._ip('link', 'add', outer, 'type', 'veth', 'peer', 'name', inner)
      self._links.append(outer)
      self._ip('link', 'set', outer, 'master', bridge, 'up')
      self._ip('link', 'set', inner, 'netns', name)
      self._ip('addr', 'add', f'{addr}/24', 'dev', inner, ns=name)
      self._ip('link', 'set', inner, 'up', ns=name)
      self._ip('link', 'set', 'lo', 'up', ns=name)
    # Bind-mounted over /etc/hosts for each slurmd (and the job steps it starts).
    self.root.mkdir(parents=True, exist_ok=True)
    (self.root / 'hosts').write_text(hosts)

  def _remove_network(self) -> None:
    for name in self._namespaces:
      subprocess.run(['ip', 'netns', 'del', name], capture_output=True)
    for link in reversed(self._links):
      subprocess.run(['ip', 'link', 'del', link], capture_output=True)
    self._namespaces.clear()
    self._links.clear()

  def env(self) -> Dict[str, str]:
    """The environment for Slurm commands (sbatch, squeue, ...) talking to this cluster."""
    path = os.environ.get('PATH', '')
    return {**os.environ, 'SLURM_CONF': str(self.conf), 'PATH': f'{path}:/usr/sbin:/sbin'}

  def _write_config(self) -> None:
    for d in ('munge', 'state', 'spool', 'log'):
      (self.root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(self.root / 'munge', 0o700)
    key = self.root / 'munge' / 'munge.key'
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    r = self.root
    nodes = ''.join(
      f'NodeName={n} NodeAddr={a} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN\n'
      for n, a in self.nodes.items()
    )
    # The node advertises more CPUs than the machine has (config_overrides) so that
    # every node group of a tiny experiment gets its own allocation on 2 cores.
    self.conf.write_text(f"""\
ClusterName=ci
SlurmctldHost={self.host}({self.controller_addr})
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=30
InactiveLimit=0
MinJobAge=600
{nodes}PartitionName=debug Nodes={','.join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")

  def start(self, timeout: float = 60.0) -> 'SlurmCluster':
    """Starts the daemons and waits for every node; on failure leaves nothing running."""
    try:
      return self._start(timeout)
    except (RuntimeError, OSError) as e:
      self.stop()
      raise RuntimeError(str(e)) from e

  def _start(self, timeout: float) -> 'SlurmCluster':
    if len(self.nodes) > 1:
      self._make_network()
    self._write_config()
    r = self.root
    log = open(r / 'log' / 'daemons.out', 'a')
    self._procs.append(
      subprocess.Popen(
        [
          _which('munged'),
          '-F',
          '-f',
          f'--socket={self.munge_socket}',
          f'--key-file={r}/munge/munge.key',
          f'--pid-file={r}/munge/munged.pid',
          f'--log-file={r}/log/munged.log',
          f'--seed-file={r}/munge/seed',
        ],
        stdout=log,
        stderr=log,
      )
    )
    self._wait(self.munge_socket.exists, 20, 'munged to create its socket')
    env = self.env()
    self._procs.append(
      subprocess.Popen([_which('slurmctld'), '-D', '-i'], env=env, stdout=log, stderr=log)
    )
    for name in self.nodes:
      (r / 'spool' / name).mkdir(parents=True, exist_ok=True)
    if len(self.nodes) == 1:
      self._procs.append(
        subprocess.Popen([_which('slurmd'), '-D'], env=env, stdout=log, stderr=log)
      )
    else:
      for name in self.nodes:
        # Only the network namespace changes (`ip netns exec` would also remount
        # /sys, hiding the cgroup file system slurmd needs); a private mount
        # namespace gives the node the cluster's host names.
        script = f'mount --bind {r / "hosts"} /etc/hosts && exec {_which("slurmd")} -D -N {name}'
        self._procs.append(
          subprocess.Popen(
            [
              'nsenter',
              f'--net=/run/netns/{name}',
              'unshare',
              '--mount',
              '--propagation',
              'private',
              'sh',
              '-c',
              script,
            ],
            env=env,
            stdout=log,
            stderr=log,
          )
        )
    self._wait(self._nodes_idle, timeout, 'the Slurm nodes to become idle')
    return self

  def _nodes_idle(self) -> bool:
    out = subprocess.run(
      ['sinfo', '-h', '-N', '-o', '%t'], env=self.env(), capture_output=True, text=True
    )
    states = out.stdout.split()
    return (
      out.returncode == 0
      and len(states) == len(self.nodes)
      and all(s.startswith('idle') for s in states)
    )

  def _wait(self, ok, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
      if ok():
        return
      for p in self._procs:
        if p.poll() is not None:
          raise RuntimeError(
            f'{p.args[0]} exited ({p.returncode}) while waiting for {what}; '
            f'logs in {self.root / "log"}'
          )
      time.sleep(0.3)
    raise RuntimeError(f'timed out waiting for {what}; logs in {self.root / "log"}')

  def cancel_all(self, timeout: float = 90.0) -> None:
    """Cancels every job and waits until the queue is empty (steps die with their job)."""
    env = self.env()
    jobs = subprocess.run(
      ['squeue', '-h', '-o', '%A'], env=env, capture_output=True, text=True
    ).stdout.split()
    if jobs:
      subprocess.run(['scancel', *jobs], env=env, capture_output=True)
    deadline = time.time() + timeout
    while (
      time.time() < deadline
      and subprocess.run(['squeue', '-h'], env=env, capture_output=True, text=True).stdout.strip()
    ):
      time.sleep(1)

  def stop(self) -> None:
    # Without slurmd nothing would end a running job's processes.
    if self._procs and all(p.poll() is None for p in self._procs):
      self.cancel_all()
    for p in reversed(self._procs):
      p.terminate()
    for p in reversed(self._procs):
      try:
        p.wait(timeout=20)
      except subprocess.TimeoutExpired:
        p.kill()
    self._procs.clear()
    self._remove_network()
