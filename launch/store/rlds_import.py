"""Import of an RLDS dataset directory (TFDS's on-disk layout) into Episodes.

The layout, the features and their encodings are described in `launch.store.rlds_format`.

Import validates every record and never loads a bad one silently: shapes and
dtypes against features.json (or an ``expected`` spec), NaN/inf anywhere,
is_first/is_last/is_terminal consistency, unparseable metadata, and damaged
files (checksum mismatches, truncation, records missing against
``shardLengths``). Each problem is reported by file, record and dataset
episode index; ``on_error='refuse'`` raises ``BadRecordError`` at the first
one, ``on_error='skip'`` leaves it out and lists it in the report.

`import_into_store` is the safe way into a store: it reads the dataset twice, streaming
(one episode in memory at a time). The first pass checks everything, including what the
store would refuse and strict metadata (no NaN/Infinity, known keys of the right type);
only then does the second pass stage the episodes under a new writer name and publish
them at once (all or nothing, see `StagedWriter`). A one-step RLDS episode (a reset, then
nothing) is valid RLDS and `import_rlds` returns it, but it has no transition for a store
to hold: `import_into_store` leaves it out and counts it. Each stored episode carries the
sha256 of its content in its metadata (``import_sha256``): an episode already in the store
is skipped and counted, so importing the same data again is a no-op. Sizes are capped
before anything is allocated: a record's declared length, a step's declared shape, each
zlib-encoded entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import struct
import time
import zlib
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np
import tensorflow as tf
from google.protobuf import message as proto_message

# The record reader is TensorFlow's own (it checks the data's checksum); each record's
# header is checked here first, so a damaged or oversized record can be stepped over.
from tensorflow.python.lib.io import tf_record

from agents.common.errors import ConfigError
from launch.store.episodes import (
  Episode,
  EpisodeStore,
  StagedWriter,
  StoreError,
  validate_episode,
)
from launch.store.rlds_format import (
  DATASET_INFO_FILE,
  FEATURES_FIELD,
  FEATURES_FILE,
  FILEPATH_TEMPLATE,
  FLAGS,
  FOOTER_BYTES,
  HEADER_BYTES,
  METADATA_KEY,
  STEP_FIELDS,
  BadRecord,
  BadRecordError,
  EpisodeSpec,
  Field,
  PathLike,
  RldsError,
  check_dtype,
  fields_for,
  masked_crc32c,
)

# The most bytes one episode may take, decoded (all its steps' arrays) and as a record;
# checked before anything of that size is allocated.
DEFAULT_MAX_EPISODE_BYTES = 512 << 20
# Metadata keys import_into_store adds: the sha256 of the episode's content (arrays and
# metadata without these two keys) and the dataset directory it came from.
HASH_KEY = 'import_sha256'
SOURCE_KEY = 'imported_from'


@dataclasses.dataclass
class ImportReport:
  """What an import loaded and what it skipped."""

  directory: str
  dataset_name: str = ''
  spec: Optional[EpisodeSpec] = None
  expected_episodes: int = 0  # as dataset_info.json lists them
  loaded: int = 0
  bad: List[BadRecord] = dataclasses.field(default_factory=list)

  @property
  def skipped(self) -> int:
    return sum(b.count for b in self.bad)

  @property
  def ok(self) -> bool:
    return not self.bad

  def summary(self) -> str:
    """Multi-line text: a count line, then one line per bad record."""
    lines = [
      f'{self.directory}: loaded {self.loaded} of '
      f'{self.expected_episodes} episodes, skipped {self.skipped}'
    ]
    lines.extend(f'  skipped {b}' for b in self.bad)
    return '\n'.join(lines)


class _Invalid(Exception):
  """A record that decodes but breaks the format; the message is the reason."""


# --- Reading TFRecord files, past damaged records ---


class _Record(NamedTuple):
  index: int
  data: Optional[bytes]
  error: Optional[str] = None
  count: int = 1


def _shard_records(path: pathlib.Path, listed: int, max_bytes: int) -> Iterator[_Record]:
  """Yields each record of a TFRecord file, or the damage in its place.

  Each record's header is read and checked here first: its length is protected by its
  own checksum, so a record too long for the cap (or for the file) is reported without
  reading it, and one whose data is damaged can be stepped over. ``listed`` is how many
  records dataset_info.json says the file holds; when damage leaves the rest of the file
  unreadable, one _Record covers the rest.
  """
  size = path.stat().st_size
  offset, index = 0, 0
  reader = None

  def rest(reason: str) -> _Record:
    count = max(1, listed - index)
    if count > 1:
      reason += '; the rest of the file cannot be read'
    return _Record(index, None, reason, count)

  with open(path, 'rb') as f:
    while offset < size:
      f.seek(offset)
      header = f.read(HEADER_BYTES)
      if len(header) < HEADER_BYTES:
        yield rest(f'truncated: the file ends {len(header)} bytes into a record header')
        return
      length, crc = struct.unpack('<QI', header)
      if masked_crc32c(header[:8]) != crc:
        yield rest('record header corrupted (checksum mismatch)')
        return
      end = offset + HEADER_BYTES + length + FOOTER_BYTES
      if end > size:
        yield rest(
          f'truncated: the record needs {end - offset} bytes, the file ends '
          f'{size - offset} bytes into it'
        )
        return
      if length > max_bytes:
        yield _Record(
          index,
          None,
          f'the record declares {length} bytes, more than the cap of {max_bytes} per episode',
        )
      else:
        if reader is None:
          reader = tf_record.tf_record_random_reader(str(path))
        try:
          data, _ = reader.read(offset)
        except tf.errors.DataLossError:
          yield _Record(index, None, 'record data corrupted (checksum mismatch)')
        except tf.errors.OpError as e:
          yield _Record(index, None, f'record unreadable ({e.message})')
        else:
          yield _Record(index, bytes(data))
      index += 1
      offset = end


def _load_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except FileNotFoundError:
    raise
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise RldsError(f'{path}: unreadable or not valid JSON ({e})') from e


def _read_shard_list(root: pathlib.Path) -> Tuple[str, List[Tuple[str, int]]]:
  """(dataset name, [(shard file name, episodes listed)]) from dataset_info.json."""
  path = root / DATASET_INFO_FILE
  try:
    info = _load_json(path)
  except FileNotFoundError:
    raise RldsError(
      f'{path} is missing: not a TFDS dataset directory, or an unfinished export'
    ) from None
  try:
    name = info['name']
    file_format = info.get('fileFormat', 'tfrecord')
    if file_format != 'tfrecord':
      raise RldsError(f'{path}: fileFormat {file_format!r}; only tfrecord is supported')
    shards = []
    for split in info['splits']:
      template = split.get('filepathTemplate', FILEPATH_TEMPLATE)
      lengths = [int(n) for n in split['shardLengths']]
      for i, listed in enumerate(lengths):
        file_name = template.format(
          DATASET=name,
          SPLIT=split['name'],
          FILEFORMAT=file_format,
          SHARD_X_OF_Y=f'{i:05d}-of-{len(lengths):05d}',
          SHARD_INDEX=f'{i:05d}',
          NUM_SHARDS=f'{len(lengths):05d}',
        )
        # The names come from the file: keep them inside the dataset directory.
        if pathlib.PurePath(file_name).name != file_name or file_name in ('.', '..'):
          raise RldsError(f'{path}: shard name {file_name!r} is not a plain file name')
        shards.append((file_name, listed))
  except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
    raise RldsError(f'{path}: no usable split list ({type(e).__name__}: {e})') from e
  return str(name), shards


def _tensor_field(path: pathlib.Path, key: str, feature: Any) -> Field:
  if not isinstance(feature, dict) or 'tensor' not in feature:
    kind = feature.get('pythonClassName', '?') if isinstance(feature, dict) else '?'
    raise RldsError(f'{path}: {key} is a {kind}; only a single tensor per field is supported')
  try:
    tensor = feature['tensor']
    shape = tuple(int(d) for d in tensor.get('shape', {}).get('dimensions', []))
    dtype = np.dtype(tensor['dtype'])
    encoding = str(tensor.get('encoding', 'none')).lower()
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise RldsError(f'{path}: {key} has an unreadable tensor description ({e})') from e
  if any(d < 0 for d in shape):
    raise RldsError(
      f'{path}: {key} has a variable shape {list(shape)}; only fixed shapes are supported'
    )
  problem = check_dtype(dtype)
  if problem:
    raise RldsError(f'{path}: {key}: {problem}')
  if encoding not in ('none', 'bytes', 'zlib'):
    raise RldsError(f'{path}: {key} has unknown encoding {encoding!r}')
  return Field(shape, dtype, encoding)


def _step_bytes(fields: Dict[str, Field]) -> int:
  return sum(math.prod(f.shape) * f.dtype.itemsize for f in fields.values())


def _read_features(
  root: pathlib.Path, expected: Optional[EpisodeSpec], max_bytes: int
) -> Tuple[Dict[str, Field], EpisodeSpec]:
  """The step fields the dataset declares, checked against ``expected`` and the cap."""
  path = root / FEATURES_FILE
  try:
    doc = _load_json(path)
  except FileNotFoundError:
    if expected is None:
      raise RldsError(f'{path} is missing: pass expected= to say what the episodes hold') from None
    return fields_for(expected), expected
  try:
    top = doc['featuresDict']['features']
    steps = top['steps']['sequence']['feature']['featuresDict']['features']
  except (KeyError, TypeError) as e:
    raise RldsError(f'{path}: no steps sequence feature (not an RLDS dataset)') from e
  fields = {}
  for name in STEP_FIELDS:
    if name not in steps:
      raise RldsError(f'{path}: steps/{name} is not declared')
    fields[name] = _tensor_field(path, f'steps/{name}', steps[name])
  if FEATURES_FIELD in steps:  # A camera run's state features beside its images.
    field = fields[FEATURES_FIELD] = _tensor_field(
      path, f'steps/{FEATURES_FIELD}', steps[FEATURES_FIELD]
    )
    if len(field.shape) != 1 or field.dtype.kind != 'f':
      raise RldsError(
        f'{path}: steps/{FEATURES_FIELD} must be a float vector [F], got '
        f'{field.dtype.name}{list(field.shape)}'
      )
  for name in ('reward', 'discount'):
    if fields[name].shape:
      raise RldsError(
        f'{path}: steps/{name} has shape {list(fields[name].shape)}; a scalar is expected'
      )
  for name in FLAGS:
    if fields[name].shape or fields[name].dtype != bool:
      raise RldsError(f'{path}: steps/{name} must be a bool scalar')
  try:
    metadata = top['episode_metadata']['featuresDict']['features'][METADATA_KEY.split('/')[1]]
  except (KeyError, TypeError):
    raise RldsError(f'{path}: {METADATA_KEY} is not declared') from None
  if not isinstance(metadata, dict) or 'text' not in metadata:
    raise RldsError(f'{path}: {METADATA_KEY} is not a text feature')
  spec = EpisodeSpec(
    fields['observation'].shape,
    fields['observation'].dtype,
    fields['action'].shape,
    fields['action'].dtype,
    fields['reward'].dtype,
    fields['discount'].dtype,
    fields[FEATURES_FIELD].shape if FEATURES_FIELD in fields else None,
    fields[FEATURES_FIELD].dtype if FEATURES_FIELD in fields else None,
  )
  if expected is not None and expected != spec:
    raise RldsError(f'{root} holds {spec.describe()}; expected {expected.describe()}')
  _check_step_size(path, fields, max_bytes)
  return fields, spec


def _check_step_size(path: pathlib.Path, fields: Dict[str, Field], max_bytes: int) -> None:
  step_bytes = _step_bytes(fields)
  if 2 * step_bytes > max_bytes:  # An episode has at least two RLDS steps.
    raise RldsError(
      f'{path}: one step of {step_bytes} bytes (declared shapes and dtypes) makes a '
      f'two-step episode larger than the cap of {max_bytes} bytes per episode'
    )


def _inflate(key: str, step: int, data: bytes, step_bytes: int) -> bytes:
  """One zlib entry, decompressed no further than one step needs (no zlib bomb)."""
  inflater = zlib.decompressobj()
  try:
    out = inflater.decompress(data, step_bytes + 1)
  except zlib.error as e:
    raise _Invalid(f'{key} step {step}: bad zlib data ({e})') from e
  if len(out) > step_bytes or inflater.unconsumed_tail:
    raise _Invalid(f'{key} step {step} decompresses to more than the {step_bytes} bytes it needs')
  if not inflater.eof or inflater.unused_data:
    raise _Invalid(f'{key} step {step}: bad zlib data (truncated, or bytes after the end)')
  return out


def _decode_field(features: Any, name: str, field: Field, n: int) -> np.ndarray:
  """The [n, *shape] array of one step field, or _Invalid."""
  key = f'steps/{name}'
  if key not in features:
    raise _Invalid(f'{key} is missing')
  feature = features[key]
  kind = feature.WhichOneof('kind')
  if kind != field.list_kind:
    raise _Invalid(
      f'{key} is stored as {kind or "no values"}; a {field.dtype.name} '
      f'field with encoding {field.encoding!r} needs a {field.list_kind}'
    )
  if field.encoding == 'none':
    values = getattr(feature, kind).value
    if len(values) != n * field.size:
      raise _Invalid(
        f'{key} holds {len(values)} values; {n} steps of shape '
        f'{list(field.shape)} need {n * field.size}'
      )
    if kind == 'float_list':
      # fromiter: one Python float at a time, not a list of them (9x the array's memory).
      array = np.fromiter(values, np.float32, count=len(values)).astype(field.dtype, copy=False)
    else:
      array = np.fromiter(values, np.int64, count=len(values))
      if field.dtype == bool:
        low, high = 0, 1
      else:
        low, high = np.iinfo(field.dtype).min, np.iinfo(field.dtype).max
      if array.size and (array.min() < low or array.max() > high):
        raise _Invalid(f'{key} holds values outside the {field.dtype.name} range')
      array = array.astype(field.dtype, copy=False)
  else:
    entries = list(feature.bytes_list.value)
    if len(entries) != n:
      raise _Invalid(f'{key} holds {len(entries)} entries for {n} steps')
    step_bytes = field.size * field.dtype.itemsize
    if field.encoding == 'zlib':
      entries = [_inflate(key, t, e, step_bytes) for t, e in enumerate(entries)]
    for t, entry in enumerate(entries):
      if len(entry) != step_bytes:
        raise _Invalid(
          f'{key} step {t} holds {len(entry)} bytes; shape '
          f'{list(field.shape)} of {field.dtype.name} needs {step_bytes}'
        )
    array = np.frombuffer(b''.join(entries), field.dtype.newbyteorder('<'))
    array = array.astype(field.dtype)  # A writable copy, native byte order.
  array = array.reshape((n,) + field.shape)
  if field.dtype.kind == 'f':
    finite = np.isfinite(array.reshape(n, -1)).all(axis=1)
    if not finite.all():
      raise _Invalid(f'{key} has NaN or inf at step {int(np.argmin(finite))}')
  return array


def _reject_constant(name: str) -> Any:
  raise ValueError(f'{name} is not a number JSON allows')


def _finite_float(text: str) -> float:
  value = float(text)
  if not math.isfinite(value):
    raise ValueError(f'{text} overflows to {value}')
  return value


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


# The metadata keys that the program reads, and what each must hold; other keys are free.
_METADATA_CHECKS = {
  'success': (
    lambda v: isinstance(v, bool) or (_is_int(v) and v in (0, 1)),
    'true / false (or 1 / 0)',
  ),
  'source': (lambda v: isinstance(v, str), 'a string'),
  'task': (lambda v: isinstance(v, str), 'a string'),
  'policy_version': (
    lambda v: _is_int(v) or (isinstance(v, list) and len(v) == 2 and all(map(_is_int, v))),
    'an integer or a [min, max] pair of integers',
  ),
  'seed': (_is_int, 'an integer'),
}


def parse_metadata(text: bytes) -> Dict[str, Any]:
  """Episode metadata from its JSON text, strictly: ValueError unless it is a JSON object
  of finite numbers whose known keys hold what the program expects."""
  try:
    metadata = json.loads(
      text.decode('utf-8'), parse_constant=_reject_constant, parse_float=_finite_float
    )
  except (UnicodeDecodeError, ValueError) as e:
    raise ValueError(f'{METADATA_KEY} is not valid JSON ({e})') from e
  if not isinstance(metadata, dict):
    raise ValueError(f'{METADATA_KEY} is a JSON {type(metadata).__name__}, not an object')
  for key, (ok, wanted) in _METADATA_CHECKS.items():
    if key in metadata and not ok(metadata[key]):
      raise ValueError(f'{METADATA_KEY}: {key!r} must be {wanted}, got {metadata[key]!r}')
  return metadata


def _decode_episode(data: bytes, fields: Dict[str, Field], max_bytes: int) -> Episode:
  """One validated Episode from a record's bytes, or _Invalid."""
  try:
    example = tf.train.Example.FromString(data)
  except proto_message.DecodeError as e:
    raise _Invalid(f'not a tf.train.Example ({e})') from e
  features = example.features.feature
  if 'steps/is_first' not in features:
    raise _Invalid('steps/is_first is missing')
  first = features['steps/is_first']
  if first.WhichOneof('kind') != 'int64_list':
    raise _Invalid('steps/is_first is not stored as an int64_list')
  n = len(first.int64_list.value)
  if n == 0:
    raise _Invalid('the episode has no steps')
  if n * _step_bytes(fields) > max_bytes:
    raise _Invalid(
      f'{n} steps of {_step_bytes(fields)} bytes exceed the cap of {max_bytes} bytes per episode'
    )
  arrays = {name: _decode_field(features, name, field, n) for name, field in fields.items()}
  steps = n - 1
  position = np.arange(n)
  if not np.array_equal(arrays['is_first'], position == 0):
    raise _Invalid('steps/is_first must be True on step 0 only')
  if not np.array_equal(arrays['is_last'], position == steps):
    raise _Invalid(f'steps/is_last must be True on step {steps} (the last) only')
  terminal = arrays['is_terminal']
  if terminal[:-1].any():
    raise _Invalid('steps/is_terminal is True before the last step')
  ends_terminal = steps > 0 and arrays['discount'][steps - 1] == 0
  if bool(terminal[-1]) != ends_terminal:
    raise _Invalid(
      f'steps/is_terminal is {bool(terminal[-1])} on the last step but '
      f'the last discount is '
      f'{arrays["discount"][steps - 1] if steps else "absent"}'
    )
  if METADATA_KEY not in features:
    raise _Invalid(f'{METADATA_KEY} is missing')
  texts = features[METADATA_KEY].bytes_list.value
  if len(texts) != 1:
    raise _Invalid(f'{METADATA_KEY} holds {len(texts)} values, not 1')
  try:
    metadata = parse_metadata(texts[0])
  except ValueError as e:
    raise _Invalid(str(e)) from e
  episode = Episode(
    observations=arrays['observation'],
    actions=arrays['action'][:steps].copy(),
    rewards=arrays['reward'][:steps].copy(),
    discounts=arrays['discount'][:steps].copy(),
    metadata=metadata,
    observation_features=arrays.get(FEATURES_FIELD),
  )
  # Whatever the store would refuse is a bad record here, found before anything is
  # stored; an empty episode (one RLDS step: a reset, then nothing) is valid RLDS but has
  # no transition to store, and import_into_store leaves it out (and counts it).
  if steps:
    try:
      validate_episode(episode)
    except ValueError as e:
      raise _Invalid(f'the store would refuse it: {e}') from e
  if not math.isfinite(episode.episode_return):
    raise _Invalid('steps/reward: the episode return overflows to a non-finite value')
  return episode


