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
    """Join the job's process group (once per process), after taking this rank's GPU in a CUDA run.

    The device is set first, before any collective (object collectives included): NCCL builds its communicator
    on the current device, and a rank that has not set its own would take cuda:0 with every other rank."""
    import torch.distributed as dist

    place = world()
    if not place.active:
        return place
    device = rank_device(device, place)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return place
    backend = process_group_backend(device)
    dist.init_process_group(backend=backend)
    logger.debug("rank %d of %d joined the process group (%s)", place.rank, place.size, backend)
    return place


def process_group_backend(device: torch.device) -> str:
    """The process group's backends: gloo for CPU training; for CUDA, gloo for CPU tensors and NCCL for CUDA ones.

    Why both on CUDA: NCCL takes CUDA tensors only (torch registers it for "cuda" alone), and what this module
    reduces (per-epoch sums, example counts, finite flags) and gathers (RNG states, per-example results, the
    decisions rank 0 sends) lives on the CPU. With "cpu:gloo,cuda:nccl" torch sends each tensor to the backend of
    its device: DDP's gradients to NCCL, these float64 sums to gloo, exactly as a CPU run adds them (the same
    numbers on both, and the CPU path unchanged: gloo alone); object collectives and barriers go to gloo too
    (torch prefers the CPU backend of a group that has one), so no pickled buffer travels through a GPU.
    Moving the sums to the GPU instead would add a host-device copy and a sync for a few numbers per step."""
    if device.type == "cuda":
        cuda = _cuda_backend()
        if cuda is not None:
            return f"cpu:gloo,cuda:{cuda}"
    return "gloo"


def _cuda_backend() -> str | None:
    """The backend for CUDA tensors: NCCL where this torch has it (else gloo alone, which also takes them)."""
    import torch.distributed as dist

    return "nccl" if dist.is_nccl_available() else None


def shutdown() -> None:
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # Objects of the finished command that hold the process group (a DDP wrapper's reducer, in a reference
        # cycle) are freed now, while the interpreter is whole: freed during its finalisation instead, gloo's
        # threads can abort the process ("terminate called without an active exception", seen rarely on a rank
        # after its run had finished; pytorch/pytorch#179291 describes the same exit race).
        gc.collect()
        dist.destroy_process_group()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_sum(values: list[float]) -> list[float]:
    """The sums over ranks of each value, in float64 (exact for the counts, one rounding for the losses)."""
    if not _active():
        return list(values)
    import torch.distributed as dist

    # a CPU tensor, which the group's gloo backend adds (also in a CUDA run: process_group_backend says why)
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


# ---- the trainer's rank bookkeeping (training/trainer.py) -----------------------------------------------
def rank_device(device: torch.device, place: World) -> torch.device:
    """In a distributed CUDA run, each process of a machine takes the GPU of its local rank (`init` sets it as
    the current device, before any collective)."""
    if place.active and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", place.local_rank % max(torch.cuda.device_count(), 1))
    return device


def lost_peer(exc: RuntimeError) -> bool:
    """A collective that failed because another process of the job died (gloo reports a plain RuntimeError)."""
    text = str(exc)
    return isinstance(exc, torch.distributed.DistError) or "gloo" in text or "Connection reset" in text \
        or "Connection closed" in text or "NCCL" in text


def rank_block(dataset, place: World):
    """This rank's contiguous block of a split (the whole split in one process): evaluated once, no padding."""
    if not place.active:
        return dataset
    from torch.utils.data import Subset

    return Subset(dataset, shard(len(dataset), place))


