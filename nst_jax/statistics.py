"""The style statistics: what each one is made of, its target, its distance, and the
scale that weighs it (``LossConfig.style_norm``).

Moment statistics (Gram, mean, mean/std, degree-2 polynomial MMD) are made of sums over
positions (``losses.moment_sums``): they take masks, and with remat they are taken strip
by strip. Each is its sums, its target from ``losses.moment_statistics``, and its
distance from that target. The histogram and the kernels that sample positions need the
features themselves (``feature_distance``). ``objective.py`` puts them together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import histogram, kernels, losses
from nst_jax.nets.vgg import LAYERS, feature_shape, layer, pool2x2

if TYPE_CHECKING:
    from nst_jax.objective import LossConfig

STATISTICS = ("gram", "mmd_poly", "mmd_linear", "mmd_gauss", "meanstd", "histogram")
# Under ``style_norm="gatys"``, each statistic's loss is multiplied by its scale so that a
# mix weight of 1 pulls about as hard as the Gram loss does. mmd_poly of degree 2 is
# exactly 4 N² times the Gram loss (Li et al. 2017), so its scale is exact (it is divided
# by 4 N² per layer); other degrees have no such relation and, under either norm, are
# relative to a zero output (``scale``), as the moment statistics are under "relative";
# the others were calibrated by benchmarks/calibrate.py --style_norm gatys (on the earlier
# demo pair, average pooling: results/calibrate_gatys.md): the ratio of the Gram loss to
# theirs at the content image.
SCALES = {
    "gram": 1.0,
    "mmd_poly": 1.0,
    "mmd_linear": 40.0,
    "mmd_gauss": 6e8,
    "meanstd": 1e4,
    "histogram": 9e3,
}
# Under ``style_norm="relative"`` the moment statistics are relative errors, ~1 at the
# start whatever the layer, and need no scale; the histogram and the sampled kernels keep
# absolute losses, scaled (benchmarks/calibrate.py, results/calibrate_relative.md) to pull
# as hard as relative Gram at the demo's content image.
RELATIVE_SCALES = {
    "gram": 1.0,
    "mmd_poly": 1.0,
    "mmd_linear": 1.0,
    "mmd_gauss": 4.0,
    "meanstd": 1.0,
    "histogram": 6e-6,
}


# Moment statistics are made of sums over positions (``losses.moment_sums``): they take
# masks, and with remat they are taken strip by strip. Each is its sums, its target from
# ``losses.moment_statistics``, and its distance from that target.


class Moment(NamedTuple):
    """``sums`` it is made of, its ``target`` from the statistics, the ``distance`` of the
    statistics from a target, and ``stats_of(target)``, the statistics it was made from."""

    sums: tuple[str, ...]
    target: Callable[[dict], Any]
    distance: Callable[[dict, Any, LossConfig], jax.Array]
    stats_of: Callable[[Any], dict]


def _poly2_distance(stats, target, loss):
    n = target["mean"].shape[-1]
    value = losses.poly2_mmd2(
        stats["gram"], stats["mean"], target["gram"], target["mean"], c=loss.mmd_c
    )
    return value / (4.0 * n * n)


MOMENTS = {
    "gram": Moment(
        ("gram",),
        lambda stats: stats["gram"],
        lambda stats, target, loss: losses.gram_distance(stats["gram"], target),
        lambda target: {"gram": target},
    ),
    "mmd_linear": Moment(
        ("sum",),
        lambda stats: stats["mean"],
        lambda stats, target, loss: losses.mean_distance(stats["mean"], target),
        lambda target: {"mean": target},
    ),
    "meanstd": Moment(
        ("sum", "sq"),
        lambda stats: (stats["mean"], stats["std"]),
        lambda stats, target, loss: losses.mean_std_distance(stats["mean"], stats["std"], target),
        lambda target: {"mean": target[0], "std": target[1]},
    ),
    "mmd_poly": Moment(  # Degree 2 only; other degrees are sampled.
        ("gram", "sum"),
        lambda stats: {"gram": stats["gram"], "mean": stats["mean"]},
        _poly2_distance,
        lambda target: target,
    ),
}


def moment(name: str, loss: LossConfig) -> Moment | None:
    """The statistic ``name`` as sums over positions, or None if it needs the features
    themselves (the histogram, and the kernels that sample positions)."""
    if name == "mmd_poly" and loss.mmd_degree != 2:
        return None
    return MOMENTS.get(name)


def sampled(name: str, loss: LossConfig) -> bool:
    return name == "mmd_gauss" or (name == "mmd_poly" and loss.mmd_degree != 2)


def feature_layers(loss: LossConfig) -> tuple[str, ...]:
    """The style layers whose statistics need the features themselves, not sums over
    positions: with remat, the only style layers held whole (``memory.py`` counts them)."""
    used = {
        name
        for stat, _ in loss.style_loss
        if moment(stat, loss) is None
        for name, _ in loss.statistic_layers(stat)
    }
    return tuple(name for name in LAYERS if name in used)


def style_moments(loss: LossConfig, masks: dict[str, jax.Array]) -> dict:
    """``{layer: (kinds, masks.get(layer))}``: every sum the style statistics need."""
    kinds: dict[str, dict[str, None]] = {}
    for stat, _ in loss.style_loss:
        m = moment(stat, loss)
        for name, _ in loss.statistic_layers(stat) if m else ():
            kinds.setdefault(name, {}).update(dict.fromkeys(m.sums))
    return {name: (tuple(k), masks.get(name)) for name, k in kinds.items()}


def count(shape: tuple[int, int], name: str, masks: jax.Array | None):
    """``Σ_i m_i`` at layer ``name`` for an image of ``shape`` = (H, W): its positions,
    or ``[R]`` sums of the masks ``[R, h, w]``."""
    if masks is None:
        h, w = feature_shape(shape, name)
        return h * w
    return jnp.sum(masks, axis=(-2, -1))


def layer_masks(masks: jax.Array, name: str) -> jax.Array:
    """``[R, H, W]`` masks at layer ``name``'s resolution ``[R, H / s, W / s]``: averaged
    over each pooling window, exactly as VGG19's average pooling shrinks the image."""
    out = masks.astype(jnp.float32)[..., None]
    for _ in range(layer(name).poolings):
        out = pool2x2(out, "avg")
    return out[..., 0]


