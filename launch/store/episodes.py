"""Episodes as the store keeps them, and the durable append-only episode store.

A store is a directory; each writer name owns three kinds of files in it::

    <name>.lock          flock held by the live writer of that name (holds its pid)
    <name>.index         a first line b"#CIE1 index <random hex>\\n" naming this
                         version of the file, then one line per stored
                         episode: b"<crc32 hex> <json>\\n"
    <name>.<k>.seg       segments (k = 000000, 000001, ...): records back to back

A record is one whole episode::

    prefix   struct '<4sIQ': magic b'CIE1', header length H, payload length P
    crcs     struct '<II'  : crc32 of the prefix, crc32 of header + payload
    header   H bytes of JSON: id, writer, seq, time, length, return, metadata,
             and each array's dtype (numpy's dtype.str, byte order included),
             shape and byte offset in the payload; space-padded so the
             payload starts 16-byte aligned within the record
    payload  P bytes: observations, actions, rewards, discounts (and, for
             a camera run with state features beside the image,
             observation_features), raw C-order bytes each, 16-byte aligned
             (bit-exact, no pickle; a reader gets writable arrays without
             copying); camera images (uint8 [T, H, W, C]) zlib-compressed,
             their layout saying codec and size

Durability: `EpisodeWriter.append` writes the record and fsyncs the segment,
then writes the index line and fsyncs the index, and only then returns. A
reader sees an episode only through a complete, checksummed index line whose
record is complete (and, by default, checksummed too), so a crash at any point
leaves each episode either whole or invisible. A writer re-opening its name
after a crash indexes a record that was complete but not yet indexed, cuts a
torn record off its segment, and rewrites a damaged index (write, fsync,
rename), never editing a live index in place. Bytes that are not a whole
record in the middle of a segment (corruption) are skipped, not cut: the
writer resumes at the next whole record after them and lists them in the
quarantine log; only a torn tail (nothing whole after it) is cut off.

Quarantine: `_quarantine.log` (no writer name starts with "_") is an
append-only list, in the index's line format, of episodes the store keeps but
no longer shows (`EpisodeStore.quarantine`: a learner could not use them, or
an operator said so), of deleted episodes (`EpisodeStore.delete`: the record's
bytes are zeroed, the index line stays so no writer re-indexes it), and of
byte ranges a recovering writer skipped. Readers take it in with the indexes.
A reader that finds an index entry whose record is not (yet) there, e.g. a
segment size that lags on NFS, looks again on every refresh rather than
writing the episode off.
"""

import bisect
import dataclasses
import fcntl
import json
import math
import os
import pathlib
import re
import secrets
import shutil
import struct
import time
import zlib
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from agents.common.files import fsync_dir, write_all
from agents.common.logs import get_logger

log = get_logger('store')

PathLike = Union[str, os.PathLike]

_ARRAY_FIELDS = ('observations', 'actions', 'rewards', 'discounts')
# After them in a record's layout when the episode has it (older records end before).
_OPTIONAL_FIELDS = ('observation_features',)
_MAGIC = b'CIE1'
_PREFIX = struct.Struct('<4sIQ')
_CRCS = struct.Struct('<II')
_HEAD = _PREFIX.size + _CRCS.size
_ALIGN = 16
# numpy kinds that a dtype string round-trips exactly: bool, integers, floats,
# complex, bytes, unicode, datetimes and timedeltas.
_DTYPE_KINDS = 'biufcSUmM'
_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')
_INDEX_SUFFIX = '.index'
_INDEX_HEAD_LEN = len(b'#CIE1 index ') + 16 + 1
_SEGMENT_DIGITS = 6
DEFAULT_MAX_SEGMENT_BYTES = 1 << 30
QUARANTINE_FILE = '_quarantine.log'
_QUARANTINE_KINDS = ('episode', 'deleted', 'bytes')
_RESYNC_CHUNK = 1 << 20
# zlib level for camera images: level 1 keeps an actor's append cheap (see _compressible).
_IMAGE_COMPRESSION_LEVEL = 1


@dataclasses.dataclass
class Episode:
  """One complete episode of T steps.

  observations[t] is what the agent saw before actions[t]; observations[T] is
  the final observation. rewards[t] and discounts[t] follow actions[t]
  (dm_env semantics: discount 0 marks a terminal step, 1 a time-limit cut).
  metadata is JSON-serialisable: source (actor / robot name), policy_version
  (learner step of the parameters that acted), seed, task, ...
  """

  observations: np.ndarray  # [T + 1, ...]
  actions: np.ndarray  # [T, ...]
  rewards: np.ndarray  # [T]
  discounts: np.ndarray  # [T]
  metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # A camera run's state features beside its images (observations): [T + 1, F], or None.
  observation_features: Optional[np.ndarray] = None

  def observation_at(self, t: Any) -> Any:
    """What the agent saw at step(s) t: observations[t], or with state features beside
    the images {'features': observation_features[t], 'pixels': observations[t]}."""
    if self.observation_features is None:
      return self.observations[t]
    return {'features': self.observation_features[t], 'pixels': self.observations[t]}

  @property
  def length(self) -> int:
    return int(self.actions.shape[0])

  @property
  def episode_return(self) -> float:
    return float(np.sum(self.rewards, dtype=np.float64))


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
  """What the index says about one stored episode (no arrays)."""

  episode_id: str
  writer: str
  length: int
  episode_return: float
  metadata: Dict[str, Any]
  time: float  # Unix time the writer appended it.
  segment: str  # Segment file name, relative to the store directory.
  offset: int  # Byte offset of the record in the segment.
  size: int  # Byte size of the record.


class StoreError(Exception):
  """The store can't do what was asked (see subclasses)."""


class WriterBusyError(StoreError):
  """Another live writer (in this or another process) holds the name."""


class CorruptRecordError(StoreError):
  """A record failed its integrity check (truncated or altered bytes)."""


class _NotThereError(CorruptRecordError):
  """The record's bytes are not (yet) in its segment: missing file or short read."""


# ----------------------------------------------------------------------------
# Validation and encoding.


def _first_bad_step(values: np.ndarray) -> Optional[int]:
  """Index along axis 0 of the first non-finite entry, or None."""
  if values.dtype.kind not in 'fc':
    return None
  bad = ~np.isfinite(values)
  if not bad.any():
    return None
  return int(np.argwhere(bad)[0][0])


