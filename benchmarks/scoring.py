"""The independent scoring of ``../shared/peers/README.md``, written in PyTorch apart from
the project's objective, so that a bug in ``nst_jax``'s losses cannot flatter its own score.

An image is scored by VGG19 (the same Caffe weights, max pooling), every image at ``size`` px
on its longest side and the content resized to the output's shape:

- style error: ``‖G − G_s‖² / ‖G_s‖²`` with ``G = FᵀF / M``, averaged over conv1_1 ... conv5_1;
- content error: ``‖F − F_c‖² / ‖F_c‖²`` at conv4_2.

``check()`` reproduces the README's figures for neural-style's two published outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"
SHARED = Path(__file__).resolve().parents[2] / "shared"
# The README's scores of neural-style's published outputs (512 px): (style, content).
PUBLISHED = {
    ("golden_gate", "starry_night"): (0.104, 0.709),
    ("golden_gate", "the_scream"): (0.122, 0.378),
}


def peer_output(content: str, style: str) -> Path:
    short = {"starry_night": "starry", "the_scream": "scream"}[style]
    return SHARED / "peers" / f"neural-style_{content}_{short}.png"


def load(path, size: int | None = None, shape: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB file as ``[H, W, 3]`` float32 in [0, 1]: at ``shape`` (H, W), or with its
    longest side ``size`` (Lanczos, as PIL resizes), or as it is."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if shape is not None:
            im = im.resize((shape[1], shape[0]), Image.LANCZOS)
        elif size is not None:
            w, h = im.size
            s = size / max(w, h)
            im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        return np.asarray(im, np.float32) / 255.0


class Scorer:
    """``score(image, content, style) -> (style error, content error)``, images ``[H, W, 3]``."""

    def __init__(self, weights):
        import torch

        self.torch = torch
        self.convs = {
            name: (
                torch.from_numpy(np.ascontiguousarray(np.transpose(p["kernel"], (3, 2, 0, 1)))),
                torch.from_numpy(np.asarray(p["bias"])),
            )
            for name, p in weights.params.items()
        }
        prep = weights.preprocessing
        self.bgr, self.scale = prep.bgr, prep.scale
        self.mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std).view(1, 3, 1, 1)
        order = [
            f"conv{b}_{i}"
            for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
            for i in range(1, n + 1)
        ]
        self.order = order[: order.index("conv5_1") + 1]
        self._style_cache: dict = {}

    def features(self, image: np.ndarray) -> dict:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))
        x = x.flip(1) if self.bgr else x
        x = (x * self.scale - self.mean) / self.std
        out = {}
        with torch.no_grad():
            for name in self.order:
                if name.endswith("_1") and name != "conv1_1":
                    x = torch.nn.functional.max_pool2d(x, 2)
                w, b = self.convs[name]
                x = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
                if name in STYLE_LAYERS or name == CONTENT_LAYER:
                    out[name] = x[0].double()
        return out

    @staticmethod
    def gram(f):
        c = f.shape[0]
        m = f.reshape(c, -1)
        return m @ m.T / m.shape[1]

    def style_grams(self, style: np.ndarray, key=None) -> dict:
        if key is not None and key in self._style_cache:
            return self._style_cache[key]
        feats = self.features(style)
        grams = {k: self.gram(feats[k]) for k in STYLE_LAYERS}
        if key is not None:
            self._style_cache[key] = grams
        return grams

    def score(self, image, content, style, *, style_key=None) -> tuple[float, float]:
        """``image`` and ``content`` of one shape; ``style`` at the scoring size."""
        fi = self.features(image)
        fc = self.features(content)
        gs = self.style_grams(style, style_key)
        errs = [
            float(((self.gram(fi[k]) - gs[k]) ** 2).sum() / (gs[k] ** 2).sum())
            for k in STYLE_LAYERS
        ]
        c = float(
            ((fi[CONTENT_LAYER] - fc[CONTENT_LAYER]) ** 2).sum() / (fc[CONTENT_LAYER] ** 2).sum()
        )
        return float(np.mean(errs)), c

    def score_files(self, output, content_path, style_path, size: int) -> tuple[float, float]:
        """Scores an output file as the README does: everything at ``size`` px longest side,
        the content resized to the output's shape."""
        image = load(output, size=size)
        content = load(content_path, shape=image.shape[:2])
        style = load(style_path, size=size)
        return self.score(image, content, style, style_key=(str(style_path), size))


def check(scorer: Scorer) -> dict:
    """Scores of neural-style's published outputs next to the README's."""
    out = {}
    for (content, style), expected in PUBLISHED.items():
        got = scorer.score_files(
            peer_output(content, style),
            SHARED / "images" / f"{content}.jpg",
            SHARED / "images" / f"{style}.jpg",
            512,
        )
        out[f"{content} x {style}"] = {"scored": got, "readme": expected}
    return out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import nst_jax

    print(check(Scorer(nst_jax.load_weights(progress=False))))