def flat(f: jax.Array) -> jax.Array:
    return f.reshape(-1, f.shape[-1]).astype(jnp.float32)


def drawn(rows: int, n: int) -> bool:
    """Whether ``n`` samples of ``rows`` positions are drawn (with replacement), rather
    than all of them taken: then kernel means leave out the pairs i = j."""
    return rows > n


def sample_rows(x: jax.Array, n: int, key: jax.Array) -> jax.Array:
    """``n`` rows of ``x`` drawn uniformly with replacement (all rows if there are fewer)."""
    if not drawn(x.shape[0], n):
        return x
    return x[jax.random.randint(key, (n,), 0, x.shape[0])]


def mixed_samples(feats: Sequence[jax.Array], blend: jax.Array, n: int, key: jax.Array):
    """``n`` positions drawn from the mixture of the styles' feature distributions:
    style ``i`` with probability ``blend[i]``, its positions uniformly. Traceable in
    ``blend``, so a batch can vmap over mixes."""
    rows = [flat(f) for f in feats]
    p = jnp.concatenate(
        [jnp.full((r.shape[0],), b / r.shape[0]) for r, b in zip(rows, blend, strict=True)]
    )
    y = jnp.concatenate(rows)
    if len(rows) == 1 and not drawn(y.shape[0], n):
        return y
    return y[jax.random.choice(key, y.shape[0], (n,), p=p / jnp.sum(p))]


