"""User-facing data errors and the log of inputs that were skipped."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad user data: the message is one clear line for the CLI (exit code 2).

    The message names the path and says what to do, so the CLI can print it as is.
    """


class SkipLog:
    """Inputs that could not be used, as ``{"path": str, "reason": str}``, deduplicated by path.

    The same unreadable file is met again in every epoch; it is recorded (and warned about) once.
    Text rows use ``"file:line"`` as their path.

    With DataLoader worker processes, each worker holds its own copy: files that fail only at
    ``__getitem__`` time are then warned about by the worker, but not added to this (the main
    process's) log. The cheap check at load time runs in the main process and is always recorded.
    """

    def __init__(self) -> None:
        self._reasons: dict[str, str] = {}  # insertion-ordered: first skipped first

    def add(self, path: str, reason: str, *, log: bool = True) -> bool:
        """Record ``path``; return True when it was new. ``log=False`` lets callers that skip
        thousands of rows warn about a few and then summarise."""
        path = str(path)
        if path in self._reasons:
            return False
        self._reasons[path] = reason
        if log:
            logger.warning("skipped %s: %s", path, reason)
        return True

    @property
    def count(self) -> int:
        return len(self._reasons)

    @property
    def items(self) -> list[dict[str, str]]:
        return self.to_list()

    def to_list(self) -> list[dict[str, str]]:
        """A JSON-ready copy, in the order the inputs were first skipped."""
        return [{"path": p, "reason": r} for p, r in self._reasons.items()]

    def __contains__(self, path: object) -> bool:
        return str(path) in self._reasons

    def __len__(self) -> int:
        return len(self._reasons)

    def __repr__(self) -> str:
        return f"SkipLog(count={self.count})"