class _Dataset(NamedTuple):
  root: pathlib.Path
  name: str
  shards: List[Tuple[str, int]]
  fields: Dict[str, Field]
  spec: EpisodeSpec


class _Item(NamedTuple):
  """One episode of the dataset, read: ``episode`` or else ``bad``."""

  file: str
  episode_index: int  # within the dataset
  episode: Optional[Episode]
  bad: Optional[BadRecord]


def _open(
  in_dir: PathLike, on_error: str, expected: Optional[EpisodeSpec], max_bytes: int
) -> _Dataset:
  if on_error not in ('skip', 'refuse'):
    raise ConfigError(f"on_error must be 'skip' or 'refuse', got {on_error!r}")
  if not isinstance(max_bytes, int) or max_bytes < 1:
    raise ConfigError(f'max_episode_bytes must be a positive integer, got {max_bytes!r}')
  if expected is not None:
    for name in ('observation_dtype', 'action_dtype', 'reward_dtype', 'discount_dtype'):
      problem = check_dtype(getattr(expected, name))
      if problem:
        raise ConfigError(f'expected.{name}: {problem}')
  root = pathlib.Path(in_dir)
  if not root.is_dir():
    raise RldsError(f'{root} is not a directory')
  name, shards = _read_shard_list(root)
  fields, spec = _read_features(root, expected, max_bytes)
  return _Dataset(root, name, shards, fields, spec)


