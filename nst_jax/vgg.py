"""VGG19 (Simonyan & Zisserman 2015) as a Flax feature extractor.

``VGG19(layers=("conv1_1", "conv4_2")).apply({"params": params}, x)`` maps a
preprocessed ``[H, W, 3]`` (or ``[N, H, W, 3]``) image to ``{layer: activation}``, with
ReLU applied, for the requested layers only. It stops at the deepest layer asked for,
so asking for ``conv1_1`` costs one convolution.

``with_backward_kernels(params)`` adds each layer's flipped, transposed kernel to the
parameters once, so that the image gradient of a step does not re-transpose 80 MB of
kernels every time it runs (see ``Conv3x3``).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Convolutions per block; block b has widths[b - 1] channels.
BLOCKS = (2, 2, 4, 4, 4)
WIDTHS = (64, 128, 256, 512, 512)
LAYERS = tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(BLOCKS) for i in range(n))
POOLING = ("max", "avg")


_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """3x3 'SAME' convolution: ``[N, H, W, I] x [3, 3, I, O] -> [N, H, W, O]``."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMS)


def backward_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel of a 3x3 'SAME' convolution's input gradient: ``[3, 3, I, O] -> [3, 3, O, I]``.

    The gradient of ``conv(x, k)`` with respect to ``x`` is ``conv(g, k')`` with ``k'``
    flipped in space and with its channel axes swapped.
    """
    return jnp.flip(kernel, (0, 1)).swapaxes(2, 3)


@jax.custom_vjp
def _conv_pretransposed(x: jax.Array, kernel: jax.Array, kernel_t: jax.Array) -> jax.Array:
    return _conv(x, kernel)


def _conv_pretransposed_fwd(x, kernel, kernel_t):
    return _conv(x, kernel), (x, kernel, kernel_t)


def _conv_pretransposed_bwd(residuals, g):
    x, kernel, kernel_t = residuals
    # The kernel gradient is exact too, so differentiating the network's parameters
    # stays correct; when only the image gradient is used, XLA removes it as dead code.
    (dkernel,) = jax.vjp(lambda k: _conv(x, k), kernel)[1](g)
    return _conv(g, kernel_t), dkernel, jnp.zeros_like(kernel_t)


_conv_pretransposed.defvjp(_conv_pretransposed_fwd, _conv_pretransposed_bwd)


def with_backward_kernels(params: dict) -> dict:
    """``params`` with each layer's ``backward_kernel`` added as ``kernel_t``.

    The network computes the same values with or without them. With them, the image
    gradient runs a plain convolution with ``kernel_t`` instead of transposing
    ``kernel`` inside every step: on XLA:CPU the transposes cost about 10% of a step at
    256 px (``benchmarks/step.py``). Compute this once, outside the jitted step.
    """
    return {
        name: {**p, "kernel_t": backward_kernel(p["kernel"])} if "kernel" in p else p
        for name, p in params.items()
    }


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

    When the parameters also hold ``kernel_t`` (``with_backward_kernels``), the input
    gradient uses it directly instead of transposing ``kernel``.
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
        if self.has_variable("params", "kernel_t"):
            y = _conv_pretransposed(x, kernel, self.get_variable("params", "kernel_t"))
        else:
            y = _conv(x, kernel)
        return (y + bias[None, None, None]).reshape(*batch, *y.shape[1:])


class VGG19(nn.Module):
    """VGG19's convolutional trunk, truncated after the deepest requested layer.

    Attributes:
      layers: names from ``LAYERS`` whose ReLU activations are returned.
      pooling: ``"max"`` (the trained network) or ``"avg"`` (Gatys et al. 2016 prefer it
        for smoother gradients).
      widths: channels per block. The real network is ``WIDTHS``; tests use narrow
        random networks with the same topology.
      first_block: start at this block (1-5); the input is then the previous block's
        last activation, before pooling. Lets callers checkpoint block by block.
    """

    layers: Sequence[str]
    pooling: str = "max"
    widths: Sequence[int] = WIDTHS
    first_block: int = 1

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
        channels = 3 if self.first_block == 1 else self.widths[self.first_block - 2]
        if x.ndim not in (3, 4) or x.shape[-1] != channels:
            raise ValueError(f"expected [H, W, {channels}] or [N, H, W, {channels}], got {x.shape}")
        deepest = max(LAYERS.index(name) for name in layers)

        out = {}
        for name in LAYERS[: deepest + 1]:
            block, index = int(name[4]), int(name[6])
            if block < self.first_block:
                continue
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
