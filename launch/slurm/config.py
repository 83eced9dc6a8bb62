"""What a Slurm launch asks the cluster for: partition, time, and resources per node group."""

import dataclasses
import math
import re
from typing import Any, Dict, Iterable, Optional, Tuple

from agents.common.errors import ConfigError
from launch.nodes.process import GROUPS

RESOURCE_KEYS = ('cpus', 'mem_gb', 'gpus')
# Per process of each group. The learner is the only one that profits from a GPU;
# set learner.gpus=1 on a GPU partition.
DEFAULT_RESOURCES = {
  'replay': {'cpus': 1, 'mem_gb': 4.0, 'gpus': 0},
  'counter': {'cpus': 1, 'mem_gb': 1.0, 'gpus': 0},
  'learner': {'cpus': 2, 'mem_gb': 8.0, 'gpus': 0},
  'gateway': {'cpus': 1, 'mem_gb': 1.0, 'gpus': 0},
  'actor': {'cpus': 1, 'mem_gb': 2.0, 'gpus': 0},
  'evaluator': {'cpus': 1, 'mem_gb': 2.0, 'gpus': 0},
}
# sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.
_TIME = re.compile(r'^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$')
_NAME = re.compile(r'^[A-Za-z0-9_.,-]+$')


def _default_resources() -> Dict[str, Dict[str, Any]]:
  return {g: dict(r) for g, r in DEFAULT_RESOURCES.items()}


@dataclasses.dataclass
class SlurmConfig:
  """Settings of `launch_type='slurm'`; each is also a `--slurm KEY=VALUE` flag."""

  # sbatch --partition / --time / --account; None leaves it to the cluster's default.
  partition: Optional[str] = None
  time_limit: Optional[str] = None
  account: Optional[str] = None
  # More sbatch options, verbatim (e.g. ['--qos=high', '--constraint=avx2']).
  sbatch_args: Tuple[str, ...] = ()
  # group -> {cpus, mem_gb, gpus}, per process of that group.
  resources: Dict[str, Dict[str, Any]] = dataclasses.field(default_factory=_default_resources)
  # How long a step waits for the replay, counter and learner to publish their
  # address (the gateway publishes its own, for robots); past it the step fails
  # saying what to check.
  address_timeout_s: float = 300.0
  # After the stop (budget, scancel, a failed node): how long the steps get to
  # checkpoint and exit before they are killed.
  stop_grace_s: float = 60.0

  def __post_init__(self):
    self.sbatch_args = tuple(self.sbatch_args)
    merged = _default_resources()
    for group, values in dict(self.resources or {}).items():
      if group not in merged:
        raise ConfigError(
          f'slurm resources: unknown node group {group!r}; groups: {", ".join(GROUPS)}'
        )
      bad = sorted(set(values) - set(RESOURCE_KEYS))
      if bad:
        raise ConfigError(
          f'slurm resources of {group}: unknown key(s) {bad}; keys: {", ".join(RESOURCE_KEYS)}'
        )
      merged[group].update(values)
    self.resources = merged
    self.validate()

  def validate(self) -> None:
    """Raises ConfigError naming the bad setting and what it must be."""
    for field in ('partition', 'account'):
      value = getattr(self, field)
      if value is not None and not (isinstance(value, str) and _NAME.match(value)):
        raise ConfigError(
          f'slurm {field}={value!r} is invalid: must be a Slurm name (letters, digits, _ . , -)'
        )
    if self.time_limit is not None and not (
      isinstance(self.time_limit, str) and _TIME.match(self.time_limit)
    ):
      raise ConfigError(
        f'slurm time_limit={self.time_limit!r} is invalid: must be sbatch '
        "--time syntax, e.g. '90', '2:00:00' or '1-12:00:00'"
      )
    if not all(isinstance(a, str) and a.startswith('-') for a in self.sbatch_args):
      raise ConfigError(
        f'slurm sbatch_args={list(self.sbatch_args)!r} is invalid: must be '
        "sbatch options, e.g. ['--qos=high']"
      )
    for group, r in self.resources.items():
      cpus, mem, gpus = r['cpus'], r['mem_gb'], r['gpus']
      if not (isinstance(cpus, int) and not isinstance(cpus, bool) and cpus >= 1):
        raise ConfigError(f'slurm {group}.cpus={cpus!r} is invalid: must be an int >= 1')
      if not (
        isinstance(mem, (int, float))
        and not isinstance(mem, bool)
        and math.isfinite(mem)
        and mem > 0
      ):
        raise ConfigError(f'slurm {group}.mem_gb={mem!r} is invalid: must be a positive number')
      if not (isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0):
        raise ConfigError(f'slurm {group}.gpus={gpus!r} is invalid: must be an int >= 0')
    for field in ('address_timeout_s', 'stop_grace_s'):
      v = getattr(self, field)
      if not (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
      ):
        raise ConfigError(f'slurm {field}={v!r} is invalid: must be a positive number of seconds')

  def memory_mb(self, group: str) -> int:
    return int(math.ceil(self.resources[group]['mem_gb'] * 1024))

  def with_overrides(self, settings: Iterable[Tuple[str, Any]]) -> 'SlurmConfig':
    """This config with `(key, value)` settings applied; keys like 'partition' or 'learner.gpus'."""
    values = dataclasses.asdict(self)
    fields = {f.name for f in dataclasses.fields(self)} - {'resources'}
    for key, value in settings:
      group, dot, what = key.partition('.')
      if dot:
        if group not in values['resources'] or what not in RESOURCE_KEYS:
          raise ConfigError(
            f'unknown slurm setting {key!r}: use GROUP.KEY with GROUP in '
            f'{", ".join(GROUPS)} and KEY in {", ".join(RESOURCE_KEYS)}'
          )
        values['resources'][group][what] = value
      elif key in fields:
        values[key] = value
      else:
        raise ConfigError(
          f'unknown slurm setting {key!r}; known: {", ".join(sorted(fields))}, '
          'or GROUP.cpus / GROUP.mem_gb / GROUP.gpus'
        )
    return SlurmConfig(**values)
