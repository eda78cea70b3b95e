import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from nst_jax import losses


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
    check_grads(lambda f: losses.content_loss(f, t), (f,), order=2, **tol)
    check_grads(lambda f: losses.gram_loss(f, losses.gram(t)), (f,), order=1, **tol)
    check_grads(lambda x: losses.total_variation(x), (x,), order=2, **tol)
    check_grads(lambda x: losses.total_variation(x, beta=1.5), (x,), order=1, **tol)


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
