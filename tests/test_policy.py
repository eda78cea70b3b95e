"""``tasks/policy.py``: what "auto" means where, decided once per run."""

import jax
import pytest

from nst_jax import Config, LossConfig, NetConfig, memory
from nst_jax.tasks import policy

CPU = jax.default_backend() == "cpu"


def test_auto_convolution_resolves_per_backend_and_size_with_or_without_remat():
    big, small = (policy.WINOGRAD_MIN_SIDE, 300), (policy.WINOGRAD_MIN_SIDE - 1, 300)
    config = Config()
    for net in (NetConfig(), NetConfig(remat=True)):  # Remat's strips run either.
        assert policy.choose_convolution(net, big, config) == ("winograd" if CPU else "direct")
        assert policy.choose_convolution(net, small, config) == "direct"
    assert policy.choose_convolution(NetConfig(convolution="direct"), big, config) == "direct"
    assert policy.choose_convolution(NetConfig(convolution="winograd"), small, config) == (
        "winograd"
    )
    plan = policy.plan(config, big)
    assert plan.net.convolution == ("winograd" if CPU else "direct") and plan.shape == big


def test_auto_falls_back_to_direct_where_only_direct_fits(monkeypatch):
    config, shape = Config(), (256, 384)
    direct = memory.estimate_bytes(shape, config.loss, NetConfig(convolution="direct"))
    winograd = memory.estimate_bytes(shape, config.loss, NetConfig(convolution="winograd"))
    assert direct < winograd
    monkeypatch.setattr(memory, "available_bytes", lambda: int((direct + winograd) / 2 / 0.9))
    assert policy.choose_convolution(config.net, shape, config) == "direct"
    monkeypatch.setattr(memory, "available_bytes", lambda: int(2 * winograd))
    assert policy.choose_convolution(config.net, shape, config) == ("winograd" if CPU else "direct")


def test_a_plan_that_cannot_fit_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 2**30)
    with pytest.raises(ValueError, match="largest size that fits"):
        policy.plan(Config(loss=LossConfig()), (4000, 6000))


def test_a_folder_jobs_default_batch_surely_fits(monkeypatch):
    """The default batch is one the estimate fits, not merely one ``plan`` does not
    refuse (``plan`` refuses what surely won't fit: at ``memory.SURELY`` of it)."""
    from nst_jax import batch

    config = Config(net=NetConfig(convolution="direct"))
    shape = (256, 384)
    one = memory.estimate_bytes(shape, config.loss, config.net)
    monkeypatch.setattr(memory, "available_bytes", lambda: int(3 * one / 0.9) + 1)
    policy.plan(config, shape, 4)  # Not refused at 4 (2.2 of the 3 that fit),
    assert batch._default_batch(config, [shape] * 8, 1, 1, memory.WIDTHS, None) == 3  # but 3.


def test_a_styles_pass_is_refused_by_xlas_figure_not_the_steps_estimate(monkeypatch):
    """A style's pass holds no gradients: where the step's estimate at the style's shape
    won't fit but XLA's figure for the pass does, the style runs; below that figure it
    is refused, naming --style_scale."""
    from nst_jax.solve import programs

    from .conftest import SMALL_WIDTHS

    config = Config(net=NetConfig(convolution="direct"))
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: 2**40)
    plan = policy.plan(config, (24, 32), widths=SMALL_WIDTHS)
    shape = (192, 256)
    step = memory.estimate_bytes(shape, config.loss, plan.net, widths=SMALL_WIDTHS)
    network = policy._shapes_only(plan.net, SMALL_WIDTHS)
    xla = memory.analysis_bytes(programs.style_memory(network, shape, config, output=plan.shape))
    assert step > 3 * xla, (step, xla)  # 5.8x here.
    # Asked again (a folder job's next batch): kept, not compiled again.
    again = programs.style_memory(network, shape, config, output=plan.shape)
    assert again is programs.style_memory(network, shape, config, output=plan.shape)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(1.5 * xla / 0.9))
    plan.check_style(config, shape, scale=8, size=32)  # Even SURELY of the step's won't fit.
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(0.8 * xla / 0.9))
    with pytest.raises(ValueError, match=r"\(--style_scale 8 x --size 32\) will not fit: 256x192"):
        plan.check_style(config, shape, scale=8, size=32)
    # A mix of styles: each one's pass is checked alone (its blend refused one style).
    mixed = Config(loss=LossConfig(style_blend=(0.7, 0.3)), net=config.net)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(1.5 * xla / 0.9))
    plan.check_style(mixed, shape, scale=8, size=32)
