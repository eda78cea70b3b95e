"""Calibrates ``objective.SCALES``: how hard each style statistic pulls, against Gram.

  python benchmarks/calibrate.py [--size 192]

For each statistic alone (mix weight 1, unit scale), the style loss at the content image
of the demo pair, on the default layers. The suggested scale is Gram's loss over that
statistic's, rounded to one significant figure, so that at the same ``--style_weight``
each statistic starts out as far from its target, in loss units, as Gram does.
"""

from __future__ import annotations

import argparse
import math

import jax
from common import demo_pair, save, table

import nst_jax
from nst_jax import objective
from nst_jax.objective import SCALES, STATISTICS, LossConfig, Targets


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    args = parser.parse_args()
    content, style = demo_pair(args.size)
    network = nst_jax.prepare(nst_jax.load_weights(progress=False))
    raw = {}
    for name in STATISTICS:
        loss = LossConfig(style_loss=((name, 1.0),))

        def style_loss(network, content, style, loss=loss):
            targets = Targets(
                objective.content_targets(network, content, loss),
                objective.style_targets(network, style, loss, shape=content.shape[:2]),
            )
            return objective.loss_terms(network, content, targets, loss).style

        raw[name] = float(jax.jit(style_loss)(network, content, style)) / SCALES[name]
    rows = []
    for name, value in raw.items():
        ratio = raw["gram"] / value
        suggested = float(f"{ratio:.0e}") if ratio > 0 else math.nan
        rows.append(
            {
                "statistic": name,
                "unscaled loss": f"{value:.4g}",
                "gram / it": f"{ratio:.3g}",
                "suggested scale": f"{suggested:g}",
                "scale in use": f"{SCALES[name]:g}",
            }
        )
    md = (
        f"Style loss of each statistic at the content image, demo pair, {args.size}px.\n\n"
        + table(rows, list(rows[0]))
    )
    save(
        "calibrate",
        {
            "size": args.size,
            "raw": raw,
            "scales": SCALES,
        },
        md,
    )


if __name__ == "__main__":
    main()
