"""The command line's flags: every ``--name``, its default, its help, and the modes and
settings it does something in (``refuse_unread``).

``cli.py`` turns them into frozen configs and runs one job per mode; the defaults come
from the configs (``Config``, ``LossConfig``, ``NetConfig``), so the two cannot drift.
"""

from __future__ import annotations

from absl import flags

import nst_jax
from nst_jax import Config, LossConfig, NetConfig

MODES = ["stylize", "texture", "invert", "train", "apply"]

# Inputs and outputs.
flags.DEFINE_string(
    "content",
    None,
    "Content image file; with --output_dir, a folder, a glob or a .txt list of them.",
)
flags.DEFINE_list(
    "style",
    None,
    "Style image file, or several, comma-separated: mixed (--style_blend) or masked "
    "(--content_masks).",
)
flags.DEFINE_list(
    "style_blend", None, "One weight per --style image: mix their statistics (default: equal)."
)
flags.DEFINE_list(
    "style_scale",
    ["1"],
    "Size of each style image relative to the output (its longest side is SCALE * --size); "
    "one value for all, or one per style. --mode train: relative to the crops, 2 by default "
    "(the crops are parts of photos 1-2 crops high, applied at twice the crop size).",
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
    Config.preserve_color,
    list(nst_jax.config.PRESERVE_COLOR),
    "Keep the content's colours: transfer luminance only, or match the style's colours to "
    "the content's first.",
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
    "Use the built-in demo images for whichever of --content/--style is not given.",
)
flags.DEFINE_enum(
    "mode",
    "stylize",
    MODES,
    "stylize: repaint --content in --style. texture: synthesise from --style alone, from "
    "noise, with the style's aspect ratio at --size (no --content). invert: reconstruct "
    "--content from its --layer activations, from noise (Mahendran & Vedaldi 2015). "
    "train: train a feed-forward generator for --style into --model. apply: run --model "
    "on --content in one forward pass.",
)
# Feed-forward generators (--mode train, --mode apply).
flags.DEFINE_string("model", None, "--mode train/apply: the generator's folder (checkpoints).")
flags.DEFINE_string(
    "train_data",
    None,
    "--mode train: a folder, glob or .txt list of photos (default: scikit-image's 13 photos).",
)
flags.DEFINE_enum(
    "generator", "pyramid", list(nst_jax.nets.generator.KINDS),
    "--mode train: Ulyanov et al.'s multi-scale generator, or Johnson et al.'s residual one.",
)  # fmt: skip
flags.DEFINE_enum(
    "norm", "instance", list(nst_jax.nets.generator.NORMS),
    "--mode train: the generator's normalisation (instance: Ulyanov et al. 2016).",
)  # fmt: skip
flags.DEFINE_integer("scales", 6, "--mode train: the pyramid generator's scales (1/32 ... 1).")
flags.DEFINE_integer(
    "width", 0, "--mode train: generator channels (0: 8 a scale for pyramid, 32 for residual)."
)
flags.DEFINE_bool("texture_net", False, "--mode train: a texture network, from noise alone.")
flags.DEFINE_integer("checkpoint_every", 100, "--mode train: write a checkpoint every N steps.")
# Sweeps: rows are separate programs, columns one vmapped batch. More than one tile
# writes a labelled grid to --output.
flags.DEFINE_string("layer", "conv4_2", "--mode invert: the layer to reconstruct from.")
flags.DEFINE_list("layers", None, "--mode invert: one grid row per layer, e.g. conv1_1,pool5.")
flags.DEFINE_string(
    "style_layer_sets",
    None,
    "--mode texture: one grid row per set of style layers, SET;SET with SET=L,L, or "
    "'growing' for conv1_1; conv1_1+conv2_1; ... over --style_layers.",
)
flags.DEFINE_integer(
    "inits",
    1,
    "Grid columns from this many seeds (--seed, --seed+1, ...): a seed varies a noise start "
    "(--init noise) and sampled kernels; --mode apply: noise draws.",
)
flags.DEFINE_list("tv_weights", None, "Grid columns, one per TV weight (lambda_beta sweep).")
flags.DEFINE_list(
    "ratios", None, "Grid columns, one per content/style ratio alpha/beta (beta = alpha / r)."
)
# Run shape.
flags.DEFINE_integer(
    "size",
    384,
    "Longest side of the output, in pixels. Each style is resized to --style_scale times "
    "it. --mode train: the side of the square training crops, 128 by default. --mode "
    "apply: the output's longest side (by default the content's own; 256 for a texture).",
)
flags.DEFINE_integer(
    "steps",
    Config.steps,
    "The most optimiser steps (per pyramid level); the stopping rule (--stop_tol) usually "
    "ends the run sooner. --mode train: the training steps, 800 by default.",
)
flags.DEFINE_integer(
    "pyramid", 1, "Coarse-to-fine levels, each twice the size of the last, ending at --size."
)
flags.DEFINE_integer(
    "start_size",
    0,
    "Start the coarse-to-fine pyramid at the smallest --size / 2^k that is at least this "
    "(overrides --pyramid).",
)
flags.DEFINE_list("level_steps", None, "Steps per pyramid level, coarse to fine (default --steps).")
flags.DEFINE_bool(
    "remat",
    NetConfig.remat,
    "Run VGG in strips, recomputed in the backward pass, with the style statistics summed "
    "strip by strip: much less memory at large sizes for more time per step (the README's "
    "memory benchmark has the figures).",
)
flags.DEFINE_enum(
    "convolution",
    NetConfig.convolution,
    list(nst_jax.nets.CONVOLUTIONS),
    "How VGG's convolutions run: auto (Winograd on CPU for images whose short side is "
    "at least 128 px, where it pays; direct on accelerators, for smaller images, or where "
    "only direct fits in memory), direct, winograd, or plain (autodiff's, the reference). "
    "The results agree to float32 rounding.",
)
flags.DEFINE_enum("optimizer", Config.optimizer, list(nst_jax.config.OPTIMIZERS), "Optimiser.")
flags.DEFINE_float(
    "lr",
    Config.lr,
    "Adam's starting learning rate (pixels live in [0, 1]). --mode train: the peak rate, "
    "0.03 by default, after a warm-up, decaying along a cosine.",
)
flags.DEFINE_float(
    "lr_half_life",
    Config.lr_half_life,
    "Adam's rate halves every N steps, down to a tenth of --lr (0: constant).",
)
flags.DEFINE_float(
    "stop_tol",
    Config.stop_tol,
    "Stop once the best loss fell by less than this fraction over --stop_window steps; "
    "--steps is the cap (0: always run --steps). Chosen by the README's quality benchmark.",
)
flags.DEFINE_integer("stop_window", Config.stop_window, "Steps over which --stop_tol is measured.")
flags.DEFINE_string(
    "init", Config.init, "Start from 'content', 'noise', 'style', or an image file."
)
flags.DEFINE_integer("seed", Config.seed, "PRNG seed (noise init, sampled kernels).")
flags.DEFINE_enum("pooling", NetConfig.pooling, ["avg", "max"], "VGG19 pooling.")
flags.DEFINE_integer("lbfgs_memory", Config.lbfgs_memory, "L-BFGS history size.")
flags.DEFINE_enum("linesearch", Config.linesearch, ["zoom", "backtracking"], "L-BFGS line search.")
flags.DEFINE_integer(
    "linesearch_steps", Config.linesearch_steps, "Most evaluations per line search."
)
# Loss settings.
flags.DEFINE_float("content_weight", LossConfig.content_weight, "Content weight (alpha).")
flags.DEFINE_float(
    "style_weight",
    LossConfig.style_weight,
    "Style weight (beta). --mode train defaults to twice this, 8: a generator at 4 paints "
    "too little (README: Feed-forward networks).",
)
flags.DEFINE_float(
    "tv_weight", LossConfig.tv_weight, "Total-variation weight (--mode invert: 1 by default)."
)
flags.DEFINE_list(
    "content_layers", list(LossConfig.content_layers), "Content layers (convolutions or poolings)."
)
flags.DEFINE_enum(
    "content_loss",
    LossConfig.content_loss,
    list(nst_jax.objective.CONTENT_LOSSES),
    "mse: mean squared feature difference. normalized: |F - P|^2 / |P|^2.",
)
flags.DEFINE_list("style_layers", list(LossConfig.style_layers), "Style layers.")
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
flags.DEFINE_enum(
    "style_norm",
    LossConfig.style_norm,
    list(nst_jax.objective.STYLE_NORMS),
    "relative: each style layer's distance over its target's size (every layer counts "
    "alike); gatys: Gatys et al.'s E_l, where conv4_1 outweighs conv1_1 10^5 to 1.",
)
flags.DEFINE_float("tv_beta", LossConfig.tv_beta, "Exponent beta of the total variation.")
flags.DEFINE_float(
    "alpha_norm_weight",
    LossConfig.alpha_norm_weight,
    "Weight of the alpha-norm (--mode invert: 10 by default).",
)
flags.DEFINE_float("alpha", LossConfig.alpha, "Exponent of the alpha-norm.")
flags.DEFINE_float("mmd_c", LossConfig.mmd_c, "Offset c of the polynomial MMD kernel (x.y + c)^d.")
flags.DEFINE_integer("mmd_degree", LossConfig.mmd_degree, "Degree d of the polynomial MMD kernel.")
flags.DEFINE_float(
    "mmd_sigma", LossConfig.mmd_sigma, "Gaussian MMD bandwidth (0: median heuristic)."
)
flags.DEFINE_integer(
    "mmd_samples",
    LossConfig.mmd_samples,
    "Positions sampled per layer and step by the pairwise MMD kernels.",
)
# Batch jobs: a folder in, a folder out.
flags.DEFINE_string(
    "output_dir",
    None,
    "Stylise (or, with --mode apply, run --model on) every image --content names (a "
    "folder, a glob, a .txt list of paths) into this folder: one output per content "
    "and style mix, named after its input, subfolders kept. A rerun skips outputs "
    "already done with the same settings.",
)
flags.DEFINE_string(
    "blends",
    None,
    "With --output_dir: style mixes, one output each, MIX;MIX with MIX=w,w,... one "
    "weight per --style. Without it, several --style images give one output each.",
)
flags.DEFINE_integer(
    "batch_size",
    0,
    "Images per batch, all devices and hosts together (0: as many as fit, a few per device). "
    "--mode train: photos a step, 4 by default.",
)
flags.DEFINE_integer("devices", 0, "Devices per process to shard batches over (0: all).")
flags.DEFINE_string("crop", None, "With --output_dir: crop every content to WxH (one shape).")
flags.DEFINE_bool("overwrite", False, "With --output_dir: redo outputs that are already done.")
flags.DEFINE_bool(
    "distributed",
    False,
    "Join the other processes of a multi-host run (jax.distributed): found by JAX on TPU "
    "pods and SLURM (joined there without this flag), or given by --coordinator.",
)
flags.DEFINE_string("coordinator", None, "--distributed: the coordinator's HOST:PORT.")
flags.DEFINE_integer("num_processes", None, "--distributed: how many processes.")
flags.DEFINE_integer("process_id", None, "--distributed: this process's index.")
# Progress and records.
flags.DEFINE_integer(
    "save_every",
    0,
    "Also save a snapshot every N steps (0: never), as OUTPUT_STEM.stepNNNNN.png; "
    "--mode train: the held-out photo (--content, or the demo's) as MODEL/samples/stepNNNNNN.png.",
)
flags.DEFINE_string("report", None, "Write a JSON report (losses, timings, settings) here.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool(
    "compilation_cache",
    True,
    "Keep compiled programs in the user cache folder (or $NST_JAX_COMPILATION_CACHE), so "
    "that a run at sizes and settings seen before skips most of its compiling.",
)


