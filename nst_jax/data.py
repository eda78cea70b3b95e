"""Training photos for the feed-forward generators: files → augmented ``[B, S, S, 3]``
batches, decoded on a background thread.

A batch is a pure function of ``(seed, step)``: a resumed run draws the same batches it
would have drawn. Each sample is a random photo, scaled so that its short side is
``scale`` times the crop (``scale`` uniform in ``SCALES``), cropped at a random place
and flipped left-right half the time (Ulyanov et al. 2016 and Johnson et al. 2016 train
on random crops of natural photos).

Without a folder of the user's, the photos that scikit-image ships stand in
(``DEFAULT_PHOTOS``): every natural photo among them, the demo's content (Chelsea the
cat) left out so that it can show what the generator does to a photo it never saw.
"""

from __future__ import annotations

import math
import queue
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from nst_jax.image import image_size, load_image, resize

# scikit-image's natural photos (``skimage.data``), colour and grey: 13 in all.
DEFAULT_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "moon",
    "motorcycle_left",
    "motorcycle_right",
    "retina",
    "rocket",
)
SCALES = (1.0, 2.0)  # A sample's short side, in crops: zoomed in at most 2x.
_CACHE = 64  # Decoded photos kept in memory.


def default_photos() -> list[Path]:
    """The files of ``DEFAULT_PHOTOS`` inside scikit-image."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    found = {p.stem: p for p in folder.iterdir() if p.suffix in (".png", ".jpg")}
    return [found[name] for name in DEFAULT_PHOTOS]


def check_photos(paths: Sequence[Path], *, warn=print) -> list[Path]:
    """The paths whose headers read as images; each other one gets a warning.

    Raises:
      ValueError: none is left.
    """
    good = []
    for path in paths:
        try:
            image_size(path)
            good.append(Path(path))
        except ValueError as e:
            warn(f"warning: skipping training file {path}: {e}")
    if not good:
        raise ValueError(
            "no readable training images" + (f" among {len(paths)} files" if paths else "")
        )
    return good


def crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    *,
    scales: tuple[float, float] = SCALES,
) -> np.ndarray:
    """One augmented ``[size, size, 3]`` sample of ``image`` ``[H, W, 3]``: scaled so
    that its short side is ``size`` times a draw from ``scales``, cropped, maybe flipped."""
    h, w = image.shape[:2]
    short = size * rng.uniform(*scales)
    k = short / min(h, w)
    shape = (max(size, round(h * k)), max(size, round(w * k)))
    image = resize(image, shape)
    y = rng.integers(0, shape[0] - size + 1)
    x = rng.integers(0, shape[1] - size + 1)
    out = image[y : y + size, x : x + size]
    return out[:, ::-1] if rng.random() < 0.5 else out


class Photos:
    """Augmented batches from ``paths``; see the module docstring.

    ``batches(start)`` yields ``(step, [B, S, S, 3])`` from ``start`` on, ``prefetch``
    batches ahead of the caller, decoded on a background thread. ``scales`` is the range
    of a sample's short side, in crops (``SCALES``); ``(1, 1)`` crops each sample from
    the whole short side of its photo.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        *,
        size: int,
        batch_size: int,
        seed: int,
        scales: tuple[float, float] = SCALES,
    ):
        if not 1.0 <= scales[0] <= scales[1]:
            raise ValueError(f"photo scales must satisfy 1 <= low <= high, got {scales}")
        paths = list(dict.fromkeys(Path(p) for p in paths))  # A path twice: drawn once.
        self.paths, self.size, self.batch_size, self.seed = paths, size, batch_size, seed
        self.scales = (float(scales[0]), float(scales[1]))
        self._decoded: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._bad: set[Path] = set()

    def _photo(self, path: Path) -> np.ndarray | None:
        if path in self._decoded:
            self._decoded.move_to_end(path)
            return self._decoded[path]
        try:
            # Decoded (a JPEG at a reduced scale) with a short side of at least what a
            # sample spans, and a long side of twice that: wider photos need more.
            span = self.size * self.scales[1]
            h, w = image_size(path)
            at_least = math.ceil(max(2 * span, span * max(h, w) / max(min(h, w), 1)))
            image = load_image(path, at_least=at_least)
        except ValueError as e:
            if path not in self._bad:
                self._bad.add(path)
                print(f"warning: skipping training file {path}: {e}", file=sys.stderr)
            return None
        # Kept at no more than four times the short side a sample spans: a 12 MP PNG is
        # 137 MiB as float32, and the cache holds 64. (JPEGs decode smaller already; at
        # the defaults, every default photo is kept as it is.)
        keep = 4 * math.ceil(self.size * self.scales[1])
        if min(image.shape[:2]) > keep:
            k = keep / min(image.shape[:2])
            image = resize(image, (round(image.shape[0] * k), round(image.shape[1] * k)))
        self._decoded[path] = image
        while len(self._decoded) > _CACHE:
            self._decoded.popitem(last=False)
        return image

    def batch(self, step: int) -> np.ndarray:
        """Batch ``step``: ``[B, S, S, 3]`` float32, the same for the same seed and step."""
        rng = np.random.default_rng([self.seed, step])
        out = []
        while len(out) < self.batch_size:
            if self._bad.issuperset(self.paths):  # Else drawing again would never end.
                raise ValueError("no readable training images left")
            image = self._photo(self.paths[rng.integers(len(self.paths))])
            if image is not None:
                out.append(crop(image, self.size, rng, scales=self.scales))
        return np.stack(out).astype(np.float32)

    def batches(self, start: int, *, prefetch: int = 2) -> Iterator[tuple[int, np.ndarray]]:
        q: queue.Queue = queue.Queue(prefetch)
        stop = threading.Event()

        def work():
            step = start
            while not stop.is_set():
                try:
                    item = (step, self.batch(step))
                except Exception as e:  # noqa: BLE001 - handed to the consumer.
                    item = e
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if isinstance(item, Exception):
                    return
                step += 1

        thread = threading.Thread(target=work, daemon=True, name="nst_jax-photos")
        thread.start()
        try:
            while True:
                item = q.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
