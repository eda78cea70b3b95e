"""``solve/``: the pure solver, the one compile point and the host driver."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nst_jax
from nst_jax import Config, LossConfig, NetConfig, solve
from nst_jax.solve import driver

from .conftest import shallow, smooth_image

LOSS = shallow(style_weight=1.0, tv_weight=0.0)


def _config(**kw):
    return Config(loss=kw.pop("loss", LOSS), **kw)


@pytest.fixture
def pair(rng):
    return smooth_image(rng, 32, 40), rng.random((36, 36, 3)).astype(np.float32)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_losses_fall_and_image_stays_in_range(small_weights, pair, optimizer):
    content, style = pair
    cfg = _config(steps=15, optimizer=optimizer, lr=0.05)
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False)
    assert result.steps == 15 and len(result.history["total"]) == 15
    assert result.final["total"] < 0.5 * result.initial["total"]
    assert result.final["style"] < result.initial["style"]
    assert result.image.shape == content.shape
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert not np.allclose(result.image, content)
    # The history starts at the content, and its total is the weighted sum of its terms.
    assert result.history["content"][0] == pytest.approx(0.0, abs=1e-6)
    assert result.history["content"][-1] > 0.0
    h = result.history
    np.testing.assert_allclose(h["total"], h["content"] + h["style"], rtol=1e-5)


def test_vmapped_transfer_equals_the_driver_run(small_weights, rng):
    """The pure form, vmapped over contents and keys, runs element 0 exactly as the host
    driver runs it alone (in chunks of 2 steps), for both optimisers."""
    contents = np.stack([smooth_image(rng, 24, 24), smooth_image(rng, 24, 24)])
    style = rng.random((24, 24, 3)).astype(np.float32)
    network = nst_jax.prepare(small_weights, NetConfig(convolution="direct"))
    for optimizer in ("adam", "lbfgs"):
        cfg = _config(steps=5, optimizer=optimizer, net=NetConfig(convolution="direct"))
        keys = jax.numpy.stack([jax.random.key(cfg.seed), jax.random.key(7)])

        def run(network, content, key, cfg=cfg):
            return nst_jax.transfer(network, content, style, cfg, key=key)

        batched, hist = solve.jit(jax.vmap(run, in_axes=(None, 0, 0)))(network, contents, keys)
        assert batched.shape == contents.shape and hist.shape == (2, 5, 5)
        assert not np.allclose(batched[0], batched[1])
        result = nst_jax.stylize(
            contents[0], style, cfg, weights=small_weights, progress=False, chunk=2
        )
        np.testing.assert_allclose(result.image, batched[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.history["total"], hist[0, :, 0], rtol=1e-4)
    # The network runs as prepared: a config asking for another pooling is refused.
    averaging = nst_jax.prepare(small_weights, NetConfig(pooling="avg", convolution="direct"))
    with pytest.raises(ValueError, match="prepared with avg pooling, the config asks for max"):
        nst_jax.transfer(averaging, contents[0], style, cfg, key=keys[0])


def _convolutions_outside_branches(jaxpr) -> int:
    """Convolutions a program always runs: not those inside a ``cond`` or a ``while``."""
    from jax.extend.core import jaxprs_in_params

    n = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            n += 1
        elif eqn.primitive.name not in ("cond", "while"):
            n += sum(_convolutions_outside_branches(j) for j in jaxprs_in_params(eqn.params))
    return n


@pytest.mark.parametrize("stat", ["gram", "mmd_gauss"])
def test_a_batched_lbfgs_step_reuses_the_line_searchs_gradient(small_weights, stat):
    """Beyond its line search, a batched L-BFGS step runs one forward pass (the terms it
    records): the value and gradient stored at the accepted point are reused behind a
    ``cond`` on one predicate for the batch. A predicate per element made it a
    ``select``, which ran a forward and backward pass every step and threw them away.
    A sampled kernel's restarts on a new sample keep it so."""
    loss = shallow(style_loss=((stat, 1.0),))
    cfg = Config(loss=loss, optimizer="lbfgs", net=NetConfig(convolution="direct"))
    network = nst_jax.prepare(small_weights, cfg.net)
    targets, state, weights = solve.programs.step_shapes(network, (24, 24), cfg, batch=2)
    step = jax.make_jaxpr(solve.programs.batched_step(cfg))(network, targets, state, weights)
    one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), targets)
    image = jax.ShapeDtypeStruct((24, 24, 3), np.float32)
    forward = jax.make_jaxpr(lambda n, x, t: nst_jax.objective.loss_terms(n, x, t, loss))
    expected = _convolutions_outside_branches(forward(network, image, one).jaxpr)
    assert _convolutions_outside_branches(step.jaxpr) == expected > 0


