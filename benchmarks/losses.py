"""Seconds per step of each style statistic, as a ratio to Gram's, in the same run.

  python benchmarks/losses.py [--size 256]

Each statistic alone on the default style layers, one Adam step of the whole objective
(VGG19 forward and backward included), median of several steps after compilation.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import compiled_step, demo_pair, median_step_seconds, save, table

import nst_jax
from nst_jax.objective import LossConfig
from nst_jax.statistics import STATISTICS

STEPS = 7


def seconds_per_step(weights, content, style, config) -> float:
    step, network, targets, state, _ = compiled_step(weights, content, style, config)
    return median_step_seconds(step, network, targets, state, STEPS)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    content, style = demo_pair(args.size)
    weights = nst_jax.load_weights(progress=False)
    # Gram is timed first and last; the reference is their mean, to cancel drift.
    names = ["gram", *[n for n in STATISTICS if n != "gram"], "gram"]
    times = {}
    for i, name in enumerate(names):
        config = nst_jax.Config(loss=LossConfig(style_loss=((name, 1.0),)))
        times.setdefault(name, []).append(seconds_per_step(weights, content, style, config))
        print(name, i, times[name][-1], flush=True)
    gram = float(np.mean(times["gram"]))
    rows = [
        {"statistic": n, "s/step": f"{np.mean(t):.3f}", "vs gram": f"{np.mean(t) / gram:.2f}x"}
        for n, t in times.items()
    ]
    md = (
        f"One Adam step with each style statistic alone, demo pair at {args.size}px, CPU; "
        "ratio to Gram timed in the same run.\n\n" + table(rows, ["statistic", "s/step", "vs gram"])
    )
    save("losses", {"size": args.size, "seconds": times}, md)


if __name__ == "__main__":
    main()
