"""The style-transfer objective: ``f(image) -> (loss, terms)`` from targets and weights.

``L(x) = α L_content + β Σ_s m_s Σ_l w_l L_s,l + λ_tv TV_β(x) + λ_α ‖x‖_α^α``
(Gatys et al. 2016, eq. 7), where ``s`` runs over the style statistics in the mix
(Gram, MMD kernels, mean/std, histogram), each with its own layers ``l`` and mix weight
``m_s``. The targets are computed once from the content and style images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from nst_jax import losses
from nst_jax import remat as remat_lib
from nst_jax.image import Preprocessing, preprocess
from nst_jax.vgg import LAYERS, POOLING, VGG19, WIDTHS, check_layers, layer_stride, pool2x2

DEFAULT_STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")

# Each statistic's loss is multiplied by its scale so that a mix weight of 1 pulls about
# as hard as the Gram loss does. mmd_poly is exactly 4 N² times the Gram loss (Li et al.
# 2017), so its scale is exact; the others were calibrated on the demo pair
# (benchmarks/calibrate.py): the ratio of the Gram loss to theirs at the content image.
CONTENT_LOSSES = ("mse", "normalized")
STATISTICS = ("gram", "mmd_poly", "mmd_linear", "mmd_gauss", "meanstd", "histogram")
SCALES = {
    "gram": 1.0,
    "mmd_poly": 1.0,  # Divided by 4 N² per layer, below.
    "mmd_linear": 40.0,
    "mmd_gauss": 6e8,
    "meanstd": 1e4,
    "histogram": 9e3,
}


def parse_style_loss(spec: str) -> tuple[tuple[str, float], ...]:
    """``"gram:1,histogram:0.5"`` -> ``(("gram", 1.0), ("histogram", 0.5))``.

    A name without ``:w`` gets weight 1.

    Raises:
      ValueError: an unknown statistic, a repeated one, or a weight that is not a
        non-negative number.
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
        raise ValueError("--style_loss is empty; e.g. gram:1 or gram:1,histogram:0.5")
    return tuple(out)


