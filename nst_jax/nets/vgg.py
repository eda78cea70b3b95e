"""VGG19 (Simonyan & Zisserman 2015) as a Flax feature extractor, and its layer names.

``VGG19(layers=("conv1_1", "pool4")).apply({"params": params}, x)`` maps a preprocessed
``[H, W, 3]`` (or ``[N, H, W, 3]``) image to ``{layer: activation}`` for the requested
layers only: a convolution's ReLU, or a block's pooled output. It stops at the deepest
layer asked for, so asking for ``conv1_1`` costs one convolution.

Its convolutions run the algorithm named by ``convolution`` (``conv.py``); a network
built by ``network.prepare`` carries the kernels that algorithm derives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from nst_jax.nets import conv

# Convolutions per block; block b has WIDTHS[b - 1] channels.
BLOCKS = (2, 2, 4, 4, 4)
WIDTHS = (64, 128, 256, 512, 512)
CONV_LAYERS = tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(BLOCKS) for i in range(n))
# Every layer, in network order: each block's convolutions, then its pooling.
LAYERS = tuple(
    name
    for b, n in enumerate(BLOCKS)
    for name in (*(f"conv{b + 1}_{i + 1}" for i in range(n)), f"pool{b + 1}")
)
POOLING = ("max", "avg")


class Layer(NamedTuple):
    """What a layer name means: ``layer("conv3_2")`` or ``layer("pool4")``.

    Attributes:
      name: the name.
      block: its block, 1 to 5.
      index: its place in the block: 1, 2, ... for convolutions; one past the last
        convolution for the pooling.
    """

    name: str
    block: int
    index: int

    @property
    def is_pool(self) -> bool:
        return self.name.startswith("pool")

    @property
    def stride(self) -> int:
        """Downsampling relative to the input: 1, 2, ..., 16 for convolutions, 2 to 32 for
        the poolings (each pooling floors odd sizes)."""
        return 2**self.poolings

    @property
    def poolings(self) -> int:
        """The 2x2 poolings between the input and this layer."""
        return self.block - 1 + self.is_pool

    @property
    def order(self) -> int:
        """Position in ``LAYERS``: deeper layers have larger ones."""
        return LAYERS.index(self.name)

    @property
    def suffix(self) -> str:
        """What follows the kind: ``"3_2"`` for ``conv3_2``, ``"4"`` for ``pool4``."""
        return str(self.block) if self.is_pool else f"{self.block}_{self.index}"

    @property
    def last_conv(self) -> str:
        """The deepest convolution this layer needs: itself, or its block's last."""
        return f"conv{self.block}_{BLOCKS[self.block - 1]}" if self.is_pool else self.name


def layer(name: str) -> Layer:
    """Parses a layer name.

    Raises:
      ValueError: not a VGG19 layer.
    """
    if name not in LAYERS:
        raise ValueError(f"unknown VGG19 layer {name!r}; choose from {', '.join(LAYERS)}")
    if name.startswith("pool"):
        block = int(name[4:])
        return Layer(name, block, BLOCKS[block - 1] + 1)
    block, index = name[4:].split("_")
    return Layer(name, int(block), int(index))


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """Validates layer names, returning them as a tuple in the order given.

    Raises:
      ValueError: an unknown or repeated layer name.
    """
    layers = (layers,) if isinstance(layers, str) else tuple(layers)  # One name alone.
    for name in layers:
        layer(name)
    if len(set(layers)) != len(layers):
        raise ValueError(f"repeated layer names in {list(layers)}")
    return layers


def feature_shape(shape: tuple[int, int], name: str) -> tuple[int, int]:
    """``(h, w)`` of layer ``name``'s activation for an ``shape = (H, W)`` input."""
    s = layer(name).stride
    return shape[0] // s, shape[1] // s