F = flags.FLAGS

# What a generator's modes read; any other flag given with them is refused. Every mode
# reads these:
EVERY_MODE = ("mode", "weights", "demo", "seed", "report", "progress", "compilation_cache",
              "distributed", "coordinator", "num_processes", "process_id")  # fmt: skip
CONTENT_FLAGS = ("content_weight", "content_layers", "content_loss")
STYLE_FLAGS = ("style_weight", "style_layers", "style_layer_weights", "style_loss",
               "stat_layers", "style_norm", "mmd_c", "mmd_degree", "mmd_sigma",
               "mmd_samples")  # fmt: skip
LOSS_FLAGS = (*CONTENT_FLAGS, *STYLE_FLAGS, "tv_weight", "tv_beta", "alpha_norm_weight", "alpha")
READS = {
    "train": (*EVERY_MODE, *LOSS_FLAGS, "style", "style_scale", "model", "train_data",
              "generator", "norm", "scales", "width", "texture_net", "checkpoint_every",
              "size", "steps", "lr", "batch_size", "devices", "pooling", "convolution",
              "remat", "save_every", "content"),
    "apply": (*EVERY_MODE, "model", "content", "output", "output_dir", "overwrite", "size",
              "inits", "generator", "norm", "texture_net"),
}  # fmt: skip
# What the optimisation modes do not read: the generators' flags, and what each mode
# sets itself (a texture has no content; an inversion matches one layer, --layer, with
# no style). Both start from noise, or from an --init image, not --init content or style.
FEEDFORWARD_FLAGS = ("model", "train_data", "generator", "norm", "scales", "width",
                     "texture_net", "checkpoint_every")  # fmt: skip
