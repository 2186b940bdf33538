"""Sentences of docs/reliability.md that promise a behaviour, checked against the code that has it."""
from __future__ import annotations

import re
from pathlib import Path

from transferlab.runs import RESUME_MAY_DIFFER

ROOT = Path(__file__).resolve().parents[2]


def _options_after(text: str, start: str, end: str) -> set[str]:
    """The `--option` names quoted between START and the next END of TEXT (line breaks joined)."""
    flat = " ".join(text.split())
    begin = flat.index(start)
    part = flat[begin:flat.index(end, begin + len(start))]
    return set(re.findall(r"`(--[a-z-]+)`", part))


def _resume_options() -> set[str]:
    """RESUME_MAY_DIFFER as the command-line options a user types: train.cache_dir -> --cache-dir."""
    return {"--" + key.split(".", 1)[1].replace("_", "-") for key in RESUME_MAY_DIFFER}


def test_reliability_doc_lists_exactly_what_resume_may_change():
    said = _options_after((ROOT / "docs/reliability.md").read_text(), "Only where and how it computes may differ",
                          "so a run interrupted")
    assert said == _resume_options()
