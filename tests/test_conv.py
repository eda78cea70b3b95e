"""``nets/conv.py``: every convolution algorithm computes XLA's convolution and its
autodiff gradient, and a prepared network runs the algorithm it names."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import NetConfig, solve
from nst_jax.nets import conv
from nst_jax.nets.vgg import CONV_LAYERS, VGG19, layer

from .conftest import SMALL_WIDTHS

FAST = ("direct", "winograd")


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


@pytest.mark.parametrize("algorithm", FAST)
@pytest.mark.parametrize("padding", [conv.SAME, ((0, 0), (1, 1)), ((2, 0), (1, 2))])
def test_custom_convolutions_equal_autodiff_for_any_padding(rng, algorithm, padding):
    """``remat.py``'s strips pad columns only; the input gradient crops what was padded.
    The values, the input gradient and the kernel gradient all match autodiff's."""
    x, kernel = _data(rng, 1, 11, 6, 4), _data(rng, 3, 3, 4, 3)
    derived = conv.derive(algorithm, kernel)
    y, vjp = jax.vjp(lambda x, k: conv.apply(algorithm, x, k, derived, padding), x, kernel)
    expected_y, expected_vjp = jax.vjp(lambda x, k: conv.direct(x, k, padding), x, kernel)
    assert y.shape == expected_y.shape
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
    g = _data(rng, *y.shape)
    for a, b in zip(vjp(g), expected_vjp(g), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kh, shape", [(3, (1, 23, 17, 6)), (9, (2, 31, 12, 3)), (3, (1, 8, 9, 4))])
def test_convolutions_in_strips_equal_whole_ones(rng, monkeypatch, kh, shape):
    """Values and both gradients, strips of uneven height included; 1x1, strided and
    padded convolutions, and inputs under two strips high, run whole."""
    monkeypatch.setattr(conv, "STRIP_ROWS", 5)
    x, kernel = _data(rng, *shape), _data(rng, kh, kh, shape[-1], 7)
    nhwc = {"dimension_numbers": ("NHWC", "HWIO", "NHWC")}

    def run(fn):
        def loss(x, k):
            y = fn(x, k, (1, 1), "VALID", **nhwc)
            return jnp.sum(jnp.sin(y)), y

        (_, y), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(x, kernel)
        return y, grads

    want, got = run(jax.lax.conv_general_dilated), run(conv.in_strips)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        # Float32 rounding: the kernel gradient sums the strips' shares in another order.
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.abs(a).max()))
    rows = shape[1] - kh + 1
    jaxpr = jax.make_jaxpr(lambda x, k: conv.in_strips(x, k, (1, 1), "VALID", **nhwc))(x, kernel)
    convs = str(jaxpr).count("conv_general_dilated")
    assert convs == (round(rows / 5) if rows >= 8 else 1), (rows, convs)
    monkeypatch.setattr(conv, "MAX_STRIPS", 2)  # However tall the image, at most 2.
    jaxpr = jax.make_jaxpr(lambda x, k: conv.in_strips(x, k, (1, 1), "VALID", **nhwc))(x, kernel)
    assert str(jaxpr).count("conv_general_dilated") == min(convs, 2)
    np.testing.assert_allclose(
        conv.in_strips(x, kernel, (1, 1), "VALID", **nhwc), want[0], rtol=1e-4, atol=1e-4
    )
    for strides, padding in [((2, 2), "VALID"), ((1, 1), ((1, 1), (1, 1)))]:
        jaxpr = jax.make_jaxpr(
            lambda x, k, s=strides, p=padding: conv.in_strips(x, k, s, p, **nhwc)
        )
        assert str(jaxpr(x, kernel)).count("conv_general_dilated") == 1


def test_a_generator_in_strips_equals_it_whole(rng, monkeypatch):
    from nst_jax.nets import generator

    config = generator.GeneratorConfig(scales=3, width=4)
    variables = generator.init(jax.random.key(0), config)
    x = jnp.asarray(rng.random((37, 51, 3)), jnp.float32)
    outputs = []
    for rows in (10**6, 4):
        monkeypatch.setattr(conv, "STRIP_ROWS", rows)
        apply = jax.jit(lambda v, x: generator.apply(v, config, x, jax.random.key(1)))
        outputs.append(np.asarray(apply(variables, x)))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_layer_algorithms_and_derived_kernels():
    assert conv.layer_algorithm("winograd", 1) == "direct"
    assert conv.layer_algorithm("winograd", conv.WINOGRAD_FROM_BLOCK) == "winograd"
    assert conv.layer_algorithm("plain", 3) == "plain"
    kernel = jnp.ones((3, 3, 2, 5))
    for algorithm in conv.ALGORITHMS:
        shapes = conv.derived_shapes(algorithm, kernel.shape)
        derived = conv.derive(algorithm, kernel)
        assert {k: v.shape for k, v in derived.items()} == shapes
    with pytest.raises(ValueError, match="convolution must be one of"):
        conv.layer_algorithm("fft", 2)
    with pytest.raises(ValueError, match="convolution must be one of"):
        NetConfig(convolution="fft")


