"""Seconds per optimisation step, compile time and achieved FLOP/s; JAX against PyTorch.

  python benchmarks/step.py [--sizes 256,512] [--rounds 7]

Four implementations of the same step, timed in interleaved rounds so that this
machine's drift hits them alike; each figure is the median over rounds of the mean time
of ``STEPS`` steps:

* **JAX**: the step ``nst_jax.stylize`` compiles by default (Adam, the default layers
  and losses, a batch of one): on CPU, Winograd convolutions from block 2 on
  (``nets/conv.py``), Eigen rather than YNNPACK for the rest (``solve.jit``).
* **JAX direct**: the same with ``convolution="direct"``: XLA's convolutions, with the
  image gradient given pre-transposed kernels.
* **XLA defaults**: the same step under plain ``jax.jit`` with ``convolution="plain"``,
  autodiff's convolutions: the reference the tuning is measured against.
* **PyTorch**: a plain eager implementation of the same step: the same VGG19 weights,
  layers, pooling, Gram/content/TV losses and Adam update. PyTorch is optional
  (``pip install torch==2.13.0``); without it that column is empty.

FLOPs are XLA's cost analysis of the compiled direct step: the model's work. The
*effective* rate divides that by the default step's time, as fast convolution
algorithms are usually reported (Lavin & Gray 2016); the *direct* rate is the direct
step's own. The matmul peak is the best 2048x2048 float32 matmul seen across the rounds.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch_ref
from common import bench_weights, best_of, compiled_step, demo_pair, save, table

import nst_jax
from nst_jax import solve

STEPS = 3


def jax_runner(weights, content, style, config, *, tuned=True):
    """``(run, compile seconds, flops per step)``; ``run()`` times ``STEPS`` steps."""
    step, network, targets, state, compile_seconds = compiled_step(
        weights, content, style, config, tuned=tuned
    )
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", float("nan")))
    holder = [state]

    def run() -> float:
        jax.block_until_ready(holder[0].image)
        t = time.perf_counter()
        for _ in range(STEPS):
            holder[0], losses = step(network, targets, holder[0])
        jax.block_until_ready(losses)
        return (time.perf_counter() - t) / STEPS

    run()  # Warm-up.
    return run, compile_seconds, flops


def torch_runner(weights, content, style, config):
    """``run()`` timing ``STEPS`` steps of the same step in eager PyTorch
    (``torch_ref.Objective``); None without torch."""
    if not torch_ref.available():
        return None
    import torch

    objective = torch_ref.Objective(weights, config.loss, config.net.pooling, style)
    target = torch_ref.to_torch(content)
    content_features = objective.content_features(target)
    image = target.clone().requires_grad_(True)
    opt = torch.optim.Adam([image], lr=config.lr)

    def one_step():
        opt.zero_grad()
        loss = objective.loss(image, content_features)[0]
        loss.backward()
        opt.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        return float(loss.detach())

    def run() -> float:
        t = time.perf_counter()
        for _ in range(STEPS):
            one_step()
        return (time.perf_counter() - t) / STEPS

    one_step()  # Warm-up.
    return run


def matmul_gflops(n: int = 2048) -> float:
    """The best rate of an ``n x n`` float32 matmul, under both compilations."""
    a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
    times = [
        best_of(jit(lambda a, b: a @ b), a, a + 1.0, repeats=3) for jit in (jax.jit, solve.jit)
    ]
    return 2 * n**3 / min(times) / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    weights = bench_weights()
    config = nst_jax.Config(optimizer="adam")
    direct = config.replace(net=dict(convolution="direct"))
    peak = matmul_gflops()
    rows, data = [], {"rounds": args.rounds, "sizes": {}}
    for size in map(int, args.sizes.split(",")):
        content, style = demo_pair(size)
        fast, compile_seconds, _ = jax_runner(weights, content, style, config)
        slow, _, flops = jax_runner(weights, content, style, direct)
        plain, _, _ = jax_runner(weights, content, style, config, tuned=False)
        runners = {"jax": fast, "jax_direct": slow, "xla_defaults": plain}
        torch_run = torch_runner(weights, content, style, config)
        if torch_run is not None:
            runners["torch"] = torch_run
        times = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                times[name].append(run())
            peak = max(peak, matmul_gflops())
        med = {name: float(np.median(t)) for name, t in times.items()}
        seconds, torch_seconds = med["jax"], med.get("torch")
        ratios = [j / t for j, t in zip(times["jax"], times.get("torch", []), strict=False)]
        data["sizes"][size] = dict(
            seconds=times, median=med, compile_seconds=compile_seconds, direct_flops=flops
        )
        effective, achieved = flops / seconds / 1e9, flops / med["jax_direct"] / 1e9
        rows.append(
            {
                "size": f"{content.shape[1]}x{content.shape[0]}",
                "JAX s/step": f"{seconds:.3f}",
                "JAX direct": f"{med['jax_direct']:.3f}",
                "XLA defaults": f"{med['xla_defaults']:.3f}",
                "PyTorch": "-" if torch_seconds is None else f"{torch_seconds:.3f}",
                "JAX/PyTorch": "-" if torch_seconds is None else f"{seconds / torch_seconds:.2f}",
                "per round": "-" if not ratios else f"{min(ratios):.2f}-{max(ratios):.2f}",
                "GFLOP/step": f"{flops / 1e9:.1f}",
                "effective GFLOP/s": f"{effective:.0f} ({effective / peak:.0%})",
                "direct GFLOP/s": f"{achieved:.0f} ({achieved / peak:.0%})",
                "compile s": f"{compile_seconds:.1f}",
            }
        )
        print(rows[-1], flush=True)
    data["matmul_peak_gflops"] = peak
    md = (
        f"One Adam step of the default objective (VGG19 to conv5_1), CPU, "
        f"{jax.device_count()} device(s); seconds per step, medians of {args.rounds} "
        f"interleaved rounds of {STEPS} steps; in brackets, the share of the matmul peak "
        f"({peak:.0f} GFLOP/s) measured in the same run.\n\n" + table(rows, list(rows[0]))
    )
    save("step", data, md)


if __name__ == "__main__":
    main()
