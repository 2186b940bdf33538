"""mkdocs hook: the command-line reference, rendered from the real argparse parser at build time.

`docs/reference/cli.md` holds the marker `<!-- cli-reference -->`; `on_page_markdown` replaces it with one section
per command and sub-command (`transferlab finetune`, `transferlab modules merge`, ...): its one-line help and its
full `--help` text, exactly as `transferlab <command> --help` prints it. The page cannot drift from the CLI.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PAGE = "reference/cli.md"
MARKER = "<!-- cli-reference -->"
WIDTH = "100"  # argparse wraps help text to $COLUMNS


def _parser() -> argparse.ArgumentParser:
    try:
        from transferlab.cli import build_parser
    except ImportError:  # not installed: read it from the checkout
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
        from transferlab.cli import build_parser
    return build_parser()


def _subcommands(parser: argparse.ArgumentParser):
    """(name, one-line help, sub-parser) of a parser's sub-commands, in the order they were registered."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name) or "", sub


def _render(parser: argparse.ArgumentParser, level: int) -> list[str]:
    out = []
    for name, summary, sub in _subcommands(parser):
        out += [f"{'#' * level} `{sub.prog}`", ""]
        if summary:
            out += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
        out += ["```text", sub.format_help().rstrip(), "```", ""]
        out += _render(sub, level + 1)
    return out


def cli_markdown() -> str:
    """The whole reference as markdown: the top-level help, then every command and sub-command."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = _parser()
        lines = ["```text", parser.format_help().rstrip(), "```", ""]
        lines += _render(parser, 2)
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} has lost its marker {MARKER}")
    return markdown.replace(MARKER, cli_markdown())