def _items(dataset: _Dataset, max_bytes: int) -> Iterator[_Item]:
  """Every episode of the dataset in order, decoded and checked, one at a time."""
  first_episode = 0
  for file_name, listed in dataset.shards:
    path = dataset.root / file_name
    if not path.is_file():
      if listed:
        bad = BadRecord(file_name, 0, first_episode, 'the shard file is missing', listed)
        yield _Item(file_name, first_episode, None, bad)
      first_episode += listed
      continue
    seen = 0
    for record in _shard_records(path, listed, max_bytes):
      seen = record.index + record.count
      at = first_episode + record.index
      if record.index >= listed:
        reason = f'dataset_info.json lists {listed} records for this file'
        yield _Item(
          file_name, at, None, BadRecord(file_name, record.index, at, reason, record.count)
        )
      elif record.error is not None:
        count = min(record.count, listed - record.index)
        bad = BadRecord(file_name, record.index, at, record.error, count)
        yield _Item(file_name, at, None, bad)
      else:
        try:
          yield _Item(file_name, at, _decode_episode(record.data, dataset.fields, max_bytes), None)
        except _Invalid as e:
          yield _Item(file_name, at, None, BadRecord(file_name, record.index, at, str(e)))
    if seen < listed:
      reason = f'missing: the file ends after {seen} records, dataset_info.json lists {listed}'
      bad = BadRecord(file_name, seen, first_episode + seen, reason, listed - seen)
      yield _Item(file_name, first_episode + seen, None, bad)
    first_episode += listed


