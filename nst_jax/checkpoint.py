"""A generator's checkpoints: its arrays through orbax-checkpoint (never pickle), beside
a JSON record of what made them.

A model folder holds orbax's step folders (``100/``, ``200/``, the last ``KEEP``). Each
is committed atomically by orbax: written under a temporary name, renamed when whole;
an interrupted save leaves the earlier steps as they were. Each step holds ``state``
(the arrays: step, params, batch statistics, optimiser state) and ``meta``: the
format, the architecture (``GeneratorConfig``), the training settings, the style
image's SHA-256 and the VGG weights' SHA-256, so that a checkpoint is applied only with
its own architecture, and resumed only by its own training; and the arrays' own SHA-256,
so that a damaged step is known (``load`` then takes the one kept before it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from nst_jax.progress import say

FORMAT = "nst_jax.generator/2"
# Format 1's generators carried biases that normalisation cancels; they still apply
# (``GeneratorConfig.legacy_biases``), and ``read_meta`` says so in the meta it returns.
LEGACY_FORMAT = "nst_jax.generator/1"
KEEP = 2  # Step folders kept: the last, and one before it in case the last is damaged.


class Damaged(ValueError):
    """A checkpoint's files do not read, or its arrays are not the ones saved."""


def tree_hash(tree: Any) -> str:
    """SHA-256 of a pytree's arrays: names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        x = np.ascontiguousarray(x)
        digest.update(f"{jax.tree_util.keystr(path)} {x.shape} {x.dtype}".encode())
        digest.update(x.tobytes())
    return digest.hexdigest()


def _manager(directory: Path, *, create: bool):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(
        max_to_keep=KEEP, create=create, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(directory.resolve(), options=options, item_names=("state", "meta"))


def save(directory: str | os.PathLike, step: int, state: Any, meta: dict) -> None:
    """Writes ``state`` (a pytree of arrays) and ``meta`` as step ``step``, atomically;
    a step already saved is left as it is (a step's state is the same each time; a
    damaged one a resume went back past is gone: ``load(..., remove_damaged=True)``)."""
    import orbax.checkpoint as ocp

    manager = _manager(Path(directory), create=True)
    if step in manager.all_steps():  # Saved already (a signal right after a save, say).
        manager.close()
        return
    meta = {"format": FORMAT, **meta, "shapes": _shapes(state), "arrays_sha256": tree_hash(state)}
    manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    manager.wait_until_finished()
    manager.close()


def _shapes(tree: Any) -> list:
    """Every leaf's ``[shape, dtype]``, in tree order: what a restore must match."""
    return [[list(x.shape), str(x.dtype)] for x in jax.tree.leaves(tree)]


def _steps(directory: Path) -> list[int]:
    """The steps saved in ``directory`` (none if it is not a folder)."""
    if not directory.is_dir():
        return []
    manager = _manager(directory, create=False)
    steps = list(manager.all_steps())
    manager.close()
    return steps


def latest_step(directory: str | os.PathLike) -> int | None:
    """The last step saved in ``directory``; None if it holds no checkpoint."""
    return max(_steps(Path(directory)), default=None)


