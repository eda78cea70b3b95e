"""Loss reached against wall time: Adam and L-BFGS variants, on the demo pair.

  python benchmarks/optimizers.py [--size 192] [--seconds 60]

Each variant runs for the same wall-clock budget after compilation; the table gives the
total loss reached at fixed times, as a ratio to the best variant at that time, and the
curves go to results/optimizers.json. The loss is the default objective's (relative
style losses, normalised content, max pooling): every variant minimises the same one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import demo_pair, save, table

import nst_jax

VARIANTS = {  # Each with the stopping rule off, so that it runs the whole budget.
    "adam 0.08, half-life 40 (the defaults)": dict(optimizer="adam"),
    "adam 0.08, constant": dict(optimizer="adam", lr_half_life=0.0),
    "adam 0.02, half-life 40": dict(optimizer="adam", lr=0.02),
    "lbfgs zoom m=10": dict(optimizer="lbfgs", linesearch="zoom", lbfgs_memory=10),
    "lbfgs zoom m=5": dict(optimizer="lbfgs", linesearch="zoom", lbfgs_memory=5),
    "lbfgs zoom m=20": dict(optimizer="lbfgs", linesearch="zoom", lbfgs_memory=20),
    "lbfgs backtracking m=10": dict(optimizer="lbfgs", linesearch="backtracking"),
}


def run_variant(content, style, weights, seconds, **kw):
    """Steps until ``seconds`` of wall time after the first step; returns the curve.

    Point k is (time since step 0 ended, loss after step k); the loss after step k is
    the loss ``stylize`` records before step k + 1.
    """
    stamps = []

    def callback(step, image, latest):
        stamps.append(time.perf_counter())
        if stamps[-1] - stamps[0] > seconds:
            raise KeyboardInterrupt  # stylize's early stop keeps the work so far.

    config = nst_jax.Config(steps=100_000, stop_tol=0.0, **kw)
    result = nst_jax.stylize(
        content, style, config, weights=weights, callback=callback, chunk=1, progress=False
    )
    after = np.asarray(result.history["total"][1:])
    times = np.asarray(stamps[: len(after)]) - stamps[0]
    return times, after, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    content, style = demo_pair(args.size)
    weights = nst_jax.load_weights(progress=False)
    curves = {}
    for name, kw in VARIANTS.items():
        times, curve, result = run_variant(content, style, weights, args.seconds, **kw)
        curves[name] = {
            "seconds": times.tolist(),
            "total": curve.tolist(),
            "seconds_per_step": result.seconds_per_step,
        }
        print(
            f"{name}: {len(curve)} steps, {result.seconds_per_step:.3f} s/step, "
            f"loss {curve[0]:.4g} -> {curve[-1]:.4g}",
            flush=True,
        )

    checkpoints = [t for t in (5, 10, 20, 40, 60, 120) if t <= args.seconds]

    def at(name, t):
        c = curves[name]
        i = np.searchsorted(c["seconds"], t, side="right") - 1
        return c["total"][max(i, 0)]

    best = {t: min(at(n, t) for n in curves) for t in checkpoints}
    rows = []
    for name in curves:
        row = {"variant": name, "s/step": f"{curves[name]['seconds_per_step']:.3f}"}
        for t in checkpoints:
            row[f"loss@{t}s"] = f"{at(name, t):.4g} ({at(name, t) / best[t]:.2f}x)"
        rows.append(row)
    md = (
        f"Total loss reached after N seconds (post-compile) at {args.size}px, demo pair, "
        "CPU; in brackets, the ratio to the best variant at that time (1.00x = best).\n\n"
        + table(rows, ["variant", "s/step"] + [f"loss@{t}s" for t in checkpoints])
    )
    save("optimizers", {"size": args.size, "curves": curves}, md)


if __name__ == "__main__":
    main()