def _report(dataset: _Dataset, cls: type = None, **extra: Any) -> Any:
  return (cls or ImportReport)(
    directory=str(dataset.root),
    dataset_name=dataset.name,
    spec=dataset.spec,
    expected_episodes=sum(listed for _, listed in dataset.shards),
    **extra,
  )


def _refuse(dataset: _Dataset, bad: BadRecord) -> BadRecordError:
  return BadRecordError(bad, directory=dataset.root)


def import_rlds(
  in_dir: PathLike,
  on_error: str = 'skip',
  expected: Optional[EpisodeSpec] = None,
  max_episode_bytes: int = DEFAULT_MAX_EPISODE_BYTES,
) -> Tuple[List[Episode], ImportReport]:
  """Reads an RLDS dataset directory (as export_rlds writes it) into Episodes.

  This holds every episode in memory; `import_into_store` streams instead.

  Args:
    in_dir: the directory holding dataset_info.json, features.json and shards.
    on_error: 'skip' leaves bad records out and lists them in the report;
      'refuse' raises BadRecordError at the first one.
    expected: if given, the dataset must hold episodes of this spec (and it
      stands in for a missing features.json).
    max_episode_bytes: the cap on one episode, as a record and decoded.

  Returns:
    The good episodes in dataset order, and the report of what was skipped.
    Record features that features.json does not declare (extra fields other
    tools may add) are ignored.

  Raises:
    ConfigError: on_error is neither 'skip' nor 'refuse', or a bad cap.
    RldsError: the directory, dataset_info.json or features.json is unusable,
      the dataset does not match ``expected``, or one step is over the cap.
    BadRecordError: under 'refuse', naming the file, episode and reason of
      the first bad record.
  """
  dataset = _open(in_dir, on_error, expected, max_episode_bytes)
  report = _report(dataset)
  episodes: List[Episode] = []
  for item in _items(dataset, max_episode_bytes):
    if item.bad is None:
      episodes.append(item.episode)
    elif on_error == 'refuse':
      raise _refuse(dataset, item.bad)
    else:
      report.bad.append(item.bad)
  report.loaded = len(episodes)
  return episodes, report


