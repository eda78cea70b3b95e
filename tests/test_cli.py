"""The command line, end to end. Most runs go through ``cli.execute`` in this process
(the same parsing, configs, job and exit codes as the command, without a new process
for each); a few start the command itself: ``run.py``, signals, ``python -m nst_jax``."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import nst_jax
import nst_jax.tasks.pyramid
from nst_jax import cli

from .conftest import SMALL_WIDTHS
from .test_image import png_header
from .test_weights import fake_params

RUN = Path(__file__).resolve().parent.parent / "run.py"


def run(*args, timeout=300):
    """``python run.py ARGS``, in a new process."""
    return subprocess.run(
        [sys.executable, str(RUN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Ran:
    def __init__(self, code, stderr):
        self.returncode, self.stderr = code, stderr


@pytest.fixture
def command(capsys):
    """``nst-jax ARGS`` in this process: ``Ran(returncode, stderr)``."""

    def execute(*args):
        capsys.readouterr()
        code = cli.execute(["nst-jax", *map(str, args), "--noprogress"])
        return Ran(code, capsys.readouterr().err)

    return execute


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:80] / 60.0
    content = np.stack([xx / 1.4, yy, 0.5 + 0.4 * np.sin(6 * xx)], -1)
    style = rng.random((50, 50, 3)) ** 2
    nst_jax.save_image(folder / "content.png", content.astype(np.float32))
    nst_jax.save_image(folder / "style.png", style.astype(np.float32))
    # An input named like the snapshot a run writing out.png would make.
    nst_jax.save_image(folder / "out.step00002.png", style.astype(np.float32))
    (folder / "notes.png").write_text("not an image")
    nst_jax.save_image(folder / "black.png", np.zeros((20, 20, 3), np.float32))
    (folder / "link.png").symlink_to(folder / "content.png")
    (folder / "loop.png").symlink_to("loop.png")  # A link to itself.
    (folder / "dangling.png").symlink_to(folder / "no" / "such" / "folder" / "x.png")
    (folder / "r.json").mkdir()
    (folder / "folded.step00002.png").mkdir()  # Where a snapshot of folded.png goes.
    (folder / "linked.step00002.png").symlink_to(folder / "content.png")
    (folder / "bomb.png").write_bytes(png_header(30000, 30000))  # 57 bytes, 900 megapixels.
    nst_jax.save_image(folder / "wide.png", np.zeros((4, 80, 3), np.float32))
    (folder / "random.npz").write_bytes(np.random.default_rng(1).bytes(2000))
    npz = nst_jax.nets.weights.save_npz(
        folder / "whole.npz", fake_params(np.random.default_rng(2)), nst_jax.CAFFE, "x"
    )
    (folder / "truncated.npz").write_bytes(npz.read_bytes()[:-100])
    mask = np.zeros((30, 40, 3), np.float32)  # Half the content's size: resized, with a note.
    mask[:, :20] = 1.0
    nst_jax.save_image(folder / "mask.png", mask)
    nst_jax.save_image(folder / "mask2.png", 1.0 - mask)
    return folder


def _one_line_error(result, match):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and match in lines[0], lines[0]


BAD_INPUTS = [
    (["--content", "{d}/missing.png"], "image not found"),
    (["--content", "{d}/notes.png"], "not a readable image"),
    (["--style", "{d}/style.png,"], "empty path in --style"),
    (["--style_layers", "conv1_1,conv9_1"], "unknown VGG19 layer 'conv9_1'"),
    (["--content_layers", "relu4_2"], "unknown VGG19 layer 'relu4_2'"),
    (["--style_weight=-1"], "style_weight must be a finite number >= 0"),
    (["--style_weight=inf"], "style_weight must be a finite number >= 0"),
    (["--tv_weight=-0.5"], "tv_weight must be a finite number >= 0"),
    (["--lr=inf"], "lr must be a finite number > 0"),
    (["--stop_tol=-1"], "stop_tol must be a finite number >= 0"),
    (["--lr_half_life=nan"], "lr_half_life must be a finite number >= 0"),
    (["--stop_window=0"], "stop_window must be >= 1"),
    (["--style_layer_weights", "1,2"], "2 style layer weights for 5"),
    (["--size=-5"], "--size must be at least 16"),
    (["--size=8"], "--size must be at least 16, got 8"),
    (["--steps=-1"], "steps must be >= 0"),
    (["--steps=abc"], "steps"),
    (["--optimizer=sgd"], "optimizer"),
    (["--output", "{d}/no/such/folder/out.png"], "does not exist"),
    (["--output", "/proc/out.png"], "cannot write"),
    (["--output", "{d}/out.gif2"], "unsupported output format"),
    (["--output", "{d}/content.png"], "refusing to overwrite"),
    (["--output", "{d}/link.png"], "is an input file"),  # A link to the content.
    (["--report", "{d}/x.json", "--content", "{d}/x.json"], "is an input file"),
    (
        ["--style", "{d}/out.step00002.png", "--save_every", "2", "--steps", "3"],
        "out.step00002.png is an input file",
    ),
    (["--report", "{d}/style.png"], "--report must end in .json"),
    (["--report", "{d}/r.json"], "--report: output path is a folder"),
    (["--output", "{d}/loop.png"], "output path is a symbolic link loop"),
    (["--content", "{d}/loop.png"], "image not found"),
    (["--style", "{d}"], "is a folder, not an image"),
    (["--content", "{d}"], "is a folder: a folder of contents takes --output_dir"),
    (["--style", "{d}/loop.png"], "image not found"),
    (["--output", "{d}/dangling.png"], "--output: output folder does not exist"),
    (
        ["--output", "{d}/linked.png", "--save_every", "2", "--steps", "3"],
        "linked.step00002.png is an input file",
    ),
    (
        ["--output", "{d}/folded.png", "--save_every", "2", "--steps", "3"],
        "--save_every snapshot: output path is a folder",
    ),
    (["--report", "{d}/no/such/folder/r.json"], "--report: output folder does not exist"),
    (["--size", "200000"], "largest size that fits is about --size"),
    (["--weights", "{d}/notes.png"], "unsupported weights format"),
    (["--init", "{d}/missing.png"], "image not found"),
    (["stray_argument"], "unexpected argument"),
    (["--style_loss", "gramm:1"], "unknown style loss 'gramm'"),
    (["--style_loss", "gram:-1"], ">= 0"),
    (["--style_loss", "gram:inf"], "finite"),
    (["--stat_layers", "histogram"], "bad --stat_layers entry"),
    (["--stat_layers", "histogram=conv1_1+conv7_1"], "unknown VGG19 layer 'conv7_1'"),
    (["--tv_beta=0"], "tv_beta must be a finite number > 0"),
    (["--inits=0"], "--inits must be >= 1"),
    (["--tv_weights", "1,x"], "bad --tv_weights"),
    (["--ratios", "10,-1"], "ratios must be finite and > 0"),
    (["--tv_weights", "1,inf"], "TV weights must be finite"),
    (["--style_scale", "inf"], "style_scale needs one positive value"),
    (["--content", "{d}/bomb.png"], "the limit of 100,000,000 pixels"),
    (["--style", "{d}/bomb.png"], "limit of 100,000,000"),
    (["--init", "{d}/bomb.png"], "limit of 100,000,000"),
    (["--content_masks", "{d}/bomb.png"], "limit of 100,000,000"),
    (["--weights", "{d}/random.npz"], "not a .npz archive"),
    (["--weights", "{d}/truncated.npz"], "not a readable nst_jax weights file"),
    (["--layers", "conv1_1"], "--layers is for --mode invert"),
    (["--mode", "invert"], "takes no --style"),
    (["--save_every=2", "--inits=2", "--init", "noise"], "--save_every is for single runs"),
    (["--content_masks", "{d}/mask.png,{d}/mask.png"], "2 --content_masks for 1 styles"),
    (["--style_masks", "{d}/mask.png"], "--style_masks needs --content_masks"),
    (["--style_blend", "1,2"], "one weight per --style image: 2 for 1"),
    (["--style_scale", "0"], "style_scale needs one positive value"),
    (["--preserve_color", "yes"], "preserve_color"),
    (["--convolution", "fft"], "convolution"),
    (["--pyramid", "9"], "go below 16 px"),
    (["--start_size", "16", "--level_steps", "1"], "--level_steps has 1 values for 2"),
    (["--content_masks", "{d}/missing.png"], "image not found"),
    (["--content_masks", "{d}/mask.png", "--style_masks", "{d}/black.png"], "black.png is empty"),
    (["--style_layers="], "no style layers"),
    (["--style_layer_weights", "0,0,0,0,0"], "are all 0"),
    (["--seed", "9223372036854775808"], "seed must be in [0, 2^31)"),
    (["--seed=-1"], "seed must be in [0, 2^31)"),
    (["--num_processes", "2", "--process_id", "0"], "--num_processes goes with --distributed"),
    (["--crop", "32x32"], "--crop is for folder jobs"),
    (["--overwrite"], "--overwrite is for folder jobs"),
    (["--batch_size", "2"], "--batch_size is for folder jobs"),
    (["--output", ""], "--output is empty"),
    (["--report", ""], "--report is empty"),
    (["--layer", "conv1_1"], "--layer does nothing in --mode stylize"),
    (["--model", "{d}"], "--model does nothing in --mode stylize"),
    (["--texture_net"], "--texture_net does nothing in --mode stylize"),
    (["--optimizer", "lbfgs", "--lr", "0.5"], "--lr does nothing with --optimizer lbfgs"),
    (["--lbfgs_memory", "3"], "--lbfgs_memory does nothing with --optimizer adam"),
    (["--stop_tol", "0", "--stop_window", "5"], "--stop_window does nothing with --stop_tol 0"),
    (["--ratios", "1,2", "--style_weight", "3"], "--style_weight does nothing with --ratios"),
    (["--tv_weights", "0,1", "--tv_weight", "3"], "--tv_weight does nothing with --tv_weights"),
    (["--ratios", "1,2", "--content_weight", "0"], "they need a content weight alpha > 0"),
    (["--inits", "2"], "--inits 2 would give 2 identical images"),
]


@pytest.mark.parametrize("extra, match", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_gets_one_line_and_exit_2(command, images, extra, match):
    before = (images / "content.png").read_bytes()
    args = ["--content", images / "content.png", "--style", images / "style.png"]
    args += ["--output", images / "out.png", "--steps", "1", "--size", "32"]
    result = command(*args, *[e.format(d=images) for e in extra])
    _one_line_error(result, match)
    assert (images / "content.png").read_bytes() == before
    assert not (images / "out.png").exists()


MODE_FLAGS = [
    (["--mode", "texture", "--content_weight", "1"], "--content_weight does nothing in --mode"),
    (["--mode", "texture", "--init", "noise"], "--init does nothing with --mode texture or"),
    (["--mode", "invert", "--init", "content"], "--init does nothing with --mode texture or"),
    (["--mode", "texture", "--style_layer_sets", "conv1_1;conv2_1", "--style_layers", "conv1_1"],
     "--style_layers does nothing with --style_layer_sets"),
    (["--mode", "texture", "--style_layer_sets", "growing", "--style_layer_weights", "1,1,1,1,1"],
     "--style_layer_weights does nothing with --style_layer_sets"),
    (["--mode", "invert", "--content_layers", "conv1_1"], "(--layer picks the layer)"),
    (["--mode", "invert", "--style_weight", "2"], "--style_weight does nothing in --mode invert"),
    (["--mode", "invert", "--style_scale", "2"], "--style_scale does nothing in --mode invert"),
]  # fmt: skip


@pytest.mark.parametrize("extra, match", MODE_FLAGS, ids=[m for _, m in MODE_FLAGS])
def test_a_flag_that_a_mode_sets_itself_is_refused(command, images, extra, match):
    """Texture and inversion set their own content, init and (inversion) style terms: a
    flag for those would be silently overridden, so it is refused."""
    given = "--style" if "texture" in extra else "--content"
    out = images / "out.png"
    result = command(*extra, given, images / "style.png", "--output", out, "--size", "32",
                     "--steps", "1")  # fmt: skip
    _one_line_error(result, match)
    assert not out.exists()


def test_an_output_of_a_format_that_cannot_be_saved_is_refused_before_compute(
    command, images, monkeypatch
):
    """``--output x.json`` was taken for a report and checked as one: the run computed
    every step and then could not save its image."""
    from nst_jax import jobs

    def loaded(*args, **kwargs):
        raise AssertionError("the run went on to load the weights")

    monkeypatch.setattr(jobs, "load_weights", loaded)
    args = ["--content", images / "content.png", "--style", images / "style.png"]
    for output in ("out.json", "out.JSON"):
        _one_line_error(command(*args, "--output", images / output), "unsupported output format")


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """A small random VGG19 as a weights file, for jobs whose network's size does not
    matter."""
    params = jax.tree.map(np.asarray, nst_jax.init_params(jax.random.key(0), widths=SMALL_WIDTHS))
    path = tmp_path_factory.mktemp("weights") / "small.npz"
    return nst_jax.nets.weights.save_npz(path, params, nst_jax.CAFFE, "small")


STYLE_TOO_LARGE = {
    "one run": ["--content", "{d}/content.png", "--output", "{o}/out.png"],
    "grid": ["--content", "{d}/content.png", "--output", "{o}/out.png", "--inits", "2",
             "--init", "noise"],
    "texture": ["--mode", "texture", "--output", "{o}/out.png"],
    "folder job": ["--content", "{o}/photos", "--output_dir", "{o}/styled"],
}  # fmt: skip


@pytest.mark.parametrize("extra", STYLE_TOO_LARGE.values(), ids=STYLE_TOO_LARGE.keys())
def test_a_style_too_large_for_memory_is_refused_before_it_is_resized(
    command, images, small_npz, tmp_path, monkeypatch, extra
):
    """A --style_scale whose style's pass won't fit gets one line naming it and exit 2,
    as a --size too large does (``BAD_INPUTS``), before the style is resized (it was
    resized, then its pass failed to allocate, with a traceback)."""
    monkeypatch.setattr(nst_jax.memory, "available_bytes", lambda device=None: 64 * 2**20)
    resize = nst_jax.image.resize

    def small_only(image, shape):
        assert shape[0] * shape[1] <= 10**6, f"resized to {shape[1]}x{shape[0]}"
        return resize(image, shape)

    for module in (nst_jax.image, nst_jax.tasks.pyramid):
        monkeypatch.setattr(module, "resize", small_only)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "content.png").write_bytes((images / "content.png").read_bytes())
    result = command(
        "--style", images / "style.png", "--size", "32", "--style_scale", "100",
        "--steps", "1", "--weights", small_npz,
        *[e.format(d=images, o=tmp_path) for e in extra],
    )  # fmt: skip
    _one_line_error(result, "the style's pass (--style_scale 100 x --size 32) will not fit")
    fits = re.search(r"; the largest that fits is about --style_scale ([\d.]+)$", result.stderr)
    assert fits and 16 / 32 <= float(fits[1]) < 100, result.stderr  # A scale, that fits.
    assert not (tmp_path / "out.png").exists() and not list(tmp_path.glob("styled/*.png"))


def test_a_texture_too_large_is_refused_without_making_its_canvas(
    command, images, small_npz, tmp_path, monkeypatch
):
    """The texture's shape is checked before a canvas of it is made, and its memory
    before anything is resized to it: a refusal costs no canvas (a float64 one, copied
    by the check, made --size 20000's refusal take 21 s and 6.8 GB)."""
    import tracemalloc

    monkeypatch.setattr(nst_jax.memory, "available_bytes", lambda device=None: 64 * 2**20)
    tracemalloc.start()
    try:
        result = command("--mode", "texture", "--style", images / "style.png", "--size", "2000",
                         "--weights", small_npz, "--output", tmp_path / "out.png")  # fmt: skip
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line_error(result, "2000x2000 needs at least")
    assert peak < 2000 * 2000 * 3 * 4 / 4, peak  # A quarter of a float32 canvas.


def test_missing_inputs_and_mode_errors(command, images, tmp_path):
    out = tmp_path / "x.png"
    _one_line_error(command("--output", out), "give --content and --style, or --demo")
    _one_line_error(
        command(
            "--mode",
            "texture",
            "--style",
            images / "style.png",
            "--content",
            images / "content.png",
            "--output",
            out,
        ),  # fmt: skip
        "takes no --content",
    )
    _one_line_error(command("--mode", "invert", "--output", out), "needs --content")
    _one_line_error(
        command("--mode", "texture", "--style", images / "style.png", "--content_masks",
                images / "mask.png", "--output", out),
        "--content_masks place styles on a content; they need --mode stylize",
    )  # fmt: skip
    _one_line_error(
        command(
            "--mode", "texture", "--style", images / "wide.png", "--size", "40", "--output", out
        ),  # fmt: skip
        "texture is 40x2; need at least 16 px a side",
    )


def test_full_run_writes_image_report_and_snapshots(images, tmp_path, real_weights):
    """``python run.py`` as a user runs it, with many flags at once."""
    out, report = tmp_path / "out.png", tmp_path / "report.json"
    result = run(
        "--content", images / "content.png", "--style", images / "style.png",
        "--output", out, "--size", "64", "--steps", "6", "--save_every", "3",
        "--report", report, "--seed", "7", "--progress=false",
        "--content_layers", "conv4_2,pool3", "--style_layers", "conv1_1,pool1,conv3_1",
        "--style_norm", "gatys", "--stop_tol", "0.5", "--stop_window", "30", "--lr_half_life", "25",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out))
    assert image.shape == (48, 64, 3)
    settings = nst_jax.read_settings(out)
    assert settings["config"]["steps"] == 6 and settings["config"]["seed"] == 7
    assert settings["config"]["loss"]["content_layers"] == ["conv4_2", "pool3"]
    assert settings["config"]["loss"]["style_norm"] == "gatys"
    assert settings["config"]["stop_tol"] == 0.5 and settings["config"]["stop_window"] == 30
    assert settings["config"]["lr_half_life"] == 25
    assert settings["weights_sha256"] == real_weights.sha256
    assert nst_jax.read_settings(tmp_path / "out.step00003.png")["step"] == 3
    data = json.loads(report.read_text())
    (one,) = data["runs"]
    (tile,) = one["tiles"]
    assert one["steps"] == 6 and len(tile["history"]["total"]) == 6
    assert tile["final_losses"]["style"] < tile["initial_losses"]["style"]
    assert data["content_size"] == [48, 64] and data["style_sizes"] == [[64, 64]]
    assert not one["converged"]  # A window longer than the run never closes.
    timings = data["timings"]  # Recorded, not judged: every part there, none negative,
    assert set(timings) == {"imports_s", "inputs_s", "weights_s", "setup_and_compile_s",
                            "steps_s", "other_s"}  # fmt: skip
    assert all(np.isfinite(t) and t >= 0 for t in [*timings.values(), one["seconds_per_step"]])
    assert sum(timings.values()) - timings["imports_s"] <= data["wall_seconds"] + 1e-3  # in sum.
    assert one["convolution"] == "direct"  # "auto" below 128 px.
    assert data["weights_sha256"] == real_weights.sha256 and not data["interrupted"]
    assert data["flags"]["size"] == 64 and data["flags"]["save_every"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.png",
        "out.step00003.png",
        "report.json",
    ]


