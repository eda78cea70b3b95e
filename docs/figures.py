"""Makes the README's figures from the demo pair. Run from the repository root:

python docs/figures.py [--size 192] [--steps 150]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nst_jax  # noqa: E402
from nst_jax.objective import STATISTICS, LossConfig  # noqa: E402

HERE = Path(__file__).resolve().parent


def labelled_row(tiles: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Tiles side by side, each with its label in a white band above it."""
    h = max(t.shape[0] for t in tiles)
    out = []
    for tile, label in zip(tiles, labels, strict=True):
        band = Image.new("RGB", (tile.shape[1], 18), "white")
        ImageDraw.Draw(band).text((4, 3), label, fill="black")
        padded = np.ones((h, tile.shape[1], 3), np.float32)
        padded[: tile.shape[0]] = tile
        column = np.concatenate([np.asarray(band, np.float32) / 255.0, padded], axis=0)
        out += [column, np.ones((column.shape[0], 4, 3), np.float32)]
    return np.concatenate(out[:-1], axis=1)


def style_losses(size: int, steps: int) -> None:
    content, style = nst_jax.demo_images()
    content = nst_jax.resize_longest(content, size)
    style = nst_jax.resize_longest(style, size)
    weights = nst_jax.load_weights()
    tiles = [content, nst_jax.resize(style, (content.shape[0], content.shape[0]))]
    labels = ["content", "style"]
    for name in STATISTICS:
        config = nst_jax.Config(steps=steps, loss=LossConfig(style_loss=((name, 1.0),)))
        result = nst_jax.stylize(content, style, config, weights=weights, progress=False)
        print(f"{name}: style {result.initial['style']:.4g} -> {result.final['style']:.4g}")
        tiles.append(result.image)
        labels.append(name)
    nst_jax.save_image(HERE / "style_losses.png", labelled_row(tiles, labels))


def texture(size: int, steps: int) -> None:
    _, style = nst_jax.demo_images()
    style = nst_jax.resize_longest(style, size)
    result = nst_jax.synthesize(style, (size, size * 2), nst_jax.Config(steps=steps))
    print(f"texture: style {result.initial['style']:.4g} -> {result.final['style']:.4g}")
    row = labelled_row([style, result.image], ["style", "texture, from noise (--mode texture)"])
    nst_jax.save_image(HERE / "texture.png", row)


# The README's grids, made by the same commands a user runs.
GRIDS = {
    "invert_layers": "--mode invert --demo --layers conv1_1,conv2_1,conv3_1,conv4_1,conv5_1 "
    "--inits 3 --size 128 --steps 300",
    "invert_tv": "--mode invert --demo --layer conv4_1 --tv_weights 0,1,10,100 --size 128 "
    "--steps 300",
    "texture_layers": "--mode texture --demo --style_layer_sets growing --tv_weight 0 "
    "--size 128 --steps 300",
    "ratios": "--demo --ratios 10000,1000,100,10 --size 128 --steps 300",
}


def grids(names: list[str]) -> None:
    for name in names:
        args = [sys.executable, str(HERE.parent / "run.py"), *GRIDS[name].split()]
        subprocess.run([*args, "--output", str(HERE / f"{name}.png"), "--noprogress"], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument(
        "--only", choices=["style_losses", "texture", "grids", *GRIDS], default=None
    )
    args = parser.parse_args()
    if args.only in (None, "style_losses"):
        style_losses(args.size, args.steps)
    if args.only in (None, "texture"):
        texture(args.size, args.steps)
    if args.only in (None, "grids"):
        grids(list(GRIDS))
    elif args.only in GRIDS:
        grids([args.only])


if __name__ == "__main__":
    main()