def _checked_arrays(episode: Episode) -> Dict[str, np.ndarray]:
  """The episode's arrays as numpy arrays; ValueError if it can't be stored."""
  arrays = {}
  present = [f for f in _OPTIONAL_FIELDS if getattr(episode, f) is not None]
  for field in _ARRAY_FIELDS + tuple(present):
    value = getattr(episode, field)
    try:
      value = np.asarray(value)
    except (TypeError, ValueError) as e:  # Ragged lists and the like.
      raise ValueError(f'{field}: not convertible to an array ({e})') from e
    if value.dtype.kind not in _DTYPE_KINDS:
      raise ValueError(
        f'{field}: dtype {value.dtype} is not storable; the store keeps '
        'plain bool, numeric, string and datetime arrays'
      )
    if value.ndim == 0:
      raise ValueError(f'{field}: expected an array with a time axis, got a scalar')
    arrays[field] = value
  steps = arrays['actions'].shape[0]
  if steps < 1:
    raise ValueError('actions: an episode needs at least one step, got 0')
  if arrays['observations'].shape[0] != steps + 1:
    raise ValueError(
      f'observations: expected {steps + 1} (T + 1) along axis 0 for '
      f'T={steps} actions, got shape {arrays["observations"].shape}'
    )
  if 'observation_features' in arrays:
    value = arrays['observation_features']
    if value.ndim != 2 or value.shape[0] != steps + 1 or value.dtype.kind != 'f':
      raise ValueError(
        f'observation_features: expected a float array [{steps + 1}, F] (T + 1 rows), got '
        f'{value.dtype} {value.shape}'
      )
  for field in ('rewards', 'discounts'):
    value = arrays[field]
    if value.shape != (steps,):
      raise ValueError(f'{field}: expected shape ({steps},) (one per action), got {value.shape}')
    if value.dtype.kind != 'f':
      raise ValueError(f'{field}: expected a floating dtype, got {value.dtype}')
  for field in arrays:
    step = _first_bad_step(arrays[field])
    if step is not None:
      raise ValueError(f'{field}: non-finite value at step {step}')
  return arrays


def _checked_metadata(metadata: Any) -> Dict[str, Any]:
  if not isinstance(metadata, dict) or not all(isinstance(k, str) for k in metadata):
    raise ValueError('metadata: expected a dict with string keys')
  try:
    # The round trip makes the stored copy exactly what a reader gets back
    # (tuples become lists, and so on).
    return json.loads(json.dumps(metadata, allow_nan=False))
  except (TypeError, ValueError) as e:
    raise ValueError(f'metadata: not JSON-serialisable ({e})') from e


def validate_episode(episode: Episode) -> None:
  """Raises ValueError (naming the field, and the step for bad values) if the
  store would refuse `episode`."""
  _checked_arrays(episode)
  _checked_metadata(episode.metadata)


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


# Metadata keys a reader relies on, and what each must hold when present.
_METADATA_SCHEMA = {
  'success': (
    lambda v: isinstance(v, bool) or (isinstance(v, (int, float)) and v in (0, 1)),
    'true / false (or 1 / 0)',
  ),
  'source': (lambda v: isinstance(v, str), 'a string'),
  'task': (lambda v: isinstance(v, str), 'a string'),
  'policy_version': (
    lambda v: v is None or _is_int(v) or (isinstance(v, list) and all(_is_int(x) for x in v)),
    'an int or a list of ints',
  ),
}


def episode_problem(episode: Episode) -> Optional[str]:
  """Why a stored episode can't be trained on as it is, or None.

  What the store refuses at append (shapes, dtypes, NaN / Inf), plus discounts
  in [0, 1] and the types of the metadata keys readers use (`success`,
  `source`, `task`, `policy_version`): a record written before a check existed,
  or by other code, may still break them.
  """
  try:
    arrays = _checked_arrays(episode)
    metadata = _checked_metadata(episode.metadata)
  except ValueError as e:
    return str(e)
  discounts = arrays['discounts']
  outside = np.flatnonzero((discounts < 0) | (discounts > 1))
  if outside.size:
    return f'discounts: {discounts[outside[0]]!r} at step {outside[0]} is outside [0, 1]'
  for key, (ok, expected) in _METADATA_SCHEMA.items():
    if key in metadata and not ok(metadata[key]):
      return f'metadata {key!r} must be {expected}, got {metadata[key]!r}'
  return None


def _padding(size: int) -> int:
  return -size % _ALIGN


def _compressible(value: np.ndarray) -> bool:
  """Camera images (uint8 [T, H, W, C]): compressed per episode; everything else raw."""
  return value.dtype == np.uint8 and value.ndim >= 4


