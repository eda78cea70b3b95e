"""Optimising the image: Optax Adam or L-BFGS, one compiled step.

Two entry points share the same pure ``init`` and ``step`` functions:

* ``transfer``: pure and jittable; runs every step in one ``lax.scan``. Vmap it over
  contents, styles or PRNG keys.
* ``stylize``: the host driver behind the CLI. It jits ``step`` once, with the state
  donated, and calls it from a Python loop. On CPU, XLA runs a convolution-heavy
  ``scan``/``while`` body about 2x slower than the same body as its own program (see
  ``benchmarks/``), so the loop stays in Python; dispatch costs microseconds against a
  step's tenths of a second. Between steps the driver reports progress, calls back
  for snapshots, and keeps a host copy of the image so Ctrl-C never loses work.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import objective as obj
from nst_jax import weights as weights_lib
from nst_jax.image import Preprocessing
from nst_jax.vgg import LAYERS, layer_stride

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise", "style")
LINESEARCHES = ("zoom", "backtracking")
HISTORY_KEYS = ("total", *obj.Terms._fields)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that decides the result, given the images and the weights.

    Attributes:
      loss: the objective's layers and weights.
      steps: optimiser steps. An L-BFGS step may evaluate the objective several times
        in its line search; an Adam step evaluates it once.
      optimizer: ``"lbfgs"`` or ``"adam"``.
      lr: Adam's learning rate, in pixel units (the image lives in [0, 1]). L-BFGS ignores
        it: its line search picks the step.
      init: start from the ``"content"`` image, uniform ``"noise"``, or the ``"style"``
        image (resized to the content's shape). ``stylize`` also takes an array.
      seed: PRNG seed for the noise init.
      lbfgs_memory: number of past updates L-BFGS keeps.
      linesearch: L-BFGS line search, ``"zoom"`` (strong Wolfe) or ``"backtracking"``
        (Armijo).
      linesearch_steps: most objective evaluations one line search may spend.
    """

    loss: obj.LossConfig = obj.LossConfig()
    steps: int = 300
    optimizer: str = "adam"
    lr: float = 0.05
    init: str = "content"
    seed: int = 0
    lbfgs_memory: int = 10
    linesearch: str = "zoom"
    linesearch_steps: int = 10

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS} or an image, got {self.init!r}")
        if self.lbfgs_memory < 1:
            raise ValueError(f"lbfgs_memory must be >= 1, got {self.lbfgs_memory}")
        if self.linesearch not in LINESEARCHES:
            raise ValueError(f"linesearch must be one of {LINESEARCHES}, got {self.linesearch!r}")
        if self.linesearch_steps < 1:
            raise ValueError(f"linesearch_steps must be >= 1, got {self.linesearch_steps}")


class State(NamedTuple):
    """Optimisation state: a pytree, so it can be donated, scanned and vmapped."""

    image: jax.Array  # [H, W, 3], in [0, 1] for Adam; L-BFGS is clipped on the way out.
    opt_state: optax.OptState
    key: jax.Array


class Result(NamedTuple):
    """What ``stylize`` returns.

    Attributes:
      image: ``[H, W, 3]`` float32 RGB in [0, 1].
      history: ``{total, content, style, tv, alpha_norm}``, each ``[steps_done]``: the
        losses at the start of each step, unweighted except ``total``.
      final: the same losses at the returned image.
      initial: the same losses at the starting image.
      steps: the number of steps done (fewer than asked if interrupted).
      compile_seconds: time spent compiling.
      seconds_per_step: mean wall time of a step after compilation.
      interrupted: True if Ctrl-C stopped the run early.
    """

    image: np.ndarray
    history: dict[str, np.ndarray]
    final: dict[str, float]
    steps: int
    compile_seconds: float
    seconds_per_step: float
    interrupted: bool
    initial: dict[str, float]


def make_optimizer(config: Config) -> optax.GradientTransformationExtraArgs:
    """The Optax transformation ``config`` names."""
    if config.optimizer == "adam":
        return optax.adam(config.lr)
    if config.linesearch == "zoom":
        search = optax.scale_by_zoom_linesearch(
            max_linesearch_steps=config.linesearch_steps, initial_guess_strategy="one"
        )
    else:
        search = optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=config.linesearch_steps, store_grad=True
        )
    return optax.lbfgs(memory_size=config.lbfgs_memory, linesearch=search)


