"""Atomic file writes: write a temporary file beside the target, then rename it; and paths
resolved the way those writes follow them."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
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


_RANDOM = "[a-z0-9_]{8}"  # What mkstemp adds to a temporary file's name.


STALE_SECONDS = 600  # A temporary file untouched this long has no live writer.


def remove_stale_temporaries(paths: Iterable[Path]) -> int:
    """Removes the temporary files that ``atomic_path`` writes to ``paths`` left behind
    when their process was killed outright (SIGKILL, a power cut): ``.NAME.XXXXXXXX``
    beside each, still mkstemp's mode 0600 (a finished write is chmodded before its
    rename), and untouched for ``STALE_SECONDS``, so that neither a user's hidden file
    of that shape nor another job's write in progress is taken. For a job that owns
    ``paths``, before it writes any of them. Returns how many it removed."""
    names: dict[Path, set[str]] = {}
    for path in paths:
        names.setdefault(Path(path).parent, set()).add(Path(path).name)
    removed = 0
    for folder, owned in names.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:  # Not made yet: nothing left in it.
            continue
        for entry in entries:
            match = re.fullmatch(rf"\.(.+)\.{_RANDOM}", entry.name)
            if not (match and match.group(1) in owned and entry.is_file(follow_symlinks=False)):
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_mode & 0o777 == 0o600 and time.time() - info.st_mtime > STALE_SECONDS:
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
    return removed


def write_json(path: str | os.PathLike, data) -> Path:
    """Writes ``data`` as indented, key-sorted JSON, atomically (``atomic_path``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path
