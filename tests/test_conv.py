import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nst_jax import conv, optimize
from nst_jax.vgg import LAYERS, VGG19

from .conftest import SMALL_WIDTHS


def _apply(params, x, layers):
    return VGG19(layers=layers, widths=SMALL_WIDTHS).apply({"params": params}, x)


def _data(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def test_backward_kernel_gives_the_input_gradient(rng):
    x, kernel, g = _data(rng, 1, 9, 7, 5), _data(rng, 3, 3, 5, 6), _data(rng, 1, 9, 7, 6)
    (expected,) = jax.vjp(lambda x: conv.direct(x, kernel), x)[1](g)
    got = conv.direct(g, conv.backward_kernel(kernel))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h, w", [(8, 8), (9, 7), (1, 1), (2, 5), (21, 32)])
def test_winograd_equals_direct_convolution(rng, h, w):
    """Every size, odd ones included (padded to whole tiles and cropped back)."""
    x, kernel = _data(rng, 2, h, w, 6), _data(rng, 3, 3, 6, 5)
    expected = conv.direct(x, kernel)
    got = jax.jit(conv.winograd)(x, conv.winograd_kernel(kernel))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("algorithm", conv.ALGORITHMS)
@pytest.mark.parametrize("padding", [conv.SAME, ((0, 0), (1, 1)), ((2, 0), (1, 2))])
def test_custom_convolutions_equal_autodiff_for_any_padding(rng, algorithm, padding):
    """``remat.py``'s strips pad columns only; the input gradient crops what was padded."""
    x, kernel = _data(rng, 1, 11, 6, 4), _data(rng, 3, 3, 4, 3)
    k_t = conv.backward_kernel(kernel)
    if algorithm == "direct":
        fast = lambda x, k: conv.direct_pretransposed(x, k, k_t, padding)  # noqa: E731
    else:
        u, u_t = conv.winograd_kernel(kernel), conv.winograd_kernel(k_t)
        fast = lambda x, k: conv.winograd_conv(x, k, u, u_t, padding)  # noqa: E731
    y, vjp = jax.vjp(fast, x, kernel)
    expected_y, expected_vjp = jax.vjp(lambda x, k: conv.direct(x, k, padding), x, kernel)
    assert y.shape == expected_y.shape
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    g = _data(rng, *y.shape)
    for a, b in zip(vjp(g), expected_vjp(g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", conv.ALGORITHMS)
def test_custom_gradients_equal_autodiff(rng, algorithm):
    x, kernel, g = _data(rng, 1, 11, 6, 4), _data(rng, 3, 3, 4, 3), _data(rng, 1, 11, 6, 3)
    k_t = conv.backward_kernel(kernel)
    if algorithm == "direct":
        fast = lambda x, k: conv.direct_pretransposed(x, k, k_t)  # noqa: E731
    else:
        u, u_t = conv.winograd_kernel(kernel), conv.winograd_kernel(k_t)
        fast = lambda x, k: conv.winograd_conv(x, k, u, u_t)  # noqa: E731
    expected = jax.vjp(conv.direct, x, kernel)[1](g)
    got = jax.vjp(fast, x, kernel)[1](g)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("algorithm", conv.ALGORITHMS)
def test_prepared_network_keeps_values_and_gradients(small_weights, rng, algorithm):
    """Derived kernels change how the network is computed, not what it computes."""
    params = small_weights.params
    prepared = conv.prepare(params, algorithm)
    winograd_layers = {n for n, p in prepared.items() if "winograd" in p}
    if algorithm == "winograd":
        assert winograd_layers == {n for n in LAYERS if int(n[4]) >= conv.WINOGRAD_FROM_BLOCK}
    else:
        assert not winograd_layers and all("kernel_t" in p for p in prepared.values())
    x = rng.random((2, 23, 18, 3)).astype(np.float32)
    layers = ("conv1_1", "conv3_2", "conv5_1")

    def loss(p, x):
        return sum(jnp.sum(v * jnp.cos(v)) for v in _apply(p, x, layers).values())

    plain, fast = _apply(params, x, layers), _apply(prepared, x, layers)
    for name in layers:
        np.testing.assert_allclose(fast[name], plain[name], rtol=1e-5, atol=1e-5)
    grad_x = jax.jit(jax.vmap(jax.grad(loss, argnums=1), in_axes=(None, 0)))
    np.testing.assert_allclose(grad_x(prepared, x), grad_x(params, x), rtol=1e-4, atol=1e-5)
    # Parameter gradients stay exact; the derived kernels get none.
    grad_p = jax.jit(jax.grad(loss))
    g_plain, g_fast = grad_p(params, x[0]), grad_p(prepared, x[0])
    for name in LAYERS:
        np.testing.assert_allclose(
            g_fast[name]["kernel"], g_plain[name]["kernel"], rtol=1e-3, atol=1e-3
        )
        for key in set(g_fast[name]) - {"kernel", "bias"}:
            assert not np.any(g_fast[name][key])


def test_prepare_validates_the_algorithm(small_weights):
    with pytest.raises(ValueError, match="convolution must be one of"):
        conv.prepare(small_weights.params, "fft")


def test_prepared_kernels_remove_per_step_kernel_transposes(small_weights):
    """The compiled image gradient rearranges no kernel once the derived ones are there."""

    def grad_hlo(params):  # Parameters are arguments, as in the step, not constants.
        def loss(x, params):
            return jnp.sum(_apply(params, x, ("conv1_1", "conv5_1"))["conv5_1"])

        x = jax.ShapeDtypeStruct((64, 64, 3), jnp.float32)
        return optimize.jit(jax.grad(loss)).lower(x, params).compile().as_text()

    kernel_ops = r"= f32\[3,3,\d+,\d+\]\{[^}]*\} (?:fusion|transpose|copy|reverse)\("
    assert len(re.findall(kernel_ops, grad_hlo(small_weights.params))) >= 12
    for algorithm in conv.ALGORITHMS:
        assert not re.findall(kernel_ops, grad_hlo(conv.prepare(small_weights.params, algorithm)))


def test_jit_compiles_with_the_package_options(rng):
    """On CPU, ``optimize.jit`` asks XLA for Eigen convolutions instead of YNNPACK."""
    x, kernel = _data(rng, 1, 16, 16, 8), _data(rng, 3, 3, 8, 8)
    ours = optimize.jit(conv.direct)
    np.testing.assert_allclose(ours(x, kernel), conv.direct(x, kernel), rtol=1e-5, atol=1e-4)
    if jax.default_backend() == "cpu":
        assert "ynn_fusion" not in ours.lower(x, kernel).compile().as_text()


def test_auto_convolution_resolves_per_backend_and_size_with_or_without_remat():
    from nst_jax.objective import LossConfig

    cpu = jax.default_backend() == "cpu"
    big, small = (optimize.WINOGRAD_MIN_SIDE, 300), (optimize.WINOGRAD_MIN_SIDE - 1, 300)
    assert optimize.Config().convolution_algorithm(big) == ("winograd" if cpu else "direct")
    assert optimize.Config().convolution_algorithm(small) == "direct"
    remat = optimize.Config(loss=LossConfig(remat=True))  # Its strips run either.
    assert remat.convolution_algorithm(big) == ("winograd" if cpu else "direct")
    assert remat.convolution_algorithm(small) == "direct"
    assert optimize.Config(convolution="direct").convolution_algorithm(big) == "direct"
    assert optimize.Config(convolution="winograd").convolution_algorithm(small) == "winograd"
    with pytest.raises(ValueError, match="convolution must be one of"):
        optimize.Config(convolution="fft")


def test_auto_falls_back_to_direct_where_only_direct_fits(monkeypatch):
    from nst_jax import memory

    config, shape = optimize.Config(), (256, 384)
    direct = memory.estimate_bytes(shape, config.loss, convolution="direct")
    winograd = memory.estimate_bytes(shape, config.loss, convolution="winograd")
    assert direct < winograd
    monkeypatch.setattr(memory, "available_bytes", lambda: int((direct + winograd) / 2 / 0.9))
    assert config.convolution_algorithm(shape) == "direct"
    monkeypatch.setattr(memory, "available_bytes", lambda: int(2 * winograd))
    cpu = jax.default_backend() == "cpu"
    assert config.convolution_algorithm(shape) == ("winograd" if cpu else "direct")
