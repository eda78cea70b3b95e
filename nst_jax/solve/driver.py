"""The host driver: runs the compiled step from a Python loop, for a batch of images.

It compiles the batched step once (``programs.py``), with the state donated, and calls it
from Python. On CPU, XLA runs a convolution-heavy ``scan``/``while`` body much slower
than the same body as its own program (the README says by how much), so the loop stays
in Python; dispatch costs microseconds against a step's tenths of a second. Between steps
the driver reports progress, calls back for snapshots, and keeps a host copy of the
images, so that Ctrl-C (or a signal the caller turns into ``KeyboardInterrupt``) never
loses work, and a loss that stops being finite stops the run at the last finite image.
A single run is a batch of one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import signals
from nst_jax.config import Config
from nst_jax.nets.network import Network
from nst_jax.objective import Terms
from nst_jax.progress import progress_bar
from nst_jax.solve import programs
from nst_jax.solve.placement import Placement, failing_together, gathered, raise_together
from nst_jax.solve.solver import HISTORY_KEYS

Callback = Callable[[int, np.ndarray, dict[str, np.ndarray]], None]


class Result(NamedTuple):
    """What a run returns: batched (a leading axis ``B``) from the driver and the batch
    tasks, one example from ``stylize`` (``element``).

    Attributes:
      image: ``[(B,) H, W, 3]`` float32 RGB in [0, 1].
      history: ``{total, content, style, tv, alpha_norm}``, each ``[steps_done, (B)]``:
        the losses at the start of each step, unweighted except ``total``.
      final: the same losses at the returned image, ``[(B)]`` each; with
        ``preserve_color="luminance"``, at the luminance image the run optimised, before
        the content's colours were put back.
      steps: the number of steps done (fewer than asked if stopped early).
      compile_seconds: time spent compiling and setting up.
      seconds_per_step: mean wall time of a step after compilation.
      interrupted: True if Ctrl-C (or a signal) stopped the run early.
      initial: the losses at the starting image.
      failure: why the run stopped early on its own, e.g. a loss that overflowed; the
        image is then the last one whose losses were finite. None otherwise.
      convolution: the algorithm the network ran (``conv.ALGORITHMS``).
      converged: True if the stopping rule (``Config.stop_tol``) ended the run before
        ``config.steps``.
    """

    image: np.ndarray
    history: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    steps: int
    compile_seconds: float
    seconds_per_step: float
    interrupted: bool
    initial: dict[str, np.ndarray]
    failure: str | None = None
    convolution: str = ""
    converged: bool = False

    def element(self, i: int) -> Result:
        """Example ``i`` of a batched result, with float losses."""
        return self._replace(
            image=self.image[i],
            history={k: v[:, i] for k, v in self.history.items()},
            final={k: float(v[i]) for k, v in self.final.items()},
            initial={k: float(v[i]) for k, v in self.initial.items()},
        )


def _by_key(losses: np.ndarray) -> dict[str, np.ndarray]:
    """``[..., 5]`` -> ``{key: [...]}``."""
    return dict(zip(HISTORY_KEYS, np.moveaxis(losses, -1, 0), strict=True))


def converged_each(best: list[np.ndarray], done: list[int], config: Config) -> np.ndarray:
    """The stopping rule, per image: ``[B]``, whether its lowest total loss so far fell
    by less than ``config.stop_tol`` (a fraction) over the last ``config.stop_window``
    steps.

    Args:
      best: ``[B]`` lowest totals so far, one entry per host sync.
      done: the steps done at each of those syncs.
    """
    if not config.stop_tol or done[-1] < config.stop_window:
        return np.zeros(np.shape(best[-1]), bool)
    back = max(i for i, d in enumerate(done) if d <= done[-1] - config.stop_window)
    then, now = best[back], best[-1]
    return np.asarray(then - now < config.stop_tol * np.abs(now))


def converged(best: list[np.ndarray], done: list[int], config: Config) -> bool:
    """Whether every image meets the stopping rule at this sync (``converged_each``)."""
    return bool(np.all(converged_each(best, done, config)))


def nonfinite_message(losses: np.ndarray, term_weights: Terms) -> str:
    """What went wrong in ``[B, 5]`` losses that are not all finite: which term, or
    which weighted term, left float32's range."""
    rows = np.asarray(losses, np.float32)
    for name, column in zip(Terms._fields, rows[:, 1:].T, strict=True):
        if not np.all(np.isfinite(column)):
            return f"the {name} loss became {column[~np.isfinite(column)][0]}"
    with np.errstate(over="ignore", invalid="ignore"):
        weighted = {
            name: np.float32(w) * rows[:, 1 + i]
            for i, (name, w) in enumerate(zip(Terms._fields, term_weights, strict=True))
        }
    for name, value in weighted.items():
        if not np.all(np.isfinite(value)):
            return f"{name} weight x {name} loss overflowed float32"
    with np.errstate(over="ignore"):
        total = sum(weighted.values())
    if np.all(np.isfinite(total)):  # The step's flag: its gradient left float32's range.
        name = max(weighted, key=lambda k: np.max(np.abs(weighted[k])))
        largest = np.max(np.abs(weighted[name]))
        return f"the gradient overflowed float32 ({name} weight x {name} loss is {largest:.3g})"
    return "the total loss overflowed float32"


