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


def bench_weights() -> nst_jax.Weights:
    """The verified VGG19 weights; with ``NST_JAX_BENCH_WEIGHTS=random``, a randomly
    initialised VGG19 of the same shapes instead, for a machine that cannot fetch the
    80 MB file (an accelerator lent without network): a step's time does not depend on
    the weights' values, so speed benchmarks may use it; quality benchmarks may not."""
    import os

    if os.environ.get("NST_JAX_BENCH_WEIGHTS") == "random":
        params = nst_jax.init_params(jax.random.key(0))
        return nst_jax.Weights(params, nst_jax.CAFFE, "random")
    return nst_jax.load_weights(progress=False)


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
    """The step a run of ``content`` compiles, from the package's one compile point
    (``solve.programs``), with its targets and starting state: ``(step, network, targets,
    state, compile_s)``; ``step(network, targets, state) -> (state, losses)``.

    The network is the one the run's policy picks (``tasks.policy.plan``).
    ``tuned=False`` compiles the same step the plain way: XLA's default compiler
    options and autodiff's convolutions (``"plain"``), the reference the tuning is
    measured against.
    """
    import dataclasses

    from nst_jax.solve import programs
    from nst_jax.solve.solver import term_weights_of
    from nst_jax.tasks import policy

    if not tuned:
        config = dataclasses.replace(
            config, net=dataclasses.replace(config.net, convolution="plain")
        )
    network = policy.plan(config, content.shape[:2]).network(weights)
    keys = jax.numpy.stack([jax.random.key(0)])
    term_weights = nst_jax.Terms(*(w[None] for w in term_weights_of(config)))
    setup = programs.jit(programs.batched_setup(config, init_images=False, blends=False), once=True)
    targets, state = setup(network, content[None], (style,), None, None, None, keys)
    t = time.perf_counter()
    compiled = programs.compile_step(network, targets, state, term_weights, config, tuned=tuned)
    seconds = time.perf_counter() - t

    def run(n, tg, st):
        return compiled(n, tg, st, term_weights)

    run.cost_analysis = compiled.cost_analysis
    return run, network, targets, state, seconds


def median_step_seconds(step, network, targets, state, steps: int) -> float:
    """Median wall time of ``steps`` calls of a compiled step, after one warm-up call."""
    state, losses = step(network, targets, state)
    jax.block_until_ready(losses)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, losses = step(network, targets, state)
        jax.block_until_ready(losses)
        times.append(time.perf_counter() - t)
    return float(np.median(times))
