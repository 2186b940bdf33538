"""A lab's README.md, and the one page of `lab run all` (Markdown, and HTML with the figures inlined)."""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def checks_table(record: dict) -> list[str]:
    rows = ["| check | what a positive value means | values | mean ± sd | interval (test) | margin | verdict |",
            "|---|---|---|---|---|---|---|"]
    for c in record["checks"]:
        s = c["stats"]
        values = ", ".join(_fmt(v) for v in c["values"])
        rows.append(f"| {c['name']} | {c['claim']} | {values} ({c['unit'] or 'per ' + c['per']}) | "
                    f"{_fmt(s['mean'])} ± {_fmt(s['sd'])} | {_interval(c)} | {_margin(c)} | {c['verdict']} |")
    return rows


def _interval(check: dict) -> str:
    """'[+0.003, +0.041] (Student's t, 2 df)': the interval the verdict was read from; '-' for older records."""
    comparison = check.get("comparison")
    if not comparison:
        return "-"
    low, high = comparison.get("low"), comparison.get("high")
    band = "-" if low is None or high is None else f"[{low:+.3g}, {high:+.3g}]"
    return f"{band} ({comparison.get('method', '')})"


def _margin(check: dict) -> str:
    kind = check.get("kind", "superiority")
    return f"{kind} {_fmt(check.get('margin', 0.0))}"


def numbers_tables(numbers: dict) -> list[str]:
    """Each list of row dicts as a table; scalars as one list."""
    lines, scalars = [], []
    for name, value in numbers.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            keys = list(dict.fromkeys(k for r in value for k in r))
            lines += [f"**{name}**", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for r in value]
            lines.append("")
        else:
            scalars.append(f"- {name}: {_fmt(value) if not isinstance(value, (list, dict)) else json.dumps(value)}")
    return lines + scalars


def lab_readme(record: dict, figure: str = "figure.png", heading: str = "#") -> str:
    quick = " (--quick)" if record["quick"] else ""
    lines = [f"{heading} Lab `{record['lab']}`: {record['title']}", "",
             f"**Claim.** {record['claim']}" + (f" ({record['reference']})" if record.get("reference") else ""), "",
             f"**Data.** {record['data']}. Seeds {record['seeds']}{quick}; {record['seconds']:.0f} s on {_cores()}.",
             "", f"**Verdict: {record['verdict']}.** Rule: {record['rule']}.", "",
             f"**What was measured.** {record['summary']}", ""]
    lines += checks_table(record) + [""]
    lines += numbers_tables(record["numbers"])
    for note in record.get("notes", []):
        lines.append(f"- note: {note}")
    lines += ["", f"![{record['lab']}]({figure})", ""]
    return "\n".join(lines)


def _cores() -> str:
    """Where the times were taken, in words a reader can compare with their own machine."""
    return f"{os.cpu_count()} CPU cores"


def all_page(records: list[dict], out: Path, command: str, seconds: float) -> tuple[str, str]:
    """(Markdown, self-contained HTML) of every lab: verdicts first, then each lab's section and figure."""
    md = ["# The chapter's claims, measured", "", f"`{command}` — {len(records)} labs in {seconds / 60:.1f} min on "
          f"{_cores()}. Every number below was read back from the labs' own run folders; every verdict comes from "
          "its rule.", "", "| lab | claim | verdict | time (s) |", "|---|---|---|---|"]
    for r in records:
        md.append(f"| [`{r['lab']}`](#lab-{r['lab']}) | {r['claim']} | **{r['verdict']}** | {r['seconds']:.0f} |")
    md.append("")
    for r in records:
        md.append(f'<a id="lab-{r["lab"]}"></a>')
        md.append(lab_readme(r, figure=f"{r['lab']}/figure.png", heading="##"))
    markdown = "\n".join(md)
    page = ["<!doctype html><html><head><meta charset='utf-8'><title>transferlab labs</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}</style></head><body>",
            f"<h1>The chapter's claims, measured</h1><p><code>{html.escape(command)}</code> — {len(records)} labs "
            f"in {seconds / 60:.1f} min.</p>", _html_table(["lab", "claim", "verdict", "time (s)"],
                                                           [[r["lab"], r["claim"], r["verdict"], f"{r['seconds']:.0f}"]
                                                            for r in records])]
    for r in records:
        png = (out / r["lab"] / "figure.png").read_bytes()
        page.append(f"<h2 id='lab-{r['lab']}'>{html.escape(r['lab'])}: {html.escape(r['title'])}</h2>")
        page.append(f"<p><b>Claim.</b> {html.escape(r['claim'])}</p><p><b>Verdict: {html.escape(r['verdict'])}.</b> "
                    f"{html.escape(r['rule'])}</p><p>{html.escape(r['summary'])}</p>")
        page.append(_html_table(["check", "claim", "values", "mean", "sd", "interval (test)", "margin", "verdict"],
                                [[c["name"], c["claim"], ", ".join(_fmt(v) for v in c["values"]),
                                  _fmt(c["stats"]["mean"]), _fmt(c["stats"]["sd"]), _interval(c), _margin(c),
                                  c["verdict"]] for c in r["checks"]]))
        page.append(f"<img alt='{html.escape(r['lab'])}' src='data:image/png;base64,"
                    f"{base64.b64encode(png).decode()}'>")
    page.append("</body></html>")
    return markdown, "\n".join(page)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
