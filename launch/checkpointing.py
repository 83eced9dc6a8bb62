"""Learner checkpoints: arrays and a JSON manifest, with an integrity header; no pickle.

File format of ``ckpt-{step:012d}.ckpt``::

    b"COLLECT_INFER_CKPT v2\\n"
    b"<sha256 hex of payload> <payload length>\\n"
    <payload: an uncompressed .npz archive (np.load(io.BytesIO(payload)) opens it)>

The archive holds ``manifest.json``, which describes the saved pytree (dicts, lists,
tuples, NamedTuples by class name, plain numbers and strings, None), and one ``<i>.npy``
member per array leaf, written and read with ``allow_pickle=False``. Loading one never
runs code from the file: NamedTuple classes are looked up by name and rebuilt from their
fields (``tuple.__new__``, no constructor call) only if they are NamedTuples defined in
the project or its libraries (see ``_CLASS_PACKAGES``). The header makes a truncated or
corrupted file detectable before it is parsed, so a crash mid-write costs one checkpoint
rather than the run.

Older versions wrote pickles (``ckpt-{step:012d}.pkl``). A Checkpointer reads those only
for its run's own directory (``read_pickles=True``, with a warning); pointing one at any
other directory refuses them (``python -m launch.checkpointing convert PATH`` converts a
pickle its owner trusts).

Saves to one directory are serialised by an advisory lock (``.lock``, fcntl), across
threads and processes alike.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import importlib
import io
import json
import os
import pathlib
import pickle
import re
import secrets
import sys
import time
import zipfile
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from agents.common.errors import ConfigError, RunDirError
from agents.common.files import fsync_dir, write_all
from agents.common.logs import get_logger

logger = get_logger('checkpointing')

_MAGIC = b'COLLECT_INFER_CKPT v2\n'
_PREFIX = 'ckpt-'
_SUFFIX = '.ckpt'
_LEGACY_SUFFIX = '.pkl'
_NAME_RE = re.compile(r'^ckpt-(\d+)\.ckpt$')
_LEGACY_NAME_RE = re.compile(r'^ckpt-(\d+)\.pkl$')
_TMP_SUFFIX = '.tmp'
# Temp files of this module: .<final name>.<pid>.<random>.tmp
_TMP_RE = re.compile(r'^\.?ckpt-.*?(?:\.(\d+)\.[0-9a-f]+)?\.tmp$')
_LOCK_NAME = '.lock'
# A temp file this old belongs to no live save (a save writes in seconds).
STALE_TMP_SECONDS = 600.0
LOCK_TIMEOUT_SECONDS = 600.0
_MANIFEST = 'manifest.json'
_FORMAT = 'collect_infer checkpoint'
_VERSION = 2
# sha256 hex (64) + space + a length of at most 20 digits.
_MAX_HEADER_LINE = 96
# Top-level packages whose NamedTuple classes a checkpoint may name (and import when not
# yet imported), plus those of agents registered through COLLECT_INFER_AGENTS. Classes of
# modules already imported are found without importing anything.
_CLASS_PACKAGES = frozenset(
  {'agents', 'networks', 'environments', 'launch', 'experiments', 'optax', 'haiku', 'acme', 'chex'}
)


class _CorruptCheckpoint(Exception):
  """A checkpoint file failed its integrity check."""


class _Unreadable(Exception):
  """An intact checkpoint file whose content this version cannot rebuild."""


# ----------------------------------------------------------------------------
# The pytree <-> (manifest, arrays) encoding.


def _class_name(cls: type) -> str:
  return f'{cls.__module__}:{cls.__qualname__}'


def _allowed_packages() -> frozenset:
  from agents.registry import EXTRA_AGENTS_ENV  # Agents' own packages (e.g. a test fixture).

  extra = os.environ.get(EXTRA_AGENTS_ENV, '')
  return _CLASS_PACKAGES | {m.strip().split('.')[0] for m in extra.split(',') if m.strip()}


def _named_tuple_class(name: str, fields: List[str]) -> type:
  """The NamedTuple class `name` ('module:Qual.Name') with these fields, or _Unreadable."""
  module_name, _, qualname = name.partition(':')
  module = sys.modules.get(module_name)
  if module is None:
    if module_name.split('.')[0] not in _allowed_packages():
      raise _Unreadable(f'it names class {name}, from a module a checkpoint may not import')
    try:
      module = importlib.import_module(module_name)
    except Exception as err:  # pylint: disable=broad-except
      raise _Unreadable(f'class {name}: module {module_name} not importable ({err})') from err
  cls: Any = module
  for part in qualname.split('.'):
    cls = getattr(cls, part, None)
  if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, '_fields')):
    raise _Unreadable(f'{name} is not a NamedTuple class in this version')
  if list(cls._fields) != list(fields):
    raise _Unreadable(f'{name} has fields {list(cls._fields)} now, the checkpoint {fields}')
  return cls


class _Encoder:
  """Turns a pytree into a JSON-able manifest node and a list of arrays."""

  def __init__(self):
    self.arrays: List[np.ndarray] = []

  def _array(self, value: np.ndarray, where: str, scalar: bool) -> Dict[str, Any]:
    if value.dtype.hasobject:
      raise TypeError(f'checkpoint leaf {where}: arrays of Python objects cannot be stored')
    self.arrays.append(value)
    node = {'kind': 'array', 'index': len(self.arrays) - 1, 'dtype': value.dtype.str}
    node['shape'] = list(value.shape)
    if scalar:
      node['scalar'] = True
    return node

  def encode(self, value: Any, where: str = 'state') -> Dict[str, Any]:
    if value is None:
      return {'kind': 'none'}
    if isinstance(value, (bool, int, float, str)):
      return {'kind': 'value', 'value': value}
    if isinstance(value, np.ndarray):
      return self._array(value, where, scalar=False)
    if isinstance(value, np.generic):
      return self._array(np.asarray(value), where, scalar=True)
    if isinstance(value, dict):
      items = []
      for key, child in value.items():
        if not isinstance(key, str):
          raise TypeError(f'checkpoint dict {where} has a non-string key {key!r}')
        items.append([key, self.encode(child, f'{where}[{key!r}]')])
      return {'kind': 'dict', 'items': items}
    if isinstance(value, tuple) and hasattr(type(value), '_fields'):
      cls = type(value)
      try:
        found = _named_tuple_class(_class_name(cls), list(cls._fields))
      except _Unreadable:
        found = None
      if found is not cls:
        raise TypeError(
          f'checkpoint leaf {where}: NamedTuple {_class_name(cls)} must be defined at module '
          f'level of an importable module (it is restored by name)'
        )
      children = [self.encode(c, f'{where}.{f}') for f, c in zip(cls._fields, value)]
      return {
        'kind': 'namedtuple',
        'class': _class_name(cls),
        'fields': list(cls._fields),
        'items': children,
      }
    if type(value) in (tuple, list):
      kind = 'tuple' if isinstance(value, tuple) else 'list'
      return {'kind': kind, 'items': [self.encode(c, f'{where}[{i}]') for i, c in enumerate(value)]}
    if hasattr(value, '__array__') and not isinstance(value, (str, bytes)):
      # jax arrays (also ones on an accelerator) are copied to host memory.
      return self._array(np.asarray(value), where, scalar=False)
    raise TypeError(f'checkpoint leaf {where} has type {type(value).__name__}, which is not stored')


def _decode_node(node: Any, arrays: List[np.ndarray]) -> Any:
  """Rebuilds a pytree from a manifest node; raises _Unreadable for anything unexpected."""
  if not isinstance(node, dict):
    raise _Unreadable('malformed manifest node')
  kind = node.get('kind')
  if kind == 'none':
    return None
  if kind == 'value':
    value = node.get('value')
    if not isinstance(value, (bool, int, float, str)):
      raise _Unreadable('malformed value in manifest')
    return value
  if kind == 'array':
    index = node.get('index')
    if not isinstance(index, int) or not 0 <= index < len(arrays):
      raise _Unreadable('manifest names a missing array')
    array = arrays[index]
    if array.dtype.str != node.get('dtype') or list(array.shape) != node.get('shape'):
      raise _Unreadable(f'array {index} is {array.dtype.str}{list(array.shape)}, manifest differs')
    return array[()] if node.get('scalar') else array
  items = node.get('items')
  if not isinstance(items, list):
    raise _Unreadable('malformed manifest node')
  if kind == 'dict':
    out = {}
    for pair in items:
      if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
        raise _Unreadable('malformed dict in manifest')
      out[pair[0]] = _decode_node(pair[1], arrays)
    return out
  children = [_decode_node(c, arrays) for c in items]
  if kind == 'list':
    return children
  if kind == 'tuple':
    return tuple(children)
  if kind == 'namedtuple':
    name, fields = node.get('class'), node.get('fields')
    if not isinstance(name, str) or not isinstance(fields, list) or len(fields) != len(children):
      raise _Unreadable('malformed NamedTuple in manifest')
    cls = _named_tuple_class(name, fields)
    return tuple.__new__(cls, children)  # No constructor of the class runs.
  raise _Unreadable(f'unknown manifest node kind {kind!r}')


def _to_archive(state: Any) -> bytes:
  encoder = _Encoder()
  tree = encoder.encode(state)
  manifest = {'format': _FORMAT, 'version': _VERSION, 'tree': tree, 'arrays': len(encoder.arrays)}
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w', compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
    archive.writestr(_MANIFEST, json.dumps(manifest))
    for i, array in enumerate(encoder.arrays):
      with archive.open(f'{i}.npy', 'w', force_zip64=True) as member:
        np.lib.format.write_array(member, array, allow_pickle=False)
  return buffer.getvalue()


def _from_archive(payload: bytes) -> Any:
  try:
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
      members = archive.infolist()
      # Stored members only: nothing expands beyond the (size-checked) file itself.
      if any(m.compress_type != zipfile.ZIP_STORED for m in members):
        raise _Unreadable('compressed archive members are not accepted')
      manifest = json.loads(archive.read(_MANIFEST))
      if not isinstance(manifest, dict) or manifest.get('format') != _FORMAT:
        raise _Unreadable('not a collect_infer checkpoint manifest')
      if manifest.get('version') != _VERSION:
        raise _Unreadable(f'manifest version {manifest.get("version")!r}, this reads {_VERSION}')
      count = manifest.get('arrays')
      if not isinstance(count, int) or count < 0 or count > len(members):
        raise _Unreadable('malformed array count in manifest')
      arrays = []
      for i in range(count):
        with archive.open(f'{i}.npy') as member:
          arrays.append(np.lib.format.read_array(member, allow_pickle=False))
  except _Unreadable:
    raise
  except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
    raise _Unreadable(f'{type(err).__name__}: {err}') from err
  return _decode_node(manifest.get('tree'), arrays)


def _encode(payload: bytes) -> bytes:
  digest = hashlib.sha256(payload).hexdigest()
  return _MAGIC + f'{digest} {len(payload)}\n'.encode('ascii') + payload


def _decode(data: bytes) -> bytes:
  """Returns the payload of a checkpoint file's bytes, or raises _CorruptCheckpoint."""
  if not data.startswith(_MAGIC):
    raise _CorruptCheckpoint('bad magic header (not a checkpoint or truncated)')
  end = data.find(b'\n', len(_MAGIC), len(_MAGIC) + _MAX_HEADER_LINE)
  if end < 0:
    raise _CorruptCheckpoint('incomplete header')
  try:
    digest, length_text = data[len(_MAGIC) : end].decode('ascii').split(' ')
    length = int(length_text)
  except ValueError as err:
    raise _CorruptCheckpoint(f'malformed header ({err})') from err
  payload = data[end + 1 :]
  if len(payload) != length:
    raise _CorruptCheckpoint(f'payload is {len(payload)} bytes, header says {length} (truncated?)')
  if hashlib.sha256(payload).hexdigest() != digest:
    raise _CorruptCheckpoint('sha256 mismatch (file corrupted)')
  return payload


