"""Batched runs and grids: vmapped seeds and weights equal separate runs; grids are laid
out and labelled as documented; inversion reconstructs from a shallow layer."""

import dataclasses

import numpy as np
import pytest

import nst_jax
from nst_jax import Config, Terms, sweeps
from nst_jax.grid import GRID_LABEL_HEIGHT, grid_layout
from nst_jax.tasks.invert import INVERSION_LOSS, invert_config

from .conftest import interrupted_at_call, shallow, smooth_image


@pytest.fixture
def picture(rng):
    return smooth_image(rng, 32, 40)


def _small(steps=4, **loss):
    return Config(loss=dataclasses.replace(INVERSION_LOSS, **loss), steps=steps)


def test_vmapped_inits_equal_separate_runs(small_weights, picture):
    config = _small()
    seeds = (3, 5, 8)
    batch = nst_jax.invert(
        picture, "conv2_1", config, seeds=seeds, weights=small_weights, progress=False
    )
    assert batch.image.shape == (3, 32, 40, 3)
    assert batch.history["content"].shape == (4, 3)
    for b, seed in enumerate(seeds):
        one = invert_config(dataclasses.replace(config, seed=seed), "conv2_1")
        single = nst_jax.stylize(picture, picture, one, weights=small_weights, progress=False)
        # Adam divides each pixel's gradient by its own scale, so the rounding differences
        # of batched convolutions can grow where a gradient is tiny: a few pixels, a little.
        diff = np.abs(batch.image[b] - single.image)
        assert diff.mean() < 1e-4 and diff.max() < 3e-3, (diff.mean(), diff.max())
        np.testing.assert_allclose(batch.history["total"][:, b], single.history["total"], rtol=1e-4)
    # Different noise, different reconstructions.
    assert np.abs(batch.image[0] - batch.image[1]).mean() > 1e-3


def test_weight_sweep_equals_separate_runs(small_weights, picture, rng):
    style = rng.random((24, 24, 3)).astype(np.float32)
    loss = shallow()
    config = Config(loss=loss, steps=3)
    cols = sweeps.columns(loss, tv_weights=[0.0, 50.0], ratios=[10.0, 1000.0])
    assert cols.labels == [
        "alpha/beta=10, tv=0",
        "alpha/beta=10, tv=50",
        "alpha/beta=1e+03, tv=0",
        "alpha/beta=1e+03, tv=50",
    ]
    batch = nst_jax.stylize_batch(
        picture,
        style,
        config,
        seeds=cols.seeds,
        term_weights=cols.term_weights,
        weights=small_weights,
        progress=False,
    )
    w = Terms(*(float(v[2]) for v in cols.term_weights))
    one = config.replace(loss=dict(content_weight=w.content, style_weight=w.style, tv_weight=w.tv))
    single = nst_jax.stylize(picture, style, one, weights=small_weights, progress=False)
    np.testing.assert_allclose(batch.image[2], single.image, atol=1e-4)
    assert np.abs(batch.image[1] - batch.image[2]).mean() > 1e-4
    assert cols.term_weights.style[2] == pytest.approx(loss.content_weight / 1000.0)


def test_batch_sizes_must_agree(small_weights, picture):
    with pytest.raises(ValueError, match="batch sizes disagree"):
        nst_jax.stylize_batch(
            picture,
            picture,
            _small(),
            seeds=[0, 1],
            term_weights=Terms(1.0, 0.0, np.zeros(3, np.float32), 0.0),
            weights=small_weights,
            progress=False,
        )


