"""The network a run uses: weights, how they want their pixels, and how VGG19 runs.

``NetConfig`` says how the network runs: pooling (part of what it computes), the
convolution algorithm and ``remat`` (how, never what: every choice gives the same values
to float32 rounding). ``prepare(weights, net)`` turns weights and a config with a
concrete algorithm into a ``Network``: a pytree whose leaves are the parameters, with
the kernels the algorithm derives, and whose static fields carry everything else. Pass
it to jitted functions as an argument; nothing about how it runs hides in which keys its
parameters happen to have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import losses
from nst_jax.nets import conv, remat
from nst_jax.nets.vgg import POOLING, VGG19, feature_shape, layer, widths_of
from nst_jax.nets.weights import Preprocessing, Weights, preprocess

# "auto" is decided per run by the task layer (``tasks.policy``); the rest are
# ``conv.ALGORITHMS``.
CONVOLUTIONS = ("auto", *conv.ALGORITHMS)
MIN_SIDE = 16  # Pixels: smaller images leave VGG's deeper layers empty.

Moments = dict[str, tuple[tuple[str, ...], jax.Array | None]]


@dataclasses.dataclass(frozen=True)
class NetConfig:
    """How VGG19 runs.

    Attributes:
      pooling: ``"max"``, the network as it was trained (and as neural-style and the
        independent scoring run it), or ``"avg"``, which Gatys et al. 2016 prefer for
        smoother gradients. Max reaches much lower style and content errors under the
        scoring (README, Quality).
      convolution: ``"winograd"``, ``"direct"``, ``"plain"`` (XLA's convolutions with
        autodiff's gradient: the reference) or ``"auto"``, which the task layer decides
        for each run by the backend, the image size and the free memory
        (``tasks.policy.choose_convolution``). See ``conv.py`` for the algorithms and
        ``benchmarks/step.py`` for what each costs.
      remat: run VGG in strips and recompute it in the backward pass, keeping only each
        block's input, with the style statistics that are sums over positions taken
        strip by strip (``remat.py``): the same values and gradients in much less
        memory, for more time per step (``benchmarks/memory.py``).
    """

    pooling: str = "max"
    convolution: str = "auto"
    remat: bool = False

    def __post_init__(self):
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")
        if self.convolution not in CONVOLUTIONS:
            raise ValueError(f"convolution must be one of {CONVOLUTIONS}, got {self.convolution!r}")
        if not isinstance(self.remat, (bool, np.bool_)):
            raise ValueError(f"remat must be True or False, got {self.remat!r}")
        object.__setattr__(self, "remat", bool(self.remat))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Network:
    """A prepared VGG19: made by ``prepare``, passed to jitted functions as an argument.

    Attributes:
      params: ``{conv name: {kernel, bias, and the kernels convolution derives}}``.
      preprocessing: the pixels the weights expect.
      pooling: ``"avg"`` or ``"max"``.
      convolution: the algorithm, one of ``conv.ALGORITHMS``.
      remat: run in strips (``remat.py``).
    """

    params: dict
    preprocessing: Preprocessing = dataclasses.field(metadata=dict(static=True))
    pooling: str = dataclasses.field(default="avg", metadata=dict(static=True))
    convolution: str = dataclasses.field(default="plain", metadata=dict(static=True))
    remat: bool = dataclasses.field(default=False, metadata=dict(static=True))

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per block: the real ``vgg.WIDTHS``, or a test network's."""
        return widths_of(self.params)

    def features_and_sums(
        self, image: jax.Array, layers: Sequence[str], moments: Moments | None = None
    ) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
        """Activations of an RGB image, and sums over positions of other layers.

        With ``remat``, the backward pass needs much less memory, and a layer that only
        ``moments`` asks for is never held whole (``remat.py``); the values and
        gradients are the same.

        Args:
          image: ``[H, W, 3]`` RGB in [0, 1].
          layers: names from ``vgg.LAYERS``, returned whole.
          moments: ``{layer: (kinds, masks)}``: ``losses.moment_sums`` of the layer,
            with ``masks`` ``[R, h, w]`` at its resolution, or None.

        Returns:
          ``({layer: [h, w, c]}, {layer: {kind: [(R,) c, ...]}})``.
        """
        moments = moments or {}
        check_image_shape(image, [*layers, *moments])
        x = preprocess(image.astype(jnp.float32), self.preprocessing)
        if self.remat:
            return remat.features_and_sums(
                self.params,
                x,
                layers,
                moments,
                pooling=self.pooling,
                convolution=self.convolution,
            )
        every = tuple(dict.fromkeys((*layers, *moments)))
        feats = VGG19(
            layers=every, pooling=self.pooling, widths=self.widths, convolution=self.convolution
        ).apply({"params": self.params}, x)
        sums = {
            name: losses.moment_sums(feats[name], kinds, masks=masks)
            for name, (kinds, masks) in moments.items()
        }
        return {name: feats[name] for name in layers}, sums

    def features(self, image: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        """Activations ``{layer: [h, w, c]}`` of an RGB image ``[H, W, 3]`` in [0, 1]."""
        return self.features_and_sums(image, layers)[0]


def check_image_shape(image: jax.Array, layers: Sequence[str]) -> None:
    """Refuses, while tracing, what the network cannot take as one image: another rank or
    channel count (a batch is ``vmap``'s), integer pixels, or a side too small to leave a
    position at the deepest of ``layers``.

    Raises:
      ValueError: naming what the image is.
    """
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"an image must be [H, W, 3] RGB (vmap over a batch), got {image.shape}")
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"an image must be float in [0, 1], got {image.dtype} (divide by 255)")
    for name in layers:
        if min(feature_shape(image.shape[:2], name)) < 1:
            h, w = image.shape[:2]
            side = layer(name).stride
            raise ValueError(f"an image of {w}x{h} leaves {name} empty: it needs {side} px a side")


def prepare(weights: Weights, net: NetConfig = NetConfig(convolution="direct")) -> Network:
    """The ``Network`` that runs ``weights`` as ``net`` says, with the kernels its
    algorithm derives computed once, here, outside any jitted step.

    Raises:
      ValueError: ``net.convolution`` is ``"auto"``: that is decided per run, by the
        task layer (``tasks.policy.choose_convolution``), not here.
    """
    if net.convolution == "auto":
        raise ValueError(
            "convolution 'auto' is decided per run (tasks.policy.choose_convolution); "
            f"prepare a network with one of {conv.ALGORITHMS}"
        )

    def derive(name: str, p: dict) -> dict:
        kernel = jnp.asarray(p["kernel"], jnp.float32)
        algorithm = conv.layer_algorithm(net.convolution, layer(name).block)
        return {
            "kernel": kernel,
            "bias": jnp.asarray(p["bias"], jnp.float32),
            **conv.derive(algorithm, kernel),
        }

    params = {name: derive(name, p) for name, p in weights.params.items()}
    return Network(
        params=params,
        preprocessing=weights.preprocessing,
        pooling=net.pooling,
        convolution=net.convolution,
        remat=net.remat,
    )
