"""Image files <-> float arrays: loading (EXIF, modes, 16-bit), resizing, masks, saving
with the settings chunk, and the demo images (labelled grids of them: ``grid.py``).

Arrays in this library are float32 RGB in [0, 1], shaped ``[H, W, 3]`` (one image) or
``[N, H, W, 3]`` (a batch). Everything that reads or writes images lives here, so the
rest of the library only ever sees arrays.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from nst_jax.atomic import atomic_path, is_link_loop, resolved

# The largest image read, in pixels, by the size its header claims: a 100 MP photo is
# 1.2 GB as float32 RGB. A larger claim is refused before anything is decoded, so a
# small file that claims a huge image (a decompression bomb) costs nothing. Checked in
# ``_opened``; Pillow's own, process-wide limit is left as the user's program set it.
MAX_PIXELS = 100_000_000

PNG_SETTINGS_KEY = "nst_jax"
DEMO_PAINTING = "starry_night.jpg"  # In nst_jax/assets/: the demo's style.
LUMA = (0.299, 0.587, 0.114)  # Y of YIQ / YUV (Rec. 601): how masks read colour files.


def _to_rgb(img: Image.Image, file_format: str | None = None) -> np.ndarray:
    """Any PIL mode -> float32 RGB in [0, 1]. Transparency is composited over white.
    ``file_format``: Pillow's name for the file's format; a 16-bit PGM opens as mode
    ``I``, scaled to 16 bits whatever its pixels."""
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        # 16/32-bit integer and float greyscale: keep the precision Pillow's 8-bit
        # conversion would throw away.
        a = np.asarray(img, dtype=np.float32)
        peak = float(a.max(initial=0.0))
        sixteen = mode.startswith("I;16") or (mode == "I" and file_format == "PPM")
        if sixteen or (mode == "I" and peak > 255):
            top = 65535.0
        elif mode == "I":
            top = 255.0
        else:
            top = max(peak, 1.0)
        grey = np.clip(a / top, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in ("1", "L", "CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode != "RGB":
        img = img.convert("RGBA")  # Palette and alpha modes; composited below.
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, img).convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


@contextlib.contextmanager
def _opened(path: Path):
    """The image at ``path``, opened (its header read, nothing decoded), with every
    failure of a corrupt or foreign file as one ``ValueError``."""
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():  # Damage warned of; the decoding decides.
            warnings.simplefilter("ignore")
            img = Image.open(path)
    except Image.DecompressionBombError:
        raise ValueError(f"{path} claims more than the limit of {MAX_PIXELS:,} pixels") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on a bad header.
        raise ValueError(f"not a readable image: {path} ({e.__class__.__name__})") from None
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(
                f"{path} is {w}x{h}, above the limit of {MAX_PIXELS:,} pixels; refusing it"
            )
        yield img


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says; as stored if that block is broken."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a broken EXIF block: read as stored.
        return img


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file as displayed (EXIF rotation applied), read from its
    header alone.

    Raises:
      ValueError: the file is missing, unreadable, or above ``MAX_PIXELS``.
    """
    with _opened(Path(path)) as img:
        w, h = img.size
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if img.format == "PNG" and not _png_metadata_after_pixels(img.fp):
                    # Everything is in the header Pillow has read: its PNG reader's
                    # getexif would decode the pixels to look for more.
                    exif = Image.Image.getexif(img)
                else:
                    exif = img.getexif()
                rotated = exif.get(0x0112, 1) in (5, 6, 7, 8)
        except Exception:  # noqa: BLE001 - a broken EXIF block: read as stored.
            rotated = False
    return (w, h) if rotated else (h, w)


def _png_metadata_after_pixels(fp) -> bool:
    """Whether a PNG has chunks after its pixels (IDAT): an eXIf, or XMP or EXIF text,
    may sit there, and Pillow reads them only by decoding the pixels. Found by skipping
    from chunk header to chunk header; the file's position is kept."""
    at = fp.tell()
    try:
        fp.seek(8)  # The signature.
        seen_pixels = False
        while len(header := fp.read(8)) == 8:
            kind = header[4:]
            if kind == b"IEND":
                break
            if kind == b"IDAT":
                seen_pixels = True
            elif seen_pixels:
                return True
            fp.seek(int.from_bytes(header[:4], "big") + 4, os.SEEK_CUR)  # Data and CRC.
        return False
    finally:
        fp.seek(at)