def test_layer_sets():
    assert sweeps.growing_layer_sets(["conv1_1", "conv2_1", "conv3_1"]) == [
        ("conv1_1",),
        ("conv1_1", "conv2_1"),
        ("conv1_1", "conv2_1", "conv3_1"),
    ]
    assert sweeps.parse_layer_sets("conv1_1;conv1_1,conv3_1", ()) == [
        ("conv1_1",),
        ("conv1_1", "conv3_1"),
    ]
    assert sweeps.layer_set_label(("conv1_1", "conv2_1", "conv3_1")) == "conv1_1+2_1+3_1"
    assert sweeps.layer_set_label(("conv1_1", "pool1", "pool2")) == "conv1_1+pool1+pool2"
    with pytest.raises(ValueError, match="unknown VGG19 layer"):
        sweeps.parse_layer_sets("conv1_1;conv6_1", ())
    with pytest.raises(ValueError, match="bad layer sets"):
        sweeps.parse_layer_sets("conv1_1;;", ())


def test_grid_layout_and_labels(rng):
    tiles = rng.random((2, 3, 10, 12, 3)).astype(np.float32)
    cols, rows = ["a", "bb", "ccc"], ["conv1_1", "conv5_1"]
    grid = nst_jax.labelled_grid(tiles, cols, rows)
    layout = grid_layout((10, 12), 2, 3, rows)
    assert grid.shape == (*layout.shape, 3)
    assert layout.label_width > 0
    for r in range(2):
        for c in range(3):
            top, left = layout.boxes[r][c]
            np.testing.assert_array_equal(grid[top : top + 10, left : left + 12], tiles[r, c])
            # Each column's label is drawn in the band above its tiles.
            band = grid[:GRID_LABEL_HEIGHT, left : left + 12]
            assert band.min() < 0.5
        # Each row's label is drawn in the left margin beside its tiles.
        top = layout.boxes[r][0][0]
        assert grid[top : top + 10, : layout.label_width].min() < 0.5
    # No row labels: no margin.
    assert grid_layout((10, 12), 2, 3).label_width == 0
    # A space is wide enough to read: "its output" is not "itsoutput".
    spaced = [grid_layout((10, 12), 1, 1, [t]).label_width
              for t in ("itsoutput", "its output")]  # fmt: skip
    assert spaced[1] - spaced[0] >= 3, spaced
    with pytest.raises(ValueError, match="column labels"):
        nst_jax.labelled_grid(tiles, ["a"], rows)


LONG_LABEL = "conv1_1+2_1+3_1+4_1+5_1"  # 178 px at the full 13 px.


@pytest.mark.parametrize("w", [160, 96, 48])
def test_column_labels_stay_over_their_own_tiles(rng, w):
    """A label wider than its tile is drawn inside its column: nothing over a neighbour's
    label or past the canvas, and the same wherever it stands."""
    h = 12

    def band(labels):
        grid = nst_jax.labelled_grid(rng.random((1, len(labels), h, w, 3)), labels)
        return grid[: grid.shape[0] - h].min(axis=-1) < 0.99  # Ink above the tiles.

    lefts = [left for _, left in grid_layout((h, w), 1, 3).boxes[0]]
    for c in range(3):  # Alone over column c of three.
        ink = band([LONG_LABEL if i == c else "" for i in range(3)])
        assert ink[:, lefts[c] : lefts[c] + w].any()
        outside = np.ones(ink.shape[1], bool)
        outside[lefts[c] : lefts[c] + w] = False
        stray = np.flatnonzero(outside & ink.any(axis=0))
        assert not stray.size, f"label over column {c} has ink at x = {stray}"
    # In the last column it is not cut by the canvas's edge: the same ink as with a column
    # to spare, and none over the spare one.
    last, spare = band(["", LONG_LABEL]), band(["", LONG_LABEL, ""])
    np.testing.assert_array_equal(last, spare[:, : last.shape[1]])
    assert not spare[:, last.shape[1] :].any()