def initial_image(content: jax.Array, style: jax.Array, init: str, *, key: jax.Array) -> jax.Array:
    """The starting image, ``[H, W, 3]`` like ``content``.

    Args:
      content: ``[H, W, 3]``.
      style: ``[H', W', 3]``; resized (bilinear) to the content's shape for ``"style"``.
      init: ``"content"``, ``"noise"`` or ``"style"``.
      key: PRNG key for ``"noise"``.
    """
    if init == "content":
        return content
    if init == "noise":
        return jax.random.uniform(key, content.shape, jnp.float32)
    if init == "style":
        return jax.image.resize(style, content.shape, "linear", antialias=True)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def step(
    params: dict,
    targets: obj.Targets,
    state: State,
    *,
    config: Config,
    preprocessing: Preprocessing,
    optimizer: optax.GradientTransformationExtraArgs,
) -> tuple[State, jax.Array]:
    """One optimiser step: ``(state, [5] losses at the state's image)``.

    ``config``, ``preprocessing`` and ``optimizer`` are static. Adam draws fresh MMD
    sample positions every step; L-BFGS keeps one key for the whole run, since its line
    search and curvature pairs need one deterministic objective.
    """
    if config.optimizer == "adam":
        key, sub = jax.random.split(state.key)
    else:
        key = sub = state.key
    objective = functools.partial(
        obj.objective,
        params,
        targets=targets,
        config=config.loss,
        preprocessing=preprocessing,
        key=sub,
    )
    if config.optimizer == "adam":
        (value, terms), grad = jax.value_and_grad(objective, has_aux=True)(state.image)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.image)
        # Projected gradient descent: the image never leaves the valid range.
        image = jnp.clip(optax.apply_updates(state.image, updates), 0.0, 1.0)
    else:

        def value_fn(x):
            return objective(x)[0]

        # The line search already evaluated value and gradient at the accepted point;
        # reuse them instead of a second forward/backward pass.
        value, grad = optax.value_and_grad_from_state(value_fn)(state.image, state=state.opt_state)
        terms = obj.loss_terms(
            params,
            jax.lax.stop_gradient(state.image),
            targets,
            config.loss,
            preprocessing=preprocessing,
            key=sub,
        )
        updates, opt_state = optimizer.update(
            grad, state.opt_state, state.image, value=value, grad=grad, value_fn=value_fn
        )
        image = optax.apply_updates(state.image, updates)
    losses = jnp.stack([value, *terms]).astype(jnp.float32)
    return State(image, opt_state, key), losses


def init(
    params: dict,
    content: jax.Array,
    style: jax.Array,
    init_image: jax.Array | None,
    *,
    config: Config,
    preprocessing: Preprocessing,
    key: jax.Array,
) -> tuple[obj.Targets, State]:
    """Targets from the content and style images, and the starting state."""
    init_key, target_key, key = jax.random.split(key, 3)
    targets = obj.make_targets(
        params, content, style, config.loss, preprocessing=preprocessing, key=target_key
    )
    if init_image is None:
        image = initial_image(content, style, config.init, key=init_key)
    else:
        image = init_image.astype(jnp.float32)
    optimizer = make_optimizer(config)
    return targets, State(image, optimizer.init(image), key)


def _check_images(content, style, init_image=None):
    for name, x in (("content", content), ("style", style), ("init_image", init_image)):
        if x is None:
            continue
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"{name} must be [H, W, 3] RGB, got shape {x.shape}")
        if min(x.shape[:2]) < 16:
            raise ValueError(f"{name} is {x.shape[0]}x{x.shape[1]}; need at least 16 px a side")
    if init_image is not None and init_image.shape != content.shape:
        raise ValueError(f"init_image shape {init_image.shape} != content shape {content.shape}")


