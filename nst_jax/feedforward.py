"""Feed-forward jobs on files, behind ``--mode train`` and ``--mode apply``: read the
style and the training photos, train into a model folder (``tasks/train.py``), and
apply a model folder to a photo, a folder of photos, or (a texture network) nothing.

Everything written is named and checked before any compute, as in ``jobs.py``: no
output may be an input, every folder must be writable. Images and reports are written
atomically; checkpoints are committed atomically by orbax.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from nst_jax import checkpoint
from nst_jax.atomic import resolved, write_json
from nst_jax.data import Photos, check_photos, default_photos
from nst_jax.grid import labelled_grid
from nst_jax.image import (
    check_writable,
    demo_images,
    image_size,
    load_image,
    resize_longest,
    resized_shape,
    save_image,
)
from nst_jax.inputs import check_one_content
from nst_jax.nets.weights import load_weights
from nst_jax.progress import say
from nst_jax.records import check_written
from nst_jax.tasks import resume, trained
from nst_jax.tasks import train as training
from nst_jax.version import __version__

DEMO_MODEL = "demo_model"


def _check_report(report: str | None, taken: set[Path]) -> None:
    """Refuses a ``--report`` that is not a ``.json`` file that can be written, or that
    is one of the ``taken`` paths (the inputs and the outputs), before compute."""
    if report is None:
        return
    path = Path(report)
    if path.suffix.lower() != ".json":
        raise ValueError(f"--report must end in .json, got {report}")
    if path.is_dir():
        raise ValueError(f"--report {report} is a folder")
    check_written(sorted(taken), [], reports=[path])


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """``--mode train``: ``style`` (a file, or None for the demo's), the training photos
    (``train_data``: a folder, glob or list; None for scikit-image's), the model folder,
    and ``samples``/``save_every``: a held-out photo (the demo's content by default)
    stylised every N steps into ``MODEL/samples/``."""

    style: str | None
    model_dir: str
    config: training.TrainConfig = training.TrainConfig()
    train_data: str | None = None
    weights: str | None = None
    sample: str | None = None
    save_every: int = 0
    checkpoint_every: int = 100
    report: str | None = None
    progress: bool = True
    devices: int | None = None  # Per process; all by default: data parallel over them.


class TrainReport(NamedTuple):
    data: dict
    summary: str
    interrupted: bool
    failure: str | None = None


def _training_photos(spec: str | None) -> list[Path]:
    if spec is None:
        return default_photos()
    from nst_jax.batch import find_contents

    try:
        found, _ = find_contents(spec)
    except ValueError:
        raise ValueError(f"no training images in --train_data {spec}") from None
    return check_photos(found, warn=say)


def train_files(job: TrainJob) -> TrainReport:
    """Runs a ``TrainJob``; see the module docstring."""
    import jax

    if jax.process_count() > 1:  # Every process would draw the same batches into one folder.
        raise ValueError("--mode train runs in one process, data parallel over its devices")
    if job.checkpoint_every < 1 or job.save_every < 0:
        raise ValueError("--checkpoint_every must be at least 1 and --save_every at least 0")
    model = Path(job.model_dir)
    if model.exists() and not model.is_dir():
        raise ValueError(f"--model {model} is a file, not a folder")
    if not model.parent.is_dir():
        raise ValueError(f"--model's folder does not exist: {model.parent}")
    check_writable((model if model.is_dir() else model.parent) / "probe.png")
    demo_content, demo_style = demo_images()
    style = demo_style if job.style is None else load_image(job.style)
    paths = _training_photos(job.train_data)
    inputs = {resolved(p) for p in paths} | ({resolved(job.style)} if job.style else set())
    _check_report(job.report, inputs | ({resolved(job.sample)} if job.sample else set()))
    sample = load_image(job.sample) if job.sample else demo_content
    weights = load_weights(job.weights, progress=job.progress)
    config = job.config
    training.memory_plan(config, weights)  # Before anything is resized to the size.
    sample = resize_longest(sample, max(config.size, 256)) if job.save_every else None
    photos = None if config.generator.texture else Photos(
        paths, size=config.size, batch_size=config.batch_size, seed=config.seed
    )  # fmt: skip
    samples = model / "samples"

    model.mkdir(exist_ok=True)

    def on_sample(step: int, image: np.ndarray) -> None:
        samples.mkdir(parents=True, exist_ok=True)
        save_image(samples / f"step{step:06d}.png", image, settings={"step": step})

    placement = None
    if (job.devices or jax.local_device_count()) > 1:
        from nst_jax.solve.placement import Placement, mesh_of

        placement = Placement(mesh_of(job.devices))
        n = placement.mesh.devices.size
        if config.batch_size % n:
            raise ValueError(
                f"--batch_size must be a multiple of the {n} devices, got {config.batch_size}"
            )
    t0 = time.perf_counter()
    result = training.train_generator(
        style, config, weights=weights, photos=photos, model_dir=model,
        checkpoint_every=job.checkpoint_every, sample=sample, save_every=job.save_every,
        on_sample=on_sample, placement=placement, progress=job.progress,
    )  # fmt: skip
    data = {
        "nst_jax": __version__,
        "mode": "train",
        "model": str(model),
        "style": job.style or "demo",
        "train_data": job.train_data or "scikit-image",
        "photos": len(paths),
        "settings": resume.settings(config),
        "weights_sha256": weights.sha256,
        "resumed_from": result.resumed,
        "steps_done": result.step,
        "interrupted": result.interrupted,
        "seconds": time.perf_counter() - t0,
        "seconds_per_step": result.seconds_per_step,
        "compile_seconds": result.compile_seconds,
        "failure": result.failure,
        "history": result.history,
    }
    if job.report:
        write_json(job.report, data)
    last = result.history[-1] if result.history else {}
    what = "interrupted at" if result.interrupted else "trained to"
    summary = f"{what} step {result.step}/{config.steps}: {model}" + (
        f" (loss {last['total']:.4g}, style {last['style']:.4g})" if last else ""
    )
    if result.failure:
        last = checkpoint.latest_step(model)
        kept = f"kept {model}'s checkpoint of step {last}" if last else "no checkpoint was saved"
        summary = f"stopped: {result.failure}; {kept}"
    return TrainReport(data, summary, result.interrupted, result.failure)


@dataclasses.dataclass(frozen=True)
class ApplyJob:
    """``--mode apply``: a model folder on ``content`` (a file; None for a texture
    network, or the demo's content with ``demo``) at ``size`` (its longest side; the
    content's own if None), ``seeds`` noise draws in one vmapped call (several give a
    labelled grid), into ``output``."""

    model_dir: str
    output: str
    content: str | None = None
    size: int | None = None
    seeds: tuple[int, ...] = (0,)
    demo: bool = False
    report: str | None = None
    expect: tuple[tuple[str, object], ...] = ()  # Architecture fields the user named.


class ApplyReport(NamedTuple):
    data: dict
    summary: str
    interrupted: bool = False
    failure: str | None = None


def _apply_settings(model, content, size, seeds, meta, variables) -> dict:
    """What an applied output's PNG records: enough to tell whether it is done, down to
    the generator's arrays (a model folder retrained to the same step is another)."""
    return {
        "nst_jax": __version__, "mode": "apply", "model": str(resolved(model)), "content": content,
        "size": size, "seeds": seeds, "generator": meta["generator"],
        "trained_steps": meta.get("step"), "model_sha256": trained.variables_hash(variables),
    }  # fmt: skip


def apply_files(job: ApplyJob) -> ApplyReport:
    """Runs an ``ApplyJob``."""
    if job.size is not None and job.size < 16:
        raise ValueError(f"--size must be at least 16, got {job.size}")
    g, variables, meta = trained.load_generator(job.model_dir)
    for name, value in job.expect:
        if getattr(g, name) != value:
            raise ValueError(
                f"{job.model_dir} holds a {g.kind} generator with {g.norm} normalisation"
                f"{' (a texture network)' if g.texture else ''}, not {name} {value}"
            )
    output = Path(job.output)
    if job.content and resolved(output) == resolved(job.content):
        raise ValueError(f"--output {output} is the content file; refusing to overwrite it")
    check_writable(output)
    content_path = {resolved(job.content)} if job.content else set()
    _check_report(job.report, content_path | {resolved(output)})
    content = None
    if g.texture:
        if job.content:
            raise ValueError(f"{job.model_dir} is a texture network: it takes no --content")
        side = job.size or 256
        shape = (side, side)
    else:
        if job.content is None and not job.demo:
            raise ValueError(f"{job.model_dir} stylises a photo: give --content (or --demo)")
        check_one_content(job.content)
        content = demo_images()[0] if job.content is None else load_image(job.content)
        if job.size is not None:
            trained.check_outputs(resized_shape(content.shape[:2], job.size), len(job.seeds))
            content = resize_longest(content, job.size)
        shape = content.shape[:2]
    t = time.perf_counter()
    images = trained.apply_generator(variables, g, content, seeds=job.seeds, shape=shape)
    seconds = time.perf_counter() - t
    settings = _apply_settings(
        job.model_dir, job.content, job.size, list(job.seeds), meta, variables
    )
    if len(images) == 1:
        save_image(output, images[0], settings=settings)
    else:
        grid = labelled_grid(images[None], [f"seed {s}" for s in job.seeds])
        save_image(output, grid, settings=settings)
    data = {**settings, "shape": list(shape), "seconds": seconds}
    if job.report:
        write_json(job.report, data)
    return ApplyReport(
        data, f"applied {job.model_dir} in {seconds:.2f} s (compile included): {output}"
    )


@dataclasses.dataclass(frozen=True)
class ApplyFolderJob:
    """``--mode apply --output_dir``: a model folder on every image ``contents`` names
    (a folder, glob or list; ``batch.find_contents``), one output each, named after it,
    subfolders kept. Outputs already made by this model at these settings are kept
    unless ``overwrite``; bad files are skipped with a warning; a manifest records it."""

    model_dir: str
    contents: str
    output_dir: str
    size: int | None = None
    seed: int = 0
    overwrite: bool = False
    progress: bool = True


def apply_folder(job: ApplyFolderJob):
    """Runs an ``ApplyFolderJob``: a ``folders.FolderReport``. One compiled forward pass
    per image shape; a Ctrl-C or signal stops after the image in flight."""

    from nst_jax.folders import FolderReport, finished, manifest_name, plan_outputs
    from nst_jax.progress import progress_bar

    if job.size is not None and job.size < 16:
        raise ValueError(f"--size must be at least 16, got {job.size}")
    t0 = time.perf_counter()
    g, variables, meta = trained.load_generator(job.model_dir)
    if g.texture:
        raise ValueError(f"{job.model_dir} is a texture network: it takes no --content")
    sources, out, paths = plan_outputs(job.contents, job.output_dir, [""], overwrite=job.overwrite)
    common = _apply_settings(job.model_dir, None, job.size, [job.seed], meta, variables)
    shared = {k: v for k, v in common.items() if k != "content"}
    manifest = {"settings": shared, "done": [], "skipped": [], "failed": [], "interrupted": False}
    bar = progress_bar(len(sources), job.progress, label="images", unit="image")
    interrupted = False
    try:
        for e, path in paths.items():
            source = sources[e.index]
            settings = {**common, "content": str(resolved(source))}  # However it was spelt.
            entry = {"input": str(source), "output": str(path)}
            if not job.overwrite and finished(path, settings, None):
                manifest["skipped"].append({**entry, "reason": "done before"})
            else:
                try:
                    if job.size is not None:  # Before anything is resized to it.
                        trained.check_outputs(resized_shape(image_size(source), job.size))
                    content = load_image(source, size=job.size)
                    if min(content.shape[:2]) < 16:
                        raise ValueError(f"it is {content.shape[1]}x{content.shape[0]}; need 16 px")
                    # Compiled once a shape, and checked against the free memory.
                    image = trained.apply_generator(variables, g, content, seeds=(job.seed,))[0]
                except ValueError as err:
                    say(f"warning: skipping {source}: {err}")
                    manifest["failed"].append({**entry, "reason": str(err)})
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    save_image(path, image, settings={**settings, "step": None})
                    manifest["done"].append(entry)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    manifest.update(interrupted=interrupted, seconds=time.perf_counter() - t0)
    manifest_path = write_json(out / manifest_name(), manifest)
    failed = len(manifest["failed"])
    summary = (
        ("interrupted; " if interrupted else "")
        + f"{len(manifest['done'])} done, {len(manifest['skipped'])} done before, "
        f"{failed} failed: {manifest_path}"
    )
    return FolderReport(manifest, manifest_path, summary, failed, interrupted)
