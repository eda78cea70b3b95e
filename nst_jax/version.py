"""The package's version, read by ``pyproject.toml`` and recorded in every output."""

__version__ = "0.2.0"
