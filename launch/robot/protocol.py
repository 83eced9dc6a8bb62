"""The robot gateway's protocol, both sides: methods, the token, and messages as frames.

gRPC carries raw bytes (no protobuf schema, no pickle); every request and reply is a frame
(launch.robot.frame). Each call carries the run's token in its metadata,
`authorization: Bearer <token>`. The methods:

* Hello: meta {'robot'} -> meta {'spec', 'config', 'limits'} (the environment spec as
  launch.robot.spec plain data, the run's config as JSON);
* GetParameters: meta {'have': learner step or null} -> meta {'status': 'ok' | 'unchanged',
  'learner_steps', 'tree'} and, for 'ok', one array per parameter, named by its path
  ('module/name'); 'tree' nests the names as the parameters nest;
* AppendEpisode: meta {'robot', 'metadata'} and the arrays observations, actions, rewards,
  discounts -> meta {'status': 'stored' | 'duplicate' | 'rejected', 'id', 'reason'}.
"""

import contextlib
import logging
import os
import pathlib
import re
import secrets
import stat
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from launch.robot.frame import FrameError, FrameLimits, decode_frame, encode_frame
from launch.robot.wire import ALL_ARRAY_FIELDS

SERVICE = 'collect_infer.RobotGateway'
HELLO = 'Hello'
PARAMETERS = 'GetParameters'
APPEND = 'AppendEpisode'
METHODS = (HELLO, PARAMETERS, APPEND)

AUTH_KEY = 'authorization'
AUTH_SCHEME = 'Bearer '
TOKEN_ENV = 'COLLECT_INFER_GATEWAY_TOKEN'
_TOKEN_RE = re.compile(r'^[A-Za-z0-9_-]{32,256}$')

# What a robot takes from the program at most: parameters of large networks fit.
MAX_PARAMETER_BYTES = 1 << 30
PARAMETER_LIMITS = FrameLimits(max_array_bytes=MAX_PARAMETER_BYTES, max_arrays=100_000)
# What the program's JSON-only replies may hold (Hello carries the config).
REPLY_LIMITS = FrameLimits(max_array_bytes=0, max_arrays=0)

log = logging.getLogger('collect_infer.gateway')


def method_path(method: str) -> str:
  return f'/{SERVICE}/{method}'


# ----------------------------------------------------------------------------
# The token.


def check_token(text: str, where: str) -> str:
  """The token in `text` (surrounding whitespace dropped); ValueError saying what is wrong."""
  token = text.strip()
  if not _TOKEN_RE.match(token):
    raise ValueError(
      f'{where}: not a gateway token (expected 32-256 characters of A-Z, a-z, 0-9, "_" and "-")'
    )
  return token


def ensure_token_file(path: os.PathLike) -> str:
  """The run's token in `path`, made once (secrets.token_urlsafe(32), mode 0600) if missing.

  Kept across relaunches, so attached robots keep working. Creation is atomic and
  exclusive: a complete private file is linked into place, and if another process got
  there first its token is the one. A file others could read is made private again, with
  a warning (delete it and relaunch to get a new token).
  """
  path = pathlib.Path(path)
  if not path.exists():
    tmp = path.with_name(f'.{path.name}.{secrets.token_hex(6)}.tmp')
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
      os.write(fd, (secrets.token_urlsafe(32) + '\n').encode())
      os.fsync(fd)
    finally:
      os.close(fd)
    try:
      os.link(tmp, path)
    except FileExistsError:
      pass
    except OSError:  # No hard links on this file system: a rename, exclusive in practice.
      if not path.exists():
        os.replace(tmp, path)
    finally:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
  mode = stat.S_IMODE(path.stat().st_mode)
  if mode & 0o077:
    os.chmod(path, 0o600)
    log.warning(
      '%s was readable by others (mode %o); made it 0600. If others may have read it, '
      'delete it and relaunch for a new token (robots then need the new one)',
      path,
      mode,
    )
  if stat.S_IMODE(path.stat().st_mode) & 0o077:
    raise PermissionError(f'{path}: could not make the gateway token private (mode 0600)')
  return check_token(path.read_text(), str(path))


def read_token_file(path: os.PathLike) -> str:
  """The token in the file `path` (robot side); OSError or ValueError saying what is wrong."""
  path = pathlib.Path(path)
  token = check_token(path.read_text(), str(path))
  mode = stat.S_IMODE(path.stat().st_mode)
  if mode & 0o077:
    log.warning('%s is readable by others (mode %o); chmod 600 it', path, mode)
  return token


