"""``nets/vgg.py``: the Flax VGG19 and its layer names, poolings included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax.nets.vgg import CONV_LAYERS, LAYERS, VGG19, feature_shape, layer, pool2x2

from .conftest import SMALL_WIDTHS


def _apply(params, x, layers, **kw):
    return VGG19(layers=layers, widths=SMALL_WIDTHS, **kw).apply({"params": params}, x)


def test_layer_names_parse_convolutions_and_poolings():
    assert len(CONV_LAYERS) == 16 and len(LAYERS) == 21
    assert LAYERS[:3] == ("conv1_1", "conv1_2", "pool1") and LAYERS[-1] == "pool5"
    assert layer("conv3_2") == ("conv3_2", 3, 2) and layer("conv3_2").stride == 4
    assert layer("pool4") == ("pool4", 4, 5) and layer("pool4").stride == 16
    assert layer("pool4").last_conv == "conv4_4" and layer("conv2_1").poolings == 1
    assert [layer(n).order for n in LAYERS] == list(range(len(LAYERS)))
    assert feature_shape((37, 50), "pool1") == (18, 25)
    for bad in ("conv6_1", "relu4_2", "pool6", "pool"):
        with pytest.raises(ValueError, match="unknown VGG19 layer"):
            layer(bad)


def test_returns_requested_layers_with_expected_shapes(small_weights, rng):
    x = rng.standard_normal((34, 50, 3)).astype(np.float32)
    layers = ("conv1_1", "conv3_2", "pool5", "conv2_2", "pool2")
    out = _apply(small_weights.params, x, layers)
    assert set(out) == set(layers)
    for name, act in out.items():
        info = layer(name)
        assert act.shape == (*feature_shape((34, 50), name), SMALL_WIDTHS[info.block - 1])
        assert float(act.min()) >= 0.0  # ReLU applied (and pooled).
    # A pooling layer is its block's last convolution, pooled.
    last = _apply(small_weights.params, x, ("conv2_2",))["conv2_2"]
    np.testing.assert_allclose(out["pool2"], pool2x2(last, "max"), rtol=1e-6)


def test_batched_input_matches_single(small_weights, rng):
    x = rng.standard_normal((2, 16, 16, 3)).astype(np.float32)
    batched = _apply(small_weights.params, x, ("conv2_1",))["conv2_1"]
    single = _apply(small_weights.params, x[1], ("conv2_1",))["conv2_1"]
    np.testing.assert_allclose(batched[1], single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, convs", [("conv1_1", 1), ("conv2_1", 3), ("conv5_1", 13), ("pool3", 8)]
)
def test_stops_at_deepest_requested_layer(small_weights, name, convs):
    x = jnp.zeros((32, 32, 3))
    jaxpr = jax.make_jaxpr(lambda x: _apply(small_weights.params, x, (name,)))(x)
    assert str(jaxpr).count("conv_general_dilated") == convs


def test_pooling_choices_differ_and_are_validated(small_weights, rng):
    x = rng.standard_normal((16, 16, 3)).astype(np.float32)
    a = _apply(small_weights.params, x, ("conv2_1",), pooling="max")["conv2_1"]
    b = _apply(small_weights.params, x, ("conv2_1",), pooling="avg")["conv2_1"]
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="pooling"):
        _apply(small_weights.params, x, ("conv2_1",), pooling="median")
    with pytest.raises(ValueError, match="unknown VGG19 layer 'conv6_1'"):
        _apply(small_weights.params, jnp.zeros((8, 8, 3)), ("conv6_1",))


def test_pool2x2_matches_numpy(rng):
    x = rng.standard_normal((5, 7, 2)).astype(np.float32)  # Odd sizes floor.
    blocks = x[:4, :6].reshape(2, 2, 3, 2, 2)
    np.testing.assert_allclose(pool2x2(x, "max"), blocks.max(axis=(1, 3)))
    np.testing.assert_allclose(pool2x2(x, "avg"), blocks.mean(axis=(1, 3)), rtol=1e-6)


def np_conv_relu(x, kernel, bias):
    """Independent reference: 'SAME' 3x3 cross-correlation as a sum of shifted matmuls."""
    h, w, _ = x.shape
    xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.zeros((h, w, kernel.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += xp[dy : dy + h, dx : dx + w] @ kernel[dy, dx]
    return np.maximum(out + bias, 0.0)


def test_real_weights_match_numpy_convolution(real_weights, rng):
    params = {
        k: {n: np.asarray(v, np.float64) for n, v in p.items()}
        for k, p in real_weights.params.items()
    }
    image = rng.random((12, 14, 3)).astype(np.float32)
    x = np.asarray(nst_jax.preprocess(image, real_weights.preprocessing), np.float64)
    # Caffe preprocessing: BGR, 0-255, mean pixel subtracted.
    np.testing.assert_allclose(x[..., 0], image[..., 2] * 255 - 103.939, rtol=1e-5)

    def pool(x):
        h, w, c = x.shape
        return x[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))

    ref = {}
    for name in ("conv1_1", "conv1_2", "pool1", "conv2_1"):
        if name == "pool1":
            x = pool(x)
        else:
            x = np_conv_relu(x, params[name]["kernel"], params[name]["bias"])
        ref[name] = x
    network = nst_jax.prepare(real_weights, nst_jax.NetConfig(pooling="max", convolution="plain"))
    got = network.features(image, tuple(ref))
    for name in ref:
        scale = np.abs(ref[name]).max()
        np.testing.assert_allclose(np.asarray(got[name]), ref[name], atol=1e-4 * scale)
        assert scale > 1.0  # Real, not degenerate, activations.
