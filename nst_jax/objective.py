"""The style-transfer objective: the loss config, the targets, and
``f(image) -> (loss, terms)``; the style statistics themselves are in ``statistics.py``.

``L(x) = α L_content + β Σ_s m_s Σ_l w_l L_s,l + λ_tv TV_β(x) + λ_α ‖x‖_α^α``
(Gatys et al. 2016, eq. 7), where ``s`` runs over the style statistics in the mix
(Gram, MMD kernels, mean/std, histogram), each with its own layers ``l`` and mix weight
``m_s``. The content targets (``content_targets``) and the style targets
(``style_targets``) are computed apart: a run computes both once; a feed-forward trainer
needs the style's once and the content's per batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import histogram, losses, statistics
from nst_jax.nets.network import Network
from nst_jax.nets.vgg import LAYERS, check_layers, feature_shape
from nst_jax.statistics import STATISTICS

DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LOSSES = ("mse", "normalized")
STYLE_NORMS = ("relative", "gatys")


def parse_style_loss(spec: str) -> tuple[tuple[str, float], ...]:
    """``"gram:1,histogram:0.5"`` -> ``(("gram", 1.0), ("histogram", 0.5))``.

    A name without ``:w`` gets weight 1. ``LossConfig`` checks the names and weights.

    Raises:
      ValueError: a weight that is not a number, or an empty spec.
    """
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition(":")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"bad weight {weight!r} for style loss {name!r}") from None
        out.append((name.strip(), value))
    if not out:
        raise ValueError("the style loss is empty; e.g. gram:1 or gram:1,histogram:0.5")
    return tuple(out)


class Terms(NamedTuple):
    """The loss terms, unweighted by α, β and λ; the total is their weighted sum.

    The same tuple carries the term weights (``LossConfig.term_weights``). As arrays,
    they can be traced and vmapped, e.g. over α/β ratios or TV weights.
    """

    content: jax.Array
    style: jax.Array
    tv: jax.Array
    alpha_norm: jax.Array


def _is_int(value) -> bool:
    """An integer (Python's or NumPy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite_non_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):  # NaN fails both.
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the image is asked to match, and how much each part counts.

    Attributes:
      content_weight: α, the weight of the content loss.
      style_weight: β, the weight of the whole style loss.
      tv_weight: λ_tv, weight of the total-variation penalty.
      tv_beta: β exponent of the total variation; 2 is the usual smooth penalty.
      alpha_norm_weight: λ_α, weight of the α-norm of the mean-subtracted image.
      alpha: exponent of the α-norm.
      content_layers: VGG19 layers (convolutions or poolings) whose activations the
        content loss compares.
      content_loss: ``"mse"``, the mean squared difference (Gatys et al.), or
        ``"normalized"``, ``‖Φ(x) − Φ₀‖² / ‖Φ₀‖²`` (Mahendran & Vedaldi 2015), whose
        scale is the same at every layer.
      style_layers: VGG19 layers of every style statistic without its own layers.
      style_layer_weights: one weight per style layer, ``w_l``; ``None`` means equal
        weights summing to 1.
      style_blend: one weight per style image, mixing several styles' statistics (see
        ``mix_targets``); ``None`` means equal weights. Normalised to sum 1.
      style_loss: the mix of style statistics, ``((name, weight), ...)`` with names from
        ``STATISTICS``.
      stat_layers: per-statistic layers, ``((name, (layer, ...)), ...)``, overriding
        ``style_layers`` for that statistic (equal layer weights).
      mmd_c: the polynomial kernel's offset c in ``(xᵀy + c)^d``.
      mmd_degree: the polynomial kernel's degree d; 2 is computed exactly, others from
        sampled positions like the Gaussian kernel, relative to a zero output's loss
        under either ``style_norm`` (``statistics.scale``).
      mmd_sigma: Gaussian kernel bandwidth; 0 picks the median heuristic on the style.
      mmd_samples: positions sampled per layer and step for the pairwise (Gaussian, or
        polynomial d ≠ 2) kernels.
      style_norm: how a layer's style distance is scaled. ``"relative"`` divides it by
        the target's own distance from zero, e.g. ``‖G − G_s‖² / ‖G_s‖²`` for Gram, so
        that every layer's ``w_l`` means what it says: with the Caffe VGG19, Gatys et
        al.'s ``E_l`` at conv4_1 is about 10⁵ times that at conv1_1 or conv5_1, so two
        of five layers carried the whole loss. ``"gatys"`` is eq. 4's ``E_l``, with
        ``statistics.SCALES``. The README's quality section shows what "relative" gains.
    """

    content_weight: float = 1.0
    style_weight: float = 4.0
    tv_weight: float = 0.01
    tv_beta: float = 2.0
    alpha_norm_weight: float = 0.0
    alpha: float = 6.0
    content_layers: tuple[str, ...] = ("conv4_2",)
    content_loss: str = "normalized"
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    style_blend: tuple[float, ...] | None = None
    style_loss: tuple[tuple[str, float], ...] = (("gram", 1.0),)
    stat_layers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mmd_c: float = 0.0
    mmd_degree: int = 2
    mmd_sigma: float = 0.0
    mmd_samples: int = 1024
    style_norm: str = "relative"

    def __post_init__(self):
        for name in (
            "content_weight",
            "style_weight",
            "tv_weight",
            "alpha_norm_weight",
            "mmd_c",
            "mmd_sigma",
        ):
            _finite_non_negative(name, getattr(self, name))
        if not (self.tv_beta > 0 and math.isfinite(self.tv_beta)):
            raise ValueError(f"tv_beta must be a finite number > 0, got {self.tv_beta}")
        if not (self.alpha >= 1 and math.isfinite(self.alpha)):
            raise ValueError(f"alpha must be a finite number >= 1, got {self.alpha}")
        for name in ("mmd_degree", "mmd_samples"):
            if not _is_int(getattr(self, name)):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.mmd_degree < 1 or self.mmd_samples < 2:
            raise ValueError("mmd_degree must be >= 1 and mmd_samples >= 2")
        object.__setattr__(self, "content_layers", check_layers(self.content_layers))
        object.__setattr__(self, "style_layers", check_layers(self.style_layers))
        if self.style_layer_weights is not None:
            w = tuple(float(v) for v in self.style_layer_weights)
            if len(w) != len(self.style_layers):
                raise ValueError(
                    f"{len(w)} style layer weights for {len(self.style_layers)} style layers"
                )
            for v in w:
                _finite_non_negative("style layer weights", v)
            object.__setattr__(self, "style_layer_weights", w)
        if self.style_blend is not None:
            blend = tuple(float(v) for v in self.style_blend)
            for v in blend:
                _finite_non_negative("style blend weights", v)
            if not blend or not sum(blend) > 0:
                raise ValueError(f"style blend weights must not all be 0, got {list(blend)}")
            object.__setattr__(self, "style_blend", blend)
        mix = tuple((str(n), float(w)) for n, w in self.style_loss)
        names = [n for n, _ in mix]
        for n, w in mix:
            if n not in STATISTICS:
                raise ValueError(f"unknown style loss {n!r}; choose from {', '.join(STATISTICS)}")
            _finite_non_negative(f"style loss weight for {n}", w)
        if len(set(names)) != len(names) or not mix:
            raise ValueError(f"style losses must be distinct and non-empty, got {names}")
        object.__setattr__(self, "style_loss", mix)
        per_stat = tuple((str(n), check_layers(ls)) for n, ls in self.stat_layers)
        for n, _ in per_stat:
            if n not in STATISTICS:
                raise ValueError(f"unknown style loss {n!r} in stat_layers")
        object.__setattr__(self, "stat_layers", per_stat)
        if self.style_norm not in STYLE_NORMS:
            raise ValueError(f"style_norm must be one of {STYLE_NORMS}, got {self.style_norm!r}")
        if self.content_loss not in CONTENT_LOSSES:
            raise ValueError(
                f"content_loss must be one of {CONTENT_LOSSES}, got {self.content_loss!r}"
            )

    @property
    def term_weights(self) -> Terms:
        """``Terms(α, β, λ_tv, λ_α)``: what ``total`` multiplies each term by."""
        return Terms(
            content=self.content_weight,
            style=self.style_weight,
            tv=self.tv_weight,
            alpha_norm=self.alpha_norm_weight,
        )

    @property
    def layer_weights(self) -> tuple[float, ...]:
        """``w_l`` per style layer; equal and summing to 1 unless given."""
        if self.style_layer_weights is not None:
            return self.style_layer_weights
        n = len(self.style_layers)
        return (1.0 / n,) * n if n else ()

    def statistic_layers(self, name: str) -> tuple[tuple[str, float], ...]:
        """``((layer, w_l), ...)`` that the statistic ``name`` uses."""
        own = dict(self.stat_layers).get(name)
        if own is None:
            return tuple(zip(self.style_layers, self.layer_weights, strict=True))
        return tuple((name, 1.0 / len(own)) for name in own)

    @property
    def style_on(self) -> bool:
        """Whether the style term is computed: a weight, and layers to take it at."""
        return bool(self.style_weight and self.all_style_layers)

    @property
    def all_style_layers(self) -> tuple[str, ...]:
        """Every layer some statistic in the mix uses, in network order."""
        used = {name for stat, _ in self.style_loss for name, _ in self.statistic_layers(stat)}
        return tuple(name for name in LAYERS if name in used)


def _blend(loss: LossConfig, n: int, blend: jax.Array | None) -> jax.Array:
    if blend is None:
        blend = loss.style_blend or (1.0,) * n
    blend = jnp.asarray(blend, jnp.float32)
    if blend.shape != (n,):
        raise ValueError(f"style blend weights of shape {blend.shape} for {n} style images")
    return blend / jnp.sum(blend)


class StyleTargets(NamedTuple):
    """The style's side of the objective.

    Attributes:
      statistics: ``{"statistic/layer": target}``; the target's form depends on the
        statistic: a ``[c, c]`` Gram matrix, ``(mean, std)``, quantiles ``[h * w, c]``,
        ... With content masks, every target has a leading region axis ``R``.
      masks: ``{layer: [R, h, w]}`` content masks at each style layer's resolution, or
        empty without spatial control.
      scales: ``{"statistic/layer": scalar}``, what each distance is multiplied by
        (``LossConfig.style_norm``); ``[R]``, each region's own, with content masks.
    """

    statistics: dict[str, Any]
    masks: dict[str, jax.Array]
    scales: dict[str, jax.Array]


class Targets(NamedTuple):
    """What the optimised image is compared against: ``content`` ``{layer: [h, w, c]}``
    activations of the content image, and the style's ``StyleTargets``."""

    content: dict[str, jax.Array]
    style: StyleTargets


