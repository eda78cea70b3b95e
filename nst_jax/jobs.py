"""Jobs on files, behind the command line: read the inputs, run a task, write the image,
its snapshots and a report. One function per mode: ``stylize_files``, ``texture_files``,
``invert_files``.

Everything a job will write is named and checked before any compute (``records.py``):
none of it may be an input, every folder must be writable. Images are written atomically, and a run
stopped by Ctrl-C (or a signal the command line turns into one) still writes what it
reached.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nst_jax import IMPORT_STARTED, statistics
from nst_jax.atomic import write_json
from nst_jax.config import Config
from nst_jax.image import (
    demo_images,
    image_size,
    load_image,
    mask_problems,
    resize_mask,
    resized_shape,
    save_image,
)
from nst_jax.inputs import Inputs, aspect_differs, check_style_blend, load_masks
from nst_jax.nets.weights import load_weights
from nst_jax.progress import say
from nst_jax.records import check_outputs, report_data, run_record, snapshot_path
from nst_jax.signals import stopped_during
from nst_jax.tasks import sweeps
from nst_jax.tasks.invert import INVERSION_LOSS
from nst_jax.tasks.pyramid import (
    pyramid_sizes,
    scaled_shape,
    scaled_side,
    style_scales,
    stylize_pyramid,
)
from nst_jax.tasks.stylize import MIN_SIDE, check_shape
from nst_jax.tasks.texture import texture_config
from nst_jax.version import __version__

MODES = ("stylize", "texture", "invert")
DEMO_CONTENT, DEMO_STYLE = "demo:chelsea", "demo:starry_night"


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What a job writes.

    Attributes:
      image: the result (a labelled grid for sweeps); a PNG carries the settings.
      report: a JSON report (``records.report_data`` gives its shape), or None.
      save_every: also write a snapshot every N steps (0: never), ``IMAGE.stepNNNNN.png``.
      progress: show progress bars.
      extra: more fields for the report (the command line adds its flags).
    """

    image: str
    report: str | None = None
    save_every: int = 0
    progress: bool = True
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.save_every < 0:
            raise ValueError(f"--save_every must be >= 0, got {self.save_every}")
        if self.report is not None and Path(self.report).suffix.lower() != ".json":
            raise ValueError(f"--report must end in .json, got {self.report}")


@dataclasses.dataclass(frozen=True)
class Job:
    """One command: its files, settings, size and schedule, and any sweep.

    Attributes:
      inputs, outputs, config: what to read, what to write, how to run.
      size: longest side of the output, in pixels.
      style_scale: each style's longest side is its scale times ``size``; one value for
        all, or one per style.
      pyramid: coarse-to-fine levels, each twice the last, ending at ``size``.
      start_size: start the pyramid at this longest side instead (overrides ``pyramid``).
      level_steps: steps per level, coarse to fine (default ``config.steps`` each).
      layers: invert mode: one grid row per layer (default: ``config``'s content layer).
      style_layer_sets: texture mode: one grid row per set of style layers.
      seeds: grid columns from this many seeds (``config.seed``, ``+ 1``, ...).
      tv_weights: grid columns, one per TV weight.
      ratios: grid columns, one per content/style ratio α/β.
    """

    inputs: Inputs
    outputs: Outputs
    config: Config = Config()
    size: int = 384
    style_scale: tuple[float, ...] = (1.0,)
    pyramid: int = 1
    start_size: int = 0
    level_steps: tuple[int, ...] | None = None
    layers: tuple[str, ...] = ()
    style_layer_sets: tuple[tuple[str, ...], ...] = ()
    seeds: int = 1
    tv_weights: tuple[float, ...] | None = None
    ratios: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.size < MIN_SIDE:
            raise ValueError(f"--size must be at least {MIN_SIDE}, got {self.size}")
        if self.seeds < 1:
            raise ValueError(f"--inits must be >= 1, got {self.seeds}")


