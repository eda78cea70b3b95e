"""The memory-lean VGG19 of ``remat.py``: blocks computed in strips, both ways, must
give the network's values and gradients exactly, and need less memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import conv, losses, memory, optimize, remat
from nst_jax.objective import LossConfig
from nst_jax.vgg import BLOCKS, pool2x2

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
    ],
)
def test_strips_give_the_blocks_values_sums_and_gradients(
    small_weights, rng, many_strips, block, names, moment, height, pooling, masked
):
    wanted = (*names, moment) if moment else names
    depth = BLOCKS[block - 1] if "pool" in names else max(int(n[6]) for n in wanted)
    params = {
        f"conv{block}_{i}": small_weights.params[f"conv{block}_{i}"] for i in range(1, depth + 1)
    }
    channels = 3 if block == 1 else SMALL_WIDTHS[block - 2]
    x = jnp.asarray(rng.standard_normal((2, height, 6, channels)), jnp.float32)
    assert remat.strip_rows(height, depth) < height  # Several strips, really.
    weights = jnp.asarray(rng.uniform(size=(3, height, 6)), jnp.float32) if masked else None
    moments = ((moment, KINDS),) if moment else ()
    masks = {moment: weights} if moment else {}

    def reference(p, x):
        out = _reference(p, x, wanted, pooling)
        sums = {
            k: jax.vmap(lambda f: losses.moment_sums(f, KINDS, weights=weights))(out[k])
            for k, _ in moments
        }
        return {k: out[k] for k in names}, sums

    def strips(p, x):
        return remat.block(p, x, masks, names, pooling, moments)

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
    and so is its image gradient."""
    params = conv.prepare(small_weights.params, algorithm)
    x = jnp.asarray(rng.standard_normal((2, 29, 21, 3)), jnp.float32)
    layers = ("conv1_2", "conv3_1", "conv4_2", "conv2_2")
    network = nst_jax.VGG19(layers=layers, widths=SMALL_WIDTHS)
    shapes = jax.eval_shape(lambda: network.apply({"params": params}, x))
    probes = {k: jnp.asarray(rng.standard_normal(v.shape), jnp.float32) for k, v in shapes.items()}

    def with_grad(fn):
        """Features and the gradient of a probe of them, in one program; the params are
        an argument, or XLA would spend its time folding the network into constants."""

        def loss(p, x):
            f = fn(p, x)
            return sum(jnp.sum(f[k] * probe) for k, probe in probes.items()), f

        return jax.jit(jax.grad(loss, argnums=1, has_aux=True))(params, x)

    d_got, got = with_grad(lambda p, x: remat.features(p, x, layers, pooling="max"))
    d_want, want = with_grad(lambda p, x: network.apply({"params": p}, x))
    single = jax.jit(lambda p, x: remat.features(p, x, layers, pooling="max"))(params, x[0])
    assert set(got) == set(single) == set(layers)
    for name in layers:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(single[name], want[name][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_got, d_want, rtol=1e-4, atol=1e-4)


def _step_bytes(shape, loss):
    """XLA's figures for the step at ``shape`` with the full-size VGG19, from shapes:
    ``(temporaries, total)``, in bytes."""
    config = nst_jax.Config(loss=loss, convolution="direct")
    params = jax.eval_shape(lambda: conv.prepare(nst_jax.init_params(jax.random.key(0))))
    analysis = optimize.step_memory(params, shape, config, preprocessing=nst_jax.CAFFE)
    if analysis is None:
        pytest.fail("XLA gave no memory analysis on this backend")
    return analysis.temp_size_in_bytes, memory.analysis_bytes(analysis)


def test_remat_lowers_the_compiled_steps_memory_and_the_estimate_bounds_it():
    """XLA's own account, not a timing: the strips must cut the step's temporaries."""
    shape = (320, 480)  # Large enough that activations, not weights, dominate.
    (plain, _), (lean, total) = (_step_bytes(shape, LossConfig(remat=r)) for r in (0, 1))
    assert lean < 0.7 * plain, (lean, plain)
    estimate = memory.estimate_bytes(shape, LossConfig(remat=True))
    assert total <= estimate and memory.SURELY * estimate <= total, (total, estimate)


def test_style_layers_cost_remat_no_whole_layer():
    """With remat, Gram layers are sums taken strip by strip: asking for ``conv1_1``'s
    Gram matrix must not hold that layer, nor its gradient (each 39 MB here)."""
    shape = (320, 480)
    without, _ = _step_bytes(shape, LossConfig(remat=True, style_weight=0.0))
    for statistic in ("gram", "meanstd"):
        loss = LossConfig(remat=True, style_layers=("conv1_1",), style_loss=((statistic, 1.0),))
        with_style, _ = _step_bytes(shape, loss)
        layer = 4 * shape[0] * shape[1] * 64
        assert with_style - without < layer / 4, (statistic, with_style - without, layer)


def test_too_large_a_size_suggests_remat(monkeypatch):
    shape = (2048, 3072)
    plain = memory.estimate_bytes(shape, LossConfig())
    lean = memory.estimate_bytes(shape, LossConfig(remat=True))
    assert lean < plain / 2
    have = int(lean / 0.8)  # Room for the lean step only.
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: have)
    with pytest.raises(ValueError, match=r"--size \d+; --remat needs about [\d.]+ GiB and fits"):
        memory.check_estimate(shape, LossConfig())
    memory.check_estimate(shape, LossConfig(remat=True))
    monkeypatch.setattr(memory, "available_bytes", lambda device=None: int(lean / 4))
    with pytest.raises(ValueError, match=r"or --size \d+ with --remat"):
        memory.check_estimate(shape, LossConfig())
