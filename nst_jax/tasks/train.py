"""Feed-forward stylisation (Ulyanov et al. 2016; Johnson et al. 2016): a generator
trained once per style against the objective's loss, then applied in one pass.

The loss is the objective's (``objective.py``) on a frozen VGG19: the style's targets
are computed once, the content targets per batch, and any style statistic works. One
compiled step (``train_step``) runs a batch: the generator and the loss ``jax.vmap``-ed
over it (batch normalisation averages over that axis), Adam with a warm-up and cosine
schedule (optax), the state donated. Where a ``Placement`` is given, the batch axis is
sharded over its mesh and the rest replicated (data parallel): a placement decision at
the compile point, the same step.

``train_generator`` is the host loop: batches from ``data.Photos`` (decoded on a thread),
progress, a checkpoint every ``checkpoint_every`` steps (``checkpoint.py``) and on Ctrl-C,
a signal or an error, resuming from the last one, and samples on a held-out photo. A
checkpoint is labelled with the step count its state carries, and only a finite state
is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nst_jax import checkpoint, signals
from nst_jax.config import SEED_LIMIT, Config
from nst_jax.data import Photos
from nst_jax.image import resize_longest
from nst_jax.nets import generator
from nst_jax.nets.generator import GeneratorConfig
from nst_jax.nets.network import NetConfig, Network
from nst_jax.nets.vgg import widths_of
from nst_jax.nets.weights import Weights
from nst_jax.objective import (
    LossConfig,
    Targets,
    content_targets,
    loss_terms,
    style_targets,
    weighted_total,
)
from nst_jax.progress import progress_bar
from nst_jax.solve import programs, solver
from nst_jax.solve.driver import nonfinite_message
from nst_jax.solve.placement import Placement
from nst_jax.tasks import policy, resume

# Training's style weight β: twice optimisation's. A generator cannot fit each photo as
# optimisation does, and at optimisation's β it settles on a compromise that paints too
# little (2.5x optimisation's style loss on the demo photo); at 2x it paints as the style
# does and keeps the photo; at 4x the photo dissolves. The README's "Feed-forward networks"
# and benchmarks/results/feedforward_probes.md show the three.
STYLE_WEIGHT = 2 * LossConfig.style_weight


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a generator is trained.

    Attributes:
      generator: the architecture.
      loss: the objective (its layers, statistics and weights α, β, λ): optimisation's
        defaults but for β, twice optimisation's (``STYLE_WEIGHT``).
      net: the frozen VGG19's pooling and convolutions (optimisation's defaults).
      steps: training steps.
      batch_size: photos a step.
      size: the side of the square training crops, in pixels.
      lr: Adam's peak learning rate, reached after a warm-up of ``warmup`` steps, then
        decayed along a cosine to a tenth of it at ``steps``.
      warmup: warm-up steps.
      seed: seeds the generator's init, the noise and the batches.
      style_scale: the style's longest side, in training crops. The crops are parts of
        photos whose short side is 1-2 crops (``data.SCALES``), so a photo the generator
        is applied to at twice the crop size looks to it as the training photos did: the
        style is sized for that (2), as optimisation sizes it to the output.
    """

    generator: GeneratorConfig = GeneratorConfig()
    loss: LossConfig = LossConfig(style_weight=STYLE_WEIGHT)
    net: NetConfig = NetConfig()
    steps: int = 800
    batch_size: int = 4
    size: int = 128
    lr: float = 0.03
    warmup: int = 50
    seed: int = 0
    style_scale: float = 2.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.size < 16:
            raise ValueError(f"--size must be at least 16 px to train, got {self.size}")
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ValueError(f"--lr must be positive and finite, got {self.lr}")
        if not (self.style_scale > 0 and np.isfinite(self.style_scale)):
            raise ValueError(f"--style_scale must be positive and finite, got {self.style_scale}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be in [0, 2^31), got {self.seed}")
        if self.generator.texture and self.loss.content_layers:
            raise ValueError("a texture network trains on style alone: no content layers")

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


