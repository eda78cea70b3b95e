"""Folder jobs, behind ``--output_dir``: outputs named after their inputs (subfolders
kept), a resumable run (an output whose recorded settings match is kept), bad files
skipped with a warning, and a manifest. ``stylize_folder`` runs ``batch.stylize_many``
over a folder; ``feedforward.apply_folder`` uses the same naming, resume check and
output folder preparation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from nst_jax import signals
from nst_jax.atomic import remove_stale_temporaries, resolved, write_json
from nst_jax.batch import Element, Outcome, find_contents, stylize_many
from nst_jax.config import Config
from nst_jax.hosts import agree
from nst_jax.image import check_writable, load_image, read_settings, save_image
from nst_jax.inputs import check_style_blend
from nst_jax.nets.weights import load_weights
from nst_jax.progress import say
from nst_jax.signals import stopped_during
from nst_jax.solve import programs
from nst_jax.solve.placement import Placement, failing_together, gathered, mesh_of
from nst_jax.tasks.pyramid import style_scales
from nst_jax.tasks.stylize import MIN_SIDE
from nst_jax.version import __version__


def prepare_output_dir(out: str | Path) -> Path:
    """Makes ``out`` (and its parents) and checks it can be written, before compute.

    Raises:
      ValueError: it cannot be made or written.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot make --output_dir {out}: {e.strerror or e}") from None
    check_writable(out / "probe.png")
    return out


@dataclasses.dataclass(frozen=True)
class FolderJob:
    """A folder job: contents in, one output per content and style mix out.

    Attributes:
      contents: a folder, glob, ``.txt`` list or image (``find_contents``).
      styles: the style images.
      output_dir: where the outputs go, named after the inputs, subfolders kept.
      config: the shared settings.
      size: the longest side each content runs at.
      crop: one ``(H, W)`` for every content instead (cropped to its aspect).
      blends: style mixes, one output each: ``((w, ...), ...)``. Without them, several
        styles give one output each, and one style (or ``config.loss.style_blend``)
        one output.
      style_scale: each style's size relative to the output.
      weights: VGG19 weights; the verified default if None.
      batch_size: elements per batch, all processes together (default: what fits).
      devices: devices per process to use (default: all).
      overwrite: redo outputs that exist with the same settings.
      progress: progress bars.
    """

    contents: str
    styles: tuple[str, ...]
    output_dir: str
    config: Config = Config()
    size: int = 384
    crop: tuple[int, int] | None = None
    blends: tuple[tuple[float, ...], ...] | None = None
    style_scale: tuple[float, ...] = (1.0,)
    weights: str | None = None
    batch_size: int | None = None
    devices: int | None = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.size < MIN_SIDE:
            raise ValueError(f"--size must be at least {MIN_SIDE}, got {self.size}")
        if self.crop is not None and min(self.crop) < MIN_SIDE:
            raise ValueError(f"--crop must be at least {MIN_SIDE}x{MIN_SIDE}, got {self.crop}")
        if not self.styles:
            raise ValueError("a folder job needs --style")
        style_scales(self.style_scale, len(self.styles))
        check_style_blend(self.config.loss.style_blend, len(self.styles))
        for blend in self.blends or ():
            if len(blend) != len(self.styles) or any(
                not (w >= 0 and math.isfinite(w)) for w in blend
            ):
                raise ValueError(
                    f"each --blends mix needs {len(self.styles)} finite weights >= 0, got {blend}"
                )
            if not sum(blend) > 0:
                raise ValueError(f"a --blends mix must not be all zeros: {blend}")


class FolderReport(NamedTuple):
    """What a folder job did; ``manifest`` is what it wrote to its manifest file."""

    manifest: dict
    path: Path
    summary: str
    failed: int
    interrupted: bool


