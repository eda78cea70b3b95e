"""Feed-forward generators: an image (and noise) in, a stylised image out, in one pass.

Two architectures, both fully convolutional (any size, odd ones included) and written
for one example, ``[H, W, 3]``; callers ``jax.vmap`` them over a batch:

* ``pyramid``: the multi-scale generator of Ulyanov et al. (2016), "Texture Networks"
  (as in DmitryUlyanov/texture_nets, ``pyramid.lua``). The content is downsampled to
  ``scales`` sizes, halving from full size (1/32 … 1 for 6 scales); noise joins each.
  The content at each scale is normalised before the noise joins it (below). Every
  scale runs a conv3-conv3-conv1 block (``width`` channels) with normalisation
  and ReLU. Scales join coarse to fine: nearest 2x upsampling, normalisation of both
  branches, concatenation (the channels grow by ``width`` a scale), the same block
  again. A final 1x1 convolution gives RGB.
* ``residual``: Johnson et al. (2016): a 9x9 convolution, two stride-2 downsamplings,
  ``blocks`` residual blocks, and two upsamplings done as nearest 2x resizing and a
  convolution (Odena et al. 2016: no checkerboard artefacts), with reflection padding.

Normalisation is ``instance`` (Ulyanov, Vedaldi & Lempitsky 2016: per image, in
training and in use alike, which makes the output independent of the content's
contrast) or ``batch``, to reproduce their comparison. Both generators normalise the
content itself too, before the noise joins it: with instance normalisation an affine
change of the content's contrast then leaves the output as it was, noise and all, up
to the normalisation's ε (1e-5 against the content's variance at each scale: at 0.3x
contrast the difference is float rounding, at 0.05x visible), where normalising only
after the first convolution would let the noise's share grow as the contrast falls.
Batch normalisation needs the batch: the caller vmaps with ``axis_name=BATCH_AXIS``
while training, and in use the running averages stand in (``training=False``).

A texture network (``texture=True``) takes noise alone and applies at any output size.
The output goes through a sigmoid, into [0, 1].

No parameter is one that normalisation cancels: a convolution followed by a
normalisation has no bias, and a normalisation whose output reaches only a convolution
and a normalisation (the pyramid's joins, the content's, the residual blocks' last) has
no shift. Their gradients would be zero but for rounding, and Adam, which divides by
the gradient's own size, would walk them by a full learning rate a step on that
rounding: parameters that change nothing but make two runs differ. ``legacy_biases``
keeps them, for the checkpoints of format 1, which had them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from nst_jax.nets import conv

BATCH_AXIS = "batch"  # The vmapped axis batch normalisation averages over.
KINDS = ("pyramid", "residual")
NORMS = ("instance", "batch")
# Every generator convolution: in strips on XLA:CPU (``conv.in_strips``).
Conv = functools.partial(nn.Conv, conv_general_dilated=conv.in_strips)


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """A generator's architecture: everything a checkpoint must agree on to be applied.

    Attributes:
      kind: ``pyramid`` or ``residual``.
      norm: ``instance`` or ``batch``.
      texture: noise alone as input (texture synthesis), no content.
      scales: pyramid: how many scales, halving from full size (6: 1/32 … 1, the paper's).
      width: pyramid: channels a scale (8 in the paper and in texture_nets); residual:
        the first convolution's channels (32 in Johnson et al.), doubled twice.
      noise: noise channels joining each scale (pyramid) or the input (residual).
      blocks: residual: how many residual blocks (5 in Johnson et al.).
      legacy_biases: the biases normalisation cancels (module docstring), as the
        generators of checkpoint format 1 had them; they do not change the output.
    """

    kind: str = "pyramid"
    norm: str = "instance"
    texture: bool = False
    scales: int = 6
    width: int = 0  # 0: the kind's own (8 for pyramid, 32 for residual).
    noise: int = 3
    blocks: int = 5
    legacy_biases: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"--generator must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.norm not in NORMS:
            raise ValueError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for name in ("scales", "blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"generator {name} must be at least 1, got {getattr(self, name)}")
        if self.width < 0:
            raise ValueError(
                f"generator width must be at least 1 (0: the kind's own), got {self.width}"
            )
        if self.noise < 0 or (self.texture and self.noise < 1):
            raise ValueError(f"a generator needs noise channels >= {int(self.texture)}")

    @property
    def channels(self) -> int:
        """``width``, or the kind's own where it is 0. Resolved here, not stored: a config
        made by ``dataclasses.replace(pyramid, kind="residual")`` gets the residual's."""
        return self.width or (8 if self.kind == "pyramid" else 32)

    def resolved(self) -> GeneratorConfig:
        """The same architecture with its width spelt out, as checkpoints record it."""
        return dataclasses.replace(self, width=self.channels)


def _pad(x: jax.Array, k: int) -> jax.Array:
    """Reflection padding of ``[1, H, W, C]`` for a ``k``x``k`` convolution; edge
    padding where a side is too short to reflect."""
    p = k // 2
    if not p:
        return x
    mode = "reflect" if min(x.shape[1:3]) > p else "edge"
    return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)


