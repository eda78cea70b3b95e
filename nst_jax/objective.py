"""The style-transfer objective: ``f(image) -> (loss, terms)`` from targets and weights.

``L(x) = α Σ_c L_content + β Σ_l w_l E_l + λ_tv TV(x)`` (Gatys et al. 2016, eq. 7), with
the content and style targets computed once from the content and style images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import losses
from nst_jax.image import Preprocessing, preprocess
from nst_jax.vgg import POOLING, VGG19, WIDTHS, check_layers

DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the image is asked to match, and how much each part counts.

    Attributes:
      content_weight: α, the weight of the content loss.
      style_weight: β, the weight of the style loss.
      tv_weight: weight of the total-variation smoothness penalty.
      content_layers: VGG19 layers whose activations the content loss compares.
      style_layers: VGG19 layers whose Gram matrices the style loss compares.
      style_layer_weights: one weight per style layer, ``w_l``; ``None`` means equal
        weights that sum to 1.
      pooling: ``"avg"`` or ``"max"`` pooling in VGG19.
      widths: VGG channel widths; only tests change it, to run narrow networks.
    """

    content_weight: float = 1.0
    style_weight: float = 1e-2
    tv_weight: float = 5e3
    content_layers: tuple[str, ...] = ("conv4_2",)
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    pooling: str = "avg"
    widths: tuple[int, ...] = WIDTHS

    def __post_init__(self):
        for name in ("content_weight", "style_weight", "tv_weight"):
            value = getattr(self, name)
            if not value >= 0:  # Also catches NaN.
                raise ValueError(f"{name} must be >= 0, got {value}")
        object.__setattr__(self, "content_layers", check_layers(self.content_layers))
        object.__setattr__(self, "style_layers", check_layers(self.style_layers))
        if self.style_layer_weights is not None:
            w = tuple(float(v) for v in self.style_layer_weights)
            if len(w) != len(self.style_layers):
                raise ValueError(
                    f"{len(w)} style layer weights for {len(self.style_layers)} style layers"
                )
            if any(not v >= 0 for v in w):
                raise ValueError(f"style layer weights must be >= 0, got {list(w)}")
            object.__setattr__(self, "style_layer_weights", w)
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """``w_l`` per style layer; equal and summing to 1 unless given."""
        if self.style_layer_weights is not None:
            return self.style_layer_weights
        return (1.0 / len(self.style_layers),) * len(self.style_layers)


class Targets(NamedTuple):
    """What the optimised image is compared against.

    Attributes:
      content: ``{layer: [h, w, c]}`` activations of the content image.
      style: ``{layer: [c, c]}`` normalised Gram matrices of the style image.
    """

    content: dict[str, jax.Array]
    style: dict[str, jax.Array]


class Terms(NamedTuple):
    """The unweighted loss terms; the total is their weighted sum."""

    content: jax.Array
    style: jax.Array
    tv: jax.Array


def features(
    params: dict,
    image: jax.Array,
    layers: Sequence[str],
    *,
    preprocessing: Preprocessing,
    pooling: str = "avg",
    widths: Sequence[int] = WIDTHS,
) -> dict[str, jax.Array]:
    """VGG19 activations of an RGB image.

    Args:
      params: VGG19 parameters ``{layer: {kernel, bias}}``.
      image: ``[H, W, 3]`` RGB in [0, 1].
      layers: names of the layers to return.

    Returns:
      ``{layer: [h, w, c]}``.
    """
    model = VGG19(layers=tuple(layers), pooling=pooling, widths=tuple(widths))
    return model.apply({"params": params}, preprocess(image, preprocessing))


def make_targets(
    params: dict,
    content: jax.Array,
    style: jax.Array,
    config: LossConfig,
    *,
    preprocessing: Preprocessing,
) -> Targets:
    """Content activations and style Gram matrices, computed once before optimising.

    Args:
      content: ``[H, W, 3]`` RGB in [0, 1].
      style: ``[H', W', 3]`` RGB in [0, 1]; any size.
    """
    kw = dict(preprocessing=preprocessing, pooling=config.pooling, widths=config.widths)
    content_feats = features(params, content, config.content_layers, **kw)
    style_feats = features(params, style, config.style_layers, **kw)
    return Targets(
        content={k: jax.lax.stop_gradient(v) for k, v in content_feats.items()},
        style={k: jax.lax.stop_gradient(losses.gram(v)) for k, v in style_feats.items()},
    )


def loss_terms(
    params: dict,
    image: jax.Array,
    targets: Targets,
    config: LossConfig,
    *,
    preprocessing: Preprocessing,
) -> Terms:
    """The content, style and TV terms for ``image`` (``[H, W, 3]``), unweighted by α/β."""
    layers = tuple(dict.fromkeys(config.content_layers + config.style_layers))
    feats = features(
        params,
        image,
        layers,
        preprocessing=preprocessing,
        pooling=config.pooling,
        widths=config.widths,
    )
    content = sum(losses.content_loss(feats[k], targets.content[k]) for k in config.content_layers)
    style = sum(
        w * losses.gram_loss(feats[k], targets.style[k])
        for k, w in zip(config.style_layers, config.layer_weights, strict=True)
    )
    return Terms(
        content=jnp.asarray(content, jnp.float32),
        style=jnp.asarray(style, jnp.float32),
        tv=losses.total_variation(image),
    )


def total(terms: Terms, config: LossConfig) -> jax.Array:
    """``α content + β style + λ_tv tv``."""
    return (
        config.content_weight * terms.content
        + config.style_weight * terms.style
        + config.tv_weight * terms.tv
    )


def objective(
    params: dict,
    image: jax.Array,
    targets: Targets,
    config: LossConfig,
    *,
    preprocessing: Preprocessing,
) -> tuple[jax.Array, Terms]:
    """``(total loss, terms)`` for ``image`` ``[H, W, 3]``; differentiate w.r.t. ``image``."""
    terms = loss_terms(params, image, targets, config, preprocessing=preprocessing)
    return total(terms, config), terms