def test_fit_labels_shrinks_then_wraps_then_elides():
    grid = nst_jax.grid
    full, floor = grid.GRID_FONT_SIZE, grid.GRID_MIN_FONT_SIZE
    # Labels that fit keep the full size, one line each, in a band of one line.
    assert grid.fit_labels(["a", "bb"], 40) == (full, (("a",), ("bb",)))
    assert grid_layout((12, 40), 1, 2, col_labels=["a", "bb"]).boxes[0][0][0] == GRID_LABEL_HEIGHT
    # One size for all: the largest at which the widest fits on one line.
    size, lines = grid.fit_labels(["a", LONG_LABEL], 158)
    assert floor <= size < full and lines == (("a",), (LONG_LABEL,))
    # Too wide on one line even at the floor: two lines, broken after a "+", at the
    # largest size they fit, in a band a line taller.
    size, lines = grid.fit_labels(["a", LONG_LABEL], 94)
    assert size >= floor and lines[1] == ("conv1_1+2_1+", "3_1+4_1+5_1")
    band = grid_layout((12, 96), 1, 2, col_labels=["a", LONG_LABEL]).boxes[0][0][0]
    assert band == GRID_LABEL_HEIGHT + sum(grid._font(size).getmetrics())
    # Too wide on two: one line, both ends kept around an ellipsis.
    size, ((line,),) = grid.fit_labels([LONG_LABEL], 46)
    assert size == floor and line.startswith("conv") and line.endswith("5_1") and "…" in line
    assert grid._text_width(line, size) <= 46
    with pytest.raises(ValueError, match="column labels"):
        grid_layout((12, 40), 1, 2, col_labels=["a"])


def test_run_grid_inversion_rows_loss_falls(small_weights, picture, monkeypatch):
    config = _small(steps=6)
    rows = sweeps.inversion_rows(config, ["conv1_1", "pool3"])
    cols = sweeps.columns(rows[0][1].loss, seeds=[0, 1], tv_weights=[0.1, 1.0])
    grid = sweeps.run_grid(rows, picture, picture, cols, weights=small_weights, progress=False)
    assert grid.images.shape == (2, 4, 32, 40, 3)
    assert grid.row_labels == ["conv1_1", "pool3"]
    assert grid.col_labels == ["tv=0.1, seed 0", "tv=0.1, seed 1", "tv=1, seed 0", "tv=1, seed 1"]
    for result, (_, config) in zip(grid.results, rows, strict=True):
        assert config.loss.content_loss == "normalized" and config.init == "noise"
        assert np.all(result.final["total"] < result.initial["total"])
    # Ctrl-C while the second row sets up: the first row is kept, the grid interrupted.
    monkeypatch.setattr(sweeps, "run", interrupted_at_call(sweeps.run, 2))
    kept = sweeps.run_grid(rows, picture, picture, cols, weights=small_weights, progress=False)
    assert kept.interrupted and len(kept.results) == 1
    assert np.array_equal(kept.images[0], grid.images[0]) and np.all(kept.images[1] == 1)


def test_texture_rows_use_their_layers(small_weights, rng):
    rows = sweeps.texture_rows(Config(), sweeps.growing_layer_sets(["conv1_1", "conv2_1"]))
    assert [label for label, _ in rows] == ["conv1_1", "conv1_1+2_1"]
    assert [c.loss.style_layers for _, c in rows] == [("conv1_1",), ("conv1_1", "conv2_1")]
    assert all(c.loss.content_weight == 0 and c.init == "noise" for _, c in rows)


def test_shallow_inversion_reconstructs_the_image(real_weights):
    """conv1_1 keeps nearly everything: the reconstruction from noise is close."""
    content, _ = nst_jax.demo_images()
    picture = nst_jax.resize_longest(content, 64)
    config = Config(loss=INVERSION_LOSS, steps=100)
    result = nst_jax.invert(picture, "conv1_1", config, weights=real_weights, progress=False)
    error = np.abs(result.image[0] - picture).mean()
    noise_error = np.abs(np.random.default_rng(0).random(picture.shape) - picture).mean()
    assert error < 0.03, error
    assert noise_error > 0.2
    assert result.final["content"][0] < 0.01 * result.initial["content"][0]