def auth_metadata(token: str) -> Tuple[Tuple[str, str], ...]:
  return ((AUTH_KEY, AUTH_SCHEME + token),)


# ----------------------------------------------------------------------------
# Parameters: nested dicts of arrays as named arrays and a tree of their names.


def flatten_tree(nest: Any) -> Tuple[Any, Dict[str, np.ndarray]]:
  """(tree, arrays): `nest` (dicts with string keys, arrays at the leaves) as a tree whose
  leaves are array names ('module/name' paths) and the arrays by name."""
  arrays: Dict[str, np.ndarray] = {}

  def walk(node: Any, path: Tuple[str, ...]) -> Any:
    if isinstance(node, Mapping):
      tree = {}
      for key, value in node.items():
        if not isinstance(key, str):
          raise ValueError(f'parameters: key {key!r} under {"/".join(path)!r} is not a string')
        tree[key] = walk(value, path + (key,))
      return tree
    name = '/'.join(path) or '.'
    while name in arrays:  # A '/' inside keys could make two paths alike.
      name += '~'
    arrays[name] = np.asarray(node)
    return name

  return walk(nest, ()), arrays


def unflatten_tree(tree: Any, arrays: Mapping[str, np.ndarray]) -> Any:
  """The inverse of `flatten_tree`; FrameError unless every array is used exactly once."""
  used = set()

  def walk(node: Any, path: str) -> Any:
    if isinstance(node, dict):
      return {key: walk(value, f'{path}/{key}') for key, value in node.items()}
    if not isinstance(node, str) or node not in arrays:
      raise FrameError(f'tree{path}: {node!r:.60} names no array of the frame')
    if node in used:
      raise FrameError(f'tree{path}: array {node!r:.60} is named twice')
    used.add(node)
    return arrays[node]

  nest = walk(tree, '')
  unused = sorted(set(arrays) - used)
  if unused:
    raise FrameError(f'tree: the arrays {unused[:5]} are in no place of the tree')
  return nest


def parameters_reply(version: int, params: Any) -> bytes:
  tree, arrays = flatten_tree(params)
  return encode_frame({'status': 'ok', 'learner_steps': int(version), 'tree': tree}, arrays)


def read_parameters_reply(buffer: bytes, have: Optional[int]) -> Tuple[int, Any]:
  """(learner step, parameters or None when unchanged since `have`); FrameError else."""
  meta, arrays = decode_frame(buffer, PARAMETER_LIMITS)
  status, version = meta.get('status'), meta.get('learner_steps')
  if not isinstance(version, int) or isinstance(version, bool) or version < 0:
    raise FrameError(f'learner_steps: {version!r:.40} is not an int >= 0')
  if status == 'unchanged' and have is not None and version == have and not arrays:
    return version, None
  if status != 'ok':
    raise FrameError(f'status: {status!r:.40} is not a parameters reply')
  return version, unflatten_tree(meta.get('tree'), arrays)


# ----------------------------------------------------------------------------
# Episodes.


def episode_request(robot: str, data: Mapping[str, Any]) -> bytes:
  """A robot's episode (launch.robot.wire.episode_to_data) as an AppendEpisode request."""
  return encode_frame(
    {'robot': robot, 'metadata': data['metadata']},
    {k: data[k] for k in ALL_ARRAY_FIELDS if k in data},
  )


def read_episode_request(buffer: bytes, limits: FrameLimits) -> Tuple[str, Dict[str, Any]]:
  """(robot name, episode data for ExternalEpisodeSink.append); FrameError else."""
  meta, arrays = decode_frame(buffer, limits)
  if set(meta) != {'robot', 'metadata'}:
    raise FrameError(f"meta: expected the keys ['metadata', 'robot'], got {sorted(meta)}")
  robot = meta['robot']
  if not isinstance(robot, str):
    raise FrameError(f'meta.robot: expected a string, got {type(robot).__name__}')
  return robot, {**arrays, 'metadata': meta['metadata']}


def read_reply(buffer: bytes) -> Dict[str, Any]:
  """The meta of a JSON-only reply (Hello, AppendEpisode); FrameError else."""
  meta, _ = decode_frame(buffer, REPLY_LIMITS)
  return meta
