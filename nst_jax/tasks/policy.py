"""Decisions a run makes once, from where it runs: the convolution algorithm behind
``"auto"``, and whether the step fits in memory (``memory.py``).

``plan`` decides both before anything is resized or compiled, and ``Plan.check_style``
whether a style's own pass fits before the style is resized; ``fits_compiled`` checks
XLA's own figure once the step is compiled, before any compute.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax

from nst_jax import memory
from nst_jax.config import Config
from nst_jax.nets.network import NetConfig, Network, prepare
from nst_jax.nets.vgg import WIDTHS, init_params
from nst_jax.nets.weights import CAFFE, Weights
from nst_jax.solve import programs

# "auto" uses Winograd from this short side on: below it, the seconds Winograd adds to
# compiling outweigh what a few hundred steps save (``benchmarks/step.py``).
WINOGRAD_MIN_SIDE = 128


def choose_convolution(
    net: NetConfig,
    shape: tuple[int, int],
    config: Config,
    batch: int = 1,
    *,
    widths: Sequence[int] = WIDTHS,
) -> str:
    """The algorithm a run of ``batch`` images at ``shape`` = (H, W) uses: the one
    ``net`` names, or for ``"auto"``: Winograd on CPU for images whose short side is at
    least ``WINOGRAD_MIN_SIDE``, where it makes a step faster; direct for smaller ones,
    on accelerators (their convolution libraries pick their own algorithms), or where
    only direct convolutions fit in the free memory."""
    if net.convolution != "auto":
        return net.convolution
    if jax.default_backend() != "cpu" or min(shape) < WINOGRAD_MIN_SIDE:
        return "direct"
    winograd = dataclasses.replace(net, convolution="winograd")
    need = batch * memory.estimate_bytes(shape, config.loss, winograd, widths=widths)
    return "winograd" if memory.fits(need) else "direct"


class Plan(NamedTuple):
    """What ``plan`` decided for a run: its shape, batch and network config."""

    shape: tuple[int, int]
    batch: int
    net: NetConfig  # With the convolution decided.
    widths: tuple[int, ...]

    def network(self, weights: Weights) -> Network:
        """The network this plan runs."""
        return prepare(weights, self.net)

    def fits_compiled(self, config: Config) -> Callable[[jax.stages.Compiled], None]:
        """A check of the compiled step against the free memory, for the driver."""
        lean = memory.lean_bytes(self.shape, config.loss, self.net, self.batch, widths=self.widths)

        def check(compiled):
            memory.check_compiled(compiled, self.shape, self.batch, lean=lean)

        return check

    def check_style(self, config: Config, shape: tuple[int, int], *, scale: float, size: int):
        """Refuses a style whose pass at ``shape`` = (H, W), ``scale`` times an output of
        longest side ``size``, won't fit, before the style is resized to that.

        A run takes a style's statistics from a pass of its network over the style at
        the style's own shape, which the step's checks (at the content's) do not cover.
        The pass holds no gradients nor optimiser: the step's estimate at its shape errs
        4-8x high for it (``memory.SURELY`` of it would refuse passes that fit). Where
        even that estimate fits, so does the pass; elsewhere XLA's own figure for the
        pass, compiled from shapes (no memory, about half a second), decides.

        Raises:
          ValueError: it won't fit; the message names ``--style_scale``.
        """
        shape = (int(shape[0]), int(shape[1]))
        need = memory.estimate_bytes(shape, config.loss, self.net, widths=self.widths)
        if memory.fits(need):
            return
        network = _shapes_only(self.net, tuple(self.widths))
        analysis = programs.style_memory(network, shape, config, output=self.shape)
        sure = memory.SURELY  # Without XLA's figure, what surely won't fit.
        if analysis is not None:
            need, sure = memory.analysis_bytes(analysis), 1.0
        short = memory.shortfall(need, shape, sure=sure)
        if short is not None:
            needs, side = short
            raise ValueError(
                f"the style's pass (--style_scale {scale:g} x --size {size}) will not fit:"
                f" {needs}; the largest that fits is about --style_scale"
                f" {max(side, 16) / size:.3g}"
            )


@functools.cache
def _shapes_only(net: NetConfig, widths: tuple[int, ...]) -> Network:
    """The network ``net`` runs with VGG19's topology at ``widths``, as shapes only:
    compiling with it needs no memory for its weights. Kept: a folder job's batches
    ask again."""

    def network():
        return prepare(Weights(init_params(jax.random.key(0), widths=widths), CAFFE, ""), net)

    return jax.eval_shape(network)


def plan(
    config: Config,
    shape: tuple[int, int],
    batch: int = 1,
    *,
    widths: Sequence[int] = WIDTHS,
) -> Plan:
    """Decides a run's convolution algorithm and checks that it surely fits, before
    anything is resized or compiled.

    Raises:
      ValueError: the run cannot fit in the free memory; the message names the largest
        ``--size`` that fits, and whether ``--remat`` would.
    """
    shape = (int(shape[0]), int(shape[1]))
    algorithm = choose_convolution(config.net, shape, config, batch, widths=widths)
    net = dataclasses.replace(config.net, convolution=algorithm)
    memory.check_estimate(shape, config.loss, net, batch, widths=widths)
    return Plan(shape, batch, net, tuple(widths))
