"""The command line: ``python run.py``, ``python -m nst_jax`` and ``nst-jax`` are this.

  nst-jax --content photo.jpg --style painting.jpg --output out.png
  nst-jax --demo            # built-in sample images, writes demo.png
  nst-jax --mode texture --style painting.jpg
  nst-jax --mode invert --demo --layers conv1_1,conv3_1,pool5 --inits 3   # a grid

The flags are defined in ``cli_flags.py``; here they map onto frozen configs
(``Config``, ``jobs.Job``), and one library call per mode does the work. A user's
mistake (bad flag, missing file, unknown layer, unwritable output, size too large)
prints one line on stderr and exits with code 2. Ctrl-C, SIGTERM and SIGHUP save the
image reached so far and exit with 128 + the signal.
"""

from __future__ import annotations

import dataclasses
import signal
import sys

import jax
from absl import app, flags, logging

import nst_jax
import nst_jax.cli_flags  # noqa: F401  (defines the flags)
from nst_jax import Config, Inputs, Job, LossConfig, NetConfig, Outputs

F = flags.FLAGS
JOBS = {"stylize": nst_jax.stylize_files, "texture": nst_jax.texture_files}
JOBS["invert"] = nst_jax.invert_files
# Exit codes: a user's mistake, a run that stopped on a non-finite loss, a file system or
# network failure, a folder job some of whose inputs failed; a signal gives 128 + its
# number (130 for Ctrl-C).
USAGE, FAILED, OS_ERROR, SOME_FAILED = 2, 3, 1, 4


def _numbers(name: str, kind=float) -> tuple | None:
    """A list flag's values as numbers, or None if it is unset."""
    values = F[name].value
    if values is None:
        return None
    try:
        return tuple(kind(v) for v in values)
    except ValueError:
        raise ValueError(f"bad --{name}: {','.join(values)}") from None


def _stat_layers() -> tuple:
    out = []
    for part in filter(None, (p.strip() for p in F.stat_layers.split(";"))):
        name, eq, layers = part.partition("=")
        if not eq or not layers:
            raise ValueError(f"bad --stat_layers entry {part!r}; use NAME=LAYER+LAYER")
        out.append((name.strip(), tuple(x.strip() for x in layers.split("+"))))
    return tuple(out)


def _config() -> Config:
    """The flags' ``Config``; --mode invert takes Mahendran & Vedaldi's regularisers for
    those of them not given."""
    loss = LossConfig(
        content_weight=F.content_weight,
        style_weight=F.style_weight,
        tv_weight=F.tv_weight,
        content_layers=tuple(F.content_layers),
        content_loss=F.content_loss,
        style_layers=tuple(F.style_layers),
        style_layer_weights=_numbers("style_layer_weights"),
        style_blend=_numbers("style_blend"),
        style_loss=nst_jax.objective.parse_style_loss(F.style_loss),
        stat_layers=_stat_layers(),
        tv_beta=F.tv_beta,
        alpha_norm_weight=F.alpha_norm_weight,
        alpha=F.alpha,
        mmd_c=F.mmd_c,
        mmd_degree=F.mmd_degree,
        mmd_sigma=F.mmd_sigma,
        mmd_samples=F.mmd_samples,
        style_norm=F.style_norm,
    )
    if F.mode != "invert" and loss.style_weight and not loss.style_on:
        raise ValueError("no style layers (--style_layers is empty): give layers, or --mode invert")
    weights = [w for n, _ in loss.style_loss for _, w in loss.statistic_layers(n)]
    if F.mode != "invert" and loss.style_weight and not any(weights):
        raise ValueError("--style_layer_weights are all 0: the style would count for nothing")
    config = Config(
        loss=loss,
        net=NetConfig(pooling=F.pooling, convolution=F.convolution, remat=F.remat),
        steps=F.steps,
        optimizer=F.optimizer,
        lr=F.lr,
        lr_half_life=F.lr_half_life,
        stop_tol=F.stop_tol,
        stop_window=F.stop_window,
        init=F.init if F.init in nst_jax.config.INIT_KINDS else "content",
        seed=F.seed,
        lbfgs_memory=F.lbfgs_memory,
        linesearch=F.linesearch,
        linesearch_steps=F.linesearch_steps,
        preserve_color=F.preserve_color,
    )
    if F.mode == "invert":
        given = [n for n in ("tv_weight", "tv_beta", "alpha_norm_weight", "alpha") if F[n].present]
        config = nst_jax.jobs.inversion_defaults(config, given)
    return config


