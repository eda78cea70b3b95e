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
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import conv, memory
from nst_jax import image as image_lib
from nst_jax import objective as obj
from nst_jax import weights as weights_lib
from nst_jax.image import Preprocessing

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise", "style")
LINESEARCHES = ("zoom", "backtracking")
PRESERVE_COLOR = ("none", "luminance", "histogram")
CONVOLUTIONS = ("auto", *conv.ALGORITHMS)
# "auto" uses Winograd from this short side on: below it, the seconds Winograd adds to
# compiling outweigh what a few hundred steps save.
WINOGRAD_MIN_SIDE = 128
HISTORY_KEYS = ("total", *obj.Terms._fields)

# XLA:CPU lowers convolutions to YNNPACK by default; on the CPUs measured so far its
# Eigen convolutions run this network's step 10-20% faster (``benchmarks/step.py``
# times both). LLVM's expensive passes buy nothing for a step whose time is in library
# convolutions and matmuls, and skipping them compiles it about 1.3x faster. Set per
# program, so nothing else in the process is affected.
CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "",
    "xla_llvm_disable_expensive_passes": True,
}


def jit(fn: Callable, **kwargs) -> Callable:
    """``jax.jit`` with the compiler options this package's programs run fastest under."""
    options = CPU_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(fn, compiler_options=options, **kwargs)


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
      preserve_color: keep the content's colours (Gatys et al. 2017): ``"luminance"``
        transfers on luminance only and puts the content's chroma back;
        ``"histogram"`` first matches each style's colour histogram to the content's.
      convolution: how VGG's convolutions and their image gradients run (``conv.py``):
        ``"winograd"``, ``"direct"``, or ``"auto"``: Winograd on CPU for images whose
        short side is at least ``WINOGRAD_MIN_SIDE``, where it makes a step 1.3-1.5x
        faster; direct for smaller ones (Winograd takes a few seconds longer to compile),
        on accelerators (their convolution libraries pick their own algorithms), or
        where only direct convolutions fit in the free memory. ``loss.remat``'s strips
        run either. Results agree to float32 rounding.
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
    preserve_color: str = "none"
    convolution: str = "auto"

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
        if self.preserve_color not in PRESERVE_COLOR:
            raise ValueError(
                f"preserve_color must be one of {PRESERVE_COLOR}, got {self.preserve_color!r}"
            )
        if self.linesearch_steps < 1:
            raise ValueError(f"linesearch_steps must be >= 1, got {self.linesearch_steps}")
        if self.convolution not in CONVOLUTIONS:
            raise ValueError(f"convolution must be one of {CONVOLUTIONS}, got {self.convolution!r}")

    def convolution_algorithm(self, shape: tuple[int, int], batch: int = 1) -> str:
        """The algorithm a run of ``batch`` images at ``shape`` = (H, W) uses:
        ``convolution``, with ``"auto"`` resolved (see the attribute's docs)."""
        if self.convolution != "auto":
            return self.convolution
        cpu = jax.default_backend() == "cpu"
        if not cpu or min(shape) < WINOGRAD_MIN_SIDE:
            return "direct"
        # Where only direct convolutions fit in memory, use them rather than fail.
        need = batch * memory.estimate_bytes(shape, self.loss, convolution="winograd")
        return "winograd" if memory.fits(need) else "direct"


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
    weights: obj.Terms,
    *,
    config: Config,
    preprocessing: Preprocessing,
    optimizer: optax.GradientTransformationExtraArgs,
) -> tuple[State, jax.Array]:
    """One optimiser step: ``(state, [5] losses at the state's image)``.

    ``weights`` are the term weights ``(α, β, λ_tv, λ_α)`` as scalars, traced so that a
    vmapped run can sweep them. ``config``, ``preprocessing`` and ``optimizer`` are
    static. Adam draws fresh MMD sample positions every step; L-BFGS keeps one key for
    the whole run, since its line search and curvature pairs need one deterministic
    objective.
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
        weights=weights,
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
    style: jax.Array | tuple[jax.Array, ...],
    init_image: jax.Array | None,
    blend: jax.Array | None = None,
    masks: tuple[jax.Array, tuple] | None = None,
    *,
    config: Config,
    preprocessing: Preprocessing,
    key: jax.Array,
) -> tuple[obj.Targets, State]:
    """Targets from the content and style images, and the starting state.

    ``style`` is one image or a tuple of them, mixed by ``blend`` ``[S]`` or placed by
    ``masks = (content_masks [S, H, W], style_masks)`` (see ``objective.make_targets``).
    """
    init_key, target_key, key = jax.random.split(key, 3)
    content_masks, style_masks = masks if masks is not None else (None, None)
    targets = obj.make_targets(
        params,
        content,
        style,
        config.loss,
        preprocessing=preprocessing,
        key=target_key,
        blend=blend,
        content_masks=content_masks,
        style_masks=style_masks,
    )
    if init_image is None:
        first = style[0] if isinstance(style, (tuple, list)) else style
        image = initial_image(content, first, config.init, key=init_key)
    else:
        image = init_image.astype(jnp.float32)
    optimizer = make_optimizer(config)
    return targets, State(image, optimizer.init(image), key)


def _styles(style) -> tuple[np.ndarray, ...] | np.ndarray:
    """One style array, or a tuple of them (float32)."""
    if isinstance(style, (list, tuple)):
        if not style:
            raise ValueError("no style images")
        return tuple(np.asarray(s, np.float32) for s in style)
    return np.asarray(style, np.float32)


def _check_images(content, style, init_image=None):
    styles = style if isinstance(style, (list, tuple)) else (style,)
    named = [("content", content), *(("style", s) for s in styles), ("init_image", init_image)]
    for name, x in named:
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
    weights: obj.Terms | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Stylises one content image: pure, jittable and vmappable.

    ``config`` and ``preprocessing`` are static (hashable). To stylise a batch,
    ``jax.vmap`` over ``content``, ``key`` or ``weights``; the compiled program runs
    every image in lock step.

    It runs whatever convolutions ``params`` carry: for the speed of ``stylize``, pass
    ``conv.prepare(params, config.convolution_algorithm(shape))`` and compile with
    ``optimize.jit``. Plain parameters give the same result, more slowly.

    Args:
      params: VGG19 params, plain or from ``conv.prepare``.
      content: ``[H, W, 3]`` RGB in [0, 1].
      style: ``[H', W', 3]`` RGB in [0, 1].
      key: PRNG key (used by the noise init).
      init_image: optional ``[H, W, 3]`` start, overriding ``config.init``.
      weights: term weights ``(α, β, λ_tv, λ_α)``; ``config.loss.term_weights`` if None.

    Returns:
      ``(image [H, W, 3] in [0, 1], history [steps, 5])``; history columns are
      ``HISTORY_KEYS``, the losses before each step.
    """
    _check_images(content, style, init_image)
    targets, state = init(
        params, content, style, init_image, config=config, preprocessing=preprocessing, key=key
    )
    weights = _term_weights(config, weights)
    optimizer = make_optimizer(config)

    def body(state, _):
        return step(
            params,
            targets,
            state,
            weights,
            config=config,
            preprocessing=preprocessing,
            optimizer=optimizer,
        )

    state, history = jax.lax.scan(body, state, length=config.steps)
    return jnp.clip(state.image, 0.0, 1.0), history