UNREAD = {
    "stylize": (*FEEDFORWARD_FLAGS, "layer"),
    "texture": (*FEEDFORWARD_FLAGS, "layer", *CONTENT_FLAGS),
    "invert": (*FEEDFORWARD_FLAGS, *CONTENT_FLAGS, *STYLE_FLAGS, "style_scale", "style_blend"),
}  # fmt: skip
# Flags that one setting makes moot: (flag, whether the setting is on, what it is).
MOOT = (
    ("lr", lambda: F.optimizer == "lbfgs", "--optimizer lbfgs (its line search sets the step)"),
    ("lr_half_life", lambda: F.optimizer == "lbfgs", "--optimizer lbfgs"),
    ("lbfgs_memory", lambda: F.optimizer == "adam", "--optimizer adam"),
    ("linesearch", lambda: F.optimizer == "adam", "--optimizer adam"),
    ("linesearch_steps", lambda: F.optimizer == "adam", "--optimizer adam"),
    ("stop_window", lambda: F.stop_tol == 0, "--stop_tol 0 (no stopping rule)"),
    ("style_weight", lambda: bool(F.ratios), "--ratios (each sets beta = alpha / r)"),
    ("tv_weight", lambda: bool(F.tv_weights), "--tv_weights (one column each)"),
    ("style_layers", lambda: (F.style_layer_sets or "growing").strip() != "growing",
     "--style_layer_sets (one row each; 'growing' takes them)"),
    ("init", lambda: F.mode != "stylize" and F.init in nst_jax.config.INIT_KINDS,
     "--mode texture or invert (they start from noise, or from an --init image)"),
    ("style_layer_weights", lambda: bool(F.style_layer_sets),
     "--style_layer_sets (equal weights within a set)"),
    ("stat_layers", lambda: bool(F.style_layer_sets), "--style_layer_sets (one row each)"),
)  # fmt: skip