class TrainState(NamedTuple):
    """What a training step carries: ``step`` (int32), the generator's ``params`` and
    ``batch_stats`` (empty with instance norm), and Adam's ``opt_state``."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any


def schedule(config: TrainConfig) -> optax.Schedule:
    """The learning rate at each step: a linear warm-up, then a cosine decay to a tenth.
    The host evaluates it and hands it to the step, so that the compiled step does not
    depend on ``steps``, ``lr`` or ``warmup``: a resumed run that trains longer, or a
    run with another rate, compiles nothing new."""
    return optax.warmup_cosine_decay_schedule(
        0.0,
        config.lr,
        min(config.warmup, config.steps // 2),
        config.steps,
        end_value=config.lr / 10,
    )


def noise_key(config: TrainConfig, step: int) -> jax.Array:
    """The key of step ``step``'s noise: a function of the seed and the step alone."""
    return jax.random.fold_in(jax.random.key(config.seed + 1), step)


def fresh_state(key: jax.Array, config: TrainConfig) -> TrainState:
    variables = generator.init(key, config.generator)
    params = variables["params"]
    return TrainState(
        jnp.int32(0), params, variables.get("batch_stats", {}), optax.scale_by_adam().init(params)
    )


def init_state(config: TrainConfig) -> TrainState:
    """The state training starts from: fresh parameters from ``config.seed``, Adam's
    moments at zero."""
    # One program that runs once: compiled at the low optimisation level (programs.jit).
    fresh = programs.jit(lambda key: fresh_state(key, config), once=True)
    return fresh(jax.random.key(config.seed))


def generator_variables(params, batch_stats) -> dict:
    """``{"params": ..., ["batch_stats": ...]}``: what ``generator.apply`` takes."""
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def batch_loss(
    params,
    batch_stats,
    network: Network,
    style: Any,
    photos: jax.Array,
    keys: jax.Array,
    config: TrainConfig,
):
    """The mean loss of the generator on ``photos`` ``[B, S, S, 3]`` with noise ``keys``
    ``[B]``: ``(loss, (terms [B], batch_stats))``."""
    g, loss = config.generator, config.loss

    def one(photo, key):
        content = None if g.texture else photo
        variables = generator_variables(params, batch_stats)
        image, stats = generator.apply(
            variables, g, content, key, shape=photo.shape[:2], training=True
        )
        targets = Targets({} if g.texture else content_targets(network, photo, loss), style)
        terms = loss_terms(network, image, targets, loss, key=key)
        return weighted_total(terms, loss.term_weights), (terms, stats)

    totals, (terms, stats) = jax.vmap(one, axis_name=generator.BATCH_AXIS)(photos, keys)
    return totals.mean(), (terms, jax.tree.map(lambda s: s[0], stats))