def _term_weights(config: Config, weights: obj.Terms | None) -> obj.Terms:
    weights = config.loss.term_weights if weights is None else weights
    return obj.Terms(*(jnp.asarray(w, jnp.float32) for w in weights))


def lower_step(
    params: dict,
    shape: tuple[int, int],
    config: Config,
    *,
    preprocessing,
    platforms: Sequence[str] | None = None,
):
    """The step ``stylize`` runs for one ``shape`` = (H, W) image, lowered from shapes
    alone: ``params`` may be ``jax.ShapeDtypeStruct``s, and a style of the content's
    shape stands in (the step holds statistics, whose size does not depend on the
    style's). ``platforms``, e.g. ``("cuda",)``, lowers it for other backends than this
    machine's. Returns a ``jax.stages.Lowered``.
    """
    static = dict(config=config, preprocessing=preprocessing)
    image = jax.ShapeDtypeStruct((*shape, 3), jnp.float32)
    setup = functools.partial(init, **static)
    targets, state = jax.eval_shape(setup, params, image, image, None, key=jax.random.key(0))
    run = jit(
        functools.partial(step, **static, optimizer=make_optimizer(config)), donate_argnums=(2,)
    )
    traced = run.trace(params, targets, state, _term_weights(config, None))
    return traced.lower(lowering_platforms=tuple(platforms) if platforms else None)


