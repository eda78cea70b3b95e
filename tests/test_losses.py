import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import nst_jax
from nst_jax import histogram, kernels, losses, statistics


def np_gram(f):
    h, w, c = f.shape
    m = f.reshape(h * w, c).astype(np.float64)
    return m.T @ m / (h * w)


def test_gram_matches_numpy_and_is_symmetric_psd(rng):
    f = rng.standard_normal((5, 7, 6)).astype(np.float32)
    g = np.asarray(jax.jit(losses.gram)(f))
    np.testing.assert_allclose(g, np_gram(f), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, g.T, rtol=0, atol=0)
    assert np.linalg.eigvalsh(g.astype(np.float64)).min() > -1e-4


@pytest.mark.parametrize("masked", [False, True])
def test_gram_gradient_is_autodiffs(rng, masked):
    """The one-matmul Gram VJP, against autodiff of the formula, for features and mask."""
    f = jnp.asarray(rng.standard_normal((5, 7, 6)), jnp.float32)
    m = jnp.asarray(rng.random((5, 7)), jnp.float32) if masked else None
    probe = jnp.asarray(rng.standard_normal((6, 6)), jnp.float32)  # Not symmetric.

    def formula(f, m):
        x = f.reshape(-1, 6)
        w = jnp.full((35, 1), 1 / 35) if m is None else m.reshape(-1, 1) / jnp.sum(m)
        return jnp.sum(jnp.sin((x * w).T @ x) * probe)

    def ours(f, m):
        return jnp.sum(jnp.sin(losses.gram(f, mask=m)) * probe)

    argnums = (0, 1) if masked else 0
    got = jax.grad(ours, argnums)(f, m)
    expected = jax.grad(formula, argnums)(f, m)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_moment_statistics_are_gram_mean_and_std_and_their_sums_add_up(rng, masked):
    """The sums behind ``remat.py``'s strips: their statistics are ``gram``,
    ``weighted_mean`` and ``mean_std`` per region, and they add over a split of the rows."""
    f = jnp.asarray(rng.standard_normal((6, 7, 5)) + 0.5, jnp.float32)
    masks = jnp.asarray(rng.random((3, 6, 7)), jnp.float32) if masked else None
    sums = losses.moment_sums(f, losses.MOMENTS, masks=masks)
    count = 42 if masks is None else jnp.sum(masks, axis=(1, 2))
    stats = losses.moment_statistics(sums, count)
    for r, m in enumerate([None] if masks is None else masks):
        at = (lambda v: v) if masks is None else (lambda v, r=r: v[r])
        mean, std = losses.mean_std(f, mask=m)
        np.testing.assert_allclose(at(stats["gram"]), losses.gram(f, mask=m), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(at(stats["mean"]), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(at(stats["std"]), std, rtol=1e-4)
    halves = [
        losses.moment_sums(f[rows], losses.MOMENTS, masks=None if masks is None else masks[:, rows])
        for rows in (slice(0, 2), slice(2, None))
    ]
    added = jax.tree.map(jnp.add, *halves)
    for kind in losses.MOMENTS:
        np.testing.assert_allclose(added[kind], sums[kind], rtol=1e-5, atol=1e-5)
    assert set(losses.moment_statistics({"sum": sums["sum"]}, count)) == {"mean"}
    with pytest.raises(ValueError, match="must be"):
        losses.moment_sums(f, ("sum",), masks=jnp.ones((6, 7)))


def test_gram_is_size_independent(rng):
    f = rng.standard_normal((4, 5, 3)).astype(np.float32)
    tiled = np.tile(f, (2, 3, 1))
    np.testing.assert_allclose(losses.gram(tiled), losses.gram(f), rtol=1e-5)


def test_gram_loss_is_gatys_eq4(rng):
    f = rng.standard_normal((4, 6, 5)).astype(np.float32)
    a = rng.standard_normal((4, 6, 5)).astype(np.float32)
    n, m = 5, 24
    ff, aa = f.reshape(m, n).astype(np.float64), a.reshape(m, n).astype(np.float64)
    expected = np.sum((ff.T @ ff - aa.T @ aa) ** 2) / (4 * n**2 * m**2)
    got = jax.jit(losses.gram_loss)(f, losses.gram(a))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(losses.gram_loss(f, losses.gram(f))) == 0.0


def test_content_loss_matches_numpy(rng):
    f = rng.standard_normal((3, 4, 5)).astype(np.float32)
    t = rng.standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(jax.jit(losses.content_loss)(f, t), np.mean((f - t) ** 2), rtol=1e-6)
    assert float(losses.content_loss(f, f)) == 0.0


def np_tv(x, beta):
    dx = x[:-1, 1:] - x[:-1, :-1]
    dy = x[1:, :-1] - x[:-1, :-1]
    return np.mean(np.sum(dx**2 + dy**2, axis=-1) ** (beta / 2))


@pytest.mark.parametrize("beta", [2.0, 1.0, 1.5])
def test_total_variation_matches_numpy(rng, beta):
    x = rng.random((6, 7, 3)).astype(np.float32)
    got = jax.jit(lambda x: losses.total_variation(x, beta=beta, eps=0.0))(x)
    np.testing.assert_allclose(got, np_tv(x.astype(np.float64), beta), rtol=1e-5)


def test_total_variation_of_constant_is_zero():
    assert float(losses.total_variation(jnp.full((8, 9, 3), 0.3))) == 0.0


def test_gradients_match_finite_differences(rng):
    f = jnp.asarray(rng.standard_normal((3, 4, 3)), jnp.float32)
    t = jnp.asarray(rng.standard_normal((3, 4, 3)), jnp.float32)
    x = jnp.asarray(rng.random((5, 5, 3)), jnp.float32)
    tol = dict(modes=["rev"], eps=1e-2, atol=2e-2, rtol=2e-2)
    check_grads(jax.jit(lambda f: losses.content_loss(f, t)), (f,), order=2, **tol)
    check_grads(jax.jit(lambda f: losses.gram_loss(f, losses.gram(t))), (f,), order=1, **tol)
    check_grads(jax.jit(lambda x: losses.total_variation(x)), (x,), order=2, **tol)
    check_grads(jax.jit(lambda x: losses.total_variation(x, beta=1.5)), (x,), order=1, **tol)


@pytest.mark.parametrize(
    "fn, args",
    [
        (losses.gram, (np.zeros((2, 3)),)),
        (losses.content_loss, (np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))),
        (losses.gram_loss, (np.zeros((2, 3, 4)), np.zeros((3, 3)))),
        (losses.total_variation, (np.zeros((4, 4)),)),
    ],
)
def test_wrong_shapes_raise(fn, args):
    with pytest.raises(ValueError):
        fn(*args)


def _pairwise_mmd2(x, y, k):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_poly2_is_4n2_times_gram_loss(rng):
    """Li et al. 2017: with k(x, y) = (xᵀy)² and 1/M² in both, MMD² = 4 N_l² E_l."""
    f = rng.standard_normal((4, 5, 6)).astype(np.float32)
    s = rng.standard_normal((3, 7, 6)).astype(np.float32)
    x, y = f.reshape(-1, 6), s.reshape(-1, 6)
    mmd = losses.mmd2_poly2(x, losses.gram(s), y.mean(0))
    np.testing.assert_allclose(mmd, 4 * 6**2 * losses.gram_loss(f, losses.gram(s)), rtol=1e-5)
    np.testing.assert_allclose(mmd, _pairwise_mmd2(x, y, lambda a, b: (a @ b.T) ** 2), rtol=1e-4)
    c = 0.7
    with_c = losses.mmd2_poly2(x, losses.gram(s), y.mean(0), c=c)
    expected = _pairwise_mmd2(x, y, lambda a, b: (a @ b.T + c) ** 2)
    np.testing.assert_allclose(with_c, expected, rtol=1e-4)


def test_mmd_linear_matches_pairwise_and_only_sees_means(rng):
    x = rng.standard_normal((30, 4)).astype(np.float32)
    y = rng.standard_normal((20, 4)).astype(np.float32) + 0.5
    got = jax.jit(losses.mmd2_linear)(x, y.mean(0))
    np.testing.assert_allclose(got, _pairwise_mmd2(x, y, lambda a, b: a @ b.T), rtol=1e-4)
    # Same mean, different spread: the linear kernel cannot tell them apart.
    z = (x - x.mean(0)) * 3 + x.mean(0)
    np.testing.assert_allclose(losses.mmd2_linear(z, x.mean(0)), 0.0, atol=1e-5)


def test_mmd_gaussian_matches_pairwise_and_is_zero_on_itself(rng):
    x = rng.standard_normal((25, 3)).astype(np.float32)
    y = rng.standard_normal((15, 3)).astype(np.float32) * 2
    sigma = 1.3

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))

    got = jax.jit(kernels.mmd2_gaussian)(x, y, jnp.float32(sigma))
    np.testing.assert_allclose(got, _pairwise_mmd2(x, y, k), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(kernels.mmd2_gaussian(x, x, jnp.float32(sigma)), 0.0, atol=1e-6)
    assert float(got) > 0


def test_mean_std_loss(rng):
    f = rng.standard_normal((5, 6, 4)).astype(np.float32)
    s = (rng.standard_normal((7, 3, 4)) * 2 + 1).astype(np.float32)
    target = losses.mean_std(s)
    ff, ss = f.reshape(-1, 4), s.reshape(-1, 4)
    expected = np.mean((ff.mean(0) - ss.mean(0)) ** 2 + (ff.std(0) - ss.std(0)) ** 2)
    np.testing.assert_allclose(jax.jit(losses.mean_std_loss)(f, target), expected, rtol=1e-3)
    np.testing.assert_allclose(losses.mean_std_loss(f, losses.mean_std(f)), 0.0, atol=1e-9)


def test_histogram_matching_matches_numpy(rng):
    values = rng.standard_normal((50, 3)).astype(np.float32)
    quantiles = np.sort(rng.random((50, 3)).astype(np.float32), axis=0)
    got = np.asarray(jax.jit(histogram.match_histogram)(values, quantiles))
    for c in range(3):
        expected = np.empty(50, np.float32)
        expected[np.argsort(values[:, c])] = quantiles[:, c]
        np.testing.assert_array_equal(got[:, c], expected)


def test_histogram_loss_zero_for_same_distribution_positive_otherwise(rng):
    s = rng.random((6, 8, 5)).astype(np.float32)
    q = histogram.style_quantiles(s, 48)
    assert float(histogram.histogram_loss(s, q)) < 1e-12
    shuffled = rng.permutation(s.reshape(-1, 5)).reshape(6, 8, 5)  # Same histogram.
    assert float(histogram.histogram_loss(shuffled, q)) < 1e-12
    other = rng.random((6, 8, 5)).astype(np.float32) ** 3
    assert float(histogram.histogram_loss(other, q)) > 1e-3
    with pytest.raises(ValueError):
        histogram.histogram_loss(other, q[:10])


def test_style_quantiles_resample_to_output_size(rng):
    s = rng.random((10, 10, 2)).astype(np.float32)
    q = np.asarray(histogram.style_quantiles(s, 37))
    assert q.shape == (37, 2)
    assert np.all(np.diff(q, axis=0) >= 0)
    # The style's quantiles at 37 evenly spaced levels, interpolated linearly.
    expected = np.quantile(s.reshape(-1, 2), np.linspace(0, 1, 37), axis=0)
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(q[0], s.reshape(-1, 2).min(0))
    np.testing.assert_allclose(q[-1], s.reshape(-1, 2).max(0))


def test_alpha_norm_matches_numpy(rng):
    x = rng.random((5, 6, 3)).astype(np.float32)
    got = jax.jit(lambda x: losses.alpha_norm(x, alpha=6.0))(x)
    centred = x - x.mean(axis=(0, 1))
    np.testing.assert_allclose(got, np.mean(np.abs(centred) ** 6), rtol=1e-4)
    assert float(losses.alpha_norm(jnp.full((4, 4, 3), 0.7))) < 1e-12


def test_new_losses_gradients(rng):
    f = jnp.asarray(rng.standard_normal((3, 4, 3)), jnp.float32)
    s = jnp.asarray(rng.standard_normal((4, 4, 3)), jnp.float32)
    x = jnp.asarray(rng.random((5, 5, 3)), jnp.float32)
    tol = dict(modes=["rev"], eps=1e-2, atol=3e-2, rtol=3e-2)
    check_grads(
        jax.jit(lambda f: losses.mean_std_loss(f, losses.mean_std(s))), (f,), order=1, **tol
    )
    check_grads(
        jax.jit(
            lambda f: losses.mmd2_poly2(f.reshape(-1, 3), losses.gram(s), s.mean((0, 1)), c=0.5)
        ),
        (f,),
        order=1,
        **tol,
    )
    check_grads(
        jax.jit(
            lambda f: kernels.mmd2_gaussian(f.reshape(-1, 3), s.reshape(-1, 3), jnp.float32(2.0))
        ),
        (f,),
        order=1,
        **tol,
    )
    check_grads(jax.jit(lambda x: losses.alpha_norm(x, alpha=3.0)), (x,), order=1, **tol)


def test_binned_histogram_matching_approximates_exact(rng):
    values = rng.standard_normal((4000, 3)).astype(np.float32)
    quantiles = np.sort(rng.random((4000, 3)).astype(np.float32) ** 2, axis=0)
    exact = np.asarray(histogram.match_histogram(values, quantiles))
    binned = np.asarray(jax.jit(histogram.match_histogram_binned)(values, quantiles))
    assert np.sqrt(np.mean((exact - binned) ** 2)) < 0.01
    # Large layers take the binned path: still near zero for the style's own distribution.
    s = rng.random((128, 128, 32)).astype(np.float32)
    assert s.size > histogram.EXACT_HISTOGRAM_MAX
    q = jax.jit(histogram.style_quantiles, static_argnums=1)(s, 128 * 128)
    other = rng.random((128, 128, 32)).astype(np.float32) ** 3
    loss = jax.jit(histogram.histogram_loss)
    same, different = loss(s, q), loss(other, q)
    assert float(same) < 1e-4 * float(different)


def test_binned_histogram_counts_past_float32s_integers(rng):
    """One bin holding more than 2^24 values (a large image's ReLU zeros) is counted
    whole: float32 stops adding 1 at 2^24, which shifted every rank above that bin."""
    m = 2**24 + 2**22
    values = np.zeros((m, 1), np.float32)
    values[: m // 20, 0] = 0.01 + 0.99 * rng.random(m // 20)  # 95% zeros, the rest above bin 0.
    quantiles = np.linspace(0.0, 1.0, 1025, dtype=np.float32)[:, None]
    targets = np.asarray(histogram.match_histogram_binned(values, quantiles))[: m // 20, 0]
    # Above the zeros, the CDF runs from 0.95 to 1: so do the targets.
    np.testing.assert_allclose([targets.min(), targets.max()], [0.95, 1.0], atol=0.005)


def test_mmd_poly_sampled_matches_pairwise(rng):
    x = rng.standard_normal((20, 4)).astype(np.float32)
    y = rng.standard_normal((15, 4)).astype(np.float32) + 0.3
    got = jax.jit(lambda x, y: kernels.mmd2_poly(x, y, c=0.5, degree=3))(x, y)
    expected = _pairwise_mmd2(x, y, lambda a, b: (a @ b.T + 0.5) ** 3)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(kernels.mmd2_poly(x, x, degree=3), 0.0, atol=1e-3)


@pytest.mark.parametrize("kernel", ["poly3", "gauss"])
def test_sampled_mmd_is_unbiased_for_one_distribution(rng, kernel):
    """Output and style drawn from one distribution: averaged over draws, the sampled
    estimate is 0 (it leaves out the pairs i = j). Counting k(x_i, x_i) left a floor of
    about E k(x, x) / n, whose gradient shrinks the features for the polynomial kernel."""
    pool = jnp.asarray(rng.standard_normal((400, 4)).astype(np.float32) / 2)
    n, draws = 16, 300

    def mmd(sampled):
        def one(key):
            kx, ky = jax.random.split(key)
            x = pool[jax.random.randint(kx, (n,), 0, 400)]
            y = pool[jax.random.randint(ky, (n,), 0, 400)]
            if kernel == "gauss":
                return kernels.mmd2_gaussian(x, y, jnp.float32(1.0), sampled=sampled)
            return kernels.mmd2_poly(x, y, c=1.0, degree=3, sampled=sampled)

        return np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(0), draws)))

    unbiased, with_self_pairs = mmd(True), mmd(False)
    spread = unbiased.std() / np.sqrt(draws)
    assert abs(unbiased.mean()) < 3 * spread
    assert with_self_pairs.mean() > 10 * spread  # The floor the pairs i = j left.


