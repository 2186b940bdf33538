"""The collectives of a CUDA run, checked on a machine without a GPU.

NCCL is registered with torch for CUDA tensors alone (`Backend.backend_capability["nccl"] == ["cuda"]`), and
what training/distributed.py reduces and gathers lives on the CPU. A stand-in shows the difference without a
GPU: a backend registered with `Backend.register_backend(..., devices=["cuda"])` that is gloo underneath, put in
NCCL's place wherever torch.distributed is asked for "nccl". torch refuses CPU tensors on a group of that backend
alone ("No backend type associated with device type cpu"): the group the old `init` built for a CUDA device. The
group `init` builds now, "cpu:gloo,cuda:<NCCL>", sends the CPU tensors to gloo, so the project's reductions,
gathers and broadcasts (and the decision runs.finetune sends) work on it.

Two processes (spawned, gloo on the loopback); CUDA's device calls are recorded instead of made, and each rank's
CUDA generator is a stand-in byte tensor, so that the checkpoint's per-rank CUDA states are checked too. The last
test resumes a real 2-process run and checks that each rank gets its own generator back."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

FAKE = "fake_cuda_only"
WORLD = 2


def _fake_cuda_backend(store, rank, size, timeout):
    import torch.distributed as dist

    return dist.ProcessGroupGloo(store, rank, size, timeout)


def _stand_ins(calls: list, cuda_rng: dict) -> None:
    """In this (spawned) process: the CUDA-only stand-in in NCCL's place, CUDA's device and generator calls
    recorded, the collectives spied on (`calls` gets their names, in order)."""
    import torch.distributed as dist

    dist.Backend.register_backend(FAKE, _fake_cuda_backend, devices=["cuda"])
    real_init = dist.init_process_group

    def init_process_group(backend=None, *args, **kwargs):
        calls.append(("init_process_group", str(backend)))
        return real_init(str(backend).replace("nccl", FAKE), *args, **kwargs)

    dist.init_process_group = init_process_group
    dist.is_nccl_available = lambda: True
    for name in ("broadcast_object_list", "all_gather_object", "all_reduce", "barrier"):
        real = getattr(dist, name)
        setattr(dist, name, lambda *a, _real=real, _name=name, **k: (calls.append((_name,)), _real(*a, **k))[1])
    torch.cuda.device_count = lambda: WORLD
    torch.cuda.set_device = lambda device: calls.append(("set_device", str(torch.device(device))))
    torch.cuda.get_rng_state = lambda device="cuda": cuda_rng[torch.device(device).index].clone()
    torch.cuda.set_rng_state = lambda state, device="cuda": cuda_rng.__setitem__(torch.device(device).index,
                                                                                  state.clone())


def _outcome(fn):
    try:
        return {"ok": fn()}
    except Exception as exc:  # noqa: BLE001  (what failed, for the test's assertions)
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


class _Stop(Exception):
    pass


def _worker(rank: int, ports: tuple[int, int], out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1")
    calls: list = []
    cuda_rng = {rank: torch.full((16,), 50 + rank, dtype=torch.uint8)}
    result: dict = {}
    try:
        _stand_ins(calls, cuda_rng)
        _scenarios(rank, ports, Path(out), calls, cuda_rng, result)
    except Exception as exc:  # noqa: BLE001
        result["crashed"] = f"{type(exc).__name__}: {exc}"
    result["calls"] = calls
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result, default=str))


def _scenarios(rank, ports, out, calls, cuda_rng, result) -> None:
    import torch.distributed as dist

    from transferlab import runs
    from transferlab.training import distributed
    from transferlab.training.checkpoint import load_checkpoint, save_checkpoint

    # 1. a group of the CUDA-only backend alone (what the old init built for a CUDA device): CPU tensors refused
    os.environ["MASTER_PORT"] = str(ports[0])
    dist.init_process_group("nccl")
    result["cuda_only_torch"] = _outcome(lambda: dist.all_reduce(torch.ones(2, dtype=torch.float64)))
    result["cuda_only_all_sum"] = _outcome(lambda: distributed.all_sum([1.0, rank]))
    dist.destroy_process_group()
    calls.clear()

    # 2. runs.finetune up to its rank-0 decision, on a CUDA device: the GPU is set before any collective
    os.environ["MASTER_PORT"] = str(ports[1])
    from transferlab.runs import RunConfig
    from transferlab.training.config import TrainConfig

    def decide(config, out_dir, *args, **kwargs):
        calls.append(("decide",))
        config.train.seed = 4242  # rank 0's decision, which the other rank must receive
        return config, Path(out_dir)

    def prepare(config, *args, **kwargs):
        calls.append(("prepare", config.train.seed))
        raise _Stop()

    runs.resolve_device = lambda name, *a, **k: torch.device("cuda")
    runs.check_run_folder = decide
    runs.prepare = prepare
    config = RunConfig(model="test_efficientnet", data="digits", strategy="full", train=TrainConfig(device="cuda"))
    result["finetune"] = _outcome(lambda: runs.finetune(config, out / "run"))
    result["initialised"] = dist.is_initialized()
    if not dist.is_initialized():
        return
    result["backend"] = str(dist.get_backend())
    result["device_types"] = sorted(d.type for d in dist.group.WORLD._device_types)

    # 3. the project's collectives on that group
    place = distributed.world()
    result["all_sum"] = _outcome(lambda: distributed.all_sum([0.5, rank + 1]))
    result["reduce_sums"] = _outcome(lambda: distributed.reduce_sums({"loss": 1.25, "correct": rank + 2,
                                                                      "flag": True}, place))
    result["loss_share"] = _outcome(lambda: distributed.loss_share(3 + rank, place))
    result["all_finite"] = _outcome(lambda: distributed.all_finite(rank == 0, place))
    result["gather_rows"] = _outcome(lambda: distributed.gather_rows(torch.full((rank + 1,), rank), place).tolist())
    result["broadcast"] = _outcome(lambda: distributed.broadcast({"from": rank}))
    result["gather"] = _outcome(lambda: distributed.gather(rank * 10))
    result["barrier"] = _outcome(lambda: distributed.barrier())

    # 4. every rank's CPU and CUDA generators in rank 0's checkpoint, each rank restoring its own
    device = torch.device("cuda", rank)
    model = torch.nn.Linear(2, 2)  # (its initialisation draws from the generator)
    torch.manual_seed(100 + rank)
    torch.rand(5)
    cpu_before, cuda_before = torch.get_rng_state(), cuda_rng[rank].clone()
    rng = distributed.rank_rng_states(place, device)
    path = out / "last.safetensors"
    if rank == 0:
        save_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1), {"world_size": WORLD}, {},
                        extra_rng=rng)
    distributed.barrier()
    saved = load_checkpoint(path)[4]
    result["rng_keys"] = sorted(saved)
    torch.manual_seed(999)  # both generators elsewhere, as in a new process
    cuda_rng[rank] = torch.zeros(16, dtype=torch.uint8)
    distributed.restore_rng_states(saved, place, device, trained_on=WORLD)
    result["cpu_rng_restored"] = torch.equal(torch.get_rng_state(), cpu_before)
    result["cuda_rng_restored"] = torch.equal(cuda_rng[rank], cuda_before)
    result["cpu_rng_is_rank0s"] = torch.equal(torch.get_rng_state(), saved["torch"])
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("backends")
    context = mp.start_processes(_worker, args=((_free_port(), _free_port()), str(out)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):  # a rank stuck in a collective (a bug) must not hang the suite
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            break
    found = [out / f"rank{r}.json" for r in range(WORLD)]
    assert all(p.is_file() for p in found), "a rank wrote no result (stuck in a collective and killed?)"
    return [json.loads(p.read_text()) for p in found]


def test_a_cuda_only_backend_refuses_cpu_tensors(ranks):
    """The stand-in behaves as NCCL does for CPU tensors: a group of it alone (the old init's) refuses the sums."""
    for result in ranks:
        for key in ("cuda_only_torch", "cuda_only_all_sum"):
            assert "No backend type associated with device type cpu" in result[key].get("error", ""), result[key]


def test_the_process_group_has_a_cpu_backend_beside_nccl(ranks):
    for result in ranks:
        assert "crashed" not in result, result
        assert result["finetune"] == {"error": "_Stop: "}, result["finetune"]
        assert result["backend"] == f"cpu:gloo,cuda:{FAKE}"
        assert result["device_types"] == ["cpu", "cuda"]


def test_reductions_gathers_and_broadcasts_work_on_it(ranks):
    for rank, result in enumerate(ranks):
        assert result.get("all_sum") == {"ok": [1.0, 3.0]}
        assert result.get("reduce_sums") == {"ok": {"loss": 2.5, "correct": 5, "flag": True}}
        assert result.get("loss_share") == {"ok": pytest.approx((3 + rank) * 2 / 7)}
        assert result.get("all_finite") == {"ok": False}  # rank 1's flag stops the step on both
        assert result.get("gather_rows") == {"ok": [0, 1, 1]}
        assert result.get("broadcast") == {"ok": {"from": 0}}
        assert result.get("gather") == {"ok": [0, 10]}
        assert result.get("barrier") == {"ok": None}


def test_the_gpu_is_set_before_any_collective(ranks):
    """runs.finetune: this rank's GPU, then the process group, then rank 0's decision, received by every rank."""
    for rank, result in enumerate(ranks):
        calls = [tuple(c) for c in result["calls"]]
        first_collective = next(i for i, c in enumerate(calls) if c[0] in ("broadcast_object_list",
                                                                             "all_gather_object", "all_reduce",
                                                                             "barrier"))
        assert ("set_device", f"cuda:{rank}") in calls[:first_collective], calls
        assert calls.index(("set_device", f"cuda:{rank}")) < calls.index(("init_process_group",
                                                                          "cpu:gloo,cuda:nccl")), calls
        assert calls[first_collective] == ("broadcast_object_list",)
        assert ("prepare", 4242) in calls  # rank 0's decision, on every rank
        assert all(c[0] != "set_device" or c[1] == f"cuda:{rank}" for c in calls)  # never another rank's GPU


def test_each_ranks_generators_are_saved_and_restored(ranks):
    for rank, result in enumerate(ranks):
        assert result.get("rng_keys") == ["rank0.cuda", "rank1.cuda", "rank1.torch", "torch"], result.get("rng_keys")
        assert result["cpu_rng_restored"] and result["cuda_rng_restored"], (rank, result)
        assert result["cpu_rng_is_rank0s"] == (rank == 0)


def test_resumed_ranks_get_their_own_generators(tmp_path):
    """A real 2-process run (torchrun, gloo), stopped after epoch 1's checkpoint and resumed in the same
    processes: each rank's CPU generator after the restore is the one it had at that checkpoint, the ranks' differ,
    and the final checkpoint holds each rank's last state."""
    from tests.distributed._equivalence import write_weights
    from transferlab.training.checkpoint import load_checkpoint

    weights = write_weights(tmp_path / "tiny.safetensors")
    job = Path(__file__).resolve().parent / "_rng_job.py"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(WORLD), str(job), str(tmp_path), weights], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for state in states:
        assert len(state["restored"]) == 1 and len(state["saved"]) == 2
        assert torch.equal(state["restored"][0], state["saved"][0])  # its own, from the first checkpoint
    assert not torch.equal(states[0]["saved"][0], states[1]["saved"][0])
    rng = load_checkpoint(tmp_path / "run" / "checkpoint" / "last.safetensors")[4]
    assert torch.equal(rng["torch"], states[0]["saved"][1]) and torch.equal(rng["rank1.torch"], states[1]["saved"][1])