def step_memory(params: dict, shape: tuple[int, int], config: Config, *, preprocessing):
    """XLA's memory analysis of the step ``stylize`` runs for one ``shape`` = (H, W)
    image, compiled from shapes alone (``lower_step``): no memory is needed for the
    activations, so any size can be asked about. Returns ``compiled.memory_analysis()``,
    None where a backend has none.
    """
    lowered = lower_step(params, shape, config, preprocessing=preprocessing)
    return lowered.compile().memory_analysis()


def _final_losses(params, targets, image, weights, *, config, preprocessing):
    image = jnp.clip(image, 0.0, 1.0)
    value, terms = obj.objective(
        params, image, targets, config.loss, preprocessing=preprocessing, weights=weights
    )
    return jnp.stack([value, *terms])


def stylize(
    content: np.ndarray,
    style: np.ndarray,
    config: Config = Config(),
    *,
    weights=None,
    init_image: np.ndarray | None = None,
    content_masks: np.ndarray | None = None,
    style_masks: Sequence[np.ndarray | None] | None = None,
    callback: Callable[[int, np.ndarray, dict[str, float]], None] | None = None,
    chunk: int = 10,
    progress: bool | str = True,
) -> Result:
    """Stylises ``content`` with ``style``: the high-level API behind ``run.py``.

    Args:
      content: ``[H, W, 3]`` float RGB in [0, 1].
      style: ``[H', W', 3]`` float RGB in [0, 1], or a list of ``S`` styles (any sizes),
        mixed by ``config.loss.style_blend`` or placed by ``content_masks``.
      config: the run's settings.
      weights: a ``nst_jax.weights.Weights``; the verified default VGG19 if ``None``.
      init_image: optional ``[H, W, 3]`` start, overriding ``config.init``.
      content_masks: optional ``[S, H, W]`` in [0, 1]: style ``i`` applies where mask
        ``i`` is on (Gatys et al. 2017).
      style_masks: optional list of ``S`` masks ``[H'_i, W'_i]`` (or None), restricting
        which part of each style image counts.
      callback: ``callback(step, image, losses)`` after every ``chunk`` steps, with
        the host copy of the image and the latest losses.
      chunk: steps between progress updates and callbacks (host syncs).
      progress: show a progress bar with the step, losses and iterations per second; a
        string also names the bar (the default name is "stylize").

    Returns:
      A ``Result``. On Ctrl-C the image reached so far is returned with
      ``interrupted=True``.

    Raises:
      ValueError: bad shapes or settings, or a size too large for memory.
    """
    content = np.asarray(content, np.float32)
    init_image = None if init_image is None else np.asarray(init_image, np.float32)
    return _drive(
        content[None],
        style,
        None if init_image is None else init_image[None],
        jax.random.key(config.seed)[None],
        _term_weights(config, None),
        config,
        content_masks=content_masks,
        style_masks=style_masks,
        batched=False,
        weights=weights,
        callback=callback,
        chunk=chunk,
        progress=progress,
    )


def _color_inputs(content, style, init_image, config):
    """Colour preservation, before: grey luminance images, or recoloured styles.

    ``content`` ``[B, H, W, 3]`` shares one image, ``content[0]``, whose colours count.
    """
    styles = style if isinstance(style, tuple) else (style,)
    if config.preserve_color == "luminance":
        styles = tuple(image_lib.match_luminance(s, content[0]) for s in styles)
        if init_image is not None:
            init_image = image_lib.luminance_image(init_image)
        content = image_lib.luminance_image(content)
    elif config.preserve_color == "histogram":
        styles = tuple(image_lib.match_color(s, content[0]) for s in styles)
    return content, styles if isinstance(style, tuple) else styles[0], init_image


