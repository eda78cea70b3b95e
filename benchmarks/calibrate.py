"""Calibrates ``statistics.SCALES`` and ``RELATIVE_SCALES``: how hard each style
statistic pulls, against Gram.

  python benchmarks/calibrate.py [--size 192] [--style_norm relative|gatys]

For each statistic alone (mix weight 1, unit scale), the style loss at the content image
of the demo pair, on the default layers. The suggested scale is Gram's loss over that
statistic's, rounded to one significant figure, so that at the same ``--style_weight``
each statistic starts out as far from its target, in loss units, as Gram does. Under
``relative``, the moment statistics are relative errors and need no scale; the table
still shows how hard each pulls.
"""

from __future__ import annotations

import argparse
import math

import jax
from common import demo_pair, save, table

import nst_jax
from nst_jax import objective
from nst_jax.objective import LossConfig, Targets
from nst_jax.statistics import RELATIVE_SCALES, SCALES, STATISTICS


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--style_norm", choices=objective.STYLE_NORMS, default="relative")
    args = parser.parse_args()
    in_use = SCALES if args.style_norm == "gatys" else RELATIVE_SCALES
    content, style = demo_pair(args.size)
    network = nst_jax.prepare(nst_jax.load_weights(progress=False))
    raw = {}
    for name in STATISTICS:
        loss = LossConfig(style_loss=((name, 1.0),), style_norm=args.style_norm)

        def style_loss(network, content, style, loss=loss):
            targets = Targets(
                objective.content_targets(network, content, loss),
                objective.style_targets(network, style, loss, shape=content.shape[:2]),
            )
            return objective.loss_terms(network, content, targets, loss).style

        raw[name] = float(jax.jit(style_loss)(network, content, style)) / in_use[name]
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
                "scale in use": f"{in_use[name]:g}",
            }
        )
    md = (
        f"Style loss of each statistic at the content image, demo pair, {args.size}px, "
        f"style_norm {args.style_norm}.\n\n" + table(rows, list(rows[0]))
    )
    save(
        f"calibrate_{args.style_norm}",
        {
            "size": args.size,
            "raw": raw,
            "scales": in_use,
        },
        md,
    )


if __name__ == "__main__":
    main()
