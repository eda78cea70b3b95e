"""Shared helpers for the benchmarks: images, timing, and small text tables."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nst_jax  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def demo_pair(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The demo content and style, longest side ``size``."""
    content, style = nst_jax.demo_images()
    return nst_jax.resize_longest(content, size), nst_jax.resize_longest(style, size)


def best_of(fn, *args, repeats: int = 5) -> float:
    """Minimum wall time of ``fn(*args)`` over ``repeats`` runs after one warm-up."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def machine() -> dict:
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def save(name: str, data: dict, markdown: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine(), **data}, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown + "\n")
    print(markdown)


def compiled_step(weights, content, style, config, *, tuned: bool = True):
    """The step ``nst_jax.stylize`` runs, compiled: ``(step, params, targets, state, compile_s)``.

    ``tuned=False`` compiles the same step the plain way: XLA's default compiler options,
    and parameters without derived kernels, so autodiff's convolutions. It is the
    reference the tuning is measured against.
    """
    import functools

    from nst_jax import conv, optimize

    static = dict(config=config, preprocessing=weights.preprocessing)
    jit = optimize.jit if tuned else jax.jit
    params = weights.params
    if tuned:
        params = conv.prepare(params, config.convolution_algorithm(content.shape[:2]))
    setup = jit(functools.partial(optimize.init, **static))
    targets, state = setup(params, content, style, None, key=jax.random.key(0))
    step = jit(
        functools.partial(optimize.step, **static, optimizer=optimize.make_optimizer(config)),
        donate_argnums=(2,),
    )
    t = time.perf_counter()
    term_weights = optimize._term_weights(config, None)
    compiled = step.lower(params, targets, state, term_weights).compile()
    seconds = time.perf_counter() - t

    def run(p, tg, st):
        return compiled(p, tg, st, term_weights)

    run.cost_analysis = compiled.cost_analysis
    return run, params, targets, state, seconds


def median_step_seconds(step, params, targets, state, steps: int) -> float:
    """Median wall time of ``steps`` calls of a compiled step, after one warm-up call."""
    state, losses = step(params, targets, state)
    jax.block_until_ready(losses)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, losses = step(params, targets, state)
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - t)
    return float(np.median(times))
