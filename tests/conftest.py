"""Shared fixtures. Unit tests use narrow, randomly initialised VGG19s; the few tests
that need the real weights take the ``real_weights`` fixture, which fetches and caches
them (``python -m nst_jax.weights`` does the same ahead of time)."""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nst_jax  # noqa: E402
from nst_jax.image import CAFFE  # noqa: E402
from nst_jax.weights import Weights  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

SMALL_WIDTHS = (4, 8, 8, 16, 16)


@pytest.fixture(scope="session")
def small_weights() -> Weights:
    """A narrow random VGG19 with the real topology and Caffe preprocessing."""
    params = nst_jax.init_params(jax.random.key(0), widths=SMALL_WIDTHS)
    return Weights(params=params, preprocessing=CAFFE, sha256="random-small")


@pytest.fixture(scope="session")
def real_weights() -> Weights:
    return nst_jax.load_weights(progress=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image in [0, 1]: low-frequency noise, upsampled."""
    coarse = rng.random((max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    return nst_jax.resize(coarse, (h, w))
