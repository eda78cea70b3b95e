"""Short training probes: which training settings bring a generator's loss closer to
optimisation's, for the same CPU time, and where the gap comes from.

  python benchmarks/feedforward_probes.py NAME JSON STEPS [OUTPUT.png]
  python benchmarks/feedforward_probes.py w16 '{"generator": {"width": 16}}' 200
  python benchmarks/feedforward_probes.py whole '{"size": 256, "scales": [1, 1]}' 200
  python benchmarks/feedforward_probes.py cat '{"fixed": [170, 256], "photos": ["chelsea"]}' 20
  python benchmarks/feedforward_probes.py crops
  python benchmarks/feedforward_probes.py score NAME MODEL_DIR [OUTPUT.png]
  python benchmarks/feedforward_probes.py figure OUT.png LABEL=IMAGE ...

Trains a generator from scratch with the default ``TrainConfig`` changed by the JSON
(``generator`` takes ``GeneratorConfig`` fields; ``loss``, ``LossConfig`` fields of the
training objective only, the scoring keeps the defaults; ``photos``, a list of scikit-image photo
names, replaces the default photos; ``scales``, the range of a sample's short side in
crops, replaces ``data.SCALES``), for ``STEPS`` steps, then scores it as
``feedforward.py`` does: the demo content (not a training photo, unless ``photos`` names
it) at 256 px, under the default objective.

With ``fixed: [H, W]`` there is no augmentation: the named photos (``chelsea``, the demo
content, among them if asked), each resized to cover H x W and cut from its centre, are
the batch of every step, with the style at the longest side of H x W. Trained on the demo
content alone at its scored size, this shows what the generator and its optimiser can
reach with nothing to generalise; on a few other photos, what they reach on photos they
have seen.

``OUTPUT.png``, if given, receives the generator's output on the demo content.

Each probe appends one line to ``results/feedforward_probes.jsonl``: its wall and
compile seconds, seconds a step, the style and content losses, the style loss over
optimisation's (read from ``results/feedforward.json``, ``feedforward.py``'s last run),
the weighted loss the training minimises (content + β style, without the small TV
term), and the training batches' own style and content losses over the last 20 steps.

``score`` scores a generator that ``run.py --mode train`` made, the same way, e.g. one
trained with another ``--style_weight``.

``figure`` puts images (the outputs above) side by side, each under its label, cut to
the smallest's size.

``crops`` scores the optimisation result itself (``stylize`` with the defaults at 256 px)
whole and on random 128 px crops (the default training crops) against the same style
targets, layer by layer: how far the loss of crops, which training minimises, is from
the loss of whole pictures, which the result is scored by.
"""

from __future__ import annotations

import json
import sys
import time

import jax.numpy as jnp
import numpy as np
from common import RESULTS, bench_weights
from feedforward import scores

import nst_jax
from nst_jax.checkpoint import latest_step as checkpoint_step
from nst_jax.data import Photos, default_photos
from nst_jax.nets.generator import GeneratorConfig
from nst_jax.tasks import policy, trained
from nst_jax.tasks import train as training

EXTRA = ("generator", "loss", "photos", "scales", "fixed")  # Keys that are not TrainConfig fields.


def photo_paths(names: list[str] | None) -> list:
    paths = default_photos()
    if names is None:
        return paths
    folder = paths[0].parent
    return [next(folder.glob(f"{name}.*")) for name in names]