def _columns(job: FolderJob) -> tuple[np.ndarray | None, list[str]]:
    """The style mixes as ``[C, S]`` blends (None for the config's one mix), and a name
    for each, used in the outputs' names where there are several."""
    if job.blends:
        return np.asarray(job.blends, np.float32), [
            "blend-" + "-".join(f"{w:g}" for w in blend) for blend in job.blends
        ]
    if len(job.styles) > 1 and job.config.loss.style_blend is None:
        labels = [Path(s).stem for s in job.styles]
        for label in labels:
            if labels.count(label) > 1:
                same = [s for s in job.styles if Path(s).stem == label]
                raise ValueError(
                    f"styles {', '.join(map(str, same))} share the name {label!r}, which labels "
                    "their outputs; rename one"
                )
        return np.eye(len(job.styles), dtype=np.float32), labels
    return None, [""]


def output_path(output_dir: str | Path, root: Path, source: Path, label: str) -> Path:
    """``OUTPUT_DIR/relative/stem[.label].png`` for ``source`` under ``root``."""
    # The folders resolved, the file's own name kept: a link is named as the user sees it.
    where, base = resolved(source.parent) / source.name, resolved(root)
    relative = where.relative_to(base) if where.is_relative_to(base) else Path(source.name)
    name = relative.stem + (f".{label}" if label else "") + ".png"
    return Path(output_dir) / relative.parent / name


def output_paths(
    output_dir: str | Path, root: Path, sources: Sequence[Path], labels: Sequence[str]
) -> dict[Element, Path]:
    """Every element's output (``output_path``); two inputs that would share one
    (``photo.jpg``, ``photo.png``) both keep their extension in it.

    Raises:
      ValueError: an output would overwrite an input.
    """
    elements = [Element(i, c) for i in range(len(sources)) for c in range(len(labels))]
    paths = {e: output_path(output_dir, root, sources[e.index], labels[e.column]) for e in elements}
    taken: dict[Path, Element] = {}
    for e, path in list(paths.items()):
        if path in taken:
            paths[taken[path]] = _with_suffix(paths[taken[path]], sources[taken[path].index])
            paths[e] = _with_suffix(path, sources[e.index])
        taken[path] = e
    seen: dict[Path, Element] = {}
    for e, path in paths.items():  # Renamed, two can still meet (a/x.jpg and b/x.jpg).
        if path in seen:
            other = sources[seen[path].index]
            raise ValueError(
                f"{sources[e.index]} and {other} would both be written to {path}; rename one"
                + (" (or the styles, whose names label the outputs)" if len(labels) > 1 else "")
            )
        seen[path] = e
    inputs = {resolved(p) for p in sources}
    for path in paths.values():
        if resolved(path) in inputs:
            raise ValueError(f"{path} is an input file; refusing to overwrite it (--output_dir)")
    return paths


def plan_outputs(
    contents: str, output_dir: str | Path, labels: Sequence[str], *, protected=(), overwrite=False
) -> tuple[list[Path], Path, dict[Element, Path]]:
    """A folder job's files, all checked before any compute: ``(sources, output_dir,
    paths)``. The contents (``find_contents``) leave out an output folder inside their
    own (the outputs of an earlier run); the output folder is made; each element gets
    its ``output_paths`` path, none of which may be an input, one of the ``protected``
    files (the styles), or, without ``overwrite``, a file that is not an nst_jax output.

    Raises:
      ValueError: any of those.
    """
    sources, root = find_contents(contents)
    out = Path(output_dir)
    inside = resolved(out) != resolved(root) and resolved(out).is_relative_to(resolved(root))
    if inside:
        sources = [p for p in sources if not resolved(p).is_relative_to(resolved(out))]
        if not sources:
            raise ValueError(f"no images found in {contents} outside --output_dir {out}")
        if not Path(contents).exists():  # A glob: its root was the earlier outputs' too.
            root = Path(os.path.commonpath([p.parent for p in sources]))
    elif resolved(out) == resolved(root) and not Path(contents).is_file():
        # The outputs sit among a folder's (or glob's) contents; a list or a file names
        # its contents one by one, outputs of earlier runs included if it says so.
        sources = [p for p in sources if not _is_output(p)]
        if not sources:
            raise ValueError(f"no images found in {contents} besides nst_jax outputs")
    out = prepare_output_dir(out)
    paths = output_paths(out, root, sources, labels)
    kept = {resolved(p) for p in protected}
    for path in paths.values():
        if resolved(path) in kept:
            raise ValueError(f"{path} is an input file; refusing to overwrite it (--output_dir)")
        if not overwrite and path.exists() and not _is_output(path):
            raise ValueError(
                f"{path} exists and is not an nst_jax output; refusing to overwrite it"
                " (move it, or give --overwrite)"
            )
    folders = {f for path in paths.values() for f in path.relative_to(out).parents} - {Path()}
    for folder in sorted(out / f for f in folders):
        if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
            raise ValueError(f"{folder} is a file, where a folder of outputs goes; move it")
    manifest = out / manifest_name()
    if resolved(manifest) in kept | {resolved(p) for p in sources}:
        raise ValueError(f"{manifest} is an input file; refusing to overwrite it (--output_dir)")
    if not overwrite and manifest.exists() and not _is_manifest(manifest):
        raise ValueError(
            f"{manifest} exists and is not an nst_jax manifest; refusing to overwrite it"
            " (move it, or give --overwrite)"
        )
    remove_stale_temporaries([*paths.values(), manifest])  # A killed run's half-writes.
    return sources, out, paths