def test_sampled_polynomial_mmd_is_relative_to_a_zero_output(rng):
    """Degree ≠ 2 at VGG-like magnitudes: finite and about 1 (the raw kernel reached 1e15
    at d = 3 and overflows float32 by d ≈ 6), the same for features scaled alike (c = 0),
    exactly 1 for a zero output."""
    loss = nst_jax.LossConfig(style_loss=(("mmd_poly", 1.0),), mmd_degree=6, mmd_samples=64)
    y = rng.random((64, 16)).astype(np.float32) * 300
    f = (rng.random((8, 8, 16)) ** 2).astype(np.float32) * 300

    def relative(f, y):
        target = statistics.sampled_target(jnp.asarray(y), loss, "mmd_poly")
        value = statistics.feature_distance("mmd_poly", jnp.asarray(f), target, loss,
                                            jax.random.key(0))  # fmt: skip
        return float(value * statistics.scale("mmd_poly", target, loss))

    a = relative(f, y)
    assert np.isfinite(a) and 0.01 < a < 10, a
    np.testing.assert_allclose(relative(10 * f, 10 * y), a, rtol=1e-4)
    np.testing.assert_allclose(relative(np.zeros_like(f), y), 1.0, rtol=1e-5)


def test_masked_gram_is_the_gram_of_the_region(rng):
    f = jnp.asarray(rng.normal(size=(6, 8, 5)), jnp.float32)
    mask = np.zeros((6, 8), np.float32)
    mask[1:4, 2:7] = 1.0
    region = np.asarray(f)[mask > 0]
    np.testing.assert_allclose(
        losses.gram(f, mask=mask), region.T @ region / len(region), rtol=1e-5
    )
    mean, std = losses.mean_std(f, mask=mask)
    np.testing.assert_allclose(mean, region.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, np.sqrt(region.var(0) + 1e-5), rtol=1e-4)
    # Weights scale out: a soft mask of constant 0.3 is the plain Gram.
    np.testing.assert_allclose(losses.gram(f, mask=np.full((6, 8), 0.3)), losses.gram(f), rtol=1e-5)
    with pytest.raises(ValueError, match="must match"):
        losses.gram(f, mask=np.ones((3, 3)))