def covering(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resized to cover ``shape`` and cut from its centre: ``[*shape, 3]``."""
    h, w = image.shape[:2]
    k = max(shape[0] / h, shape[1] / w)
    image = nst_jax.resize(image, (max(shape[0], round(h * k)), max(shape[1], round(w * k))))
    y, x = (image.shape[0] - shape[0]) // 2, (image.shape[1] - shape[1]) // 2
    return image[y : y + shape[0], x : x + shape[1]]


def train_fixed(style, config, weights, batch):
    """``train_step`` on the same ``batch`` ``[B, H, W, 3]`` every step: ``(state,
    history, seconds a step, compile seconds)``."""
    shape = batch.shape[1:3]
    style = nst_jax.resize_longest(style, max(shape))
    plan = policy.plan(nst_jax.Config(loss=config.loss, net=config.net), shape, len(batch))
    network = plan.network(weights)
    targets = nst_jax.style_targets(network, style, config.loss, shape=shape)
    state = training.init_state(config)
    t = time.perf_counter()
    step = training.compile_step(network, targets, state, batch, config)
    compile_s = time.perf_counter() - t
    rates, history, times = training.schedule(config), [], []
    for k in range(config.steps):
        t = time.perf_counter()
        lr, key = jnp.float32(rates(k)), training.noise_key(config, k)
        state, metrics = step(network, targets, state, batch, lr, key)
        history.append({name: float(v) for name, v in metrics.items()})
        times.append(time.perf_counter() - t)
    return state, history, float(np.median(times[1:])), compile_s


def probe(name: str, changes: dict, steps: int, save: str | None = None) -> dict:
    spec = {k: v for k, v in changes.items() if k not in EXTRA}
    g = GeneratorConfig(**changes.get("generator", {}))
    trained_by = nst_jax.LossConfig(**changes.get("loss", {}))
    config = training.TrainConfig(generator=g, loss=trained_by, steps=steps, **spec)
    weights = bench_weights()
    paths = photo_paths(changes.get("photos"))
    _, style_full = nst_jax.demo_images()
    t = time.perf_counter()
    if "fixed" in changes:
        shape = tuple(changes["fixed"])
        batch = np.stack([covering(nst_jax.load_image(p), shape) for p in paths])
        state, history, per_step, compile_s = train_fixed(style_full, config, weights, batch)
    else:
        scales = tuple(changes.get("scales", nst_jax.data.SCALES))
        photos = Photos(paths, size=config.size, batch_size=config.batch_size,
                        seed=config.seed, scales=scales)  # fmt: skip
        trained = training.train_generator(
            style_full, config, weights=weights, photos=photos, progress=False
        )
        state, history = trained.state, trained.history
        per_step, compile_s = trained.seconds_per_step, trained.compile_seconds
    wall = time.perf_counter() - t
    variables = training.generator_variables(state.params, state.batch_stats)
    last = history[-20:]
    return {
        "name": name, "changes": changes, "steps": steps,
        "wall_s": round(wall, 1), "compile_s": round(compile_s, 1),
        "s_per_step": round(per_step, 3),
        **score(weights, g, variables, save),
        "train_style_last20": round(float(np.mean([h["style"] for h in last])), 4),
        "train_content_last20": round(float(np.mean([h["content"] for h in last])), 4),
    }  # fmt: skip


def score(weights, g: GeneratorConfig, variables: dict, save: str | None) -> dict:
    """The generator's style and content losses on the demo content at 256 px under the
    default objective, over optimisation's, and weighted as training weighs them by
    default (content + β style); its output written to ``save`` if given."""
    optimised = json.loads((RESULTS / "feedforward.json").read_text())["scores"]["optimisation"]
    content_full, style_full = nst_jax.demo_images()
    content = nst_jax.resize_longest(content_full, 256)
    style = nst_jax.resize_longest(style_full, 256)
    output = trained.apply_generator(variables, g, content)[0]
    if save:
        nst_jax.save_image(save, output)
    network = nst_jax.prepare(weights, nst_jax.NetConfig(convolution="direct"))
    loss = nst_jax.LossConfig()
    s = scores(network, output, content, style, loss)
    return {
        "style": round(s["style"], 4), "content": round(s["content"], 4),
        "style_over_optimisation": round(s["style"] / optimised["style"], 2),
        "weighted": round(s["content"] + loss.style_weight * s["style"], 3),
    }  # fmt: skip


def score_model(name: str, model: str, save: str | None) -> dict:
    """``score`` of the generator in ``model``, with the training settings it records."""
    g, variables, meta = trained.load_generator(model)
    train = meta["train"]
    return {
        "name": name, "model": model, "steps": checkpoint_step(model),
        "trained_with": {"loss": {k: train["loss"][k] for k in ("style_weight", "content_layers")}},
        **score(bench_weights(), g, variables, save),
    }  # fmt: skip


def crops(count: int = 8, side: int = 128) -> dict:
    """The optimisation result's losses, whole and on ``count`` random ``side`` px
    crops (each against the content's same crop), per style layer."""
    weights = bench_weights()
    content_full, style_full = nst_jax.demo_images()
    content = nst_jax.resize_longest(content_full, 256)
    style = nst_jax.resize_longest(style_full, 256)
    result = np.asarray(nst_jax.stylize(content, style, nst_jax.Config(), progress=False).image)
    network = nst_jax.prepare(weights, nst_jax.NetConfig(convolution="direct"))
    layers = nst_jax.LossConfig().style_layers

    def per_layer(image, photo):
        out = {}
        for layer in layers:
            s = scores(network, image, photo, style, nst_jax.LossConfig(style_layers=(layer,)))
            out[layer], out["content"] = s["style"], s["content"]
        out["style"] = float(np.mean([out[layer] for layer in layers]))
        return out

    rng = np.random.default_rng(0)
    cut = []
    for _ in range(count):
        y = rng.integers(0, content.shape[0] - side + 1)
        x = rng.integers(0, content.shape[1] - side + 1)
        window = np.s_[y : y + side, x : x + side]
        cut.append(per_layer(result[window], content[window]))
    whole = per_layer(result, content)
    mean = {k: float(np.mean([c[k] for c in cut])) for k in whole}
    return {
        "name": "crops", "crop_side": side, "crops": count,
        "whole": {k: round(v, 4) for k, v in whole.items()},
        "crops_mean": {k: round(v, 4) for k, v in mean.items()},
    }  # fmt: skip


def figure(out: str, specs: list[str]) -> None:
    """``LABEL=IMAGE`` specs side by side in one labelled row, written to ``out``."""
    labels, images = zip(*(spec.split("=", 1) for spec in specs), strict=True)
    tiles = [nst_jax.load_image(path) for path in images]
    h, w = min(t.shape[0] for t in tiles), min(t.shape[1] for t in tiles)
    row = np.stack([t[:h, :w] for t in tiles])[None]
    nst_jax.save_image(out, nst_jax.grid.labelled_grid(row, list(labels)))


def main() -> None:
    if sys.argv[1] == "figure":
        figure(sys.argv[2], sys.argv[3:])
        return
    if sys.argv[1] == "crops":
        row = crops()
    elif sys.argv[1] == "score":
        row = score_model(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        save = sys.argv[4] if len(sys.argv) > 4 else None
        row = probe(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), save)
    print(json.dumps(row))
    with open(RESULTS / "feedforward_probes.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
