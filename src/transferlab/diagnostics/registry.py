"""Every diagnostic, declared once: `transferlab diagnose NAME` and its report section come from here.

A diagnostic is one file in `transferlab/diagnostics/` whose command is decorated:

    from transferlab.diagnostics.registry import arg, one_of, register_diagnostic, section

    def toy_section(ctx):                        # (optional) its comparison-report section
        ...                                      # ctx: compare.report.ReportContext -> Section or None

    @register_diagnostic("toy", help="what it measures", order=60,
                         arguments=[arg("--run", required=True, help="run directory"),
                                    arg("--json", action="store_true")],
                         section=section("toy", order=71, build=toy_section))
    def cmd_toy(args) -> None:                   # the command: compute, then print (a table, or --json)
        ...

`arguments` are `arg(*flags, **argparse kwargs)` and `one_of(arg, arg, required=...)` (a mutually exclusive
group), added in order; `section` registers `build` with `transferlab.sections.register_section` under its key
and order. `load_all()` imports every public module of this package (so each file registers by being there);
the CLI (`transferlab.cli.diagnose`) builds one sub-command per registered diagnostic, in `order`.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from transferlab.sections import _SECTIONS, SectionFn, register_section


@dataclass(frozen=True)
class Arg:
    """One command-line option: what `parser.add_argument(*flags, **kwargs)` is given."""
    flags: tuple[str, ...]
    kwargs: dict = field(default_factory=dict)

    def add_to(self, parser) -> None:
        parser.add_argument(*self.flags, **self.kwargs)


@dataclass(frozen=True)
class OneOf:
    """Options of which at most one (with `required`, exactly one) may be given."""
    args: tuple[Arg, ...]
    required: bool = False

    def add_to(self, parser) -> None:
        group = parser.add_mutually_exclusive_group(required=self.required)
        for a in self.args:
            a.add_to(group)


def arg(*flags: str, **kwargs) -> Arg:
    return Arg(tuple(flags), dict(kwargs))


def one_of(*args: Arg, required: bool = False) -> OneOf:
    return OneOf(tuple(args), required)


@dataclass(frozen=True)
class ReportSection:
    """A comparison-report section: `build(ctx) -> Section | None`, under `key` (also its results.json key)."""
    key: str
    order: int
    build: SectionFn


def section(key: str, order: int, build: SectionFn) -> ReportSection:
    return ReportSection(key, order, build)


@dataclass(frozen=True)
class Diagnostic:
    name: str  # `transferlab diagnose NAME`
    help: str
    function: Callable[[argparse.Namespace], None]  # the command: parsed arguments -> printed result
    arguments: tuple = ()
    section: ReportSection | None = None
    order: int = 100  # position among `diagnose`'s sub-commands

    def add_parser(self, subparsers) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(self.name, help=self.help)
        for a in self.arguments:
            a.add_to(parser)
        parser.set_defaults(func=self.function)
        return parser


_DIAGNOSTICS: dict[str, Diagnostic] = {}


def register_diagnostic(name: str, help: str, arguments=(), section: ReportSection | None = None,
                        order: int = 100) -> Callable:
    """Decorator of a diagnostic's command function: declares its sub-command, its options and (optionally)
    its report section."""

    def wrap(fn):
        if name in _DIAGNOSTICS and _DIAGNOSTICS[name].function is not fn:
            raise ValueError(f"a diagnostic named {name!r} is already registered")
        _DIAGNOSTICS[name] = Diagnostic(name, help, fn, tuple(arguments), section, order)
        if section is not None:
            register_section(section.key, order=section.order)(section.build)
        return fn

    return wrap


def unregister_diagnostic(name: str) -> None:
    """Remove a diagnostic and its report section (tests' toy diagnostics)."""
    diagnostic = _DIAGNOSTICS.pop(name)
    if diagnostic.section is not None and diagnostic.section.key in _SECTIONS \
            and _SECTIONS[diagnostic.section.key][1] is diagnostic.section.build:
        del _SECTIONS[diagnostic.section.key]


@contextmanager
def registered_diagnostics() -> Iterator[dict[str, Diagnostic]]:
    """Whatever is registered inside the block (a test's toy diagnostic, its section) is gone after it."""
    load_all()
    saved, saved_sections = dict(_DIAGNOSTICS), dict(_SECTIONS)
    try:
        yield _DIAGNOSTICS
    finally:
        _DIAGNOSTICS.clear()
        _DIAGNOSTICS.update(saved)
        _SECTIONS.clear()
        _SECTIONS.update(saved_sections)


_NOT_DIAGNOSTICS = frozenset({"registry", "report"})  # this module, and the report's loader


def load_all() -> None:
    """Import every public module of `transferlab.diagnostics`: each diagnostic registers on import."""
    import transferlab.diagnostics as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("_") and info.name not in _NOT_DIAGNOSTICS:
            importlib.import_module(f"{package.__name__}.{info.name}")


def list_diagnostics() -> list[Diagnostic]:
    """Every registered diagnostic, in `order` (then name)."""
    load_all()
    return sorted(_DIAGNOSTICS.values(), key=lambda d: (d.order, d.name))


def get_diagnostic(name: str) -> Diagnostic:
    load_all()
    return _DIAGNOSTICS[name]


# ---- argument types shared by diagnostics -------------------------------------------------------------------
def at_least_one(text: str) -> int:
    """An argparse type: zero batches would read no example, and the command would print empty results."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value} (leave it out to use every batch)")
    return value
