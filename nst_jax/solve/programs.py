"""The one place programs are compiled: compiler options, the batched step, donation.

``compile_step`` compiles the step every run takes, ``jax.vmap``-ed over a batch (a
single run is a batch of one), with the state donated; the host driver, the memory
checks (``step_memory``, and ``style_memory`` for a style's pass), the GPU lowering test
(``lower_step``) and ``benchmarks/`` all get it from here, so what they measure is what
runs.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import objective
from nst_jax.config import Config
from nst_jax.nets.network import Network
from nst_jax.objective import Terms
from nst_jax.solve import solver
from nst_jax.solve.placement import Placement

# XLA:CPU lowers convolutions to YNNPACK by default; Eigen's run this network's step
# faster on the CPUs measured so far (``benchmarks/step.py`` times both, in its "XLA
# defaults" column). LLVM's expensive passes buy nothing for a step whose time is in
# library convolutions and matmuls, and skipping them compiles it faster. Set per
# program, so nothing else in the process is affected.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_llvm_disable_expensive_passes": True,
}


# A program that runs once or twice (a run's setup, its losses at the start and the end)
# compiles much faster at LLVM's lowest optimisation level and runs a little slower the
# few times it runs; the step, run hundreds of times, keeps the default.
ONCE_OPTIONS = {"xla_backend_optimization_level": 0}


def jit(fn: Callable, *, tuned: bool = True, once: bool = False, **kwargs) -> Callable:
    """``jax.jit`` with the compiler options this package's programs run fastest under;
    ``once=True`` for a program that runs once or twice (see ``ONCE_OPTIONS``);
    ``tuned=False`` is plain ``jax.jit``, the reference benchmarks measure against."""
    options = None
    if tuned and jax.default_backend() == "cpu":
        options = {**CPU_COMPILER_OPTIONS, **(ONCE_OPTIONS if once else {})}
    return jax.jit(fn, compiler_options=options, **kwargs)


def batched_setup(config: Config, *, init_images: bool, blends: bool) -> Callable:
    """``solver.setup`` vmapped over contents, keys and (where given) init images and
    blends: ``(network, content [B], styles, init_image [B], blend [B], masks, key [B])``."""
    fn = functools.partial(solver.setup, config=config)
    axes = (None, 0, None, 0 if init_images else None, 0 if blends else None, None)
    return jax.vmap(lambda n, c, s, i, b, m, key: fn(n, c, s, i, b, m, key=key), (*axes, 0))


def batched_step(config: Config) -> Callable:
    """``solver.step`` vmapped over a batch: ``(network, targets [B], state [B],
    term_weights [B]) -> (state [B], losses [B, 5])``. L-BFGS's "nothing stored yet" and
    "time for a new sample" are scalars for the batch (its elements start and step
    together), so that its ``cond`` stays a branch under ``vmap`` (``solver.step``)."""
    fn = functools.partial(solver.step, config=config, optimizer=solver.make_optimizer(config))
    run = jax.vmap(fn, in_axes=(None, 0, 0, 0, None, None))

    def step(network, targets, state, term_weights):
        first = restart = None
        if config.optimizer == "lbfgs":
            first = ~jnp.all(jnp.isfinite(optax.tree.get(state.opt_state, "value")))
            restart = solver.restart_due(config, state)
        return run(network, targets, state, term_weights, first, restart)

    return step


def batched_losses(config: Config) -> Callable:
    """``solver.losses_at`` vmapped: ``(network, targets [B], image [B], term_weights [B])``."""
    return jax.vmap(functools.partial(solver.losses_at, config=config), in_axes=(None, 0, 0, 0))


def compile_step(
    network: Network,
    targets,
    state: solver.State,
    term_weights: Terms,
    config: Config,
    *,
    tuned: bool = True,
) -> jax.stages.Compiled:
    """The batched step, compiled for these arguments' shapes (arrays or
    ``jax.ShapeDtypeStruct``s), with the state donated: ``compiled(network, targets,
    state, term_weights) -> (state, losses [B, 5])``."""
    return lower(network, targets, state, term_weights, config, tuned=tuned).compile()


def lower(
    network: Network,
    targets,
    state: solver.State,
    term_weights: Terms,
    config: Config,
    *,
    tuned: bool = True,
    platforms: Sequence[str] | None = None,
    shardings: dict | None = None,
) -> jax.stages.Lowered:
    """What ``compile_step`` compiles, lowered; ``platforms`` (e.g. ``("cuda",)``) lowers
    it for other backends than this machine's; ``shardings`` places it (``jit``'s
    ``in_shardings`` and ``out_shardings``)."""
    run = jit(batched_step(config), tuned=tuned, donate_argnums=(2,), **(shardings or {}))
    traced = run.trace(network, targets, state, term_weights)
    return traced.lower(lowering_platforms=tuple(platforms) if platforms else None)


_COMPILED: collections.OrderedDict = collections.OrderedDict()
_KEEP = 8  # Compiled runs kept in this process, most recent first.
compiled_programs = 0  # Programs compiled in this process: what a resumed job counts.


def shapes_of(*trees) -> tuple:
    """Every tree's structure, shapes and dtypes: with the settings, what decides a
    compiled program."""
    return tuple(
        (jax.tree.structure(t), tuple((np.shape(x), str(x.dtype)) for x in jax.tree.leaves(t)))
        for t in trees
    )


# ``LossConfig``'s fields that ``Terms`` carries as the programs' arguments.
TERM_WEIGHTS = ("content_weight", "style_weight", "tv_weight", "alpha_norm_weight")


def _signature(config: Config, placement, *trees) -> tuple:
    """What decides a run's programs: the config (its step count and stopping rule, its
    seed and its colour handling aside: no program depends on them, beyond whether there
    are steps; keys are arguments, colours are the host's; nor on the terms' weights,
    beyond which are zero: they are arguments too, ``term_weights``), the placement, and
    every argument's tree, shapes and dtypes."""
    host_only = dict(
        steps=min(config.steps, 1), stop_tol=0.0, stop_window=1, seed=0, preserve_color="none"
    )
    weights = {name: float(bool(getattr(config.loss, name))) for name in TERM_WEIGHTS}
    loss = dataclasses.replace(config.loss, **weights)
    return dataclasses.replace(config, loss=loss, **host_only), placement, shapes_of(*trees)