class Terms(NamedTuple):
    """The loss terms, unweighted by α, β and λ; the total is their weighted sum.

    The same tuple carries the weights (``LossConfig.term_weights``). As arrays, the
    weights can be traced and vmapped, e.g. over α/β ratios or TV weights.
    """

    content: jax.Array
    style: jax.Array
    tv: jax.Array
    alpha_norm: jax.Array


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
      content_layers: VGG19 layers whose activations the content loss compares.
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
        sampled positions like the Gaussian kernel.
      mmd_sigma: Gaussian kernel bandwidth; 0 picks the median heuristic on the style.
      mmd_samples: positions sampled per layer and step for the pairwise (Gaussian, or
        polynomial d ≠ 2) kernels.
      pooling: ``"avg"`` or ``"max"`` pooling in VGG19.
      remat: run VGG in strips and recompute it in the backward pass, keeping only
        each block's input, and take the style statistics that are sums over positions
        strip by strip (``remat.py``). Same values and gradients; a quarter of the
        memory or less from 2048 px up, for 1.2-1.3x the step time
        (``benchmarks/memory.py``).
      widths: VGG channel widths; only tests change it, to run narrow networks.
    """

    content_weight: float = 1.0
    style_weight: float = 1e-2
    tv_weight: float = 5e3
    tv_beta: float = 2.0
    alpha_norm_weight: float = 0.0
    alpha: float = 6.0
    content_layers: tuple[str, ...] = ("conv4_2",)
    content_loss: str = "mse"
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None
    style_blend: tuple[float, ...] | None = None
    style_loss: tuple[tuple[str, float], ...] = (("gram", 1.0),)
    stat_layers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mmd_c: float = 0.0
    mmd_degree: int = 2
    mmd_sigma: float = 0.0
    mmd_samples: int = 1024
    pooling: str = "avg"
    remat: bool = False
    widths: tuple[int, ...] = WIDTHS

    def __post_init__(self):
        for name in (
            "content_weight",
            "style_weight",
            "tv_weight",
            "alpha_norm_weight",
            "mmd_c",
            "mmd_sigma",
        ):
            value = getattr(self, name)
            if not value >= 0:  # Also catches NaN.
                raise ValueError(f"{name} must be >= 0, got {value}")
        if not self.tv_beta > 0:
            raise ValueError(f"tv_beta must be > 0, got {self.tv_beta}")
        if not self.alpha >= 1:
            raise ValueError(f"alpha must be >= 1, got {self.alpha}")
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
            if any(not v >= 0 for v in w):
                raise ValueError(f"style layer weights must be >= 0, got {list(w)}")
            object.__setattr__(self, "style_layer_weights", w)
        if self.style_blend is not None:
            blend = tuple(float(v) for v in self.style_blend)
            if not blend or any(not v >= 0 for v in blend) or not sum(blend) > 0:
                raise ValueError(f"style blend weights must be >= 0, not all 0, got {list(blend)}")
            object.__setattr__(self, "style_blend", blend)
        mix = tuple((str(n), float(w)) for n, w in self.style_loss)
        names = [n for n, _ in mix]
        for n, w in mix:
            if n not in STATISTICS:
                raise ValueError(f"unknown style loss {n!r}; choose from {', '.join(STATISTICS)}")
            if not w >= 0:
                raise ValueError(f"style loss weight for {n} must be >= 0, got {w}")
        if len(set(names)) != len(names) or not mix:
            raise ValueError(f"style losses must be distinct and non-empty, got {names}")
        object.__setattr__(self, "style_loss", mix)
        per_stat = tuple((str(n), check_layers(ls)) for n, ls in self.stat_layers)
        for n, _ in per_stat:
            if n not in STATISTICS:
                raise ValueError(f"unknown style loss {n!r} in stat_layers")
        object.__setattr__(self, "stat_layers", per_stat)
        if self.pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {self.pooling!r}")
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
        return (1.0 / len(self.style_layers),) * len(self.style_layers)

    def statistic_layers(self, name: str) -> tuple[tuple[str, float], ...]:
        """``((layer, w_l), ...)`` that the statistic ``name`` uses."""
        own = dict(self.stat_layers).get(name)
        if own is None:
            return tuple(zip(self.style_layers, self.layer_weights, strict=True))
        return tuple((layer, 1.0 / len(own)) for layer in own)

    @property
    def all_style_layers(self) -> tuple[str, ...]:
        used = {layer for name, _ in self.style_loss for layer, _ in self.statistic_layers(name)}
        return tuple(layer for layer in LAYERS if layer in used)


class Targets(NamedTuple):
    """What the optimised image is compared against.

    Attributes:
      content: ``{layer: [h, w, c]}`` activations of the content image.
      style: ``{"statistic/layer": target}``; the target's form depends on the
        statistic: a ``[c, c]`` Gram matrix, ``(mean, std)``, quantiles ``[h * w, c]``, ...
        With masks, every target has a leading region axis ``R``.
      masks: ``{layer: [R, h, w]}`` content masks at each style layer's resolution, or
        empty without spatial control.
    """

    content: dict[str, jax.Array]
    style: dict[str, Any]
    masks: dict[str, jax.Array] = {}


def features_and_sums(
    params: dict,
    image: jax.Array,
    layers: Sequence[str],
    moments: dict[str, tuple[tuple[str, ...], jax.Array | None]],
    *,
    preprocessing: Preprocessing,
    pooling: str = "avg",
    widths: Sequence[int] = WIDTHS,
    remat: bool = False,
) -> tuple[dict[str, jax.Array], dict[str, dict[str, jax.Array]]]:
    """VGG19 activations of an RGB image, and sums over positions of other layers.

    With ``remat``, the backward pass needs much less memory, and a layer that only
    ``moments`` asks for is never held whole (``remat.py``); the values and gradients
    are the same.

    Args:
      params: VGG19 parameters ``{layer: {kernel, bias}}``.
      image: ``[H, W, 3]`` RGB in [0, 1].
      layers: names of the layers to return.
      moments: ``{layer: (kinds, weights)}``: ``losses.moment_sums`` of the layer, with
        ``weights`` ``[R, h, w]`` at its resolution, or None.

    Returns:
      ``({layer: [h, w, c]}, {layer: {kind: [(R,) c, ...]}})``.
    """
    x = preprocess(image, preprocessing)
    if remat:
        return remat_lib.features_and_sums(params, x, layers, moments, pooling=pooling)
    every = tuple(dict.fromkeys((*layers, *moments)))
    feats = VGG19(layers=every, pooling=pooling, widths=tuple(widths)).apply({"params": params}, x)
    sums = {
        layer: losses.moment_sums(feats[layer], kinds, weights=weights)
        for layer, (kinds, weights) in moments.items()
    }
    return {layer: feats[layer] for layer in layers}, sums


def features(params: dict, image: jax.Array, layers: Sequence[str], **kw) -> dict[str, jax.Array]:
    """VGG19 activations ``{layer: [h, w, c]}`` of an RGB image ``[H, W, 3]`` in [0, 1];
    keywords as ``features_and_sums``."""
    return features_and_sums(params, image, layers, {}, **kw)[0]


def _flat(f: jax.Array) -> jax.Array:
    return f.reshape(-1, f.shape[-1]).astype(jnp.float32)


def _sample_rows(x: jax.Array, n: int, key: jax.Array) -> jax.Array:
    """``n`` rows of ``x`` drawn uniformly with replacement (all rows if there are fewer)."""
    if x.shape[0] <= n:
        return x
    return x[jax.random.randint(key, (n,), 0, x.shape[0])]


# The statistics made of sums over positions (``losses.moment_sums``), and the sums each
# needs. They alone take masks, and with remat they are taken strip by strip.
MOMENT_SUMS = {
    "gram": ("gram",),
    "mmd_linear": ("sum",),
    "meanstd": ("sum", "sq"),
    "mmd_poly": ("gram", "sum"),  # Degree 2; other degrees are sampled.
}


def _moment_kinds(name: str, config: LossConfig) -> tuple[str, ...] | None:
    """The sums that statistic ``name`` is made of, or None if it needs the features."""
    return None if _sampled(name, config) else MOMENT_SUMS.get(name)


def _style_moments(
    config: LossConfig, masks: dict[str, jax.Array | None]
) -> dict[str, tuple[tuple[str, ...], jax.Array | None]]:
    """``{layer: (kinds, masks[layer])}``: every sum the style statistics need, per layer."""
    kinds: dict[str, dict[str, None]] = {}
    for name, _ in config.style_loss:
        need = _moment_kinds(name, config)
        for layer, _ in config.statistic_layers(name) if need else ():
            kinds.setdefault(layer, {}).update(dict.fromkeys(need))
    return {layer: (tuple(k), masks.get(layer)) for layer, k in kinds.items()}


def feature_layers(config: LossConfig) -> tuple[str, ...]:
    """The style layers whose statistics need the features themselves, not sums over
    positions: with remat, the only style layers held whole (``memory.py`` counts them)."""
    used = {
        layer
        for name, _ in config.style_loss
        if _moment_kinds(name, config) is None
        for layer, _ in config.statistic_layers(name)
    }
    return tuple(layer for layer in LAYERS if layer in used)


def _pairwise_target(ys: jax.Array, config: LossConfig, kernel: str):
    """Target of a sampled kernel from ``ys``, ``[n, C]`` style positions already drawn."""
    if kernel == "gauss":
        if config.mmd_sigma > 0:
            sigma = jnp.float32(config.mmd_sigma)
        else:  # Median heuristic: σ² = median ‖y_i − y_j‖² / 2.
            d2 = losses.squared_distances(ys, ys)
            sigma = jnp.sqrt(jnp.maximum(jnp.median(d2) / 2.0, 1e-12))
        return {"samples": ys, "sigma": sigma, "kyy": losses.gaussian_kernel_mean(ys, ys, sigma)}
    kyy = losses.poly_kernel_mean(ys, ys, c=config.mmd_c, degree=config.mmd_degree)
    return {"samples": ys, "kyy": kyy}


def _sampled(name: str, config: LossConfig) -> bool:
    return name == "mmd_gauss" or (name == "mmd_poly" and config.mmd_degree != 2)


def _count(shape: tuple[int, int], layer: str, weights: jax.Array | None):
    """``Σ_i m_i`` at ``layer`` for an image of ``shape`` = (H, W): its positions, or
    ``[R]`` sums of the masks ``weights`` ``[R, h, w]``."""
    if weights is None:
        s = layer_stride(layer)
        return (shape[0] // s) * (shape[1] // s)
    return jnp.sum(weights, axis=(-2, -1))


def _moment_target(name: str, stats: dict[str, jax.Array]):
    """Moment statistic ``name``'s target from ``losses.moment_statistics``."""
    if name == "gram":
        return stats["gram"]
    if name == "mmd_linear":
        return stats["mean"]
    if name == "meanstd":
        return stats["mean"], stats["std"]
    return {"gram": stats["gram"], "mean": stats["mean"]}  # mmd_poly, degree 2.