def _encode_record(header: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> bytes:
  blobs, layout, offset = [], [], 0
  for field in _ARRAY_FIELDS + tuple(f for f in _OPTIONAL_FIELDS if f in arrays):
    value = arrays[field]
    blob = np.ascontiguousarray(value).tobytes()
    entry = {'dtype': value.dtype.str, 'shape': list(value.shape), 'offset': offset}
    if _compressible(value):
      blob = zlib.compress(blob, _IMAGE_COMPRESSION_LEVEL)
      entry.update(codec='zlib', size=len(blob))
    layout.append(entry)
    blobs += [blob, bytes(_padding(len(blob)))]
    offset += len(blob) + _padding(len(blob))
  header_bytes = json.dumps(
    dict(header, arrays=layout), allow_nan=False, separators=(',', ':')
  ).encode()
  header_bytes += b' ' * _padding(_HEAD + len(header_bytes))
  payload = b''.join(blobs)
  prefix = _PREFIX.pack(_MAGIC, len(header_bytes), len(payload))
  body_crc = zlib.crc32(payload, zlib.crc32(header_bytes))
  return b''.join([prefix, _CRCS.pack(zlib.crc32(prefix), body_crc), header_bytes, payload])


def _record_size(head: bytes) -> Optional[int]:
  """Total size of the record whose first _HEAD bytes are `head`, or None if
  they are not a valid record start."""
  if len(head) < _HEAD:
    return None
  magic, header_len, payload_len = _PREFIX.unpack_from(head)
  prefix_crc, _ = _CRCS.unpack_from(head, _PREFIX.size)
  if magic != _MAGIC or zlib.crc32(head[: _PREFIX.size]) != prefix_crc:
    return None
  return _HEAD + header_len + payload_len


def _check_record(data: bytearray) -> Tuple[Dict[str, Any], memoryview]:
  """(header, payload) of a whole record; CorruptRecordError if it is damaged."""
  size = _record_size(bytes(data[:_HEAD]))
  if size is None:
    raise CorruptRecordError('bad record prefix')
  if size != len(data):
    raise CorruptRecordError(f'record is {len(data)} bytes, its prefix says {size}')
  header_len = _PREFIX.unpack_from(data)[1]
  _, body_crc = _CRCS.unpack_from(data, _PREFIX.size)
  body = memoryview(data)[_HEAD:]
  if zlib.crc32(body) != body_crc:
    raise CorruptRecordError('record checksum mismatch')
  try:
    header = json.loads(bytes(body[:header_len]))
  except ValueError as e:
    raise CorruptRecordError(f'unreadable record header ({e})') from e
  return header, body[header_len:]


def _decode_arrays(header: Dict[str, Any], payload: memoryview) -> Dict[str, np.ndarray]:
  """The arrays of a checked record, as views of its (writable) buffer."""
  arrays = {}
  for field, layout in zip(_ARRAY_FIELDS + _OPTIONAL_FIELDS, header['arrays']):
    dtype = np.dtype(layout['dtype'])
    shape = tuple(layout['shape'])
    count = int(np.prod(shape, dtype=np.int64))
    if layout.get('codec') == 'zlib':
      start = layout['offset']
      try:
        raw = zlib.decompress(payload[start : start + layout['size']])
      except zlib.error as e:
        raise CorruptRecordError(f'{field}: bad compressed data ({e})') from None
      if len(raw) != count * dtype.itemsize:
        raise CorruptRecordError(f'{field}: {len(raw)} bytes decompressed, expected {shape}')
      arrays[field] = np.frombuffer(bytearray(raw), dtype, count).reshape(shape)
      continue
    arrays[field] = np.frombuffer(payload, dtype, count, layout['offset']).reshape(shape)
  return arrays


# ----------------------------------------------------------------------------
# The index.


def _index_head() -> bytes:
  """A fresh first line for an index file.

  Readers compare it to tell a rewritten index from the one they were
  reading, even if the filesystem gives the new file the old one's inode.
  """
  return b'#CIE1 index %s\n' % secrets.token_hex(8).encode()


def _index_line(entry: Dict[str, Any]) -> bytes:
  text = json.dumps(entry, allow_nan=False, separators=(',', ':')).encode()
  return b'%08x %s\n' % (zlib.crc32(text), text)


def _parse_index_line(line: bytes) -> Optional[Dict[str, Any]]:
  """The entry of one index line (without its newline), or None if damaged."""
  crc, sep, text = line.partition(b' ')
  if not sep or len(crc) != 8:
    return None
  try:
    if int(crc, 16) != zlib.crc32(text):
      return None
    entry = json.loads(text)
  except ValueError:
    return None
  needed = (
    'id',
    'writer',
    'seq',
    'segment',
    'offset',
    'size',
    'length',
    'return',
    'metadata',
    'time',
  )
  if not isinstance(entry, dict) or any(k not in entry for k in needed):
    return None
  return entry


def _index_entry(header: Dict[str, Any], segment: str, offset: int, size: int) -> Dict[str, Any]:
  entry = {k: header[k] for k in ('id', 'writer', 'seq', 'time', 'length', 'return', 'metadata')}
  entry.update(segment=segment, offset=offset, size=size)
  return entry


def _info(entry: Dict[str, Any]) -> EpisodeInfo:
  return EpisodeInfo(
    episode_id=entry['id'],
    writer=entry['writer'],
    length=int(entry['length']),
    episode_return=float(entry['return']),
    metadata=entry['metadata'],
    time=float(entry['time']),
    segment=entry['segment'],
    offset=int(entry['offset']),
    size=int(entry['size']),
  )


def _parse_quarantine_line(line: bytes) -> Optional[Dict[str, Any]]:
  """The entry of one quarantine-log line, or None if damaged."""
  crc, sep, text = line.partition(b' ')
  if not sep or len(crc) != 8:
    return None
  try:
    if int(crc, 16) != zlib.crc32(text):
      return None
    entry = json.loads(text)
  except ValueError:
    return None
  if not isinstance(entry, dict) or entry.get('kind') not in _QUARANTINE_KINDS:
    return None
  if not isinstance(entry.get('reason'), str):
    return None
  if entry['kind'] == 'bytes':
    ok = isinstance(entry.get('segment'), str) and all(
      _is_int(entry.get(k)) for k in ('offset', 'size')
    )
  else:
    ok = isinstance(entry.get('id'), str)
  return entry if ok else None


def _append_quarantine(directory: pathlib.Path, entry: Dict[str, Any]) -> None:
  """Appends one entry to the store's quarantine log, durably (any process may)."""
  entry = dict(entry, time=time.time(), pid=os.getpid())
  path = directory / QUARANTINE_FILE
  created = not path.exists()
  fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)  # Held for one short write; released by close.
    line = _index_line(entry)
    size = os.fstat(fd).st_size
    if size and _pread_all(fd, 1, size - 1) != b'\n':
      line = b'\n' + line  # End a line torn by a crash, so ours stays whole.
    write_all(fd, line)
    os.fsync(fd)
  finally:
    os.close(fd)
  if created:
    fsync_dir(directory)


def read_quarantine(directory: PathLike) -> List[Dict[str, Any]]:
  """Every intact entry of a store's quarantine log (kind: episode, deleted or bytes)."""
  try:
    data = (pathlib.Path(directory) / QUARANTINE_FILE).read_bytes()
  except FileNotFoundError:
    return []
  entries = (_parse_quarantine_line(line) for line in data.split(b'\n'))
  return [e for e in entries if e is not None]


def _segment_name(writer: str, number: int) -> str:
  return f'{writer}.{number:0{_SEGMENT_DIGITS}d}.seg'


def _segment_re(writer: str) -> 're.Pattern[str]':
  return re.compile(rf'^{re.escape(writer)}\.(\d{{{_SEGMENT_DIGITS},}})\.seg$')


# ----------------------------------------------------------------------------
# Small file helpers.


def _pread_all(fd: int, size: int, offset: int) -> bytes:
  parts = []
  while size > 0:
    chunk = os.pread(fd, size, offset)
    if not chunk:
      break
    parts.append(chunk)
    size -= len(chunk)
    offset += len(chunk)
  return b''.join(parts)


def _sync(fd: int) -> None:
  # fdatasync also flushes the file size, all a reader needs of appended data.
  getattr(os, 'fdatasync', os.fsync)(fd)


def _read_index_file(path: pathlib.Path) -> Tuple[List[Dict[str, Any]], bool]:
  """All valid entries of an index file, and whether every byte was valid."""
  try:
    data = path.read_bytes()
  except FileNotFoundError:
    return [], True
  complete = data.rfind(b'\n') + 1
  clean = complete == len(data)
  entries = []
  for line in data[:complete].split(b'\n')[:-1]:
    if line.startswith(b'#'):
      continue
    entry = _parse_index_line(line)
    if entry is None:
      clean = False
    else:
      entries.append(entry)
  return entries, clean


# ----------------------------------------------------------------------------
# Writing.