def load_image(
    path: str | os.PathLike, *, size: int | None = None, at_least: int | None = None
) -> np.ndarray:
    """Reads an image file as float32 RGB in [0, 1], shape ``[H, W, 3]``.

    EXIF orientation is applied. Greyscale, palette, RGBA/LA (over white), CMYK and
    16-bit greyscale files are converted, keeping 16-bit greyscale's precision; 16-bit
    colour files come through Pillow at 8 bits a channel. The size the header claims is
    checked first (``MAX_PIXELS``). With ``at_least``, a JPEG is decoded at the smallest
    of its reduced scales (1/2, 1/4, 1/8) whose longest side is still at least that:
    only the pixels a run will use are decoded. With ``size``, the same (``at_least``
    defaults to it), and the longest side is then resized to ``size``: what a run of the
    command line at ``--size`` runs on, so that the API and the command line give the
    same image.

    Raises:
      ValueError: the file is missing, unreadable, not an image, or too large.
    """
    path = Path(path)
    at_least = size if at_least is None else at_least
    with _opened(path) as img, warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")  # Pillow warns, rather than fails, on some damage.
        try:
            w, h = img.size
            if at_least is not None and img.format == "JPEG" and max(w, h) > at_least:
                scale = at_least / max(w, h)
                img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
            img.load()
            array = _to_rgb(_upright(img), img.format)
        except Exception as e:  # noqa: BLE001 - a corrupt file fails in many ways.
            raise ValueError(f"not a readable image: {path} ({e.__class__.__name__})") from None
        if any("runcated" in str(w.message) for w in warned):
            raise ValueError(f"not a readable image: {path} (truncated)")
    if size is not None:
        array = resize_longest(array, size)
    return array