def train_step(
    network: Network,
    style: Any,
    state: TrainState,
    photos: jax.Array,
    lr: jax.Array,
    key: jax.Array,
    config: TrainConfig,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One Adam step of rate ``lr`` on a batch ``photos`` ``[B, S, S, 3]``, with the
    noise drawn from ``key``: ``(state, {term: mean})``."""
    keys = jax.random.split(key, photos.shape[0])
    grad = jax.value_and_grad(batch_loss, has_aux=True)
    (total, (terms, stats)), grads = grad(
        state.params, state.batch_stats, network, style, photos, keys, config
    )
    updates, opt_state = optax.scale_by_adam().update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, jax.tree.map(lambda u: -lr * u, updates))
    total = jnp.where(solver.overflowed(grads), jnp.inf, total)  # Stops training, as a loss would.
    metrics = {"total": total, "content": terms.content.mean(), "style": terms.style.mean(),
               "tv": terms.tv.mean()}  # fmt: skip
    return TrainState(state.step + 1, params, stats, opt_state), metrics


def compile_step(network, style, state, photos, config, *, placement: Placement | None = None):
    """``train_step`` compiled for these shapes, the state donated: ``step(network,
    style, state, photos, lr, key)``; with a placement, the batch sharded over its mesh
    and the rest replicated. Compiled once per process for the settings that shape it
    (not the rate, the step count or the seed: ``schedule``)."""
    shard = {}
    if placement is not None:
        r, b = placement.replicated, placement.batch
        shard = dict(in_shardings=(r, r, r, b, r, r), out_shardings=(r, r))
    static = config.replace(steps=1, lr=1.0, warmup=0, seed=0)
    step = programs.jit(
        lambda n, s, st, p, lr, k: train_step(n, s, st, p, lr, k, static),
        donate_argnums=(2,),
        **shard,
    )
    args = (network, style, state, photos, jnp.float32(0), noise_key(config, 0))
    key = ("train", static, placement, programs.shapes_of(*args[:4]))
    return programs.memoized(key, lambda: step.lower(*args).compile())


def memory_plan(config: TrainConfig, weights: Weights) -> policy.Plan:
    """The plan of a training step at ``config``'s size and batch (``policy.plan``),
    once the style's own pass at its scale is known to fit too (``Plan.check_style``):
    asked before anything is resized.

    Raises:
      ValueError: either will not fit in the free memory.
    """
    run_config, widths = Config(loss=config.loss, net=config.net), widths_of(weights.params)
    step = policy.plan(run_config, (config.size,) * 2, config.batch_size, widths=widths)
    side = max(16, round(config.size * config.style_scale))
    step.check_style(run_config, (side, side), scale=config.style_scale, size=config.size)
    return step


class Trained(NamedTuple):
    """What ``train_generator`` returns: the final ``state``, its ``step``, ``history`` (per step
    ``{term: value}``), ``seconds_per_step``, whether it was ``interrupted``, the step
    it ``resumed`` from (0 for a fresh start), ``compile_seconds``, and a ``failure``:
    why it stopped on its own (a loss that stopped being finite; the last checkpoint
    is then kept, not overwritten), or None."""

    state: TrainState
    step: int
    history: list[dict[str, float]]
    seconds_per_step: float
    interrupted: bool
    resumed: int
    compile_seconds: float = 0.0
    failure: str | None = None


def train_generator(
    style: np.ndarray,
    config: TrainConfig,
    *,
    weights: Weights,
    photos: Photos | None,
    model_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    sample: np.ndarray | None = None,
    save_every: int = 0,
    on_sample: Callable[[int, np.ndarray], None] | None = None,
    placement: Placement | None = None,
    progress: bool | str = True,
) -> Trained:
    """Trains a generator on ``style`` ``[H, W, 3]``; see the module docstring.

    Args:
      photos: the training batches (``data.Photos``); None for a texture network.
      model_dir: checkpoints go here, and training resumes from the last one there,
        provided it was made by the same settings, style and weights.
      sample: a held-out ``[H, W, 3]`` photo; every ``save_every`` steps ``on_sample``
        gets ``(step, generator output)`` for it (a texture network ignores its pixels).

    Raises:
      ValueError: a checkpoint in ``model_dir`` from other settings, style or weights.
    """
    g = config.generator
    s = config.size
    for name in ("size", "batch_size", "seed") if photos is not None else ():
        # What the checkpoint records must be what trains.
        if getattr(photos, name) != getattr(config, name):
            raise ValueError(
                f"the photos were made with {name} {getattr(photos, name)}, and the config"
                f" trains with {getattr(config, name)}"
            )
    plan = memory_plan(config, weights)
    style = resize_longest(np.asarray(style, np.float32), max(16, round(s * config.style_scale)))
    network = plan.network(weights)
    targets = programs.jit(
        lambda n, st: style_targets(n, st, config.loss, shape=(s, s)), once=True
    )(network, style)
    meta = resume.record(config, style, weights, photos)
    state, resumed = init_state(config), 0
    if model_dir is not None and checkpoint.latest_step(model_dir) is not None:
        resumed, state = resume.resume(model_dir, meta, state)
    if resumed >= config.steps:  # Trained already: nothing to compile.
        return Trained(state, resumed, [], 0.0, False, resumed)
    if placement is not None:
        network, targets, state = placement.shared((network, targets, state))
    blank = np.zeros((config.batch_size, s, s, 3), np.float32)
    t0 = time.perf_counter()
    step_fn = compile_step(
        network, targets, state, placement.batched(blank) if placement else blank, config,
        placement=placement,
    )  # fmt: skip
    apply_fn = None
    if sample is not None and save_every:
        apply_fn = jax.jit(
            lambda p, b, x: generator.apply(generator_variables(p, b), g, None if g.texture else x,
                                            jax.random.key(config.seed), shape=x.shape[:2])
        )  # fmt: skip
    compile_seconds = time.perf_counter() - t0
    history: list[dict[str, float]] = []
    bar = progress_bar(config.steps, progress, label="train", unit="step", initial=resumed)
    done, interrupted, times, failure = resumed, False, [], None
    rates = schedule(config)

    def save() -> int:
        """Checkpoints the state under its own step count: an interrupt can land after a
        step is dispatched and before the loop counts it. A state that is not finite is
        not saved: the last checkpoint stays the last good one. Written with the stop
        signals held: one that cut orbax's write short lost the step (and the next save
        met its half-written folder); it is raised once the step is saved. Returns the
        step."""
        with signals.deferred():
            host = jax.device_get(state)
            step = int(host.step)
            finite = all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host))
            if model_dir is not None and step > 0 and finite:
                checkpoint.save(model_dir, step, host, {**meta, "step": step})
        return step

    batches = (
        photos.batches(resumed)
        if photos is not None
        else ((k, blank) for k in range(resumed, config.steps))
    )
    try:
        for k, batch in batches:
            if k >= config.steps:
                break
            t = time.perf_counter()
            lr, key = jnp.float32(rates(k)), noise_key(config, k)
            if placement is not None:
                batch, lr, key = placement.batched(batch), *placement.shared((lr, key))
            with signals.deferred():  # The old state is donated: never lose both.
                state, metrics = step_fn(network, targets, state, batch, lr, key)
            values = {name: float(v) for name, v in metrics.items()}
            if not np.isfinite(values["total"]):
                row = [[values[n] for n in ("total", "content", "style", "tv")] + [0.0]]
                failure = (
                    f"the training loss became {values['total']} at step {k + 1}: "
                    f"{nonfinite_message(np.array(row), config.loss.term_weights)}; resume"
                    " with a lower --lr, or train anew with lower weights"
                )
                break
            times.append(time.perf_counter() - t)
            done = k + 1
            history.append(values)
            bar.set_postfix(loss=f"{values['total']:.3g}", style=f"{values['style']:.3g}")
            bar.update(1)
            if model_dir is not None and done % checkpoint_every == 0:
                save()
            if apply_fn is not None and (done % save_every == 0 or done == config.steps):
                image = apply_fn(state.params, state.batch_stats, sample)
                on_sample(done, np.asarray(image))
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:  # A bad batch, a full disk: keep what was computed, then raise.
        with contextlib.suppress(Exception):
            save()
        raise
    finally:
        bar.close()
    if failure is None and (interrupted or done % checkpoint_every):
        try:
            done = save()  # Interrupted: the step in flight, if it had been dispatched.
        except KeyboardInterrupt:  # Another signal, held until the save was whole.
            done, interrupted = int(jax.device_get(state.step)), True
    per_step = float(np.median(times[1:] or times or [0.0]))
    return Trained(state, done, history, per_step, interrupted, resumed, compile_seconds, failure)