def test_lbfgs_draws_new_sample_positions_every_few_steps(small_weights, rng):
    """With a kernel that samples output positions, L-BFGS keeps one sample for
    ``RESAMPLE_EVERY`` steps and then starts afresh on another: the style reaches more of
    the image in three spans than in one (before, one sample served the whole run and
    the rest of conv1_1 never felt the style). The pure ``transfer`` does the same."""
    content = smooth_image(rng, 32, 32)
    style = rng.random((32, 32, 3)).astype(np.float32)
    loss = LossConfig(
        style_layers=("conv1_1",), content_layers=(), content_weight=0.0, tv_weight=0.0,
        style_loss=(("mmd_gauss", 1.0),), mmd_samples=16,
    )  # fmt: skip
    every = solve.solver.RESAMPLE_EVERY
    lbfgs = Config(loss=loss, optimizer="lbfgs")
    assert solve.solver.resamples(lbfgs, (32, 32))  # 1,024 positions, 16 drawn.
    # Where a layer has no more positions than are drawn, all are taken: no restarts.
    assert not solve.solver.resamples(lbfgs.replace(loss=dict(mmd_samples=1024)), (32, 32))

    def moved(steps):
        cfg = Config(loss=loss, optimizer="lbfgs", steps=steps, stop_tol=0.0)
        run = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False)
        return run, (np.abs(run.image - content).max(-1) > 1e-5).mean()

    (_, one), (three, more) = moved(every), moved(3 * every)
    assert 0 < one < 0.5 and more > 2 * one, (one, more)
    cfg = Config(loss=loss, optimizer="lbfgs", steps=3 * every, stop_tol=0.0)
    network = nst_jax.prepare(small_weights)
    pure = jax.jit(lambda n, x, k: nst_jax.transfer(n, x, style, cfg, key=k))
    image, _ = pure(network, content, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(image), three.image, atol=1e-5)


def test_initialisations(pair):
    content, style = pair
    key = jax.random.key(3)
    assert np.array_equal(solve.initial_image(content, style, "content", key=key), content)
    noise = np.asarray(solve.initial_image(content, style, "noise", key=key))
    assert noise.shape == content.shape and 0 <= noise.min() and noise.max() <= 1
    assert noise.std() > 0.2
    again = solve.initial_image(content, style, "noise", key=jax.random.key(3))
    np.testing.assert_array_equal(noise, again)
    styled = np.asarray(solve.initial_image(content, style, "style", key=key))
    assert styled.shape == content.shape
    np.testing.assert_allclose(styled.mean(axis=(0, 1)), style.mean(axis=(0, 1)), atol=0.02)


def test_seeds_make_noise_runs_reproducible(small_weights, pair):
    content, style = pair

    def run(seed):
        cfg = _config(steps=3, init="noise", seed=seed)
        return nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False).image

    a, b = run(1), run(1)
    compiled = solve.programs.compiled_programs
    c = run(2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # The seed reaches the programs as keys: another seed compiles nothing.
    assert solve.programs.compiled_programs == compiled


def test_other_term_weights_compile_nothing_and_count(small_weights, pair):
    """The terms' weights reach the programs as arguments: a loop over β compiles once,
    and each run optimises its own β (as a run compiled afresh for it does)."""
    content, style = pair

    def run(**loss):
        cfg = _config(steps=3, loss=shallow(tv_weight=0.0, **loss))
        return nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False)

    run(style_weight=1.0, alpha_norm_weight=1.0)
    compiled = solve.programs.compiled_programs
    other = run(style_weight=8.0, alpha_norm_weight=3.0, content_weight=0.5)
    assert solve.programs.compiled_programs == compiled
    solve.programs._COMPILED.clear()
    fresh = run(style_weight=8.0, alpha_norm_weight=3.0, content_weight=0.5)
    assert solve.programs.compiled_programs > compiled
    np.testing.assert_array_equal(other.image, fresh.image)
    np.testing.assert_array_equal(other.history["total"], fresh.history["total"])
    assert not np.allclose(run(style_weight=1.0, alpha_norm_weight=1.0).image, other.image)


def test_callback_and_ctrl_c_keep_finished_work(small_weights, pair):
    content, style = pair
    seen = []

    def callback(step, image, losses):
        seen.append((step, image.copy()))
        if step == 4:
            raise KeyboardInterrupt

    result = nst_jax.stylize(
        content,
        style,
        _config(steps=10),
        weights=small_weights,
        progress=False,
        chunk=2,
        callback=callback,
    )
    assert [s for s, _ in seen] == [2, 4]
    assert result.interrupted and result.steps == 4 and result.failure is None
    np.testing.assert_array_equal(result.image, seen[-1][1])
    assert len(result.history["total"]) == 4


def test_a_loss_that_overflows_stops_at_the_last_finite_image(small_weights, pair):
    """A style weight whose product with the style loss leaves float32's range stops
    the run, says which term, and keeps the image of the last finite chunk."""
    content, style = pair
    # Gatys's absolute style loss is large enough to overflow; a relative one is ~1.
    cfg = _config(steps=6, loss=shallow(style_weight=3e38, style_norm="gatys"))
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False, chunk=2)
    assert result.failure is not None and "style weight x style loss" in result.failure
    assert result.steps == 0 and np.all(np.isfinite(result.image))
    np.testing.assert_array_equal(result.image, content)  # Nothing finite was reached.
    message = driver.nonfinite_message(
        np.array([[np.inf, 1.0, np.nan, 0.0, 0.0]], np.float32), LOSS.term_weights
    )
    assert message == "the style loss became nan"


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_a_gradient_that_overflows_stops_the_run(small_weights, pair, optimizer):
    """A weight whose loss stays in float32's range but whose gradient leaves it (Adam's
    g², L-BFGS's inner products) stops the run and says so, where before every step was
    a silent no-op and the content came back as the result."""
    content, style = pair
    cfg = _config(steps=4, optimizer=optimizer, loss=shallow(style_weight=1e37))
    result = nst_jax.stylize(content, style, cfg, weights=small_weights, progress=False, chunk=2)
    assert np.isfinite(result.initial["total"]) and result.initial["total"] > 1e36
    assert result.failure is not None and result.steps == 0, result.failure
    assert "the gradient overflowed float32 (style weight x style loss is" in result.failure


