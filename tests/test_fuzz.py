"""Damaged files: valid images, masks and weights files, truncated and with bytes
flipped, a few hundred seeded cases. Each must load, or raise the ``ValueError`` the
command line turns into one line and exit 2: never another exception."""

import io
import warnings

import numpy as np
import pytest
from PIL import Image

import nst_jax
from nst_jax.nets import weights as wl

from .test_weights import fake_params, write_keras_h5

CASES = 100  # Per file kind: 1,000 image and mask reads, 200 weights files.


def _damaged(data: bytes, rng: np.random.Generator) -> bytes:
    """``data`` truncated, or with 1 to 8 bytes flipped, or both."""
    out = bytearray(data)
    how = rng.integers(3)
    if how in (1, 2):
        for i in rng.integers(0, len(out), size=rng.integers(1, 9)):
            out[i] ^= int(rng.integers(1, 256))
    if how in (0, 2):
        out = out[: int(rng.integers(0, len(out)))]
    return bytes(out)


def _image_bytes(fmt: str, rng) -> bytes:
    picture = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    mode = {"PNG": "RGBA", "GIF": "P", "TIFF": "RGB", "JPEG": "RGB", "BMP": "RGB"}[fmt]
    image = Image.fromarray(picture).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _outcome(read, path):
    try:
        with warnings.catch_warnings():  # A warning would be a second line on stderr.
            warnings.simplefilter("error")
            out = read(path)
    except ValueError as e:
        assert str(e) and "\n" not in str(e), repr(e)
        return "error"
    return out


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "BMP", "GIF"])
def test_damaged_images_and_masks_load_or_fail_cleanly(tmp_path, fmt):
    rng = np.random.default_rng(["PNG", "JPEG", "TIFF", "BMP", "GIF"].index(fmt))
    valid = _image_bytes(fmt, rng)
    path = tmp_path / f"x.{fmt.lower()}"
    outcomes = []
    for _ in range(CASES):
        path.write_bytes(_damaged(valid, rng))
        for read in (nst_jax.load_image, nst_jax.load_mask):
            out = _outcome(read, path)
            if not isinstance(out, str):
                assert out.dtype == np.float32 and np.all(np.isfinite(out))
                assert 0.0 <= out.min() and out.max() <= 1.0
            outcomes.append(isinstance(out, str))
    assert any(outcomes)  # The damage did break some files.


@pytest.mark.parametrize("kind", ["npz", "h5"])
def test_damaged_weights_files_load_or_fail_cleanly(tmp_path, kind):
    rng = np.random.default_rng({"npz": 1, "h5": 2}[kind])
    params = fake_params(rng)
    source = tmp_path / f"w.{kind}"
    if kind == "npz":
        wl.save_npz(source, params, nst_jax.CAFFE, "x")
    else:
        write_keras_h5(source, params)
    valid = source.read_bytes()
    path = tmp_path / f"damaged.{kind}"
    errors = 0
    for _ in range(CASES):
        path.write_bytes(_damaged(valid, rng))
        out = _outcome(nst_jax.load_weights, path)
        errors += isinstance(out, str)
        if not isinstance(out, str) and kind == "npz":
            # An npz that loads has its recorded arrays, every one of them.
            for name in params:
                np.testing.assert_array_equal(out.params[name]["kernel"], params[name]["kernel"])
    assert errors > 0