def manifest_name() -> str:
    """The manifest this process writes in the output folder."""
    processes, process = jax.process_count(), jax.process_index()
    return "manifest.json" if processes == 1 else f"manifest-{process}-of-{processes}.json"


def _is_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"done", "failed", "interrupted"} <= data.keys()


def _is_output(path: Path) -> bool:
    try:
        return isinstance(read_settings(path), dict)
    except Exception:  # noqa: BLE001 - unreadable or foreign.
        return False


def _with_suffix(path: Path, source: Path) -> Path:
    """``photo.png`` -> ``photo-jpg.png`` for ``source`` ``photo.jpg``."""
    rest = path.name[len(source.stem) :]
    return path.with_name(f"{source.stem}-{source.suffix.lstrip('.').lower()}{rest}")


def _settings(job: FolderJob, source: Path, column: int, blends, sha: str) -> dict:
    return {
        "nst_jax": __version__,
        "mode": "stylize",
        "content": str(resolved(source)),  # However the paths were spelt: a rerun from
        "style": [str(resolved(s)) for s in job.styles],  # elsewhere finds its work.
        "blend": None if blends is None else [float(w) for w in blends[column]],
        "size": job.size,
        "crop": None if job.crop is None else list(job.crop),
        "style_scale": list(job.style_scale),
        "weights": str(resolved(job.weights)) if job.weights else "default",
        "weights_sha256": sha,
        "config": dataclasses.asdict(job.config),
    }


def finished(path: Path, settings: dict, steps: int | None) -> bool:
    """Whether ``path`` is an output of these settings that ran to its end: it says it
    is ``complete`` (its steps, or the stopping rule's fewer), or, written without that
    record, it ran all ``steps``."""
    try:
        found = read_settings(path)
    except Exception:  # noqa: BLE001 - missing, unreadable or foreign: not done.
        return False
    step, complete = found.pop("step", None), found.pop("complete", None)
    ended = complete if complete is not None else step == steps
    return ended is True and found == json.loads(json.dumps(settings))


def stylize_folder(job: FolderJob) -> FolderReport:
    """Runs a folder job; see the module docstring.

    Exit status, for the command line: 0 when every output is done (now or before),
    ``cli.SOME_FAILED`` (4) when some input failed (the manifest names each, with its reason),
    128 + the signal when interrupted. Several processes act on a stop signal together,
    at the points where they agree (``signals.polled``): a signal lands on each at
    another moment, and one that stopped alone would leave the others waiting for it.
    """
    if jax.process_count() > 1:
        with signals.polled():
            return _stylize_folder(job)
    return _stylize_folder(job)