def _color_callback(callback, content: np.ndarray, config: Config):
    """``callback`` seeing images in colour when the run works on luminance."""
    if callback is None or config.preserve_color != "luminance":
        return callback
    return lambda step, image, losses: callback(
        step, image_lib.with_content_color(image, content), losses
    )


def _color_output(result: Result, content: np.ndarray, config: Config) -> Result:
    """Colour preservation, after: the content's chroma under the output's luminance."""
    if config.preserve_color != "luminance":
        return result
    return result._replace(image=image_lib.with_content_color(result.image, content))


def stylize_batch(
    content: np.ndarray,
    style: np.ndarray,
    config: Config = Config(),
    *,
    seeds: Sequence[int] | None = None,
    term_weights: obj.Terms | None = None,
    blends: np.ndarray | None = None,
    weights=None,
    init_images: np.ndarray | None = None,
    content_masks: np.ndarray | None = None,
    style_masks: Sequence[np.ndarray | None] | None = None,
    callback: Callable[[int, np.ndarray, dict[str, np.ndarray]], None] | None = None,
    chunk: int = 10,
    progress: bool | str = True,
) -> Result:
    """``B`` stylisations in one compiled program, ``jax.vmap``-ed over the batch.

    Whatever has a batch axis varies across the batch: the contents, the seeds (noise
    inits, MMD samples), the term weights (α, β, λ_tv, λ_α), e.g. a sweep over α/β
    ratios or TV weights, and the style mix weights. The rest, masks included, is
    shared. Element ``b`` equals
    ``stylize(content[b], style, config_b)`` with ``config_b`` its seed and weights.

    Args:
      content: ``[B, H, W, 3]``, or ``[H, W, 3]`` shared by the whole batch.
      style: ``[H', W', 3]``.
      config: shared settings; its seed and weights are the defaults per element.
      seeds: ``B`` PRNG seeds; default ``config.seed + b``.
      term_weights: ``Terms`` whose fields are scalars or ``[B]`` arrays.
      blends: optional ``[B, S]`` style mix weights, one mix per element.
      init_images: optional ``[B, H, W, 3]`` starts.
      callback: as for ``stylize``, with ``[B, H, W, 3]`` images and ``[B]`` losses.

    Returns:
      A ``Result`` with a leading batch axis: ``image`` ``[B, H, W, 3]``, ``history``
      values ``[steps, B]``, ``final``/``initial`` values ``[B]`` arrays.
    """
    content = np.asarray(content, np.float32)
    if config.preserve_color != "none" and content.ndim != 3:
        raise ValueError("preserve_color needs one content shared by the batch")
    init_images = None if init_images is None else np.asarray(init_images, np.float32)
    tw = _term_weights(config, term_weights)
    sizes = {int(np.shape(w)[0]) for w in tw if np.ndim(w) == 1}
    if content.ndim == 4:
        sizes.add(content.shape[0])
    if seeds is not None:
        sizes.add(len(seeds))
    if init_images is not None:
        sizes.add(len(init_images))
    if blends is not None:
        blends = np.asarray(blends, np.float32)
        sizes.add(blends.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"batch sizes disagree: {sorted(sizes)}")
    if not sizes or min(sizes) < 1:
        raise ValueError(
            "stylize_batch needs a batch axis: [B, H, W, 3] contents, seeds or weights"
        )
    (b,) = sizes
    if content.ndim == 3:
        content = np.broadcast_to(content, (b, *content.shape))
    seeds = [config.seed + i for i in range(b)] if seeds is None else list(seeds)
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    tw = obj.Terms(*(jnp.broadcast_to(w, (b,)) for w in tw))
    return _drive(
        content,
        style,
        init_images,
        keys,
        tw,
        config,
        blend=blends,
        content_masks=content_masks,
        style_masks=style_masks,
        batched=True,
        weights=weights,
        callback=callback,
        chunk=chunk,
        progress=progress,
    )


