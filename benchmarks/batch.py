"""Images per second for batches of B contents, against B separate runs, on 1, 2 and 4
devices.

  python benchmarks/batch.py [--size 256] [--batches 1,2,4,8] [--devices 1,2,4]
                             [--rounds 3] [--steps 3]

A batch job (``nst_jax.batch``) runs B contents as one vmapped program whose batch axis
is sharded over the devices; a user without one runs each content alone. Both are timed
here, per optimisation step of the default objective at ``--size`` (the real VGG19
weights, the demo pair), in the programs a job compiles (``solve.programs.compile_run``,
with the network its policy picks for that batch).

Each device count runs in a process of its own, with that many devices: real ones
where the backend has them, simulated CPU devices otherwise
(``--xla_force_host_platform_device_count``). In each process the reference, one
content on one device, is timed in the same interleaved rounds as every batch, so
drift hits them alike. Figures are medians over rounds of the mean of ``--steps``
steps:

* **image-steps/s**: B divided by a batch step's seconds;
* **vs separate**: a batch step's seconds over B reference steps: below 1.0 a batch is
  cheaper than running its contents one by one.

Simulated devices share this machine's cores, so on a CPU more devices cannot be
faster: they show that sharding costs little. On accelerators the same script measures
what sharding gains (``benchmarks/gpu.sh``). Results: ``results/batch.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def measure(size: int, batches: list[int], devices: int, rounds: int, steps: int) -> dict:
    """In this process: seconds per step for each batch on ``devices`` devices, and for
    the reference (a batch of one on one device)."""
    import jax
    import jax.numpy as jnp
    from common import bench_weights, demo_pair

    import nst_jax
    from nst_jax.solve import placement as placing
    from nst_jax.solve import programs
    from nst_jax.solve.solver import term_weights_of
    from nst_jax.tasks import policy

    config = nst_jax.Config()
    weights = bench_weights()
    content, style = demo_pair(size)

    def runner(b: int, on: int):
        place = placing.Placement(placing.mesh_of(on))
        network = policy.plan(config, content.shape[:2], b).network(weights)
        tw = nst_jax.Terms(*(jnp.broadcast_to(w, (b,)) for w in term_weights_of(config)))
        keys = jnp.stack([jax.random.key(i) for i in range(b)])
        net, styles = place.shared((network, (style,)))
        args = (net, place.batched(np.stack([content] * b)), styles, None, None, None,
                place.batched(keys))  # fmt: skip
        tw = place.batched(tw)
        t = time.perf_counter()
        setup, step, _ = programs.compile_run(args, tw, config, placement=place)
        compile_s = time.perf_counter() - t
        targets, state = setup(*args)
        holder = [state]

        def run() -> float:
            jax.block_until_ready(holder[0].image)
            t = time.perf_counter()
            for _ in range(steps):
                holder[0], losses = step(net, targets, holder[0], tw)
            jax.block_until_ready(losses)
            return (time.perf_counter() - t) / steps

        run()  # Warm-up.
        return run, compile_s

    runs = {"reference": runner(1, 1)}
    for b in batches:
        if b % devices == 0:
            runs[b] = runner(b, devices)
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, (run, _) in runs.items():
            times[k].append(run())
    median = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "devices": devices,
        "device_kind": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "shape": list(content.shape[:2]),
        "reference_s": median["reference"],
        "rows": [
            {
                "batch": b,
                "step_s": median[b],
                "images_per_s": b / median[b],
                "vs_separate": median[b] / (b * median["reference"]),
                "per_round": [
                    t / (b * r) for t, r in zip(times[b], times["reference"], strict=True)
                ],
                "compile_s": runs[b][1],
            }
            for b in batches
            if b in runs
        ],
    }


def child(devices: int, args) -> dict:
    """``measure`` in a process of ``devices`` devices (simulated on a CPU)."""
    env = dict(os.environ)
    if _backend() == "cpu":
        flag = f"--xla_force_host_platform_device_count={devices}"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    command = [
        sys.executable, __file__, "--child", str(devices), "--size", str(args.size),
        "--batches", args.batches, "--rounds", str(args.rounds), "--steps", str(args.steps),
    ]  # fmt: skip
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{devices} devices failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _backend() -> str:
    import jax

    return jax.default_backend()


def plot(results: list[dict], path: Path) -> None:
    """Images per second against B, one line per device count, and the separate runs'
    rate as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for r in results:
        xs = [row["batch"] for row in r["rows"]]
        ax.plot(
            xs, [row["images_per_s"] for row in r["rows"]], "o-", label=f"{r['devices']} device(s)"
        )
    ref = float(np.median([1 / r["reference_s"] for r in results]))
    ax.axhline(ref, color="grey", ls="--", label="separate runs")
    ax.set_xscale("log", base=2)
    ax.set_xticks([row["batch"] for row in results[0]["rows"]] or [1])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("contents per batch (B)")
    ax.set_ylabel("image-steps per second")
    h, w = results[0]["shape"]
    ax.set_title(f"Batch steps at {w}x{h}, {results[0]['backend'].upper()}")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(measure(args.size, batches, args.child, args.rounds, args.steps)))
        return

    from common import RESULTS, save, table

    results = [child(int(d), args) for d in args.devices.split(",")]
    rows = []
    for r in results:
        for row in r["rows"]:
            rows.append({
                "devices": r["devices"],
                "B": row["batch"],
                "s/step": f"{row['step_s']:.3f}",
                "image-steps/s": f"{row['images_per_s']:.2f}",
                "separate, image-steps/s": f"{1 / r['reference_s']:.2f}",
                "vs separate": f"{row['vs_separate']:.2f}",
                "per round": f"{min(row['per_round']):.2f}-{max(row['per_round']):.2f}",
                "compile s": f"{row['compile_s']:.1f}",
            })  # fmt: skip
    h, w = results[0]["shape"]
    markdown = (
        f"Batch steps of the default objective at {w}x{h}, {results[0]['backend'].upper()} "
        f"({results[0]['device_kind']}); medians of {args.rounds} interleaved rounds of "
        f"{args.steps} steps. *vs separate*: a batch step over B steps of one content on "
        "one device, timed in the same process.\n\n" + table(rows, list(rows[0]))
    )
    save("batch", {"runs": results}, markdown)
    plot(results, RESULTS / "batch.png")


if __name__ == "__main__":
    main()
