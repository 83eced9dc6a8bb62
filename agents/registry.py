"""Algorithm name -> agent: its config class, builder and presets.

Registering an agent is one line: its package in AGENT_MODULES. The package exposes
`AGENT`, an AgentEntry (see agents/mpo/__init__.py); nothing else in the program names
agents. Agents outside this tree (e.g. the test fixture tests/fixtures/random_agent) are
registered by naming their module in the environment variable COLLECT_INFER_AGENTS
(comma-separated): node processes inherit it, so every process of a program finds them.
"""

import dataclasses
import importlib
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from agents.common.errors import ConfigError

# One line per agent.
AGENT_MODULES = (
  'agents.mpo',
  'agents.bc',
  'agents.gato',
  'agents.planning',
)
EXTRA_AGENTS_ENV = 'COLLECT_INFER_AGENTS'


@dataclasses.dataclass(frozen=True)
class AgentEntry:
  """What the program needs to know about one agent."""

  name: str  # The `algorithm` of an experiment config.
  config_class: type  # An agents.common.config.AgentConfig dataclass.
  # 'module:Class' of its builder (agents.builder.Builder), imported only when built, so
  # reading a config imports no learner.
  builder: str
  # Preset name -> settings (dotted paths, as `--agent` takes them).
  presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  default_preset: Optional[str] = None
  description: str = ''

  def builder_class(self) -> type:
    module, _, name = self.builder.partition(':')
    return getattr(importlib.import_module(module), name)

  def make_builder(
    self,
    config: Any,
    spec: Any,
    obs_group_sizes: Optional[Sequence[int]] = None,
    bodies: Optional[Mapping[str, Any]] = None,
    task: Optional[str] = None,
  ):
    """The agent's builder for `config` (a config_class) and an environment spec.

    `bodies` (task -> agents.common.bodies.Body, only for a config with `several_bodies`)
    are every task of the run; `spec` is then the body of `task`, the one it acts on.
    """
    if bodies is None:
      return self.builder_class()(config, spec, obs_group_sizes)
    return self.builder_class()(config, spec, obs_group_sizes, bodies=bodies, task=task)

  def preset(self, name: Optional[str]) -> Mapping[str, Any]:
    """The settings of preset `name` (None: the agent's defaults as they are)."""
    if name is None:
      return {}
    if name not in self.presets:
      raise ConfigError(
        f'unknown preset {name!r} for algorithm {self.name!r}; choose from {sorted(self.presets)}'
      )
    return self.presets[name]


_registered: Dict[str, AgentEntry] = {}
_loaded_modules: set = set()


def register(entry: AgentEntry) -> None:
  """Adds an agent in this process (a program's other processes use COLLECT_INFER_AGENTS)."""
  known = _registered.get(entry.name)
  if known is not None and known != entry:
    raise ValueError(f'algorithm {entry.name!r} is registered twice')
  _registered[entry.name] = entry


def _load() -> None:
  extra = [m.strip() for m in os.environ.get(EXTRA_AGENTS_ENV, '').split(',') if m.strip()]
  for module in (*AGENT_MODULES, *extra):
    if module in _loaded_modules:
      continue
    try:
      entry = importlib.import_module(module).AGENT
    except (ImportError, AttributeError) as e:
      raise ConfigError(
        f'agent module {module!r} (from {EXTRA_AGENTS_ENV} or AGENT_MODULES) '
        f'does not load or has no AGENT entry: {e}'
      ) from None
    register(entry)
    _loaded_modules.add(module)


def names() -> List[str]:
  """Every registered algorithm name."""
  _load()
  return sorted(_registered)


def get(name: str) -> AgentEntry:
  """The entry of algorithm `name`; ConfigError listing the registered names if none."""
  _load()
  if name not in _registered:
    raise ConfigError(f'unknown algorithm {name!r}; registered: {", ".join(sorted(_registered))}')
  return _registered[name]