def content_targets(network: Network, content: jax.Array, loss: LossConfig) -> dict:
    """``{layer: [h, w, c]}``: the content image's ``[H, W, 3]`` activations at the
    content layers (none if it has none)."""
    if not loss.content_layers:
        return {}
    return jax.lax.stop_gradient(network.features(content, loss.content_layers))


def style_targets(
    network: Network,
    styles: jax.Array | Sequence[jax.Array],
    loss: LossConfig,
    *,
    shape: tuple[int, int],
    key: jax.Array | None = None,
    blend: jax.Array | None = None,
    content_masks: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
) -> StyleTargets:
    """The style statistics an output of ``shape`` = (H, W) is asked to match.

    Args:
      styles: ``[H', W', 3]`` RGB in [0, 1], any size; or a sequence of ``S`` of them.
      shape: the output's (H, W): the histogram's quantiles and the masks follow it.
      key: PRNG key for the style samples of the pairwise MMD kernels.
      blend: ``[S]`` style mix weights (traceable); ``loss.style_blend`` if None.
      content_masks: ``[S, H, W]`` masks in [0, 1]: style ``i`` applies where mask ``i``
        is on (Gatys et al. 2017, spatial control); each region's loss is relative to its
        own style (``style_norm="relative"``), and an empty region adds nothing. Not with
        ``blend`` or ``loss.style_blend``, which mix the styles everywhere instead.
      style_masks: per style, an optional ``[H'_i, W'_i]`` mask restricting which of its
        positions count.
    """
    key = jax.random.key(0) if key is None else key
    styles = tuple(styles) if isinstance(styles, (list, tuple)) else (styles,)
    if not loss.style_on:
        return StyleTargets({}, {}, {})
    if content_masks is not None:
        if blend is not None or loss.style_blend:
            raise ValueError("a style blend mixes the styles everywhere; content masks place them")
        content_masks = jnp.asarray(content_masks, jnp.float32)
        if content_masks.shape != (len(styles), *shape):
            raise ValueError(
                f"content masks {content_masks.shape} must be [{len(styles)}, H, W] for "
                f"{len(styles)} styles and a {shape[0]}x{shape[1]} output"
            )
    if content_masks is not None or any(m is not None for m in style_masks or ()):
        bad = [stat for stat, _ in loss.style_loss if statistics.moment(stat, loss) is None]
        if bad:  # Their targets would leave the masks out.
            raise ValueError(
                f"masks work with gram, mmd_poly (degree 2), mmd_linear and meanstd, not {bad[0]}"
            )
    style_masks = tuple(style_masks or (None,) * len(styles))
    if len(style_masks) != len(styles):
        raise ValueError(f"{len(style_masks)} style masks for {len(styles)} styles")
    blend = _blend(loss, len(styles), blend)
    whole = statistics.feature_layers(loss)
    per_style = []  # (features, statistics) of each style.
    for image, m in zip(styles, style_masks, strict=True):
        moments = {
            name: (kinds, None if m is None else statistics.layer_masks(m[None], name))
            for name, (kinds, _) in statistics.style_moments(loss, {}).items()
        }
        feats, sums = network.features_and_sums(image, whole, moments)
        stats = {
            name: losses.moment_statistics(
                sums[name], statistics.count(image.shape[:2], name, moments[name][1])
            )
            for name in sums
        }
        if m is not None:  # One region: drop its axis.
            stats = jax.tree.map(lambda v: v[0], stats)
        per_style.append((feats, stats))
    targets, masks = {}, {}
    for stat, _ in loss.style_loss:
        m = statistics.moment(stat, loss)
        for name, _ in loss.statistic_layers(stat):
            key, sub = jax.random.split(key)
            if statistics.sampled(stat, loss):
                feats = [f[name] for f, _ in per_style]
                ys = statistics.mixed_samples(feats, blend, loss.mmd_samples, sub)
                rows = statistics.flat(feats[0]).shape[0]  # All of one style's: not drawn.
                sampled = len(feats) > 1 or statistics.drawn(rows, loss.mmd_samples)
                target = statistics.sampled_target(ys, loss, stat, sampled=sampled)
                targets[f"{stat}/{name}"] = target
                continue
            if m is None:  # The histogram.
                h, w = feature_shape(shape, name)
                each = [histogram.style_quantiles(f[name], h * w) for f, _ in per_style]
            else:
                each = [m.target(stats[name]) for _, stats in per_style]
            if content_masks is None:
                targets[f"{stat}/{name}"] = statistics.mix_targets(each, blend)
            else:
                targets[f"{stat}/{name}"] = jax.tree.map(lambda *ts: jnp.stack(ts), *each)
                masks[name] = statistics.layer_masks(content_masks, name)
    scale = functools.partial(statistics.scale, loss=loss)
    if content_masks is not None:  # Each region's own.
        scale = jax.vmap(scale, in_axes=(None, 0))
    scales = {k: scale(k.partition("/")[0], t) for k, t in targets.items()}
    return jax.lax.stop_gradient(StyleTargets(targets, masks, scales))