@pytest.mark.parametrize("algorithm", FAST)
def test_prepared_network_keeps_values_and_gradients(small_weights, rng, algorithm):
    """Derived kernels change how the network is computed, not what it computes."""
    network = nst_jax.prepare(small_weights, NetConfig(convolution=algorithm))
    for name, p in network.params.items():
        wanted = conv.layer_algorithm(algorithm, layer(name).block)
        assert set(p) == {"kernel", "bias", *conv.derived_shapes(wanted, (3, 3, 1, 1))}
    x = rng.random((2, 23, 18, 3)).astype(np.float32)
    layers = ("conv1_1", "conv3_2", "pool3")  # Blocks 1 (direct) to 3 (Winograd).

    def loss(p, x, algorithm):
        out = VGG19(layers, widths=SMALL_WIDTHS, convolution=algorithm).apply({"params": p}, x)
        return sum(jnp.sum(v * jnp.cos(v)) for v in out.values())

    grad_x = jax.jit(jax.vmap(jax.grad(loss, argnums=1), (None, 0, None)), static_argnums=2)
    got = grad_x(network.params, x, algorithm)
    np.testing.assert_allclose(got, grad_x(small_weights.params, x, "plain"), rtol=1e-4, atol=1e-5)
    # Parameter gradients stay exact; the derived kernels get none.
    grad_p = jax.jit(jax.grad(loss), static_argnums=2)
    g_plain, g_fast = (
        grad_p(small_weights.params, x[0], "plain"),
        grad_p(network.params, x[0], algorithm),
    )
    for name in CONV_LAYERS:
        np.testing.assert_allclose(
            g_fast[name]["kernel"], g_plain[name]["kernel"], rtol=1e-3, atol=1e-3
        )
        for key in set(g_fast[name]) - {"kernel", "bias"}:
            assert not np.any(g_fast[name][key])


def test_prepared_kernels_remove_per_step_kernel_transposes(small_weights):
    """The compiled image gradient rearranges no kernel once the derived ones are there."""

    def grad_hlo(algorithm):  # Parameters are arguments, as in the step, not constants.
        network = nst_jax.prepare(small_weights, NetConfig(convolution=algorithm))

        def loss(x, network):
            return jnp.sum(network.features(x, ("conv1_1", "conv5_1"))["conv5_1"])

        x = jax.ShapeDtypeStruct((64, 64, 3), jnp.float32)
        return solve.jit(jax.grad(loss)).lower(x, network).compile().as_text()

    kernel_ops = r"= f32\[3,3,\d+,\d+\]\{[^}]*\} (?:fusion|transpose|copy|reverse)\("
    assert len(re.findall(kernel_ops, grad_hlo("plain"))) >= 12
    for algorithm in FAST:
        assert not re.findall(kernel_ops, grad_hlo(algorithm))


def test_the_step_runs_the_algorithm_its_network_names(small_weights):
    """A setting reaches the program: a Winograd network's step convolves only in block
    1 (forward and image gradient), a direct one's in every layer it uses."""
    config = nst_jax.Config()
    counts = {}
    for algorithm in FAST:
        network = nst_jax.prepare(small_weights, NetConfig(convolution=algorithm))
        text = solve.lower_step(network, (32, 48), config).as_text()
        counts[algorithm] = text.count("stablehlo.convolution")
    assert counts["winograd"] == 4  # conv1_1 and conv1_2, both ways.
    assert counts["direct"] >= 2 * 13  # Every convolution up to conv5_1, both ways.


def test_jit_compiles_with_the_package_options(rng):
    """On CPU, ``solve.jit`` asks XLA for Eigen convolutions instead of YNNPACK."""
    # 32 channels: narrower convolutions XLA keeps out of YNNPACK by itself.
    x, kernel = _data(rng, 1, 16, 16, 32), _data(rng, 3, 3, 32, 32)
    ours = solve.jit(conv.direct)
    np.testing.assert_allclose(ours(x, kernel), conv.direct(x, kernel), rtol=1e-5, atol=1e-4)
    if jax.default_backend() == "cpu":
        plain = jax.jit(conv.direct).lower(x, kernel).compile().as_text()
        assert "ynn_fusion" in plain  # XLA's default, so the option is what removes it.
        assert "ynn_fusion" not in ours.lower(x, kernel).compile().as_text()