def _stylize_folder(job: FolderJob) -> FolderReport:
    t0 = time.perf_counter()
    compiled_before = programs.compiled_programs
    blends, labels = _columns(job)
    try:
        sources, out, paths = plan_outputs(
            job.contents, job.output_dir, labels, protected=job.styles, overwrite=job.overwrite
        )
    except ValueError as e:  # Every process refuses, or none does (``agree``).
        agree(None, str(e))
    agree([str(p) for p in sources])
    with failing_together():  # A download or a file that fails on one host: on all.
        weights = load_weights(job.weights, progress=job.progress)
        styles = [load_image(p) for p in job.styles]
    elements = [Element(i, c) for i in range(len(sources)) for c in range(len(labels))]
    settings = {
        e: _settings(job, sources[e.index], e.column, blends, weights.sha256) for e in elements
    }
    processes, process = jax.process_count(), jax.process_index()
    # Each process checks its turn of the outputs; together they agree on what is left.
    mine = np.zeros(math.ceil(len(elements) / processes), np.int32)
    if not job.overwrite:
        for k, e in enumerate(elements[process::processes]):
            mine[k] = finished(paths[e], settings[e], job.config.steps)
    done_before = gathered(mine).T.reshape(-1)[: len(elements)].astype(bool)
    todo = {e for e, done in zip(elements, done_before, strict=True) if not done}
    manifest = {
        "settings": {
            k: v for k, v in settings[elements[0]].items() if k not in ("content", "blend")
        },
        "blends": None if blends is None else blends.tolist(),
        "process": process,
        "processes": processes,
        "done": [],
        "skipped": [
            {"input": str(sources[e.index]), "output": str(paths[e]), "reason": "done before"}
            for k, e in enumerate(elements)
            if done_before[k] and k % processes == process
        ],
        "failed": [],
        "interrupted": False,
    }
    manifest_path = out / manifest_name()
    placement = Placement(mesh_of(job.devices))
    interrupted = False

    def record(outcome: Outcome) -> None:
        nonlocal interrupted
        e = outcome.element
        entry = {"input": str(sources[e.index]), "output": str(paths[e])}
        # Stopped before its first step, an image is the content: an earlier output stays.
        stopped_early = outcome.failure or outcome.interrupted
        if outcome.image is not None and (outcome.steps > 0 or not stopped_early):
            paths[e].parent.mkdir(parents=True, exist_ok=True)
            complete = not (outcome.failure or outcome.interrupted)
            data = {**settings[e], "step": outcome.steps, "complete": complete}
            save_image(paths[e], outcome.image, settings=data)
        if outcome.failure:
            if e.column == 0 or outcome.image is not None:
                say(f"warning: skipping {entry['input']}: {outcome.failure}")
            manifest["failed"].append({**entry, "reason": outcome.failure})
        elif outcome.interrupted:
            interrupted = True
            manifest["failed"].append({**entry, "reason": f"interrupted at step {outcome.steps}"})
        else:
            manifest["done"].append({**entry, "losses": outcome.losses})
        write_json(manifest_path, {**manifest, "seconds": time.perf_counter() - t0})

    def stopped() -> bool:
        return interrupted or signals.requested()

    outcomes = stylize_many(
        sources, styles, job.config, blends=blends, size=job.size, crop=job.crop,
        style_scale=job.style_scale, placement=placement, batch_size=job.batch_size,
        weights=weights, todo=todo, progress=job.progress, stop=stopped,
    )  # fmt: skip
    try:
        # Closed at once if a save fails (a full disk), so that other processes stop too.
        with contextlib.closing(outcomes):
            for outcome in outcomes:
                # A signal while an outcome is saved waits for it, and for the batch's
                # other outcomes; no new batch starts.
                if stopped_during(record, outcome):
                    interrupted = True
    except KeyboardInterrupt:  # Here, or on another process (``stylize_many``).
        interrupted = True
    manifest["interrupted"] = interrupted = stopped()
    manifest["programs_compiled"] = programs.compiled_programs - compiled_before
    manifest["seconds"] = time.perf_counter() - t0
    if stopped_during(write_json, manifest_path, manifest):  # Written whole; now say so.
        interrupted = manifest["interrupted"] = True
        write_json(manifest_path, manifest)
    failed = sum(not f["reason"].startswith("interrupted") for f in manifest["failed"])
    summary = (
        ("interrupted; " if interrupted else "")
        + f"{len(manifest['done'])} done, {len(manifest['skipped'])} done before, "
        f"{failed} failed: {manifest_path}"
    )
    return FolderReport(manifest, manifest_path, summary, failed, interrupted)
