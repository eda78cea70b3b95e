import io
import struct
import zlib

import numpy as np
import PIL.ImageFile
import pytest
from PIL import Image, PngImagePlugin

import nst_jax
from nst_jax import image as im


def _save(tmp_path, pil, name="x.png", **kw):
    path = tmp_path / name
    pil.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("L", 128, (128 / 255,) * 3),
        ("1", 1, (1.0, 1.0, 1.0)),
        ("RGB", (10, 20, 30), (10 / 255, 20 / 255, 30 / 255)),
        ("RGBA", (0, 0, 0, 0), (1.0, 1.0, 1.0)),  # Transparent -> white background.
        ("RGBA", (255, 0, 0, 255), (1.0, 0.0, 0.0)),
        ("LA", (0, 255), (0.0, 0.0, 0.0)),
        ("I;16", 32768, (32768 / 65535,) * 3),
        ("CMYK", (0, 0, 0, 0), (1.0, 1.0, 1.0)),
    ],
)
def test_modes_convert_to_rgb(tmp_path, mode, value, expected):
    name = "x.jpg" if mode == "CMYK" else ("x.tif" if mode == "I;16" else "x.png")
    path = _save(tmp_path, Image.new(mode, (5, 4), value), name)
    x = nst_jax.load_image(path)
    assert x.shape == (4, 5, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[2, 2], expected, atol=3 / 255)


def test_palette_image(tmp_path):
    pil = Image.new("RGB", (6, 6), (200, 50, 10)).convert("P", palette=Image.Palette.ADAPTIVE)
    x = nst_jax.load_image(_save(tmp_path, pil))
    np.testing.assert_allclose(x[0, 0], (200 / 255, 50 / 255, 10 / 255), atol=2 / 255)


def test_16bit_keeps_precision(tmp_path):
    a = np.array([[0, 1000, 65535]], dtype=np.uint16)
    x = nst_jax.load_image(_save(tmp_path, Image.fromarray(a), "x.png"))
    np.testing.assert_allclose(x[0, :, 0], a[0] / 65535, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((4, 8, 3), np.uint8)
    a[0, 0] = 255  # A white top-left pixel in the stored (landscape) pixels.
    pil = Image.fromarray(a)
    exif = pil.getexif()
    exif[0x0112] = 6  # "Rotate 90 CW to display".
    path = _save(tmp_path, pil, "x.png", exif=exif)
    x = nst_jax.load_image(path)
    assert x.shape == (8, 4, 3)  # Displayed upright: portrait.
    assert x[0, -1].min() == 1.0  # The stored top-left lands top-right.


def _chunks(data: bytes) -> list[bytes]:
    """A PNG's chunks, each whole (length, type, data, CRC)."""
    out, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        out.append(data[at : at + 12 + length])
        at += 12 + length
    return out


@pytest.mark.parametrize("where", ["exif", "xmp", "exif after pixels", "xmp after pixels"])
def test_image_size_agrees_with_load_image_and_decodes_nothing_it_need_not(
    tmp_path, monkeypatch, where
):
    """The orientation may come in an eXIf chunk or in XMP, before or after the pixels;
    image_size must say what load_image will give, and decode no pixels when the
    metadata come before them (a folder of large PNGs is sized before a run)."""
    pil = Image.fromarray(np.zeros((4, 8, 3), np.uint8))
    buf = io.BytesIO()
    if where.startswith("exif"):
        exif = pil.getexif()
        exif[0x0112] = 6
        pil.save(buf, format="PNG", exif=exif)
    else:
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta><tiff:Orientation>6</tiff:Orientation>")
        pil.save(buf, format="PNG", pnginfo=info)
    chunks = _chunks(buf.getvalue())
    if where.endswith("after pixels"):  # The metadata moved to just before IEND.
        (meta,) = [c for c in chunks if c[4:8] in (b"eXIf", b"iTXt")]
        chunks.remove(meta)
        chunks.insert(-1, meta)
    path = tmp_path / "x.png"
    path.write_bytes(buf.getvalue()[:8] + b"".join(chunks))
    assert nst_jax.load_image(path).shape == (8, 4, 3)  # Displayed upright: portrait.
    assert im.image_size(path) == (8, 4)
    if not where.endswith("after pixels"):

        def no_decoding(self):
            raise AssertionError("decoded the pixels")

        monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", no_decoding)
        assert im.image_size(path) == (8, 4)
        plain = _save(tmp_path, Image.new("RGB", (8, 4)), "plain.png")
        assert im.image_size(plain) == (4, 8)


def test_missing_and_corrupt_files_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        nst_jax.load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        nst_jax.load_image(bad)
    truncated = tmp_path / "trunc.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    truncated.write_bytes(buf.getvalue()[:60])
    with pytest.raises(ValueError):
        nst_jax.load_image(truncated)


def test_resize_longest_keeps_aspect():
    x = np.random.default_rng(0).random((30, 60, 3)).astype(np.float32)
    y = nst_jax.resize_longest(x, 20)
    assert y.shape == (10, 20, 3)
    assert 0.0 <= y.min() and y.max() <= 1.0
    with pytest.raises(ValueError):
        im.resized_shape((3, 4), 0)


def test_save_roundtrip_keeps_pixels_and_settings(tmp_path):
    x = np.random.default_rng(1).random((9, 11, 3)).astype(np.float32)
    path = nst_jax.save_image(tmp_path / "o.png", x, settings={"steps": 3, "style": "s.jpg"})
    y = nst_jax.load_image(path)
    np.testing.assert_allclose(y, x, atol=0.5 / 255 + 1e-6)
    assert nst_jax.read_settings(path) == {"steps": 3, "style": "s.jpg"}
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # No temporary files left.


def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = nst_jax.save_image(tmp_path / "o.png", np.zeros((4, 4, 3), np.float32))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError):
        nst_jax.save_image(path, np.ones((4, 4, 3), np.float32))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_check_writable(tmp_path):
    assert im.check_writable(tmp_path / "a.png") == tmp_path / "a.png"
    with pytest.raises(ValueError, match="does not exist"):
        im.check_writable(tmp_path / "missing" / "a.png")
    with pytest.raises(ValueError, match="folder"):
        im.check_writable(tmp_path)
    with pytest.raises(ValueError, match="format"):
        im.check_writable(tmp_path / "a.xyz")
    with pytest.raises(ValueError, match="cannot write"):
        im.check_writable("/proc/a.png")