def read_meta(directory: str | os.PathLike, step: int | None = None) -> tuple[int, dict]:
    """``(step, meta)`` of the last (or the given) checkpoint in ``directory``.

    Raises:
      ValueError: no checkpoint there, or not one of this package's.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    step = latest_step(directory) if step is None else step
    if step is None:
        raise ValueError(f"no checkpoint in {directory} (train one with --mode train)")
    try:
        manager = _manager(directory, create=False)
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as e:  # noqa: BLE001 - damaged or foreign files fail in many ways.
        raise Damaged(
            f"{directory} is not a readable nst_jax checkpoint ({e.__class__.__name__})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise ValueError(f"{directory} holds no nst_jax generator checkpoint")
    if meta["format"] == LEGACY_FORMAT and isinstance(meta.get("generator"), dict):
        meta["generator"] = {**meta["generator"], "legacy_biases": True}
    return step, meta


def restore(directory: str | os.PathLike, step: int, like: Any) -> Any:
    """The arrays of step ``step``, in the structure, shapes and dtypes of ``like``.

    Raises:
      ValueError: the arrays do not fit ``like`` (another architecture) or are damaged.
    """
    import orbax.checkpoint as ocp

    _, meta = read_meta(directory, step)
    if meta.get("shapes") != _shapes(like):  # Checked first: orbax would fail noisily.
        raise ValueError(f"the checkpoint in {directory} does not fit this generator")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
        manager = _manager(Path(directory), create=False)
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            ).state
        finally:
            manager.close()
    except Exception as e:  # noqa: BLE001 - the shapes fit: its files are damaged.
        raise Damaged(
            f"the checkpoint of step {step} in {directory} is damaged ({e.__class__.__name__})"
        ) from None
    got = jax.tree.map(lambda x: (x.shape, x.dtype), restored)
    want = jax.tree.map(lambda x: (x.shape, x.dtype), abstract)
    if jax.tree.structure(got) != jax.tree.structure(want) or got != want:
        raise ValueError(f"the checkpoint in {directory} does not fit this generator")
    if "arrays_sha256" in meta and tree_hash(restored) != meta["arrays_sha256"]:
        raise Damaged(
            f"the checkpoint of step {step} in {directory} is damaged: its arrays are not"
            " the ones saved"
        )
    return restored


class _Held:
    """What ``_held_stderr`` holds: passed on when the block ends unless ``drop``."""

    drop = False


@contextlib.contextmanager
def _held_stderr():
    """Holds what is written to file descriptor 2 inside the block, and passes it on
    after it unless the block set ``drop`` (then a damaged checkpoint was met: orbax's
    reader threads print a traceback each, "Event loop is closed", some while the next
    step is read, after the error that says what happened). Holds nothing where there
    is no descriptor 2 to hold."""
    held = _Held()
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # Closed: nothing to hold.
        saved = None
    if saved is None:
        yield held
        return
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), 2)
        try:
            yield held
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not held.drop:
                file.seek(0)
                with open(2, "wb", closefd=False) as stderr:  # Writes it all.
                    stderr.write(file.read())


_READER = "_read_array_index_and_device_put"  # orbax's coroutine that reads an array.


def _quiet_damaged_readers() -> None:
    """Once a damaged step was read: orbax leaves a reader coroutine per array behind,
    and each prints a traceback when it is finalised, later ("Exception ignored in
    <coroutine _read_array_index_and_device_put>"). Those alone are dropped, for the
    rest of the process; every other unraisable exception is reported as before."""
    previous = sys.unraisablehook
    if getattr(previous, "quiets", None) == _READER:
        return

    def hook(unraisable):
        if getattr(unraisable.object, "__qualname__", "").endswith(_READER):
            return
        previous(unraisable)

    hook.quiets = _READER
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_not_a_damaged_read)  # Their gathered futures.


def _not_a_damaged_read(record: logging.LogRecord) -> bool:
    """False for asyncio's "exception was never retrieved" about a damaged read."""
    error = record.exc_info[1] if record.exc_info else None
    return "Encountered error while reading array index" not in f"{record.getMessage()} {error!r}"


def load(
    directory: str | os.PathLike, like: Callable[[dict], Any], *, remove_damaged: bool = False
) -> tuple[int, dict, Any]:
    """``(step, meta, arrays)`` of the last checkpoint in ``directory`` that reads whole,
    its arrays in the structure of ``like(meta)`` (which may refuse the meta with a
    ValueError). An earlier kept step stands in for a damaged later one (a disk error,
    a copy cut short), with a note: ``KEEP`` keeps one for this. ``remove_damaged``:
    delete the damaged later ones, for training, which will write their steps anew.

    Raises:
      ValueError: no checkpoint there; ``like`` refused the last one; or every kept
        step is damaged (``Damaged``, the last one's).
    """
    directory = Path(directory)
    damaged, found, passed = None, None, []
    with _held_stderr() as held:
        for step in sorted(_steps(directory), reverse=True) or [None]:
            try:
                step, meta = read_meta(directory, step)
                found = step, meta, restore(directory, step, like(meta))
                break
            except Damaged as e:
                damaged, held.drop = damaged or e, True  # And orbax's noise about it,
                passed.append(step)
                _quiet_damaged_readers()  # now and later.
    if found is None:
        raise damaged
    if damaged is not None:
        if remove_damaged:
            manager = _manager(directory, create=False)
            for step in passed:
                manager.delete(step)
            manager.close()
        say(
            f"note: {damaged}; using step {found[0]}, kept before it"
            + (" (the damaged one is removed: training writes its step anew)" * remove_damaged)
        )
    return found


def differences(there, here) -> str:
    """The recorded settings that differ from the asked ones, as `` (name: recorded
    there, asked now; ...)``, at most three; empty unless both are dicts."""

    def walk(a, b, prefix):
        for name in sorted(set(a) | set(b)):
            x, y = a.get(name), b.get(name)
            if isinstance(x, dict) and isinstance(y, dict):
                yield from walk(x, y, f"{prefix}{name}.")
            elif x != y:
                yield f"{prefix}{name}: {x} there, {y} now"

    if not (isinstance(there, dict) and isinstance(here, dict)):
        return ""
    found = list(walk(there, here, ""))[:3]
    return f" ({'; '.join(found)})" if found else ""
