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
from nst_jax.objective import LossConfig  # noqa: E402
from nst_jax.statistics import STATISTICS  # noqa: E402

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


def demo(result: Path) -> None:
    """``docs/demo.png``: the demo pair and ``result``, the README's first command's output."""
    image = nst_jax.load_image(result)
    content, style = nst_jax.demo_images()
    content = nst_jax.resize(content, image.shape[:2])
    style = nst_jax.resize_longest(style, max(image.shape[:2]))
    tiles = [content, style[: image.shape[0]], image]
    nst_jax.save_image(HERE / "demo.png", labelled_row(tiles, ["content", "style", "result"]))


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
    "invert_layers": "--mode invert --demo --layers conv1_1,conv2_1,conv3_1,conv4_1,conv5_1,pool5 "
    "--inits 3 --size 128 --steps 300",
    "invert_tv": "--mode invert --demo --layer conv4_1 --tv_weights 0,1,10,100 --size 128 "
    "--steps 300",
    "texture_layers": "--mode texture --demo --style_layer_sets growing --tv_weight 0 "
    "--size 160 --steps 300",
    "ratios": "--demo --ratios 10,1,0.25,0.05 --size 128 --steps 300",
}


def grids(names: list[str]) -> None:
    for name in names:
        args = [sys.executable, str(HERE.parent / "run.py"), *GRIDS[name].split()]
        subprocess.run([*args, "--output", str(HERE / f"{name}.png"), "--noprogress"], check=True)


def _crop_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre crop to ``shape``'s aspect ratio, then resize to it: for display only."""
    h, w = image.shape[:2]
    aspect = shape[1] / shape[0]
    if w / h > aspect:
        cw = int(h * aspect)
        image = image[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = int(w / aspect)
        image = image[(h - ch) // 2 : (h - ch) // 2 + ch]
    return nst_jax.resize(image, shape)


def controls(images: Path, size: int, steps: int) -> None:
    """Without and with each control of Gatys et al. (2017), via the CLI."""
    photo, a, b = (images / n for n in ("golden_gate.jpg", "starry_night.jpg", "the_scream.jpg"))
    content = nst_jax.load_image(photo)
    work = HERE / "_controls"
    work.mkdir(exist_ok=True)
    h, w = content.shape[:2]
    top = np.zeros((h, w, 3), np.float32)
    top[: h // 2] = 1.0
    nst_jax.save_image(work / "top.png", top)
    nst_jax.save_image(work / "bottom.png", 1.0 - top)
    nst_jax.save_image(work / "all.png", np.ones_like(top))
    runs = {
        "plain": ["--style", a],
        "blend 0.5/0.5": ["--style", f"{a},{b}", "--style_blend", "0.5,0.5"],
        "masks: sky/ground": [
            "--style",
            f"{a},{b}",
            "--content_masks",
            f"{work / 'top.png'},{work / 'bottom.png'}",
        ],
        "A's top half only": [
            "--style",
            a,
            "--content_masks",
            work / "all.png",
            "--style_masks",
            work / "top.png",
        ],
        "luminance only": ["--style", a, "--preserve_color", "luminance"],
        "histogram colour": ["--style", a, "--preserve_color", "histogram"],
        "style scale 0.5": ["--style", a, "--style_scale", "0.5"],
        "style scale 2": ["--style", a, "--style_scale", "2"],
        "pyramid from 64": ["--style", a, "--start_size", "64"],
    }
    base = [sys.executable, str(HERE.parent / "run.py"), "--content", str(photo)]
    base += ["--size", str(size), "--steps", str(steps), "--noprogress"]
    tiles = {}
    for label, args in runs.items():
        out = work / f"{len(tiles)}.png"
        subprocess.run([*base, *map(str, args), "--output", str(out)], check=True)
        tiles[label] = nst_jax.load_image(out)
    shape = next(iter(tiles.values())).shape[:2]
    inputs = {
        "content": nst_jax.resize(content, shape),
        "style A": _crop_to(nst_jax.load_image(a), shape),
        "style B": _crop_to(nst_jax.load_image(b), shape),
    }
    everything = {**inputs, **tiles}
    labels = list(everything)
    grid = np.stack([everything[k] for k in labels]).reshape(2, 6, *shape, 3)
    # Two one-row grids stacked, so that each row has its own labels.
    first = nst_jax.labelled_grid(grid[:1], labels[:6])
    second = nst_jax.labelled_grid(grid[1:], labels[6:])
    nst_jax.save_image(HERE / "controls.png", np.concatenate([first, second]))
    for f in work.iterdir():
        f.unlink()
    work.rmdir()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument(
        "--only",
        choices=["demo", "style_losses", "texture", "grids", "controls", *GRIDS],
        default=None,
    )
    parser.add_argument(
        "--demo_result", type=Path, default=Path("demo.png"), help="the first command's output"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=HERE.parent.parent / "shared" / "images",
        help="folder with golden_gate.jpg, starry_night.jpg and the_scream.jpg (controls)",
    )
    args = parser.parse_args()
    if args.only in (None, "demo"):
        demo(args.demo_result)
    if args.only in (None, "style_losses"):
        style_losses(args.size, args.steps)
    if args.only in (None, "texture"):
        texture(args.size, args.steps)
    if args.only in (None, "controls"):
        controls(args.images, 192, 150)
    if args.only in (None, "grids"):
        grids(list(GRIDS))
    elif args.only in GRIDS:
        grids([args.only])


if __name__ == "__main__":
    main()