def transfer(
    params: dict,
    content: jax.Array,
    style: jax.Array,
    config: Config,
    *,
    preprocessing: Preprocessing,
    key: jax.Array,
    init_image: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Stylises one content image: pure, jittable and vmappable.

    ``config`` and ``preprocessing`` are static (hashable). To stylise a batch,
    ``jax.vmap`` over ``content`` (and ``key``); the compiled program runs every image
    in lock step.

    Args:
      params: VGG19 params.
      content: ``[H, W, 3]`` RGB in [0, 1].
      style: ``[H', W', 3]`` RGB in [0, 1].
      key: PRNG key (used by the noise init).
      init_image: optional ``[H, W, 3]`` start, overriding ``config.init``.

    Returns:
      ``(image [H, W, 3] in [0, 1], history [steps, 5])``; history columns are
      ``HISTORY_KEYS``, the losses before each step.
    """
    _check_images(content, style, init_image)
    targets, state = init(
        params, content, style, init_image, config=config, preprocessing=preprocessing, key=key
    )
    optimizer = make_optimizer(config)

    def body(state, _):
        return step(
            params, targets, state, config=config, preprocessing=preprocessing, optimizer=optimizer
        )

    state, history = jax.lax.scan(body, state, length=config.steps)
    return jnp.clip(state.image, 0.0, 1.0), history


def _final_losses(params, targets, image, *, config, preprocessing):
    image = jnp.clip(image, 0.0, 1.0)
    value, terms = obj.objective(params, image, targets, config.loss, preprocessing=preprocessing)
    return jnp.stack([value, *terms])


def available_memory_bytes(device: jax.Device | None = None) -> int | None:
    """Free memory on ``device``: MemAvailable on CPU, the allocator's headroom on GPU/TPU."""
    device = device or jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return None if limit is None else int(limit - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate_memory_bytes(shape: tuple[int, int], loss: obj.LossConfig) -> int:
    """A quick upper estimate of one step's memory at ``shape`` = (H, W), before compiling.

    Counts the float32 activations of every VGG layer up to the deepest one used, times
    four (pre-activation, output, and their gradients), plus the image-sized buffers of
    the optimiser. Tests check it against XLA's own figure for the compiled step.
    """
    h, w = shape
    used = loss.content_layers + loss.all_style_layers
    deepest = max(LAYERS.index(name) for name in used)
    elements = 0
    for name in LAYERS[: deepest + 1]:
        s = layer_stride(name)
        elements += (h // s) * (w // s) * loss.widths[int(name[4]) - 1]
    image = h * w * 3
    return 4 * (4 * elements + 64 * image)


def _raise_too_big(shape, need: int, have: int) -> None:
    h, w = shape[:2]
    # Activations, and so memory, grow with the pixel count.
    fit = int(max(h, w) * (0.9 * have / need) ** 0.5) // 16 * 16
    raise ValueError(
        f"{w}x{h} needs about {need / 2**30:.1f} GiB but {have / 2**30:.1f} GiB is free; "
        f"the largest size that fits is about --size {fit}"
    )


def check_memory_estimate(shape: tuple[int, int], loss: obj.LossConfig) -> None:
    """Raises ValueError, naming the largest size that fits, if ``shape`` surely won't fit.

    Cheap enough to call before resizing anything; ``stylize`` checks again with XLA's
    exact figure once the step is compiled.
    """
    need, have = estimate_memory_bytes(shape, loss), available_memory_bytes()
    if have is not None and need > 0.9 * have:
        _raise_too_big(shape, need, have)


def _check_compiled_memory(compiled, shape: tuple[int, ...]) -> None:
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports; then we just try.
        return
    if analysis is None:
        return
    need = (
        analysis.temp_size_in_bytes
        + analysis.argument_size_in_bytes
        + analysis.output_size_in_bytes
    )
    have = available_memory_bytes()
    if have is not None and need > 0.9 * have:
        _raise_too_big(shape, need, have)


def stylize(
    content: np.ndarray,
    style: np.ndarray,
    config: Config = Config(),
    *,
    weights=None,
    init_image: np.ndarray | None = None,
    callback: Callable[[int, np.ndarray, dict[str, float]], None] | None = None,
    chunk: int = 10,
    progress: bool = True,
) -> Result:
    """Stylises ``content`` with ``style``: the high-level API behind ``run.py``.

    Args:
      content: ``[H, W, 3]`` float RGB in [0, 1].
      style: ``[H', W', 3]`` float RGB in [0, 1].
      config: the run's settings.
      weights: a ``nst_jax.weights.Weights``; the verified default VGG19 if ``None``.
      init_image: optional ``[H, W, 3]`` start, overriding ``config.init``.
      callback: ``callback(step, image, losses)`` after every ``chunk`` steps, with
        the host copy of the image and the latest losses.
      chunk: steps between progress updates and callbacks (host syncs).
      progress: show a progress bar with the step, losses and iterations per second.

    Returns:
      A ``Result``. On Ctrl-C the image reached so far is returned with
      ``interrupted=True``.

    Raises:
      ValueError: bad shapes or settings, or a size too large for memory.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    content = np.asarray(content, np.float32)
    style = np.asarray(style, np.float32)
    init_image = None if init_image is None else np.asarray(init_image, np.float32)
    _check_images(content, style, init_image)
    if weights is None:
        weights = weights_lib.load(progress=progress)
    params, prep = weights.params, weights.preprocessing
    static = dict(config=config, preprocessing=prep)

    check_memory_estimate(content.shape[:2], config.loss)
    t0 = time.perf_counter()
    key = jax.random.key(config.seed)
    setup = jax.jit(functools.partial(init, **static))
    run = jax.jit(
        functools.partial(step, **static, optimizer=make_optimizer(config)), donate_argnums=(2,)
    )
    # Compile from shapes alone, so a size that cannot fit fails before any compute.
    targets, state = jax.eval_shape(setup, params, content, style, init_image, key=key)
    compiled = run.lower(params, targets, state).compile()
    _check_compiled_memory(compiled, content.shape)
    targets, state = setup(params, content, style, init_image, key=key)
    final_fn = jax.jit(functools.partial(_final_losses, **static))
    initial = np.asarray(final_fn(params, targets, state.image))
    compile_seconds = time.perf_counter() - t0

    bar = _progress_bar(config.steps, progress)
    alpha_on = config.loss.alpha_norm_weight > 0
    image = np.asarray(state.image)
    rows, done, interrupted, run_seconds = [], 0, False, 0.0
    try:
        while done < config.steps:
            n = min(chunk, config.steps - done)
            t = time.perf_counter()
            pending = []
            for _ in range(n):
                state, losses = compiled(params, targets, state)
                pending.append(losses)
            hist = np.stack(jax.device_get(pending))  # Waits for the chunk to finish.
            image = np.asarray(state.image)
            run_seconds += time.perf_counter() - t
            rows.append(hist)
            done += n
            latest = dict(zip(HISTORY_KEYS, map(float, hist[-1]), strict=True))
            shown = {k: v for k, v in latest.items() if k != "alpha_norm" or alpha_on}
            bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            bar.update(n)  # Redraws with the new losses.
            if callback is not None:
                callback(done, np.clip(image, 0.0, 1.0), latest)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    image = np.clip(image, 0.0, 1.0)
    final = np.asarray(final_fn(params, targets, image)) if not interrupted else None
    history = np.concatenate(rows) if rows else np.zeros((0, len(HISTORY_KEYS)), np.float32)
    if final is None:  # After Ctrl-C, skip more compute; report the last step's losses.
        final = history[-1] if len(history) else initial
    return Result(
        image=image,
        history={k: history[:, i] for i, k in enumerate(HISTORY_KEYS)},
        final=dict(zip(HISTORY_KEYS, map(float, final), strict=True)),
        steps=done,
        compile_seconds=compile_seconds,
        seconds_per_step=run_seconds / done if done else float("nan"),
        interrupted=interrupted,
        initial=dict(zip(HISTORY_KEYS, map(float, initial), strict=True)),
    )


def texture_config(config: Config) -> Config:
    """``config`` for texture synthesis: no content term, start from noise."""
    loss = dataclasses.replace(config.loss, content_weight=0.0, content_layers=())
    return dataclasses.replace(config, loss=loss, init="noise")


def synthesize(
    style: np.ndarray, shape: tuple[int, int], config: Config = Config(), **kwargs
) -> Result:
    """Texture synthesis (Gatys et al. 2015): style statistics alone, from noise.

    Args:
      style: ``[H', W', 3]`` float RGB in [0, 1].
      shape: ``(H, W)`` of the texture; any size, independent of the style's.
      config: as for ``stylize``; its content term is dropped and the init is noise.
      **kwargs: passed to ``stylize`` (``weights``, ``callback``, ``progress``, ...).

    Returns:
      A ``Result``; its ``content`` losses are zero.
    """
    canvas = np.zeros((*shape, 3), np.float32)
    return stylize(canvas, style, texture_config(config), **kwargs)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc="stylize",
        unit="step",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )
