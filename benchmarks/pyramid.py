"""Coarse-to-fine against a single-scale run: wall time to reach the same style loss at
the final size, measured in the same run.

  python benchmarks/pyramid.py [--size 512] [--steps 150]

The single-scale run takes ``--steps`` Adam steps at ``--size``; its final style loss is
the goal. The pyramid runs ``--coarse_steps`` at each of the coarser levels (size / 4,
size / 2), then steps at ``--size`` until its style loss, evaluated every 10 steps on the
same targets, reaches the goal (or ``--steps`` more). Times include compilation.
"""

from __future__ import annotations

import argparse
import time

from common import demo_pair, save, table

import nst_jax

CHUNK = 10


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--coarse_steps", type=int, default=150)
    args = parser.parse_args()
    weights = nst_jax.load_weights(progress=False)
    content, style = demo_pair(args.size)
    config = nst_jax.Config(steps=args.steps, stop_tol=0.0)  # Fixed step counts.

    t0 = time.perf_counter()
    single = nst_jax.stylize(content, style, config, weights=weights, progress=False)
    single_seconds = time.perf_counter() - t0
    goal = single.final["style"]
    print(f"single: style {goal:.4g} after {args.steps} steps, {single_seconds:.1f} s", flush=True)

    reached = {}
    t0 = time.perf_counter()

    def watch(level, step, image, losses):
        if level == 2 and "seconds" not in reached and losses["style"] <= goal:
            reached.update(seconds=time.perf_counter() - t0, steps=step)

    sizes = nst_jax.pyramid_sizes(args.size, levels=3)
    results = nst_jax.stylize_pyramid(
        content,
        style,
        config,
        sizes=sizes,
        level_steps=[args.coarse_steps, args.coarse_steps, args.steps],
        callback=watch,
        weights=weights,
        chunk=CHUNK,
        progress=False,
    )
    pyramid_seconds = time.perf_counter() - t0
    final = results[-1].history["style"]
    # The history holds the loss before each step; the callback saw it after each chunk.
    rows = [
        {
            "run": f"single scale, {args.size} px",
            "steps at final size": args.steps,
            "final style loss": f"{goal:.4g}",
            "seconds to reach it": f"{single_seconds:.1f}",
        },
        {
            "run": "pyramid " + " -> ".join(map(str, sizes)),
            "steps at final size": reached.get("steps", f"> {args.steps}"),
            "final style loss": f"{results[-1].final['style']:.4g}",
            "seconds to reach it": f"{reached['seconds']:.1f}" if reached else "not reached",
        },
    ]
    ratio = reached["seconds"] / single_seconds if reached else float("nan")
    markdown = (
        table(rows, list(rows[0]))
        + f"\n\nTime to the single-scale run's final style loss: {ratio:.2f}x with the "
        f"pyramid ({args.coarse_steps} steps at each coarser level; whole pyramid "
        f"{pyramid_seconds:.1f} s)."
    )
    save(
        "pyramid",
        {
            "size": args.size,
            "sizes": sizes,
            "goal": goal,
            "single_seconds": single_seconds,
            "pyramid": reached,
            "ratio": ratio,
            "final_style_history": [float(v) for v in final],
        },
        markdown,
    )


if __name__ == "__main__":
    main()