def _masks(content_masks, style_masks, style):
    """``(content_masks, style_masks)`` checked, style masks resized to their styles."""
    if content_masks is None and style_masks is None:
        return None
    if content_masks is None:
        raise ValueError("style masks need content masks: one region of the content per style")
    content_masks = np.asarray(content_masks, np.float32)
    if content_masks.min() < 0 or content_masks.max() > 1:
        raise ValueError("masks must lie in [0, 1]")
    if style_masks is not None:
        styles = style if isinstance(style, tuple) else (style,)
        if len(style_masks) != len(styles):
            raise ValueError(f"{len(style_masks)} style masks for {len(styles)} styles")
        style_masks = tuple(
            None if m is None else image_lib.resize_mask(m, s.shape[:2])
            for m, s in zip(style_masks, styles, strict=True)
        )
    return content_masks, style_masks


def _drive(
    content,
    style,
    init_image,
    keys,
    term_weights,
    config,
    *,
    blend=None,
    content_masks=None,
    style_masks=None,
    batched,
    weights,
    callback,
    chunk,
    progress,
) -> Result:
    """The host loop behind ``stylize`` and ``stylize_batch``.

    ``content`` ``[B, H, W, 3]``, ``init_image`` ``[B, H, W, 3]`` or None, ``keys``
    ``[B]``; ``term_weights`` scalars (``batched=False``, ``B == 1``) or ``[B]`` arrays.
    Unbatched runs squeeze the batch axis away instead of vmapping a batch of one, so
    the single-image program is exactly the plain step. Colour preservation wraps the
    run here, once for both callers.
    """
    original = content[0]
    content, style, init_image = _color_inputs(content, _styles(style), init_image, config)
    masks = _masks(content_masks, style_masks, style)
    callback = _color_callback(callback, original, config)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for i in range(content.shape[0]):
        _check_images(content[i], style, None if init_image is None else init_image[i])
    if weights is None:
        weights = weights_lib.load(progress=progress)
    b = content.shape[0]
    algorithm = config.convolution_algorithm(content.shape[1:3], b)
    params = conv.prepare(weights.params, algorithm)
    prep = weights.preprocessing
    static = dict(config=config, preprocessing=prep)

    memory.check_estimate(content.shape[1:3], config.loss, b, convolution=algorithm)
    t0 = time.perf_counter()
    init_fn = functools.partial(init, **static)
    step_fn = functools.partial(step, **static, optimizer=make_optimizer(config))
    final_fn = functools.partial(_final_losses, **static)
    if batched:
        blend_axis = None if blend is None else 0
        init_fn = jax.vmap(init_fn, in_axes=(None, 0, None, 0, blend_axis, None))
        step_fn = jax.vmap(step_fn, in_axes=(None, 0, 0, 0))
        final_fn = jax.vmap(final_fn, in_axes=(None, 0, 0, 0))
    else:
        content, keys = content[0], keys[0]
        init_image = None if init_image is None else init_image[0]
    setup = jit(init_fn)
    run = jit(step_fn, donate_argnums=(2,))
    # Compile from shapes alone, so a size that cannot fit fails before any compute.
    targets, state = jax.eval_shape(
        setup, params, content, style, init_image, blend, masks, key=keys
    )
    compiled = run.lower(params, targets, state, term_weights).compile()
    lean = memory.lean_bytes(content.shape[-3:-1], config.loss, b)
    memory.check_compiled(compiled, content.shape[-3:-1], b, lean=lean)
    targets, state = setup(params, content, style, init_image, blend, masks, key=keys)
    final_fn = jit(final_fn)
    initial = np.asarray(final_fn(params, targets, state.image, term_weights))
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
                state, losses = compiled(params, targets, state, term_weights)
                pending.append(losses)
            hist = np.stack(jax.device_get(pending))  # Waits for the chunk to finish.
            image = np.asarray(state.image)
            run_seconds += time.perf_counter() - t
            rows.append(hist)
            done += n
            latest = dict(zip(HISTORY_KEYS, hist[-1].T, strict=True))
            shown = {k: v for k, v in latest.items() if k != "alpha_norm" or alpha_on}
            bar.set_postfix({k: f"{np.mean(v):.4g}" for k, v in shown.items()}, refresh=False)
            bar.update(n)  # Redraws with the new losses.
            if callback is not None:
                latest = {k: v if batched else float(v) for k, v in latest.items()}
                callback(done, np.clip(image, 0.0, 1.0), latest)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    image = np.clip(image, 0.0, 1.0)
    final = None if interrupted else np.asarray(final_fn(params, targets, image, term_weights))
    shape = (0, b, len(HISTORY_KEYS)) if batched else (0, len(HISTORY_KEYS))
    history = np.concatenate(rows) if rows else np.zeros(shape, np.float32)
    if final is None:  # After Ctrl-C, skip more compute; report the last step's losses.
        final = history[-1] if len(history) else initial

    def by_key(x):  # [..., 5] -> {key: [...]}, floats when unbatched.
        out = dict(zip(HISTORY_KEYS, np.moveaxis(x, -1, 0), strict=True))
        return out if batched else {k: float(v) for k, v in out.items()}

    result = Result(
        image=image,
        history=dict(zip(HISTORY_KEYS, np.moveaxis(history, -1, 0), strict=True)),
        final=by_key(final),
        steps=done,
        compile_seconds=compile_seconds,
        seconds_per_step=run_seconds / done if done else float("nan"),
        interrupted=interrupted,
        initial=by_key(initial),
    )
    return _color_output(result, original, config)


