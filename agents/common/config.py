"""What every agent config shares: nested dicts in and out, dotted overrides, legacy keys, checks.

An agent config is a dataclass deriving from `AgentConfig`; fields that belong together are
typed sub-configs (dataclasses deriving from `Config`), e.g. `MPOConfig.pmpo: PMPOConfig`.
They are written and read as nested dicts (config.json), overridden by dotted paths
(`--agent pmpo.alpha=0.5`), and validated in one place: the agent config's `validate`, which
checks every sub-config first, then its own fields. A sub-config built alone is not checked.
"""

import dataclasses
import math
import typing
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from agents.common.errors import ConfigError

C = TypeVar('C', bound='Config')


def is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def finite(v: Any) -> bool:
  """A real number (not a bool), neither NaN nor infinite."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_ints(v: Any) -> bool:
  """A non-empty sequence of ints > 0 (layer sizes)."""
  return isinstance(v, tuple) and len(v) > 0 and all(is_int(s) and s > 0 for s in v)


class Need:
  """need(cond, field, rule): raises ConfigError naming `<path>.<field>`, its value and the rule."""

  def __init__(self, config: Any, path: str):
    self._config = config
    self._path = path

  def __call__(self, cond: bool, field: str, rule: str) -> None:
    if not cond:
      raise ConfigError(
        f'{self._path}.{field}={getattr(self._config, field)!r} is invalid: must be {rule}'
      )


class Config:
  """Mixin for config dataclasses; see the module docstring."""

  # Old flat field names (as stored in earlier runs' config.json) -> their dotted paths now.
  legacy_keys: ClassVar[Mapping[str, str]] = {}

  @classmethod
  def sub_configs(cls) -> Dict[str, Type['Config']]:
    """Fields whose type is itself a Config: name -> class."""
    hints = typing.get_type_hints(cls)
    return {
      f.name: hints[f.name]
      for f in dataclasses.fields(cls)
      if isinstance(hints[f.name], type) and issubclass(hints[f.name], Config)
    }

  @classmethod
  def field_paths(cls) -> List[str]:
    """Dotted paths of every leaf field, sub-configs' fields included."""
    subs = cls.sub_configs()
    paths = []
    for f in dataclasses.fields(cls):
      if f.name in subs:
        paths += [f'{f.name}.{p}' for p in subs[f.name].field_paths()]
      else:
        paths.append(f.name)
    return paths

  @classmethod
  def migrate_legacy(cls, values: Dict[str, Any]) -> Dict[str, Any]:
    """Renames old flat keys to their dotted paths (a key that is a field today stays)."""
    known = {f.name for f in dataclasses.fields(cls)}
    return {
      (cls.legacy_keys[k] if k not in known and k in cls.legacy_keys else k): v
      for k, v in values.items()
    }

  @classmethod
  def flatten(cls, values: Mapping[str, Any]) -> Dict[str, Any]:
    """{dotted path: value} from nested dicts, dotted keys, legacy names or sub-config objects.

    Raises ConfigError naming every unknown field, and the known ones.
    """
    if isinstance(values, Config):
      values = values.to_dict()
    flat: Dict[str, Any] = {}
    unknown: List[str] = []
    cls._flatten_into(cls.migrate_legacy(dict(values)), '', flat, unknown)
    if unknown:
      raise ConfigError(
        f'unknown {cls.__name__} field(s) {sorted(unknown)}; known: {cls.field_paths()}'
      )
    return flat

  @classmethod
  def _flatten_into(
    cls, values: Mapping[str, Any], prefix: str, flat: Dict[str, Any], unknown: List[str]
  ) -> None:
    subs = cls.sub_configs()
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in values.items():
      head, dot, rest = str(key).partition('.')
      if head not in known or (dot and head not in subs):
        unknown.append(prefix + str(key))
      elif head in subs and dot:
        subs[head]._flatten_into({rest: value}, f'{prefix}{head}.', flat, unknown)
      elif head in subs:
        if isinstance(value, Config):
          value = value.to_dict()
        if not isinstance(value, Mapping):
          raise ConfigError(
            f'{cls.__name__}.{prefix}{head} must be a mapping of '
            f'{subs[head].__name__} fields, got {value!r}'
          )
        subs[head]._flatten_into(value, f'{prefix}{head}.', flat, unknown)
      else:
        flat[prefix + head] = value

  @classmethod
  def from_dict(cls: Type[C], values: Mapping[str, Any]) -> C:
    """The config from nested dicts and / or dotted keys (old flat names are renamed)."""
    return cls._build(cls.flatten(values))

  @classmethod
  def _build(cls: Type[C], flat: Mapping[str, Any]) -> C:
    subs = cls.sub_configs()
    kwargs = {k: v for k, v in flat.items() if '.' not in k}
    factories = {f.name: f.default_factory for f in dataclasses.fields(cls)}
    for name, sub in subs.items():
      inner = {k[len(name) + 1 :]: v for k, v in flat.items() if k.startswith(name + '.')}
      factory = factories.get(name, dataclasses.MISSING)
      if factory is not dataclasses.MISSING:
        # Unset fields keep the parent's default sub-config (e.g. an agent's own replay
        # defaults), not the sub-config class's: `replay.batch_size=64` changes one field.
        inner = {**sub.flatten(factory()), **inner}
      kwargs[name] = sub._build(inner)
    return cls(**kwargs)

  def to_dict(self) -> Dict[str, Any]:
    """Nested plain data (tuples stay tuples; JSON writes them as lists)."""
    return dataclasses.asdict(self)

  def with_overrides(self: C, overrides: Mapping[str, Any]) -> C:
    """A copy with `overrides` (dotted, nested or legacy keys) applied, validated again."""
    cls = type(self)
    return cls._build({**cls.flatten(self.to_dict()), **cls.flatten(overrides)})

  def check(self, need: Need) -> None:
    """This level's rules (sub-configs check their own); raises through `need`."""

  def validate(self, path: Optional[str] = None) -> None:
    """Checks every sub-config, then this level; raises ConfigError naming the first bad field."""
    path = path or type(self).__name__
    for name, sub in self.sub_configs().items():
      value = getattr(self, name)
      if isinstance(value, Mapping):  # e.g. MPOConfig(pmpo={'alpha': 0.5})
        value = sub.from_dict(value)
        object.__setattr__(self, name, value)
      if not isinstance(value, sub):
        raise ConfigError(f'{path}.{name}={value!r} is invalid: must be a {sub.__name__}')
      value.validate(f'{path}.{name}')
    self.check(Need(self, path))


