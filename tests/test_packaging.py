"""The package installs the way Python users expect: ``pip install .`` gives
``import nst_jax`` anywhere and an ``nst-jax`` command, with the dependencies that
``requirements.txt`` pins."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[re.sub(r"[-_.]+", "-", name.lower())] = version
    return out


def test_pyproject_dependencies_agree_with_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert declared == _pins((ROOT / "requirements.txt").read_text().splitlines())
    assert project["scripts"] == {"nst-jax": "nst_jax.cli:run"}


def test_pip_install_gives_the_package_and_the_command(tmp_path):
    """From a copy of the sources, as a clone has them (setuptools builds in the source
    folder, which is not to be touched), into a folder of its own."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copy(ROOT / name, clone)
    shutil.copytree(
        ROOT / "nst_jax", clone / "nst_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", "--target", str(target), str(clone)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    assert (target / "nst_jax" / "nets" / "vgg.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import nst_jax; print(nst_jax.__file__, nst_jax.__version__)"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(target / "nst_jax")), where.stdout
    command = subprocess.run(
        [str(target / "bin" / "nst-jax"), "--demo", "--steps=-1"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert command.returncode == 2 and "steps must be >= 0" in command.stderr, command.stderr