class EpisodeWriter:
  """Appends whole episodes to one writer name's segments; one per name at a time.

  Get one from `EpisodeStore.writer`. Not thread-safe. If an append fails
  part-way (disk full, interrupt), the writer closes itself; open a new one,
  which repairs the files as after a crash.
  """

  def __init__(
    self, directory: PathLike, name: str, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES
  ):
    if not isinstance(name, str) or not _NAME_RE.match(name):
      raise ValueError(
        f'writer name {name!r}: use 1-128 letters, digits, "_", "-" or ".", '
        'starting with a letter or digit'
      )
    self._dir = pathlib.Path(directory)
    self._name = name
    self._max_segment_bytes = int(max_segment_bytes)
    self._index_path = self._dir / f'{name}{_INDEX_SUFFIX}'
    self._seg_fd = -1
    self._index_fd = -1
    self._lock_fd = self._lock()
    try:
      self._recover()
    except BaseException:
      self.close()
      raise

  @property
  def name(self) -> str:
    return self._name

  @property
  def closed(self) -> bool:
    return self._lock_fd < 0

  def _lock(self) -> int:
    path = self._dir / f'{self._name}.lock'
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _pread_all(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
      os.close(fd)
      raise WriterBusyError(
        f'episode writer {self._name!r} is already open in {self._dir} (pid {holder}); '
        'give each actor or robot its own writer name'
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    return fd

  def _segments(self) -> List[int]:
    pattern = _segment_re(self._name)
    numbers = []
    for entry in os.scandir(self._dir):
      match = pattern.match(entry.name)
      if match:
        numbers.append(int(match.group(1)))
    return sorted(numbers)

  def _recover(self) -> None:
    """Brings this name's files to a state where every record is indexed and
    the current segment ends with a whole record (what a crash or a failed
    append may have left otherwise)."""
    entries, clean = _read_index_file(self._index_path)
    numbers = self._segments()
    sizes = {
      _segment_name(self._name, n): os.path.getsize(self._dir / _segment_name(self._name, n))
      for n in numbers
    }
    # Ids are never reused, even those of entries dropped below: a reader may
    # have seen them already.
    next_seq = max((int(e['seq']) + 1 for e in entries), default=0)
    kept = [
      e
      for e in entries
      if e['writer'] == self._name
      and e['segment'] in sizes
      and e['offset'] + e['size'] <= sizes[e['segment']]
    ]
    if len(kept) != len(entries):
      log.warning(
        'store %s: %d index entr(ies) of writer %r point outside its segments '
        '(a segment truncated or removed by hand?); dropped',
        self._dir,
        len(entries) - len(kept),
        self._name,
      )
      clean = False
    current = numbers[-1] if numbers else 0
    recovered = []
    skipped = []
    for number in numbers:
      segment = _segment_name(self._name, number)
      known = {e['offset']: e['size'] for e in kept if e['segment'] == segment}
      found, end, bad = self._scan(segment, known, sizes[segment])
      recovered.extend(found)
      skipped.extend((segment, offset, size) for offset, size in bad)
      if number != current and end < sizes[segment]:
        # Not a torn append (later segments exist): leave the bytes, list them.
        skipped.append((segment, end, sizes[segment] - end))
      if number == current and end < sizes[segment]:
        log.warning(
          'store %s: cutting a torn record (%d bytes) off the end of %s',
          self._dir,
          sizes[segment] - end,
          segment,
        )
        fd = os.open(self._dir / segment, os.O_WRONLY)
        try:
          os.ftruncate(fd, end)
          os.fsync(fd)
        finally:
          os.close(fd)
    self._quarantine_regions(skipped)
    if recovered:
      log.warning(
        'store %s: indexed %d whole episode(s) of writer %r that had no (intact) index line',
        self._dir,
        len(recovered),
        self._name,
      )
      next_seq = max([next_seq] + [int(e['seq']) + 1 for e in recovered])
    if not clean:
      # Never edit a live index in place (a reader may be part-way through
      # it): write the repaired one aside and rename it over; readers notice
      # the new inode and rescan.
      tmp = self._dir / f'{self._name}{_INDEX_SUFFIX}.tmp'
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      try:
        write_all(fd, _index_head() + b''.join(_index_line(e) for e in kept + recovered))
        os.fsync(fd)
      finally:
        os.close(fd)
      os.replace(tmp, self._index_path)
      fsync_dir(self._dir)
    created = not self._index_path.exists()
    self._index_fd = os.open(self._index_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if os.fstat(self._index_fd).st_size == 0:
      write_all(self._index_fd, _index_head())
      os.fsync(self._index_fd)
    if recovered and clean:
      write_all(self._index_fd, b''.join(_index_line(e) for e in recovered))
      os.fsync(self._index_fd)
    self._next_seq = next_seq
    self._open_segment(current)
    if created:
      fsync_dir(self._dir)

  def _scan(
    self, segment: str, known: Dict[int, int], size: int
  ) -> Tuple[List[Dict[str, Any]], int, List[Tuple[int, int]]]:
    """Finds whole records in `segment` that the index lacks.

    Walks the segment record by record, jumping over the indexed ones
    (`known`: offset -> size) without reading them, so a clean segment costs
    no I/O. Where the bytes are not a whole record, it resumes at the next
    whole record (found by its magic and checksums) or indexed one. Returns
    the index entries of the records found, where the last whole record ends,
    and the (offset, size) of each run of bad bytes skipped before it (a torn
    tail, with nothing whole after it, is not among them).
    """
    found = []
    bad = []
    offsets = sorted(known)
    position = 0
    fd = os.open(self._dir / segment, os.O_RDONLY)
    try:
      while position < size:
        if position in known:
          position += known[position]
          continue
        later = offsets[bisect.bisect_right(offsets, position) :]
        limit = later[0] if later else size
        entry = self._record_at(fd, segment, position, limit)
        if entry is not None:
          found.append(entry)
          position += entry['size']
          continue
        resume = self._next_record(fd, segment, position + 1, limit)
        if resume is None and not later:
          break  # A torn tail.
        resume = limit if resume is None else resume
        bad.append((position, resume - position))
        position = resume
    finally:
      os.close(fd)
    return found, position, bad

  def _next_record(self, fd: int, segment: str, start: int, limit: int) -> Optional[int]:
    """Offset of the first whole record of this writer in [start, limit), or None."""
    position = start
    while position < limit:
      chunk = _pread_all(fd, min(_RESYNC_CHUNK, limit - position) + len(_MAGIC) - 1, position)
      at = chunk.find(_MAGIC)
      while at >= 0 and position + at < limit:
        if self._record_at(fd, segment, position + at, limit) is not None:
          return position + at
        at = chunk.find(_MAGIC, at + 1)
      position += _RESYNC_CHUNK
    return None

  def _quarantine_regions(self, regions: List[Tuple[str, int, int]]) -> None:
    """Logs skipped bad bytes and lists them in the quarantine log (once each)."""
    if not regions:
      return
    listed = {
      (e['segment'], e['offset'])
      for e in read_quarantine(self._dir)
      if e['kind'] == 'bytes' and e['segment'].startswith(self._name + '.')
    }
    for segment, offset, size in regions:
      if (segment, offset) in listed:
        continue
      log.warning(
        'store %s: %d bytes at %s:%d are not a whole record; skipped (kept in place, '
        'listed in %s), the records after them are kept',
        self._dir,
        size,
        segment,
        offset,
        QUARANTINE_FILE,
      )
      _append_quarantine(
        self._dir,
        {
          'kind': 'bytes',
          'segment': segment,
          'offset': offset,
          'size': size,
          'reason': 'not a whole record (corrupt bytes); found by a recovering writer',
        },
      )

  def _record_at(
    self, fd: int, segment: str, position: int, limit: int
  ) -> Optional[Dict[str, Any]]:
    """The index entry of a whole record of this writer at `position` that
    ends by `limit`, or None."""
    record_size = _record_size(_pread_all(fd, _HEAD, position))
    if record_size is None or position + record_size > limit:
      return None
    try:
      header, _ = _check_record(bytearray(_pread_all(fd, record_size, position)))
    except CorruptRecordError:
      return None
    if header.get('writer') != self._name:
      return None
    try:
      return _index_entry(header, segment, position, record_size)
    except KeyError:
      return None

  def _open_segment(self, number: int) -> None:
    if self._seg_fd >= 0:
      os.close(self._seg_fd)
      self._seg_fd = -1
    self._segment_number = number
    self._segment = _segment_name(self._name, number)
    path = self._dir / self._segment
    existed = path.exists()
    self._seg_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    self._segment_size = os.fstat(self._seg_fd).st_size
    if not existed:
      fsync_dir(self._dir)

  def append(self, episode: Episode) -> str:
    """Stores `episode` whole and durably (fsynced) and returns its id.

    Raises ValueError, storing nothing, if the episode is malformed (see
    `validate_episode`).
    """
    if self.closed:
      raise StoreError(f'episode writer {self._name!r} is closed')
    arrays = _checked_arrays(episode)
    metadata = _checked_metadata(episode.metadata)
    episode_return = float(np.sum(arrays['rewards'], dtype=np.float64))
    if not math.isfinite(episode_return):
      raise ValueError('rewards: the episode return overflows to a non-finite value')
    seq = self._next_seq
    header = {
      'id': f'{self._name}-{seq:08d}',
      'writer': self._name,
      'seq': seq,
      'time': time.time(),
      'length': int(arrays['actions'].shape[0]),
      'return': episode_return,
      'metadata': metadata,
    }
    record = _encode_record(header, arrays)
    try:
      if self._segment_size > 0 and self._segment_size + len(record) > self._max_segment_bytes:
        self._open_segment(self._segment_number + 1)
      offset = self._segment_size
      # Record first, index second: an index line never points at bytes that
      # a crash could still lose.
      write_all(self._seg_fd, record)
      _sync(self._seg_fd)
      self._segment_size += len(record)
      write_all(
        self._index_fd, _index_line(_index_entry(header, self._segment, offset, len(record)))
      )
      _sync(self._index_fd)
    except BaseException:
      # The files may now end part-way through a record or a line: stop
      # writing, and let the next writer of this name repair them.
      self.close()
      raise
    self._next_seq = seq + 1
    return header['id']

  def close(self) -> None:
    """Closes the files and releases the name (idempotent)."""
    for attr in ('_seg_fd', '_index_fd', '_lock_fd'):
      fd = getattr(self, attr, -1)
      if fd >= 0:
        setattr(self, attr, -1)
        try:
          os.close(fd)
        except OSError:
          pass

  def __enter__(self) -> 'EpisodeWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __del__(self) -> None:
    try:
      self.close()
    except Exception:  # pylint: disable=broad-except
      pass  # Interpreter shutdown may have torn down `os` already.


# ----------------------------------------------------------------------------
# Reading.


@dataclasses.dataclass
class _Cursor:
  inode: int
  head: bytes  # The index file's first line, as far as it was written.
  offset: int  # Bytes of the index file already taken in.


class EpisodeStore:
  """The episode store rooted at `directory` (created if missing).

  Reading: `refresh()` takes in what writers (any process) appended since the
  last look, reading only the new tail of each index and the new records; the
  first read-side call refreshes by itself. With `verify` (the default) each
  new record is checksummed when taken in, so every visible episode reads
  back intact; a damaged one is skipped with a warning. `verify=False` reads
  only the index (cheap, e.g. to count episodes); damage then shows up as
  CorruptRecordError from `read`. An index entry whose record is not in its
  segment yet (a lagging size on NFS, say) is looked at again on each
  refresh. Quarantined and deleted episodes are not visible (`index`, `len`,
  iteration); `quarantined()` lists them. Not thread-safe.
  """

  def __init__(self, directory: PathLike, *, verify: bool = True):
    self._dir = pathlib.Path(directory)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._verify = verify
    self._infos: List[EpisodeInfo] = []  # Every episode taken in, hidden ones too.
    self._by_id: Dict[str, int] = {}
    self._cursors: Dict[str, _Cursor] = {}
    self._num_steps = 0  # Of the visible episodes.
    self._num_visible = 0
    self._loaded = False
    # Index entries whose record was not there yet: index name -> id -> entry.
    self._pending: Dict[str, Dict[str, Dict[str, Any]]] = {}
    self._damaged: Dict[str, Tuple[EpisodeInfo, str]] = {}  # Skipped: checksum failed.
    self._quarantine_cursor = _Cursor(0, b'', 0)
    self._quarantined: Dict[str, str] = {}  # id -> reason.
    self._deleted: Dict[str, str] = {}
    self._bad_bytes: List[Dict[str, Any]] = []

  @property
  def directory(self) -> pathlib.Path:
    return self._dir

  def writer(
    self, name: str, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES
  ) -> EpisodeWriter:
    """The writer for `name`; WriterBusyError if a live writer holds it.

    Re-opening a name (after a restart or a crash) continues its segments.
    """
    return EpisodeWriter(self._dir, name, max_segment_bytes=max_segment_bytes)

  def refresh(self) -> int:
    """Takes in episodes appended since the last look; returns how many."""
    self._loaded = True
    self._refresh_quarantine()
    new = 0
    for name in sorted(os.listdir(self._dir)):
      if name.endswith(_INDEX_SUFFIX) and _NAME_RE.match(name[: -len(_INDEX_SUFFIX)]):
        new += self._refresh_index(name)
    return new + self._retry_pending()

  def _hidden(self, episode_id: str) -> bool:
    return episode_id in self._quarantined or episode_id in self._deleted

  def _hide(self, entry: Dict[str, Any]) -> None:
    """Applies one quarantine-log entry."""
    if entry['kind'] == 'bytes':
      self._bad_bytes.append(entry)
      return
    episode_id = entry['id']
    was_hidden = self._hidden(episode_id)
    target = self._quarantined if entry['kind'] == 'episode' else self._deleted
    target.setdefault(episode_id, entry['reason'])
    if not was_hidden and episode_id in self._by_id:
      self._num_visible -= 1
      self._num_steps -= self._infos[self._by_id[episode_id]].length

  def _refresh_quarantine(self) -> None:
    try:
      fd = os.open(self._dir / QUARANTINE_FILE, os.O_RDONLY)
    except FileNotFoundError:
      return
    try:
      stat = os.fstat(fd)
      cursor = self._quarantine_cursor
      if cursor.inode != stat.st_ino or stat.st_size < cursor.offset:
        # Only ever appended to; a new file means it was replaced by hand: take
        # it in again (entries already applied stay applied).
        cursor = self._quarantine_cursor = _Cursor(stat.st_ino, b'', 0)
      data = _pread_all(fd, stat.st_size - cursor.offset, cursor.offset)
    finally:
      os.close(fd)
    complete = data.rfind(b'\n') + 1
    for line in data[:complete].split(b'\n')[:-1]:
      entry = _parse_quarantine_line(line)
      if entry is not None:
        self._hide(entry)
    cursor.offset += complete

  def _refresh_index(self, index_name: str) -> int:
    try:
      fd = os.open(self._dir / index_name, os.O_RDONLY)
    except FileNotFoundError:
      return 0
    try:
      stat = os.fstat(fd)
      head = _pread_all(fd, _INDEX_HEAD_LEN, 0)
      cursor = self._cursors.get(index_name)
      if (
        cursor is None
        or cursor.inode != stat.st_ino
        or cursor.head != head
        or stat.st_size < cursor.offset
      ):
        # New, or rewritten by a recovering writer: read it all again; the
        # episodes already taken in are recognised by id, and entries still
        # waiting for their record are taken from the new file.
        cursor = self._cursors[index_name] = _Cursor(stat.st_ino, head, 0)
        self._pending.pop(index_name, None)
      if stat.st_size == cursor.offset:
        return 0
      data = _pread_all(fd, stat.st_size - cursor.offset, cursor.offset)
    finally:
      os.close(fd)
    writer = index_name[: -len(_INDEX_SUFFIX)]
    segment_pattern = _segment_re(writer)
    segment_sizes: Dict[str, int] = {}
    pending = self._pending.setdefault(index_name, {})
    new = 0
    position = 0
    # Take in bytes only up to the last good line: damaged lines at the very
    # end are looked at again next time rather than written off.
    taken = 0
    skipped = 0
    for line in data[: data.rfind(b'\n') + 1].split(b'\n')[:-1]:
      position += len(line) + 1
      if line.startswith(b'#'):
        if not skipped:
          taken = position
        continue
      entry = _parse_index_line(line)
      if entry is None:
        skipped += 1
        continue
      if skipped:
        log.warning('store %s: skipped %d damaged line(s) in %s', self._dir, skipped, index_name)
        skipped = 0
      taken = position
      if entry['id'] in self._by_id or entry['id'] in pending:
        continue
      if entry['writer'] != writer or not segment_pattern.match(str(entry['segment'])):
        log.warning(
          'store %s: %s names a foreign writer or segment; entry %r skipped',
          self._dir,
          index_name,
          entry['id'],
        )
        continue
      status = self._admit(entry, segment_sizes)
      if status == 'pending':
        pending[entry['id']] = entry
        log.warning(
          'store %s: episode %s is missing from %s (not there yet, or the segment was '
          'truncated); looking again on each refresh',
          self._dir,
          entry['id'],
          entry['segment'],
        )
      elif status == 'visible':
        new += 1
    cursor.offset += taken
    return new

  def _retry_pending(self) -> int:
    """Admits waiting entries whose records have appeared; returns how many are visible."""
    new = 0
    segment_sizes: Dict[str, int] = {}
    for pending in self._pending.values():
      for episode_id, entry in list(pending.items()):
        if episode_id in self._by_id:
          del pending[episode_id]
          continue
        status = self._admit(entry, segment_sizes)
        if status != 'pending':
          del pending[episode_id]
          new += status == 'visible'
    return new

  def _admit(self, entry: Dict[str, Any], segment_sizes: Dict[str, int]) -> str:
    """Adds an index entry if its record is there (and intact, with verify).

    Returns 'visible' or 'hidden' (added; quarantined or deleted), 'pending'
    (its bytes are not in the segment yet: not added, look again later) or
    'damaged' (checksum failed: not added).
    """
    segment = entry['segment']
    if segment not in segment_sizes:
      try:
        segment_sizes[segment] = os.path.getsize(self._dir / segment)
      except FileNotFoundError:
        segment_sizes[segment] = -1
    if entry['offset'] + entry['size'] > segment_sizes[segment]:
      return 'pending'
    info = _info(entry)
    if self._verify and not self._hidden(info.episode_id):
      try:
        self._read_record(info)
      except _NotThereError:
        return 'pending'
      except CorruptRecordError as e:
        log.warning('store %s: episode %s is damaged (%s); skipped', self._dir, entry['id'], e)
        self._damaged[info.episode_id] = (info, str(e))
        return 'damaged'
    self._damaged.pop(info.episode_id, None)
    self._by_id[info.episode_id] = len(self._infos)
    self._infos.append(info)
    if self._hidden(info.episode_id):
      return 'hidden'
    self._num_visible += 1
    self._num_steps += info.length
    return 'visible'

  def _read_record(self, info: EpisodeInfo) -> Tuple[Dict[str, Any], memoryview]:
    try:
      with open(self._dir / info.segment, 'rb', buffering=0) as f:
        f.seek(info.offset)
        data = bytearray(info.size)
        view, got = memoryview(data), 0
        while got < info.size:
          n = f.readinto(view[got:])
          if not n:
            raise _NotThereError(f'{info.segment} ends inside the record at {info.offset}')
          got += n
    except FileNotFoundError as e:
      raise _NotThereError(f'segment {info.segment} is missing') from e
    header, payload = _check_record(data)
    if header.get('id') != info.episode_id:
      raise CorruptRecordError(
        f'record at {info.segment}:{info.offset} holds '
        f'{header.get("id")!r}, the index says {info.episode_id!r}'
      )
    return header, payload

  def _ensure_loaded(self) -> None:
    if not self._loaded:
      self.refresh()

  def __len__(self) -> int:
    self._ensure_loaded()
    return self._num_visible

  @property
  def num_steps(self) -> int:
    """Total steps (actions) over all visible episodes."""
    self._ensure_loaded()
    return self._num_steps

  def index(self) -> List[EpisodeInfo]:
    """All visible episodes, in the order they were taken in (append-only
    but for episodes quarantined or deleted since)."""
    self._ensure_loaded()
    if self._num_visible == len(self._infos):
      return list(self._infos)
    return [i for i in self._infos if not self._hidden(i.episode_id)]

  def __contains__(self, episode_id: str) -> bool:
    self._ensure_loaded()
    return episode_id in self._by_id and not self._hidden(episode_id)

  def read(self, episode_id: str) -> Episode:
    """The stored episode; KeyError if unknown or deleted, CorruptRecordError if
    damaged. A quarantined episode still reads (to look at it)."""
    self._ensure_loaded()
    if episode_id in self._deleted:
      raise KeyError(f'episode {episode_id} was deleted')
    if episode_id in self._by_id:
      info = self._infos[self._by_id[episode_id]]
    elif episode_id in self._damaged:
      info = self._damaged[episode_id][0]
    else:
      raise KeyError(episode_id)
    header, payload = self._read_record(info)
    try:
      arrays = _decode_arrays(header, payload)
    except (KeyError, TypeError, ValueError) as e:
      # A checksummed record whose header does not describe its payload.
      raise CorruptRecordError(f'episode {episode_id}: unreadable array layout ({e})') from e
    return Episode(**arrays, metadata=header['metadata'])

  def __iter__(self) -> Iterator[Episode]:
    for info in self.index():
      yield self.read(info.episode_id)

  # Problems, quarantine and deletion.

  def quarantined(self) -> Dict[str, str]:
    """Episodes quarantined (id -> reason): kept in the files, never shown."""
    self._ensure_loaded()
    return dict(self._quarantined)

  def deleted(self) -> Dict[str, str]:
    """Episodes deleted (id -> reason)."""
    self._ensure_loaded()
    return dict(self._deleted)

  def skipped_bytes(self) -> List[Dict[str, Any]]:
    """Byte ranges recovering writers skipped as not a whole record (segment, offset, size)."""
    self._ensure_loaded()
    return [dict(e) for e in self._bad_bytes]

  def damaged(self) -> List[Tuple[EpisodeInfo, str]]:
    """Indexed episodes whose record failed its checksum when taken in, with why."""
    self._ensure_loaded()
    return [v for k, v in self._damaged.items() if not self._hidden(k)]

  def missing(self) -> List[EpisodeInfo]:
    """Indexed episodes whose record is not (yet) in its segment."""
    self._ensure_loaded()
    return [_info(e) for pending in self._pending.values() for e in pending.values()]

  def info(self, episode_id: str) -> EpisodeInfo:
    """What the index says about an episode, visible, hidden or damaged; KeyError if none."""
    self._ensure_loaded()
    if episode_id in self._by_id:
      return self._infos[self._by_id[episode_id]]
    if episode_id in self._damaged:
      return self._damaged[episode_id][0]
    for pending in self._pending.values():
      if episode_id in pending:
        return _info(pending[episode_id])
    raise KeyError(episode_id)

  def quarantine(self, episode_id: str, reason: str) -> None:
    """Hides an episode from every reader for good, keeping its bytes; the id
    and `reason` go to the quarantine log. KeyError if the store has no such
    episode; OSError if the log can't be written (a read-only dataset)."""
    self.info(episode_id)  # KeyError if unknown.
    if self._hidden(episode_id):
      return
    entry = {'kind': 'episode', 'id': episode_id, 'reason': str(reason)}
    _append_quarantine(self._dir, entry)
    self._hide(entry)

  def delete(self, episode_id: str, reason: str = 'deleted by hand') -> None:
    """Deletes an episode for good: it is listed as deleted (so no reader shows
    it and no writer re-indexes it), then its record's bytes are zeroed."""
    info = self.info(episode_id)  # KeyError if unknown.
    if episode_id not in self._deleted:
      entry = {'kind': 'deleted', 'id': episode_id, 'reason': str(reason)}
      _append_quarantine(self._dir, entry)
      self._hide(entry)
    fd = os.open(self._dir / info.segment, os.O_WRONLY)
    try:
      # Positioned writes: a live writer appending to the segment is unaffected.
      end = min(info.offset + info.size, os.fstat(fd).st_size)
      position = info.offset
      while position < end:
        position += os.pwrite(fd, bytes(min(end - position, 1 << 20)), position)
      os.fsync(fd)
    finally:
      os.close(fd)

  def check(self) -> List['Problem']:
    """Reads every record back and says what is wrong, without changing anything.

    Bad (`Problem.status == 'bad'`): a record that fails its checksum or is
    missing from its segment, an episode `episode_problem` objects to, one whose
    observation or action shape or dtype differs from most episodes', and bytes
    in the middle of a segment that no index entry covers and no writer listed.
    Also listed, not bad: quarantined and deleted episodes, and bytes writers
    skipped or have yet to index at a segment's end (an append in flight).
    """
    self.refresh()
    problems: List[Problem] = []
    shapes: Dict[Tuple, List[str]] = {}
    for info in self.index():
      try:
        episode = self.read(info.episode_id)
      except CorruptRecordError as e:  # Damaged since it was taken in.
        problems.append(Problem('bad', info.episode_id, info.segment, str(e)))
        continue
      problem = episode_problem(episode)
      if problem is not None:
        problems.append(Problem('bad', info.episode_id, info.segment, problem))
        continue
      features = episode.observation_features
      key = (
        episode.observations.shape[1:],
        episode.observations.dtype.str,
        episode.actions.shape[1:],
        episode.actions.dtype.str,
        None if features is None else features.shape[1:],
      )
      shapes.setdefault(key, []).append(info.episode_id)
    if len(shapes) > 1:
      usual = max(shapes, key=lambda k: len(shapes[k]))
      names = (
        'observation shape',
        'observation dtype',
        'action shape',
        'action dtype',
        'observation_features shape',
      )
      for key, ids in shapes.items():
        if key == usual:
          continue
        diffs = ', '.join(
          f'{n} {b} (most have {a})' for n, a, b in zip(names, usual, key) if a != b
        )
        for episode_id in ids:
          segment = self.info(episode_id).segment
          problems.append(Problem('bad', episode_id, segment, f'unlike the others: {diffs}'))
    for info, reason in self.damaged():
      problems.append(Problem('bad', info.episode_id, info.segment, reason))
    for info in self.missing():
      problems.append(
        Problem(
          'bad',
          info.episode_id,
          info.segment,
          f'record missing: the index says {info.size} bytes at {info.offset}, '
          'the segment is shorter (truncated, or not written out yet)',
        )
      )
    for status, listed in (('quarantined', self._quarantined), ('deleted', self._deleted)):
      for episode_id, reason in sorted(listed.items()):
        segment = self.info(episode_id).segment if self._known(episode_id) else '?'
        problems.append(Problem(status, episode_id, segment, reason))
    problems.extend(self._unindexed_bytes())
    return problems

  def _known(self, episode_id: str) -> bool:
    try:
      self.info(episode_id)
    except KeyError:
      return False
    return True

  def _unindexed_bytes(self) -> List['Problem']:
    """Byte ranges of segments that no index entry points at."""
    covered: Dict[str, List[Tuple[int, int]]] = {}
    infos = list(self._infos) + [i for i, _ in self._damaged.values()] + self.missing()
    for info in infos:
      covered.setdefault(info.segment, []).append((info.offset, info.size))
    listed = {(e['segment'], e['offset']): e for e in self._bad_bytes}
    problems = []
    for name in sorted(os.listdir(self._dir)):
      match = re.match(rf'^(.+)\.\d{{{_SEGMENT_DIGITS},}}\.seg$', name)
      if not match or not _NAME_RE.match(match.group(1)):
        continue
      size = os.path.getsize(self._dir / name)
      position = 0
      gaps = []
      for offset, length in sorted(covered.get(name, [])) + [(size, 0)]:
        if offset > position:
          gaps.append((position, offset - position, offset < size))
        position = max(position, offset + length)
      for offset, length, inside in gaps:
        where = f'{name}:{offset}'
        if (name, offset) in listed:
          problems.append(Problem('skipped', where, name, listed[(name, offset)]['reason']))
        elif inside:
          problems.append(
            Problem(
              'bad',
              where,
              name,
              f'{length} bytes no index entry points at (the next writer of '
              f'{match.group(1)!r} re-indexes whole records there and lists the rest)',
            )
          )
        else:
          problems.append(
            Problem(
              'tail',
              where,
              name,
              f'{length} bytes after the last indexed record (an append in flight, or a '
              f'torn one the next writer of {match.group(1)!r} cuts off)',
            )
          )
    return problems


@dataclasses.dataclass(frozen=True)
class Problem:
  """One finding of `EpisodeStore.check`.

  status: 'bad' (needs attention), 'quarantined' or 'deleted' (handled), 'skipped'
  (bytes a writer listed as not a whole record) or 'tail' (unindexed bytes at a
  segment's end). `what` is an episode id, or segment:offset for bytes.
  """

  status: str
  what: str
  file: str
  reason: str


# ----------------------------------------------------------------------------
# All-or-nothing batches (imports).

_STAGING_PREFIX = '.staging-'
_STAGING_LOCK = '.staging.lock'


def clean_staging(directory: PathLike) -> List[str]:
  """Removes what a crashed `StagedWriter` left in a store; returns the writer names.

  Call only while holding the store's staging lock (`StagedWriter` does). A batch whose
  index reached the store was published (only its staging directory is left over); one
  whose index did not is rolled back: its segments, some of which may already have been
  moved into the store (invisible to readers, which see a writer only through its index),
  are deleted.
  """
  directory = pathlib.Path(directory)
  cleaned = []
  for entry in sorted(os.scandir(directory), key=lambda e: e.name):
    if not (entry.name.startswith(_STAGING_PREFIX) and entry.is_dir(follow_symlinks=False)):
      continue
    name = entry.name[len(_STAGING_PREFIX) :]
    if _NAME_RE.match(name) and not (directory / f'{name}{_INDEX_SUFFIX}').exists():
      pattern = _segment_re(name)
      for segment in os.scandir(directory):
        if pattern.match(segment.name):
          os.unlink(segment.path)
      log.warning(
        'store %s: rolled back the unpublished batch %r of a crashed import', directory, name
      )
    shutil.rmtree(entry.path)
    cleaned.append(name)
  if cleaned:
    fsync_dir(directory)
  return cleaned


class StagedWriter:
  """A new writer name whose episodes become visible all at once, or never.

  Episodes are appended to a writer in a hidden staging directory inside the store;
  `publish` moves its segments into the store, then its index: the index's rename is the
  commit point, as readers see a writer only through its index. Until then (a failure, a
  crash, `discard`) the store's readers see nothing of the batch, and the next
  StagedWriter of the store removes what a crash left (`clean_staging`). One StagedWriter
  per store at a time: a second gets WriterBusyError.
  """

  def __init__(
    self, directory: PathLike, name: str, *, max_segment_bytes: int = DEFAULT_MAX_SEGMENT_BYTES
  ):
    if not isinstance(name, str) or not _NAME_RE.match(name):
      raise ValueError(f'writer name {name!r}: use 1-128 letters, digits, "_", "-" or "."')
    self._dir = pathlib.Path(directory)
    self._dir.mkdir(parents=True, exist_ok=True)
    self._name = name
    self._lock_fd = os.open(self._dir / _STAGING_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    self._writer: Optional[EpisodeWriter] = None
    try:
      try:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        raise WriterBusyError(
          f'another import into {self._dir} is running; try again when it has finished'
        ) from None
      clean_staging(self._dir)
      pattern = _segment_re(name)
      if (self._dir / f'{name}{_INDEX_SUFFIX}').exists() or any(
        pattern.match(e.name) for e in os.scandir(self._dir)
      ):
        raise WriterBusyError(f'writer {name!r} already has files in {self._dir}')
      self._staging = self._dir / f'{_STAGING_PREFIX}{name}'
      self._staging.mkdir()
      self._writer = EpisodeWriter(self._staging, name, max_segment_bytes=max_segment_bytes)
    except BaseException:
      self.discard()
      raise
    self.count = 0

  @property
  def name(self) -> str:
    return self._name

  def append(self, episode: Episode) -> str:
    """Stages `episode` (validated and fsynced as `EpisodeWriter.append` does)."""
    if self._writer is None:
      raise StoreError(f'staged writer {self._name!r} is closed')
    episode_id = self._writer.append(episode)
    self.count += 1
    return episode_id

  def publish(self) -> int:
    """Makes every staged episode visible at once; returns how many (0: store untouched)."""
    if self._writer is None:
      raise StoreError(f'staged writer {self._name!r} is closed')
    self._writer.close()
    if not self.count:
      self.discard()
      return 0
    index = f'{self._name}{_INDEX_SUFFIX}'
    pattern = _segment_re(self._name)
    moved = []
    try:
      for entry in sorted(os.scandir(self._staging), key=lambda e: e.name):
        if pattern.match(entry.name):
          os.rename(entry.path, self._dir / entry.name)
          moved.append(entry.name)
      fsync_dir(self._dir)
      os.rename(self._staging / index, self._dir / index)  # The commit point.
      fsync_dir(self._dir)
    except BaseException:
      if not (self._dir / index).exists():
        for name in moved:
          (self._dir / name).unlink(missing_ok=True)
      self.discard()
      raise
    self.discard()
    return self.count

  def discard(self) -> None:
    """Drops what is staged and not published, and releases the store (idempotent)."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    staging = getattr(self, '_staging', None)
    if staging is not None:
      shutil.rmtree(staging, ignore_errors=True)
      self._staging = None
    if self._lock_fd >= 0:
      fd, self._lock_fd = self._lock_fd, -1
      os.close(fd)

  def __enter__(self) -> 'StagedWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.discard()
