"""RLDS datasets in TFDS's on-disk layout: what export writes and import reads.

RLDS (github.com/google-research/rlds) is the field's episode format: a
dataset of episodes, each a sequence of steps plus episode metadata. Export
(`launch.store.rlds_export`) writes it the way TensorFlow Datasets stores an
RLDS dataset, so ``tfds.builder_from_directory(out_dir).as_dataset(split='train')``
can read an export; import (`launch.store.rlds_import`) reads such a directory
back with plain TensorFlow (no TFDS needed).

Layout of an export directory::

    <out_dir>/dataset_info.json
    <out_dir>/features.json
    <out_dir>/<name>-train.tfrecord-00000-of-000NN
    ...
    <out_dir>/<name>-train.tfrecord-000NN-1-of-000NN

Each shard is a TFRecord file; each record is one episode, a serialized
``tf.train.Example``. A stored episode of T steps becomes T + 1 RLDS steps;
each step field is flattened across steps into one feature, as TFDS encodes a
``tfds.features.Dataset`` of a ``FeaturesDict``:

    steps/observation  [T+1, *obs_shape]     observations[t]
    steps/action       [T+1, *action_shape]  actions[t]; zeros on the last step
    steps/reward       [T+1]                 rewards[t]; 0 on the last step
    steps/discount     [T+1]                 discounts[t]; 0 on the last step
    steps/is_first     [T+1] bool            True on step 0 only
    steps/is_last      [T+1] bool            True on step T only
    steps/is_terminal  [T+1] bool            True on step T iff discounts[T-1] == 0
    episode_metadata/metadata_json  text     the episode's metadata as JSON

A camera run with state features beside its images (the store's
observation_features) has one more step field, declared only then:

    steps/observation_features  [T+1, F]     observation_features[t]

The last step carries the final observation; RLDS treats its action, reward
and discount as invalid, so they are zero padding and are dropped on import.

Feature encodings follow ``tfds.features.Tensor``: float32 values go in a
``float_list`` and bool/integer values in an ``int64_list`` (encoding
"none"); float16 and float64 values are stored as one little-endian raw-bytes
entry per step in a ``bytes_list`` (encoding "bytes"), because a float_list
holds float32 and would round them; camera images (uint8 [H, W, C]) as one
zlib-compressed raw-bytes entry per step (encoding "zlib"). Every supported dtype therefore round
trips bit-exactly. uint64 and non-numeric arrays are refused.

``features.json`` is the JSON form of TFDS's ``FeaturesDict`` (steps is a
``dataset_feature.Dataset`` of length -1 holding ``tensor_feature.Tensor`` and
``scalar.Scalar`` features; the metadata is a ``text_feature.Text``), and
``dataset_info.json`` the JSON form of TFDS's ``DatasetInfo`` proto (name,
version 1.0.0, ``fileFormat`` tfrecord, one ``train`` split with its
``shardLengths``, ``numBytes`` and ``filepathTemplate``; int64 values are
strings, as protobuf writes them).

This module holds what both sides share: the constants of the layout, the step
fields and how each is encoded, the episode spec, TFRecord's checksum and the errors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Dict, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from agents.common.errors import UserError
from launch.store.episodes import Episode

PathLike = Union[str, os.PathLike]

DEFAULT_DATASET_NAME = 'collect_infer_episodes'
SPLIT = 'train'
VERSION = '1.0.0'
FEATURES_FILE = 'features.json'
DATASET_INFO_FILE = 'dataset_info.json'
FILEPATH_TEMPLATE = '{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}'
METADATA_KEY = 'episode_metadata/metadata_json'
# The optional step field of state features beside camera images.
FEATURES_FIELD = 'observation_features'
STEP_FIELDS = ('observation', 'action', 'reward', 'discount', 'is_first', 'is_last', 'is_terminal')
FLAGS = ('is_first', 'is_last', 'is_terminal')

# A TFRecord is: uint64 length, uint32 masked crc32c(length), data,
# uint32 masked crc32c(data); all little-endian.
HEADER_BYTES = 12
FOOTER_BYTES = 4


class RldsError(UserError):
  """An RLDS export or import that can't proceed (bad input, unusable directory)."""


