"""Peak memory of one optimisation step at 512 to 4096 px: with Winograd convolutions
(the CPU default), direct ones (as on GPU), and ``--remat`` (VGG in strips,
``nst_jax/nets/remat.py``) with each; a real step's resident memory at one size; and the
time cost of remat, in the same run.

  python benchmarks/memory.py [--sizes 512,1024,2048,4096] [--rss_size 2048]
                              [--time_sizes 256,512]

Memory is XLA's own account of the compiled step (arguments + outputs + temporaries),
from ``compiled.memory_analysis()``: compiling needs no memory for the activations, so
every size is measured even where it would not fit. Beside it: the quick estimate the
CLI checks before compiling. To check that account against the process, each variant
runs for real at ``--rss_size`` in a fresh subprocess (Linux), which reports its
resident memory: at the peak of compiling and setting up, and a step's own peak (the
high-water mark is reset before it). Time: median seconds per step, the four variants
interleaved; each remat variant against the plain step with the same convolutions.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import jax
from common import compiled_step, demo_pair, median_step_seconds, save, table

import nst_jax
from nst_jax import NetConfig, memory, solve

GIB = 2.0**30
VARIANTS = {  # name: (convolution, remat)
    "winograd": ("winograd", False),
    "direct": ("direct", False),
    "remat": ("winograd", True),  # --remat on CPU.
    "remat_direct": ("direct", True),  # --remat where direct convolutions run (GPU).
}
PAIRS = (("remat", "winograd"), ("remat_direct", "direct"))  # Each against its plain step.


def _config(variant: str) -> nst_jax.Config:
    convolution, remat = VARIANTS[variant]
    return nst_jax.Config(net=NetConfig(convolution=convolution, remat=remat))


def compiled_bytes(weights, shape, config) -> int:
    """XLA's memory figure for the step at ``shape`` = (H, W), compiled from shapes."""
    analysis = solve.step_memory(nst_jax.prepare(weights, config.net), shape, config)
    return memory.analysis_bytes(analysis)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def measure_one(variant: str, size: int) -> dict:
    """A real run in this process: resident memory once the weights are loaded, the peak
    while compiling and setting up, and the peak of one step above its start (Linux's
    high-water mark, reset before the step)."""
    weights = nst_jax.load_weights(progress=False)
    content, style = demo_pair(size)
    loaded = _status("VmRSS")
    step, network, targets, state, _ = compiled_step(weights, content, style, _config(variant))
    setup = _status("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:  # Resets VmHWM to the current RSS.
        f.write("5")
    before = _status("VmRSS")
    jax.block_until_ready(step(network, targets, state))
    return {"loaded": loaded, "setup": setup, "before": before, "peak": _status("VmHWM")}


def measured_gib(variant: str, size: int) -> dict:
    """GiB above the loaded weights at the setup's peak, and a step's rise above its start."""
    command = [sys.executable, __file__, "--measure_one", f"{variant}:{size}"]
    r = json.loads(subprocess.run(command, check=True, capture_output=True).stdout)
    return {
        "setup": round((r["setup"] - r["loaded"]) / GIB, 2),
        "step": round((r["peak"] - r["before"]) / GIB, 2),
        "run": round((max(r["setup"], r["peak"]) - r["loaded"]) / GIB, 2),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="512,1024,2048,4096")
    parser.add_argument("--rss_size", type=int, default=2048)
    parser.add_argument("--time_sizes", default="256,512")
    parser.add_argument("--measure_one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_one:
        variant, size = args.measure_one.split(":")
        print(json.dumps(measure_one(variant, int(size))))
        return
    weights = nst_jax.load_weights(progress=False)
    rows = []
    for size in map(int, args.sizes.split(",")):
        shape = nst_jax.image.resized_shape((300, 451), size)  # The demo's aspect ratio.
        row = {"size": f"{shape[1]}x{shape[0]}"}
        for name in VARIANTS:
            config = _config(name)
            row[f"{name} GiB"] = round(compiled_bytes(weights, shape, config) / GIB, 2)
            estimate = memory.estimate_bytes(shape, config.loss, config.net)
            row[f"{name} estimate GiB"] = round(estimate / GIB, 2)
        for lean, plain in PAIRS:
            row[f"{lean} / {plain}"] = round(row[f"{lean} GiB"] / row[f"{plain} GiB"], 2)
        rows.append(row)
        print(row, flush=True)

    rss = {name: measured_gib(name, args.rss_size) for name in VARIANTS}
    print("rss", rss, flush=True)

    times = []
    for size in map(int, args.time_sizes.split(",")):
        content, style = demo_pair(size)
        seconds = {}
        for variant in (*VARIANTS, *VARIANTS):  # Interleaved, for drift.
            step, network, targets, state, _ = compiled_step(
                weights, content, style, _config(variant)
            )
            median = median_step_seconds(step, network, targets, state, 5)
            seconds.setdefault(variant, []).append(median)
        mean = {v: sum(s) / len(s) for v, s in seconds.items()}
        row = {"size": size, **{f"{v} s": round(t, 3) for v, t in mean.items()}}
        for lean, plain in PAIRS:
            row[f"{lean} / {plain}"] = round(mean[lean] / mean[plain], 2)
        times.append(row)
        print(times[-1], flush=True)

    columns = list(rows[0])
    rss_rows = [
        {"variant": name, **{f"{k} GiB": v for k, v in r.items()}} for name, r in rss.items()
    ]
    markdown = (
        table(rows, columns)
        + f"\n\nA real run at {args.rss_size} px, each in a fresh process: resident memory "
        "above the loaded weights at the peak of compiling and setting up (setup), a step's "
        "rise above its start (step), and the whole run's peak (run).\n\n"
        + table(rss_rows, list(rss_rows[0]))
        + "\n\nStep time, the variants interleaved (median of 5 steps, mean of 2 rounds):"
        "\n\n" + table(times, list(times[0]))
    )
    save(
        "memory",
        {"rows": rows, "rss_gib": rss, "rss_size": args.rss_size, "times": times},
        markdown,
    )


if __name__ == "__main__":
    main()
