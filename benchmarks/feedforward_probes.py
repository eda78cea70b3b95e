"""Short training probes: which training settings bring a generator's loss closer to
optimisation's, for the same CPU time.

  python benchmarks/feedforward_probes.py NAME '{"batch_size": 4}' STEPS
  python benchmarks/feedforward_probes.py w16 '{"generator": {"width": 16}}' 200

Trains a generator from scratch with the default ``TrainConfig`` changed by the JSON
(``generator`` takes ``GeneratorConfig`` fields; ``photos``, a list of scikit-image photo
names, replaces the default photos), for ``STEPS`` steps, then scores it as
``feedforward.py`` does: the demo content (not a training photo, unless ``photos`` names
it) at 256 px, under the default objective. Each probe appends one line to
``results/feedforward_probes.jsonl``: its wall and compile seconds, seconds a step,
the style and content losses, the style loss over optimisation's (read from
``results/feedforward.json``, ``feedforward.py``'s last run) and the weighted loss the
training minimises (content + β style, without the small TV term).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from common import RESULTS, bench_weights
from feedforward import scores

import nst_jax
from nst_jax.data import Photos, default_photos
from nst_jax.nets.generator import GeneratorConfig
from nst_jax.tasks import train as training


def main() -> None:
    name, changes, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    spec = {k: v for k, v in changes.items() if k not in ("generator", "photos")}
    g = GeneratorConfig(**changes.get("generator", {}))
    config = training.TrainConfig(generator=g, steps=steps, **spec)
    optimised = json.loads((RESULTS / "feedforward.json").read_text())["scores"]["optimisation"]
    weights = bench_weights()
    paths = default_photos()
    if "photos" in changes:
        folder = paths[0].parent
        paths = [next(folder.glob(f"{photo}.*")) for photo in changes["photos"]]
    photos = Photos(paths, size=config.size, batch_size=config.batch_size, seed=config.seed)
    content_full, style_full = nst_jax.demo_images()
    t = time.perf_counter()
    trained = training.train_generator(
        style_full, config, weights=weights, photos=photos, progress=False
    )
    wall = time.perf_counter() - t
    content = nst_jax.resize_longest(content_full, 256)
    style = nst_jax.resize_longest(style_full, 256)
    variables = training._variables(trained.state.params, trained.state.batch_stats)
    output = training.apply_generator(variables, g, content)[0]
    network = nst_jax.prepare(weights, nst_jax.NetConfig(convolution="direct"))
    loss = nst_jax.LossConfig()
    s = scores(network, output, content, style, loss)
    row = {
        "name": name, "changes": changes, "steps": steps,
        "wall_s": round(wall, 1), "compile_s": round(trained.compile_seconds, 1),
        "s_per_step": round(trained.seconds_per_step, 3),
        "style": round(s["style"], 4), "content": round(s["content"], 4),
        "style_over_optimisation": round(s["style"] / optimised["style"], 2),
        "weighted": round(s["content"] + loss.style_weight * s["style"], 3),
        "train_style_last20": round(float(np.mean([h["style"] for h in trained.history[-20:]])), 4),
    }  # fmt: skip
    print(json.dumps(row))
    with open(RESULTS / "feedforward_probes.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
