"""Stylising arrays: one content (``stylize``) or a vmapped batch (``stylize_batch``).

Both check their inputs, preserve colour if asked (outside the loss), decide the run's
convolution algorithm and check its memory once (``policy``), and hand a batch to the
host driver: a single run is a batch of one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import color
from nst_jax.config import Config
from nst_jax.image import is_float, resize_mask
from nst_jax.nets.network import MIN_SIDE, Network
from nst_jax.nets.vgg import widths_of
from nst_jax.nets.weights import Weights, load_weights
from nst_jax.objective import Terms
from nst_jax.solve import driver
from nst_jax.solve.driver import Result
from nst_jax.solve.placement import Placement
from nst_jax.solve.solver import term_weights_of
from nst_jax.tasks import policy


def _styles(style) -> tuple[np.ndarray, ...]:
    """One style array, or a list of them, as a tuple of float32 arrays."""
    styles = tuple(style) if isinstance(style, (list, tuple)) else (style,)
    if not styles:
        raise ValueError("no style images")
    return tuple(pixels("style", s) for s in styles)


def pixels(name: str, x) -> np.ndarray | None:
    """``x`` (NumPy, JAX or nested lists) as float32; None stays None.

    Raises:
      ValueError: integer pixels, whose 0-255 would read as 255 times too bright.
    """
    if x is None:
        return None
    a = np.asarray(x)
    if not is_float(a.dtype):
        raise ValueError(
            f"{name} must be float pixels in [0, 1], got {a.dtype} (divide 8-bit pixels by 255)"
        )
    return a.astype(np.float32, copy=False)


def check_image(name: str, x: np.ndarray | None) -> None:
    """Raises ValueError unless ``x`` is an ``[H, W, 3]`` image in [0, 1] of at least
    ``MIN_SIDE`` pixels a side; ``name`` says which input it is. Non-finite pixels pass
    here: the run reports them as its failure."""
    if x is None:
        return
    check_shape(name, x.shape)
    # Another scale (0-255, -1 to 1, centred on 0) is refused; a resampler's overshoot,
    # a few hundredths, is not.
    finite = x[np.isfinite(x)]
    if finite.size and (finite.min() < -0.25 or finite.max() > 1.25):
        raise ValueError(
            f"{name} must be in [0, 1], got values from {finite.min():.4g} to {finite.max():.4g}"
        )


def check_shape(name: str, shape: tuple[int, ...]) -> None:
    """``check_image``'s test of the shape alone: for an image that is not made yet (a
    blank canvas, whose pixels need not be)."""
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"{name} must be [H, W, 3] RGB, got shape {tuple(shape)}")
    if min(shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"{name} is {shape[1]}x{shape[0]}; need at least {MIN_SIDE} px a side (a larger"
            " size, or a less elongated image)"
        )


def check_batch_weights(term_weights: Terms, blends: np.ndarray | None, config, styles: int):
    """Refuses term weights or style mixes that are negative or not finite, a mix row of
    all zeros, and a sweep over a term the config turns off (it would do nothing)."""
    loss = config.loss
    off = {
        "content": not loss.content_layers,
        "style": not loss.style_on,
        "alpha_norm": not loss.alpha_norm_weight,
    }
    for field, w in zip(Terms._fields, term_weights, strict=True):
        w = np.asarray(w, np.float64)
        if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
            raise ValueError(f"term weights must be finite and >= 0; {field}: {w.tolist()}")
        if off.get(field) and w.ndim == 1 and np.ptp(w) > 0:  # A sweep of nothing.
            raise ValueError(
                f"term weights sweep {field}, but the config turns that term off "
                f"({field}_weight 0, or no layers); give the config a non-zero weight"
            )
    if blends is None:
        return
    if blends.ndim != 2 or blends.shape[1] != styles:
        raise ValueError(f"blends must be [B, {styles}] (one weight per style), got {blends.shape}")
    if not (np.all(np.isfinite(blends)) and np.all(blends >= 0)) or np.any(blends.sum(1) <= 0):
        raise ValueError(
            f"style mixes must be >= 0, each with a positive sum; got {blends.tolist()}"
        )


def _masks(content_masks, style_masks, styles, shape):
    """``(content_masks [S, H, W], style_masks)`` checked, style masks at their styles'
    sizes; or None without masks."""
    if content_masks is None and style_masks is None:
        return None
    if content_masks is None:
        raise ValueError("style masks need content masks: one region of the content per style")
    content_masks = np.asarray(content_masks, np.float32)
    if content_masks.shape != (len(styles), *shape):
        raise ValueError(
            f"content masks {content_masks.shape} must be [{len(styles)}, H, W] for "
            f"{len(styles)} styles and a {shape[1]}x{shape[0]} content"
        )
    if content_masks.min() < 0 or content_masks.max() > 1:
        raise ValueError("masks must lie in [0, 1]")
    if style_masks is not None:
        if len(style_masks) != len(styles):
            raise ValueError(f"{len(style_masks)} style masks for {len(styles)} styles")
        style_masks = tuple(
            None if m is None else resize_mask(m, s.shape[:2])
            for m, s in zip(style_masks, styles, strict=True)
        )
        for i, m in enumerate(style_masks):
            if m is not None and float(np.sum(m)) < 1.0:  # Its statistics would be zeros.
                raise ValueError(f"style mask {i + 1} is empty: it selects none of its style")
    return content_masks, style_masks


def _color_inputs(content, styles, init_images, config):
    """Colour preservation, before: grey luminance images, or recoloured styles.
    ``content`` ``[B, H, W, 3]`` shares one image, ``content[0]``, whose colours count."""
    if config.preserve_color == "luminance":
        styles = tuple(color.match_luminance(s, content[0]) for s in styles)
        if init_images is not None:
            init_images = color.luminance_image(init_images)
        content = color.luminance_image(content)
    elif config.preserve_color == "histogram":
        styles = tuple(color.match_color(s, content[0]) for s in styles)
    return content, styles, init_images


def run(
    content: np.ndarray,
    styles: tuple[np.ndarray, ...],
    config: Config,
    *,
    seeds: Sequence[int],
    term_weights: Terms,
    weights: Weights | None,
    init_images: np.ndarray | None,
    blends: np.ndarray | None,
    content_masks,
    style_masks,
    callback: driver.Callback | None,
    chunk: int,
    progress: bool | str,
    plan: policy.Plan | None = None,
    network: Network | None = None,
    placement: Placement | None = None,
) -> Result:
    """What every task runs: ``B`` contents ``[B, H, W, 3]`` through the driver, with
    colour preservation around it. ``plan`` is the task's decision if it made one, and
    ``network`` the network it prepared for it; ``placement`` shards the batch."""
    b, h, w = content.shape[:3]
    for i in range(b):
        check_image("content", content[i])
        check_image("init_image", None if init_images is None else init_images[i])
    for s in styles:
        check_image("style", s)
    if init_images is not None and init_images.shape != content.shape:
        raise ValueError(
            f"init_image shape {init_images.shape[1:]} != content shape {content.shape[1:]}"
        )
    masks = _masks(content_masks, style_masks, styles, (h, w))
    original = content[0]
    content, styles, init_images = _color_inputs(content, styles, init_images, config)
    if weights is None:
        weights = load_weights(progress=bool(progress))
    plan = plan or policy.plan(config, (h, w), b, widths=widths_of(weights.params))
    network = network or plan.network(weights)
    if callback is not None and config.preserve_color == "luminance":
        inner = callback

        def callback(step, images, losses):
            inner(step, color.with_content_color(images, original), losses)

    result = driver.run(
        network,
        content,
        styles,
        config,
        keys=jnp.stack([jax.random.key(s) for s in seeds]),
        term_weights=term_weights,
        init_images=init_images,
        blends=blends,
        masks=masks,
        callback=callback,
        chunk=chunk,
        progress=progress,
        check=plan.fits_compiled(config),
        placement=placement,
    )
    if config.preserve_color == "luminance":
        result = result._replace(image=color.with_content_color(result.image, original))
    return result


def stylize(
    content: np.ndarray,
    style: np.ndarray | Sequence[np.ndarray],
    config: Config = Config(),
    *,
    weights: Weights | None = None,
    init_image: np.ndarray | None = None,
    content_masks: np.ndarray | None = None,
    style_masks: Sequence[np.ndarray | None] | None = None,
    callback: Callable[[int, np.ndarray, dict[str, float]], None] | None = None,
    chunk: int = 10,
    progress: bool | str = True,
) -> Result:
    """Stylises ``content`` with ``style``: Gatys et al. (2016), with the controls of
    Gatys et al. (2017).

    Args:
      content: ``[H, W, 3]`` float RGB in [0, 1].
      style: ``[H', W', 3]`` float RGB in [0, 1], or a list of ``S`` styles (any sizes),
        mixed by ``config.loss.style_blend`` or placed by ``content_masks``.
      config: the run's settings.
      weights: the network's ``Weights``; the verified default VGG19 if ``None``.
      init_image: optional ``[H, W, 3]`` start, overriding ``config.init``.
      content_masks: optional ``[S, H, W]`` in [0, 1]: style ``i`` applies where mask
        ``i`` is on.
      style_masks: optional list of ``S`` masks ``[H'_i, W'_i]`` (or None), restricting
        which part of each style image counts.
      callback: ``callback(step, image, losses)`` after every ``chunk`` steps, with
        the host copy of the image and the latest losses.
      chunk: steps between progress updates and callbacks (host syncs).
      progress: show a progress bar with the step, losses and steps per second; a
        string also names the bar (the default name is "stylize").

    Returns:
      A ``Result``. On Ctrl-C the image reached so far is returned with
      ``interrupted=True``; on a loss that overflows, the last finite image, with the
      reason in ``failure``.

    Raises:
      ValueError: bad shapes or settings, or a size too large for memory.
    """
    content = pixels("content", content)
    check_image("content", content)
    init_images = None if init_image is None else pixels("init_image", init_image)[None]
    one = None
    if callback is not None:

        def one(step, images, losses):
            callback(step, images[0], {k: float(v[0]) for k, v in losses.items()})

    result = run(
        content[None],
        _styles(style),
        config,
        seeds=[config.seed],
        term_weights=Terms(*(w[None] for w in term_weights_of(config))),
        weights=weights,
        init_images=init_images,
        blends=None,
        content_masks=content_masks,
        style_masks=style_masks,
        callback=one,
        chunk=chunk,
        progress=progress,
    )
    return result.element(0)


def batch_size(
    content: np.ndarray,
    *,
    seeds: Sequence[int] | None,
    term_weights: Terms,
    blends: np.ndarray | None,
    init_images: np.ndarray | None,
) -> int:
    """The one batch size that everything with a batch axis agrees on.

    Raises:
      ValueError: they disagree, or nothing has a batch axis.
    """
    sizes = {int(np.shape(w)[0]) for w in term_weights if np.ndim(w) == 1}
    for n, present in (
        (content.shape[0], content.ndim == 4),
        (0 if seeds is None else len(seeds), seeds is not None),
        (len(init_images) if init_images is not None else 0, init_images is not None),
        (len(blends) if blends is not None else 0, blends is not None),
    ):
        if present:
            sizes.add(n)
    if len(sizes) > 1:
        raise ValueError(f"batch sizes disagree: {sorted(sizes)}")
    if not sizes or min(sizes) < 1:
        raise ValueError(
            "stylize_batch needs a batch axis: [B, H, W, 3] contents, seeds or weights"
        )
    return sizes.pop()


def stylize_batch(
    content: np.ndarray,
    style: np.ndarray | Sequence[np.ndarray],
    config: Config = Config(),
    *,
    seeds: Sequence[int] | None = None,
    term_weights: Terms | None = None,
    blends: np.ndarray | None = None,
    weights: Weights | None = None,
    init_images: np.ndarray | None = None,
    content_masks: np.ndarray | None = None,
    style_masks: Sequence[np.ndarray | None] | None = None,
    callback: driver.Callback | None = None,
    chunk: int = 10,
    progress: bool | str = True,
) -> Result:
    """``B`` stylisations in one compiled program, ``jax.vmap``-ed over the batch.

    Whatever has a batch axis varies across the batch: the contents, the seeds (noise
    inits, MMD samples), the term weights (α, β, λ_tv, λ_α), e.g. a sweep over α/β
    ratios or TV weights, and the style mix weights. The rest, masks included, is
    shared. Element ``b`` equals ``stylize(content[b], style, config_b)`` with
    ``config_b`` its seed and weights, run for the batch's steps: under the stopping
    rule, an image that meets it early runs on until every image has met it.

    Args:
      content: ``[B, H, W, 3]``, or ``[H, W, 3]`` shared by the whole batch.
      style: ``[H', W', 3]``, or a list of styles.
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
    content = pixels("content", content)
    if config.preserve_color != "none" and content.ndim != 3:
        raise ValueError("preserve_color needs one content shared by the batch")
    init_images = pixels("init_images", init_images)
    blends = None if blends is None else np.asarray(blends, np.float32)
    tw = term_weights_of(config, term_weights)
    b = batch_size(content, seeds=seeds, term_weights=tw, blends=blends, init_images=init_images)
    styles = _styles(style)
    check_batch_weights(tw, blends, config, len(styles))
    if content.ndim == 3:
        content = np.broadcast_to(content, (b, *content.shape))
    seeds = [config.seed + i for i in range(b)] if seeds is None else list(seeds)
    return run(
        content,
        styles,
        config,
        seeds=seeds,
        term_weights=Terms(*(jnp.broadcast_to(w, (b,)) for w in tw)),
        weights=weights,
        init_images=init_images,
        blends=blends,
        content_masks=content_masks,
        style_masks=style_masks,
        callback=callback,
        chunk=chunk,
        progress=progress,
    )
