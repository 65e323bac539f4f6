"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every file a run or tool produces (config.yaml, results.csv, model.keras, detection
lists, GT files, images) goes through this module: the content is written to a
temporary file in the SAME folder (so the rename cannot cross file systems), flushed
and fsync'ed, then renamed over the target with :func:`os.replace` (atomic on POSIX
and Windows), and the folder is fsync'ed so the rename itself survives a power cut.
A failure (disk full, a kill) leaves the previous file untouched and removes the
temporary file when the process is still alive to do so.  TensorFlow checkpoints are
already written this way by TensorFlow (data files first, then the ``checkpoint``
index file via an atomic rename).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "write_bytes", "write_text", "write_with"]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:     # e.g. Windows cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_name(path: Path) -> Path:
    # same folder, hidden, unique; keeps the suffix (Keras insists on ".keras")
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:   # mkstemp makes the file private (0600); give it the permissions open() would
        os.fchmod(fd, 0o666 & ~_umask())
    except (AttributeError, OSError):   # no fchmod on Windows
        pass
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    For writers that want a file name (``model.save``, ``cv2.imwrite``).  The writer
    must have closed the file when the block ends; it is fsync'ed here.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """``open(path, mode)`` that replaces ``path`` only when the block completes."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a write mode ('w', 'wb'), got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_with(path: str | os.PathLike, writer: Callable[[Path], object]) -> Path:
    """``writer(tmp_path)`` writes the file, which then replaces ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)
