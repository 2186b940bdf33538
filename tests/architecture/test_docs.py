"""The documentation: the site builds strictly, and the pages speak about the tool, not about how it was made.

(a) `mkdocs build --strict` (mkdocs.yml at the repository root) succeeds into a temporary folder: every nav entry
    exists, every link and anchor between pages resolves, the API pages render from the source, and the command
    line reference renders from the real parser (docs/hooks/cli_reference.py). Skipped when mkdocs (the `docs`
    extra: pip install -e ".[docs]") is not installed.

(b) README.md and docs/**/*.md hold no process words: words about how the project was made, which mean nothing
    to a reader of the tool's documentation. CHANGELOG.md is exempt: history goes there. Forbidden
    (case-insensitive, whole words):

    - numbered or referenced rounds: "round 1", "round-1", "rounds 2", "this/that/each/the last/the next round",
      and "rounds" (except in rounding: "rounds to", "rounds up", "rounds down", "rounds off", "rounds differently")
    - sessions of the work: "this/that/the/each/one/a/another/earlier/later/previous/next session('s)",
      "across/between/different/other/earlier/later/previous/several sessions"
    - issue numbers and the issue as a source: "issue 13", "issue #4", "issues #95", "issue 2's", "the issue's",
      "in the issues", "the issue asks/asked/reports/says/wants/requires" (an outside project's tracker is
      written `owner/repo#95` or `imagededup#95`)
    - versions of the code base: "core v2", "version(s) of the core", "the core's", "for the core"
    - the machine the work ran on: "this machine('s)", and "lent" (a machine lent to the work)
    - "helper(s)" (except "helper function(s)/module(s)/class(es)/method(s)")
    - numbered stops: "stop 31", "stop #3" (not "the stop criterion", not "--on-nonfinite stop")
    - "the brief", "reviewer(s)"

    Ordinary English does not trip them: "around", "rounding", "the stop criterion", "a user's sessions",
    "an interactive session", "CPU cores".
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROCESS_WORDS = [
    (r"\bround[- ]\d+\b", "a numbered round"),
    (r"\brounds?\s+\d", "a numbered round"),
    (r"\b(this|that|each|every|the last|the next|the previous|an earlier|a later|the first|the second)\s+round\b",
     "a round of the work"),
    (r"\brounds\b(?!\s+(to|up|down|off|differently|towards?)\b)", "rounds of the work"),
    (r"\b(this|that|the|each|every|one|a|another|earlier|later|previous|next)\s+session('s)?\b",
     "a session of the work"),
    (r"\b(across|between|different|other|earlier|later|previous|several)\s+sessions\b", "sessions of the work"),
    (r"\bissues?\s*#?\d+", "an issue number"),
    (r"\bthe issue's\b", "the issue as a source"),
    (r"\bin the issues\b", "the issues as a source"),
    (r"\bthe issue\s+(asks|asked|reports|reported|says|said|wants|wanted|requires|required)\b",
     "the issue as a source"),
    (r"\bcore\s+v\d+\b", "a version of the code base"),
    (r"\bversions?\s+of\s+the\s+core\b", "a version of the code base"),
    (r"\bthe core's\b", "the code base as a party"),
    (r"\bfor the core\b", "the code base as a party"),
    (r"\bthis machine('s)?\b", "the machine the work ran on"),
    (r"\blent\b", "a machine lent to the work"),
    (r"\bhelpers?\b(?!\s+(functions?|modules?|class(es)?|methods?)\b)", "a helper of the work"),
    (r"\bstop\s+#?\d+\b", "a numbered stop"),
    (r"\bthe brief\b", "the brief"),
    (r"\breviewers?\b", "a reviewer"),
]
_PATTERNS = [(re.compile(pattern, re.IGNORECASE), why) for pattern, why in PROCESS_WORDS]


def doc_files() -> list[Path]:
    """README.md and every markdown page under docs/ (CHANGELOG.md is history, and exempt)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def process_word_hits(text: str) -> list[tuple[int, str, str]]:
    """(line number, matched words, why) for every process word in `text`; overlapping matches count once."""
    hits = []
    for number, line in enumerate(text.splitlines(), 1):
        taken: list[tuple[int, int]] = []
        for pattern, why in _PATTERNS:
            for match in pattern.finditer(line):
                if any(match.start() < end and start < match.end() for start, end in taken):
                    continue
                taken.append(match.span())
                hits.append((number, match.group(0), why))
    return hits


@pytest.mark.parametrize("text", [
    "We walked around the block.", "rounding to two decimals", "channels-last rounds differently",
    "the stop criterion", "--on-nonfinite stop: end the run", "a user's sessions", "an interactive session",
    "2 CPU cores", "the core idea", "small helper functions", "see imagededup#95", "the issue is the batch size",
])
def test_ordinary_english_passes(text):
    assert process_word_hits(text) == []


@pytest.mark.parametrize("text", [
    "round 1", "round-1 numbers", "in this round", "three rounds later", "measured in this session",
    "did not fit a session", "issue 13", "issue #4", "issues #95, #133", "issue 2's target", "the issue's 0.93",
    "Earlier figures in the issues", "the issue asks for", "core v2", "a version of the core", "Notes for the core",
    "on this machine", "this machine's 2 cores", "No GPU machine was lent", "a parallel helper", "stop 31",
    "the brief", "the reviewer",
])
def test_process_words_are_found(text):
    assert process_word_hits(text)


def test_no_process_words_in_the_docs():
    found = [f"{path.relative_to(ROOT)}:{number}: {words!r} ({why})"
             for path in doc_files() for number, words, why in process_word_hits(path.read_text(encoding="utf-8"))]
    assert not found, "process words in the documentation (history goes to CHANGELOG.md):\n" + "\n".join(found)


def test_site_builds_strictly(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        pytest.skip('mkdocs and mkdocstrings are not installed (the docs extra: pip install -e ".[docs]")')
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    problems = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(problems or [done.stderr[-3000:]])
    assert (tmp_path / "site" / "index.html").is_file()
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "transferlab finetune" in cli and "--checkpoint-every-steps" in cli  # rendered from the parser