def test_a_full_disk_keeps_the_old_output_and_says_so(command, images, tmp_path, monkeypatch):
    """ENOSPC while the result is written: one line, exit 1, the old file intact, no
    temporary file left."""
    import errno

    out = tmp_path / "out.png"
    out.write_bytes(b"the previous result")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    result = command(
        "--content", images / "content.png", "--style", images / "style.png", "--output", out,
        "--size", "32", "--steps", "1", "--style_layers", "conv1_1", "--content_layers",
        "conv1_2",
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines == ["error: [Errno 28] No space left on device"]
    assert out.read_bytes() == b"the previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_running_out_of_device_memory_is_one_line_and_other_jax_errors_keep_theirs(
    command, images, tmp_path, monkeypatch
):
    """An allocation the memory plan did not foresee fails in a step: one line, exit 1.
    Any other error from inside JAX is a bug, and keeps its traceback."""
    from nst_jax.solve import driver

    compile_run = driver.programs.compile_run
    message = "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes."

    def failing(*args, **kwargs):
        setup, step, losses_at = compile_run(*args, **kwargs)

        def stepping(*a):
            raise jax.errors.JaxRuntimeError(message)

        return setup, stepping, losses_at

    monkeypatch.setattr(driver.programs, "compile_run", failing)
    args = ("--content", images / "content.png", "--style", images / "style.png",
            "--output", tmp_path / "out.png", "--size", "32", "--steps", "2",
            "--style_layers", "conv1_1", "--content_layers", "conv1_2")  # fmt: skip
    result = command(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: out of device memory (RESOURCE_EXHAUSTED")
    assert lines[0].endswith("; a smaller --size, or --remat needs less")  # Not a folder's.
    # XLA:CPU's word for it (a style's pass of 73 GiB, say).
    message = "INTERNAL: Error dispatching computation: Out of memory allocating 78649491520 bytes."
    result = command(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: out of device memory (INTERNAL: Error dispatching")
    message = "INTERNAL: a bug"
    with pytest.raises(jax.errors.JaxRuntimeError, match="a bug"):
        command(*args)


def test_a_loss_that_overflows_stops_the_run_with_exit_3(command, images, tmp_path):
    out, report = tmp_path / "out.png", tmp_path / "out.json"
    result = command(
        "--content", images / "content.png", "--style", images / "style.png", "--output", out,
        "--report", report, "--size", "32", "--steps", "4", "--style_weight", "3e38",
        "--style_layers", "conv1_1", "--content_layers", "conv1_2",
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1, result.stderr
    assert "style weight x style loss overflowed float32" in lines[0]
    assert "nothing saved" in lines[0] and not out.exists()  # No step was finite.
    data = json.loads(report.read_text())
    assert data["failure"].startswith("stopped after step 0") and data["runs"][0]["steps"] == 0


def test_a_run_that_reaches_no_step_leaves_an_earlier_output(
    command, images, tmp_path, monkeypatch
):
    """Interrupted before its first step, a run's image is its start (the content): it
    must not replace the result an earlier run left at ``--output``."""
    from nst_jax import jobs

    out = tmp_path / "out.png"
    out.write_bytes(b"the previous result")
    real = jobs.stylize_pyramid

    def tiny_run(*extra):  # Content, style, out.png, and a one-layer objective at 32 px.
        return command(
            "--content", images / "content.png", "--style", images / "style.png",
            "--output", out, "--size", "32", "--style_layers", "conv1_1",
            "--content_layers", "conv1_2", *extra,
        )  # fmt: skip

    def no_step(*args, level_steps, **kwargs):
        results = real(*args, level_steps=[0] * len(level_steps), **kwargs)
        return [r._replace(interrupted=True) for r in results]

    monkeypatch.setattr(jobs, "stylize_pyramid", no_step)
    result = tiny_run("--steps", "3")
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "interrupted before the first step; nothing saved" in result.stderr
    assert out.read_bytes() == b"the previous result"
    # A Ctrl-C while the finished result is written waits for it, and still stops.
    monkeypatch.setattr(jobs, "stylize_pyramid", real)

    def save_and_signal(path, image, **kw):
        signal.raise_signal(signal.SIGINT)
        return nst_jax.save_image(path, image, **kw)

    monkeypatch.setattr(jobs, "save_image", save_and_signal)
    result = tiny_run("--steps", "2")
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert f"interrupted; saved what was reached to {out}" in result.stderr
    assert nst_jax.read_settings(out)["step"] == 2
    # So does one while the report is written: the report is whole, and the line says so.
    monkeypatch.setattr(jobs, "save_image", nst_jax.save_image)
    write_json = jobs.write_json

    def write_and_signal(path, data):
        signal.raise_signal(signal.SIGINT)
        return write_json(path, data)

    monkeypatch.setattr(jobs, "write_json", write_and_signal)
    report = tmp_path / "report.json"
    result = tiny_run("--report", report, "--steps", "2")
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert f"interrupted; saved {out}" in result.stderr
    assert json.loads(report.read_text())["runs"][0]["steps"] == 2
    # A grid stopped before its first step leaves an earlier output too.
    monkeypatch.setattr(jobs, "write_json", write_json)
    out.write_bytes(b"the previous result")
    run_grid = jobs.sweeps.run_grid

    def grid_interrupted_at_once(rows, *args, **kwargs):
        rows = [(label, config.replace(steps=0)) for label, config in rows]
        return run_grid(rows, *args, **kwargs)._replace(interrupted=True)

    monkeypatch.setattr(jobs.sweeps, "run_grid", grid_interrupted_at_once)
    result = tiny_run("--tv_weights", "0,0.1")
    assert result.returncode == 128 + signal.SIGINT, result.stderr
    assert "interrupted before the first step; nothing saved" in result.stderr
    assert out.read_bytes() == b"the previous result"


def test_flags_reach_the_config(command, images, tmp_path, real_weights):
    out = tmp_path / "out.png"
    result = command(
        "--content", images / "content.png", "--style", images / "style.png",
        "--output", out, "--size", "40", "--steps", "2", "--init", images / "style.png",
        "--style_loss", "gram:1,histogram:0.5", "--stat_layers", "histogram=conv1_1+conv4_1",
        "--tv_beta", "1.5", "--alpha_norm_weight", "0.001", "--alpha", "4",
        "--mmd_samples", "64", "--pooling", "max", "--optimizer", "lbfgs",
        "--lbfgs_memory", "5", "--linesearch", "backtracking", "--style_layer_weights",
        "1,1,1,1,2", "--content_loss", "normalized", "--preserve_color", "histogram",
        "--convolution", "plain",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = nst_jax.read_settings(out)
    config, loss = settings["config"], settings["config"]["loss"]
    assert config["net"] == {"convolution": "plain", "pooling": "max", "remat": False}
    assert loss["content_loss"] == "normalized" and config["preserve_color"] == "histogram"
    assert loss["style_loss"] == [["gram", 1.0], ["histogram", 0.5]]
    assert loss["stat_layers"] == [["histogram", ["conv1_1", "conv4_1"]]]
    assert (loss["tv_beta"], loss["alpha_norm_weight"], loss["alpha"]) == (1.5, 0.001, 4.0)
    assert loss["style_layer_weights"] == [1, 1, 1, 1, 2] and loss["mmd_samples"] == 64
    assert config["lbfgs_memory"] == 5 and config["linesearch"] == "backtracking"
    assert config["optimizer"] == "lbfgs" and settings["init"] == str(images / "style.png")


def test_demo_runs_without_user_files(command, tmp_path, real_weights):
    out = tmp_path / "demo.png"
    result = command(
        "--demo", "--size", "48", "--steps", "40", "--stop_tol", "0.9", "--stop_window", "2",
        "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # The stopping rule ends it at a host sync (every 10 steps), and says so.
    assert "steps, the loss no longer falling" in result.stderr
    assert nst_jax.read_settings(out)["step"] in (10, 20, 30)
    assert np.asarray(Image.open(out)).shape == (32, 48, 3)  # Chelsea is 300x451.
    settings = nst_jax.read_settings(out)
    assert settings["content"] == "demo:chelsea" and settings["style"] == ["demo:starry_night"]


def _start(images, out):
    return subprocess.Popen(
        [
            sys.executable,
            str(RUN),
            "--content",
            str(images / "content.png"),
            "--style",
            str(images / "style.png"),
            "--output",
            str(out),
            "--size",
            "48",
            "--steps",
            "100000",
            "--save_every",
            "1",
            "--progress=false",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_signals_save_the_current_image(images, tmp_path, real_weights):
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP each save the image reached and exit with
    128 + the signal. The first run fills the compilation cache; the other two start
    once it has, and find their programs there."""
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    outs = [tmp_path / f"out{int(s)}.png" for s in stops]
    procs = []
    try:
        for i, out in enumerate(outs):
            procs.append(_start(images, out))
            if i == 0:
                _wait_for(procs[0], outs[0])
        for proc, out, stop in zip(procs, outs, stops, strict=True):
            _wait_for(proc, out)
            proc.send_signal(stop)
        for proc, out, stop in zip(procs, outs, stops, strict=True):
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 128 + int(stop), stderr
            assert "interrupted; saved" in stderr and "Traceback" not in stderr
            assert np.asarray(Image.open(out)).shape == (36, 48, 3)
            assert nst_jax.read_settings(out)["step"] >= 1
    finally:
        for proc in procs:
            proc.kill()  # Never leave a runaway process behind, whatever happened above.


def _wait_for(proc, out):
    """Until the run writing ``out`` has written its first snapshot."""
    snapshot = out.with_name(f"{out.stem}.step00001.png")
    deadline = time.monotonic() + 240
    while not snapshot.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert snapshot.exists(), proc.stderr.read() if proc.poll() is not None else "timeout"


def test_texture_mode(command, images, tmp_path, real_weights):
    out = tmp_path / "texture.png"
    result = command(
        "--mode", "texture", "--style", images / "style.png", "--size", "40", "--steps", "3",
        "--output", out, "--style_layers", "conv1_1,pool1,conv2_1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out)).shape == (40, 40, 3)  # The style is square.
    settings = nst_jax.read_settings(out)
    assert settings["mode"] == "texture" and settings["content"] is None
    assert settings["config"]["loss"]["content_weight"] == 0.0
    assert settings["init"] == settings["config"]["init"] == "noise"  # Not "content".
    # What texture mode does read: an --init image, and the layers "growing" grows over.
    start = tmp_path / "start.png"
    result = command(
        "--mode", "texture", "--style", images / "style.png", "--size", "40", "--steps", "0",
        "--output", start, "--init", images / "content.png", "--style_layer_sets", "growing",
        "--style_layers", "conv1_1,conv2_1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = nst_jax.read_settings(start)
    assert settings["init"] == str(images / "content.png")
    assert settings["grid"]["rows"] == ["conv1_1", "conv1_1+2_1"]


def test_invert_sweep_writes_a_labelled_grid(command, images, tmp_path, real_weights):
    out, report = tmp_path / "grid.png", tmp_path / "grid.json"
    result = command(
        "--mode", "invert", "--content", images / "content.png", "--layers",
        "conv1_1,pool1", "--inits", "2", "--size", "32", "--steps", "5", "--output", out,
        "--report", report,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = nst_jax.read_settings(out)
    assert settings["grid"] == {
        "rows": ["conv1_1", "pool1"],
        "cols": ["seed 0", "seed 1"],
        "done": 2,
    }
    assert settings["init"] == "noise"
    layout = nst_jax.grid.grid_layout(
        (24, 32), 2, 2, ["conv1_1", "pool1"], col_labels=["seed 0", "seed 1"]
    )
    assert np.asarray(Image.open(out)).shape == (*layout.shape, 3)
    data = json.loads(report.read_text())
    assert [run["label"] for run in data["runs"]] == ["conv1_1", "pool1"]
    for tile in (t for run in data["runs"] for t in run["tiles"]):
        assert tile["final_losses"]["content"] < tile["initial_losses"]["content"]
    assert settings["config"]["loss"]["content_loss"] == "normalized"
    assert settings["config"]["loss"]["tv_weight"] == nst_jax.tasks.invert.INVERSION_LOSS.tv_weight


def test_texture_layer_sets_and_ratio_sweep(command, images, tmp_path, real_weights):
    out = tmp_path / "sets.png"
    result = command(
        "--mode", "texture", "--style", images / "style.png", "--style_layer_sets",
        "conv1_1;conv1_1,conv2_1", "--size", "32", "--steps", "2", "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # One column of rows is written as one labelled row, and reported as that.
    labels = ["conv1_1", "conv1_1+2_1"]
    assert nst_jax.read_settings(out)["grid"]["rows"] == labels
    assert f"saved {out} (1x2 grid)" in result.stderr
    layout = nst_jax.grid.grid_layout((32, 32), 1, 2, col_labels=labels)
    assert np.asarray(Image.open(out)).shape == (*layout.shape, 3)
    out = tmp_path / "ratios.png"
    result = command(
        "--content", images / "content.png", "--style", images / "style.png", "--ratios",
        "1,1000", "--size", "32", "--steps", "2", "--output", out, "--style_layers",
        "conv1_1,conv2_1", "--content_layers", "conv2_2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert nst_jax.read_settings(out)["grid"]["cols"] == ["alpha/beta=1", "alpha/beta=1e+03"]


def test_masks_blend_colour_and_pyramid(command, images, tmp_path, real_weights):
    # Three blocks: Winograd runs in two of them, in half the compiling of five.
    shallow = ["--style_layers", "conv1_1,conv2_1,conv3_1", "--content_layers", "conv3_2"]
    base = ["--content", images / "content.png", "--size", "40", "--steps", "2", *shallow]
    two = f"{images / 'style.png'},{images / 'content.png'}"
    out = tmp_path / "masked.png"
    result = command(
        *base, "--style", two, "--content_masks",
        f"{images / 'mask.png'},{images / 'mask2.png'}", "--output", out,
        "--remat",  # Masked statistics as sums taken in strips,
        "--convolution=winograd",  # of Winograd convolutions.
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "note: resizing mask" in result.stderr and "warning" not in result.stderr
    settings = nst_jax.read_settings(out)
    assert len(settings["style"]) == 2 and settings["config"]["net"]["remat"] is True
    assert settings["config"]["net"]["convolution"] == "winograd"
    result = command(  # No steps: no step to compile, the start evaluated and written.
        *base, "--style", two, "--content_masks", f"{images / 'mask.png'},{images / 'mask.png'}",
        "--output", out, "--steps", "0",
    )  # fmt: skip
    assert result.returncode == 0 and "warning: masks overlap" in result.stderr
    assert "(0 steps" in result.stderr
    _one_line_error(
        command(
            *base,
            "--style",
            two,
            "--style_blend",
            "1,1",
            "--content_masks",
            f"{images / 'mask.png'},{images / 'mask2.png'}",
            "--output",
            out,
        ),  # fmt: skip
        "--style_blend mixes styles everywhere",
    )
    out = tmp_path / "blend.png"
    result = command(
        *base, "--style", two, "--style_blend", "0.7,0.3", "--style_scale", "0.5,1",
        "--preserve_color", "luminance", "--output", out, "--steps", "0",
        "--report", tmp_path / "blend.json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = nst_jax.read_settings(out)
    assert settings["config"]["loss"]["style_blend"] == [0.7, 0.3]
    assert settings["config"]["preserve_color"] == "luminance"
    assert settings["style_scale"] == [0.5, 1.0]
    # Each style at its scale times the output's 40 px: the 50 px square at 20, the
    # 80x60 photo at 40.
    assert json.loads((tmp_path / "blend.json").read_text())["style_sizes"] == [[20, 20], [30, 40]]
    out = tmp_path / "pyramid.png"
    result = command(
        "--content", images / "content.png", "--style", images / "style.png", "--size", "64",
        "--steps", "2", "--start_size", "32", "--level_steps", "2,1", "--output", out,
        "--save_every", "1", *shallow,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert np.asarray(Image.open(out)).shape == (48, 64, 3)
    assert nst_jax.read_settings(out)["pyramid_sizes"] == [32, 64]
    # Level 0 runs 2 steps: a snapshot after its first; level 1 runs 1: none.
    assert [p.name for p in sorted(tmp_path.glob("pyramid.*"))] == [
        "pyramid.level0.step00001.png",
        "pyramid.png",
    ]


def test_notes_and_warnings_for_what_is_allowed_but_odd(command, images, tmp_path):
    """A start of another shape is stretched, with a note, and so is a style mask of
    another shape than its style's; a faint style mask (no pixel above 0.5) gets a
    warning. The run goes on (no steps: no compiling of a step). An
    all-black one would leave its style no statistics: refused (``BAD_INPUTS``)."""
    nst_jax.save_image(tmp_path / "faint.png", np.full((25, 50, 3), 0.3, np.float32))
    result = command(
        "--content", images / "content.png", "--style", images / "style.png",
        "--content_masks", images / "mask.png", "--style_masks", tmp_path / "faint.png",
        "--init", images / "wide.png", "--steps", "0", "--size", "32", "--output",
        tmp_path / "out.png", "--style_layers", "conv1_1", "--content_layers", "conv1_2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"note: stretching --init {images / 'wide.png'} from 80x4" in result.stderr
    assert f"warning: style mask {tmp_path / 'faint.png'} is faint" in result.stderr
    assert f"stretching style mask {tmp_path / 'faint.png'} from 50x25 to its style's 50x50" in (
        result.stderr
    )
    nst_jax.save_image(tmp_path / "tall.png", np.ones((200, 50, 3), np.float32))
    result = command(  # The demo's style too, which no file names.
        "--demo", "--content_masks", images / "mask.png", "--style_masks", tmp_path / "tall.png",
        "--steps", "0", "--size", "32", "--output", tmp_path / "demo.png",
        "--style_layers", "conv1_1", "--content_layers", "conv1_2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"stretching style mask {tmp_path / 'tall.png'} from 50x200" in result.stderr


def test_the_package_runs_as_a_module():
    """``python -m nst_jax`` is the same command: its mistakes get the same one line."""
    result = subprocess.run(
        [sys.executable, "-m", "nst_jax", "--demo", "--steps=-1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    _one_line_error(result, "steps must be >= 0")
    # --help lists this program's flags (absl lists the main module's, which defines none).
    for command in ([sys.executable, "-m", "nst_jax"], [sys.executable, str(RUN)]):
        shown = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, timeout=120, check=False
        )
        assert "--style_weight:" in shown.stdout, shown.stdout[-500:]
        assert "--content:" in shown.stdout and "--logtostderr" not in shown.stdout