def pyramid_sizes(size: int, *, levels: int = 1, start_size: int = 0) -> list[int]:
    """Longest sides of a coarse-to-fine pyramid, each twice the last, ending at ``size``.

    ``start_size`` (if set) wins over ``levels``: the pyramid starts at the smallest
    ``size / 2^k`` that is at least ``start_size``.
    """
    if size < 16 or levels < 1 or start_size < 0:
        raise ValueError(f"bad pyramid: size {size}, levels {levels}, start_size {start_size}")
    if start_size:
        if start_size > size:
            raise ValueError(f"start_size {start_size} is above the output size {size}")
        levels = 1
        while size / 2**levels >= start_size:
            levels += 1
    sizes = [round(size / 2**k) for k in reversed(range(levels))]
    if sizes[0] < 16:
        raise ValueError(f"{levels} pyramid levels from {size} px go below 16 px")
    return sizes


def stylize_pyramid(
    content: np.ndarray,
    style: np.ndarray | Sequence[np.ndarray],
    config: Config = Config(),
    *,
    sizes: Sequence[int],
    level_steps: Sequence[int] | None = None,
    style_scale: float | Sequence[float] = 1.0,
    content_masks: np.ndarray | None = None,
    style_masks: Sequence[np.ndarray | None] | None = None,
    init_image: np.ndarray | None = None,
    callback: Callable[[int, int, np.ndarray, dict[str, float]], None] | None = None,
    **kwargs,
) -> list[Result]:
    """Coarse to fine (Gatys et al. 2017, sec. 6): optimise at a low resolution, upsample,
    continue. Coarse levels are cheap and fix the large-scale structure, so the final
    size needs fewer steps.

    Every level resizes the full-resolution inputs: the content to the level's longest
    side, each style to ``style_scale`` times it (so the style's scale relative to the
    output stays the same), masks like the content. Level 0 starts as ``config.init``
    says; each later level starts from the previous result, upsampled.

    Args:
      content: ``[H, W, 3]`` at any resolution at least the last size.
      style: ``[H', W', 3]`` or a list of them.
      config: settings shared by every level; ``config.steps`` per level unless
        ``level_steps`` gives one count per level.
      sizes: longest side per level, coarse to fine (``pyramid_sizes``).
      style_scale: one scale, or one per style.
      content_masks: ``[S, H, W]`` at the content's resolution.
      callback: ``callback(level, step, image, losses)``.
      **kwargs: passed to ``stylize`` (``weights``, ``chunk``, ``progress``).

    Returns:
      One ``Result`` per level run; the last one is the output. After Ctrl-C the list
      ends with the interrupted level.
    """
    styles = _styles(style)
    styles = styles if isinstance(styles, tuple) else (styles,)
    scales = [float(style_scale)] * len(styles) if np.ndim(style_scale) == 0 else list(style_scale)
    if len(scales) != len(styles) or any(not v > 0 for v in scales):
        raise ValueError(f"need one positive style scale per style, got {scales}")
    steps = [config.steps] * len(sizes) if level_steps is None else list(level_steps)
    if len(steps) != len(sizes):
        raise ValueError(f"{len(steps)} step counts for {len(sizes)} pyramid levels")
    progress = kwargs.pop("progress", True)
    results: list[Result] = []
    for level, (size, n) in enumerate(zip(sizes, steps, strict=True)):
        shape = image_lib.resized_shape(content.shape[:2], size)
        level_styles = [
            image_lib.resize_longest(s, max(16, round(k * size)))
            for s, k in zip(styles, scales, strict=True)
        ]
        start = results[-1].image if results else init_image
        masks = None
        if content_masks is not None:
            masks = np.stack([image_lib.resize_mask(m, shape) for m in content_masks])
        level_callback = None if callback is None else functools.partial(callback, level)
        label = f"level {level + 1}/{len(sizes)}, {shape[1]}x{shape[0]}"
        result = stylize(
            image_lib.resize(content, shape),
            level_styles if len(level_styles) > 1 else level_styles[0],
            dataclasses.replace(config, steps=n),
            init_image=None if start is None else image_lib.resize(start, shape),
            content_masks=masks,
            style_masks=style_masks,
            callback=level_callback,
            progress=progress_label(progress, label),
            **kwargs,
        )
        results.append(result)
        if result.interrupted:
            break
    return results


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
    kwargs["progress"] = progress_label(kwargs.get("progress", True), "texture")
    return stylize(canvas, style, texture_config(config), **kwargs)