def episode_sha256(episode: Episode) -> str:
  """Hex sha256 of an episode's content: each array's dtype, shape and little-endian
  bytes, and its metadata as canonical JSON without the keys import adds."""
  digest = hashlib.sha256(b'collect-infer episode v1\n')
  names = ['observations', 'actions', 'rewards', 'discounts']
  if episode.observation_features is not None:  # Only then: other episodes hash as before.
    names.append('observation_features')
  for name in names:
    array = np.asarray(getattr(episode, name))
    array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder('<'))
    digest.update(f'{name} {array.dtype.str} {list(array.shape)}\n'.encode())
    digest.update(array.data.cast('B') if array.size else b'')
  metadata = {k: v for k, v in episode.metadata.items() if k not in (HASH_KEY, SOURCE_KEY)}
  digest.update(
    json.dumps(metadata, sort_keys=True, separators=(',', ':'), allow_nan=False).encode()
  )
  return digest.hexdigest()


@dataclasses.dataclass
class StoreImportReport(ImportReport):
  """What `import_into_store` read, skipped and stored."""

  store: str = ''
  writer: str = ''  # the writer name the new episodes are stored under ('' if none)
  duplicates: int = 0  # good episodes skipped: already in the store, or twice in the dataset
  empty: int = 0  # good episodes of one RLDS step (no transition), which a store can't hold
  stored: int = 0

  def summary(self) -> str:
    stored = f'stored {self.stored} as writer {self.writer}' if self.stored else 'stored nothing'
    lines = [
      f'{self.directory}: loaded {self.loaded} of {self.expected_episodes} episodes, '
      f'skipped {self.skipped}; {stored} in {self.store}; skipped {self.duplicates} '
      f'duplicates (already there, or repeated) and {self.empty} empty (one RLDS step)'
    ]
    lines.extend(f'  skipped {b}' for b in self.bad)
    return '\n'.join(lines)


