"""Durable, atomic file writes: a reader sees the old file or the new one, never half of one,
and a write that returned survives a power cut.

The one recipe, used for every file the pipeline writes whole (raw exports, Parquet, the
report, the snapshot, the simulator's cache, the privacy files): write a hidden temporary file
in the target's folder, flush and fsync it, rename it over the target, fsync the folder so the
rename itself is on disk. A failure before the rename removes the temporary file and leaves the
target as it was.
"""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["fsync_dir", "partial_path", "replace", "write_bytes", "write_text", "writing"]


def partial_path(path: Path, tag: str = "partial") -> Path:
    """A hidden temporary name beside `path`, unique to this call (parallel writers never
    share one)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(folder: Path) -> None:
    """Make renames in `folder` durable (best effort: not every platform opens folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(source: Path, target: Path, *, sync_source: bool = True) -> Path:
    """Rename the finished file `source` over `target` durably (same file system).

    `source` is fsynced first unless the caller already did (`sync_source=False`), then the
    rename is made durable by an fsync of `target`'s folder."""
    if sync_source:
        _fsync_file(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    fsync_dir(target.parent)
    return target


@contextlib.contextmanager
def writing(path: Path, *, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; on a clean exit it is fsynced and
    renamed over `path`, on an exception it is removed and `path` is left untouched.

    `mode` sets the new file's permissions (e.g. 0o600 for private files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    fd = os.open(temporary, flags, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(temporary, mode)  # the umask may have narrowed it
        replace(temporary, path, sync_source=False)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, content: bytes, *, mode: int | None = None) -> Path:
    """Write `content` to `path` atomically and durably."""
    with writing(path, mode=mode) as out:
        out.write(content)
    return path


def write_text(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically and durably."""
    return write_bytes(path, text.encode(encoding))