def memoized(key, build: Callable):
    """``build()``'s compiled programs, built once per ``key`` in this process (the
    ``_KEEP`` most recent kept): a job's batches, or runs repeated in one session,
    compile once."""
    global compiled_programs
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    programs = build()
    compiled_programs += sum(
        p is not None for p in (programs if isinstance(programs, tuple) else (programs,))
    )
    _COMPILED[key] = programs
    while len(_COMPILED) > _KEEP:
        _COMPILED.popitem(last=False)
    return programs


def compile_run(
    setup_args: tuple,
    term_weights: Terms,
    config: Config,
    *,
    placement: Placement | None = None,
):
    """The three programs a run takes, compiled together from shapes, before any
    compute: ``(setup, step, losses)``.

    ``setup(*setup_args) -> (targets, state)``, as ``batched_setup``; ``step`` as
    ``compile_step``, or None for a run of no steps; ``losses(network, targets,
    images, term_weights) -> [B, 5]``. XLA compiles each program on one thread, so
    they compile side by side. With a ``placement``, every program takes its batch
    axis sharded over the mesh and the rest replicated. A run whose programs this
    process compiled recently takes them again (``_signature``): the batches of a job,
    or runs repeated in one session, compile once.
    """
    return memoized(
        _signature(config, placement, setup_args, term_weights),
        lambda: _compile_run(setup_args, term_weights, config, placement),
    )


def _compile_run(setup_args, term_weights, config, placement):
    network, _, _, init_images, blends, _, _ = setup_args
    shard = {}
    if placement is not None:
        r, b = placement.replicated, placement.batch
        shard = {
            "setup": dict(in_shardings=(r, b, r, b, b, r, b), out_shardings=(b, b)),
            "step": dict(in_shardings=(r, b, b, b), out_shardings=(b, b)),
            "losses": dict(in_shardings=(r, b, b, b), out_shardings=b),
        }
    setup = jit(
        batched_setup(config, init_images=init_images is not None, blends=blends is not None),
        once=True,
        **shard.get("setup", {}),
    )
    targets, state = jax.eval_shape(setup, *setup_args)
    losses = jit(batched_losses(config), once=True, **shard.get("losses", {}))
    lowered = [
        setup.lower(*setup_args),
        lower(network, targets, state, term_weights, config, shardings=shard.get("step"))
        if config.steps
        else None,
        losses.lower(network, targets, state.image, term_weights),
    ]
    with ThreadPoolExecutor(len(lowered)) as pool:
        return tuple(pool.map(lambda program: program and program.compile(), lowered))


