"""Time to a great image, as a user waits for it: whole processes, scored independently.

  python benchmarks/time_to_quality.py [--sizes 256,512] [--pairs ...] [--cache cold|warm]

For each photo-painting pair and size, in the same run:

- the PyTorch peer (``torch_peer.py``: the tutorial's Gatys, L-BFGS, 100 evaluations) as
  its own process: its wall time and its output's scores;
- ``run.py --content C --style S --size N --save_every 10`` with default settings, as its
  own process: every snapshot is scored (``scoring.py``), timed by when its file was
  written, counted from the process start.

Reported: when the first snapshot at least as good as the peer's result was written
("at least as good": style and content error each within 10% of the peer's, or better),
when the first one as good as neural-style's published output was (each error no higher;
the two Golden Gate pairs), and the default run's total time and final scores. ``--cache
cold`` (the default) gives every run of ours a fresh, empty compilation cache: what a
first run costs; ``warm`` runs it once first and times the second run, what every later
run of the same size costs.

Pairs: Golden Gate with *The Starry Night* and with *The Scream* (neural-style's examples,
from ``../shared/images``), and the demo (Chelsea the cat with *The Starry Night*).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, machine, save, table
from scoring import PUBLISHED, SHARED, Scorer, peer_output

import nst_jax

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ("golden_gate:starry_night", "golden_gate:the_scream", "demo")
TITLES = {
    "golden_gate:starry_night": "Golden Gate × The Starry Night",
    "golden_gate:the_scream": "Golden Gate × The Scream",
    "demo": "demo: Chelsea × The Starry Night",
}
SLACK = 1.10  # "At least as good as the peer": each error within 10% of the peer's.


def pair_files(name: str, folder: Path) -> tuple[Path, Path]:
    if name == "demo":
        content, _ = nst_jax.demo_images()
        path = folder / "chelsea.png"
        nst_jax.save_image(path, content)
        return path, ROOT / "nst_jax" / "assets" / "starry_night.jpg"
    content, style = name.split(":")
    return SHARED / "images" / f"{content}.jpg", SHARED / "images" / f"{style}.jpg"


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """``(start time.time(), wall seconds, output)`` of a process."""
    start, t = time.time(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return start, wall, out.stdout + out.stderr


def run_peer(content: Path, style: Path, size: int, folder: Path, evals: int) -> dict:
    output = folder / f"peer_{size}.png"
    cmd = [sys.executable, "benchmarks/torch_peer.py", str(content), str(style), str(output)]
    _, wall, _ = timed([*cmd, "--size", str(size), "--evals", str(evals)])
    return {"wall_s": wall, "output": output}


def run_ours(content: Path, style: Path, size: int, folder: Path, cache: str, extra) -> dict:
    output = folder / f"ours_{size}.png"
    env = dict(os.environ)
    cmd = [sys.executable, "run.py", "--content", str(content), "--style", str(style)]
    cmd += ["--size", str(size), "--save_every", "10", "--output", str(output)]
    cmd += ["--report", str(folder / f"ours_{size}.json"), "--noprogress", *extra]
    env["NST_JAX_COMPILATION_CACHE"] = tempfile.mkdtemp(dir=folder, prefix="xla")
    if cache == "warm":
        timed(cmd, env)
        for p in folder.glob(f"ours_{size}*.png"):
            p.unlink()
    start, wall, _ = timed(cmd, env)
    snapshots = sorted(folder.glob(f"ours_{size}.step*.png"))
    times = [p.stat().st_mtime - start for p in snapshots]
    report = json.loads((folder / f"ours_{size}.json").read_text())
    history = report["runs"][-1]["tiles"][0]["history"]["total"]
    return {
        "history": history,
        "wall_s": wall,
        "output": output,
        "snapshots": list(zip(snapshots, times, strict=True)),
        "steps": report["runs"][-1]["steps"],
        "report": report,
    }


STOP_TOLS = (0.02, 0.03, 0.05, 0.1)


def stops(history: list[float], trajectory, config_window: int = 20) -> dict:
    """Where each candidate ``--stop_tol`` would have ended this run, from its loss history
    (the same rule the driver applies at every 10-step sync), and the snapshot's scores
    there: how the default was chosen."""
    from nst_jax.solve import driver

    h = np.asarray(history)
    by_step = {step: (t, st, c) for step, t, st, c in trajectory}
    out = {}
    for tol in STOP_TOLS:
        config = nst_jax.Config(stop_tol=tol, stop_window=config_window)
        best, done, stop = [np.array([h[0]])], [0], None
        for d in range(10, len(h) + 1, 10):
            best.append(np.minimum(best[-1], h[:d].min()))
            done.append(d)
            if driver.converged(best, done, config):
                stop = d
                break
        # None: not within this run (a smaller tolerance than the one it ran with).
        out[tol] = (stop, *by_step.get(stop, (None, None, None)))
    return out


def first_at(trajectory, style_max: float, content_max: float):
    """``(seconds, step)`` of the first snapshot with both errors at most these."""
    for step, seconds, style, content in trajectory:
        if style <= style_max and content <= content_max:
            return seconds, step
    return None, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--cache", choices=("cold", "warm"), default="cold")
    parser.add_argument("--peer_evals", type=int, default=100)
    parser.add_argument("--extra", default="", help="More flags for run.py, space-separated.")
    parser.add_argument("--replot", action="store_true", help="Only redraw the saved results.")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads((RESULTS / f"time_to_quality_{args.cache}.json").read_text())
        plot(saved["runs"], RESULTS / f"time_to_quality_{args.cache}.png")
        return
    scorer = Scorer(nst_jax.load_weights(progress=False))
    rows, data, stop_rows = [], [], []
    work = Path(tempfile.mkdtemp(prefix="ttq"))
    for name in args.pairs.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            folder = work / f"{name.replace(':', '_')}_{size}"
            folder.mkdir(parents=True)
            content, style = pair_files(name, folder)

            def score(path, content=content, style=style, size=size):
                return scorer.score_files(path, content, style, size)

            peer = run_peer(content, style, size, folder, args.peer_evals)
            peer_style, peer_content = score(peer["output"])
            ours = run_ours(content, style, size, folder, args.cache, args.extra.split())
            trajectory = []
            for path, seconds in ours["snapshots"]:
                step = int(path.name.split(".step")[1].split(".")[0])
                trajectory.append((step, seconds, *score(path)))
            final_style, final_content = score(ours["output"])
            to_peer = first_at(trajectory, SLACK * peer_style, SLACK * peer_content)
            for tol, (step, t, st, c) in stops(ours["history"], trajectory).items():
                if t is not None:
                    stop_rows.append({"pair": name, "size": size, "stop_tol": tol,
                                      "stops at step": step, "s": f"{t:.0f}",
                                      "style / content": f"{st:.3f} / {c:.3f}"})  # fmt: skip
            ns = None
            key = tuple(name.split(":")) if ":" in name else None
            if key in PUBLISHED:  # At other sizes, its output scored at that size.
                ns = PUBLISHED[key] if size == 512 else score(peer_output(*key))
            to_ns = first_at(trajectory, *ns) if ns else (None, None)
            row = {
                "pair": name,
                "size": size,
                "peer s": f"{peer['wall_s']:.0f}",
                "peer style/content": f"{peer_style:.3f} / {peer_content:.3f}",
                "ours to peer's quality s (step)": _at(to_peer),
                "vs peer": f"{to_peer[0] / peer['wall_s']:.2f}x" if to_peer[0] else "never",
                "neural-style style/content": f"{ns[0]:.3f} / {ns[1]:.3f}" if ns else "",
                "ours to neural-style's s (step)": _at(to_ns) if ns else "",
                "ours total s (steps)": f"{ours['wall_s']:.0f} ({ours['steps']})",
                "ours final style/content": f"{final_style:.3f} / {final_content:.3f}",
            }
            rows.append(row)
            print(row, flush=True)
            data.append(
                {
                    "pair": name,
                    "size": size,
                    "peer": {
                        "wall_s": peer["wall_s"],
                        "style": peer_style,
                        "content": peer_content,
                    },
                    "neural_style": ns,
                    "ours": {
                        "wall_s": ours["wall_s"],
                        "steps": ours["steps"],
                        "final": [final_style, final_content],
                        "trajectory": trajectory,
                        "to_peer_s": to_peer[0],
                        "to_neural_style_s": to_ns[0],
                        "timings": ours["report"].get("timings"),
                    },
                }
            )
    md = (
        f"Whole processes on this machine ({machine()['cpu']}), `--cache {args.cache}`; "
        f"the peer: PyTorch L-BFGS, {args.peer_evals} evaluations. Neural-style's scores "
        "at 512 px are its README's; at 256 px its output scored at 256 px.\n\n"
        + table(rows, list(rows[0]))
        + "\n\nWhere each stopping tolerance would have ended the default run (the rule "
        "applied to its loss history), and the scores there; tolerances below the run's "
        "own stop later than it did, so they are not listed:\n\n"
        + table(stop_rows, list(stop_rows[0]))
    )
    save(f"time_to_quality_{args.cache}", {"args": vars(args), "runs": data}, md)
    plot(data, RESULTS / f"time_to_quality_{args.cache}.png")


def _at(found) -> str:
    seconds, step = found
    return "never" if seconds is None else f"{seconds:.0f} ({step})"


def plot(data: list[dict], path: Path) -> None:
    """Style error against wall seconds, one panel per pair and size, peers marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib: pip install .[bench] for the plot")
        return
    pairs = list(dict.fromkeys(run["pair"] for run in data))
    sizes = sorted({run["size"] for run in data})
    fig, axes = plt.subplots(
        len(pairs), len(sizes), figsize=(4.2 * len(sizes), 2.6 * len(pairs)), squeeze=False
    )
    for run in data:
        ax = axes[pairs.index(run["pair"])][sizes.index(run["size"])]
        traj = np.array([(t, s) for _, t, s, _ in run["ours"]["trajectory"]])
        ax.plot(traj[:, 0], traj[:, 1], "o-", ms=3, label="nst_jax, defaults (snapshots)")
        ax.plot(run["peer"]["wall_s"], run["peer"]["style"], "s", c="C3", label="PyTorch peer")
        ax.axvline(run["peer"]["wall_s"] / 2, c="C3", ls=":", lw=1, label="half the peer's time")
        if run["neural_style"]:
            ax.axhline(run["neural_style"][0], c="C2", ls="--", lw=1, label="neural-style")
        title = TITLES.get(run["pair"], run["pair"])
        ax.set_title(f"{title}, {run['size']} px", fontsize=9)
        ax.set_xlim(0, max(run["peer"]["wall_s"], traj[-1, 0]) * 1.05)
        ax.set_ylim(0, 0.4)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("wall seconds from the process start", fontsize=8)
    for row in axes:
        row[0].set_ylabel("style error", fontsize=8)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
