"""Peak memory of one optimisation step at 512, 1024 and 2048 px: with Winograd
convolutions (the CPU default), direct ones, and direct ones rematerialising each VGG
block (``--remat``); and the time cost of remat, in the same run.

  python benchmarks/memory.py [--sizes 512,1024,2048] [--time_size 256]

Memory is XLA's own account of the compiled step (arguments + outputs + temporaries),
from ``compiled.memory_analysis()``: compiling needs no memory for the activations, so
every size is measured even where it would not fit. Beside it: the quick estimate the
CLI checks before compiling. Time: median seconds per step at ``--time_size``.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
from common import compiled_step, demo_pair, median_step_seconds, save, table

import nst_jax
from nst_jax import conv, memory, optimize
from nst_jax.objective import LossConfig


def compiled_bytes(weights, shape, config) -> int:
    """XLA's memory figure for the step at ``shape`` = (H, W), compiled from shapes."""
    static = dict(config=config, preprocessing=weights.preprocessing)
    content = jax.ShapeDtypeStruct((*shape, 3), jnp.float32)
    style = jax.ShapeDtypeStruct((min(shape), min(shape), 3), jnp.float32)
    setup = functools.partial(optimize.init, **static)
    params = conv.prepare(weights.params, config.convolution_algorithm(shape))
    targets, state = jax.eval_shape(setup, params, content, style, None, key=jax.random.key(0))
    step = optimize.jit(
        functools.partial(optimize.step, **static, optimizer=optimize.make_optimizer(config)),
        donate_argnums=(2,),
    )
    tw = optimize._term_weights(config, None)
    m = step.lower(params, targets, state, tw).compile().memory_analysis()
    return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--time_size", type=int, default=256)
    args = parser.parse_args()
    weights = nst_jax.load_weights(progress=False)
    gib = 2.0**30
    rows = []
    variants = {  # name: (convolution, remat)
        "winograd": ("winograd", False),
        "direct": ("direct", False),
        "direct+remat": ("direct", True),
    }
    for size in map(int, args.sizes.split(",")):
        shape = nst_jax.image.resized_shape((300, 451), size)  # The demo's aspect ratio.
        row = {"size": f"{shape[1]}x{shape[0]}"}
        for name, (convolution, remat) in variants.items():
            config = nst_jax.Config(loss=LossConfig(remat=remat), convolution=convolution)
            row[f"{name} GiB"] = round(compiled_bytes(weights, shape, config) / gib, 2)
            if not remat:  # The estimate ignores remat (see memory.estimate_bytes).
                estimate = memory.estimate_bytes(shape, config.loss, convolution=convolution)
                row[f"{name} estimate GiB"] = round(estimate / gib, 2)
        row["remat / direct"] = round(row["direct+remat GiB"] / row["direct GiB"], 2)
        rows.append(row)
        print(row, flush=True)
    content, style = demo_pair(args.time_size)
    seconds = {}
    for remat in (False, True, False):  # Plain timed first and last, to cancel drift.
        config = nst_jax.Config(loss=LossConfig(remat=remat), convolution="direct")
        step, params, targets, state, _ = compiled_step(weights, content, style, config)
        seconds.setdefault(remat, []).append(median_step_seconds(step, params, targets, state, 5))
    plain = sum(seconds[False]) / 2
    ratio = seconds[True][0] / plain
    columns = list(rows[0])
    markdown = (
        table(rows, columns)
        + f"\n\nStep time with remat at {args.time_size} px: {ratio:.2f}x the direct step "
        f"({seconds[True][0]:.3f} s vs {plain:.3f} s)."
    )
    save(
        "memory",
        {
            "rows": rows,
            "remat_time_ratio": ratio,
            "seconds": {str(k): v for k, v in seconds.items()},
        },
        markdown,
    )


if __name__ == "__main__":
    main()
