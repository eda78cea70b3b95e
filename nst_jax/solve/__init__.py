"""Optimising the image: the pure solver (``solver``), the one compile point
(``programs``), and the host driver that runs it for a batch (``driver``)."""

from nst_jax.solve.driver import Result
from nst_jax.solve.programs import (
    compile_step,
    enable_compilation_cache,
    jit,
    lower_step,
    step_memory,
)
from nst_jax.solve.solver import (
    HISTORY_KEYS,
    State,
    initial_image,
    make_optimizer,
    setup,
    step,
    transfer,
)

__all__ = [
    "HISTORY_KEYS",
    "Result",
    "State",
    "compile_step",
    "enable_compilation_cache",
    "initial_image",
    "jit",
    "lower_step",
    "make_optimizer",
    "setup",
    "step",
    "step_memory",
    "transfer",
]
