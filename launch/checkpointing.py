"""Learner checkpoints: whole-state pickles with an integrity header.

File format of ``ckpt-{step:012d}.pkl``::

    b"COLLECT_INFER_CKPT v1\\n"
    b"<sha256 hex of payload> <payload length>\\n"
    <payload: pickle of the state with every array leaf converted to numpy>

The header makes a truncated or corrupted file detectable before unpickling,
so a crash mid-write costs one checkpoint rather than the run.

Checkpoints are only ever read from the run's own directory; pickle is used
because the state contains arbitrary NamedTuples (optimizer states, counters)
that must come back as the same classes.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import pickle
import re
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import tree

from agents.common.errors import RunDirError
from agents.common.files import atomic_write_bytes
from agents.common.logs import get_logger

logger = get_logger('checkpointing')

_MAGIC = b"COLLECT_INFER_CKPT v1\n"
_PREFIX = "ckpt-"
_NAME_RE = re.compile(r"^ckpt-(\d+)\.pkl$")
_TMP_SUFFIX = ".tmp"
# sha256 hex (64) + space + a length of at most 20 digits.
_MAX_HEADER_LINE = 96


class _CorruptCheckpoint(Exception):
    """A checkpoint file failed its integrity check."""


def _to_numpy(leaf: Any) -> Any:
    # numpy scalars and python numbers are already picklable and keep their
    # type; anything else exposing __array__ (jax arrays, including ones on an
    # accelerator) is copied to host memory as a plain ndarray.
    if isinstance(leaf, (np.ndarray, np.generic)):
        return leaf
    if hasattr(leaf, "__array__") and not isinstance(leaf, (str, bytes)):
        return np.asarray(leaf)
    return leaf


def _encode(payload: bytes) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return _MAGIC + f"{digest} {len(payload)}\n".encode("ascii") + payload


def _decode(data: bytes) -> bytes:
    """Returns the payload of a checkpoint file's bytes, or raises _CorruptCheckpoint."""
    if not data.startswith(_MAGIC):
        raise _CorruptCheckpoint("bad magic header (not a checkpoint or truncated)")
    end = data.find(b"\n", len(_MAGIC), len(_MAGIC) + _MAX_HEADER_LINE)
    if end < 0:
        raise _CorruptCheckpoint("incomplete header")
    try:
        digest, length_text = data[len(_MAGIC):end].decode("ascii").split(" ")
        length = int(length_text)
    except ValueError as err:
        raise _CorruptCheckpoint(f"malformed header ({err})") from err
    payload = data[end + 1:]
    if len(payload) != length:
        raise _CorruptCheckpoint(
            f"payload is {len(payload)} bytes, header says {length} (truncated?)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise _CorruptCheckpoint("sha256 mismatch (file corrupted)")
    return payload


class Checkpointer:
    """Saves and restores the learner's full state in one directory.

    Only one process should write to a directory at a time; the run
    directory's lock (``RunDir.acquire_lock``) guarantees that.
    """

    def __init__(self, directory: Union[str, os.PathLike], keep: int = 5) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self._directory = pathlib.Path(directory)
        self._keep = keep

    @property
    def directory(self) -> pathlib.Path:
        """Where checkpoints live."""
        return self._directory

    def path_for(self, step: int) -> pathlib.Path:
        """The file that holds the checkpoint for ``step``."""
        return self._directory / f"{_PREFIX}{step:012d}.pkl"

    def _entries(self) -> List[os.DirEntry]:
        try:
            with os.scandir(self._directory) as it:
                return [e for e in it if e.is_file(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    def _remove_temp_files(self) -> None:
        for entry in self._entries():
            if entry.name.endswith(_TMP_SUFFIX):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass

    def save(self, state: Any, step: int) -> pathlib.Path:
        """Writes ``state`` as the checkpoint for ``step`` and prunes old ones.

        Array leaves (numpy or jax) are stored as numpy arrays. Saving a step
        that already exists overwrites it. Only the newest ``keep`` checkpoints
        are kept; older ones are deleted after the new file is in place.

        Returns:
          The path of the written checkpoint.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        self._directory.mkdir(parents=True, exist_ok=True)
        # Temp files can only be left by a writer that crashed; with the run
        # locked, none of them can belong to a live writer.
        self._remove_temp_files()

        host_state = tree.map_structure(_to_numpy, state)
        payload = pickle.dumps(host_state, protocol=pickle.HIGHEST_PROTOCOL)
        path = self.path_for(step)
        atomic_write_bytes(path, _encode(payload))
        logger.info("Saved checkpoint %s (%d bytes).", path, len(payload))

        # Never prune the file just written, even if newer steps exist (e.g.
        # after resuming from an older checkpoint).
        older = [s for s in self.all_steps() if s != step]
        excess = len(older) + 1 - self._keep
        for old in sorted(older)[:max(excess, 0)]:
            try:
                os.unlink(self.path_for(old))
            except FileNotFoundError:
                pass
        return path

    def all_steps(self) -> List[int]:
        """Steps of all checkpoint files present (valid or not), ascending."""
        steps = []
        for entry in self._entries():
            match = _NAME_RE.match(entry.name)
            # Only canonical names, so path_for(step) always finds the file.
            if match and entry.name == self.path_for(int(match.group(1))).name:
                steps.append(int(match.group(1)))
        return sorted(set(steps))

    def _load_file(self, path: pathlib.Path) -> Any:
        """Loads one file; raises _CorruptCheckpoint or RunDirError."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as err:
            raise _CorruptCheckpoint(f"unreadable ({err.strerror or err})") from err
        payload = _decode(data)
        try:
            return pickle.loads(payload)
        except Exception as err:
            # The bytes are intact, so an older checkpoint would most likely
            # fail the same way (code changed, class renamed): stop here.
            raise RunDirError(
                f"Checkpoint {path} is intact but cannot be unpickled "
                f"({type(err).__name__}: {' '.join(str(err).split())}); run the "
                f"code version that wrote it or choose another --run_dir.") from err

    def restore(self, step: int) -> Any:
        """Loads the checkpoint for ``step``.

        Raises:
          RunDirError: it does not exist or fails its integrity check.
        """
        path = self.path_for(int(step))
        try:
            return self._load_file(path)
        except FileNotFoundError as err:
            raise RunDirError(
                f"No checkpoint for step {step} in {self._directory}; available "
                f"steps: {self.all_steps()}.") from err
        except _CorruptCheckpoint as err:
            raise RunDirError(
                f"Checkpoint {path} is damaged ({err}); restore a different "
                f"step.") from err

    def restore_latest(self) -> Optional[Tuple[int, Any]]:
        """Loads the newest checkpoint that passes its integrity check.

        Damaged newer checkpoints are skipped with a warning. Temp files from an
        interrupted save are ignored.

        Returns:
          ``(step, state)``, or None if there are no checkpoint files.

        Raises:
          RunDirError: checkpoint files exist but none is intact; the run is
            never silently restarted from scratch.
        """
        # Anything named like a checkpoint counts as one, including names whose
        # step doesn't parse, so a damaged directory is reported, not ignored.
        candidates = [e.name for e in self._entries()
                      if e.name.startswith(_PREFIX) and not e.name.endswith(_TMP_SUFFIX)]
        if not candidates:
            return None
        for step in reversed(self.all_steps()):
            path = self.path_for(step)
            try:
                return step, self._load_file(path)
            except FileNotFoundError:
                continue
            except _CorruptCheckpoint as err:
                logger.warning("Skipping damaged checkpoint %s: %s; trying an older one.",
                               path, err)
        raise RunDirError(
            f"No intact checkpoint in {self._directory} (found "
            f"{len(candidates)} damaged file(s), e.g. {sorted(candidates)[-1]}); "
            f"move the directory aside to start over, or choose another --run_dir.")


__all__ = ["Checkpointer"]
