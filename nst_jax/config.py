"""``Config``: everything that decides a run's result, given the images and the weights."""

from __future__ import annotations

import dataclasses
import math
import numbers

from nst_jax.nets.network import NetConfig
from nst_jax.objective import LossConfig

OPTIMIZERS = ("adam", "lbfgs")
INIT_KINDS = ("content", "noise", "style")
LINESEARCHES = ("zoom", "backtracking")
PRESERVE_COLOR = ("none", "luminance", "histogram")
# Seeds are non-negative and leave int32 room for what jobs add to them (an image's
# index in a folder, a step in training).
SEED_LIMIT = 2**31


@dataclasses.dataclass(frozen=True)
class Config:
    """A run's settings: what to match, how the network runs, and how to optimise.

    Attributes:
      loss: the objective's layers and weights.
      net: how VGG19 runs (pooling, convolution algorithm, remat).
      steps: optimiser steps. An L-BFGS step may evaluate the objective several times
        in its line search; an Adam step evaluates it once.
      optimizer: ``"adam"`` or ``"lbfgs"``.
      lr: Adam's starting learning rate, in pixel units (the image lives in [0, 1]).
        L-BFGS ignores it: its line search picks the step.
      lr_half_life: Adam's rate halves every this many steps, down to a tenth of ``lr``
        (``optax.exponential_decay``); 0 keeps it constant. A constant rate leaves the
        image jittering around its end point, which blurs when to stop; the README's
        quality section has the measurements.
      stop_tol: the stopping rule. The run ends once the lowest total loss so far fell by
        less than this fraction over the last ``stop_window`` steps, or at ``steps``,
        the cap; 0 always runs ``steps``. Checked at the host syncs (every ``chunk``
        steps); a batch stops once each of its images has met it. Chosen from the independent
        scoring: see the README's quality section.
      stop_window: the steps over which ``stop_tol`` is measured.
      init: start from the ``"content"`` image, uniform ``"noise"``, or the ``"style"``
        image (resized to the content's shape); the tasks also take an image to start
        from (``init_image``), which overrides this.
      seed: PRNG seed for the noise init and the sampled MMD kernels.
      lbfgs_memory: number of past updates L-BFGS keeps.
      linesearch: L-BFGS line search, ``"zoom"`` (strong Wolfe) or ``"backtracking"``
        (Armijo).
      linesearch_steps: most objective evaluations one line search may spend.
      preserve_color: keep the content's colours (Gatys et al. 2017): ``"luminance"``
        transfers on luminance only and puts the content's chroma back;
        ``"histogram"`` first matches each style's colours to the content's.
    """

    loss: LossConfig = LossConfig()
    net: NetConfig = NetConfig()
    steps: int = 300
    optimizer: str = "adam"
    lr: float = 0.08
    lr_half_life: float = 40.0
    stop_tol: float = 0.05
    stop_window: int = 20
    init: str = "content"
    seed: int = 0
    lbfgs_memory: int = 10
    linesearch: str = "zoom"
    linesearch_steps: int = 10
    preserve_color: str = "none"

    def __post_init__(self):
        if not isinstance(self.loss, LossConfig) or not isinstance(self.net, NetConfig):
            raise TypeError("Config needs a LossConfig as loss and a NetConfig as net")
        for name in ("steps", "seed", "stop_window", "lbfgs_memory", "linesearch_steps"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("lr_half_life", "stop_tol"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be in [0, 2^31), got {self.seed}")
        if self.stop_window < 1:
            raise ValueError(f"stop_window must be >= 1, got {self.stop_window}")
        if self.init not in INIT_KINDS:
            raise ValueError(f"init must be one of {INIT_KINDS}, got {self.init!r}")
        if self.lbfgs_memory < 1:
            raise ValueError(f"lbfgs_memory must be >= 1, got {self.lbfgs_memory}")
        if self.linesearch not in LINESEARCHES:
            raise ValueError(f"linesearch must be one of {LINESEARCHES}, got {self.linesearch!r}")
        if self.linesearch_steps < 1:
            raise ValueError(f"linesearch_steps must be >= 1, got {self.linesearch_steps}")
        if self.preserve_color not in PRESERVE_COLOR:
            raise ValueError(
                f"preserve_color must be one of {PRESERVE_COLOR}, got {self.preserve_color!r}"
            )

    def replace(self, **changes) -> Config:
        """A copy with ``changes``; ``loss=dict(...)`` and ``net=dict(...)`` update those
        configs' fields rather than replace them."""
        for name in ("loss", "net"):
            if isinstance(changes.get(name), dict):
                changes[name] = dataclasses.replace(getattr(self, name), **changes[name])
        return dataclasses.replace(self, **changes)