def _job() -> Job:
    """The flags' ``Job``."""
    if F.layers and F["layer"].present:
        raise ValueError("give --layer or --layers, not both")
    sets = ()
    if F.style_layer_sets:
        sets = nst_jax.sweeps.parse_layer_sets(F.style_layer_sets, tuple(F.style_layers))
    inputs = Inputs(
        content=F.content,
        styles=tuple(F.style or ()),
        demo=F.demo,
        content_masks=tuple(F.content_masks or ()),
        style_masks=tuple(F.style_masks or ()),
        init=None if F.init in nst_jax.config.INIT_KINDS else F.init,
        weights=F.weights,
    )
    outputs = Outputs(
        image=F.output or ("demo.png" if F.demo else "out.png"),
        report=F.report,
        save_every=F.save_every,
        progress=F.progress,
        extra={"flags": {f.name: f.value for f in F.get_key_flags_for_module(nst_jax.cli_flags)}},
    )
    return Job(
        inputs=inputs,
        outputs=outputs,
        config=_config(),
        size=F.size,
        style_scale=_numbers("style_scale"),
        pyramid=F.pyramid,
        start_size=F.start_size,
        level_steps=_numbers("level_steps", int),
        layers=tuple(F.layers or ([F.layer] if F.mode == "invert" else [])),
        style_layer_sets=tuple(sets),
        seeds=F.inits,
        tv_weights=_numbers("tv_weights"),
        ratios=_numbers("ratios"),
    )


# What a folder job does not take: each of these is about one content and one output.
NOT_FOR_FOLDERS = (
    "output", "report", "save_every", "content_masks", "style_masks", "pyramid",
    "start_size", "level_steps", "inits", "tv_weights", "ratios", "layers", "demo",
    "style_layer_sets", "preserve_color",
)  # fmt: skip


def _folder_job():
    """The flags' ``folders.FolderJob``."""
    if F.mode != "stylize":
        raise ValueError("--output_dir runs --mode stylize")
    for name in NOT_FOR_FOLDERS:
        if F[name].present:
            raise ValueError(f"--{name} is for one content; --output_dir takes a folder")
    if not F.content or not F.style:
        raise ValueError("--output_dir needs --content (a folder, glob or list) and --style")
    if F.init not in nst_jax.config.INIT_KINDS:
        raise ValueError("--init with an image is for one content; use content, noise or style")
    crop = None
    if F.crop:
        w, x, h = F.crop.lower().partition("x")
        if not (x and w.isdigit() and h.isdigit()):
            raise ValueError(f"bad --crop {F.crop!r}; use WxH, e.g. 512x384")
        crop = (int(h), int(w))
    blends = None
    if F.blends:
        try:
            blends = tuple(
                tuple(float(w) for w in mix.split(","))
                for mix in filter(None, (m.strip() for m in F.blends.split(";")))
            )
        except ValueError:
            raise ValueError(f"bad --blends {F.blends!r}; use w,w;w,w") from None
    return nst_jax.folders.FolderJob(
        contents=F.content,
        styles=tuple(F.style),
        output_dir=F.output_dir,
        config=_config(),
        size=F.size,
        crop=crop,
        blends=blends,
        style_scale=_numbers("style_scale"),
        weights=F.weights,
        batch_size=F.batch_size or None,
        devices=F.devices or None,
        overwrite=F.overwrite,
        progress=F.progress,
    )