class Report(NamedTuple):
    """What a job did: ``data`` is the JSON report (written if one was asked for)."""

    output: Path
    summary: str
    interrupted: bool
    failure: str | None
    data: dict


def _chunk(save_every: int) -> int:
    """Steps per host sync: every snapshot lands on a chunk boundary."""
    if save_every <= 0:
        return 10
    return max(d for d in range(1, min(save_every, 20) + 1) if save_every % d == 0)


def _rows(job: Job, mode: str) -> list[tuple[str, Config]]:
    config = job.config
    if mode == "invert":
        return sweeps.inversion_rows(config, job.layers or config.loss.content_layers[:1])
    if mode == "texture":
        if job.style_layer_sets:
            return sweeps.texture_rows(config, job.style_layer_sets)
        return [("", texture_config(config))]
    return [("", config)]


def _check_mode(job: Job, mode: str) -> None:
    inputs = job.inputs
    if mode == "texture" and inputs.content:
        raise ValueError("--mode texture takes no --content; it synthesises from --style")
    if mode == "invert" and inputs.styles:
        raise ValueError("--mode invert takes no --style; it reconstructs --content")
    if mode == "stylize" and not (inputs.demo or (inputs.content and inputs.styles)):
        raise ValueError("give --content and --style, or --demo")
    need = {"texture": "style", "invert": "content"}.get(mode)
    if need and not inputs.demo and not getattr(inputs, "styles" if need == "style" else need):
        raise ValueError(f"--mode {mode} needs --{need}, or --demo")
    if job.layers and mode != "invert" or job.style_layer_sets and mode != "texture":
        raise ValueError("--layers is for --mode invert, --style_layer_sets for --mode texture")
    if job.ratios and mode != "stylize":
        raise ValueError("--ratios weighs content against style; it needs --mode stylize")
    if mode == "invert" and (job.pyramid > 1 or job.start_size):
        raise ValueError("--pyramid and --start_size are for --mode stylize and texture")
    if inputs.content_masks and mode != "stylize":
        raise ValueError("--content_masks place styles on a content; they need --mode stylize")
    if inputs.style_masks and not inputs.content_masks:
        raise ValueError("--style_masks needs --content_masks")
    loss = job.config.loss
    if loss.style_blend and inputs.content_masks:
        raise ValueError("--style_blend mixes styles everywhere; --content_masks places them")
    drawn = any(statistics.sampled(stat, loss) for stat, _ in loss.style_loss)
    if job.seeds > 1 and mode == "stylize" and job.config.init != "noise" and not drawn:
        raise ValueError(
            f"--inits {job.seeds} would give {job.seeds} identical images: a seed varies only "
            "a noise start (--init noise) and sampled kernels (mmd_gauss, mmd_poly of degree != 2)"
        )


