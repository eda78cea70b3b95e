"""``memory.py``: the quick estimate bounds XLA's figure for the compiled step, and a
size that cannot fit names the largest one that does."""

import pytest

from nst_jax import Config, LossConfig, NetConfig, memory, solve

from .test_remat import full_network


def test_too_large_a_size_names_what_fits(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 200 * 2**20)
    net = NetConfig(convolution="direct")
    with pytest.raises(ValueError, match=r"largest size that fits is about --size \d+"):
        memory.check_estimate((8000, 8000), LossConfig(), net)
    memory.check_estimate((64, 64), LossConfig(), net)  # Fits.
    with pytest.raises(ValueError, match="not 'auto'"):
        memory.estimate_bytes((64, 64), LossConfig(), NetConfig())


@pytest.mark.parametrize(
    "convolution, remat, loss",
    [
        ("direct", False, {}),
        ("winograd", False, {"content_layers": ("pool4",)}),
        ("direct", False, {"style_loss": (("histogram", 1.0),)}),  # Matching's temporaries.
        # Remat's plain Gram step: test_remat.py, at 320x480.
        ("winograd", True, {"style_loss": (("histogram", 1.0), ("gram", 1.0))}),
        ("direct", True, {"content_layers": ("conv1_2",)}),  # Held whole.
    ],
)
def test_memory_estimate_bounds_xla(convolution, remat, loss):
    """The quick estimate should not be below XLA's figure for the step a run compiles,
    nor so far above it that ``memory.SURELY`` of it would refuse a size that fits."""
    net = NetConfig(convolution=convolution, remat=remat)
    config = Config(loss=LossConfig(**loss), net=net)
    shape = (96, 128)
    estimate = memory.estimate_bytes(shape, config.loss, net)
    analysis = solve.step_memory(full_network(convolution, remat), shape, config)
    if analysis is None:
        pytest.fail("XLA gave no memory analysis on this backend")
    xla = memory.analysis_bytes(analysis)
    assert xla <= estimate and memory.SURELY * estimate <= xla, (xla, estimate)
