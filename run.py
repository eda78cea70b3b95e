"""Neural style transfer from the command line.

  python run.py --content photo.jpg --style painting.jpg --output out.png
  python run.py --demo            # built-in sample images, writes demo.png
  python run.py --mode texture --style painting.jpg
  python run.py --mode invert --demo --layers conv1_1,conv3_1,conv5_1 --inits 3   # a grid

Flags map onto ``nst_jax.Config``; the work happens in the library. A user's mistake
(bad flag, missing file, unknown layer, unwritable output, size too large) prints one
line on stderr and exits with code 2. Ctrl-C saves the image reached so far (exit 130).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

import nst_jax
from nst_jax import _atomic
from nst_jax.objective import LossConfig
from nst_jax.optimize import Config

_L, _C = LossConfig, Config
F = flags.FLAGS

# Inputs and outputs.
flags.DEFINE_string("content", None, "Content image file.")
flags.DEFINE_string(
    "style", None, "Style image file, or several, comma-separated: mixed or masked, see below."
)
flags.DEFINE_list(
    "style_blend", None, "One weight per --style image: mix their statistics (default: equal)."
)
flags.DEFINE_list(
    "style_scale",
    ["1"],
    "Size of each style image relative to the output (its longest side is SCALE * --size); "
    "one value for all, or one per style.",
)
flags.DEFINE_list(
    "content_masks",
    None,
    "One mask image per --style: style i applies where mask i is white (grey = partly).",
)
flags.DEFINE_list(
    "style_masks", None, "One mask per --style ('-' for none): which part of each style counts."
)
flags.DEFINE_enum(
    "preserve_color",
    "none",
    ["none", "luminance", "histogram"],
    "Keep the content's colours: transfer luminance only, or match the style's colour "
    "histogram to the content's first.",
)
flags.DEFINE_string(
    "output",
    None,
    "Output image (.png keeps the settings). Default: out.png, or demo.png with --demo.",
)
flags.DEFINE_string(
    "weights",
    None,
    "VGG19 weights (.npz, .h5, or torchvision .pth). Default: "
    "the verified Keras/Caffe VGG19, fetched and cached on first use.",
)
flags.DEFINE_bool(
    "demo",
    False,
    "Use images shipped with scikit-image (Chelsea the cat; a stained micrograph) "
    "for whichever of --content/--style is not given.",
)
flags.DEFINE_enum(
    "mode",
    "stylize",
    ["stylize", "texture", "invert"],
    "stylize: repaint --content in --style. texture: synthesise from --style alone, from "
    "noise, with the style's aspect ratio at --size (no --content). invert: reconstruct "
    "--content from its --layer activations, from noise (Mahendran & Vedaldi 2015).",
)
# Sweeps: rows are separate programs, columns one vmapped batch. More than one tile
# writes a labelled grid to --output.
flags.DEFINE_string("layer", "conv4_2", "--mode invert: the layer to reconstruct from.")
flags.DEFINE_list("layers", None, "--mode invert: one grid row per layer, e.g. conv1_1,conv3_1.")
flags.DEFINE_string(
    "style_layer_sets",
    None,
    "--mode texture: one grid row per set of style layers, SET;SET with SET=L,L, or "
    "'growing' for conv1_1; conv1_1+conv2_1; ... over --style_layers.",
)
flags.DEFINE_integer("inits", 1, "Grid columns from this many seeds (--seed, --seed+1, ...).")
flags.DEFINE_list("tv_weights", None, "Grid columns, one per TV weight (lambda_beta sweep).")
flags.DEFINE_list(
    "ratios", None, "Grid columns, one per content/style ratio alpha/beta (beta = alpha / r)."
)
# Run shape.
flags.DEFINE_integer(
    "size",
    384,
    "Longest side of the output, in pixels. The style image is resized to the same longest side.",
)
flags.DEFINE_integer("steps", _C.steps, "Optimiser steps (per pyramid level).")
flags.DEFINE_integer(
    "pyramid", 1, "Coarse-to-fine levels, each twice the size of the last, ending at --size."
)
flags.DEFINE_integer(
    "start_size", 0, "Start the coarse-to-fine pyramid at this longest side (overrides --pyramid)."
)
flags.DEFINE_list("level_steps", None, "Steps per pyramid level, coarse to fine (default --steps).")
flags.DEFINE_bool(
    "remat",
    False,
    "Run VGG in strips, recomputed in the backward pass, with the style statistics summed "
    "strip by strip: a quarter of the memory or less from 2048 px up, for 1.2-1.3x the "
    "step time.",
)
flags.DEFINE_enum(
    "convolution",
    _C.convolution,
    list(nst_jax.optimize.CONVOLUTIONS),
    "How VGG's convolutions run: auto (Winograd on CPU from 128 px on the short side; "
    "direct on GPU and for smaller images), direct, or winograd. The results "
    "agree to float32 rounding.",
)
flags.DEFINE_enum("optimizer", _C.optimizer, ["adam", "lbfgs"], "Optimiser.")
flags.DEFINE_float("lr", _C.lr, "Adam learning rate (pixels live in [0, 1]).")
flags.DEFINE_string("init", _C.init, "Start from 'content', 'noise', 'style', or an image file.")
flags.DEFINE_integer("seed", _C.seed, "PRNG seed (noise init).")
flags.DEFINE_enum("pooling", _L.pooling, ["avg", "max"], "VGG19 pooling.")
flags.DEFINE_integer("lbfgs_memory", _C.lbfgs_memory, "L-BFGS history size.")
flags.DEFINE_enum("linesearch", _C.linesearch, ["zoom", "backtracking"], "L-BFGS line search.")
flags.DEFINE_integer("linesearch_steps", _C.linesearch_steps, "Most evaluations per line search.")
# Loss settings.
flags.DEFINE_float("content_weight", _L.content_weight, "Content weight (alpha).")
flags.DEFINE_float("style_weight", _L.style_weight, "Style weight (beta).")
flags.DEFINE_float("tv_weight", _L.tv_weight, "Total-variation weight.")
flags.DEFINE_list("content_layers", list(_L.content_layers), "Content layers.")
flags.DEFINE_enum(
    "content_loss",
    _L.content_loss,
    ["mse", "normalized"],
    "mse: mean squared feature difference. normalized: |F - P|^2 / |P|^2 (invert's).",
)
flags.DEFINE_list("style_layers", list(_L.style_layers), "Style layers.")
flags.DEFINE_list("style_layer_weights", None, "One weight per style layer (default: equal).")
flags.DEFINE_string(
    "style_loss",
    "gram:1",
    "Mix of style statistics, NAME:WEIGHT,...: gram, mmd_poly, mmd_linear, mmd_gauss, "
    "meanstd, histogram. E.g. gram:1,histogram:0.5.",
)
flags.DEFINE_string(
    "stat_layers",
    "",
    "Per-statistic layers, NAME=LAYER+LAYER;NAME=...; e.g. histogram=conv1_1+conv4_1. "
    "Statistics not named use --style_layers.",
)
flags.DEFINE_float("tv_beta", _L.tv_beta, "Exponent beta of the total variation.")
flags.DEFINE_float("alpha_norm_weight", _L.alpha_norm_weight, "Weight of the alpha-norm.")
flags.DEFINE_float("alpha", _L.alpha, "Exponent of the alpha-norm.")
flags.DEFINE_float("mmd_c", _L.mmd_c, "Offset c of the polynomial MMD kernel (x.y + c)^d.")
flags.DEFINE_integer("mmd_degree", _L.mmd_degree, "Degree d of the polynomial MMD kernel.")
flags.DEFINE_float("mmd_sigma", _L.mmd_sigma, "Gaussian MMD bandwidth (0: median heuristic).")
flags.DEFINE_integer(
    "mmd_samples",
    _L.mmd_samples,
    "Positions sampled per layer and step by the pairwise MMD kernels.",
)
# Progress and records.
flags.DEFINE_integer(
    "save_every", 0, "Also save a snapshot every N steps (0: never), as OUTPUT_STEM.stepNNNNN.png."
)
flags.DEFINE_string("report", None, "Write a JSON report (losses, timings, settings) here.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")


class UsageError(ValueError):
    """A user's mistake: reported in one line, exit code 2."""


