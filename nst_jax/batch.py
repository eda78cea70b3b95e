"""Many images at once: contents from a folder, a glob or a list, each against one or
several style mixes, run as vmapped batches sharded over a device mesh, and split
across hosts.

``stylize_many`` is the library call: it groups the contents by the shape they run at
(one compiled program per shape), fills batches of equal shape (a short last batch is
padded, and the padding dropped, never recompiled for), places each batch's axis over
the mesh (``solve/placement.py``), and yields every result as its batch finishes. With
several processes (``jax.distributed``), each takes a deterministic share of every
batch by its process index, and every process runs the same number of batches, so that
they compile and run the same programs. ``stylize_folder`` is the job behind
``--output_dir``: outputs named after their inputs, a resumable run (an output whose
settings match is kept), bad files skipped with a warning, and a manifest.
"""

from __future__ import annotations

import dataclasses
import glob as globbing
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.atomic import write_json
from nst_jax.config import Config
from nst_jax.image import (
    check_writable,
    image_size,
    load_image,
    read_settings,
    resize,
    resized_shape,
    save_image,
)
from nst_jax.nets.vgg import widths_of
from nst_jax.nets.weights import Weights, load_weights
from nst_jax.objective import Terms
from nst_jax.progress import progress_bar
from nst_jax.solve import programs
from nst_jax.solve.placement import Placement, mesh_of
from nst_jax.solve.solver import HISTORY_KEYS, term_weights_of
from nst_jax.tasks import policy
from nst_jax.tasks.pyramid import scaled_styles, style_scales
from nst_jax.tasks.stylize import MIN_SIDE, check_image, run
from nst_jax.version import __version__

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# A batch's default share of one device: more pads short folders for no gain on a CPU,
# where a batch of B costs about B single steps (``benchmarks/batch.py``).
PER_DEVICE = 4


# Hosts.


def connect(
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``):
    with no arguments JAX finds the cluster itself (TPU pods, SLURM, ...); on CPUs the
    processes talk through gloo. Call it before anything else touches JAX's devices."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def in_cluster() -> bool:
    """Whether the environment says this process is one of several that JAX can join
    without being told how: a SLURM job of several tasks, or a TPU pod slice."""
    slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
    pod = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or pod


def _gather(values: np.ndarray) -> np.ndarray:
    """Every process's ``values`` (the same shape on each), stacked by process index."""
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


# Inputs.


def find_contents(spec: str | os.PathLike) -> tuple[list[Path], Path]:
    """The images ``spec`` names, sorted, and the folder their names are relative to.

    ``spec`` is a folder (every image in it and its subfolders), a glob
    (``photos/*.jpg``, ``**`` for any depth), a ``.txt`` file listing one path a line
    (relative to the list's folder; ``#`` starts a comment), or one image.

    Raises:
      ValueError: nothing matches.
    """
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        root = path
        found = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.is_file() and path.suffix.lower() == ".txt":
        root = path.parent
        lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
        found = [root / line for line in lines if line]
    elif path.is_file():
        root, found = path.parent, [path]
    else:
        matches = [Path(p) for p in globbing.glob(text, recursive=True)]
        found = [p for p in matches if p.is_file()]
        root = Path(os.path.commonpath([p.parent for p in found])) if found else path.parent
    if not found:
        raise ValueError(f"no images found in {spec}")
    return sorted(dict.fromkeys(found)), root