class BadRecordError(RldsError):
  """A damaged or invalid episode record, raised under ``on_error='refuse'``."""

  def __init__(self, bad: 'BadRecord', directory: Optional[PathLike] = None):
    path = pathlib.Path(directory) / bad.file if directory is not None else bad.file
    super().__init__(
      f'{path}: {bad.episodes}: {bad.reason} ({bad.records} of the file); nothing was '
      "imported: repair or remove the file, or skip bad records (on_error 'skip')"
    )
    self.bad = bad
    self.file = bad.file
    self.episode = bad.episode
    self.reason = bad.reason


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """Per-step shapes and dtypes shared by every episode of a dataset."""

  observation_shape: Tuple[int, ...]
  observation_dtype: np.dtype
  action_shape: Tuple[int, ...]
  action_dtype: np.dtype
  reward_dtype: np.dtype = np.dtype(np.float32)
  discount_dtype: np.dtype = np.dtype(np.float32)
  # State features beside camera images (Episode.observation_features); None: none.
  observation_features_shape: Optional[Tuple[int, ...]] = None
  observation_features_dtype: Optional[np.dtype] = None

  def __post_init__(self):
    # Normalise so specs built from shapes as lists or dtypes as strings
    # compare equal to ones read from a dataset.
    for name in ('observation_shape', 'action_shape', 'observation_features_shape'):
      if getattr(self, name) is not None:
        object.__setattr__(self, name, tuple(int(d) for d in getattr(self, name)))
    for name in (
      'observation_dtype',
      'action_dtype',
      'reward_dtype',
      'discount_dtype',
      'observation_features_dtype',
    ):
      if getattr(self, name) is not None:
        object.__setattr__(self, name, np.dtype(getattr(self, name)))

  @classmethod
  def from_episode(cls, episode: Episode) -> 'EpisodeSpec':
    """The spec an episode's arrays have (its step shapes, not its length)."""
    obs = np.asarray(episode.observations)
    act = np.asarray(episode.actions)
    features = episode.observation_features
    return cls(
      obs.shape[1:],
      obs.dtype,
      act.shape[1:],
      act.dtype,
      np.asarray(episode.rewards).dtype,
      np.asarray(episode.discounts).dtype,
      None if features is None else np.asarray(features).shape[1:],
      None if features is None else np.asarray(features).dtype,
    )

  def describe(self) -> str:
    """One-line text, e.g. 'observation float32[5], action float32[1], ...'."""

    def one(dtype, shape):
      return f'{dtype.name}{list(shape)}' if shape else dtype.name

    return (
      f'observation {one(self.observation_dtype, self.observation_shape)}, '
      f'action {one(self.action_dtype, self.action_shape)}, '
      f'reward {self.reward_dtype.name}, discount {self.discount_dtype.name}'
      + (
        ''
        if self.observation_features_shape is None
        else ', observation_features '
        + one(self.observation_features_dtype, self.observation_features_shape)
      )
    )


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """Episodes of a dataset that could not be loaded, and why.

  ``count`` is more than 1 when damage makes the rest of a file unreadable or
  records are missing: it then covers records ``record .. record+count-1``.
  """

  file: str  # shard file name, relative to the dataset directory
  record: int  # index of the (first) record within the file
  episode: int  # index of the (first) episode within the dataset
  reason: str
  count: int = 1

  @property
  def episodes(self) -> str:
    """'episode 3', or 'episodes 3-5' for several."""
    if self.count == 1:
      return f'episode {self.episode}'
    return f'episodes {self.episode}-{self.episode + self.count - 1}'

  @property
  def records(self) -> str:
    if self.count == 1:
      return f'record {self.record}'
    return f'records {self.record}-{self.record + self.count - 1}'

  def __str__(self) -> str:
    return f'{self.file}, {self.records} ({self.episodes}): {self.reason}'


class Field(NamedTuple):
  """How one step field is stored: per-step shape, dtype and TFDS encoding."""

  shape: Tuple[int, ...]
  dtype: np.dtype
  encoding: str  # 'none' | 'bytes' | 'zlib' (written for camera images only)

  @property
  def size(self) -> int:
    return math.prod(self.shape)  # Python ints: an absurd declared shape can't wrap around

  @property
  def list_kind(self) -> str:
    if self.encoding != 'none':
      return 'bytes_list'
    return 'float_list' if self.dtype.kind == 'f' else 'int64_list'


def check_dtype(dtype: np.dtype) -> Optional[str]:
  """None if the dtype can be stored exactly, else why not."""
  if dtype.kind == 'f' and dtype.itemsize in (2, 4, 8):
    return None
  if dtype.kind == 'b' or (dtype.kind in 'iu' and dtype.itemsize <= 8):
    if dtype == np.uint64:
      return 'uint64 does not fit the int64 values a tf.train.Example holds'
    return None
  return f'dtype {dtype} is not supported (use bool, integers or floats)'


def _export_encoding(dtype: np.dtype, shape: Tuple[int, ...] = ()) -> str:
  # Camera images (uint8 [H, W, C]) as zlib-compressed bytes, one entry a step: as an
  # int64_list each pixel would take 8 bytes and more. (A frame stack has more channels
  # than TFDS's Image feature takes.)
  if dtype == np.uint8 and len(shape) == 3:
    return 'zlib'
  # float_list holds float32: wider or narrower floats go as raw bytes so
  # they come back bit-exact.
  return 'bytes' if dtype.kind == 'f' and dtype != np.float32 else 'none'


def fields_for(spec: EpisodeSpec) -> Dict[str, Field]:
  flag = Field((), np.dtype(bool), 'none')
  pairs = {
    'observation': (spec.observation_shape, spec.observation_dtype),
    'action': (spec.action_shape, spec.action_dtype),
    'reward': ((), spec.reward_dtype),
    'discount': ((), spec.discount_dtype),
  }
  if spec.observation_features_shape is not None:
    pairs[FEATURES_FIELD] = (spec.observation_features_shape, spec.observation_features_dtype)
  fields = {
    name: Field(shape, dtype, _export_encoding(dtype, tuple(shape)))
    for name, (shape, dtype) in pairs.items()
  }
  fields.update({name: flag for name in FLAGS})
  return fields


# --- TFRecord framing (import checks it only to step past a damaged record) ---


def _make_crc32c_table() -> List[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C_TABLE = _make_crc32c_table()


def masked_crc32c(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C (Castagnoli), rotated and offset."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
