"""Shared CLI plumbing: dataclass fields become options, errors become one line and exit code 2."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from transferlab.console import format_number, print_json, print_table  # noqa: F401  (re-exported)


def add_dataclass_options(parser: argparse.ArgumentParser, cls, exclude: tuple[str, ...] = (),
                          flags: dict[str, str] | None = None) -> None:
    """`--field-name` options from a config dataclass, with its defaults and help texts."""
    flags = flags or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
        help_text = f.metadata.get("help", "")
        default = f.default
        if isinstance(default, bool):  # a flag that turns on, or (default on) --no-NAME that turns off
            if default:
                flag = flags.get(f.name, "--no-" + f.name.replace("_", "-"))
            parser.add_argument(flag, dest=f.name, action="store_false" if default else "store_true", default=None,
                                help=help_text)
            continue
        kind = {int: int, float: float}.get(type(default), str)
        if default is None:
            kind = _optional_type(cls, f.name)
        parser.add_argument(flag, dest=f.name, type=kind, default=None,
                            help=f"{help_text} (default: {default})")


def _optional_type(cls, name: str):
    import typing

    hint = typing.get_type_hints(cls)[name]
    for arg in typing.get_args(hint):
        if arg in (int, float):
            return arg
    return str


def dataclass_from_args(cls, args: argparse.Namespace, **overrides):
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
              if getattr(args, f.name, None) is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def check_command_outputs(outputs: dict[str, object], inputs: dict[str, object], tracks=()) -> dict:
    """Every path a command will write (`outputs` by option, and where its --track specs write) through the one
    output rule (outputs.check_outputs: never in, around or equal to an input, never onto another output), then
    each --track target tried once (tracking.check_track_targets); before any work. The resolved paths, by
    option."""
    from transferlab.outputs import check_outputs
    from transferlab.tracking import check_track_targets, track_outputs

    paths = check_outputs({**outputs, **track_outputs(list(tracks), outputs.get("--out"))}, inputs)
    check_track_targets(list(tracks), outputs.get("--out"))
    return paths


def fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"transferlab: error: {message}", file=sys.stderr)
    raise SystemExit(2)
