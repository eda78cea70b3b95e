"""Feature inversion (Mahendran & Vedaldi 2015): an image whose activations at one layer
match a photo's, found from noise."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nst_jax.config import Config
from nst_jax.objective import LossConfig
from nst_jax.progress import named
from nst_jax.solve.driver import Result
from nst_jax.tasks.stylize import stylize_batch

# Mahendran & Vedaldi's regularisers, in this package's units (pixels in [0, 1],
# normalised reconstruction error): chosen on the demo image, see docs/figures.py.
INVERSION_LOSS = LossConfig(
    content_weight=1.0,
    content_loss="normalized",
    style_weight=0.0,
    tv_weight=1.0,
    tv_beta=2.0,
    alpha_norm_weight=10.0,
    alpha=6.0,
)


def invert_config(config: Config, layer: str) -> Config:
    """``config`` for feature inversion from ``layer``: normalised content loss, no style,
    start from noise. Its TV and α-norm settings are kept; ``INVERSION_LOSS`` has good ones.
    """
    loss = dataclasses.replace(
        config.loss,
        content_layers=(layer,),
        content_loss="normalized",
        content_weight=1.0,
        style_weight=0.0,
    )
    return dataclasses.replace(config, loss=loss, init="noise")


def invert(
    image: np.ndarray,
    layer: str,
    config: Config = Config(loss=INVERSION_LOSS),
    *,
    seeds: Sequence[int] = (0,),
    **kwargs,
) -> Result:
    """An image whose ``layer`` activations match ``image``'s, from noise.

    ``x* = argmin ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² + λ_α ‖x‖_α^α + λ_β TV_β(x)``, with λ_β, β, λ_α
    and α from ``config.loss`` (``tv_weight``, ``tv_beta``, ``alpha_norm_weight``,
    ``alpha``). Every seed gives one reconstruction, all in one vmapped program; deep
    layers show how much of the image the representation leaves free.

    Args:
      image: ``[H, W, 3]`` float RGB in [0, 1], the image to reconstruct.
      layer: a VGG19 layer name (a convolution or a pooling).
      config: settings; see ``invert_config`` for what inversion overrides.
      seeds: one PRNG seed per reconstruction (the noise it starts from).
      **kwargs: passed to ``stylize_batch`` (``weights``, ``term_weights``, ...).

    Returns:
      A batched ``Result``: ``image`` ``[len(seeds), H, W, 3]``.
    """
    kwargs["progress"] = named(kwargs.get("progress", True), f"invert {layer}")
    return stylize_batch(image, image, invert_config(config, layer), seeds=seeds, **kwargs)