def test_the_stopping_rule_ends_the_run_where_the_loss_stops_falling(small_weights, pair):
    """With ``stop_tol``, the run ends at the first host sync where the lowest total so
    far fell by less than that fraction over the window, and not at a sync before."""
    content, style = pair
    run = functools.partial(
        nst_jax.stylize, content, style, weights=small_weights, progress=False, chunk=2
    )
    capped = run(_config(steps=30, stop_tol=0.0))
    assert capped.steps == 30 and not capped.converged
    stopped = run(_config(steps=30, stop_tol=0.3, stop_window=4))
    n, h = stopped.steps, stopped.history["total"]
    assert stopped.converged and 4 <= n < 30 and len(h) == n

    def best(d):  # The lowest total after d steps: h[i] is the loss after i steps.
        return h[: max(d, 1)].min()

    assert best(n - 4) - best(n) < 0.3 * best(n)
    assert all(best(d - 4) - best(d) >= 0.3 * best(d) for d in range(4, n, 2))
    np.testing.assert_array_equal(h, capped.history["total"][:n])  # Same run, cut short.


def test_converged_waits_for_every_image_in_the_batch():
    config = Config(stop_tol=0.1, stop_window=2)
    done = [0, 2, 4]
    flat = [np.array([10.0, 10.0]), np.array([5.0, 9.0]), np.array([4.9, 8.95])]
    assert driver.converged(flat, done, config)
    falling = [*flat[:2], np.array([4.9, 7.0])]
    assert not driver.converged(falling, done, config)
    assert not driver.converged(flat[:2], done[:2], config)  # Still falling by half.
    assert not driver.converged(flat[:1], done[:1], config)  # No window yet.
    assert not driver.converged(flat, done, Config(stop_tol=0.0))
    np.testing.assert_array_equal(driver.converged_each(falling, done, config), [True, False])


def test_a_batch_stops_once_each_image_has_met_the_rule(small_weights, rng):
    """An image that met the stopping rule at an earlier sync counts as met: the batch
    stops when the last one meets it, not only when all meet it at one sync."""
    content = np.stack([smooth_image(rng, 24, 24), rng.random((24, 24, 3)).astype(np.float32)])
    style = rng.random((32, 32, 3)).astype(np.float32)
    config = _config(steps=100, stop_tol=0.05, stop_window=10)
    run = functools.partial(nst_jax.stylize, weights=small_weights, progress=False, chunk=5)
    alone = [run(c, style, config).steps for c in content]
    batch = nst_jax.stylize_batch(
        content, style, config, seeds=[config.seed] * 2, weights=small_weights,
        progress=False, chunk=5,
    )  # fmt: skip
    assert alone[0] != alone[1] and batch.steps == max(alone), (alone, batch.steps)


def test_adam_rate_halves_every_half_life_down_to_a_tenth():
    opt = solve.solver.make_optimizer(Config(lr=0.1, lr_half_life=10))
    x = jnp.zeros(2)
    state, sizes = opt.init(x), []
    for _ in range(60):  # A constant gradient: Adam's step is its rate.
        updates, state = opt.update(jnp.ones(2), state, x)
        sizes.append(-float(updates[0]))
    np.testing.assert_allclose([sizes[0], sizes[10], sizes[20], sizes[59]],
                               [0.1, 0.05, 0.025, 0.01], rtol=1e-3)  # fmt: skip


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(steps=-1), "steps"),
        (dict(optimizer="sgd"), "optimizer"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("inf")), "finite"),
        (dict(init="banana"), "init"),
        (dict(linesearch="exact"), "linesearch"),
        (dict(stop_tol=-0.1), "stop_tol"),
        (dict(lr_half_life=float("nan")), "lr_half_life"),
        (dict(stop_window=0), "stop_window"),
    ],
)
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        Config(**kw)


@pytest.mark.parametrize("remat", [False, True])
def test_the_step_lowers_for_gpu(remat):
    """No GPU runs these tests: lowering the step for CUDA at least shows that every
    operation in it, remat's strips included, has a GPU lowering."""
    from .test_remat import full_network

    config = Config(net=NetConfig(convolution="direct", remat=remat))
    lowered = solve.lower_step(full_network(remat=remat), (96, 128), config, platforms=("cuda",))
    text = lowered.as_text()
    assert "stablehlo.convolution" in text
    assert ("stablehlo.while" in text) == remat  # The strips are loops.