def loss_terms(
    network: Network,
    image: jax.Array,
    targets: Targets,
    loss: LossConfig,
    *,
    key: jax.Array | None = None,
) -> Terms:
    """The loss terms for ``image`` (``[H, W, 3]``), unweighted by α, β and λ.

    ``key`` draws the positions that the pairwise MMD kernels sample; a fixed key gives a
    deterministic objective (L-BFGS's line search relies on that within a step).
    """
    key = jax.random.key(0) if key is None else key
    style_on = loss.style_on
    if not loss.content_layers and not style_on:
        raise ValueError("nothing to match: no content layers, and no style layers or weight")
    whole = statistics.feature_layers(loss) if style_on else ()
    moments = statistics.style_moments(loss, targets.style.masks) if style_on else {}
    feats, sums = network.features_and_sums(
        image, tuple(dict.fromkeys(loss.content_layers + whole)), moments
    )
    stats = {
        name: losses.moment_statistics(sums[name], statistics.count(image.shape[:2], name, masks))
        for name, (_, masks) in moments.items()
    }
    content_fn = (
        losses.normalized_content_loss if loss.content_loss == "normalized" else losses.content_loss
    )
    content = sum(content_fn(feats[k], targets.content[k]) for k in loss.content_layers)
    style = jnp.float32(0.0)
    for stat, mix in loss.style_loss if style_on else ():
        m = statistics.moment(stat, loss)
        for name, w in loss.statistic_layers(stat):
            key, sub = jax.random.split(key)
            target = targets.style.statistics[f"{stat}/{name}"]
            scale = targets.style.scales[f"{stat}/{name}"]
            masks = targets.style.masks.get(name)
            if m is None:
                value = scale * statistics.feature_distance(stat, feats[name], target, loss, sub)
            elif masks is None:
                value = scale * m.distance(stats[name], target, loss)
            else:  # The regions' losses add up, each against its own style; empty ones drop.
                each = jax.vmap(functools.partial(m.distance, loss=loss))(stats[name], target)
                present = statistics.count(image.shape[:2], name, masks) > 0
                value = jnp.sum(jnp.where(present, scale * each, 0.0))
            style = style + mix * w * value
    alpha = losses.alpha_norm(image, alpha=loss.alpha) if loss.alpha_norm_weight else 0.0
    return Terms(
        content=jnp.asarray(content, jnp.float32),
        style=jnp.asarray(style, jnp.float32),
        tv=losses.total_variation(image, beta=loss.tv_beta),
        alpha_norm=jnp.asarray(alpha, jnp.float32),
    )


def weighted_total(terms: Terms, term_weights: Terms) -> jax.Array:
    """``α content + β style + λ_tv tv + λ_α alpha_norm``."""
    return sum(w * t for w, t in zip(term_weights, terms, strict=True))


def total_loss(
    network: Network,
    image: jax.Array,
    targets: Targets,
    loss: LossConfig,
    *,
    key: jax.Array | None = None,
    term_weights: Terms | None = None,
) -> tuple[jax.Array, Terms]:
    """``(total loss, terms)`` for ``image`` ``[H, W, 3]``; differentiate w.r.t. ``image``.

    ``term_weights`` (scalars, possibly traced) override ``loss.term_weights``. The
    config still decides which terms are computed: a zero ``alpha_norm_weight`` skips
    the α-norm.
    """
    terms = loss_terms(network, image, targets, loss, key=key)
    return weighted_total(terms, loss.term_weights if term_weights is None else term_weights), terms
