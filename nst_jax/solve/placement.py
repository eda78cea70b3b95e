"""Where a batch's arrays live: its batch axis sharded over a device mesh, the rest
replicated, on one host or several.

``Placement(mesh)`` puts each process's local share of a batch into one global array
(``jax.make_array_from_process_local_data``), puts what every element shares (the
network, the styles) on every device, and reads back the local share of a result. The
compiled programs take these shardings at the one compile point (``programs.py``); the
step is the same program, placed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def mesh_of(devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``devices`` of each process's devices (all of them by
    default), in process order, with the batch axis ``"data"``.

    Raises:
      ValueError: more devices asked for than a process has.
    """
    local = jax.local_device_count()
    if devices is not None and not 1 <= devices <= local:
        raise ValueError(f"--devices must be between 1 and {local} here, got {devices}")
    n = devices or local
    chosen = [
        d
        for p in range(jax.process_count())
        for d in [x for x in jax.devices() if x.process_index == p][:n]
    ]
    return Mesh(np.array(chosen), (AXIS,))


def _place(sharding: NamedSharding, x) -> jax.Array:
    """``x``, this process's part of a global array of ``sharding``. PRNG keys travel
    as their raw data."""
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _place(sharding, np.asarray(jax.random.key_data(x)))
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))


@dataclasses.dataclass(frozen=True)
class Placement:
    """A batch axis over ``mesh``'s devices; see the module docstring."""

    mesh: Mesh

    @property
    def batch(self) -> NamedSharding:
        return NamedSharding(self.mesh, P(AXIS))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    @property
    def local_devices(self) -> int:
        """This process's devices in the mesh: its share of a batch is a multiple."""
        return sum(d.process_index == jax.process_index() for d in self.mesh.devices.flat)

    def batched(self, tree):
        """This process's share ``[b, ...]`` of every leaf, as global ``[b * P, ...]``
        arrays sharded along the batch axis."""
        return jax.tree.map(lambda x: _place(self.batch, x), tree)

    def shared(self, tree):
        """Every leaf on every device of the mesh (each process holds the same values)."""
        return jax.tree.map(lambda x: _place(self.replicated, x), tree)

    def local(self, x: jax.Array) -> np.ndarray:
        """This process's share of a batch-sharded array, in batch order."""
        if x.is_fully_addressable:
            return np.asarray(x)
        shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
        starts, parts = set(), []
        for shard in shards:  # A shard may be replicated over devices: keep it once.
            start = shard.index[0].start or 0
            if start not in starts:
                starts.add(start)
                parts.append(np.asarray(shard.data))
        return np.concatenate(parts)


def gathered(values: np.ndarray | Sequence[bool]) -> np.ndarray:
    """``[processes, ...]``: every process's ``values`` (the same shape on each; flags
    travel as int32), by process index. A collective: every process calls it at the same
    point. On one process it is free."""
    values = np.asarray(values)
    if values.dtype == bool:
        values = values.astype(np.int32)
    if jax.process_count() == 1:
        return values[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values))


class PeerFailed(ValueError):
    """Another process of the job failed; its own error says why."""


def raise_together(error: Exception | None, flags: Sequence[bool] = ()) -> np.ndarray:
    """A collective that agrees on failure: ``error`` (this process's, or None) travels
    with ``flags``, and where any process had one, every process raises: its own error
    where it had one, ``PeerFailed`` elsewhere. So an error on one host (a memory
    refusal, a full disk) stops the others at the same point, where before they waited
    for it in their next collective for good. Returns ``[processes, len(flags)]``, every
    process's flags, where none failed."""
    everyone = gathered([error is not None, *flags])
    if error is not None:
        raise error
    if everyone[:, 0].any():
        raise PeerFailed("another process of the job failed (its own error says why)")
    return everyone[:, 1:]


@contextlib.contextmanager
def failing_together(active: bool = True):
    """Runs the block; where ``active``, an error in it on any process is raised on every
    process as the block ends (``raise_together``), so that none goes on alone to a
    collective the failed one never reaches. A collective where ``active``."""
    error = None
    try:
        yield
    except Exception as e:  # noqa: BLE001 - raised below, on every process.
        if not active:
            raise
        error = e
    if active:
        raise_together(error)
