"""`--nproc N`: the same command in N processes on this machine, started by torch's own launcher (what `torchrun
--standalone --nproc-per-node N -m transferlab ...` does), with a one-line message when a process fails."""
from __future__ import annotations

import logging
import os
import signal
import sys
import uuid

from transferlab.errors import ConfigError, TrainingError

logger = logging.getLogger(__name__)


def add_nproc_option(p) -> None:
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train in N processes on this machine with DistributedDataParallel (gloo on CPU, NCCL on "
                        "CUDA), as torchrun --nproc-per-node N would; --batch-size is per process, so a step sees "
                        "N x --batch-size examples (the learning rate is not rescaled). Several machines: "
                        "torchrun, docs/distributed.md")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow --nproc above this machine's CPU cores (or, on CUDA, its GPUs): every process holds "
                        "a whole model and its data, so memory grows with N")


def wants_launch(args) -> bool:
    """True when this invocation should start the processes (and not train itself)."""
    nproc = getattr(args, "nproc", None)
    if nproc is None:
        return False
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1 (the number of training processes), got {nproc}")
    if "WORLD_SIZE" in os.environ:
        if nproc != int(os.environ["WORLD_SIZE"]):
            raise ConfigError(f"--nproc {nproc} inside a job of {os.environ['WORLD_SIZE']} processes started by "
                              f"torchrun: drop --nproc (torchrun's --nproc-per-node decides)")
        return False
    if nproc > 1 and not getattr(args, "oversubscribe", False):
        _check_capacity(nproc, getattr(args, "device", None))
    model = getattr(args, "model", None)
    if nproc > 1 and isinstance(model, str):
        from transferlab.models.own_models import is_registered_module

        if is_registered_module(model):
            raise ConfigError(f"--nproc {nproc}: model {model!r} was registered with register_module in this "
                              "process, and the processes --nproc starts are new interpreters without it; drop "
                              "--nproc")
    return nproc > 1


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the system has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_capacity(nproc: int, device: str | None) -> None:
    """--nproc above the cores (CPU) or the GPUs (CUDA): one line before any process starts; each process holds a
    whole model and its data, so 64 of them can take all the memory."""
    import torch

    device = str(device or "auto")
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise ConfigError(f"--nproc {nproc} on --device {device} with {gpus} GPU(s) here: at most one process "
                              f"per GPU (pass --oversubscribe to share them)")
        return
    cores = usable_cores()
    if nproc > cores:
        raise ConfigError(f"--nproc {nproc} is more than the {cores} CPU core(s) this process may use; each process "
                          f"holds a whole model: use --nproc {cores} or less, or pass --oversubscribe")


def without_nproc(argv: list[str]) -> list[str]:
    """The command line with its --nproc option removed (the started processes are told by torchrun's variables)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: list[str], checkpoint: str) -> None:
    """Run `transferlab ARGV` in `nproc` processes; TrainingError naming the process that failed, the signal
    that killed it, and the checkpoint that a --resume continues from.

    Ctrl-C (SIGINT), SIGTERM, SIGHUP or SIGQUIT sent to this launcher stop the job the way a killed process
    does: the training processes are stopped with SIGTERM (their checkpoint is written atomically, so the last
    one is whole) and a TrainingError says which signal arrived and where --resume continues; the CLI prints it
    as one line and exits with its error status 2, as for a killed process and for Ctrl-C in a single-process
    run."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    cores = usable_cores()
    if nproc > cores:
        logger.warning("--nproc %d on %d CPU core(s): the processes share cores and each runs slower", nproc, cores)
    # torch's threads divided among the processes (torchrun sets 1); a value the user set is kept
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    _quiet_torch_elastic()
    # torch's agent forwards the signal it received to the processes; SIGINT would raise KeyboardInterrupt in
    # each, and each would print its own "interrupted" line. So SIGINT stays with `_stop` (SIGTERM for them),
    # and torch handles the others, which end a process silently.
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          signals_to_handle=",".join(s.name for s in _STOP_SIGNALS if s != signal.SIGINT))
    logger.info("starting %d training processes", nproc)
    # until torch's agent has started the processes (it then takes over all but SIGINT), a signal stops the
    # rendezvous the same way, instead of killing this process without a word (SIGTERM) or with a traceback
    previous = {sig: signal.signal(sig, _stop) for sig in _STOP_SIGNALS}
    try:
        elastic_launch(config, sys.executable)("-m", "transferlab", *argv)
    except ChildFailedError as exc:
        raise _failure(exc, checkpoint) from None
    except _signal_exception() as exc:  # the agent has stopped the processes and waited for them
        received = signal.Signals(getattr(exc, "received", exc.sigval))
        raise TrainingError(f"interrupted by {received.name}; the job's training processes were stopped; "
                            f"{_kept(checkpoint)}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The signals that stop a launched job: Ctrl-C, `kill`, a closed terminal, Ctrl-\.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _signal_exception():
    from torch.distributed.elastic.multiprocessing.api import SignalException

    return SignalException


def _stop(signum, frame) -> None:
    """The launcher's handler for `_STOP_SIGNALS`: torch's SignalException, which makes its agent stop the
    processes, asking for SIGTERM (silent in them) whatever arrived; `received` keeps what arrived."""
    exc = _signal_exception()(f"process {os.getpid()} got {signal.Signals(signum).name}", sigval=signal.SIGTERM)
    exc.received = signum
    raise exc


def _quiet_torch_elastic() -> None:
    """torch's elastic loggers set their own levels (WARNING), so the level of their parent does not reach them;
    their reports of a failure or a stop (several lines, with tracebacks) repeat the one line we print."""
    import torch.distributed.elastic.agent.server.api  # noqa: F401  (creates the loggers silenced below)
    import torch.distributed.elastic.multiprocessing.api  # noqa: F401

    prefix = "torch.distributed.elastic"
    logging.getLogger(prefix).setLevel(logging.CRITICAL)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(prefix + "."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _kept(checkpoint: str) -> str:
    return (f"the last good checkpoint is {checkpoint} (continue with --resume)" if os.path.isfile(checkpoint)
            else "no checkpoint was written yet")


def _failure(exc, checkpoint: str) -> BaseException:
    """What failed, in one line: a process killed by a signal first (the launcher stops the others with SIGTERM),
    else the first to fail. A process that exited with the CLI's error status 2 has printed its reason itself."""
    failures = sorted(exc.failures.items(), key=lambda item: item[1].timestamp)
    killed = [(rank, f) for rank, f in failures if f.exitcode < 0 and -f.exitcode != signal.SIGTERM]
    if not killed and any(f.exitcode == 2 for _, f in failures):
        return SystemExit(2)  # rank 0 printed the one line (transferlab: error: ...)
    rank, first = (killed or failures)[0]
    how = (f"was killed by {signal.Signals(-first.exitcode).name}" if first.exitcode < 0
           else f"exited with status {first.exitcode}")
    return TrainingError(f"training process of rank {rank} (pid {first.pid}) {how}; the job's other processes were "
                         f"stopped; {_kept(checkpoint)}")
