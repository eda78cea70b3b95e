"""The processes of a multi-host job: joining them (``jax.distributed``), whether the
environment is a cluster that JAX joins by itself, and agreeing on the work before any of
it runs, so that no process is left waiting in a collective for the others."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Sequence
from typing import Any

import jax
import numpy as np

from nst_jax.solve.placement import gathered


def connect(
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``):
    with no arguments JAX finds the cluster itself (TPU pods, SLURM, ...); on CPUs the
    processes talk through gloo. Call it before anything else touches JAX's devices."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )


def in_cluster() -> bool:
    """Whether the environment says this process is one of several that JAX can join
    without being told how: a SLURM job step of several tasks (``srun``; not a shell of
    an ``salloc -n4`` or ``sbatch -n4`` allocation, where one process runs), or a TPU
    pod slice."""
    slurm = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1
    pod = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return slurm or pod


DIFFERENT_CONTENTS = (
    "the processes see different contents (a file added, changed or unreadable on some"
    " hosts); make the folder the same on every host and run again"
)


def agree(view: Any, problem: str | None = None, *, differs: str = DIFFERENT_CONTENTS) -> None:
    """A collective every process calls with its ``view`` of the work (anything with a
    stable ``repr``), or the ``problem`` that stopped it: all raise together where one
    has a problem or the views differ, and none is left waiting for the others.

    Each host reads the files itself: a file added, changed or unreadable on one would
    have them split different lists (images run twice, or never)."""
    digest = np.frombuffer(hashlib.sha256(repr(view).encode()).digest(), np.uint8)
    everyone = gathered(np.append(digest, np.uint8(problem is not None)))
    if problem is not None:
        raise ValueError(problem)
    if everyone[:, -1].any():
        raise ValueError("another process refused this job (its own error says why)")
    if not np.all(everyone == everyone[0]):
        raise ValueError(differs)


def check_agreement(contents: Sequence, shapes: Sequence, todo: Collection | None = None) -> None:
    """``agree`` on the contents, the shapes each process read from them, and the
    elements ``todo`` (all if None): a process given another list would plan other
    batches, and wait in a collective the others never reach."""
    seen = [(str(c) if isinstance(c, (str, os.PathLike)) else np.shape(c), s)
            for c, s in zip(contents, shapes, strict=True)]  # fmt: skip
    agree(seen)
    agree(
        None if todo is None else sorted((int(i), int(c)) for i, c in todo),
        differs="the processes were given different elements to do (todo)",
    )
