"""Trained generators in a model folder: the last checkpoint loaded as an architecture
and its arrays, applied to photos in one vmapped pass, and fingerprinted, so that an
output records which generator made it. Training them is ``train.py``'s."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nst_jax import checkpoint, memory
from nst_jax.image import MAX_PIXELS
from nst_jax.nets import generator
from nst_jax.nets.generator import GeneratorConfig
from nst_jax.objective import LossConfig
from nst_jax.solve import programs
from nst_jax.tasks.train import TrainConfig, fresh_state, generator_variables


def generator_config(meta: dict) -> GeneratorConfig:
    return GeneratorConfig(**meta["generator"])


def variables_hash(variables: dict) -> str:
    """SHA-256 of a generator's arrays (names, shapes, dtypes and values): which trained
    generator made an output, beyond its architecture and step count."""
    return checkpoint.tree_hash(variables)


def load_generator(model_dir: str | Path) -> tuple[GeneratorConfig, dict, dict]:
    """``(architecture, variables, meta)`` of the last checkpoint in ``model_dir``.

    Raises:
      ValueError: no checkpoint there, a foreign one, or one that does not fit its
        recorded architecture.
    """

    def like(meta: dict):
        try:
            g = generator_config(meta)
            layers = () if g.texture else LossConfig().content_layers
            config = TrainConfig(generator=g, loss=LossConfig(content_layers=layers))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{model_dir}: a checkpoint this version cannot read ({e})") from None
        # Only the shapes: initialising the arrays would compile and run a program whose
        # values the restore throws away.
        return jax.eval_shape(lambda key: fresh_state(key, config), jax.random.key(0))

    _, meta, state = checkpoint.load(model_dir, like)
    return generator_config(meta), generator_variables(state.params, state.batch_stats), meta


def check_outputs(shape: tuple[int, int], count: int = 1) -> None:
    """Refuses ``count`` outputs of ``shape`` above ``MAX_PIXELS`` in all, the inputs'
    limit: cheap enough to ask before a content is resized to them.

    Raises:
      ValueError: they are.
    """
    if count * shape[0] * shape[1] > MAX_PIXELS:
        raise ValueError(
            f"{count} output(s) of {shape[1]}x{shape[0]} are above the limit of"
            f" {MAX_PIXELS:,} pixels; ask for a smaller --size or fewer seeds"
        )


@functools.partial(jax.jit, static_argnames=("config", "shape"))
def _apply_seeds(variables, config: GeneratorConfig, content, keys, shape):
    def one(key):
        return generator.apply(variables, config, content, key, shape=shape)

    return jax.vmap(one)(keys)


def apply_generator(
    variables: dict,
    config: GeneratorConfig,
    content: np.ndarray | None,
    *,
    seeds: tuple[int, ...] = (0,),
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """The generator on ``content`` ``[H, W, 3]`` (any size), once per seed, in one
    vmapped call: ``[K, H, W, 3]``. A texture network needs ``shape`` instead. The
    program is compiled once per architecture, size and number of seeds in a process.

    Raises:
      ValueError: no seeds; neither a content nor a shape; outputs above
        ``MAX_PIXELS`` in all, or a program that will not fit in the free memory (the
        message names the largest size that fits).
    """
    if not len(seeds):
        raise ValueError("apply_generator needs at least one seed")
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    if content is not None:
        content = jnp.asarray(content, jnp.float32)
        if content.ndim != 3 or content.shape[-1] != 3:
            raise ValueError(f"content must be [H, W, 3], got shape {content.shape}")
        shape = content.shape[:2]
    elif shape is None:
        raise ValueError("a texture network needs the output's shape (H, W)")
    shape = tuple(int(n) for n in shape)
    check_outputs(shape, len(seeds))
    args = (variables, config, content, keys, shape)
    key = ("apply", config, shape, programs.shapes_of(variables, content, keys))

    def build():
        compiled = _apply_seeds.lower(*args).compile()
        memory.check_compiled(compiled, shape, len(seeds))  # XLA's own figure.
        return compiled

    return np.asarray(programs.memoized(key, build)(variables, content, keys))