# Legacy pickles: the same header with v1, the payload a pickle.
_LEGACY_MAGIC = b'COLLECT_INFER_CKPT v1\n'


def _decode_legacy(data: bytes) -> bytes:
  if not data.startswith(_LEGACY_MAGIC):
    raise _CorruptCheckpoint('bad magic header (not a checkpoint or truncated)')
  return _decode(_MAGIC + data[len(_LEGACY_MAGIC) :])


def pickle_refusal(path: Union[str, os.PathLike]) -> str:
  """Why a pickle checkpoint outside a run's own directory is not loaded, and what to do."""
  return (
    f'{path} is a pickle checkpoint of an older version; loading a pickle can run any code, '
    f"so pickles are read only from a run's own checkpoints directory. If you trust it, "
    f'convert it: python -m launch.checkpointing convert {path}'
  )


class Checkpointer:
  """Saves and restores the learner's full state in one directory.

  `read_pickles`: also read older versions' pickle checkpoints, with a warning. Only for
  the directory of the run being launched (whoever can write there can run code as the
  run anyway); never for a directory named from outside (`init_checkpoint`).
  """

  def __init__(
    self, directory: Union[str, os.PathLike], keep: int = 5, *, read_pickles: bool = True
  ) -> None:
    if keep < 1:
      raise ValueError(f'keep must be >= 1, got {keep}')
    self._directory = pathlib.Path(directory)
    self._keep = keep
    self._read_pickles = read_pickles

  @property
  def directory(self) -> pathlib.Path:
    """Where checkpoints live."""
    return self._directory

  def path_for(self, step: int) -> pathlib.Path:
    """The file that holds (or will hold) the checkpoint for ``step``."""
    return self._directory / f'{_PREFIX}{step:012d}{_SUFFIX}'

  def _legacy_path_for(self, step: int) -> pathlib.Path:
    return self._directory / f'{_PREFIX}{step:012d}{_LEGACY_SUFFIX}'

  def _entries(self) -> List[os.DirEntry]:
    try:
      with os.scandir(self._directory) as it:
        return [e for e in it if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
      return []

  @contextlib.contextmanager
  def _locked(self) -> Iterator[None]:
    """Holds the directory's save lock (flock: excludes other threads and processes)."""
    fd = os.open(self._directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
      while True:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
          break
        except OSError as err:
          if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
          if time.monotonic() > deadline:
            raise RunDirError(
              f'another save has held {self._directory / _LOCK_NAME} for '
              f'{LOCK_TIMEOUT_SECONDS:.0f} s; is a second program using this run directory?'
            ) from err
          time.sleep(0.05)
      yield
    finally:
      os.close(fd)  # Releases the lock.

  def _remove_stale_temp_files(self) -> None:
    """Temp files of this process, or older than STALE_TMP_SECONDS (a crashed writer's).

    Called with the lock held, so this process has no save in flight; another
    process's fresh temp file may belong to a save that does not take the lock.
    """
    now = time.time()
    for entry in self._entries():
      match = _TMP_RE.match(entry.name)
      if not match:
        continue
      mine = match.group(1) is not None and int(match.group(1)) == os.getpid()
      try:
        old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS
        if mine or old:
          os.unlink(entry.path)
      except FileNotFoundError:
        pass

  def _write(self, path: pathlib.Path, data: bytes) -> None:
    """Atomically replaces `path` (temp file named with this pid, fsync, rename)."""
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.{secrets.token_hex(6)}{_TMP_SUFFIX}')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
      try:
        write_all(fd, data)
        os.fsync(fd)
      finally:
        os.close(fd)
      os.replace(tmp, path)
    except BaseException:
      with contextlib.suppress(OSError):
        os.unlink(tmp)
      raise
    fsync_dir(path.parent)

  def save(self, state: Any, step: int) -> pathlib.Path:
    """Writes ``state`` as the checkpoint for ``step`` and prunes old ones.

    ``state`` is a pytree of dicts (string keys), lists, tuples, NamedTuples
    (module-level classes), arrays (numpy or jax; stored as numpy), numpy
    scalars, Python numbers, strings and None. Saving a step that already
    exists overwrites it. Only the newest ``keep`` checkpoints are kept;
    older ones are deleted after the new file is in place.

    Returns:
      The path of the written checkpoint.
    """
    step = int(step)
    if step < 0:
      raise ValueError(f'step must be >= 0, got {step}')
    data = _encode(_to_archive(state))  # Before the lock: a bad state raises here.
    self._directory.mkdir(parents=True, exist_ok=True)
    with self._locked():
      self._remove_stale_temp_files()
      path = self.path_for(step)
      self._write(path, data)
      logger.info('Saved checkpoint %s (%d bytes).', path, len(data))
      # Never prune the file just written, even if newer steps exist (e.g.
      # after resuming from an older checkpoint).
      older = [s for s in self.all_steps() if s != step]
      excess = len(older) + 1 - self._keep
      for old in sorted(older)[: max(excess, 0)]:
        for stale in (self.path_for(old), self._legacy_path_for(old)):
          with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    return path

  def all_steps(self) -> List[int]:
    """Steps of all checkpoint files present (valid or not, either format), ascending."""
    steps = []
    for entry in self._entries():
      for pattern, path_for in (
        (_NAME_RE, self.path_for),
        (_LEGACY_NAME_RE, self._legacy_path_for),
      ):
        match = pattern.match(entry.name)
        # Only canonical names, so path_for(step) always finds the file.
        if match and entry.name == path_for(int(match.group(1))).name:
          steps.append(int(match.group(1)))
    return sorted(set(steps))

  def _load_file(self, path: pathlib.Path) -> Any:
    """Loads one file; raises FileNotFoundError, _CorruptCheckpoint or RunDirError."""
    legacy = path.name.endswith(_LEGACY_SUFFIX)
    if legacy and not self._read_pickles:
      raise RunDirError(pickle_refusal(path))
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      raise
    except OSError as err:
      raise _CorruptCheckpoint(f'unreadable ({err.strerror or err})') from err
    if not legacy:
      try:
        return _from_archive(_decode(data))
      except _Unreadable as err:
        # The bytes are intact, so an older checkpoint would most likely fail
        # the same way (code changed, class renamed): stop here.
        raise RunDirError(
          f'Checkpoint {path} is intact but cannot be read ({" ".join(str(err).split())}); '
          f'run the code version that wrote it or choose another --run_dir.'
        ) from err
    payload = _decode_legacy(data)
    logger.warning(
      'Reading %s, a pickle checkpoint of an older version (trusted because it is in the '
      "run's own directory); new checkpoints are written without pickle.",
      path,
    )
    try:
      return pickle.loads(payload)
    except Exception as err:
      raise RunDirError(
        f'Checkpoint {path} is intact but cannot be unpickled '
        f'({type(err).__name__}: {" ".join(str(err).split())}); run the '
        f'code version that wrote it or choose another --run_dir.'
      ) from err

  def _file_for(self, step: int) -> pathlib.Path:
    """The step's file: the current format if present, else a legacy pickle."""
    path = self.path_for(step)
    legacy = self._legacy_path_for(step)
    if not path.exists() and legacy.exists():
      return legacy
    return path

  def restore(self, step: int) -> Any:
    """Loads the checkpoint for ``step``.

    Raises:
      RunDirError: it does not exist, fails its integrity check, or is a
        pickle this Checkpointer may not read.
    """
    path = self._file_for(int(step))
    try:
      return self._load_file(path)
    except FileNotFoundError as err:
      raise RunDirError(
        f'No checkpoint for step {step} in {self._directory}; available steps: {self.all_steps()}.'
      ) from err
    except _CorruptCheckpoint as err:
      raise RunDirError(f'Checkpoint {path} is damaged ({err}); restore a different step.') from err

  def restore_latest(self) -> Optional[Tuple[int, Any]]:
    """Loads the newest checkpoint that passes its integrity check.

    Damaged newer checkpoints are skipped with a warning. Temp files from an
    interrupted save are ignored.

    Returns:
      ``(step, state)``, or None if there are no checkpoint files.

    Raises:
      RunDirError: checkpoint files exist but none is intact (the run is never
        silently restarted from scratch), or the newest is a pickle this
        Checkpointer may not read.
    """
    # Anything named like a checkpoint counts as one, including names whose
    # step doesn't parse, so a damaged directory is reported, not ignored.
    candidates = [
      e.name
      for e in self._entries()
      if e.name.startswith(_PREFIX) and not e.name.endswith(_TMP_SUFFIX)
    ]
    if not candidates:
      return None
    for step in reversed(self.all_steps()):
      path = self._file_for(step)
      try:
        return step, self._load_file(path)
      except FileNotFoundError:
        continue
      except _CorruptCheckpoint as err:
        logger.warning('Skipping damaged checkpoint %s: %s; trying an older one.', path, err)
    raise RunDirError(
      f'No intact checkpoint in {self._directory} (found '
      f'{len(candidates)} damaged file(s), e.g. {sorted(candidates)[-1]}); '
      f'move the directory aside to start over, or choose another --run_dir.'
    )


class PolicyOnly(NamedTuple):
  """A learner state cut to what acting needs (experiments.keep_policies): the policy's
  parameters and the learner step."""

  policy_params: Any
  steps: Any


def state_mismatch(expected: Any, got: Any) -> Optional[str]:
  """None when `got` (a restored learner state) has `expected`'s fields and array shapes;
  else the first difference, named by its path (e.g. a checkpoint of other tasks' layout,
  or of another network size, which would otherwise fail deep inside the jitted update)."""
  import tree  # pylint: disable=g-import-not-at-top

  def shapes(state: Any) -> Dict[str, tuple]:
    return {
      '/'.join(str(k) for k in path): tuple(np.shape(leaf))
      for path, leaf in tree.flatten_with_path(state)
    }

  try:
    want, have = shapes(expected), shapes(got)
  except (TypeError, ValueError) as e:
    return f'its state does not read as a learner state ({e})'
  for path, shape in want.items():
    if path not in have:
      return f'{path} is missing'
    if have[path] != shape:
      return f"{path} has shape {have[path]}, this run's learner {shape}"
  extra = sorted(set(have) - set(want))
  if extra:
    return f"{extra[0]} is not in this run's learner"
  return None


def load_init_checkpoint(path: str, setting: str = 'init_checkpoint') -> Dict[str, Any]:
  """A checkpoint payload from a checkpoint file or a run directory (its newest).

  The checkpoint comes from outside this run, so an older version's pickle is refused
  (it could run code when loaded); the error says how to convert one.
  """
  where = pathlib.Path(path)
  try:
    if where.is_dir():
      directory = where / 'checkpoints' if (where / 'checkpoints').is_dir() else where
      restored = Checkpointer(directory, read_pickles=False).restore_latest()
      if restored is None:
        raise ConfigError(f'{setting}={path!r}: no checkpoint in {directory}')
      return restored[1]
    if where.is_file() and re.fullmatch(r'ckpt-\d+\.pkl', where.name):
      raise ConfigError(f'{setting}={path!r}: {pickle_refusal(where)}')
    match = re.fullmatch(r'ckpt-(\d+)\.ckpt', where.name)
    if not where.is_file() or not match:
      raise ConfigError(f'{setting}={path!r}: not a run directory or a ckpt-<step>.ckpt file')
    return Checkpointer(where.parent, read_pickles=False).restore(int(match.group(1)))
  except RunDirError as err:
    raise ConfigError(f'{setting}={path!r}: {err}') from err


def convert(path: Union[str, os.PathLike]) -> List[pathlib.Path]:
  """Rewrites pickle checkpoints (a ckpt-<step>.pkl file, or all in a directory) as .ckpt.

  Unpickles them: run it only on files you trust. The pickles are left in place.
  """
  where = pathlib.Path(path)
  if where.is_dir():
    files = sorted(p for p in where.iterdir() if _LEGACY_NAME_RE.match(p.name))
  else:
    files = [where] if _LEGACY_NAME_RE.match(where.name) and where.is_file() else []
  if not files:
    raise RunDirError(f'{path}: no ckpt-<step>.pkl file to convert')
  written = []
  for file in files:
    step = int(_LEGACY_NAME_RE.match(file.name).group(1))
    checkpointer = Checkpointer(file.parent, keep=sys.maxsize, read_pickles=True)
    state = checkpointer._load_file(file)  # pylint: disable=protected-access
    written.append(checkpointer.save(state, step))
  return written


def main(argv: Optional[List[str]] = None) -> int:
  import argparse

  parser = argparse.ArgumentParser(
    prog='python -m launch.checkpointing',
    description='Convert pickle checkpoints of older versions (only ones you trust).',
  )
  sub = parser.add_subparsers(dest='command', required=True)
  conv = sub.add_parser('convert', help='write ckpt-<step>.ckpt next to each ckpt-<step>.pkl')
  conv.add_argument('paths', nargs='+', help='ckpt-<step>.pkl files or checkpoint directories')
  args = parser.parse_args(argv)
  try:
    for path in args.paths:
      for written in convert(path):
        print(f'wrote {written}')
  except (RunDirError, _CorruptCheckpoint) as err:
    print(f'error: {err}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())


__all__ = ['Checkpointer', 'convert', 'load_init_checkpoint', 'pickle_refusal']
