"""The real VGG19 weights on the demo pair, at a small size."""

import dataclasses

import numpy as np
import pytest

import nst_jax
from nst_jax import Config, NetConfig
from nst_jax.statistics import STATISTICS

# The first three blocks: Winograd in two of them, and every statistic's point, in half
# the compiling of five. The demo test runs the defaults.
THREE_BLOCKS = nst_jax.LossConfig(
    style_layers=("conv1_1", "conv2_1", "conv3_1"), content_layers=("conv3_2",)
)


def test_real_weights_stylize_the_demo(real_weights):
    content, style = nst_jax.demo_images()
    content = nst_jax.resize_longest(content, 128)
    style = nst_jax.resize_longest(style, 128)
    result = nst_jax.stylize(content, style, Config(steps=50), weights=real_weights, progress=False)
    assert result.final["style"] <= 0.3 * result.initial["style"]
    assert np.abs(result.image - content).mean() > 0.02

    # Still the same picture: its coarse layout follows the content's, not a rotated copy's.
    def layout(x):
        return nst_jax.resize(x, (x.shape[0] // 8, x.shape[1] // 8)).mean(-1).ravel()

    assert np.corrcoef(layout(result.image), layout(content))[0, 1] > 0.7
    assert np.corrcoef(layout(result.image), layout(content[::-1, ::-1]))[0, 1] < 0.5


@pytest.mark.parametrize("name", STATISTICS)
def test_each_style_statistic_falls_with_real_weights(real_weights, name):
    content, style = nst_jax.demo_images()
    content = nst_jax.resize_longest(content, 64)
    style = nst_jax.resize_longest(style, 64)
    loss = dataclasses.replace(THREE_BLOCKS, style_loss=((name, 1.0),), mmd_samples=256)
    result = nst_jax.stylize(
        content, style, Config(steps=20, loss=loss), weights=real_weights, progress=False
    )
    assert result.final["style"] < 0.5 * result.initial["style"], result.history["style"]
    assert np.abs(result.image - content).mean() > 0.01


def test_winograd_and_direct_runs_agree(real_weights):
    """The CPU default (Winograd) and XLA's own convolutions make the same run."""
    content, style = nst_jax.demo_images()
    content = nst_jax.resize_longest(content, 96)
    style = nst_jax.resize_longest(style, 96)
    runs = {
        name: nst_jax.stylize(
            content,
            style,
            Config(steps=10, net=NetConfig(convolution=name), loss=THREE_BLOCKS),
            weights=real_weights,
            progress=False,
        )
        for name in ("direct", "winograd")
    }
    for key in ("total", "content", "style"):
        ours, xla = runs["winograd"].history[key], runs["direct"].history[key]
        np.testing.assert_allclose(ours, xla, rtol=2e-3, atol=1e-3 * np.abs(xla).max())
    # Adam divides by the gradient's size, so where a pixel's gradient is near zero,
    # float rounding moves it a full step: a few pixels differ by up to a few hundredths.
    diff = np.abs(runs["winograd"].image - runs["direct"].image)
    assert diff.mean() < 2e-3 and diff.max() < 0.05, (diff.mean(), diff.max())
    assert np.abs(runs["winograd"].image - content).mean() > 0.01  # It did stylise.
