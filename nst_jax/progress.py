"""What a run tells its user on stderr: progress bars, named by what runs (``False``
turns them off), and one-line notes and warnings (``say``)."""

from __future__ import annotations

import sys


def progress_bar(total: int | None, progress: bool | str, *, label: str = "", **kwargs):
    """A tqdm bar of ``total`` items. ``progress`` is False (no bar), True (named
    ``label``) or a name of its own; ``kwargs`` go to tqdm (``unit``, ...)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=progress if isinstance(progress, str) else label,
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
        **kwargs,
    )


def named(progress: bool | str, label: str) -> bool | str:
    """The progress setting, named ``label`` unless it is off or already named."""
    return label if progress is True else progress


def say(message: str) -> None:
    """One line to the user, on stderr: a note, a warning, a summary."""
    print(message, file=sys.stderr)
