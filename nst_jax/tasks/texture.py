"""Texture synthesis (Gatys et al. 2015): style statistics alone, from noise."""

from __future__ import annotations

import dataclasses

import numpy as np

from nst_jax.config import Config
from nst_jax.progress import named
from nst_jax.solve.driver import Result
from nst_jax.tasks.stylize import check_image, stylize


def texture_config(config: Config) -> Config:
    """``config`` for texture synthesis: no content term, start from noise.

    Raises:
      ValueError: ``preserve_color``: a texture has no content whose colours to keep.
    """
    if config.preserve_color != "none":
        raise ValueError("preserve_color keeps a content's colours; a texture has no content")
    loss = dataclasses.replace(config.loss, content_weight=0.0, content_layers=())
    return dataclasses.replace(config, loss=loss, init="noise")


def canvas(shape: tuple[int, int]) -> np.ndarray:
    """A blank ``[H, W, 3]`` canvas: what a texture run stands in for the content (only
    its shape counts)."""
    blank = np.zeros((*shape, 3), np.float32)
    check_image("texture", blank)
    return blank


def synthesize(
    style: np.ndarray, shape: tuple[int, int], config: Config = Config(), **kwargs
) -> Result:
    """A texture of ``shape`` = (H, W), any size, from ``style``'s statistics alone.

    Args:
      style: ``[H', W', 3]`` float RGB in [0, 1].
      shape: ``(H, W)`` of the texture, independent of the style's.
      config: as for ``stylize``; its content term is dropped and the init is noise.
      **kwargs: passed to ``stylize`` (``weights``, ``callback``, ``progress``, ...).

    Returns:
      A ``Result``; its ``content`` losses are zero.
    """
    kwargs["progress"] = named(kwargs.get("progress", True), "texture")
    return stylize(canvas(shape), style, texture_config(config), **kwargs)