def reduce_sums(sums: dict, place: World) -> dict:
    """Evaluation or epoch sums added over the ranks (ints stay ints; other values are this rank's)."""
    if not place.active:
        return sums
    keys = [k for k, v in sums.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not keys:
        return sums
    totals = all_sum([float(sums[k]) for k in keys])
    out = dict(sums)
    for key, total in zip(keys, totals):
        out[key] = int(round(total)) if isinstance(sums[key], int) else total
    return out


def gather_rows(mine: torch.Tensor, place: World) -> torch.Tensor:
    """The ranks' (N_r, ...) blocks joined in rank order (this rank's block in one process)."""
    return torch.cat(gather(mine.cpu()) if place.active else [mine])  # a pickled CUDA tensor keeps its GPU


def loss_share(n: int, place: World) -> float | None:
    """This rank's loss weight for a step: n / (global n / world size), so that DDP's mean of the ranks' gradients
    is the global batch's; None when some rank has no readable example (no rank can step without it)."""
    if not place.active:
        return 1.0
    total, empty = all_sum([n, n == 0])
    if empty:
        return None
    return n * place.size / total


def all_finite(finite: bool, place: World) -> bool:
    """True when the loss is finite on every rank: one rank's NaN stops (or skips) the step on all of them."""
    if not place.active:
        return finite
    return all_sum([not finite])[0] == 0


def average_gradients(params: list, place: World) -> None:
    """The ranks' mean gradient in each of `params` (parameters outside the DDP wrapper: a strategy's domain
    discriminator), as DDP averages the model's; a parameter without a gradient counts as zeros."""
    if not place.active or not params:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(place.size)


def share_strategy_state(strategy, place: World) -> None:
    """Rank 0's strategy state on every rank (EWC's Fisher is computed once, not once per rank)."""
    if not place.active:
        return
    state = broadcast({k: v.cpu() for k, v in strategy.state_dict().items()} if place.is_main else None)
    if not place.is_main:
        strategy.load_state_dict(state)


def rank_rng_states(place: World, device: torch.device | None = None) -> dict:
    """Every rank's generators, for rank 0's checkpoint: the other ranks' CPU generators ("rank<r>.torch"; rank
    0's own is the checkpoint's "torch") and, in a CUDA run, each rank's generator of its own GPU ("rank<r>.cuda",
    rank 0's included): every rank's dropout stream. Empty in one process (the checkpoint holds its own)."""
    if not place.active:
        return {}
    mine = {"torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    out = {}
    for r, states in enumerate(gather(mine)):
        out.update({f"rank{r}.{k}": v for k, v in states.items() if r > 0 or k != "torch"})
    return out


def restore_rng_states(rng: dict, place: World, device: torch.device | None, trained_on: int) -> None:
    """This rank's own generators from a checkpoint's `rng` (rank_rng_states' keys, and "torch" / "cuda<i>" as
    one process saves them), when the run was trained on as many processes (`trained_on`); on another number
    the other ranks' streams cannot be the same anyway, and only a one-process run's own are set."""
    same = trained_on == place.size
    own = rng["torch"] if place.rank == 0 else rng.get(f"rank{place.rank}.torch")
    if own is not None and same:
        torch.set_rng_state(own)
    if place.active:
        cuda = rng.get(f"rank{place.rank}.cuda")
        if cuda is not None and same and device is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda, device)
        return
    cuda_states = [rng[k] for k in sorted((k for k in rng if k.startswith("cuda")), key=lambda k: int(k[4:]))]
    if cuda_states and torch.cuda.is_available():  # a CPU machine resuming a GPU run has none to set
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])


def batch_in_other_world(batch_in_epoch: int, batch_size: int, before: int, place: World) -> int:
    """A run continued on another number of processes: the same seeded example order, in global batches of
    another size; an epoch interrupted inside goes on from the batch that holds its next example."""
    done = batch_in_epoch * batch_size * before
    logger.warning("--resume: the run was trained on %d process(es), now %d: the global batch goes from %d to %d "
                   "examples (the learning rate is not rescaled), so steps per epoch, the schedule and the "
                   "other ranks' dropout streams change; the result is not the uninterrupted run's",
                   before, place.size, batch_size * before, batch_size * place.size)
    return done // (batch_size * place.size)


class Wrapper:
    """The DistributedDataParallel wrapper of a model, for the parameters that train now: built again when a
    strategy changes that set (a gradual_unfreeze or lp_ft phase), because DDP only reduces the parameters that
    required gradients when it was built. In one process there is none: `module` is None."""

    def __init__(self):
        self.module = None
        self._training: frozenset[str] | None = None

    def update(self, model, device: torch.device, strategy) -> None:
        training = frozenset(n for n, p in model.named_parameters() if p.requires_grad)
        if training == self._training:
            return
        if not training:
            raise ConfigError(f"{strategy.spec()} trains no parameter in this epoch: nothing to distribute")
        if self._training is not None:
            logger.info("the trainable set changed (%d -> %d tensors): DistributedDataParallel rebuilt for it",
                        len(self._training), len(training))
        # PEFT methods can leave trainable adapters outside the forward pass (a LoRA target the pooling skips,
        # peft#899): DDP then has to look for parameters that got no gradient.
        self.module = wrap(model, device, find_unused_parameters=_may_leave_unused(strategy))
        self._training = training


def _may_leave_unused(strategy) -> bool:
    from transferlab.strategies.peft_methods._base import PeftStrategy

    parts = getattr(strategy, "parts", [strategy])
    return any(isinstance(part, PeftStrategy) for part in parts)
