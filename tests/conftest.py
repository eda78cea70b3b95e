"""Shared fixtures. Unit tests use narrow, randomly initialised VGG19s; the few tests
that need the real weights take the ``real_weights`` fixture, which fetches and caches
them (``python -m nst_jax.nets.fetch`` does the same ahead of time).

Every compiled program is kept in a persistent compilation cache for the session, in a
fresh folder shared by the test workers (pytest-xdist) and the command lines tests
start, so that a program is compiled once.

The tests compile hundreds of small programs and run most of them a few times, so they
compile for compiling fast: at LLVM's lowest optimisation level
(``--xla_backend_optimization_level=0``; XLA's default is 3) and with XLA:CPU's older
fusion emitters (``--xla_cpu_use_fusion_emitters=false``). Both change how XLA:CPU
turns the same program into machine code, not the program; the Winograd-against-direct
run still agrees to its tolerance. Together they halve the compiling of a generator's
training step (13.5 s to 6.1 s) and took the whole suite from 12:00 to 6:18 on 2 cores.
The memory, remat and strip tests (``test_memory.py``, ``test_remat.py``,
``test_conv.py``), whose figures come from the compiled programs, also pass under
XLA's defaults. Set before JAX starts, and inherited by the command lines tests start.
"""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # Before JAX starts.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nst_jax  # noqa: E402
from nst_jax import NetConfig, Weights  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
_CACHE = os.environ.get("NST_JAX_TEST_CACHE")
if _CACHE is None:  # The first process of the session makes it, and removes it at exit.
    _CACHE = tempfile.mkdtemp(prefix="nst_jax_test_xla_")
    os.environ["NST_JAX_TEST_CACHE"] = _CACHE  # For the workers.
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ["NST_JAX_COMPILATION_CACHE"] = _CACHE  # For the command lines tests start.
# Programs worth keeping; the many tiny ones of eager tests cost more to write than to
# compile again.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
nst_jax.solve.enable_compilation_cache(_CACHE)

SMALL_WIDTHS = (4, 8, 8, 16, 16)


def shallow(**kw) -> nst_jax.LossConfig:
    """A loss that stops at block 3: where a test's point does not need the whole
    network, its programs compile in half the time."""
    layers = {"style_layers": ("conv1_1", "conv2_1", "conv3_1"), "content_layers": ("conv2_2",)}
    return nst_jax.LossConfig(**{**layers, **kw})


@pytest.fixture(scope="session")
def small_weights() -> Weights:
    """A narrow random VGG19 with the real topology and Caffe preprocessing."""
    params = nst_jax.init_params(jax.random.key(0), widths=SMALL_WIDTHS)
    return Weights(params=params, preprocessing=nst_jax.CAFFE, sha256="random-small")


@pytest.fixture(scope="session")
def small_net(small_weights):
    """The small network, prepared with XLA's own convolutions and autodiff: the
    reference every other way of running it is compared against."""

    def make(**net) -> nst_jax.Network:
        return nst_jax.prepare(small_weights, NetConfig(**{"convolution": "plain", **net}))

    return make


@pytest.fixture(scope="session")
def real_weights() -> Weights:
    return nst_jax.load_weights(progress=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def styles(rng) -> tuple[np.ndarray, np.ndarray]:
    """Two unlike styles: horizontal stripes ``[32, 32, 3]`` and sparse bright speckle
    ``[40, 24, 3]`` (another size)."""
    stripes = np.zeros((32, 32, 3), np.float32)
    stripes[::4] = 1.0
    stripes[..., 2] = 0.2
    speckle = (rng.random((40, 24, 3)) ** 3).astype(np.float32)
    return stripes, speckle


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random RGB image in [0, 1]: low-frequency noise, upsampled."""
    coarse = rng.random((max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    return nst_jax.resize(coarse, (h, w))


def interrupted_at_call(fn, n: int):
    """``fn``, but its ``n``-th call raises KeyboardInterrupt: a Ctrl-C at that point."""
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return fn(*args, **kwargs)

    return wrapped
