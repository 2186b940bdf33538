"""Fault injection for the reliability tests. TEST-ONLY: nothing happens unless TRANSFERLAB_FAULT is set.

The reliability tests (tests/reliability/) set the environment variable to make a real process fail at an
exact point, so "killed during a checkpoint write" is a reproducible test instead of a lucky timing:

    TRANSFERLAB_FAULT="kill_during_write:last.safetensors:2"   # SIGKILL inside the 2nd write of last.safetensors,
                                                              # after the temporary file is complete, before rename
    TRANSFERLAB_FAULT="kill_at_step:10"                       # SIGKILL before optimiser step 10 (1-based, global)

A spec is one or more `ACTION:[NAME:]N` items separated by ';'. N counts occurrences in this process
(writes) or is the trainer's global step number (steps); NAME, for writes only, restricts the count to files
with that name. Actions:

    kill_during_write   SIGKILL after the temporary file is written and fsynced, before os.replace
    kill_after_write    SIGKILL right after os.replace
    enospc_on_write     OSError(ENOSPC) half-way through writing the temporary file (a full disk)
    kill_at_step        SIGKILL before the step's forward pass
    oom_at_step         MemoryError before the step's forward pass
    nan_at_step         the step's loss becomes NaN
    pause_at_step       wait before the step until the file named by TRANSFERLAB_FAULT_RELEASE exists (at most
                        PAUSE_LIMIT_S seconds): a test reads what a running process has written so far

Under torchrun every rank inherits the spec; TRANSFERLAB_FAULT_RANK=R keeps it to the process of rank R (one
rank of a distributed run killed while the others go on). TRANSFERLAB_FAULT_SCOPE=NAME keeps it to the code a
`scope(NAME)` block runs: `compare --tune` runs each trial in `scope("trial:<entry>:<number>")`, so a test can kill
a grid in the middle of one given trial.
"""
from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections import Counter

ENV = "TRANSFERLAB_FAULT"
RANK_ENV = "TRANSFERLAB_FAULT_RANK"
RELEASE_ENV = "TRANSFERLAB_FAULT_RELEASE"
SCOPE_ENV = "TRANSFERLAB_FAULT_SCOPE"
PAUSE_LIMIT_S = 120.0
_ACTIONS = ("kill_during_write", "kill_after_write", "enospc_on_write", "kill_at_step", "oom_at_step",
            "nan_at_step", "pause_at_step")
_write_counts: Counter = Counter()  # writes seen in this process since the spec was set (or reset())
_counted_spec: str | None = None
_scope: str | None = None  # the innermost scope() block running now


@contextlib.contextmanager
def scope(name: str):
    """Faults limited by TRANSFERLAB_FAULT_SCOPE apply only inside `with scope(that name):`."""
    global _scope
    previous, _scope = _scope, name
    try:
        yield
    finally:
        _scope = previous


def reset() -> None:
    """Start counting writes from zero again (tests that inject faults in-process call this)."""
    global _counted_spec
    _write_counts.clear()
    _counted_spec = None


def _plan() -> list[tuple[str, str | None, int]]:
    spec = os.environ.get(ENV, "")
    only = os.environ.get(RANK_ENV)
    if only is not None and only != os.environ.get("RANK", "0"):
        return []
    wanted = os.environ.get(SCOPE_ENV)
    if wanted is not None and wanted != _scope:
        return []
    plan = []
    for item in filter(None, (s.strip() for s in spec.split(";"))):
        parts = item.split(":")
        if parts[0] not in _ACTIONS or len(parts) not in (2, 3) or not parts[-1].isdigit():
            raise ValueError(f"{ENV}: cannot read {item!r}; expected ACTION:[NAME:]N with ACTION one of "
                             f"{', '.join(_ACTIONS)}")
        plan.append((parts[0], parts[1] if len(parts) == 3 else None, int(parts[-1])))
    return plan


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def on_write(stage: str, name: str) -> None:
    """Called by safe_io.atomic_write_bytes at stages 'start', 'partial' (half the temporary file written),
    'during' (temporary file complete and fsynced) and 'after' (renamed into place)."""
    global _counted_spec
    if ENV not in os.environ:
        return
    if _counted_spec != os.environ[ENV]:  # a new plan counts from zero
        _write_counts.clear()
        _counted_spec = os.environ[ENV]
    if stage == "start":
        _write_counts[None] += 1
        _write_counts[name] += 1
    for action, target, n in _plan():
        if _write_counts[target] != n or (target is not None and target != name):
            continue
        if stage == "partial" and action == "enospc_on_write":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name
        if (stage, action) in (("during", "kill_during_write"), ("after", "kill_after_write")):
            _kill()


def on_step(step: int) -> bool:
    """Called by the trainer before step `step` (1-based); True when this step's loss should become NaN."""
    if ENV not in os.environ:
        return False
    poison = False
    for action, _, n in _plan():
        if n != step:
            continue
        if action == "kill_at_step":
            _kill()
        if action == "oom_at_step":
            raise MemoryError(f"injected out-of-memory at step {step}")
        if action == "pause_at_step":
            _pause()
        poison = poison or action == "nan_at_step"
    return poison


def _pause() -> None:
    import time

    release = os.environ.get(RELEASE_ENV)
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
