"""Atomic file writes: write a temporary file beside the target, then rename it; and paths
resolved the way those writes follow them."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: setting the umask to read it is process-wide, and a file another
# thread made in that moment (a checkpoint, a compile-cache entry) would get mode 0666.
UMASK = _umask()


def resolved(path: str | os.PathLike) -> Path:
    """``path`` absolute, its symbolic links followed. A link loop (Python 3.11 raises
    RuntimeError for it) stays as given, made absolute: it names no file, so reading it
    fails as a missing file does, and ``is_link_loop`` tells writers."""
    path = Path(path)
    try:
        return path.resolve()
    except RuntimeError:
        return path.absolute()


def is_link_loop(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a symbolic link whose chain never reaches a file or folder."""
    path = Path(path)
    return path.is_symlink() and resolved(path).is_symlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder; on success it replaces ``path``.

    Readers never see a half-written file, and a failure or Ctrl-C leaves any earlier
    version of ``path`` untouched. The data reach the disk before the rename, so a crash
    leaves the old file or the new one, never an empty one. A symbolic link is written
    through (its target is replaced; the link stays). The file gets the usual
    permissions (0666 & ~umask) rather than mkstemp's 0600.
    """
    path = Path(path)
    if is_link_loop(path):
        raise OSError(errno.ELOOP, "a symbolic link loop", str(path))
    if path.is_symlink():
        path = resolved(path)
    if not path.parent.is_dir():  # Else mkstemp's error names the temporary file.
        raise FileNotFoundError(errno.ENOENT, "output folder does not exist", str(path.parent))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, data) -> Path:
    """Writes ``data`` as indented, key-sorted JSON, atomically (``atomic_path``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
