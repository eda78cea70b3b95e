"""What a generator's checkpoint records of its training, and how a resume is checked
against it: the architecture, the settings (``RESUMABLE`` may change), the style's and
the VGG weights' SHA-256, and which photos trained it."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nst_jax import checkpoint
from nst_jax.progress import say
from nst_jax.version import __version__

if TYPE_CHECKING:
    from nst_jax.data import Photos
    from nst_jax.nets.weights import Weights
    from nst_jax.tasks.train import TrainConfig


def record(config: TrainConfig, style: np.ndarray, weights: Weights, photos: Photos | None) -> dict:
    """What a checkpoint of this training records (``checkpoint.save``'s ``meta``);
    ``style`` as trained on."""
    return {
        "nst_jax": __version__,
        "generator": dataclasses.asdict(config.generator.resolved()),
        "train": settings(config),
        "style_sha256": style_hash(style),
        "weights_sha256": weights.sha256,
        "photos": None if photos is None else photos_record(photos.paths),
    }


def resume(model_dir: str | Path, meta: dict, state: Any) -> tuple[int, Any]:
    """``(step, state)`` of the last checkpoint in ``model_dir`` that reads whole, in
    ``state``'s structure, with a note where the schedule or the photos changed.

    Raises:
      ValueError: it was made by other settings (beyond ``RESUMABLE``), another style
        or other weights, or in an earlier format.
    """

    def like(found: dict) -> Any:  # Refuses what is not this training's.
        if found["format"] == checkpoint.LEGACY_FORMAT:
            raise ValueError(
                f"{model_dir} holds a checkpoint of an earlier format ({found['format']}),"
                " which --mode apply still reads but training cannot resume; train into"
                " another --model folder"
            )
        for key in ("generator", "train", "style_sha256", "weights_sha256"):
            there, here = _comparable(key, found.get(key)), _comparable(key, meta[key])
            if there != here:
                raise ValueError(
                    f"{model_dir} holds a checkpoint of other {key.replace('_sha256', '')}"
                    f" settings{checkpoint.differences(there, here)}; train into another"
                    " --model folder, or remove it"
                )
        return state

    step, found, state = checkpoint.load(model_dir, like, remove_damaged=True)
    changed = checkpoint.differences(
        {k: found["train"].get(k) for k in ("lr", "warmup")},
        {k: meta["train"][k] for k in ("lr", "warmup")},
    )
    if changed:
        say(f"note: resuming {model_dir} at step {step} with another schedule{changed}")
    before = found.get("photos")
    if before and meta["photos"] and before["sha256"] != meta["photos"]["sha256"]:
        say(
            f"note: resuming {model_dir} on other training photos ({before['count']}"
            f" trained it, {meta['photos']['count']} now): batches from here on differ"
        )
    return step, state


def photos_record(paths) -> dict:
    """Which photos train: their count, and a SHA-256 of their names and sizes (cheap
    for a folder of 100,000; a resume on others is told so)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{Path(path).name} {Path(path).stat().st_size}\n".encode())
    return {"count": len(paths), "sha256": digest.hexdigest()}


def style_hash(style: np.ndarray) -> str:
    """SHA-256 of the style image's pixels as trained on (float32, as loaded)."""
    return hashlib.sha256(np.ascontiguousarray(style, np.float32).tobytes()).hexdigest()


def settings(config: TrainConfig) -> dict:
    """The training settings as JSON: what a checkpoint records and a resume must match
    (the generator's width spelt out, as checkpoints always had it)."""
    return json_ready(dataclasses.asdict(config.replace(generator=config.generator.resolved())))


def json_ready(x):
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    return x


# Training settings a resume may change: the rate's schedule (the host evaluates it,
# and another rate is how a run whose loss overflowed goes on), and how VGG19 computes
# (not what). Every other setting makes another model, and is refused.
RESUMABLE = ("steps", "lr", "warmup", "net.convolution", "net.remat")


def _comparable(key: str, value):
    """A recorded setting as a resume compares it: ``RESUMABLE`` left out."""
    value = json_ready(value)
    if key == "train" and isinstance(value, dict):
        net = {k: v for k, v in value.get("net", {}).items() if f"net.{k}" not in RESUMABLE}
        value = {k: v for k, v in value.items() if k not in RESUMABLE} | {"net": net}
    return value