def pool2x2(x: jax.Array, kind: str) -> jax.Array:
    """2x2 pooling with stride 2, flooring odd sizes: ``[..., H, W, C] -> [..., H//2, W//2, C]``.

    Written as a reshape and a reduction rather than ``lax.reduce_window``: on CPU, XLA
    runs this form (and its gradient) several times faster.
    """
    *batch, h, w, c = x.shape
    x = x[..., : h // 2 * 2, : w // 2 * 2, :].reshape(*batch, h // 2, 2, w // 2, 2, c)
    return jnp.max(x, axis=(-4, -2)) if kind == "max" else jnp.mean(x, axis=(-4, -2))


class Conv3x3(nn.Module):
    """A 3x3 'SAME' convolution with bias, with the parameters of ``nn.Conv``, run by
    ``algorithm`` (``conv.ALGORITHMS``); the derived kernels it needs are parameters too
    (``conv.derived_kernels``). All algorithms compute the same values.
    """

    features: int
    algorithm: str = "plain"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``[..., H, W, I] -> [..., H, W, features]``."""
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        derived = {
            name: self.param(name, nn.initializers.zeros_init(), s)
            for name, s in conv.derived_shapes(self.algorithm, shape).items()
        }
        batch = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        y = conv.apply(self.algorithm, x, kernel, derived)
        return (y + bias[None, None, None]).reshape(*batch, *y.shape[1:])


class VGG19(nn.Module):
    """VGG19's convolutional trunk, truncated after the deepest requested layer.

    Attributes:
      layers: names from ``LAYERS``: ReLU activations of convolutions, or poolings.
      pooling: ``"max"`` (the trained network) or ``"avg"`` (Gatys et al. 2016 prefer it
        for smoother gradients).
      widths: channels per block. The real network is ``WIDTHS``; tests use narrow
        random networks with the same topology.
      convolution: per layer, what ``conv.layer_algorithm`` picks for this algorithm.
    """

    layers: Sequence[str]
    pooling: str = "max"
    widths: Sequence[int] = WIDTHS
    convolution: str = "plain"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Args: x: ``[H, W, 3]`` or ``[N, H, W, 3]``, preprocessed for the weights.

        Returns:
          ``{name: [(N,) H / s, W / s, C]}`` for each requested layer, where ``s`` is
          ``layer(name).stride``.
        """
        layers = check_layers(self.layers)
        if not layers:
            raise ValueError("no layers asked for")
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")
        if x.ndim not in (3, 4) or x.shape[-1] != 3:
            raise ValueError(f"expected [H, W, 3] or [N, H, W, 3], got {x.shape}")
        deepest = max(layer(name).order for name in layers)

        out = {}
        for name in LAYERS[: deepest + 1]:
            info = layer(name)
            if info.is_pool:
                x = pool2x2(x, self.pooling)
            else:
                algorithm = conv.layer_algorithm(self.convolution, info.block)
                x = nn.relu(Conv3x3(self.widths[info.block - 1], algorithm, name=name)(x))
            if name in layers:
                out[name] = x
        return out


def widths_of(params: dict) -> tuple[int, ...]:
    """Channels per block of VGG19 parameters ``{conv name: {kernel, ...}}``."""
    return tuple(int(params[f"conv{b}_1"]["kernel"].shape[-1]) for b in range(1, 6))


def init_params(key: jax.Array, *, widths: Sequence[int] = WIDTHS) -> dict:
    """Random He-normal parameters for the whole trunk: ``{conv name: {kernel, bias}}``.

    Flax's default lecun_normal init shrinks activations layer by layer; He init
    (``N(0, 2 / fan_in)``) keeps random networks' features at a sensible scale, so tests
    exercise real magnitudes.
    """
    shapes, channels = {}, 3
    for name in CONV_LAYERS:
        width = int(widths[layer(name).block - 1])
        shapes[name], channels = (3, 3, channels, width), width
    # One draw for every kernel: each random draw compiles its own generator.
    sizes = [math.prod(shape) for shape in shapes.values()]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    params, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes, strict=True):
        scale = math.sqrt(2.0 / (9 * shape[2]))
        params[name] = {
            "kernel": scale * flat[start : start + size].reshape(shape),
            "bias": jnp.zeros(shape[-1:], jnp.float32),
        }
        start += size
    return params
