"""What a job writes, named and recorded: its outputs checked against its inputs before
any compute (none may be an input, or resolve to one, or share a snapshot's name; every
folder must be writable), its snapshots' names, and its JSON report, one shape for every
mode. ``jobs.py`` runs the jobs.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from nst_jax.atomic import is_link_loop, resolved
from nst_jax.image import check_writable
from nst_jax.solve.driver import Result

if TYPE_CHECKING:
    from nst_jax.inputs import Inputs
    from nst_jax.jobs import Job


def _same(a: Path, b: Path) -> bool:
    """Whether ``b`` is ``a``, or a link to it (resolved paths, or the same inode)."""
    try:
        return resolved(a) == resolved(b) or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def snapshot_path(output: Path, step: int, level: int | None = None) -> Path:
    """``OUT.step00100.png``, or ``OUT.level1.step00100.png`` within a pyramid."""
    tag = "" if level is None else f".level{level}"
    return output.with_name(f"{output.stem}{tag}.step{step:05d}{output.suffix}")


def _is_snapshot(path: Path, output: Path, save_every: int, steps: Sequence[int]) -> bool:
    """Whether ``path``, or the file it resolves to, is a snapshot ``snapshot_path``
    will write: checked by name, not by listing them (a run may plan millions)."""
    folder = resolved(output.parent)
    pattern = rf"{re.escape(output.stem)}(?:\.level(\d+))?\.step(\d+){re.escape(output.suffix)}"
    pyramid = len(steps) > 1
    for candidate in {path.absolute(), resolved(path)}:
        match = re.fullmatch(pattern, candidate.name)
        if not save_every or match is None or resolved(candidate.parent) != folder:
            continue
        level = None if match.group(1) is None else int(match.group(1))
        step = int(match.group(2))
        if (level is not None) != pyramid or (pyramid and level >= len(steps)):
            continue
        n = steps[level] if pyramid else steps[0]
        written = snapshot_path(output, step, level)
        if step % save_every == 0 and 0 < step < n and written.name == candidate.name:
            return True
    return False


def check_outputs(
    inputs: Inputs, written: Sequence[Path], *, save_every: int = 0, steps: Sequence[int] = ()
) -> None:
    """Refuses, before any compute, an output that is an input (or resolves to one), a
    snapshot whose name an input has, and an output folder that is missing or read-only.

    ``written[0]`` is the image, and the rest are reports; the image's snapshots are every
    ``save_every`` steps of each level's ``steps``.

    Raises:
      ValueError: naming the output.
    """
    sources = inputs.files()
    for source in sources:
        if _is_snapshot(source, written[0], save_every, steps):
            raise ValueError(
                f"{source} is an input file, and a --save_every snapshot of {written[0]} "
                "would take its name; refusing to overwrite it"
            )
    if save_every:  # Files already where snapshots go: a link to an input, or a folder.
        out = written[0]
        pattern = f"{glob.escape(out.stem)}.*{glob.escape(out.suffix)}"
        snapshots = [p for p in out.parent.glob(pattern) if _is_snapshot(p, out, save_every, steps)]
        check_written(sources, snapshots, role="--save_every snapshot")
    check_written(sources, written[:1], reports=written[1:])


def check_written(
    sources: Sequence[Path],
    images: Sequence[Path],
    *,
    reports: Sequence[Path] = (),
    role: str | None = None,
) -> None:
    """Refuses, before any compute, an image or report path that is one of ``sources``
    or resolves to one, or is a folder, or whose folder is missing or read-only, and an
    image of a format it cannot be saved in. ``role`` names them in the error (by
    default ``--output``, or ``--report`` for a report).

    Raises:
      ValueError: naming the output.
    """
    written = [*((p, False) for p in images), *((p, True) for p in reports)]
    for path, _ in written:
        for source in sources:
            if _same(path, source):
                raise ValueError(f"{path} is an input file ({source}); refusing to overwrite it")
    for path, report in written:
        try:
            if is_link_loop(path):
                raise ValueError(f"output path is a symbolic link loop: {path}")
            target = resolved(path)  # Where the write goes.
            if target.is_dir():
                raise ValueError(f"output path is a folder: {path}")
            # A report is JSON; its folder is checked as an image's would be.
            check_writable(target.with_suffix(".png") if report else target)
        except ValueError as e:
            raise ValueError(f"{role or ('--report' if report else '--output')}: {e}") from None


def _losses(losses: dict, i: int | None = None) -> dict[str, float]:
    return {k: float(v if i is None else v[i]) for k, v in losses.items()}


def _history(history: dict, i: int | None = None) -> dict[str, list[float]]:
    return {
        k: [round(float(x), 6) for x in (v if i is None else v[:, i])] for k, v in history.items()
    }


def run_record(result: Result, label: str, level: int, labels: Sequence[str]) -> dict:
    """One run's entry in the report: a row of a grid, a pyramid level, or the run."""
    batched = result.image.ndim == 4
    tiles = [
        {
            "label": tile,
            "initial_losses": _losses(result.initial, i if batched else None),
            "final_losses": _losses(result.final, i if batched else None),
            "history": _history(result.history, i if batched else None),
        }
        for i, tile in enumerate(labels)
    ]
    return {
        "label": label,
        "level": level,
        "size": list(result.image.shape[-3:-1]),
        "steps": result.steps,
        "converged": result.converged,
        "compile_seconds": result.compile_seconds,
        "seconds_per_step": result.seconds_per_step,
        "convolution": result.convolution,
        "failure": result.failure,
        "tiles": tiles,
    }


def report_data(
    job: Job,
    settings: dict,
    runs: list[dict],
    *,
    interrupted: bool,
    failure: str | None,
    wall_seconds: float,
    content_shape: tuple[int, ...],
    style_shapes: Sequence[tuple[int, ...]],
    timings: dict[str, float] | None = None,
) -> dict:
    """The report, one shape for every mode.

    ``runs`` has one entry per program run: the run itself, each pyramid level, or each
    grid row; each has its size, steps, timings, and one tile per batch element (a grid
    column) with its initial and final losses and loss history.
    """
    return {
        "output": job.outputs.image,
        "mode": settings["mode"],
        "interrupted": interrupted,
        "failure": failure,
        "wall_seconds": wall_seconds,
        "timings": timings,
        "content_size": list(content_shape[:2]),
        "style_sizes": [list(s[:2]) for s in style_shapes],
        "weights_sha256": settings["weights_sha256"],
        "settings": settings,
        "runs": runs,
        **job.outputs.extra,
    }
