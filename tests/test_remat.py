"""The memory-lean VGG19 of ``remat.py``: blocks computed in strips, both ways, must
give the network's values and gradients exactly, and need less memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import Config, LossConfig, NetConfig, losses, memory, solve
from nst_jax.nets import conv, remat
from nst_jax.nets.vgg import BLOCKS, WIDTHS, pool2x2
from nst_jax.tasks import policy

from .conftest import SMALL_WIDTHS


@pytest.fixture
def many_strips(monkeypatch):
    """Strips of a few rows, so that small inputs run many, and a partial last one."""
    monkeypatch.setattr(remat, "STRIPS", 64)
    monkeypatch.setattr(remat, "MIN_STRIP_TO_HALO", 1)


def _reference(params, x, names, pooling):
    """The block the plain way: 'SAME' convolutions on the whole input."""
    out = {}
    for name in sorted(params):
        x = jax.nn.relu(
            conv.direct(x, params[name]["kernel"]) + params[name]["bias"][None, None, None]
        )
        out[name] = x
    out["pool"] = pool2x2(x, pooling)
    return {name: out[name] for name in names}


KINDS = ("sum", "sq", "gram")


@pytest.mark.parametrize(
    "block, names, moment, masked, height, pooling",
    [
        (1, ("conv1_1", "pool"), "conv1_1", True, 37, "max"),  # Odd: pooling drops a row.
        (1, ("conv1_1", "conv1_2"), None, False, 22, "avg"),
        (2, ("conv2_1",), "conv2_2", False, 19, "avg"),  # Sums deeper than the outputs.
        (3, ("conv3_1", "pool"), "conv3_3", True, 30, "avg"),
        (4, ("conv4_2", "pool"), None, False, 17, "max"),
        (5, (), "conv5_1", True, 9, "avg"),  # Sums alone: a halo of one row.
        (5, (), "conv5_2", False, 11, "max"),
        (2, ("pool",), "pool2", True, 21, "avg"),  # Sums of the pooled output.
        (2, (), "pool2", False, 21, "max"),  # Unmasked, odd: no row past the image counts.
    ],
)
def test_strips_give_the_blocks_values_sums_and_gradients(
    small_weights, rng, many_strips, block, names, moment, height, pooling, masked
):
    key = "pool" if moment and moment.startswith("pool") else moment
    wanted = (*names, key) if moment else names
    depth = BLOCKS[block - 1] if "pool" in wanted else max(int(n[6]) for n in wanted)
    params = {
        f"conv{block}_{i}": small_weights.params[f"conv{block}_{i}"] for i in range(1, depth + 1)
    }
    channels = 3 if block == 1 else SMALL_WIDTHS[block - 2]
    x = jnp.asarray(rng.standard_normal((2, height, 6, channels)), jnp.float32)
    assert remat.strip_rows(height, depth) < height  # Several strips, really.
    rows = height // 2 if key == "pool" else height
    weights = jnp.asarray(rng.uniform(size=(3, rows, 6 // (1 + (key == "pool")))), jnp.float32)
    weights = weights if masked else None
    moments = ((moment, KINDS),) if moment else ()
    masks = {moment: weights} if moment else {}

    def reference(p, x):
        out = _reference(p, x, wanted, pooling)
        sums = {
            k: jax.vmap(lambda f: losses.moment_sums(f, KINDS, masks=weights))(out[key])
            for k, _ in moments
        }
        return {k: out[k] for k in names}, sums

    def strips(p, x):
        return remat.block(p, x, masks, names, pooling, moments, "direct")

    shapes = jax.eval_shape(strips, params, x)
    cotangents = jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape), v.dtype), shapes)

    @functools.partial(jax.jit, static_argnums=0)
    def values_and_vjp(fn, p, x):
        out, vjp = jax.vjp(fn, p, x)
        return out, vjp(cotangents)

    (got, d_got), (expected, d_expected) = (
        values_and_vjp(f, params, x) for f in (strips, reference)
    )
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    for a, b in zip(jax.tree.leaves(d_got), jax.tree.leaves(d_expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize("algorithm", conv.ALGORITHMS)
def test_features_equal_the_network_with_prepared_params(
    small_weights, rng, many_strips, algorithm
):
    """``remat.features`` is ``VGG19`` with either algorithm's kernels, batched or not,
    poolings included, and so is its image gradient."""
    params = nst_jax.prepare(small_weights, NetConfig(convolution=algorithm)).params
    x = jnp.asarray(rng.standard_normal((2, 29, 21, 3)), jnp.float32)
    layers = ("conv1_2", "conv3_1", "pool3", "conv2_2")
    network = nst_jax.VGG19(layers=layers, widths=SMALL_WIDTHS)
    plain = small_weights.params
    shapes = jax.eval_shape(lambda: network.apply({"params": plain}, x))
    probes = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in shapes.items()}

    def with_grad(fn, params):
        """Features and the gradient of a probe of them, in one program; the params are
        an argument, or XLA would spend its time folding the network into constants."""

        def loss(p, x):
            f = fn(p, x)
            return sum(jnp.sum(f[k] * probe) for k, probe in probes.items()), f

        return jax.jit(jax.grad(loss, argnums=1, has_aux=True))(params, x)

    def lean(p, x):
        return remat.features(p, x, layers, pooling="max", convolution=algorithm)

    d_got, got = with_grad(lean, params)
    d_want, want = with_grad(lambda p, x: network.apply({"params": p}, x), plain)
    single = jax.jit(lean)(params, x[0])
    assert set(got) == set(single) == set(layers)
    for name in layers:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(single[name], want[name][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_got, d_want, rtol=1e-4, atol=1e-4)


def full_network(convolution="direct", remat=False):
    """The full-size VGG19, as shapes only: compiling needs no memory for its weights."""
    return policy._shapes_only(NetConfig(convolution=convolution, remat=remat), WIDTHS)


def _step_bytes(shape, loss, remat):
    """XLA's figures for the step at ``shape`` with the full-size VGG19, from shapes:
    ``(temporaries, total)``, in bytes."""
    config = Config(loss=loss, net=NetConfig(convolution="direct", remat=remat))
    analysis = solve.step_memory(full_network(remat=remat), shape, config)
    if analysis is None:
        pytest.fail("XLA gave no memory analysis on this backend")
    return analysis.temp_size_in_bytes, memory.analysis_bytes(analysis)


def test_remat_lowers_the_compiled_steps_memory_and_the_estimate_bounds_it():
    """XLA's own account, not a timing: the strips must cut the step's temporaries."""
    shape = (320, 480)  # Large enough that activations, not weights, dominate.
    (plain, _), (lean, total) = (_step_bytes(shape, LossConfig(), r) for r in (False, True))
    assert lean < 0.7 * plain, (lean, plain)
    estimate = memory.estimate_bytes(
        shape, LossConfig(), NetConfig(convolution="direct", remat=True)
    )
    assert total <= estimate and memory.SURELY * estimate <= total, (total, estimate)


def test_style_layers_cost_remat_no_whole_layer():
    """With remat, Gram layers are sums taken strip by strip: asking for ``conv1_1``'s
    Gram matrix must not hold that layer, nor its gradient (each 39 MB here)."""
    shape = (320, 480)
    without, _ = _step_bytes(shape, LossConfig(style_weight=0.0), True)
    for statistic in ("gram", "meanstd"):
        loss = LossConfig(style_layers=("conv1_1",), style_loss=((statistic, 1.0),))
        with_style, _ = _step_bytes(shape, loss, True)
        layer = 4 * shape[0] * shape[1] * 64
        assert with_style - without < layer / 4, (statistic, with_style - without, layer)


def test_too_large_a_size_suggests_remat(monkeypatch):
    shape, loss = (2048, 3072), LossConfig()
    direct, lean_net = NetConfig(convolution="direct"), NetConfig(convolution="direct", remat=True)
    plain = memory.estimate_bytes(shape, loss, direct)
    lean = memory.estimate_bytes(shape, loss, lean_net)
    assert lean < plain / 2
    have = int(lean / 0.8)  # Room for the lean step only.
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: have)
    with pytest.raises(ValueError, match=r"--size \d+; --remat needs about [\d.]+ GiB and fits"):
        memory.check_estimate(shape, loss, direct)
    memory.check_estimate(shape, loss, lean_net)
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(lean / 4))
    with pytest.raises(ValueError, match=r"or --size \d+ with --remat"):
        memory.check_estimate(shape, loss, direct)


def test_a_remat_network_gives_the_same_values_sums_and_gradients(small_net, rng):
    """``Network.features_and_sums`` with ``remat`` is the plain network's, masked sums
    of a pooling layer included, and so is the image gradient through both."""
    image = jnp.asarray(rng.random((24, 32, 3)), jnp.float32)
    masks = jnp.asarray(rng.random((2, 6, 8)), jnp.float32)  # pool2's resolution.
    moments = {"pool2": (KINDS, masks), "conv1_1": (("gram",), None)}

    def f(x, network):  # A random linear probe of every output: a well-posed gradient.
        feats, sums = network.features_and_sums(x, ("conv2_2", "conv3_1"), moments)
        leaves = jax.tree.leaves((feats, sums))
        keys = jax.random.split(jax.random.key(1), len(leaves))
        probe = sum(
            jnp.sum(v * jax.random.normal(k, v.shape)) for k, v in zip(keys, leaves, strict=True)
        )
        return probe, (feats, sums)

    grad = jax.jit(jax.grad(f, has_aux=True))
    (d_lean, lean), (d_plain, plain) = grad(image, small_net(remat=True)), grad(image, small_net())
    for a, b in zip(jax.tree.leaves(lean), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    np.testing.assert_allclose(
        d_lean, d_plain, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(d_plain)))
    )