def _mixed_samples(feats: Sequence[jax.Array], blend: jax.Array, n: int, key: jax.Array):
    """``n`` positions drawn from the mixture of the styles' feature distributions:
    style ``i`` with probability ``blend[i]``, its positions uniformly. Traceable in
    ``blend``, so a batch can vmap over mixes."""
    rows = [_flat(f) for f in feats]
    p = jnp.concatenate(
        [jnp.full((r.shape[0],), b / r.shape[0]) for r, b in zip(rows, blend, strict=True)]
    )
    y = jnp.concatenate(rows)
    if len(rows) == 1 and y.shape[0] <= n:
        return y
    return y[jax.random.choice(key, y.shape[0], (n,), p=p / jnp.sum(p))]


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


def layer_masks(masks: jax.Array, layer: str) -> jax.Array:
    """``[R, H, W]`` masks at ``layer``'s resolution ``[R, H / s, W / s]``: averaged over
    each pooling window, exactly as VGG19's average pooling shrinks the image."""
    out = masks.astype(jnp.float32)[..., None]
    for _ in range(int(layer[4]) - 1):
        out = pool2x2(out, "avg")
    return out[..., 0]


def _blend(config: LossConfig, n: int, blend: jax.Array | None) -> jax.Array:
    if blend is None:
        blend = config.style_blend or (1.0,) * n
    blend = jnp.asarray(blend, jnp.float32)
    if blend.shape != (n,):
        raise ValueError(f"{blend.shape[0]} style blend weights for {n} style images")
    return blend / jnp.sum(blend)


