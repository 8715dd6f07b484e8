"""Many devices: `ens predict` under torch.distributed.

Started by torchrun (``torchrun --nproc-per-node 2 -m ensembler predict --model …``, or
``ens predict --devices cuda:0,cuda:1``, which launches the same through
``torch.distributed.run``), every rank runs the whole predict flow on its shard of the split's
images and rank 0 writes each prediction set once:

- the shard is every ``world``-th image from the rank's index, as
  ``DistributedSampler(shuffle=False)`` orders them but without its padding (which repeats
  images to even the shards out): no image twice, none dropped, and each row keeps its index, so
  rank 0 puts the rows back in the split's order;
- a rank that fails (a bad image in its shard, out of memory) does not leave the others
  waiting: after the pass every rank reports, and if any failed, all raise the same one-line
  error and nothing is written (`agree`);
- rank 0 gathers the shards' outputs (``gather_object``: numpy arrays, over gloo on CPU or NCCL
  on CUDA) and writes; the sets carry the same cache key as a one-device run, with the world
  size in the provenance.

The process group is torch's own (``init_process_group`` from torchrun's environment: gloo on
CPU, NCCL on CUDA), initialised here unless the caller already did.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ensembler.errors import EnsError

AGREE_TIMEOUT_S = 3600  # a rank waits this long for the others' word (a slow shard is not a failure)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (one rank, 0 of 1, when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: Any = None  # the group the ranks agree and gather on (None: the default one)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> np.ndarray:
        """The indices ``(m,)`` of the split's `n` images this rank predicts."""
        return np.arange(self.rank, n, self.size)

    def agree(self, error: str | None) -> None:
        """Every rank says whether it failed; if any did, all raise one `EnsError` naming them."""
        if not self.distributed:
            if error is not None:
                raise EnsError(error)
            return
        errors: list[Any] = [None] * self.size
        dist.all_gather_object(errors, error, group=self.group)
        failed = [(r, e) for r, e in enumerate(errors) if e is not None]
        if failed:
            if len({e for _, e in failed}) == 1 and len(failed) == self.size:
                raise EnsError(failed[0][1])  # the same failure everywhere (a bad checkpoint): say it once
            raise EnsError("; ".join(f"rank {r} of {self.size}: {e}" for r, e in failed))

    def gather(self, rows: np.ndarray, outputs: list[np.ndarray]) -> list[tuple[np.ndarray, list[np.ndarray]]] | None:
        """Rank 0 gets every rank's ``(rows, outputs)``; the others get None."""
        if not self.distributed:
            return [(rows, outputs)]
        received: list[Any] | None = [None] * self.size if self.leader else None
        dist.gather_object((rows, outputs), received, dst=0, group=self.group)
        return received


def assemble(parts: list[tuple[np.ndarray, list[np.ndarray]]], n: int) -> list[np.ndarray]:
    """The gathered shards as full arrays, one per job ``(n, width)``, rows in the split's order."""
    widths = [o.shape[1] for o in parts[0][1]]
    full = [np.empty((n, w), dtype=np.float32) for w in widths]
    seen = np.zeros(n, dtype=bool)
    for rows, outputs in parts:
        seen[rows] = True
        for target, part in zip(full, outputs):
            target[rows] = part
    if not seen.all():
        raise EnsError(f"the ranks' shards missed {int((~seen).sum())} image(s); nothing was written")
    return full


@contextlib.contextmanager
def world(device_type: str) -> Iterator[World]:
    """The ranks of this run: torch.distributed's when torchrun started it (``WORLD_SIZE`` > 1)
    or the caller initialised a group, else one. A group initialised here is destroyed on exit."""
    if dist.is_available() and dist.is_initialized():
        yield World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
        return
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        yield World()
        return
    if not dist.is_available():
        raise EnsError("this torch build has no torch.distributed: run one process")
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend)
    try:
        # on NCCL the ranks still agree on errors and gather rows through gloo, on the host, with
        # a timeout of their own: NCCL's object collectives go through the GPU under a 10-minute
        # watchdog that can abort a rank before the one error line is printed
        group = dist.new_group(backend="gloo", timeout=timedelta(seconds=AGREE_TIMEOUT_S)) if backend == "nccl" else None
        yield World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), group)
        # leave together: a rank that tears its group down while a peer is still writing can take
        # gloo's connection down under it, and that rank aborts after its work is done
        # ("terminate called without an active exception", exit -6)
        dist.barrier(group=group)
    finally:
        dist.destroy_process_group()


def rank_device(dev: torch.device, where: World) -> torch.device:
    """On CUDA each rank takes the GPU of its local rank (torchrun's ``LOCAL_RANK``); more ranks
    on a host than GPUs it shows is refused (two ranks on one GPU make NCCL fail with its own
    message, or worse, share its memory)."""
    if dev.type != "cuda" or not where.distributed:
        return dev
    count = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", where.size))
    if local > count or where.local_rank >= count:
        raise EnsError(f"{local} ranks on this host and {count} GPU(s) visible to them: one rank a GPU (torchrun --nproc-per-node {count}, or ens predict --devices naming {count} GPUs)")
    torch.cuda.set_device(where.local_rank)
    return torch.device("cuda", where.local_rank)


def launch_command(devices: list[str], argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``ens predict --devices cuda:0,cuda:1 …`` as the torchrun command it stands for, and its
    environment: one process per device (``CUDA_VISIBLE_DEVICES`` lists the GPUs named; ``cpu``
    entries are CPU ranks over gloo), each running ``python -m ensembler`` with `argv`."""
    import sys

    if not devices:
        raise EnsError("--devices: name at least one device, e.g. cuda:0,cuda:1")
    kinds = {d.split(":", 1)[0] for d in devices}
    if not kinds <= {"cpu", "cuda"} or len(kinds) > 1:
        raise EnsError(f"--devices {','.join(devices)}: all cuda:N or all cpu")
    env = dict(os.environ)
    if kinds == {"cuda"}:
        indices = [d.split(":", 1)[1] if ":" in d else str(i) for i, d in enumerate(devices)]
        if not all(i.isdigit() for i in indices) or len(set(indices)) != len(indices):
            raise EnsError(f"--devices {','.join(devices)}: name each GPU once, as cuda:N")
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if "CUDA_VISIBLE_DEVICES" in os.environ:  # a scheduler's choice: cuda:N is the N-th GPU it shows, as torch numbers them
            beyond = [i for i in indices if int(i) >= len(visible)]
            if beyond:
                raise EnsError(f"--devices cuda:{beyond[0]}: CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} shows {len(visible)} GPU(s), cuda:0 to cuda:{len(visible) - 1}")
            indices = [visible[int(i)] for i in indices]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(indices)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={len(devices)}", "-m", "ensembler", *argv]
    return command, env
