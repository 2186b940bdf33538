"""One run on several processes: torch.distributed's process group and the few collectives the trainer needs.

transferlab adds no communication of its own: gradients are averaged by torch's DistributedDataParallel, and what
is reduced here are per-epoch sums (loss, correct, examples) and the step's example count. A process learns its
place from the variables `torchrun` sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); without them it
is a world of one, and every function here does what a single process needs (nothing).

How the data is split (training/trainer.py): every rank draws the same seeded permutation and cuts it into
global batches of `batch_size x world size` (the single-process batches when the world is one); rank r trains on
rows r, r + W, r + 2W, ... of each global batch. Each rank's loss is weighted by its share of the global batch,
so DDP's average of the ranks' gradients is the gradient of the global batch's mean loss: the same update as one
process with the global batch, also when the last batch does not divide evenly.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from transferlab.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place, from torchrun's environment variables (a world of one without them)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} and WORLD_SIZE {size} do not describe a process of a job")
    return World(rank, size, local)


def is_main_process() -> bool:
    return world().is_main


def init(device: torch.device) -> World:
    """Join the job's process group (once per process): gloo for CPU training, NCCL for CUDA."""
    import torch.distributed as dist

    place = world()
    if not place.active or dist.is_initialized():
        return place
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        backend = "gloo"
    dist.init_process_group(backend=backend)
    logger.debug("rank %d of %d joined the process group (%s)", place.rank, place.size, backend)
    return place


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(values: list[float]) -> list[float]:
    """The sums over ranks of each value, in float64 (exact for the counts, one rounding for the losses)."""
    if not _active():
        return list(values)
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast(obj, src: int = 0):
    """Rank `src`'s picklable object on every rank (torch pickles it between this job's own processes)."""
    if not _active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj) -> list:
    """Every rank's object, in rank order, on every rank."""
    if not _active():
        return [obj]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()


def shard(n: int, place: World) -> range:
    """The contiguous block of range(n) that `place` evaluates: every example exactly once, none padded."""
    per, extra = divmod(n, place.size)
    start = place.rank * per + min(place.rank, extra)
    return range(start, start + per + (1 if place.rank < extra else 0))


def wrap(model, device: torch.device, find_unused_parameters: bool):
    """DistributedDataParallel over `model`'s parameters that require gradients now. DDP fixes that set when it
    is built (pytorch#22049), so the trainer builds a new wrapper whenever a strategy changes it."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