@functools.cache
def _resize_matrix(size: int, new: int) -> np.ndarray:
    """``[new, size]``: ``jax.image.resize(..., "linear", antialias=True)`` along one
    axis of ``size`` pixels, as a matrix (``jax.image.scale_and_translate``'s weights:
    a triangle, widened by the downsampling factor, normalised to sum to 1)."""
    inv = size / new
    centres = (np.arange(new) + 0.5) * inv - 0.5  # Of the new pixels, in old pixels.
    weights = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(size)) / max(inv, 1.0))
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _downsample(x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """``jax.image.resize`` of ``[1, H, W, C]`` to ``shape`` (linear, antialiased), by
    two constant matrices. Resizing computes its weights from the sizes alone; as
    constants they cost XLA nothing to compile, where computed in the program each of a
    pyramid's resizes compiles into a dozen kernels, which ``--mode apply`` waits for on
    every new image size."""
    if tuple(shape) == tuple(x.shape[1:3]):
        return x
    rows, cols = (_resize_matrix(n, m) for n, m in zip(x.shape[1:3], shape, strict=True))
    hi = jax.lax.Precision.HIGHEST
    return jnp.einsum("ph,qw,bhwc->bpqc", rows, cols, x, precision=hi)


def _upsample(x: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Nearest 2x upsampling of ``[1, h, w, C]``, cropped to ``shape`` (odd sizes)."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x[:, : shape[0], : shape[1]]


class Norm(nn.Module):
    """Instance or batch normalisation of ``[1, H, W, C]``, with a learnt scale and (with
    ``shift``) bias: none where the output reaches only a convolution and a normalisation,
    which would cancel it."""

    kind: str
    training: bool
    shift: bool = True

    @nn.compact
    def __call__(self, x):
        if self.kind == "instance":
            return nn.InstanceNorm(epsilon=1e-5, use_bias=self.shift)(x)
        return nn.BatchNorm(
            use_running_average=not self.training,
            axis_name=BATCH_AXIS if self.training else None,
            momentum=0.9,
            epsilon=1e-5,
            use_bias=self.shift,
        )(x)


class ConvNorm(nn.Module):
    """Reflection-padded convolution (no bias: the normalisation cancels it),
    normalisation, and (optionally) ReLU. Without ReLU the output reaches only
    convolutions and normalisations (the residual blocks), so the normalisation has
    no shift either."""

    features: int
    kernel: int
    norm: str
    training: bool
    stride: int = 1
    relu: bool = True
    legacy: bool = False  # GeneratorConfig.legacy_biases

    @nn.compact
    def __call__(self, x):
        k, legacy = self.kernel, self.legacy
        conv = Conv(self.features, (k, k), strides=self.stride, padding="VALID", use_bias=legacy)
        x = Norm(self.norm, self.training, shift=self.relu or legacy)(conv(_pad(x, k)))
        return nn.relu(x) if self.relu else x


def _conv_norm(config: GeneratorConfig, training: bool):
    """``ConvNorm(features, kernel, ...)`` with ``config``'s normalisation."""
    return functools.partial(
        ConvNorm, norm=config.norm, training=training, legacy=config.legacy_biases
    )


class Pyramid(nn.Module):
    config: GeneratorConfig
    training: bool

    def block(self, x, channels):
        conv_norm = _conv_norm(self.config, self.training)
        # In this order: Flax names the modules (and so the checkpoints' arrays) by it.
        x = conv_norm(channels, 3)(x)
        x = conv_norm(channels, 3)(x)
        return conv_norm(channels, 1)(x)

    @nn.compact
    def __call__(self, content, noise):
        c, t = self.config, self.training
        norm = functools.partial(Norm, c.norm, t, shift=c.legacy_biases)  # Feeds a block.
        x = None
        for k in range(c.scales):  # Coarse to fine.
            z = noise[k]
            if content is not None:
                small = _downsample(content, z.shape[1:3])
                z = jnp.concatenate([norm()(small), z], axis=-1)
            y = self.block(z, c.channels)
            if x is not None:
                x = _upsample(x, y.shape[1:3])
                x = jnp.concatenate([norm()(x), norm()(y)], axis=-1)
                y = self.block(x, c.channels * (k + 1))
            x = y
        return nn.sigmoid(Conv(3, (1, 1))(x))


class Residual(nn.Module):
    config: GeneratorConfig
    training: bool

    @nn.compact
    def __call__(self, content, noise):
        c, t = self.config, self.training
        conv_norm = _conv_norm(c, t)
        if content is not None:
            content = Norm(c.norm, t, shift=c.legacy_biases)(content)
        x = noise[0] if content is None else jnp.concatenate([content, *noise], -1)
        x = conv_norm(c.channels, 9)(x)
        skips = []
        for m in (2, 4):
            skips.append(x.shape[1:3])
            x = conv_norm(c.channels * m, 3, stride=2)(x)
        for _ in range(c.blocks):
            y = conv_norm(c.channels * 4, 3)(x)
            x = x + conv_norm(c.channels * 4, 3, relu=False)(y)
        for m, shape in zip((2, 1), reversed(skips), strict=True):
            x = conv_norm(c.channels * m, 3)(_upsample(x, shape))
        return nn.sigmoid(Conv(3, (9, 9), padding="VALID")(_pad(x, 9)))


def noise_shapes(config: GeneratorConfig, shape: tuple[int, int]) -> list[tuple[int, int, int]]:
    """The ``[h, w, noise]`` shapes of each scale's noise, coarse to fine, for an
    output of ``shape`` = (H, W): each scale is the next one's size halved, rounded up."""
    sizes = [tuple(shape)]
    for _ in range((config.scales if config.kind == "pyramid" else 1) - 1):
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return [(h, w, config.noise) for h, w in reversed(sizes)]


def _module(config: GeneratorConfig, training: bool) -> nn.Module:
    return (Pyramid if config.kind == "pyramid" else Residual)(config, training)


def _inputs(config, content, key, shape):
    if content is None and not config.texture:
        raise ValueError("this generator stylises a content image: give one")
    if content is not None and config.texture:
        raise ValueError("a texture network takes no content image")
    if content is not None and (content.ndim != 3 or content.shape[-1] != 3):
        raise ValueError(f"content must be [H, W, 3] RGB (vmap over a batch), got {content.shape}")
    if content is not None and not jnp.issubdtype(content.dtype, jnp.floating):
        raise ValueError(f"content must be float in [0, 1], got {content.dtype} (divide by 255)")
    shape = tuple(content.shape[:2]) if content is not None else tuple(shape)
    return (None if content is None else content[None]), draw_noise(config, key, shape)


def draw_noise(config: GeneratorConfig, key: jax.Array, shape: tuple[int, int]) -> list[jax.Array]:
    """Each scale's uniform noise ``[1, h, w, noise]`` (``noise_shapes``), coarse to
    fine, for an output of ``shape``: one draw, cut into the scales. XLA:CPU compiles
    each draw into a dozen kernels of the counter-based generator, so a draw per scale
    made up much of a pyramid's compile time."""
    shapes = noise_shapes(config, shape)
    sizes = [math.prod(s) for s in shapes]
    flat = jax.random.uniform(key, (sum(sizes),))
    cuts = np.cumsum(sizes)[:-1].tolist()
    return [z.reshape(1, *s) for z, s in zip(jnp.split(flat, cuts), shapes, strict=True)]


def init(
    key: jax.Array, config: GeneratorConfig, shape: tuple[int, int] = (64, 64)
) -> dict[str, Any]:
    """Fresh variables ``{"params": ..., ["batch_stats": ...]}`` for ``config``.

    Flax's own initial values: LeCun-normal kernels (a normal truncated at two standard
    deviations, of variance 1 / fan-in), zero biases, unit normalisation scales, and batch
    statistics of mean 0 and variance 1. The kernels are drawn at once, as one array cut
    into pieces: ``Module.init`` draws each of the pyramid's ~50 kernels by its own
    generator, which took XLA:CPU 7 s to compile for a 3-scale pyramid, against a
    fraction of a second here.
    """
    k1, k2, k3 = jax.random.split(key, 3)

    def shapes_of():  # Only traced (eval_shape): the variables' shapes, nothing computed.
        content = None if config.texture else jnp.zeros((*shape, 3))
        inputs = _inputs(config, content, k2, shape)

        def one(content, noise):
            return _module(config, True).init(k3, content, noise)

        # Batch norm's statistics are averaged over the batch axis: trace under a vmap.
        batched = jax.vmap(one, axis_name=BATCH_AXIS, in_axes=(None, None), axis_size=1)
        return batched(*inputs)

    leaves, tree = jax.tree_util.tree_flatten_with_path(jax.eval_shape(shapes_of))
    shapes = [leaf.shape[1:] for _, leaf in leaves]
    names = [path[-1].key for path, _ in leaves]
    sizes = [math.prod(s) if n == "kernel" else 0 for n, s in zip(names, shapes, strict=True)]
    # flax's variance_scaling: a unit normal truncated at +-2 has std 0.8796.
    draws = jax.random.truncated_normal(k1, -2.0, 2.0, (sum(sizes),)) / 0.87962566
    values, start = [], 0
    for name, s, n in zip(names, shapes, sizes, strict=True):
        if name == "kernel":  # [kh, kw, in, out]: fan-in is kh * kw * in.
            values.append(draws[start : start + n].reshape(s) / math.sqrt(n // s[-1]))
            start += n
        elif name in ("bias", "mean", "scale", "var"):  # Biases, means 0; the rest 1.
            values.append(jnp.full(s, 1.0 if name in ("scale", "var") else 0.0))
        else:
            raise ValueError(f"generator.init has no initial value for a variable {name!r}")
    return jax.tree_util.tree_unflatten(tree, values)


def apply(
    variables: dict[str, Any],
    config: GeneratorConfig,
    content: jax.Array | None,
    key: jax.Array,
    *,
    shape: tuple[int, int] | None = None,
    training: bool = False,
):
    """The generator on one example: ``[H, W, 3]`` in [0, 1].

    Args:
      variables: from ``init`` (or a checkpoint).
      content: ``[H, W, 3]`` in [0, 1]; None for a texture network, which needs
        ``shape`` = (H, W).
      key: the noise.
      training: batch normalisation uses the batch's statistics (the caller vmaps with
        ``axis_name=BATCH_AXIS``) and returns them: ``(image, new batch_stats)``.

    Returns:
      ``image`` ``[H, W, 3]``; with ``training``, ``(image, batch_stats)`` (empty for
      instance normalisation).
    """
    inputs = _inputs(config, content, key, shape)
    if not training:
        return _module(config, False).apply(variables, *inputs)[0]
    if config.norm == "batch":
        image, updates = _module(config, True).apply(variables, *inputs, mutable=["batch_stats"])
        return image[0], updates["batch_stats"]
    return _module(config, True).apply(variables, *inputs)[0], {}