def run_files(job: Job, mode: str) -> Report:
    """Runs ``job`` in ``mode`` (``MODES``): checks, reads, runs, writes."""
    t0 = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    _check_mode(job, mode)
    inputs, outputs = job.inputs, job.outputs
    rows = _rows(job, mode)
    cols = sweeps.columns(
        rows[0][1].loss,
        seeds=[job.config.seed + i for i in range(job.seeds)],
        tv_weights=job.tv_weights,
        ratios=job.ratios,
    )
    grid = len(rows) * len(cols.labels) > 1
    sizes = (
        [job.size]
        if mode == "invert"
        else pyramid_sizes(job.size, levels=job.pyramid, start_size=job.start_size)
    )
    steps = [job.config.steps] * len(sizes) if job.level_steps is None else list(job.level_steps)
    if len(steps) != len(sizes):
        raise ValueError(f"--level_steps has {len(steps)} values for {len(sizes)} levels")
    if grid and outputs.save_every:
        raise ValueError("--save_every is for single runs, not grids")
    if grid and (len(sizes) > 1 or inputs.content_masks):
        raise ValueError(
            "grids (--inits, --tv_weights, --ratios, --layers, ...) run at one size without masks"
        )
    output = Path(outputs.image)
    written = [output, *([Path(outputs.report)] if outputs.report else [])]
    check_outputs(inputs, written, save_every=outputs.save_every, steps=steps)

    # Every input's header first: a missing, foreign or oversized file fails before
    # anything is decoded.
    headers = {path: image_size(path) for path in inputs.image_files()}
    demo_content, demo_style = demo_images() if inputs.demo else (None, None)
    size = sizes[-1]
    scales = style_scales(job.style_scale, 1 if mode == "invert" else len(inputs.styles) or 1)
    styles = [demo_style]
    if inputs.styles:
        styles = [
            load_image(path, at_least=scaled_side(size, k))
            for path, k in zip(inputs.styles, scales, strict=True)
        ]
    if mode == "texture":  # A blank canvas of the style's shape: only the shape counts.
        content = np.zeros((*styles[0].shape[:2], 3), np.float32)
        check_shape("texture", (*resized_shape(content.shape[:2], sizes[0]), 3))
    elif inputs.content:
        content = load_image(inputs.content, at_least=size)
    else:
        content = demo_content
    full = headers.get(inputs.content, content.shape[:2])
    if mode == "invert":
        styles = [content]
    check_style_blend(job.config.loss.style_blend, len(styles))
    shapes = [s.shape[:2] for s in styles]
    content_masks, style_masks = load_masks(inputs, shapes, full, headers, size)
    if content_masks is not None:
        final = resized_shape(content.shape[:2], size)
        for problem in mask_problems(np.stack([resize_mask(m, final) for m in content_masks])):
            say(f"warning: {problem}")
    init_image = None
    if inputs.init:
        if aspect_differs(headers[inputs.init], full):
            h, w = headers[inputs.init]
            say(f"note: stretching --init {inputs.init} from {w}x{h} to the content's shape")
        init_image = load_image(inputs.init, at_least=size)
    t_inputs = time.perf_counter()
    weights = load_weights(inputs.weights, progress=outputs.progress)
    t_weights = time.perf_counter()
    settings = {
        "nst_jax": __version__,
        "mode": mode,
        "content": None if mode == "texture" else (inputs.content or DEMO_CONTENT),
        "style": None if mode == "invert" else (list(inputs.styles) or [DEMO_STYLE]),
        "content_masks": list(inputs.content_masks) or None,
        "style_masks": list(inputs.style_masks) or None,
        "style_scale": scales,
        "pyramid_sizes": sizes,
        "init": inputs.init or rows[0][1].init,  # A texture's and an inversion's: noise.
        "size": job.size,
        "weights": inputs.weights or "default",
        "weights_sha256": weights.sha256,
        "config": dataclasses.asdict(rows[0][1]),
    }
    kw = dict(weights=weights, progress=outputs.progress)
    if grid:
        result = sweeps.run_grid(
            rows, content, styles, cols, size=job.size, style_scale=scales,
            init_image=init_image, **kw,
        )  # fmt: skip
        settings["grid"] = {
            "rows": result.row_labels,
            "cols": result.col_labels,
            "done": len(result.results),
        }
        # Stopped before a step: every tile is its start; an earlier output stays.
        stopped_early = result.interrupted or result.failure is not None
        reached = any(r.steps > 0 for r in result.results) or not stopped_early
        picture = sweeps.grid_image(result)
        late_stop = reached and stopped_during(save_image, output, picture, settings=settings)
        runs = [
            run_record(r, label, 0, cols.labels)
            for r, label in zip(result.results, result.row_labels, strict=False)
        ]
        interrupted, failure = result.interrupted or late_stop, result.failure
        shape = result.images.shape[2:4]
        drawn = "x".join(map(str, sweeps.drawn_shape(result)))
        summary = f"saved {output} ({drawn} grid)"
    else:
        config = dataclasses.replace(rows[0][1], steps=steps[-1])

        def snapshot(level, step, image, losses):
            if outputs.save_every and step % outputs.save_every == 0 and step < steps[level]:
                path = snapshot_path(output, step, level if len(sizes) > 1 else None)
                save_image(path, image, settings={**settings, "step": step, "level": level})

        results = stylize_pyramid(
            content, styles, config, sizes=sizes, level_steps=steps, style_scale=scales,
            content_masks=content_masks, style_masks=style_masks, init_image=init_image,
            callback=snapshot, chunk=_chunk(outputs.save_every), **kw,
        )  # fmt: skip
        last = results[-1]
        # Stopped before a step: the image is the start, and an earlier output stays.
        stopped_early = last.interrupted or last.failure is not None
        reached = len(results) > 1 or last.steps > 0 or not stopped_early
        late_stop = reached and stopped_during(
            save_image, output, last.image, settings={**settings, "step": last.steps}
        )
        runs = [run_record(r, "", i, [""]) for i, r in enumerate(results)]
        interrupted, failure, shape = (
            last.interrupted or late_stop,
            last.failure,
            last.image.shape[:2],
        )
        term = "content" if mode == "invert" else "style"
        stopped = ", the loss no longer falling" if last.converged else ""
        summary = (
            f"saved {output} ({last.steps} steps{stopped}, {term} {last.initial[term]:.4g} -> "
            f"{last.final[term]:.4g})"
        )
    style_shapes = [
        scaled_shape(s.shape[:2], sizes[-1], k)
        for s, k in zip(styles, scales, strict=True)
        if mode != "invert"
    ]
    if interrupted:
        summary = f"interrupted; saved what was reached to {output}"
    if failure:
        summary = f"{failure}; saved the last finite image to {output}"
    if not reached:
        why = "interrupted before the first step" if interrupted else failure
        summary = f"{why}; nothing saved" + (
            f" ({output} left as it was)" if output.exists() else ""
        )
    compiling = sum(r["compile_seconds"] for r in runs)
    stepping = sum(r["steps"] * r["seconds_per_step"] for r in runs if r["steps"])
    now = time.perf_counter()
    timings = {  # The fixed cost, part by part, and the steps.
        "imports_s": t0 - IMPORT_STARTED,
        "inputs_s": t_inputs - t0,
        "weights_s": t_weights - t_inputs,
        "setup_and_compile_s": compiling,
        "steps_s": stepping,
        "other_s": now - t_weights - compiling - stepping,
    }
    data = report_data(
        job,
        settings,
        runs,
        interrupted=interrupted,
        failure=failure,
        wall_seconds=now - t0,
        timings=timings,
        content_shape=shape,
        style_shapes=style_shapes,
    )
    if outputs.report and stopped_during(write_json, outputs.report, data):  # Then stopped.
        if not interrupted:
            summary = f"interrupted; {summary}"
        interrupted = True
    return Report(output, summary, interrupted, failure, data)


def stylize_files(job: Job) -> Report:
    """``--mode stylize``: the content repainted in the style(s)."""
    return run_files(job, "stylize")


def texture_files(job: Job) -> Report:
    """``--mode texture``: a texture from the style alone, with its aspect ratio."""
    return run_files(job, "texture")


def invert_files(job: Job) -> Report:
    """``--mode invert``: the content reconstructed from one layer, from noise; its
    regularisers default to ``INVERSION_LOSS``'s unless the job's config set them."""
    return run_files(job, "invert")


def inversion_defaults(config: Config, given: Sequence[str]) -> Config:
    """``config`` with Mahendran & Vedaldi's regularisers (``INVERSION_LOSS``) for each
    of ``tv_weight``, ``tv_beta``, ``alpha_norm_weight``, ``alpha`` not in ``given``."""
    names = ("tv_weight", "tv_beta", "alpha_norm_weight", "alpha")
    loss = dataclasses.replace(
        config.loss, **{n: getattr(INVERSION_LOSS, n) for n in names if n not in given}
    )
    return dataclasses.replace(config, loss=loss)
