"""Feed-forward generators against optimisation, and against PyTorch.

  python benchmarks/feedforward.py [--model demo_model] [--rounds 3]

In one run:

* **Training step**: seconds per step of the pyramid generator at 256 px, batch 4, with
  the default training objective (``tasks/train.py``): JAX's compiled step against the
  same step in eager PyTorch (the same generator and parameters, the same VGG19 loss,
  Adam), timed in interleaved rounds.
* **Apply**: one forward pass at 256, 512 and 1024 px (the longest side, the demo
  content's aspect), JAX against PyTorch, after a warm-up each.
* **Against optimisation**: ``nst_jax.stylize`` of the demo content at 256 px with the
  default settings (Adam until the stopping rule ends it), timed whole and without its
  compiling; and the trained generator in ``--model`` (the README's training command
  makes ``demo_model``) applied to the same content. Both outputs are scored under the
  same objective (the default ``LossConfig`` at 256 px, optimisation's; training weighs
  style twice as much): style and content losses. The content, Chelsea the cat, is not
  among the training photos.

* **Contrast** (with ``--batch_model``, a generator trained the same way with
  ``--norm batch``): each generator applied to the content and to a low-contrast copy
  (``0.3 x + 0.35``); how far apart the two outputs' style statistics fall: the style
  loss of the low-contrast output against the Gram targets of the normal one (0 when
  they match), as Ulyanov, Vedaldi & Lempitsky (2016) show.

Results: ``results/feedforward.{md,json}``, ``docs/feedforward.png`` (content, style,
optimisation result, feed-forward result), and with ``--batch_model``
``docs/contrast.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch_ref
from common import bench_weights, save, table

import nst_jax
from nst_jax.nets import generator
from nst_jax.tasks import train as training
from nst_jax.tasks import trained

ROOT = Path(__file__).resolve().parent.parent


def jax_train_step(weights, config, photos):
    """``run()`` timing one compiled training step on ``photos`` ``[B, S, S, 3]``."""
    from nst_jax.tasks import policy

    s = config.size
    _, style = nst_jax.demo_images()
    style = nst_jax.resize_longest(style, round(s * config.style_scale))
    plan = policy.plan(nst_jax.Config(loss=config.loss, net=config.net), (s, s), len(photos))
    network = plan.network(weights)
    targets = nst_jax.style_targets(network, style, config.loss, shape=(s, s))
    holder = [training.init_state(config)]
    step = training.compile_step(network, targets, holder[0], photos, config)

    lr, key = jnp.float32(config.lr), training.noise_key(config, 0)

    def run() -> float:
        jax.block_until_ready(holder[0].params)
        t = time.perf_counter()
        holder[0], metrics = step(network, targets, holder[0], photos, lr, key)
        jax.block_until_ready(metrics)
        return time.perf_counter() - t

    run()
    return run


def torch_train_step(weights, config, photos):
    """The same step in eager PyTorch: generator, VGG19 loss, backward, Adam."""
    import torch

    s = config.size
    _, style = nst_jax.demo_images()
    objective = torch_ref.Objective(
        weights, config.loss, config.net.pooling,
        nst_jax.resize_longest(style, round(s * config.style_scale)),
    )  # fmt: skip
    variables = generator.init(jax.random.key(config.seed), config.generator)
    forward, params = torch_ref.pyramid(variables, config.generator)
    opt = torch.optim.Adam(params, lr=config.lr)
    content = torch_ref.to_torch(photos)
    shapes = generator.noise_shapes(config.generator, (s, s))

    def run() -> float:
        t = time.perf_counter()
        opt.zero_grad()
        noise = [torch.rand(len(photos), c, h, w, device=content.device) for h, w, c in shapes]
        images = forward(content, noise)
        total, *_ = objective.loss(images, objective.content_features(content))
        total.backward()
        opt.step()
        float(total)
        return time.perf_counter() - t

    run()
    return run


def apply_runners(variables, g, content):
    """``{name: run()}`` timing one forward pass on ``content`` in JAX and PyTorch."""
    x = jnp.asarray(content)
    fn = jax.jit(lambda v, x, k: generator.apply(v, g, x, k))
    key = jax.random.key(0)

    def jax_run() -> float:
        t = time.perf_counter()
        jax.block_until_ready(fn(variables, x, key))
        return time.perf_counter() - t

    jax_run()
    runners = {"jax": jax_run}
    if torch_ref.available():
        import torch

        forward, _ = torch_ref.pyramid(variables, g)
        c = torch_ref.to_torch(content)
        shapes = generator.noise_shapes(g, content.shape[:2])

        def torch_run() -> float:
            t = time.perf_counter()
            with torch.no_grad():
                noise = [torch.rand(1, n, h, w, device=c.device) for h, w, n in shapes]
                forward(c, noise).cpu()
            return time.perf_counter() - t

        torch_run()
        runners["torch"] = torch_run
    return runners


def interleaved(runners: dict, rounds: int) -> dict[str, list[float]]:
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, run in runners.items():
            times[k].append(run())
    return times


def scores(network, image, content, style, loss) -> dict[str, float]:
    """The default objective's style and content losses of ``image`` as a stylisation
    of ``content`` with ``style``."""
    targets = nst_jax.Targets(
        nst_jax.content_targets(network, content, loss),
        nst_jax.style_targets(network, style, loss, shape=content.shape[:2]),
    )
    terms = nst_jax.objective.loss_terms(network, image, targets, loss)
    return {"style": float(terms.style), "content": float(terms.content)}


def contrast(network, content, models) -> tuple[str, dict]:
    """Each model on ``content`` and on a low-contrast copy; the style distance between
    the two outputs, and a figure."""
    low = 0.3 * content + 0.35
    loss = nst_jax.LossConfig()
    rows, tiles, labels, data = [], [], [], {}
    for model in models:
        g, variables, _ = trained.load_generator(model)
        a = trained.apply_generator(variables, g, content)[0]
        b = trained.apply_generator(variables, g, low)[0]
        gap = scores(network, b, a, a, loss)["style"] / max(
            scores(network, content, a, a, loss)["style"], 1e-12
        )
        data[g.norm] = {"style_gap": gap}
        rows.append(
            {"normalisation": g.norm, "style distance, low vs normal contrast": f"{gap:.2e}"}
        )
        tiles.append([content, a, low, b])
        labels.append(f"{g.norm} norm")
    inst, batch = data["instance"]["style_gap"], data["batch"]["style_gap"]
    # Instance norm of an affine contrast change is exact: its gap is float rounding.
    further = (
        f"{batch / inst:.0f}x further apart" if inst > 1e-4 else
        f"{batch:.3f} apart; with instance normalisation they match to float rounding"
    )  # fmt: skip
    grid = nst_jax.grid.labelled_grid(
        np.stack(tiles), ["content", "its output", "contrast x0.3", "its output"], labels
    )
    nst_jax.save_image(ROOT / "docs" / "contrast.png", grid)
    md = (
        "**Contrast**: the style loss of the low-contrast content's output against the "
        "normal one's Gram targets, over the same loss of the content itself (0: the same "
        "style statistics):\n\n"
        + table(rows, list(rows[0]))
        + f"\n\nWith batch normalisation the two fall {further}."
    )
    return md, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "demo_model"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch_model", default=None)
    args = parser.parse_args()
    weights = bench_weights()
    data: dict = {"rounds": args.rounds}

    # Training steps, JAX against PyTorch.
    config = training.TrainConfig(size=256, batch_size=4)
    rng = np.random.default_rng(0)
    photos = np.stack(
        [nst_jax.resize(nst_jax.demo_images()[0], (256, 256))] * 2
        + [rng.random((256, 256, 3)).astype(np.float32)] * 2
    )
    runners = {"jax": jax_train_step(weights, config, photos)}
    if torch_ref.available():
        runners["torch"] = torch_train_step(weights, config, photos)
    train_times = interleaved(runners, args.rounds)
    train = {k: float(np.median(v)) for k, v in train_times.items()}
    data["train_step"] = {"seconds": train_times, "median": train}

    # The trained generator against an optimisation run.
    content_full, style_full = nst_jax.demo_images()
    content = nst_jax.resize_longest(content_full, args.size)
    style = nst_jax.resize_longest(style_full, args.size)
    g, variables, meta = trained.load_generator(args.model)
    t = time.perf_counter()
    optimised = nst_jax.stylize(content, style, nst_jax.Config(), weights=weights, progress=False)
    stylize_wall = time.perf_counter() - t
    stylize_steps = optimised.seconds_per_step * optimised.steps
    fed = trained.apply_generator(variables, g, content)[0]

    # One forward pass, JAX against PyTorch, at three sizes.
    apply_rows, apply_data = [], {}
    for side in (256, 512, 1024):
        x = nst_jax.resize_longest(content_full, side)
        times = interleaved(apply_runners(variables, g, x), args.rounds)
        med = {k: float(np.median(v)) for k, v in times.items()}
        apply_data[side] = {"seconds": times, "median": med}
        apply_rows.append({
            "size": f"{x.shape[1]}x{x.shape[0]}",
            "JAX s": f"{med['jax']:.4f}",
            "PyTorch s": f"{med['torch']:.4f}" if "torch" in med else "-",
            "JAX/PyTorch": f"{med['jax'] / med['torch']:.2f}" if "torch" in med else "-",
        })  # fmt: skip
    data["apply"] = apply_data
    apply_s = apply_data[256]["median"]["jax"] if args.size == 256 else None
    if apply_s is None:
        apply_s = float(np.median(interleaved(apply_runners(variables, g, content), 3)["jax"]))

    network = nst_jax.prepare(weights, nst_jax.NetConfig(convolution="direct"))
    loss = nst_jax.LossConfig()
    score = {
        "optimisation": scores(network, optimised.image, content, style, loss),
        "feed-forward": scores(network, fed, content, style, loss),
        "content itself": scores(network, content, content, style, loss),
    }
    data.update(
        stylize_wall_s=stylize_wall, stylize_steps_s=stylize_steps, apply_s=apply_s,
        scores=score, model=args.model, model_meta={k: meta[k] for k in ("generator", "train")},
        trained_steps=meta.get("step"),
    )  # fmt: skip

    h, w = content.shape[:2]
    rows = [
        {"output": name, "style loss": f"{s['style']:.4g}", "content loss": f"{s['content']:.4g}",
         "style / optimisation's": f"{s['style'] / score['optimisation']['style']:.2f}"}
        for name, s in score.items()
    ]  # fmt: skip
    tj, tt = train["jax"], train.get("torch")
    md = "\n\n".join([
        f"Feed-forward generator ({g.kind}, {g.norm} norm, trained {meta.get('step')} steps "
        f"at {meta['train']['size']} px) on the demo content at {w}x{h}, CPU; medians of "
        f"{args.rounds} interleaved rounds.",
        f"**Training step**, 256 px, batch 4: JAX {tj:.3f} s"
        + (f", PyTorch {tt:.3f} s: {tj / tt:.2f}x PyTorch's time." if tt else "."),
        "**One forward pass:**\n\n" + table(apply_rows, list(apply_rows[0])),
        f"**Against optimisation** at {w}x{h}: `stylize` with the defaults "
        f"({optimised.steps} Adam steps, the stopping rule's) "
        f"took {stylize_wall:.1f} s whole, {stylize_steps:.1f} s without compiling; one "
        f"forward pass {apply_s * 1000:.1f} ms: {stylize_steps / apply_s:.0f}x faster than the "
        f"steps alone, {stylize_wall / apply_s:.0f}x faster than the whole run.",
        "Losses under the default objective:\n\n" + table(rows, list(rows[0])),
    ])  # fmt: skip
    if args.batch_model:
        contrast_md, data["contrast"] = contrast(network, content, [args.model, args.batch_model])
        md += "\n\n" + contrast_md
    save("feedforward", data, md)
    grid = nst_jax.grid.labelled_grid(
        np.stack([content, nst_jax.resize(style, content.shape[:2]), optimised.image, fed])[None],
        ["content", "style", f"optimisation ({optimised.steps} steps)", "feed-forward (one pass)"],
    )
    nst_jax.save_image(ROOT / "docs" / "feedforward.png", grid)


if __name__ == "__main__":
    main()