def sampled_target(ys: jax.Array, loss: LossConfig, stat: str, *, sampled: bool = True):
    """Target of a sampled kernel from ``ys``, ``[n, C]`` style positions: ``sampled``
    (drawn with replacement), or all of them."""
    if stat == "mmd_gauss":
        if loss.mmd_sigma > 0:
            sigma = jnp.float32(loss.mmd_sigma)
        else:  # Median heuristic: σ² = median ‖y_i − y_j‖² / 2.
            d2 = kernels.squared_distances(ys, ys)
            sigma = jnp.sqrt(jnp.maximum(jnp.median(d2) / 2.0, 1e-12))
        kyy = kernels.gaussian_kernel_mean(ys, ys, sigma, distinct=sampled)
        return {"samples": ys, "sigma": sigma, "kyy": kyy}
    # Degree d ≠ 2: (xᵀy + c)^d of raw VGG features reaches 1e15 at d = 3 and overflows
    # float32 by d ≈ 6. The features are divided by s, the style positions' RMS norm, and
    # c by s²: the kernel is s^(2d) times smaller, exactly, and ``scale`` divides it by its
    # value at a zero output, in which s^(2d) cancels.
    s2 = jnp.maximum(jnp.mean(jnp.sum(jnp.square(ys), axis=-1)), jnp.finfo(jnp.float32).tiny)
    ys = ys / jnp.sqrt(s2)
    kyy = kernels.poly_kernel_mean(
        ys, ys, c=loss.mmd_c / s2, degree=loss.mmd_degree, distinct=sampled
    )
    return {"samples": ys, "kyy": kyy, "s2": s2}


def feature_distance(stat: str, f: jax.Array, target, loss: LossConfig, key: jax.Array):
    """The histogram's or a sampled kernel's loss at one layer, from its features ``f``
    ``[h, w, c]``."""
    if stat == "histogram":
        return histogram.histogram_loss(f, target)
    x = sample_rows(flat(f), loss.mmd_samples, key)
    sampled = drawn(f.shape[0] * f.shape[1], loss.mmd_samples)
    if stat == "mmd_gauss":
        return kernels.mmd2_gaussian(
            x, target["samples"], target["sigma"], kyy=target["kyy"], sampled=sampled
        )
    s2 = target["s2"]  # The style's scale (``sampled_target``).
    c = loss.mmd_c / s2
    return kernels.mmd2_poly(
        x / jnp.sqrt(s2), target["samples"], c=c, degree=loss.mmd_degree, kyy=target["kyy"],
        sampled=sampled,
    )  # fmt: skip


def mix_targets(targets: Sequence[Any], blend: jax.Array) -> Any:
    """``Σ_i blend_i target_i`` leaf by leaf: how several styles' statistics mix.

    Gram matrices, means and the polynomial kernel's moments average into the moments
    of the mixture of the styles' feature distributions, so their losses match that
    mixture. Averaged quantiles (histogram) are the 1-D Wasserstein barycentre of the
    styles' per-channel distributions; averaged means and standard deviations
    (meanstd) are the barycentre of per-channel Gaussians. The sampled kernels draw
    their positions from the mixture instead (``_mixed_samples``).
    """
    return jax.tree.map(lambda *ts: sum(b * t for b, t in zip(blend, ts, strict=True)), *targets)


def scale(stat: str, target, loss: LossConfig) -> jax.Array:
    """What the statistic's distance from ``target`` is multiplied by (``style_norm``)."""
    m = moment(stat, loss)
    if stat == "mmd_poly" and m is None:  # Degree ≠ 2, either norm: relative to a zero output.
        zero = target["kyy"] - (loss.mmd_c / target["s2"]) ** loss.mmd_degree
        return 1.0 / jnp.maximum(zero, jnp.finfo(jnp.float32).tiny)
    if loss.style_norm == "gatys":
        return jnp.float32(SCALES[stat])
    if m is None:
        return jnp.float32(RELATIVE_SCALES[stat])
    zero = jax.tree.map(jnp.zeros_like, m.stats_of(target))
    return 1.0 / jnp.maximum(m.distance(zero, target, loss), jnp.finfo(jnp.float32).tiny)