def run(
    network: Network,
    content: np.ndarray,
    styles: tuple[np.ndarray, ...],
    config: Config,
    *,
    keys: jax.Array,
    term_weights: Terms,
    init_images: np.ndarray | None = None,
    blends: np.ndarray | None = None,
    masks: tuple | None = None,
    callback: Callback | None = None,
    chunk: int = 10,
    progress: bool | str = True,
    check: Callable[[jax.stages.Compiled], None] | None = None,
    placement: Placement | None = None,
) -> Result:
    """Optimises a batch of ``B`` images.

    Args:
      network: a prepared VGG19.
      content: ``[B, H, W, 3]``.
      styles: ``S`` style images, shared by the batch.
      keys: ``[B]`` PRNG keys.
      term_weights: ``Terms`` of ``[B]`` arrays.
      init_images: ``[B, H, W, 3]`` starts, or None for ``config.init``.
      blends: ``[B, S]`` style mixes, or None for ``config.loss.style_blend``.
      masks: ``(content_masks [S, H, W], style_masks)``, shared; or None.
      callback: ``callback(step, images [B, H, W, 3], losses {key: [B]})`` after every
        ``chunk`` steps, with host copies.
      chunk: steps between host syncs (progress, callbacks, the copy kept for Ctrl-C).
      progress: a progress bar (a string names it).
      check: called with the compiled step before any compute, e.g. to refuse a step
        that will not fit in memory.
      placement: shard the batch over a device mesh (``placement.py``); ``content``
        and the other batched inputs are then this process's share, and so is the
        result. The share must be a multiple of the process's devices in the mesh.

    Returns:
      A batched ``Result``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    t0 = time.perf_counter()
    local = placement.local if placement is not None else np.asarray
    # A batch sharded across processes steps together (L-BFGS's step reduces over the
    # whole batch), so they agree on every stop, and on every error before a step: a
    # memory refusal or an allocation that fails on one host fails on all.
    across = placement is not None and jax.process_count() > 1
    with failing_together(across):
        if placement is not None:
            network, styles, masks = placement.shared((network, styles, masks))
            content, init_images, blends, keys, term_weights = placement.batched(
                (content, init_images, blends, keys, term_weights)
            )
        args = (network, content, styles, init_images, blends, masks, keys)
        setup, step, losses_at = programs.compile_run(
            args, term_weights, config, placement=placement
        )
        if check is not None and step is not None:
            check(step)
        targets, state = setup(*args)
        initial = local(losses_at(network, targets, state.image, term_weights))
    compile_seconds = time.perf_counter() - t0

    bar = progress_bar(config.steps, progress, label="stylize", unit="step")
    alpha_on = config.loss.alpha_norm_weight > 0
    image = local(state.image)
    rows, done, interrupted, failure, run_seconds = [], 0, False, None, 0.0
    best, synced, stopped = [np.asarray(initial[..., 0])], [0], False
    settled = np.zeros(np.shape(best[0]), bool)  # Met the rule at some sync: stays met.
    try:
        while done < config.steps:
            n = min(chunk, config.steps - done)
            t = time.perf_counter()
            pending, error, finite = [], None, False
            try:
                for _ in range(n):
                    state, losses = step(network, targets, state, term_weights)
                    pending.append(losses)
                hist = np.stack([local(losses) for losses in pending])  # Waits for the chunk.
                latest_image = local(state.image)
                finite = np.all(np.isfinite(hist)) and np.all(np.isfinite(latest_image))
            except Exception as e:  # noqa: BLE001 - raised at the sync, on every process.
                if not across:
                    raise
                error = e
            run_seconds += time.perf_counter() - t
            if error is None and not finite:
                failure = f"stopped after step {done}: " + nonfinite_message(
                    hist[np.any(~np.isfinite(hist), axis=(1, 2))][0], term_weights
                )
            if across:  # Every process stops at the same sync, or none.
                flags = raise_together(error, [signals.requested(), not finite])
                if failure is None and flags[:, 1].any():
                    failure = f"stopped after step {done}: another process's images left float32"
                if failure is not None:
                    break
                interrupted = bool(flags[:, 0].any())  # Keeps this chunk, as a signal does.
            elif failure is not None:
                break
            image = latest_image
            rows.append(hist)
            done += n
            latest = _by_key(hist[-1])
            shown = {k: v for k, v in latest.items() if k != "alpha_norm" or alpha_on}
            bar.set_postfix({k: f"{np.mean(v):.4g}" for k, v in shown.items()}, refresh=False)
            bar.update(n)  # Redraws with the new losses.
            if callback is not None:
                callback(done, np.clip(image, 0.0, 1.0), latest)
            best.append(np.minimum(best[-1], hist[..., 0].min(axis=0)))
            synced.append(done)
            if interrupted:
                break
            settled |= converged_each(best, synced, config)
            if across:
                settled_everywhere = bool(gathered([settled.all()]).all())
            else:
                settled_everywhere = bool(settled.all())
            if done < config.steps and settled_everywhere:
                stopped = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()

    image = np.clip(image, 0.0, 1.0)
    history = np.concatenate(rows) if rows else np.zeros((0, *initial.shape), np.float32)
    final = history[-1] if len(history) else initial  # The last finite step's losses.
    if not (interrupted or failure):  # The image's own, unless stopped: skip more compute.
        with failing_together(across):
            try:
                images = jnp.asarray(image) if placement is None else placement.batched(image)
                final = local(losses_at(network, targets, images, term_weights))
            except KeyboardInterrupt:
                interrupted = True
    return Result(
        image=image,
        history=_by_key(history),
        final=_by_key(final),
        steps=done,
        compile_seconds=compile_seconds,
        seconds_per_step=run_seconds / done if done else float("nan"),
        interrupted=interrupted,
        initial=_by_key(initial),
        failure=failure,
        convolution=network.convolution,
        converged=stopped,
    )
