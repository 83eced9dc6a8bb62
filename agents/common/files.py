"""Durable file writes: atomic replacement and directory fsync, for every layer."""

import errno
import os
import pathlib
import secrets
from typing import Union

PathLike = Union[str, os.PathLike]

# fsync on a directory is refused by some file systems (EINVAL on some network
# file systems, ENOTSUP/EBADF on others); the files themselves are already synced.
_FSYNC_DIR_REFUSED = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES)


def fsync_dir(directory: PathLike) -> None:
  """Makes file creations, renames and unlinks in `directory` durable.

  Raises OSError when the directory cannot be opened (it does not exist or is not
  readable): that is a real fault. A file system that refuses fsync on directories
  is tolerated.
  """
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  except OSError as e:
    if e.errno not in _FSYNC_DIR_REFUSED:
      raise
  finally:
    os.close(fd)


def write_all(fd: int, data: bytes) -> None:
  """Writes every byte of `data` to `fd` (os.write may write less than asked)."""
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view) :]


def atomic_write_bytes(path: PathLike, data: bytes, mode: int = 0o644) -> None:
  """Writes `data` to `path` so readers see either the old or the new file.

  The temp file is created in the same directory (so `os.replace` is an atomic
  rename on one file system), with `mode` from the start (so a private file is
  never briefly world-readable), and is fsynced before the rename. Temp files
  are named `.<name>.<random>.tmp`; one left behind by a crash is never mistaken
  for the real file.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.{secrets.token_hex(6)}.tmp')
  # O_EXCL: never write through a pre-existing file or symlink at the temp name.
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
  try:
    try:
      write_all(fd, data)
      os.fsync(fd)
    finally:
      os.close(fd)
    os.replace(tmp, path)
  except BaseException:
    try:
      os.unlink(tmp)
    except OSError:
      pass
    raise
  fsync_dir(path.parent)
