"""The `transferlab` command line. Each module in COMMAND_MODULES registers its sub-commands."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from transferlab.cli._common import fail

COMMAND_MODULES = ["transferlab.cli.core", "transferlab.cli.diagnose", "transferlab.cli.data_cmds",
                   "transferlab.cli.compare", "transferlab.cli.modules", "transferlab.cli.pretrain",
                   "transferlab.cli.contamination", "transferlab.cli.labs", "transferlab.cli.rank",
                   "transferlab.cli.export"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line (like every other error), not a usage block."""

    def error(self, message: str) -> "NoReturn":  # noqa: F821
        _fail(f"{message} (see '{self.prog} --help')")


def _fail(message: str) -> "NoReturn":  # noqa: F821
    """One line even when the message quotes user input holding line breaks or control characters."""
    fail("".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message))


def _show_traceback(args) -> None:
    """With -v, an error that is not one of transferlab's own (which name their cause) shows where it arose."""
    if getattr(args, "verbose", False):
        import traceback

        traceback.print_exc(file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="transferlab", description="Adapt pre-trained models to small target "
                                     "tasks, and measure what adaptation did.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    _verbose_after_commands(parser)
    return parser


def _verbose_after_commands(parser: argparse.ArgumentParser) -> None:
    """-v also after a sub-command (`transferlab finetune -v ...`), at every level. default=SUPPRESS: a sub-parser's
    default would overwrite the top level's value, and `transferlab -v finetune` would lose its -v."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in {id(p): p for p in action.choices.values()}.values():  # an alias maps to its parser
                subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                       help="debug logging (also accepted before the command)")
                _verbose_after_commands(subparser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # --nproc starts the same command in several processes
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from transferlab.errors import TransferlabError

    from transferlab.training import distributed

    if not distributed.is_main_process():  # one copy of the log in a distributed run: rank 0's
        logging.getLogger("transferlab").setLevel(logging.WARNING)
    try:
        args.func(args)
    except TransferlabError as exc:
        from transferlab.errors import PeerError

        if isinstance(exc, PeerError):  # rank 0 refused the run and printed why
            sys.exit(2)
        place = distributed.world()
        _fail(f"(rank {place.rank}) {exc}" if place.active and not place.is_main else str(exc))
    except (ValueError, FileNotFoundError, PermissionError) as exc:  # data errors and friends: one line
        _show_traceback(args)
        _fail(f"{type(exc).__name__}: {exc}")
    except MemoryError:
        _fail("out of memory: lower --batch-size or --image-size; the last good checkpoint is kept")
    except OSError as exc:
        if exc.errno == 28:  # ENOSPC
            _fail(f"disk full while writing {exc.filename or 'an output'}; the files already written (the last "
                  f"good checkpoint) are kept: free some space, then run again with --resume")
        _show_traceback(args)
        _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        resumable = args.command in ("finetune", "compare", "pretrain", "transfer-curve")
        _fail("interrupted" + ("; continue with --resume" if resumable else ""))
    finally:
        distributed.shutdown()
    return 0
