"""What a job reads: the input files named (``Inputs``), and the masks loaded against
the content's shape, with a note or a refusal for each kind of mismatch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from nst_jax.image import load_mask
from nst_jax.progress import say


def _paths(name: str, paths: Sequence[str]) -> tuple[str, ...]:
    paths = tuple(str(p).strip() for p in paths)
    if any(not p for p in paths):
        raise ValueError(f"empty path in --{name} (a stray comma?): {','.join(paths)!r}")
    return paths


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The files a job reads.

    Attributes:
      content: the content image (none in texture mode).
      styles: one or more style images (none in invert mode).
      demo: use the built-in demo images for whichever of content and style is missing.
      content_masks: one mask per style: style i applies where mask i is white.
      style_masks: one mask per style, ``"-"`` for none: which part of it counts.
      init: an image to start from.
      weights: VGG19 weights; None for the verified default.
    """

    content: str | None = None
    styles: tuple[str, ...] = ()
    demo: bool = False
    content_masks: tuple[str, ...] = ()
    style_masks: tuple[str, ...] = ()
    init: str | None = None
    weights: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "styles", _paths("style", self.styles))
        object.__setattr__(self, "content_masks", _paths("content_masks", self.content_masks))
        object.__setattr__(self, "style_masks", _paths("style_masks", self.style_masks))
        for name in ("content", "init", "weights"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise ValueError(f"--{name} is empty")
        check_one_content(self.content)

    def image_files(self) -> list[str]:
        """Every input image named: content, styles, masks, init."""
        named = [self.content, self.init, *self.styles, *self.content_masks]
        return [p for p in named + [p for p in self.style_masks if p != "-"] if p]

    def files(self) -> list[Path]:
        """Every input file named, for the checks against outputs."""
        return [Path(p) for p in [*self.image_files(), self.weights] if p]


def check_one_content(content: str | None) -> None:
    """Refuses a folder as the one ``--content`` of a run, pointing to folder jobs."""
    if content is not None and Path(content).is_dir():
        raise ValueError(
            f"--content {content} is a folder: a folder of contents takes --output_dir"
        )


def check_style_blend(blend: Sequence[float] | None, styles: int) -> None:
    """Refuses a ``--style_blend`` that is not one weight per style image."""
    if blend is not None and len(blend) != styles:
        raise ValueError(
            f"--style_blend takes one weight per --style image: {len(blend)} for {styles}"
        )


def aspect_differs(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether shapes ``a`` and ``b`` (H, W) differ in aspect ratio by more than 1%."""
    return abs(a[0] * b[1] - b[0] * a[1]) > 0.01 * b[0] * a[1]


def load_masks(inputs: Inputs, style_shapes, content_shape, headers: dict, size: int):
    """``(content masks at their files' sizes, style masks or None)``, or ``(None, None)``.

    A content mask of another size than the content gets a note (it is resized), and
    so does a style mask of another aspect ratio than its style (it is stretched); a
    style mask that is all black is refused (its style would have no statistics), and
    a faint one (no pixel above 0.5) gets a warning."""
    if not inputs.content_masks:
        return None, None
    n = len(style_shapes)  # (H, W) of each style, the demo's included.
    if len(inputs.content_masks) != n:
        raise ValueError(
            f"{len(inputs.content_masks)} --content_masks for {n} styles; give one each"
        )
    style_masks = None
    if inputs.style_masks:
        if len(inputs.style_masks) != n:
            raise ValueError(
                f"{len(inputs.style_masks)} --style_masks for {n} styles; use - for none"
            )
        style_masks = [
            None if p == "-" else load_mask(p, at_least=size) for p in inputs.style_masks
        ]
        for i, (path, mask) in enumerate(zip(inputs.style_masks, style_masks, strict=True)):
            if mask is not None and float(mask.sum()) < 1.0:  # Its targets would be zeros.
                raise ValueError(
                    f"style mask {path} is empty: style {i + 1} would have no statistics"
                )
            if mask is not None and mask.max() < 0.5:
                say(f"warning: style mask {path} is faint (no pixel above 0.5)")
            if mask is not None and aspect_differs(headers[path], style_shapes[i]):
                (h, w), (sh, sw) = headers[path], style_shapes[i]
                say(f"note: stretching style mask {path} from {w}x{h} to its style's {sw}x{sh}")
    masks = []
    for path in inputs.content_masks:
        masks.append(load_mask(path, at_least=size))  # A damaged one fails before its note.
        if headers[path] != tuple(content_shape):
            h, w = headers[path]
            say(
                f"note: resizing mask {path} from {w}x{h} to the content's "
                f"{content_shape[1]}x{content_shape[0]}"
            )
    return masks, style_masks