def _config() -> Config:
    try:
        layer_weights = (
            None
            if F.style_layer_weights is None
            else tuple(float(v) for v in F.style_layer_weights)
        )
    except ValueError:
        raise UsageError(f"bad --style_layer_weights: {F.style_layer_weights}") from None
    stat_layers = []
    for part in filter(None, (p.strip() for p in F.stat_layers.split(";"))):
        name, eq, layers = part.partition("=")
        if not eq or not layers:
            raise UsageError(f"bad --stat_layers entry {part!r}; use NAME=LAYER+LAYER")
        stat_layers.append((name.strip(), tuple(x.strip() for x in layers.split("+"))))
    loss = LossConfig(
        content_weight=F.content_weight,
        style_weight=F.style_weight,
        tv_weight=F.tv_weight,
        content_layers=tuple(F.content_layers),
        content_loss=F.content_loss,
        style_layers=tuple(F.style_layers),
        style_layer_weights=layer_weights,
        pooling=F.pooling,
        remat=F.remat,
        style_loss=nst_jax.objective.parse_style_loss(F.style_loss),
        stat_layers=tuple(stat_layers),
        tv_beta=F.tv_beta,
        alpha_norm_weight=F.alpha_norm_weight,
        alpha=F.alpha,
        mmd_c=F.mmd_c,
        mmd_degree=F.mmd_degree,
        mmd_sigma=F.mmd_sigma,
        mmd_samples=F.mmd_samples,
    )
    if F.mode == "invert":  # Mahendran & Vedaldi's regularisers, unless set.
        defaults = nst_jax.optimize.INVERSION_LOSS
        names = ("tv_weight", "tv_beta", "alpha_norm_weight", "alpha")
        loss = dataclasses.replace(
            loss, **{n: getattr(defaults, n) for n in names if not F[n].present}
        )
    blend = _floats("style_blend")
    if blend is not None:
        loss = dataclasses.replace(loss, style_blend=tuple(blend))
    init = F.init if F.init in nst_jax.optimize.INITS else "content"
    return Config(
        preserve_color=F.preserve_color,
        loss=loss,
        steps=F.steps,
        optimizer=F.optimizer,
        lr=F.lr,
        init=init,
        seed=F.seed,
        lbfgs_memory=F.lbfgs_memory,
        linesearch=F.linesearch,
        linesearch_steps=F.linesearch_steps,
        convolution=F.convolution,
    )


