"""The real VGG19 weights on the demo pair, at a small size."""

import numpy as np

import nst_jax


def test_real_weights_stylize_the_demo(real_weights):
    content, style = nst_jax.demo_images()
    content = nst_jax.resize_longest(content, 128)
    style = nst_jax.resize_longest(style, 128)
    result = nst_jax.stylize(
        content, style, nst_jax.Config(steps=50), weights=real_weights, progress=False
    )
    assert result.final["style"] <= 0.3 * result.initial["style"]
    assert np.abs(result.image - content).mean() > 0.02
    # Still the same picture: far closer to the content than to a shuffled copy of it.
    shuffled = content[::-1, ::-1]
    assert np.abs(result.image - content).mean() < 0.6 * np.abs(result.image - shuffled).mean()