def merge_overrides(config_class: Type[Config], *layers: Mapping[str, Any]) -> Dict[str, Any]:
  """Layers of settings (e.g. a preset, then --agent flags), later winning, as dotted keys."""
  merged: Dict[str, Any] = {}
  for layer in layers:
    merged.update(config_class.flatten(layer))
  return merged


class AgentConfig(Config):
  """The settings of one agent. Subclasses are dataclasses with a `replay: ReplayConfig` field
  (agents.replay_pipeline): the program reads batch size, n-step and discount from there, for
  every agent alike. What the program asks of an agent's config beyond that is below."""

  # How a user spells the settings behind `learns_from_labels` and `success_return`, for the
  # experiment's errors (e.g. "pmpo.source='labels'").
  labels_setting: ClassVar[str] = 'labels'
  success_return_setting: ClassVar[str] = 'success_return'

  def __post_init__(self):
    self.validate()

  @property
  def learns_from_labels(self) -> bool:
    """Whether the learner trains on stored episodes' success labels (replay has none)."""
    return False

  @property
  def success_return(self) -> Optional[float]:
    """Return at or above which an unlabelled stored episode counts as successful."""
    return None

  @property
  def needs_observation_groups(self) -> bool:
    """Whether the builder needs the task's observation groups (e.g. as Perceiver tokens)."""
    return False

  @property
  def takes_pixels(self) -> bool:
    """Whether the agent acts and learns from camera images (--pixels)."""
    return False

  @property
  def trains_on_store(self) -> bool:
    """Whether the learner trains on stored episodes in every mode (its builder's
    `make_store_iterator`), so the actors must store theirs."""
    return False

  @property
  def several_bodies(self) -> bool:
    """Whether one learner serves tasks of different observation and action sizes (its
    builder takes `bodies` and `task`, see agents.common.bodies); else every task of a run
    must share one spec."""
    return False

  @property
  def policy_run(self) -> Optional[Tuple[str, str]]:
    """(the setting that names it, a run directory) of another run's policy this agent's
    actors use (launch.borrowed_policy), or None."""
    return None


def tuple_or_none(value: Any) -> Optional[Tuple]:
  """JSON (config.json, --agent) gives lists; a tuple keeps a config hashable and comparable."""
  return tuple(value) if isinstance(value, list) else value