def import_into_store(
  in_dir: PathLike,
  store_dir: PathLike,
  *,
  writer: str = 'import',
  on_error: str = 'refuse',
  expected: Optional[EpisodeSpec] = None,
  max_episode_bytes: int = DEFAULT_MAX_EPISODE_BYTES,
) -> StoreImportReport:
  """Imports an RLDS dataset into an episode store, all or nothing, without duplicates.

  Streams the dataset twice, one episode in memory at a time: the first pass checks
  every episode (as `import_rlds` does, plus everything the store would refuse) and
  touches nothing; the second stages the good episodes that the store does not hold yet
  (by `episode_sha256`) under a new writer name ``<writer>-<time>-<random>`` and publishes
  them at once (`StagedWriter`). Each stored episode's metadata gains ``import_sha256``
  and ``imported_from``.

  Raises:
    ConfigError, RldsError: as `import_rlds`; nothing is stored.
    BadRecordError: under 'refuse', the first bad record; nothing is stored.
    RldsError: the store can't take the episodes (another import into it is running,
      the disk is full, the dataset changed between the passes); nothing is stored.
  """
  dataset = _open(in_dir, on_error, expected, max_episode_bytes)
  report = _report(dataset, StoreImportReport, store=str(store_dir))
  hashes: List[str] = []
  for item in _items(dataset, max_episode_bytes):
    if item.bad is None:
      if item.episode.length:
        hashes.append(episode_sha256(item.episode))
      else:
        report.empty += 1
    elif on_error == 'refuse':
      raise _refuse(dataset, item.bad)
    else:
      report.bad.append(item.bad)
  report.loaded = len(hashes) + report.empty
  if not hashes:
    return report

  source = os.path.abspath(dataset.root)
  name = f'{writer}-{time.strftime("%Y%m%d-%H%M%S")}-{os.urandom(3).hex()}'
  where = f'{store_dir}'
  try:
    with StagedWriter(store_dir, name) as staged:
      known = {
        info.metadata.get(HASH_KEY) for info in EpisodeStore(store_dir, verify=False).index()
      }
      good = iter(hashes)
      bad = []
      for item in _items(dataset, max_episode_bytes):
        where = f'{dataset.root / item.file}: episode {item.episode_index}'
        if item.bad is not None:
          bad.append(item.bad)
          continue
        if not item.episode.length:
          continue
        digest = episode_sha256(item.episode)
        if digest != next(good, None):
          raise RldsError(f'{where}: changed since it was checked; nothing was imported')
        if digest in known:
          report.duplicates += 1
          continue
        known.add(digest)
        item.episode.metadata = {**item.episode.metadata, HASH_KEY: digest, SOURCE_KEY: source}
        staged.append(item.episode)
      if bad != report.bad or next(good, None) is not None:
        raise RldsError(f'{dataset.root}: changed while it was imported; nothing was imported')
      where = f'{store_dir}'
      report.stored = staged.publish()
      report.writer = name if report.stored else ''
  except (StoreError, ValueError, OSError) as e:
    raise RldsError(f'{where}: {e}; nothing was imported') from e
  return report
