"""How the defaults were chosen: each choice of the objective and the optimiser, ranked by
the independent scoring (``scoring.py``), not by the project's own loss.

  python benchmarks/objective_choices.py [--pair golden_gate:the_scream] [--size 512]

Every variant runs in this process from the same inputs (the pair at ``--size``), and its
snapshots every 10 steps are scored: style and content error after 30 and 60 steps, and
at the end. The pair defaults to *The Scream*, the harder of neural-style's two: its
published output keeps the content close (content error 0.378), so a default must reach
style 0.122 without giving the content away.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
from common import machine, save, table
from scoring import PUBLISHED, SHARED, Scorer, load

import nst_jax
from nst_jax import Config, LossConfig, NetConfig

OLD = dict(  # The defaults before this benchmark.
    loss=LossConfig(style_weight=1e-2, tv_weight=5e3, content_loss="mse", style_norm="gatys"),
    net=NetConfig(pooling="avg"),
    lr_half_life=0.0,
)
RELATIVE = dict(content_loss="normalized", style_norm="relative", style_weight=4.0)
VARIANTS = {
    "before: Gatys E_l, MSE content, avg pooling, constant lr": OLD,
    "relative losses, avg pooling, TV 0.05": dict(
        loss=LossConfig(**RELATIVE, tv_weight=0.05), net=NetConfig(pooling="avg")
    ),
    "relative losses, avg pooling, TV 0.01": dict(
        loss=LossConfig(**RELATIVE, tv_weight=0.01), net=NetConfig(pooling="avg")
    ),
    "relative losses, max pooling, TV 0.01, constant lr": dict(
        loss=LossConfig(**RELATIVE, tv_weight=0.01), lr_half_life=0.0
    ),
    "the defaults: as above, lr half-life 40": {},
    "the defaults with L-BFGS": dict(optimizer="lbfgs"),
    "the defaults, coarse to fine: 40 steps at half size, then the rest": dict(pyramid=True),
}


def _keep(snaps: list, t0: float, step: int, image, _losses) -> None:
    snaps.append((step, time.perf_counter() - t0, image.copy()))


def _keep_final(snaps: list, t0: float, level: int, step: int, image, losses) -> None:
    if level:  # The pyramid's final level.
        _keep(snaps, t0, step, image, losses)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", default="golden_gate:the_scream")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lbfgs_steps", type=int, default=30)
    args = parser.parse_args()
    content_name, style_name = args.pair.split(":")
    content = load(SHARED / "images" / f"{content_name}.jpg", size=args.size)
    style = load(SHARED / "images" / f"{style_name}.jpg", size=args.size)
    weights = nst_jax.load_weights(progress=False)
    scorer = Scorer(weights)
    rows, data = [], {}
    for name, changes in VARIANTS.items():
        changes = dict(changes)
        pyramid = changes.pop("pyramid", False)
        lbfgs = changes.get("optimizer") == "lbfgs"
        steps = args.lbfgs_steps if lbfgs else args.steps
        config = Config(**{"steps": steps, "stop_tol": 0.0, **changes})
        snaps = []
        t0 = time.perf_counter()
        if pyramid:  # The snapshots are the final level's; its steps are counted from 0.
            coarse = 40
            result = nst_jax.stylize_pyramid(
                content, style, config, sizes=[args.size // 2, args.size],
                level_steps=[coarse, steps - coarse], weights=weights, progress=False,
                callback=functools.partial(_keep_final, snaps, t0),
            )[-1]  # fmt: skip
        else:
            result = nst_jax.stylize(
                content,
                style,
                config,
                weights=weights,
                progress=False,
                callback=functools.partial(_keep, snaps, t0),
            )
        scored = {
            step: (t, *scorer.score(image, content, style, style_key="s"))
            for step, t, image in snaps
        }
        data[name] = {str(k): v for k, v in scored.items()}

        def at(step, scored=scored):
            if step not in scored:
                return ""
            _, s, c = scored[step]
            return f"{s:.3f} / {c:.3f}"

        first, last = (10, 30) if lbfgs else (30, 60)
        end_t = scored[result.steps][0] if result.steps in scored else float("nan")
        rows.append(
            {
                "variant": name,
                "s/step": f"{result.seconds_per_step:.2f}",
                "wall s (compile included)": f"{end_t:.0f}",
                f"style / content at {first}": at(first),
                f"at {last}": at(last),
                "at the end": f"{at(result.steps)} ({result.steps} steps)",
            }
        )
        print(rows[-1], flush=True)
    target = PUBLISHED.get((content_name, style_name))
    md = (
        f"{args.pair} at {args.size} px, in one process on {machine()['cpu']}; style and "
        f"content error by the independent scoring (neural-style's published output: "
        f"{target[0]} / {target[1]}). L-BFGS steps each evaluate the objective about "
        "twice or more; the coarse-to-fine row's steps are its final level's.\n\n"
        + table(rows, list(rows[0]))
        if target
        else table(rows, list(rows[0]))
    )
    save("objective_choices", {"args": vars(args), "scores": data}, md)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