def _same_file(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def main(argv):
    logging.set_verbosity(logging.WARNING)  # JAX logs backend probing at INFO under absl.
    if len(argv) > 1:
        raise UsageError(f"unexpected argument {argv[1]!r} (flags look like --name=value)")
    if F.size <= 0:
        raise UsageError(f"--size must be positive, got {F.size}")
    if F.save_every < 0:
        raise UsageError(f"--save_every must be >= 0, got {F.save_every}")
    texture, invert = F.mode == "texture", F.mode == "invert"
    if texture and F.content:
        raise UsageError("--mode texture takes no --content; it synthesises from --style")
    if invert and F.style:
        raise UsageError("--mode invert takes no --style; it reconstructs --content")
    if F.mode == "stylize" and not (F.demo or (F.content and F.style)):
        raise UsageError("give --content and --style, or --demo")
    if not F.demo and (texture and not F.style or invert and not F.content):
        raise UsageError(f"--mode {F.mode} needs --{'style' if texture else 'content'}, or --demo")
    config = _config()
    rows, cols = _rows(config), _columns(config)
    grid = len(rows) * len(cols.labels) > 1
    if grid and F.save_every:
        raise UsageError("--save_every is for single runs, not grids")

    output = Path(F.output or ("demo.png" if F.demo else "out.png"))
    named = [F.content, F.weights, F.init, *(F.style or "").split(","), *(F.content_masks or [])]
    inputs = [Path(p.strip()) for p in named + (F.style_masks or []) if p and p.strip() != "-"]
    for path in inputs:
        if _same_file(path, output):
            raise UsageError(f"--output {output} is an input file; refusing to overwrite it")
    nst_jax.image.check_writable(output)
    report = Path(F.report) if F.report else None
    if report is not None:
        if report.suffix.lower() != ".json":
            raise UsageError(f"--report must end in .json, got {report}")
        if any(_same_file(p, report) for p in inputs):
            raise UsageError(f"--report {report} is an input file; refusing to overwrite it")
        nst_jax.image.check_writable(report.with_suffix(".png"))

    demo_content, demo_style = nst_jax.demo_images() if F.demo else (None, None)
    style_paths = [p.strip() for p in F.style.split(",")] if F.style else []
    styles_full = [nst_jax.load_image(p) for p in style_paths] or [demo_style]
    if texture:  # A blank canvas: only its shape matters.
        content_full = np.zeros((*styles_full[0].shape[:2], 3), np.float32)
    else:
        content_full = nst_jax.load_image(F.content) if F.content else demo_content
    shape = nst_jax.image.resized_shape(content_full.shape[:2], F.size)
    batch = len(cols.labels)
    for _, row in rows:
        algorithm = row.convolution_algorithm(shape, batch)
        nst_jax.memory.check_estimate(shape, row.loss, batch=batch, convolution=algorithm)
    content = nst_jax.resize(content_full, shape)
    scales = _style_scales(len(styles_full))
    if invert:
        style = content
    else:
        resized = [
            nst_jax.resize_longest(s, max(16, round(k * F.size)))
            for s, k in zip(styles_full, scales, strict=True)
        ]
        style = resized if len(resized) > 1 else resized[0]
    masks = _masks(len(styles_full), content_full.shape[:2], shape)
    init_image = None
    if F.init not in nst_jax.optimize.INITS:
        init_image = nst_jax.resize(nst_jax.load_image(F.init), shape)
    sizes = nst_jax.optimize.pyramid_sizes(F.size, levels=F.pyramid, start_size=F.start_size)
    level_steps = _floats("level_steps")
    if level_steps is not None and len(level_steps) != len(sizes):
        raise UsageError(f"--level_steps has {len(level_steps)} values for {len(sizes)} levels")
    if invert and len(sizes) > 1:
        raise UsageError("--pyramid and --start_size are for --mode stylize and texture")
    if grid and (len(sizes) > 1 or masks[0] is not None):
        raise UsageError(
            "grids (--inits, --tv_weights, --ratios, --layers, ...) run at one size without masks"
        )

    weights = nst_jax.load_weights(F.weights, progress=F.progress)
    settings = {
        "nst_jax": nst_jax.__version__,
        "mode": F.mode,
        "content": None if texture else (F.content or "demo:chelsea"),
        "style": None if invert else (style_paths or ["demo:immunohistochemistry"]),
        "content_masks": F.content_masks,
        "style_masks": F.style_masks,
        "style_scale": scales,
        "pyramid_sizes": sizes,
        "init": F.init,
        "size": F.size,
        "weights": F.weights or "default",
        "weights_sha256": weights.sha256,
        "config": dataclasses.asdict(rows[0][1]),
    }
    t0 = time.perf_counter()
    if grid:
        return _run_grid(rows, cols, content, style, init_image, weights, output, report, settings)
    config = rows[0][1]
    pyramid = len(sizes) > 1

    def snapshot(level, step, image, losses):
        if F.save_every and step % F.save_every == 0 and step < config.steps:
            tag = f".level{level}" if pyramid else ""
            nst_jax.save_image(
                output.with_name(f"{output.stem}{tag}.step{step:05d}{output.suffix}"),
                image,
                settings={**settings, "step": step, "level": level},
            )

    common = dict(weights=weights, chunk=_chunk(F.save_every, config.steps), progress=F.progress)
    content_masks, style_masks = masks
    if pyramid:
        results = nst_jax.stylize_pyramid(
            content,
            styles_full,
            config,
            sizes=sizes,
            level_steps=None if level_steps is None else [int(n) for n in level_steps],
            style_scale=scales,
            content_masks=content_masks,
            style_masks=style_masks,
            init_image=init_image,
            callback=snapshot,
            **common,
        )
        result = results[-1]
    else:
        result = nst_jax.stylize(
            content,
            style,
            config,
            init_image=init_image,
            content_masks=content_masks,
            style_masks=style_masks,
            callback=lambda *a: snapshot(0, *a),
            **common,
        )
    nst_jax.save_image(output, result.image, settings={**settings, "step": result.steps})
    if report is not None:
        _write_report(
            report,
            result,
            settings,
            content.shape,
            [np.shape(s) for s in (style if isinstance(style, list) else [style])],
            time.perf_counter() - t0,
        )
    if result.interrupted:
        print(f"interrupted at step {result.steps}; saved {output}", file=sys.stderr)
        return 130
    term = "content" if invert else "style"
    print(
        f"saved {output} ({result.steps} steps, {term} {result.initial[term]:.4g} -> "
        f"{result.final[term]:.4g})",
        file=sys.stderr,
    )
    return 0


def _style_scales(n: int) -> list[float]:
    scales = _floats("style_scale")
    if len(scales) == 1:
        scales = scales * n
    if len(scales) != n or any(not k > 0 for k in scales):
        raise UsageError(f"--style_scale needs one positive value, or one per style ({n})")
    return scales


def _masks(n: int, full_shape: tuple[int, int], shape: tuple[int, int]):
    """``(content_masks [n, H, W] or None, style_masks list or None)`` from the flags."""
    if F.style_blend and F.content_masks:
        raise UsageError("--style_blend mixes styles everywhere; --content_masks places them")
    if F.style_masks and not F.content_masks:
        raise UsageError("--style_masks needs --content_masks")
    if not F.content_masks:
        return None, None
    if len(F.content_masks) != n:
        raise UsageError(f"{len(F.content_masks)} --content_masks for {n} styles; give one each")
    content_masks = []
    for path in F.content_masks:
        mask = nst_jax.image.load_mask(path)
        if mask.shape != tuple(full_shape):
            print(
                f"note: resizing mask {path} from {mask.shape[1]}x{mask.shape[0]} to the "
                f"content's {full_shape[1]}x{full_shape[0]}",
                file=sys.stderr,
            )
        content_masks.append(nst_jax.image.load_mask(path, shape))
    content_masks = np.stack(content_masks)
    for problem in nst_jax.image.mask_problems(content_masks):
        print(f"warning: {problem}", file=sys.stderr)
    style_masks = None
    if F.style_masks:
        if len(F.style_masks) != n:
            raise UsageError(f"{len(F.style_masks)} --style_masks for {n} styles; use - for none")
        style_masks = [None if p == "-" else nst_jax.image.load_mask(p) for p in F.style_masks]
    return content_masks, style_masks


def _floats(name: str) -> list[float] | None:
    values = F[name].value
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError:
        raise UsageError(f"bad --{name}: {','.join(values)}") from None


def _rows(config: Config) -> list[tuple[str, Config]]:
    """One ``(label, config)`` per grid row; a single row for a plain run."""
    if F.layers and F.mode != "invert" or F.style_layer_sets and F.mode != "texture":
        raise UsageError("--layers is for --mode invert, --style_layer_sets for --mode texture")
    if F.mode == "invert":
        if F.layers and F["layer"].present:
            raise UsageError("give --layer or --layers, not both")
        return nst_jax.sweeps.inversion_rows(config, F.layers or [F.layer])
    if F.mode == "texture":
        if F.style_layer_sets:
            sets = nst_jax.sweeps.parse_layer_sets(F.style_layer_sets, config.loss.style_layers)
            return nst_jax.sweeps.texture_rows(config, sets)
        return [("", nst_jax.optimize.texture_config(config))]
    return [("", config)]


def _columns(config: Config) -> nst_jax.sweeps.Columns:
    if F.inits < 1:
        raise UsageError(f"--inits must be >= 1, got {F.inits}")
    ratios = _floats("ratios")
    if ratios and F.mode != "stylize":
        raise UsageError("--ratios weighs content against style; it needs --mode stylize")
    loss = _rows(config)[0][1].loss
    return nst_jax.sweeps.columns(
        loss,
        seeds=[F.seed + i for i in range(F.inits)],
        tv_weights=_floats("tv_weights"),
        ratios=ratios,
    )


def _run_grid(rows, cols, content, style, init_image, weights, output, report, settings):
    """Runs a sweep and writes one labelled grid; Ctrl-C keeps the rows done so far."""
    t0 = time.perf_counter()
    init_images = None if init_image is None else np.stack([init_image] * len(cols.labels))
    grid = nst_jax.sweeps.run_grid(
        rows, content, style, cols, weights=weights, init_images=init_images, progress=F.progress
    )
    image = nst_jax.sweeps.grid_image(grid)
    settings = {
        **settings,
        "grid": {"rows": grid.row_labels, "cols": grid.col_labels, "done": len(grid.results)},
    }
    nst_jax.save_image(output, image, settings=settings)
    if report is not None:
        data = {
            "grid": settings["grid"],
            "tiles": nst_jax.sweeps.tile_losses(grid),
            "seconds_per_step": [r.seconds_per_step for r in grid.results],
            "compile_seconds": [r.compile_seconds for r in grid.results],
            "wall_seconds": time.perf_counter() - t0,
            "content_size": list(content.shape[:2]),
            "weights_sha256": settings["weights_sha256"],
            "settings": settings,
        }
        with _atomic.atomic_path(report) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    if grid.interrupted:
        print(f"interrupted; saved the rows done so far to {output}", file=sys.stderr)
        return 130
    print(f"saved {output} ({len(rows)}x{len(cols.labels)} grid)", file=sys.stderr)
    return 0


def _chunk(save_every: int, steps: int) -> int:
    """Steps per compiled call: every snapshot lands on a chunk boundary."""
    if save_every <= 0:
        return 10
    return max(d for d in range(1, min(save_every, 20) + 1) if save_every % d == 0)


def _write_report(path, result, settings, content_shape, style_shape, wall_seconds):
    history = {k: [round(float(v), 6) for v in vals] for k, vals in result.history.items()}
    report = {
        "initial_losses": result.initial,
        "final_losses": result.final,
        "steps": result.steps,
        "interrupted": result.interrupted,
        "seconds_per_step": result.seconds_per_step,
        "compile_seconds": result.compile_seconds,
        "wall_seconds": wall_seconds,
        "content_size": list(content_shape[:2]),
        "style_sizes": [list(s[:2]) for s in style_shape],
        "weights_sha256": settings["weights_sha256"],
        "settings": settings,
        "flags": {f.name: f.value for f in F.get_key_flags_for_module(sys.argv[0])},
        "history": history,
    }
    with _atomic.atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True))


def _run(argv):
    try:
        sys.exit(main(argv))
    except (ValueError, TypeError) as e:  # The library's word for a user's mistake.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # Weights could not be fetched, disk full, ...
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted before the first step; nothing to save", file=sys.stderr)
        sys.exit(130)


def _parse_flags(argv):
    try:
        return F(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    # A shell that starts us in the background sets SIGINT to "ignore", and Python then
    # never raises KeyboardInterrupt; restore it so Ctrl-C (or kill -INT) saves the image.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    app.run(_run, flags_parser=_parse_flags)