def crop_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The largest centred crop of ``image`` with ``shape``'s aspect ratio, resized to
    ``shape`` = (H, W)."""
    h, w = image.shape[:2]
    scale = min(h / shape[0], w / shape[1])
    ch, cw = round(shape[0] * scale), round(shape[1] * scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    return resize(image[top : top + ch, left : left + cw], shape)


class Element(NamedTuple):
    """One output: content ``index`` against style mix ``column``."""

    index: int
    column: int


class Outcome(NamedTuple):
    """What became of one element: its image and final losses, or why it failed.

    Attributes:
      element: which content and style mix.
      image: ``[H, W, 3]`` in [0, 1]; None if it failed before running.
      losses: the final losses (``HISTORY_KEYS``); None if it failed before running.
      steps: the steps it ran.
      failure: why it failed (a file that could not be read, a loss that overflowed), or
        None.
      interrupted: Ctrl-C (or a signal) stopped its batch.
    """

    element: Element
    image: np.ndarray | None
    losses: dict[str, float] | None
    steps: int
    failure: str | None = None
    interrupted: bool = False


class Batch(NamedTuple):
    """One batch this process runs: ``elements`` of one shape, ``None`` for padding."""

    shape: tuple[int, int]
    elements: tuple[Element | None, ...]


def plan_batches(
    shapes: Sequence[tuple[int, int] | None],
    columns: int,
    *,
    per_process: int,
    processes: int = 1,
    process: int = 0,
    todo: set[Element] | None = None,
) -> list[Batch]:
    """This process's batches: every element still to do, grouped by shape.

    Within a shape the elements are in order, dealt to the processes in turn; each
    process's share is cut into batches of ``per_process`` and padded so that every
    process runs the same batches of every shape.

    Args:
      shapes: the shape each content runs at, or None where it could not be read.
      columns: style mixes per content.
      per_process: elements in one process's share of a batch.
      todo: the elements to run; every readable one if None.
    """
    groups: dict[tuple[int, int], list[Element]] = {}
    for i, shape in enumerate(shapes):
        for c in range(columns):
            element = Element(i, c)
            if shape is not None and (todo is None or element in todo):
                groups.setdefault(tuple(shape), []).append(element)
    batches = []
    for shape in sorted(groups):
        mine = groups[shape][process::processes]
        count = math.ceil(len(groups[shape]) / processes)  # Every process's share.
        mine += [None] * (count - len(mine))
        for start in range(0, count, per_process):
            part = mine[start : start + per_process]
            batches.append(Batch(shape, tuple(part + [None] * (per_process - len(part)))))
    return batches


def _load(source, shape: tuple[int, int], crop: bool) -> np.ndarray:
    image = source if isinstance(source, np.ndarray) else load_image(source, at_least=max(shape))
    image = np.asarray(image, np.float32)
    check_image("content", image)
    return crop_to(image, shape) if crop else resize(image, shape)


def run_shape(source, size: int | None, crop: tuple[int, int] | None) -> tuple[int, int]:
    """The shape a content runs at: ``crop``, or its own resized to ``size`` (read from
    the header for a file)."""
    if crop is not None:
        return crop
    own = source.shape[:2] if isinstance(source, np.ndarray) else image_size(source)
    return own if size is None else resized_shape(own, size)


def stylize_many(
    contents: Sequence[str | os.PathLike | np.ndarray],
    style: np.ndarray | Sequence[np.ndarray],
    config: Config = Config(),
    *,
    blends: np.ndarray | None = None,
    size: int | None = None,
    crop: tuple[int, int] | None = None,
    style_scale: float | Sequence[float] = 1.0,
    placement: Placement | None = None,
    batch_size: int | None = None,
    weights: Weights | None = None,
    todo: set[Element] | None = None,
    progress: bool = True,
    chunk: int = 10,
) -> Iterator[Outcome]:
    """Stylises many contents, each against every style mix, in sharded batches;
    yields each ``Outcome`` (this process's share) as its batch finishes.

    Args:
      contents: image files or ``[H, W, 3]`` arrays.
      style: the style images, full size (each resized to ``style_scale`` times the
        longest side a content runs at).
      config: the settings every element shares; its seed seeds element ``i`` (content
        ``i``) with ``seed + i``.
      blends: ``[C, S]`` style mixes, one column each; ``config.loss.style_blend`` alone
        if None.
      size: the longest side each content runs at (its own if None).
      crop: one ``(H, W)`` for all: each content cropped to its aspect and resized.
      placement: the mesh the batch axis is sharded over; every device by default.
      batch_size: elements per batch, all processes together: a multiple of the mesh's
        devices. By default as many as fit in memory, up to ``PER_DEVICE`` a device.
      todo: the elements to run (``Element(content, column)``); all by default.
      progress: a bar over the images, and one over each batch's steps.
      chunk: steps between host syncs.

    Raises:
      ValueError: bad settings; a content that cannot be read is an ``Outcome`` with a
        failure, not an error.
    """
    styles = tuple(
        np.asarray(s, np.float32) for s in (style if isinstance(style, (list, tuple)) else (style,))
    )
    if config.preserve_color != "none":
        raise ValueError("preserve_color works one content at a time, not on a batch")
    columns = 1 if blends is None else len(blends)
    if blends is not None:
        blends = np.asarray(blends, np.float32)
        if blends.ndim != 2 or blends.shape[1] != len(styles):
            raise ValueError(f"blends must be [columns, {len(styles)}], got {blends.shape}")
    placement = placement or Placement(mesh_of())
    devices, local = placement.mesh.devices.size, placement.local_devices
    processes, process = jax.process_count(), jax.process_index()
    shapes, failed = [], {}
    for i, source in enumerate(contents):
        try:
            shape = run_shape(source, size, crop)
            if min(shape) < MIN_SIDE:
                raise ValueError(f"it runs at {shape[1]}x{shape[0]}; need {MIN_SIDE} px a side")
            shapes.append(shape)
        except ValueError as e:
            shapes.append(None)
            failed[i] = str(e)
    for i in sorted(failed):  # Every process knows; the first reports.
        for c in range(columns):
            if process == 0 and (todo is None or Element(i, c) in todo):
                yield Outcome(Element(i, c), None, None, 0, failed[i])
    weights = weights or load_weights(progress=progress)
    widths = widths_of(weights.params)
    pending = [s for s in shapes if s is not None]
    if batch_size is None:
        batch_size = _default_batch(config, pending, columns, devices, widths, todo)
    if batch_size < 1 or batch_size % devices:
        raise ValueError(
            f"--batch_size must be a multiple of the {devices} devices, got {batch_size}"
        )
    share = batch_size // processes
    batches = plan_batches(
        shapes, columns, per_process=share, processes=processes, process=process, todo=todo
    )
    tw = term_weights_of(config)
    networks = {}
    bar = progress_bar(
        sum(e is not None for b in batches for e in b.elements),
        progress,
        label="images",
        unit="image",
    )
    try:
        for k, batch in enumerate(batches):
            plan = policy.plan(
                config, batch.shape, share if jax.default_backend() == "cpu" else share // local,
                widths=widths,
            )  # fmt: skip
            if plan.net not in networks:
                networks[plan.net] = plan.network(weights)
            content, ok, problems = [], [], {}
            for element in batch.elements:
                image = None
                if element is not None:
                    try:
                        image = _load(contents[element.index], batch.shape, crop is not None)
                    except ValueError as e:
                        problems[element] = str(e)
                ok.append(image is not None)
                content.append(
                    image if image is not None else np.zeros((*batch.shape, 3), np.float32)
                )
            for element, why in problems.items():
                yield Outcome(element, None, None, 0, why)
            side = max(batch.shape)
            level_styles = scaled_styles(styles, side, style_scales(style_scale, len(styles)))
            seeds = [config.seed + (e.index if e is not None else 0) for e in batch.elements]
            mixes = None
            if blends is not None:
                mixes = np.stack([blends[e.column if e is not None else 0] for e in batch.elements])
            label = f"batch {k + 1}/{len(batches)}, {batch.shape[1]}x{batch.shape[0]}"
            result = run(
                np.stack(content),
                level_styles,
                config,
                seeds=seeds,
                term_weights=Terms(*(jnp.broadcast_to(w, (share,)) for w in tw)),
                weights=weights,
                init_images=None,
                blends=mixes,
                content_masks=None,
                style_masks=None,
                callback=None,
                chunk=chunk,
                progress=label if progress else False,
                plan=plan,
                network=networks[plan.net],
                placement=placement,
            )
            for j, element in enumerate(batch.elements):
                if element is None or not ok[j]:
                    continue
                losses = {key: float(result.final[key][j]) for key in HISTORY_KEYS}
                yield Outcome(
                    element,
                    result.image[j],
                    losses,
                    result.steps,
                    result.failure,
                    result.interrupted,
                )
                bar.update(1)
            if result.interrupted:
                return
    finally:
        bar.close()


def _default_batch(config, shapes, columns, devices, widths, todo) -> int:
    """As many elements per device as surely fit in memory, up to ``PER_DEVICE`` and to
    what the largest shape group needs; a multiple of ``devices``."""
    if not shapes:
        return devices
    counts: dict[tuple[int, int], int] = {}
    for shape in shapes:
        counts[tuple(shape)] = counts.get(tuple(shape), 0) + columns
    need = max(counts.values()) if todo is None else max(1, min(len(todo), max(counts.values())))
    per_device = max(1, min(PER_DEVICE, math.ceil(need / devices)))
    largest = max(counts, key=lambda s: s[0] * s[1])
    while per_device > 1:
        cpu = jax.default_backend() == "cpu"
        try:
            policy.plan(config, largest, per_device * (devices if cpu else 1), widths=widths)
            break
        except ValueError:
            per_device -= 1
    return per_device * devices


# The job behind --output_dir.


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
        if self.size <= 0:
            raise ValueError(f"--size must be positive, got {self.size}")
        if not self.styles:
            raise ValueError("a folder job needs --style")
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
        return np.eye(len(job.styles), dtype=np.float32), [Path(s).stem for s in job.styles]
    return None, [""]


def output_path(output_dir: str | Path, root: Path, source: Path, label: str) -> Path:
    """``OUTPUT_DIR/relative/stem[.label].png`` for ``source`` under ``root``."""
    relative = (
        source.resolve().relative_to(root.resolve())
        if source.resolve().is_relative_to(root.resolve())
        else Path(source.name)
    )
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
    inputs = {p.resolve() for p in sources}
    for path in paths.values():
        if path.resolve() in inputs:
            raise ValueError(f"{path} is an input file; refusing to overwrite it (--output_dir)")
    return paths


def _with_suffix(path: Path, source: Path) -> Path:
    """``photo.png`` -> ``photo-jpg.png`` for ``source`` ``photo.jpg``."""
    rest = path.name[len(source.stem) :]
    return path.with_name(f"{source.stem}-{source.suffix.lstrip('.').lower()}{rest}")


def _settings(job: FolderJob, source: Path, column: int, blends, sha: str) -> dict:
    return {
        "nst_jax": __version__,
        "mode": "stylize",
        "content": str(source),
        "style": list(job.styles),
        "blend": None if blends is None else [float(w) for w in blends[column]],
        "size": job.size,
        "crop": None if job.crop is None else list(job.crop),
        "style_scale": list(job.style_scale),
        "weights": job.weights or "default",
        "weights_sha256": sha,
        "config": dataclasses.asdict(job.config),
    }


def finished(path: Path, settings: dict, steps: int) -> bool:
    """Whether ``path`` is an output of these settings that ran all its steps."""
    try:
        found = read_settings(path)
    except Exception:  # noqa: BLE001 - missing, unreadable or foreign: not done.
        return False
    return found.pop("step", None) == steps and found == json.loads(json.dumps(settings))


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def stylize_folder(job: FolderJob) -> FolderReport:
    """Runs a folder job; see the module docstring.

    Exit status, for the command line: 0 when every output is done (now or before),
    ``cli.SOME_FAILED`` (4) when some input failed (the manifest names each, with its reason),
    128 + the signal when interrupted.
    """
    t0 = time.perf_counter()
    compiled_before = programs.compiled_programs
    sources, root = find_contents(job.contents)
    out = Path(job.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot make --output_dir {out}: {e.strerror or e}") from None
    check_writable(out / "probe.png")
    inputs = {p.resolve() for p in [*sources, *map(Path, job.styles)]}
    blends, labels = _columns(job)
    weights = load_weights(job.weights, progress=job.progress)
    styles = [load_image(p) for p in job.styles]
    elements = [Element(i, c) for i in range(len(sources)) for c in range(len(labels))]
    paths = output_paths(out, root, sources, labels)
    for path in paths.values():
        if path.resolve() in inputs:
            raise ValueError(f"{path} is an input file; refusing to overwrite it (--output_dir)")
    settings = {
        e: _settings(job, sources[e.index], e.column, blends, weights.sha256) for e in elements
    }
    processes, process = jax.process_count(), jax.process_index()
    # Each process checks its turn of the outputs; together they agree on what is left.
    mine = np.zeros(math.ceil(len(elements) / processes), np.int32)
    if not job.overwrite:
        for k, e in enumerate(elements[process::processes]):
            mine[k] = finished(paths[e], settings[e], job.config.steps)
    done_before = _gather(mine).T.reshape(-1)[: len(elements)].astype(bool)
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
    name = "manifest.json" if processes == 1 else f"manifest-{process}-of-{processes}.json"
    manifest_path = out / name
    placement = Placement(mesh_of(job.devices))
    interrupted = False
    try:
        for outcome in stylize_many(
            sources, styles, job.config, blends=blends, size=job.size, crop=job.crop,
            style_scale=job.style_scale, placement=placement, batch_size=job.batch_size,
            weights=weights, todo=todo, progress=job.progress,
        ):  # fmt: skip
            e = outcome.element
            entry = {"input": str(sources[e.index]), "output": str(paths[e])}
            if outcome.image is not None:
                paths[e].parent.mkdir(parents=True, exist_ok=True)
                save_image(paths[e], outcome.image, settings={**settings[e], "step": outcome.steps})
            if outcome.failure:
                if e.column == 0 or outcome.image is not None:
                    _say(f"warning: skipping {entry['input']}: {outcome.failure}")
                manifest["failed"].append({**entry, "reason": outcome.failure})
            elif outcome.interrupted:
                interrupted = True
                manifest["failed"].append(
                    {**entry, "reason": f"interrupted at step {outcome.steps}"}
                )
            else:
                manifest["done"].append({**entry, "losses": outcome.losses})
            write_json(manifest_path, {**manifest, "seconds": time.perf_counter() - t0})
    except KeyboardInterrupt:
        interrupted = True
    manifest["interrupted"] = interrupted
    manifest["programs_compiled"] = programs.compiled_programs - compiled_before
    manifest["seconds"] = time.perf_counter() - t0
    write_json(manifest_path, manifest)
    failed = sum(not f["reason"].startswith("interrupted") for f in manifest["failed"])
    summary = (
        f"{len(manifest['done'])} done, {len(manifest['skipped'])} done before, "
        f"{failed} failed: {manifest_path}"
    )
    return FolderReport(manifest, manifest_path, summary, failed, interrupted)
