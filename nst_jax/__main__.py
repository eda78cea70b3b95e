"""``python -m nst_jax``: the command line (``cli.py``), as ``run.py`` and ``nst-jax``."""

from nst_jax.cli import run

run()