def step_shapes(network: Network, shape: tuple[int, int], config: Config, *, batch: int = 1):
    """``(targets, state, term_weights)`` as shapes, for a batch of ``shape`` = (H, W)
    contents. A style of the content's shape stands in: the step holds statistics,
    whose size does not depend on the style's."""
    image = jax.ShapeDtypeStruct((batch, *shape, 3), jnp.float32)
    style = jax.ShapeDtypeStruct((*shape, 3), jnp.float32)
    keys = jax.ShapeDtypeStruct((batch,), jax.random.key(0).dtype)
    setup = batched_setup(config, init_images=False, blends=False)
    targets, state = jax.eval_shape(setup, network, image, (style,), None, None, None, keys)
    weights = jax.tree.map(
        lambda w: jax.ShapeDtypeStruct((batch,), jnp.float32), solver.term_weights_of(config)
    )
    return targets, state, weights


def lower_step(
    network: Network,
    shape: tuple[int, int],
    config: Config,
    *,
    batch: int = 1,
    platforms: Sequence[str] | None = None,
) -> jax.stages.Lowered:
    """The step a run of ``batch`` images at ``shape`` = (H, W) compiles, lowered from
    shapes alone: ``network``'s params may be ``jax.ShapeDtypeStruct``s."""
    targets, state, weights = step_shapes(network, shape, config, batch=batch)
    return lower(network, targets, state, weights, config, platforms=platforms)


def step_memory(network: Network, shape: tuple[int, int], config: Config, *, batch: int = 1):
    """XLA's memory analysis of that step, compiled from shapes alone: no memory is
    needed for the activations, so any size can be asked about. Returns
    ``compiled.memory_analysis()``, None where a backend has none."""
    return lower_step(network, shape, config, batch=batch).compile().memory_analysis()


def style_memory(
    network: Network, shape: tuple[int, int], config: Config, *, output: tuple[int, int]
):
    """XLA's memory analysis of a style's pass at ``shape`` = (H, W): the statistics a
    run whose output is ``output`` = (H, W) takes of it, compiled from shapes alone, as
    ``step_memory``. Returns ``compiled.memory_analysis()``, None where a backend has
    none. One style's pass: a mix's weights (``style_blend``) are for all of them.
    Memoized: a folder job's batches ask again."""
    style = jax.ShapeDtypeStruct((*shape, 3), jnp.float32)
    loss = dataclasses.replace(config.loss, style_blend=None)
    key = ("style_memory", loss, tuple(output), shapes_of(network, style))

    def analysis():
        targets = jit(lambda n, s: objective.style_targets(n, s, loss, shape=output), once=True)
        return targets.lower(network, style).compile().memory_analysis()

    return memoized(key, analysis)


def cache_folder() -> Path:
    """Where ``enable_compilation_cache`` keeps programs by default:
    ``$NST_JAX_COMPILATION_CACHE``, else the user cache folder's ``nst_jax/xla``."""
    if env := os.environ.get("NST_JAX_COMPILATION_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nst_jax" / "xla"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keeps compiled programs on disk (JAX's persistent compilation cache), so that a
    second run at the same sizes and settings skips most of its compiling.

    JAX keys each entry by the program, the compiler options, the jaxlib version and
    the backend, so one folder is safe to share across versions and settings: anything
    that differs misses. A cache JAX was already given is left as it is. The command
    line turns this on unless ``--nocompilation_cache``; library users opt in.

    Returns:
      The folder in use, or None if it cannot be created.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    folder = Path(path) if path is not None else cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_compilation_cache_max_size", 2 * 2**30)  # Oldest entries go.
    return folder