def _feedforward():
    """``--mode train`` or ``--mode apply``: the flags' job, run."""
    from nst_jax import feedforward
    from nst_jax.tasks.train import TrainConfig

    if not 0 <= F.seed < nst_jax.config.SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2^31), got {F.seed}")
    model = F.model or (feedforward.DEMO_MODEL if F.demo else None)
    if not model:
        raise ValueError(f"--mode {F.mode} needs --model DIR")
    if F.mode == "apply" and F.output_dir:
        for name in ("output", "report", "inits", "demo"):
            if F[name].present:
                raise ValueError(f"--{name} is for one content; --output_dir takes a folder")
        if not F.content:
            raise ValueError("--output_dir needs --content (a folder, glob or list)")
        return feedforward.apply_folder(
            feedforward.ApplyFolderJob(
                model_dir=model,
                contents=F.content,
                output_dir=F.output_dir,
                size=F.size if F["size"].present else None,
                seed=F.seed,
                overwrite=F.overwrite,
                progress=F.progress,
            )
        )
    if F.mode == "apply":
        if F.inits < 1:
            raise ValueError(f"--inits must be >= 1, got {F.inits}")
        return feedforward.apply_files(
            feedforward.ApplyJob(
                model_dir=model,
                output=F.output or ("demo.png" if F.demo else "out.png"),
                content=F.content,
                size=F.size if F["size"].present else None,
                seeds=tuple(range(F.seed, F.seed + F.inits)),
                demo=F.demo,
                report=F.report,
                expect=tuple(
                    (field, F[flag].value)
                    for flag, field in (
                        ("generator", "kind"),
                        ("norm", "norm"),
                        ("texture_net", "texture"),
                    )
                    if F[flag].present
                ),
            )
        )
    if not F.style and not F.demo:
        raise ValueError("--mode train needs --style (or --demo)")
    if F.style and len(F.style) > 1:
        raise ValueError("--mode train takes one --style")
    if F["style_scale"].present and len(F.style_scale) > 1:
        raise ValueError("--mode train takes one --style_scale")
    if F["scales"].present and F.generator != "pyramid":
        raise ValueError("--scales is for --generator pyramid")
    base = TrainConfig()
    given = {n: F[n].value for n in ("steps", "size", "lr", "seed", "batch_size") if F[n].present}
    loss = _config().loss
    if not F["style_weight"].present:
        loss = dataclasses.replace(loss, style_weight=base.loss.style_weight)
    if F.texture_net:
        loss = dataclasses.replace(loss, content_weight=0.0, content_layers=())
    config = base.replace(
        generator=nst_jax.nets.generator.GeneratorConfig(
            kind=F.generator, norm=F.norm, texture=F.texture_net, scales=F.scales, width=F.width
        ),
        loss=loss,
        net=NetConfig(pooling=F.pooling, convolution=F.convolution, remat=F.remat),
        style_scale=_numbers("style_scale")[0] if F["style_scale"].present else base.style_scale,
        **given,
    )
    return feedforward.train_files(
        feedforward.TrainJob(
            style=None if not F.style else F.style[0],
            model_dir=model,
            config=config,
            train_data=F.train_data,
            weights=F.weights,
            sample=F.content,
            save_every=F.save_every,
            checkpoint_every=F.checkpoint_every,
            report=F.report,
            progress=F.progress,
            devices=F.devices or None,
        )
    )


_signals: list[int] = []  # The signals received, in order.


def _stop(signum, frame):
    """SIGTERM and SIGHUP stop a run as Ctrl-C does: the image reached is saved."""
    _signals.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _interrupted() -> int:
    """128 + the signal that stopped the run: raised (``_stop``) or, in a multi-host job,
    recorded (``signals.polled``)."""
    recorded = nst_jax.signals.last_recorded()
    last = _signals[-1] if _signals else recorded
    return 128 + (last if last is not None else int(signal.SIGINT))