def make_targets(
    params: dict,
    content: jax.Array,
    style: jax.Array | Sequence[jax.Array],
    config: LossConfig,
    *,
    preprocessing: Preprocessing,
    key: jax.Array | None = None,
    blend: jax.Array | None = None,
    content_masks: jax.Array | None = None,
    style_masks: Sequence[jax.Array | None] | None = None,
) -> Targets:
    """Content activations and style statistics, computed once before optimising.

    Args:
      content: ``[H, W, 3]`` RGB in [0, 1]; the output has its shape.
      style: ``[H', W', 3]`` RGB in [0, 1], any size; or a sequence of ``S`` of them.
      key: PRNG key for the style samples of the pairwise MMD kernels.
      blend: ``[S]`` style mix weights (traceable); ``config.style_blend`` if None.
      content_masks: ``[S, H, W]`` masks in [0, 1]: style ``i`` applies where mask ``i``
        is on (Gatys et al. 2017, spatial control). Then ``blend`` is unused.
      style_masks: per style, an optional ``[H'_i, W'_i]`` mask restricting which of its
        positions count.
    """
    key = jax.random.key(0) if key is None else key
    styles = tuple(style) if isinstance(style, (list, tuple)) else (style,)
    kw = dict(
        preprocessing=preprocessing,
        pooling=config.pooling,
        widths=config.widths,
        remat=config.remat,  # Its forward pass, in strips, holds less too.
    )
    content_feats = (
        features(params, content, config.content_layers, **kw) if config.content_layers else {}
    )
    style_layers = config.all_style_layers if config.style_weight else ()
    if not style_layers:
        return jax.lax.stop_gradient(Targets(content=content_feats, style={}, masks={}))
    if content_masks is not None:
        if content_masks.shape != (len(styles), *content.shape[:2]):
            raise ValueError(
                f"content masks {content_masks.shape} must be [{len(styles)}, H, W] for "
                f"{len(styles)} styles and a {content.shape[0]}x{content.shape[1]} content"
            )
        bad = [n for n, _ in config.style_loss if _moment_kinds(n, config) is None]
        if bad:
            raise ValueError(
                f"masks work with gram, mmd_poly (degree 2), mmd_linear and meanstd, not {bad[0]}"
            )
    style_masks = tuple(style_masks or (None,) * len(styles))
    if len(style_masks) != len(styles):
        raise ValueError(f"{len(style_masks)} style masks for {len(styles)} styles")
    blend = _blend(config, len(styles), blend)
    whole = feature_layers(config)
    per_style = []  # (features, statistics) of each style.
    for image, m in zip(styles, style_masks, strict=True):
        moments = {
            layer: (kinds, None if m is None else layer_masks(m[None], layer))
            for layer, (kinds, _) in _style_moments(config, {}).items()
        }
        feats, sums = features_and_sums(params, image, whole, moments, **kw)
        stats = {
            layer: losses.moment_statistics(
                sums[layer], _count(image.shape[:2], layer, moments[layer][1])
            )
            for layer in sums
        }
        if m is not None:  # One region: drop its axis.
            stats = jax.tree.map(lambda v: v[0], stats)
        per_style.append((feats, stats))
    h, w = content.shape[:2]
    style_targets, masks = {}, {}
    for name, _ in config.style_loss:
        for layer, _ in config.statistic_layers(name):
            s = layer_stride(layer)
            key, sub = jax.random.split(key)
            if _sampled(name, config):
                feats = [f[layer] for f, _ in per_style]
                ys = _mixed_samples(feats, blend, config.mmd_samples, sub)
                kernel = "gauss" if name == "mmd_gauss" else "poly"
                style_targets[f"{name}/{layer}"] = _pairwise_target(ys, config, kernel)
                continue
            if name == "histogram":
                targets = [
                    losses.style_quantiles(f[layer], (h // s) * (w // s)) for f, _ in per_style
                ]
            else:
                targets = [_moment_target(name, stats[layer]) for _, stats in per_style]
            if content_masks is None:
                style_targets[f"{name}/{layer}"] = mix_targets(targets, blend)
            else:
                style_targets[f"{name}/{layer}"] = jax.tree.map(lambda *ts: jnp.stack(ts), *targets)
                masks[layer] = layer_masks(content_masks, layer)
    return jax.lax.stop_gradient(Targets(content=content_feats, style=style_targets, masks=masks))


def _moment_loss(name: str, stats: dict[str, jax.Array], target, config: LossConfig):
    """Moment statistic ``name``'s loss at one layer (one region), from the output's
    ``losses.moment_statistics``; scaled so that weight 1 pulls about like Gram."""
    if name == "gram":  # E_l of Gatys et al. 2016, eq. 4, as losses.gram_loss.
        c = target.shape[-1]
        value = jnp.sum(jnp.square(stats["gram"] - target)) / (4.0 * c * c)
    elif name == "mmd_linear":
        value = jnp.sum(jnp.square(stats["mean"] - target))
    elif name == "meanstd":  # As losses.mean_std_loss.
        mean, std = target
        value = jnp.mean(jnp.square(stats["mean"] - mean) + jnp.square(stats["std"] - std))
    else:  # mmd_poly: MMD² = ‖G_x − G_y‖² + 2c ‖μ_x − μ_y‖² (losses.mmd2_poly2).
        n = target["mean"].shape[-1]
        value = jnp.sum(jnp.square(stats["gram"] - target["gram"])) + 2.0 * config.mmd_c * jnp.sum(
            jnp.square(stats["mean"] - target["mean"])
        )
        value = value / (4.0 * n * n)
    return SCALES[name] * value


def _feature_loss(name: str, f: jax.Array, target, config: LossConfig, key: jax.Array):
    """The histogram or a sampled kernel's loss at one layer, from its features ``f``
    ``[h, w, c]``; scaled so that weight 1 pulls about like Gram."""
    if name == "histogram":
        return SCALES[name] * losses.histogram_loss(f, target)
    n = f.shape[-1]
    x = _sample_rows(_flat(f), config.mmd_samples, key)
    y = target["samples"]
    if name == "mmd_gauss":
        value = losses.mmd2_gaussian(x, y, target["sigma"], kyy=target["kyy"])
    else:
        value = losses.mmd2_poly(x, y, c=config.mmd_c, degree=config.mmd_degree, kyy=target["kyy"])
        value = value / (4.0 * n * n)
    return SCALES[name] * value


def loss_terms(
    params: dict,
    image: jax.Array,
    targets: Targets,
    config: LossConfig,
    *,
    preprocessing: Preprocessing,
    key: jax.Array | None = None,
) -> Terms:
    """The loss terms for ``image`` (``[H, W, 3]``), unweighted by α, β and λ.

    ``key`` draws the positions that the pairwise MMD kernels sample; a fixed key gives a
    deterministic objective (L-BFGS's line search relies on that within a step).
    """
    key = jax.random.key(0) if key is None else key
    style_on = bool(config.style_weight and config.all_style_layers)
    if not config.content_layers and not style_on:
        raise ValueError("nothing to match: no content layers, and no style layers or weight")
    style_layers = feature_layers(config) if style_on else ()
    layers = tuple(dict.fromkeys(config.content_layers + style_layers))
    moments = _style_moments(config, targets.masks) if style_on else {}
    feats, sums = features_and_sums(
        params,
        image,
        layers,
        moments,
        preprocessing=preprocessing,
        pooling=config.pooling,
        widths=config.widths,
        remat=config.remat,
    )
    stats = {
        layer: losses.moment_statistics(sums[layer], _count(image.shape[:2], layer, weights))
        for layer, (_, weights) in moments.items()
    }
    content_fn = (
        losses.normalized_content_loss
        if config.content_loss == "normalized"
        else losses.content_loss
    )
    content = sum(content_fn(feats[k], targets.content[k]) for k in config.content_layers)
    style = jnp.float32(0.0)
    for name, mix in config.style_loss if style_on else ():
        for layer, w in config.statistic_layers(name):
            key, sub = jax.random.split(key)
            target = targets.style[f"{name}/{layer}"]
            if _moment_kinds(name, config) is None:
                value = _feature_loss(name, feats[layer], target, config, sub)
            elif layer in targets.masks:  # One term per region, each against its own style.
                value = jnp.sum(
                    jax.vmap(lambda st, t, name=name: _moment_loss(name, st, t, config))(
                        stats[layer], target
                    )
                )
            else:
                value = _moment_loss(name, stats[layer], target, config)
            style = style + mix * w * value
    alpha = losses.alpha_norm(image, alpha=config.alpha) if config.alpha_norm_weight else 0.0
    return Terms(
        content=jnp.asarray(content, jnp.float32),
        style=jnp.asarray(style, jnp.float32),
        tv=losses.total_variation(image, beta=config.tv_beta),
        alpha_norm=jnp.asarray(alpha, jnp.float32),
    )


def total(terms: Terms, weights: Terms) -> jax.Array:
    """``α content + β style + λ_tv tv + λ_α alpha_norm``, weights from ``weights``."""
    return sum(w * t for w, t in zip(weights, terms, strict=True))


def objective(
    params: dict,
    image: jax.Array,
    targets: Targets,
    config: LossConfig,
    *,
    preprocessing: Preprocessing,
    key: jax.Array | None = None,
    weights: Terms | None = None,
) -> tuple[jax.Array, Terms]:
    """``(total loss, terms)`` for ``image`` ``[H, W, 3]``; differentiate w.r.t. ``image``.

    ``weights`` (scalars, possibly traced) override ``config.term_weights``. The config
    still decides which terms are computed: a zero ``alpha_norm_weight`` skips the α-norm.
    """
    terms = loss_terms(params, image, targets, config, preprocessing=preprocessing, key=key)
    return total(terms, config.term_weights if weights is None else weights), terms
