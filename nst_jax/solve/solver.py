"""The pure solver: Optax Adam or L-BFGS on the image, for one example.

``setup`` makes the targets and the starting ``State``, ``step`` takes one optimiser step,
``transfer`` runs every step in one ``lax.scan``. All are pure, jittable and vmappable
(``jax.vmap`` over contents, keys, term weights or style mixes); the host driver
(``driver.py``) vmaps and compiles them at one point (``programs.py``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from nst_jax import objective, statistics
from nst_jax.config import INIT_KINDS, Config
from nst_jax.nets.network import Network
from nst_jax.nets.vgg import feature_shape
from nst_jax.objective import Targets, Terms

HISTORY_KEYS = ("total", *Terms._fields)
# L-BFGS steps on one sample of the sampled kernels' positions (``statistics.sampled``):
# its line searches and curvature pairs need one deterministic objective, and a new
# sample every so many steps, with a fresh memory, lets every position be drawn.
RESAMPLE_EVERY = 10


class State(NamedTuple):
    """Optimisation state: a pytree, so it can be donated, scanned and vmapped."""

    image: jax.Array  # [H, W, 3], in [0, 1] for Adam; L-BFGS is clipped on the way out.
    opt_state: optax.OptState
    key: jax.Array


def make_optimizer(config: Config) -> optax.GradientTransformationExtraArgs:
    """The Optax transformation ``config`` names."""
    if config.optimizer == "adam":
        if not config.lr_half_life:
            return optax.adam(config.lr)
        return optax.adam(
            optax.exponential_decay(
                config.lr,
                transition_steps=config.lr_half_life,
                decay_rate=0.5,
                end_value=0.1 * config.lr,
            )
        )
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
    raise ValueError(f"init must be one of {INIT_KINDS}, got {init!r}")


def setup(
    network: Network,
    content: jax.Array,
    styles: tuple[jax.Array, ...],
    init_image: jax.Array | None = None,
    blend: jax.Array | None = None,
    masks: tuple[jax.Array, tuple] | None = None,
    *,
    config: Config,
    key: jax.Array,
) -> tuple[Targets, State]:
    """The targets for one content and the state to start from.

    Args:
      content: ``[H, W, 3]``.
      styles: ``S`` images ``[H'_i, W'_i, 3]``, mixed by ``blend`` ``[S]`` or placed by
        ``masks = (content_masks [S, H, W], style_masks)`` (``objective.style_targets``).
      init_image: ``[H, W, 3]`` to start from, overriding ``config.init``.
      key: PRNG key: the noise init, the style samples and the state's own key.
    """
    init_key, target_key, key = jax.random.split(key, 3)
    content_masks, style_masks = masks if masks is not None else (None, None)
    targets = Targets(
        content=objective.content_targets(network, content, config.loss),
        style=objective.style_targets(
            network,
            styles,
            config.loss,
            shape=content.shape[:2],
            key=target_key,
            blend=blend,
            content_masks=content_masks,
            style_masks=style_masks,
        ),
    )
    if init_image is None:
        image = initial_image(content, styles[0], config.init, key=init_key)
    else:
        image = init_image.astype(jnp.float32)
    return targets, State(image, make_optimizer(config).init(image), key)


def resamples(config: Config, shape: tuple[int, int]) -> bool:
    """Whether an L-BFGS run on ``shape`` = (H, W) images restarts on a new sample every
    ``RESAMPLE_EVERY`` steps: its objective has a kernel that draws positions, at a
    layer with more of them than it draws (else it takes them all, and its objective
    never changes)."""
    loss = config.loss
    return (
        config.optimizer == "lbfgs"
        and loss.style_on
        and any(
            statistics.drawn(math.prod(feature_shape(shape, name)), loss.mmd_samples)
            for stat, _ in loss.style_loss
            if statistics.sampled(stat, loss)
            for name, _ in loss.statistic_layers(stat)
        )
    )


def restart_due(config: Config, state: State) -> jax.Array | None:
    """Whether ``state`` (one example's, or a batch's, stepping together) has taken its
    ``RESAMPLE_EVERY`` steps on one sample: a scalar; None when the run never restarts."""
    if not resamples(config, state.image.shape[-3:-1]):
        return None
    return jnp.max(optax.tree.get(state.opt_state, "count")) >= RESAMPLE_EVERY


def step(
    network: Network,
    targets: Targets,
    state: State,
    term_weights: Terms,
    first: jax.Array | None = None,
    restart: jax.Array | None = None,
    *,
    config: Config,
    optimizer: optax.GradientTransformationExtraArgs,
) -> tuple[State, jax.Array]:
    """One optimiser step: ``(state, [5] losses at the state's image)``, ``HISTORY_KEYS``.

    ``term_weights`` ``(α, β, λ_tv, λ_α)`` are scalars, traced so that a vmapped run can
    sweep them. ``config`` and ``optimizer`` are static. Adam draws fresh MMD sample
    positions every step. L-BFGS keeps one key for ``RESAMPLE_EVERY`` steps, since its
    line search and curvature pairs need one deterministic objective; where ``restart``
    (a scalar; by default ``restart_due``) it then starts afresh on a new key: a new
    sample, an empty memory.

    L-BFGS reuses the value and gradient its line search found at the accepted point,
    and computes them only where none is stored yet: where ``first`` (a scalar; by
    default, whether this state has none). A batch passes one ``first`` and one
    ``restart`` for all (``batched_step``): a predicate with a batch axis would turn the
    ``cond`` into a ``select``, which runs both branches, a forward and backward pass
    thrown away.
    """
    if config.optimizer == "adam":
        key, sub = jax.random.split(state.key)
    else:
        if restart is None:
            restart = restart_due(config, state)
        if restart is not None:
            fresh = State(state.image, optimizer.init(state.image), jax.random.split(state.key)[1])
            state = jax.tree.map(lambda a, b: jnp.where(restart, a, b), fresh, state)
            first = restart if first is None else first | restart
        key = sub = state.key
    value_and_terms = functools.partial(
        objective.total_loss,
        network,
        targets=targets,
        loss=config.loss,
        key=sub,
        term_weights=term_weights,
    )
    if config.optimizer == "adam":
        (value, terms), grad = jax.value_and_grad(value_and_terms, has_aux=True)(state.image)
        updates, opt_state = optimizer.update(grad, state.opt_state, state.image)
        # Projected gradient descent: the image never leaves the valid range.
        image = jnp.clip(optax.apply_updates(state.image, updates), 0.0, 1.0)
    else:

        def value_fn(x):
            return value_and_terms(x)[0]

        stored = (optax.tree.get(state.opt_state, "value"), optax.tree.get(state.opt_state, "grad"))
        if first is None:
            first = ~jnp.isfinite(stored[0])
        value, grad = jax.lax.cond(
            first, lambda: jax.value_and_grad(value_fn)(state.image), lambda: stored
        )
        terms = objective.loss_terms(
            network, jax.lax.stop_gradient(state.image), targets, config.loss, key=sub
        )
        updates, opt_state = optimizer.update(
            grad, state.opt_state, state.image, value=value, grad=grad, value_fn=value_fn
        )
        image = optax.apply_updates(state.image, updates)
    # Such a step reports an infinite total, which stops the run as a loss past float32 does.
    value = jnp.where(overflowed(grad, adam=config.optimizer == "adam"), jnp.inf, value)
    losses = jnp.stack([value, *terms]).astype(jnp.float32)
    return State(image, opt_state, key), losses


def overflowed(grads, *, adam: bool = True) -> jax.Array:
    """Whether a gradient (any pytree) has left float32's range for its optimiser:
    Adam's second moment (each ``g²``), or L-BFGS's inner products (``Σ g²``). A finite
    loss can have one, and then every later step is a silent no-op: Adam divides by an
    infinite moment. A scalar bool."""
    leaves = [g.astype(jnp.float32) for g in jax.tree.leaves(grads)]
    if adam:
        return ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(jnp.square(g))) for g in leaves]))
    return ~jnp.isfinite(sum(jnp.vdot(g, g) for g in leaves))


def losses_at(
    network: Network, targets: Targets, image: jax.Array, term_weights: Terms, *, config: Config
) -> jax.Array:
    """The ``[5]`` losses (``HISTORY_KEYS``) at ``image``, clipped to [0, 1] first."""
    value, terms = objective.total_loss(
        network,
        jnp.clip(image, 0.0, 1.0),
        targets,
        config.loss,
        term_weights=term_weights,
    )
    return jnp.stack([value, *terms])


def term_weights_of(config: Config, term_weights: Terms | None = None) -> Terms:
    """``term_weights``, or the config's, as float32 arrays."""
    term_weights = config.loss.term_weights if term_weights is None else term_weights
    return Terms(*(jnp.asarray(w, jnp.float32) for w in term_weights))


def transfer(
    network: Network,
    content: jax.Array,
    style: jax.Array | tuple[jax.Array, ...],
    config: Config,
    *,
    key: jax.Array,
    init_image: jax.Array | None = None,
    term_weights: Terms | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Stylises one content image: pure, jittable and vmappable.

    ``config`` is static (hashable); the network runs as it was prepared
    (``nets.prepare``), so ``config.net`` is not read, and a pooling other than the
    network's is refused. It runs ``config.steps`` steps: the stopping rule
    (``stop_tol``) is the host driver's (``stylize``). To stylise a batch, ``jax.vmap``
    over ``content``, ``key`` or ``term_weights``; the compiled program runs every image
    in lock step. Compile with ``solve.jit`` for this package's compiler options.

    Args:
      network: a prepared VGG19 (``nets.prepare``).
      content: ``[H, W, 3]`` RGB in [0, 1].
      style: ``[H', W', 3]`` RGB in [0, 1], or a tuple of them (mixed by
        ``config.loss.style_blend``).
      key: PRNG key (the noise init and the sampled kernels).
      init_image: optional ``[H, W, 3]`` start, overriding ``config.init``.
      term_weights: ``(α, β, λ_tv, λ_α)``; ``config.loss.term_weights`` if None.

    Returns:
      ``(image [H, W, 3] in [0, 1], history [steps, 5])``; history columns are
      ``HISTORY_KEYS``, the losses before each step. ``config.preserve_color`` is the
      host's (``stylize``), not this pure function's.
    """
    if network.pooling != config.net.pooling:
        raise ValueError(
            f"the network was prepared with {network.pooling} pooling, the config asks for "
            f"{config.net.pooling}: prepare it with the config's NetConfig"
        )
    styles = tuple(style) if isinstance(style, (list, tuple)) else (style,)
    targets, state = setup(network, content, styles, init_image, config=config, key=key)
    term_weights = term_weights_of(config, term_weights)
    optimizer = make_optimizer(config)

    def body(state, i):  # i == 0: L-BFGS has no stored gradient (unbatched: see step).
        due = (i > 0) & (i % RESAMPLE_EVERY == 0)
        restart = due if resamples(config, content.shape[:2]) else None
        return step(network, targets, state, term_weights, i == 0, restart, config=config,
                    optimizer=optimizer)  # fmt: skip

    state, history = jax.lax.scan(body, state, jnp.arange(config.steps))
    return jnp.clip(state.image, 0.0, 1.0), history