# Mahendran & Vedaldi's regularisers, in this package's units (pixels in [0, 1],
# normalised reconstruction error): chosen on the demo image, see docs/figures.py.
INVERSION_LOSS = obj.LossConfig(
    content_weight=1.0,
    content_loss="normalized",
    style_weight=0.0,
    tv_weight=1.0,
    tv_beta=2.0,
    alpha_norm_weight=10.0,
    alpha=6.0,
)


def invert_config(config: Config, layer: str) -> Config:
    """``config`` for feature inversion from ``layer``: normalised content loss, no style,
    start from noise. Its TV and α-norm settings are kept; ``INVERSION_LOSS`` has good ones.
    """
    loss = dataclasses.replace(
        config.loss,
        content_layers=(layer,),
        content_loss="normalized",
        content_weight=1.0,
        style_weight=0.0,
    )
    return dataclasses.replace(config, loss=loss, init="noise")


def invert(
    image: np.ndarray,
    layer: str,
    config: Config = Config(loss=INVERSION_LOSS),
    *,
    seeds: Sequence[int] = (0,),
    **kwargs,
) -> Result:
    """Feature inversion (Mahendran & Vedaldi 2015): an image whose ``layer`` activations
    match ``image``'s, found from noise.

    ``x* = argmin ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² + λ_α ‖x‖_α^α + λ_β TV_β(x)``, with λ_β, β, λ_α
    and α from ``config.loss`` (``tv_weight``, ``tv_beta``, ``alpha_norm_weight``,
    ``alpha``). Every seed gives one reconstruction, all in one vmapped program; deep
    layers show how much of the image the representation leaves free.

    Args:
      image: ``[H, W, 3]`` float RGB in [0, 1], the image to reconstruct.
      layer: a VGG19 layer name.
      config: settings; see ``invert_config`` for what inversion overrides.
      seeds: one PRNG seed per reconstruction (the noise it starts from).
      **kwargs: passed to ``stylize_batch`` (``weights``, ``term_weights``, ...).

    Returns:
      A batched ``Result``: ``image`` ``[len(seeds), H, W, 3]``.
    """
    kwargs["progress"] = progress_label(kwargs.get("progress", True), f"invert {layer}")
    return stylize_batch(image, image, invert_config(config, layer), seeds=seeds, **kwargs)


def progress_label(progress: bool | str, label: str) -> bool | str:
    """The progress setting, named ``label`` unless it is off or already named."""
    return label if progress is True else progress


def _progress_bar(total: int, progress: bool | str):
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        desc=progress if isinstance(progress, str) else "stylize",
        unit="step",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
