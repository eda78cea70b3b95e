"""VGG19 (Simonyan & Zisserman 2015) as a Flax feature extractor.

``VGG19(layers=("conv1_1", "conv4_2")).apply({"params": params}, x)`` maps a
preprocessed ``[H, W, 3]`` (or ``[N, H, W, 3]``) image to ``{layer: activation}``, with
ReLU applied, for the requested layers only. It stops at the deepest layer asked for,
so asking for ``conv1_1`` costs one convolution.

Its convolutions are ``Conv3x3``: with parameters from ``conv.prepare``, the image
gradient runs without rearranging kernels, or by Winograd's algorithm (see ``conv.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax import conv

# Convolutions per block; block b has widths[b - 1] channels.
BLOCKS = (2, 2, 4, 4, 4)
WIDTHS = (64, 128, 256, 512, 512)
LAYERS = tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(BLOCKS) for i in range(n))
POOLING = ("max", "avg")


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """Validates layer names, returning them as a tuple in the order given.

    Raises:
      ValueError: an unknown or repeated layer name, or none at all.
    """
    layers = tuple(layers)
    unknown = [name for name in layers if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown VGG19 layer {unknown[0]!r}; choose from {', '.join(LAYERS)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"repeated layer names in {list(layers)}")
    return layers


def layer_stride(name: str) -> int:
    """Downsampling factor of a layer's activation relative to the input (1, 2, 4, 8, 16)."""
    return 2 ** (int(name[4]) - 1)


def pool2x2(x: jax.Array, kind: str) -> jax.Array:
    """2x2 pooling with stride 2, flooring odd sizes: ``[..., H, W, C] -> [..., H//2, W//2, C]``.

    Written as a reshape and a reduction rather than ``lax.reduce_window``: on CPU, XLA
    runs this form (and its gradient) several times faster.
    """
    *batch, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :].reshape(*batch, h // 2, 2, w // 2, 2, c)
    return jnp.max(x, axis=(-4, -2)) if kind == "max" else jnp.mean(x, axis=(-4, -2))


class Conv3x3(nn.Module):
    """A 3x3 'SAME' convolution with bias, with the parameters of ``nn.Conv``.

    It runs the algorithm that ``conv.prepare`` chose for the layer, recognised by the
    derived kernels in its parameters (``winograd``/``winograd_t`` or ``kernel_t``);
    with none, plain ``lax.conv_general_dilated``. All compute the same values.
    """

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., H, W, I] -> [..., H, W, features]``."""
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        batch = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        derived = self.variables["params"]
        if "winograd" in derived:
            y = conv.winograd_conv(x, kernel, derived["winograd"], derived["winograd_t"])
        elif "kernel_t" in derived:
            y = conv.direct_pretransposed(x, kernel, derived["kernel_t"])
        else:
            y = conv.direct(x, kernel)
        return (y + bias[None, None, None]).reshape(*batch, *y.shape[1:])


class VGG19(nn.Module):
    """VGG19's convolutional trunk, truncated after the deepest requested layer.

    Attributes:
      layers: names from ``LAYERS`` whose ReLU activations are returned.
      pooling: ``"max"`` (the trained network) or ``"avg"`` (Gatys et al. 2016 prefer it
        for smoother gradients).
      widths: channels per block. The real network is ``WIDTHS``; tests use narrow
        random networks with the same topology.
    """

    layers: Sequence[str]
    pooling: str = "max"
    widths: Sequence[int] = WIDTHS

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Args: x: ``[H, W, 3]`` or ``[N, H, W, 3]``, preprocessed for the weights.

        Returns:
          ``{name: [(N,) H / s, W / s, C]}`` for each requested layer, where ``s`` is
          ``layer_stride(name)`` (pooling floors odd sizes).
        """
        layers = check_layers(self.layers)
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")
        if x.ndim not in (3, 4) or x.shape[-1] != 3:
            raise ValueError(f"expected [H, W, 3] or [N, H, W, 3], got {x.shape}")
        deepest = max(LAYERS.index(name) for name in layers)

        out = {}
        for name in LAYERS[: deepest + 1]:
            block, index = int(name[4]), int(name[6])
            if index == 1 and block > 1:
                x = pool2x2(x, self.pooling)
            x = nn.relu(Conv3x3(self.widths[block - 1], name=name)(x))
            if name in layers:
                out[name] = x
        return out


def init_params(key: jax.Array, *, widths: Sequence[int] = WIDTHS) -> dict:
    """Random (He-normal) parameters for the whole trunk: ``{layer: {kernel, bias}}``."""
    model = VGG19(layers=(LAYERS[-1],), widths=widths)
    params = model.init(key, jnp.zeros((32, 32, 3), jnp.float32))["params"]
    # Flax's default lecun_normal init shrinks activations layer by layer; He init keeps
    # random networks' features at a sensible scale, so tests exercise real magnitudes.
    keys = jax.random.split(key, len(LAYERS))
    return {
        name: {
            "kernel": nn.initializers.he_normal()(k, params[name]["kernel"].shape),
            "bias": jnp.zeros_like(params[name]["bias"]),
        }
        for k, name in zip(keys, LAYERS, strict=True)
    }
