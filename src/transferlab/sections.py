"""Report sections as data: content blocks (text, bullets, tables, figures), a Section, and the registry the
comparison report reads. Below every layer that declares a section (the diagnostics) and the report that
renders them (transferlab.compare.report), so neither imports the other's layer upwards.

    from transferlab.sections import Section, Table, register_section

    @register_section("cka", order=65)
    def cka_section(ctx):            # ctx: compare.report.ReportContext (results, out dir, a shared cache)
        ...
        return Section("Representation similarity (CKA)", [Figure("cka", png, "caption")], data={...})
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


# ---- content blocks --------------------------------------------------------------------------------------
@dataclass
class Text:
    text: str  # one paragraph; **bold** is the only markup


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    css_class: str = "results"


@dataclass
class Figure:
    name: str  # file stem: plots/<name>.png
    png: bytes
    caption: str


@dataclass
class Section:
    title: str
    blocks: list
    data: dict | None = None  # stored under results.json["sections"][key]


SectionFn = Callable[..., "Section | None"]  # (ReportContext) -> Section or None
_SECTIONS: dict[str, tuple[int, SectionFn]] = {}


def register_section(key: str, order: int = 100) -> Callable[[SectionFn], SectionFn]:
    """Add a report section under `key` (also its key in results.json); lower `order` comes first."""

    def wrap(fn: SectionFn) -> SectionFn:
        _SECTIONS[key] = (order, fn)
        return fn

    return wrap


def list_sections() -> list[str]:
    return [k for k, _ in sorted(_SECTIONS.items(), key=lambda kv: kv[1][0])]