def refuse_unread() -> None:
    """A flag given where it does nothing is refused: a user who sets it expects it to.

    Raises:
      ValueError: naming the flag, and the mode or setting that makes it do nothing.
    """
    for name in ("output", "output_dir", "report", "model", "train_data", "weights"):
        if F[name].present and not F[name].value:
            raise ValueError(f"--{name} is empty")
    joined = F.distributed or F.coordinator or nst_jax.hosts.in_cluster()
    for name in ("num_processes", "process_id"):
        if F[name].present and not joined:
            raise ValueError(f"--{name} goes with --distributed (and --coordinator)")
    if F.output_dir and F.mode == "apply":  # A generator's folder job: one pass each.
        for name in ("crop", "blends", "batch_size", "devices"):
            if F[name].present:
                raise ValueError(f"--{name} is for --mode stylize folder jobs")
    for flag in F.get_flags_for_module(__name__) if F.mode in READS else ():
        if flag.present and flag.name not in READS[F.mode]:
            raise ValueError(f"--{flag.name} does nothing in --mode {F.mode}")
    for name in UNREAD.get(F.mode, ()):
        if F[name].present:
            hint = " (--layer picks the layer)" if name == "content_layers" else ""
            raise ValueError(f"--{name} does nothing in --mode {F.mode}{hint}")
    for name, on, setting in MOOT if F.mode in UNREAD else ():
        if F[name].present and on():
            raise ValueError(f"--{name} does nothing with {setting}")
    if F.output_dir:
        return
    for name in ("crop", "blends", "overwrite", *(("batch_size", "devices") * (F.mode != "train"))):
        if F[name].present:
            raise ValueError(f"--{name} is for folder jobs (--output_dir)")
