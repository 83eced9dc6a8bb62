"""Command-line flags generated from a config dataclass's fields (`launch.config.setting`).

Names, defaults, help and choices come from the dataclass, so an entry point never
re-declares them. Every generated flag defaults to None, meaning "not given": a new run
takes the dataclass default, a relaunch keeps the run's stored value.
"""

import argparse
import dataclasses
import json
import typing
from typing import Any, Dict, Optional, Sequence, Type


def task_list(parser: argparse.ArgumentParser, flag: str, text: str, at_least: int = 1):
  """The comma-separated tasks of `flag` (`text`), at least `at_least` different ones, each
  a task name environments.suite knows; parser.error naming the flag otherwise."""
  from environments.suite import parse_task

  tasks = [t.strip() for t in text.split(',') if t.strip()]
  if len(tasks) < at_least or len(set(tasks)) != len(tasks):
    parser.error(f'{flag}: name at least {at_least} different tasks, each once')
  for task in tasks:
    try:
      parse_task(task)
    except ValueError as e:
      parser.error(f'{flag}: {e}')
  return tasks


def require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, names) -> None:
  """parser.error naming the first of the int flags `names` below 1."""
  for name in names:
    if getattr(args, name) < 1:
      parser.error(f'--{name} must be >= 1')


def agent_setting(text: str):
  """An --agent FIELD=VALUE flag as (field, value), the value read as JSON where it is
  (Python's True and False as well as JSON's true and false)."""
  key, sep, value = text.partition('=')
  if not sep:
    raise argparse.ArgumentTypeError(f'expected FIELD=VALUE, got {text!r}')
  if value in ('True', 'False'):
    return key, value == 'True'
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def _scalar_type(hint: Any) -> Any:
  """The argparse `type` of a field: Optional[X] -> X; Tuple[X, ...] -> X."""
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  origin = typing.get_origin(hint)
  if origin is typing.Union and len(args) == 1:
    return _scalar_type(args[0])
  if origin is tuple and args:
    return _scalar_type(args[0])
  return hint


def _is_sequence(hint: Any) -> bool:
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is typing.Union and len(args) == 1:
    return _is_sequence(args[0])
  return typing.get_origin(hint) is tuple


def cli_fields(config_cls: Type[Any]) -> Sequence[dataclasses.Field]:
  """The fields of `config_cls` that have a generated flag."""
  return [f for f in dataclasses.fields(config_cls) if f.metadata.get('cli', False)]


def _default_text(field: dataclasses.Field) -> str:
  if field.default is dataclasses.MISSING or 'default:' in field.metadata['help']:
    return ''
  if isinstance(field.default, tuple) and not field.default:
    return ' (default: none)'
  return f' (default: {field.default})'


def add_config_flags(parser: argparse.ArgumentParser, config_cls: Type[Any]) -> None:
  """Adds one flag per field of `config_cls` described with `launch.config.setting`."""
  hints = typing.get_type_hints(config_cls)
  group = parser.add_argument_group(
    f'{config_cls.__name__} (a relaunch may change those marked [resumable])'
  )
  for field in cli_fields(config_cls):
    meta = field.metadata
    hint = hints[field.name]
    text = meta['help'] + _default_text(field) + (' [resumable]' if meta['resumable'] else '')
    flags = [f'--{field.name}', *meta['aliases']]
    if _scalar_type(hint) is bool:
      negative = meta.get('negative_flag')
      group.add_argument(
        *flags, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=text
      )
      if negative:
        group.add_argument(
          negative,
          dest=field.name,
          action='store_const',
          const=False,
          help=f'same as --no-{field.name}',
        )
      continue
    kwargs: Dict[str, Any] = {
      'dest': field.name,
      'default': None,
      'help': text,
      'type': _scalar_type(hint),
    }
    choices = meta['choices']() if callable(meta['choices']) else meta['choices']
    if choices:
      kwargs['choices'] = choices
    if _is_sequence(hint):
      kwargs.update(nargs='+', metavar='VALUE')
    group.add_argument(*flags, **kwargs)


def given_values(args: argparse.Namespace, config_cls: Type[Any]) -> Dict[str, Any]:
  """The config fields the command line set (flags left out are absent, not None)."""
  values = {}
  for field in cli_fields(config_cls):
    value: Optional[Any] = getattr(args, field.name, None)
    if value is not None:
      values[field.name] = list(value) if isinstance(value, (list, tuple)) else value
  return values