def main(argv: list[str]) -> int:
    """Runs the command ``argv`` (flags already parsed); returns the exit code."""
    logging.set_verbosity(logging.WARNING)  # JAX logs backend probing at INFO under absl.
    if len(argv) > 1:
        raise ValueError(f"unexpected argument {argv[1]!r} (flags look like --name=value)")
    if F.compilation_cache:
        nst_jax.solve.enable_compilation_cache()
    nst_jax.cli_flags.refuse_unread()
    if F.distributed or F.coordinator or nst_jax.hosts.in_cluster():
        nst_jax.hosts.connect(
            coordinator=F.coordinator, num_processes=F.num_processes, process_id=F.process_id
        )
    if F.mode in ("train", "apply"):
        report = _feedforward()
        print(report.summary, file=sys.stderr)
        if getattr(report, "failure", None):
            return FAILED
        failed = getattr(report, "failed", 0)
        return _interrupted() if report.interrupted else SOME_FAILED if failed else 0
    if F.output_dir:
        folder = nst_jax.stylize_folder(_folder_job())
        print(folder.summary, file=sys.stderr)
        return _interrupted() if folder.interrupted else SOME_FAILED if folder.failed else 0
    report = JOBS[F.mode](_job())
    print(report.summary, file=sys.stderr)
    if report.failure:
        return FAILED
    return _interrupted() if report.interrupted else 0


def _exit_code(argv: list[str]) -> int:
    """``main``, with errors as one line on stderr and an exit code."""
    try:
        return main(argv)
    except (ValueError, TypeError) as e:  # The library's word for a user's mistake.
        print(f"error: {e}", file=sys.stderr)
        return USAGE
    except OSError as e:  # Weights could not be fetched, disk full, ...
        print(f"error: {e}", file=sys.stderr)
        return OS_ERROR
    except jax.errors.JaxRuntimeError as e:  # What the memory plan could not foresee.
        # XLA:CPU reports an allocation that fails as INTERNAL, "Out of memory allocating
        # N bytes"; accelerators as RESOURCE_EXHAUSTED.
        if not any(why in str(e) for why in ("RESOURCE_EXHAUSTED", "Out of memory")):
            raise  # A bug: its traceback is what to report.
        first = str(e).strip().splitlines()[0]
        print(f"error: out of device memory ({first}); {_needs_less()} needs less",
              file=sys.stderr)  # fmt: skip
        return OS_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)  # Outside a run: what it saved, it said.
        return _interrupted()


def _needs_less() -> str:
    """The flags that make this command need less memory, as advice."""
    batched = F.mode == "train" or (F.output_dir and F.mode != "apply")
    flags = ["a smaller --size", *(["--batch_size"] * bool(batched))]
    return ", ".join(flags) + (", or --remat" if F.mode != "apply" else "")


def execute(argv: list[str]) -> int:
    """Parses ``argv`` (``argv[0]`` is the program) and runs it, in this process:
    returns the exit code. For tests and scripts; ``run`` is the command."""
    F.unparse_flags()
    _signals.clear()
    nst_jax.signals.forget()
    try:
        rest = F(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE
    return _exit_code(rest)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return F(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(USAGE)


def run() -> None:
    """The console entry point: parse the flags, run, exit with the code."""
    # A shell that starts us in the background sets SIGINT to "ignore", and Python then
    # never raises KeyboardInterrupt; restore it so Ctrl-C (or kill -INT) saves the image.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    # ``--help`` lists the main module's key flags: make ours theirs, whichever file runs.
    for flag in F.get_flags_for_module(nst_jax.cli_flags.__name__):
        F.register_key_flag_for_module(sys.argv[0], flag)
    app.run(lambda argv: sys.exit(_exit_code(argv)), flags_parser=_parse_flags)
