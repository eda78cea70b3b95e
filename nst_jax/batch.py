"""Many images at once: contents from a folder, a glob or a list, each against one or
several style mixes, run as vmapped batches sharded over a device mesh, and split
across hosts.

``stylize_many`` is the library call: it groups the contents by the shape they run at
(one compiled program per shape), fills batches of equal shape (a short last batch is
padded, and the padding dropped, never recompiled for), places each batch's axis over
the mesh (``solve/placement.py``), and yields every result as its batch finishes. With
several processes (``jax.distributed``), each takes a deterministic share of every
batch by its process index, and every process runs the same number of batches, so that
they compile and run the same programs. The folder job behind ``--output_dir`` is
``folders.py``.
"""

from __future__ import annotations

import contextlib
import glob as globbing
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import hosts, memory, signals
from nst_jax.config import Config
from nst_jax.image import (
    image_size,
    load_image,
    resize,
    resized_shape,
)
from nst_jax.nets.vgg import widths_of
from nst_jax.nets.weights import Weights, load_weights
from nst_jax.objective import Terms
from nst_jax.progress import progress_bar
from nst_jax.solve.placement import Placement, failing_together, mesh_of, raise_together
from nst_jax.solve.solver import HISTORY_KEYS, term_weights_of
from nst_jax.tasks import policy
from nst_jax.tasks.pyramid import check_styles, scaled_styles, style_scales
from nst_jax.tasks.stylize import MIN_SIDE, check_batch_weights, check_image, pixels, run

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")
# A batch's default share of one device: more pads short folders for no gain on a CPU,
# where a batch of B costs about B single steps (``benchmarks/batch.py``).
PER_DEVICE = 4


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
        # As in a folder: images by their suffix (``dir/*`` also matches a README).
        found = [p for p in matches if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
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


def _is_array(source) -> bool:
    """A content given as an array (NumPy or JAX), not as a path."""
    return hasattr(source, "shape")


def _load(source, shape: tuple[int, int], crop: bool) -> np.ndarray:
    image = source if _is_array(source) else load_image(source, at_least=max(shape))
    image = pixels("content", image)
    check_image("content", image)
    if crop:
        return crop_to(image, shape)
    # The shape came from the file's header (``run_shape``); a picture decoded at another
    # aspect ratio would be squashed into it.
    h, w = image.shape[:2]
    if abs(h * shape[1] / w - shape[0]) > max(2.0, 0.05 * shape[0]):
        raise ValueError(f"decoded at {w}x{h}, where its header says {shape[1]}x{shape[0]}")
    return resize(image, shape)


def run_shape(source, size: int | None, crop: tuple[int, int] | None) -> tuple[int, int]:
    """The shape a content runs at: ``crop``, or its own resized to ``size`` (read from
    the header for a file)."""
    if crop is not None:
        return crop
    own = np.shape(source)[:2] if _is_array(source) else image_size(source)
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
    stop: Callable[[], bool] | None = None,
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
      stop: asked before each batch; True (on any process) ends the run there. For a
        caller stopped by a signal between outcomes, which waits for the batch's
        outcomes already computed but wants no more.

    Raises:
      ValueError: bad settings; a content that cannot be read is an ``Outcome`` with a
        failure, not an error.
      KeyboardInterrupt: with several processes, when another one stopped (a signal, or
        its caller's ``stop``): this one stops too, before the next batch.
      placement.PeerFailed: with several processes, when another one failed (a memory
        refusal, an error in a step, or its caller stopped reading the outcomes): every
        process raises at the same batch start or sync, the failed one its own error.
    """
    styles = tuple(
        pixels("style", s) for s in (style if isinstance(style, (list, tuple)) else (style,))
    )
    if config.preserve_color != "none":
        raise ValueError("preserve_color works one content at a time, not on a batch")
    scales = style_scales(style_scale, len(styles))
    columns = 1 if blends is None else len(blends)
    if blends is not None:
        blends = np.asarray(blends, np.float32)
        check_batch_weights(term_weights_of(config), blends, config, len(styles))
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
    hosts.check_agreement(contents, shapes, todo)
    pending, error, own = [s for s in shapes if s is not None], None, 0
    try:  # A download that fails on one host fails the job on all.
        weights = weights or load_weights(progress=progress)
        widths = widths_of(weights.params)
        if batch_size is None:  # Each host's own memory decides; the smallest counts.
            own = _default_batch(config, pending, columns, devices, widths, todo)
    except Exception as e:  # noqa: BLE001 - raised on every process.
        error = e
    chosen = raise_together(error, [own])
    batch_size = batch_size or int(chosen.min())
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
    held = contextlib.ExitStack()
    if processes > 1:  # Stop signals are acted on where the processes agree.
        held.enter_context(signals.polled())
    started = 0  # Batches past their start: the agreement below.
    try:
        for i in sorted(failed):  # Every process knows; the first reports.
            for c in range(columns):
                if process == 0 and (todo is None or Element(i, c) in todo):
                    yield Outcome(Element(i, c), None, None, 0, failed[i])
        halt = False  # This process was interrupted, or its caller asks to stop.
        for k, batch in enumerate(batches):
            # Every process asks before every batch, so all stop at the same one: a
            # signal lands on each at another moment, and one that left alone would
            # leave the others waiting in this batch's collectives. An error (here, a
            # memory refusal) stops them all too.
            halt = halt or (stop is not None and stop()) or signals.requested()
            plan, error = None, None
            side = max(batch.shape)
            try:
                plan = policy.plan(
                    config, batch.shape,
                    share if jax.default_backend() == "cpu" else share // local, widths=widths,
                )  # fmt: skip
                check_styles(plan, config, styles, side, scales)
            except ValueError as e:
                error = e
            started = k + 1
            if raise_together(error, [halt]).any():
                if not halt:  # Another process stopped: this one stops as if signalled.
                    raise KeyboardInterrupt
                return
            with failing_together(processes > 1):
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
            level_styles = scaled_styles(styles, side, scales)
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
            halt = halt or result.interrupted
            # Yielded once the batch's collectives are done: a caller that fails on one
            # (a full disk) meets the others at the next batch's start (below).
            for element, why in problems.items():
                yield Outcome(element, None, None, 0, why)
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
    except GeneratorExit as closed:  # The caller stopped reading: it failed, or is done.
        if processes > 1 and started < len(batches):
            raise_together(closed, [True])  # Where the others start the next batch.
        raise
    finally:
        bar.close()
        held.close()


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
    cpu = jax.default_backend() == "cpu"
    while per_device > 1:
        b = per_device * (devices if cpu else 1)
        try:  # ``plan`` refuses only what surely won't fit; a default must surely fit.
            net = policy.plan(config, largest, b, widths=widths).net
            if memory.fits(b * memory.estimate_bytes(largest, config.loss, net, widths=widths)):
                break
        except ValueError:
            pass
        per_device -= 1
    return per_device * devices