def test_demo_images_are_rgb_floats():
    content, style = nst_jax.demo_images()
    for x in (content, style):
        assert x.ndim == 3 and x.shape[-1] == 3 and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert content.shape == (300, 451, 3) and style.shape == (480, 768, 3)  # The painting.
    assert style[..., 2].mean() > style[..., 0].mean()  # The Starry Night is mostly blue.


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, *, depth: int = 8, data: bytes = b"") -> bytes:
    """A PNG that claims ``width x height`` RGB pixels, with ``data`` (raw rows, each after
    a filter byte) as its image data: tiny, whatever it claims."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(data))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [30000, 20000, 10001])
def test_images_claiming_too_many_pixels_are_refused_from_the_header(tmp_path, side):
    """A 57-byte file claiming 900 (or 400, 100.02) megapixels is refused before anything
    is decoded: no Pillow traceback, no minute of decoding."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(side, side))
    for read in (nst_jax.load_image, im.image_size, nst_jax.load_mask):
        with pytest.raises(ValueError, match="limit of 100,000,000 pixels"):
            read(path)


def test_large_jpegs_decode_only_the_pixels_needed(tmp_path, rng):
    yy, xx = np.mgrid[0:1500, 0:2000] / 1500.0
    picture = np.stack([xx / 1.4, yy, 0.5 + 0.4 * np.sin(6 * xx)], -1).astype(np.float32)
    path = nst_jax.save_image(tmp_path / "big.jpg", picture)
    reduced = nst_jax.load_image(path, at_least=300)
    assert reduced.shape == (375, 500, 3)  # A quarter: the smallest scale of >= 300 px.
    assert im.image_size(path) == (1500, 2000)
    full = nst_jax.resize(nst_jax.load_image(path), (375, 500))
    assert np.abs(reduced - full).mean() < 0.01
    assert nst_jax.load_image(path, at_least=3000).shape == (1500, 2000, 3)
    # size= reads as a run at --size does (decoded reduced, then resized), so the API's
    # load_image(p, size=N) and the command line's --size N start from the same pixels.
    api = nst_jax.load_image(path, size=300)
    np.testing.assert_array_equal(api, nst_jax.resize(reduced, (225, 300)))


def test_16bit_colour_pngs_come_through_at_8_bits(tmp_path):
    """As the README says: Pillow reduces 16-bit colour to 8 bits a channel."""
    values = np.array([[[0, 30000, 65535], [1000, 2000, 40000]]], ">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in values)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_header(2, 1, depth=16, data=rows))
    x = nst_jax.load_image(path)
    np.testing.assert_allclose(x[0], values[0] / 65535, atol=1 / 255)


def test_16bit_pgms_keep_their_scale(tmp_path):
    """Pillow opens a 16-bit PGM as mode I, scaled to 16 bits: a dark one stays dark."""
    path = tmp_path / "dark.pgm"
    path.write_bytes(b"P5\n4 3\n65535\n" + np.full((3, 4), 200, ">u2").tobytes())
    np.testing.assert_allclose(nst_jax.load_image(path), 200 / 65535, atol=1e-6)


def test_settings_are_read_from_the_header_alone(tmp_path, monkeypatch):
    path = nst_jax.save_image(tmp_path / "o.png", np.zeros((8, 8, 3), np.float32),
                              settings={"style": "café.jpg"})  # fmt: skip
    nst_jax.save_image(tmp_path / "o.jpg", np.zeros((8, 8, 3), np.float32))

    def no_pixels(self):
        raise AssertionError("decoded the pixels")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_pixels)
    assert nst_jax.read_settings(path) == {"style": "café.jpg"}
    monkeypatch.undo()
    with pytest.raises(ValueError, match="holds no nst_jax settings"):
        nst_jax.read_settings(tmp_path / "o.jpg")


def test_writes_go_through_a_symbolic_link_and_keep_the_usual_mode(tmp_path):
    target = nst_jax.save_image(tmp_path / "real.png", np.zeros((4, 4, 3), np.float32))
    (tmp_path / "link.png").symlink_to(target)
    nst_jax.save_image(tmp_path / "link.png", np.ones((4, 4, 3), np.float32))
    assert (tmp_path / "link.png").is_symlink()
    assert nst_jax.load_image(target).min() == 1.0
    from nst_jax import atomic

    assert target.stat().st_mode & 0o777 == 0o666 & ~atomic.UMASK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "real.png"]
