"""The PyTorch references the benchmarks time against: the default objective on the same
VGG19 weights (``Objective``) and the pyramid generator with the same parameters
(``pyramid``), written plainly in eager PyTorch, as a PyTorch user would.

PyTorch is optional (``pip install torch==2.13.0``): ``available()`` says whether it is
installed. It runs on the GPU where JAX does, so that a figure compares like with like.
"""

from __future__ import annotations

import jax
import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def device():
    import torch

    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


def to_torch(a: np.ndarray):
    """``[H, W, 3]`` or ``[B, H, W, 3]`` -> ``[B, 3, H, W]`` on the device."""
    import torch

    a = np.asarray(a, np.float32)
    a = a[None] if a.ndim == 3 else a
    return torch.from_numpy(np.ascontiguousarray(np.transpose(a, (0, 3, 1, 2)))).to(device())


class Objective:
    """The objective's Gram terms (content MSE or normalised, Gram style under either
    ``style_norm``, TV) on VGG19, in PyTorch:
    ``loss(images, content_features) -> (total, content, style, tv)``, means over the
    batch, with the same normalisations as ``nst_jax.objective``."""

    def __init__(self, weights, loss_config, pooling: str, style: np.ndarray):
        import torch
        import torch.nn.functional as fn

        from nst_jax.nets.vgg import CONV_LAYERS

        dev = device()
        self.cfg = loss_config
        self.convs = {
            name: (
                torch.from_numpy(np.ascontiguousarray(np.transpose(p["kernel"], (3, 2, 0, 1)))).to(
                    dev
                ),
                torch.from_numpy(np.asarray(p["bias"])).to(dev),
            )
            for name, p in weights.params.items()
        }
        self.prep = weights.preprocessing
        self.mean = torch.tensor(self.prep.mean).view(1, 3, 1, 1).to(dev)
        self.std = torch.tensor(self.prep.std).view(1, 3, 1, 1).to(dev)
        self.pool = fn.avg_pool2d if pooling == "avg" else fn.max_pool2d
        wanted = set(loss_config.content_layers + loss_config.style_layers)
        self.layers = CONV_LAYERS[: max(CONV_LAYERS.index(n) for n in wanted) + 1]
        self.wanted = wanted
        self.layer_w = dict(zip(loss_config.style_layers, loss_config.layer_weights, strict=True))
        with torch.no_grad():
            feats = self.features(to_torch(style))
            self.style_grams = {k: self.gram(feats[k])[0] for k in loss_config.style_layers}

    def features(self, img):
        """``{layer: [B, C, h, w]}`` of ``img`` ``[B, 3, H, W]`` RGB in [0, 1]."""
        import torch

        x = img.flip(1) if self.prep.bgr else img
        x = (x * self.prep.scale - self.mean) / self.std
        out = {}
        for name in self.layers:
            if name.endswith("_1") and name != "conv1_1":
                x = self.pool(x, 2)
            w, b = self.convs[name]
            x = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
            if name in self.wanted:
                out[name] = x
        return out

    @staticmethod
    def gram(f):
        b, c, h, w = f.shape
        m = f.reshape(b, c, h * w)
        return m @ m.transpose(1, 2) / (h * w)

    def content_features(self, content):
        import torch

        with torch.no_grad():
            feats = self.features(content)
        return {k: feats[k] for k in self.cfg.content_layers}

    def loss(self, images, content_features):
        import torch

        cfg = self.cfg
        feats = self.features(images)
        dims = (1, 2, 3)
        if cfg.content_loss == "normalized":  # ‖F − P‖² / ‖P‖²
            content = sum(
                torch.sum((feats[k] - p) ** 2, dim=dims)
                / torch.sum(p**2, dim=dims).clamp_min(1e-12)
                for k, p in content_features.items()
            )
        else:
            content = sum(
                torch.mean((feats[k] - p) ** 2, dim=dims) for k, p in content_features.items()
            )

        def distance(k):  # Gatys et al.'s E_l, or relative: ‖G − G_s‖² / ‖G_s‖².
            g = self.style_grams[k]
            d = torch.sum((self.gram(feats[k]) - g) ** 2, dim=(1, 2))
            if cfg.style_norm == "relative":
                return d / torch.sum(g**2).clamp_min(1e-30)
            return d / (4 * g.shape[0] ** 2)

        style = sum(self.layer_w[k] * distance(k) for k in cfg.style_layers)
        dx = images[..., :-1, 1:] - images[..., :-1, :-1]
        dy = images[..., 1:, :-1] - images[..., :-1, :-1]
        tv = torch.mean(torch.sum(dx**2 + dy**2, dim=1), dim=(1, 2))
        total = cfg.content_weight * content + cfg.style_weight * style + cfg.tv_weight * tv
        return total.mean(), content.mean(), style.mean(), tv.mean()


def pyramid(variables: dict, config):
    """The pyramid generator (``nets/generator.py``) in PyTorch, with ``variables``'
    parameters (trainable copies): ``(forward(content [B, 3, H, W], noise), params)``;
    ``noise`` is a list of ``[B, noise, h_k, w_k]``, coarse to fine. Instance
    normalisation only."""
    import torch
    import torch.nn.functional as fn

    if config.kind != "pyramid" or config.norm != "instance":
        raise ValueError("the PyTorch reference is the instance-normalised pyramid")
    dev = device()
    flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    params = {}
    for path, leaf in flat:
        name = "/".join(p.key for p in path)
        value = np.asarray(leaf)
        if value.ndim == 4:  # HWIO -> OIHW
            value = np.transpose(value, (3, 2, 0, 1))
        params[name] = torch.tensor(np.ascontiguousarray(value), device=dev, requires_grad=True)

    def conv(name, x, k):
        if k > 1:
            x = fn.pad(x, (k // 2,) * 4, mode="reflect")
        return fn.conv2d(x, params[f"{name}/kernel"], params.get(f"{name}/bias"))

    def norm(name, x):  # A shift only where the generator has one (its module docstring).
        x = fn.instance_norm(x, eps=1e-5) * params[f"{name}/scale"].view(1, -1, 1, 1)
        shift = params.get(f"{name}/bias")
        return x if shift is None else x + shift.view(1, -1, 1, 1)

    counters = {"ConvNorm": 0, "Norm": 0}

    def next_name(kind):
        n = counters[kind]
        counters[kind] += 1
        return f"{kind}_{n}"

    def conv_norm(x, k):
        name = next_name("ConvNorm")
        x = conv(f"{name}/Conv_0", x, k)
        return torch.relu(norm(f"{name}/Norm_0/InstanceNorm_0", x))

    def block(x):
        return conv_norm(conv_norm(conv_norm(x, 3), 3), 1)

    def forward(content, noise):
        counters.update(ConvNorm=0, Norm=0)
        x = None
        for z in noise:
            size = z.shape[2:]
            if content is not None:
                small = fn.interpolate(content, size=size, mode="bilinear", antialias=True)
                z = torch.cat([norm(f"{next_name('Norm')}/InstanceNorm_0", small), z], dim=1)
            y = block(z)
            if x is not None:
                x = x.repeat_interleave(2, 2).repeat_interleave(2, 3)[:, :, : size[0], : size[1]]
                a = norm(f"{next_name('Norm')}/InstanceNorm_0", x)
                b = norm(f"{next_name('Norm')}/InstanceNorm_0", y)
                y = block(torch.cat([a, b], dim=1))
            x = y
        return torch.sigmoid(conv("Conv_0", x, 1))

    return forward, list(params.values())