def resized_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(H, W) scaled so that the longest side is ``size``, keeping the aspect ratio."""
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    h, w = shape
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def is_float(dtype) -> bool:
    """A floating dtype, NumPy's or ml_dtypes' (bfloat16, float8_*) alike."""
    return np.dtype(dtype).kind == "f" or "float" in np.dtype(dtype).name


def _float_pixels(image, what: str, channels: int | None = 3) -> np.ndarray:
    """``image`` as a float32 ``[H, W, channels]`` array (NumPy or JAX in).

    Raises:
      ValueError: another rank or channel count, or integer pixels.
    """
    a = np.asarray(image)
    if a.ndim != 3 or (channels is not None and a.shape[-1] != channels):
        raise ValueError(f"{what} must be [H, W, {channels or 'C'}], got shape {a.shape}")
    if not is_float(a.dtype):
        raise ValueError(f"{what} must be float pixels in [0, 1], got {a.dtype}")
    return a.astype(np.float32, copy=False)


def resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resizes ``[H, W, C]`` float pixels to ``shape`` = (H', W') with Lanczos
    (antialiased), clipped to [0, 1].

    Raises:
      ValueError: not ``[H, W, C]`` float pixels.
    """
    image = _float_pixels(image, "resize's image", channels=None)
    h, w = shape
    if image.shape[:2] == (h, w):
        return np.clip(image, 0.0, 1.0)  # A copy, as every other size gets.
    channels = [
        np.asarray(
            Image.fromarray(image[..., c].astype(np.float32), mode="F").resize(
                (w, h), Image.Resampling.LANCZOS
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_longest(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes ``[H, W, 3]`` so that its longest side is ``size`` pixels."""
    return resize(image, resized_shape(image.shape[:2], size))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` float in [0, 1] -> uint8, rounding to nearest."""
    return np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def check_writable(path: str | os.PathLike) -> Path:
    """Fails early, before any compute, if ``path`` cannot be written.

    A symbolic link is checked where it points, where ``save_image`` writes.

    Raises:
      ValueError: the folder is missing or read-only, the path is a folder, or a
        symbolic link loop.
    """
    path = Path(path)
    if is_link_loop(path):
        raise ValueError(f"output path is a symbolic link loop: {path}")
    if path.is_symlink():
        path = resolved(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise ValueError(f"output path is a folder: {path}")
    if not folder.is_dir():
        raise ValueError(f"output folder does not exist: {folder}")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nst_jax_probe_"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write to {folder}: {e.strerror or e}") from None
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"):
        raise ValueError(f"unsupported output format {path.suffix!r}; use .png or .jpg")
    return path


def save_image(
    path: str | os.PathLike, image: np.ndarray, *, settings: dict[str, Any] | None = None
) -> Path:
    """Writes ``[H, W, 3]`` float RGB atomically: a temporary file, then a rename.

    A PNG carries ``settings`` as JSON in an ``nst_jax`` text chunk, so that the result
    can be reproduced. A reader never sees a half-written file.

    Raises:
      ValueError: not ``[H, W, 3]`` float pixels, or pixels that are not finite.
      OSError: the folder is missing or cannot be written.
    """
    path = Path(path)
    image = _float_pixels(image, "save_image's image")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"not saving {path}: the image has non-finite pixels")
    pil = Image.fromarray(to_uint8(image), mode="RGB")
    suffix = path.suffix.lower()
    kwargs: dict[str, Any] = {}
    if suffix == ".png":
        info = PngImagePlugin.PngInfo()
        if settings is not None:
            info.add_text(PNG_SETTINGS_KEY, json.dumps(settings, sort_keys=True))
        kwargs["pnginfo"] = info
    elif suffix in (".jpg", ".jpeg"):
        kwargs["quality"] = 95
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"unsupported output format {path.suffix!r}")
    with atomic_path(path) as tmp:
        pil.save(tmp, format=fmt, **kwargs)
    return path


def load_mask(
    path: str | os.PathLike,
    shape: tuple[int, int] | None = None,
    *,
    at_least: int | None = None,
) -> np.ndarray:
    """Reads a mask as float32 ``[H, W]`` in [0, 1]: grey levels are soft weights.

    A colour or RGBA file counts by its luminance (over white). With ``shape`` the mask
    is resized to it (Lanczos, clipped to [0, 1]); ``at_least`` as for ``load_image``.
    """
    image = load_image(path, at_least=at_least)
    mask = np.clip(image @ np.asarray(LUMA, np.float32), 0.0, 1.0)
    return mask if shape is None else resize_mask(mask, shape)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` mask -> ``[*shape]`` (Lanczos like images), clipped to [0, 1]."""
    mask = np.asarray(mask, np.float32)
    if mask.shape != tuple(shape):
        mask = resize(np.repeat(mask[..., None], 3, axis=-1), shape)[..., 0]
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


def mask_problems(masks: np.ndarray, *, tolerance: float = 0.01) -> list[str]:
    """What is odd about ``[R, H, W]`` content masks, as messages for a warning.

    Pixels in no mask get no style (only the content and TV terms); pixels in several
    masks get each of their styles. Both are allowed, so these are warnings, not errors.
    """
    total = masks.sum(axis=0)
    out = []
    uncovered = float(np.mean(total < 0.5))
    overlap = float(np.mean(total > 1.5))
    if uncovered > tolerance:
        out.append(f"{uncovered:.0%} of the image is in no mask and gets no style")
    if overlap > tolerance:
        out.append(f"masks overlap on {overlap:.0%} of the image, which gets both styles")
    for i, m in enumerate(masks):
        if m.max() < 0.5:
            out.append(f"mask {i + 1} is empty; its style is unused")
    return out


def read_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings that ``save_image`` stored in a PNG's text chunk, read from the
    header alone (no pixels are decoded: a folder job reads every output's on a rerun).

    Raises:
      ValueError: the file is missing or unreadable, or holds no such settings.
    """
    with _opened(Path(path)) as img:
        text = img.info.get(PNG_SETTINGS_KEY)
    if not isinstance(text, str):
        raise ValueError(f"{path} holds no nst_jax settings")
    return json.loads(text)


def demo_images() -> tuple[np.ndarray, np.ndarray]:
    """The built-in demo pair: a photo that scikit-image ships and a painting shipped here.

    Returns:
      (content, style): float32 RGB in [0, 1]. The content is Chelsea the cat (CC0,
      Stefan van der Walt, from scikit-image); the style is Vincent van Gogh's *The
      Starry Night* (1889, public domain), ``assets/starry_night.jpg``, 768x480.
    """
    try:
        from skimage import data
    except ImportError:  # pragma: no cover - scikit-image is in requirements.txt
        raise ValueError("--demo needs scikit-image: pip install -r requirements.txt") from None
    content = data.chelsea().astype(np.float32) / 255.0
    painting = importlib.resources.files("nst_jax") / "assets" / DEMO_PAINTING
    with importlib.resources.as_file(painting) as path:
        style = load_image(path)
    return content, style
