"""The contamination command's HTML page: the summary's numbers, then the closest target/source pairs side by
side (images as inline PNGs, texts with their shared n-grams marked) so a person can judge each match.

    write_page(out / "contamination.html", summary, pairs)

The page is one self-contained file: no external URL, no script library. A few lines of inline script record,
after load, each image's decoded width and a readiness flag, so a headless browser can check the page.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab.contamination.text_overlap import normalize, tokenizer
from transferlab.safe_io import atomic_write_text


@dataclass(frozen=True)
class ShownPair:
    """One target example beside the source example it matched, as the page shows it."""
    target_id: str  # "test/cat/0042.jpg" (images) or "17" (0-based row, text)
    source_id: str
    method: str  # "exact", "phash", "dhash", "embedding", "aligned" (images); "exact", "ngram" (text)
    score: float  # hamming distance (phash/dhash), cosine, normalised cross-correlation, n-gram overlap
    dirty: bool
    target_image: np.ndarray | None = None  # (H, W, 3) uint8 thumbnail
    source_image: np.ndarray | None = None
    target_text: str | None = None
    source_text: str | None = None
    shared_ngrams: tuple[str, ...] = ()  # normalised n-grams (space-joined lower-case words) both texts hold


def write_page(path: Path, summary: dict, pairs: list[ShownPair], *, title: str = "Contamination") -> Path:
    """Render the page and write it atomically to `path` (a temporary file beside it, then renamed); returns
    `path`. ValueError for a pair that carries neither images nor texts."""
    for i, pair in enumerate(pairs):
        if pair.target_image is None and pair.source_image is None \
                and pair.target_text is None and pair.source_text is None:
            raise ValueError(f"pair {i} ({pair.method}: target {pair.target_id!r}, source {pair.source_id!r}) "
                             "has neither images nor texts to show")
    path = Path(path)
    atomic_write_text(path, render_page(summary, pairs, title=title))
    return path


def render_page(summary: dict, pairs: list[ShownPair], *, title: str = "Contamination") -> str:
    title = html.escape(title)
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{title}</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>{title}</h1>", _summary_html(summary)]
    if not pairs:
        parts.append("<p class='none'>No pairs are shown.</p>")
    by_method: dict[str, list[ShownPair]] = {}  # first-seen method order; the caller's order within each
    for pair in pairs:
        by_method.setdefault(pair.method, []).append(pair)
    norm = summary.get("normalization") or {}  # texts: mark words as the check read them
    words = tokenizer(norm["mode"], bool(norm.get("strip_markup"))) if norm.get("mode") else normalize
    for method, group in by_method.items():
        parts.append(f"<section class='method'><h2>{html.escape(method)}</h2>")
        # image pairs wrap in rows
        parts += ["<div class='pairs'>"] + [_pair_html(p, words) for p in group] + ["</div>"]
        parts.append("</section>")
    parts += [_SCRIPT, "</body></html>"]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------- summary


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _fraction(value) -> str:
    return "—" if value is None else f"{value:.4f} ({value:.2%})"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_html(summary: dict) -> str:
    overall = _table(["modality", "target examples", "dirty", "dirty fraction"],
                     [[_fmt(summary.get("modality")), _fmt(summary.get("n_target")), _fmt(summary.get("n_dirty")),
                       _fraction(summary.get("dirty_fraction"))]])
    sets = _table(["role", "data", "split", "examples", "skipped"],
                  [[role, _fmt(d.get("data")), _fmt(d.get("split")), _fmt(d.get("n")), _fmt(d.get("skipped"))]
                   for role in ("target", "source") if (d := summary.get(role)) is not None])
    methods = _table(["method", "dirty", "dirty fraction", "threshold", "match if"],
                     [[name, _fmt(m.get("n_dirty")), _fraction(m.get("dirty_fraction")), _fmt(m.get("threshold")),
                       _fmt(m.get("match_if"))] for name, m in (summary.get("methods") or {}).items()])
    # the warnings first: one may say that the numbers below mean nothing (a data set checked against itself)
    warnings = "".join(f"<li>{html.escape(str(w))}</li>" for w in summary.get("warnings") or [])
    warned = f"<ul class='warnings'>{warnings}</ul>" if warnings else ""
    text = _text_html_summary(summary)
    return f"<section class='summary'><h2>Summary</h2>{warned}{overall}{sets}{methods}{text}</section>"


def _text_html_summary(summary: dict) -> str:
    """Texts: how the words were read, the boilerplate set aside, minhash's threshold and its recall."""
    norm, boiler = summary.get("normalization"), summary.get("boilerplate")
    if not norm:
        return ""
    rows = [["normalisation", f"{norm['mode']}; markup tags {'stripped' if norm['strip_markup'] else 'kept'} "
                              f"({norm['strip_markup_why']})"]]
    if boiler:
        rows.append(["boilerplate", "off" if not boiler["max_ngram_rows"] else
                     f"{boiler['source_ngrams']} source n-grams in more than {boiler['max_ngram_rows']} rows set "
                     f"aside ({boiler['target_rows']} target rows hold some)"])
    mh = (summary.get("methods") or {}).get("minhash")
    if mh:
        by_k = ", ".join(f"{k} edit(s) {_fmt(v)}" for k, v in (mh.get("copy_recall_by_k") or {}).items())
        rows.append(["minhash threshold", f"{mh.get('chosen')}; null rate {_fmt(mh.get('null_rate'))} "
                                          f"(95% bound {_fmt(mh.get('null_rate_upper95'))})"])
        rows.append(["minhash recall of edited copies", f"{_fmt(mh.get('copy_recall'))} ({by_k})"])
    return _table(["text", "value"], rows)


# ---------------------------------------------------------------------------------------------- pairs


def _png_data_uri(image: np.ndarray) -> str:
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"an image must be (H, W, 3) uint8 (or (H, W), (H, W, 4)), got {array.shape} "
                         f"{array.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _image_html(image: np.ndarray | None, role: str, ident: str) -> str:
    if image is None:
        return f"<div class='noimage'>(no {role} image)</div>"
    alt = html.escape(f"{role} {ident}", quote=True)
    return f"<img class='{role}' alt=\"{alt}\" src='{_png_data_uri(image)}'>"


def mark_shared(text: str, shared_ngrams: tuple[str, ...] | list[str], words=normalize) -> str:
    """`text`, HTML-escaped, with every word that belongs to a run of words equal to a shared n-gram wrapped
    in <mark>. Words are normalised one at a time with the n-gram finder's own `normalize`, so a run here is a
    run there; a word that normalises to nothing (",", "--") joins no run and is never marked."""
    # Split on whitespace but keep it, so the text reads (and wraps) as written.
    chunks = ["".join(g) for _, g in itertools.groupby(text, key=str.isspace)]
    tokens: list[tuple[str, int]] = []  # (normalised word, index of its chunk)
    for i, chunk in enumerate(chunks):
        if not chunk.isspace():
            tokens += [(word, i) for word in words(chunk)]
    words = [w for w, _ in tokens]
    marked: set[int] = set()  # chunk indices
    grams = {tuple(g.split()) for g in shared_ngrams if g.split()}
    for m in sorted({len(g) for g in grams}):
        for start in range(len(words) - m + 1):
            if tuple(words[start:start + m]) in grams:
                marked.update(i for _, i in tokens[start:start + m])
    return "".join(f"<mark>{html.escape(c)}</mark>" if i in marked else html.escape(c)
                   for i, c in enumerate(chunks))


def _text_html(text: str | None, shared: tuple[str, ...], role: str, words=normalize) -> str:
    if text is None:
        return f"<div class='text {role} notext'>(no {role} text)</div>"
    return f"<div class='text {role}'>{mark_shared(text, shared, words)}</div>"


def _pair_html(pair: ShownPair, words=normalize) -> str:
    verdict = "dirty" if pair.dirty else "clean"
    rows = []
    if pair.target_image is not None or pair.source_image is not None:
        rows.append("<div class='side'>" + _image_html(pair.target_image, "target", pair.target_id)
                    + _image_html(pair.source_image, "source", pair.source_id) + "</div>")
    if pair.target_text is not None or pair.source_text is not None:
        rows.append("<div class='side'>" + _text_html(pair.target_text, pair.shared_ngrams, "target", words)
                    + _text_html(pair.source_text, pair.shared_ngrams, "source", words) + "</div>")
    caption = (f"target <code>{html.escape(pair.target_id)}</code><br>source <code>{html.escape(pair.source_id)}"
               f"</code><br>{html.escape(pair.method)} score {pair.score:.4g} · <strong>{verdict}</strong>")
    return f"<figure class='pair {verdict}'>{''.join(rows)}<figcaption>{caption}</figcaption></figure>"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
figure.pair{margin:0;padding:0.5em;border-left:4px solid #bbb}figure.pair.dirty{border-left-color:#c33}
.pairs{display:flex;flex-wrap:wrap;gap:0.6em}.pairs figure{max-width:212px}
.pairs figure:has(.text){flex-basis:100%;max-width:none}
figcaption code{font-size:0.9em}
.side{display:flex;gap:0.4em;align-items:flex-start}
.side img{width:96px;height:auto;image-rendering:pixelated;border:1px solid #ccc}
.noimage{width:96px;color:#888;font-size:0.85em}
.text{flex:1;white-space:pre-wrap;background:#fafafa;border:1px solid #ddd;padding:0.5em}
mark{background:#ffe066}.warnings{color:#a11;font-weight:600}figcaption{font-size:0.85em;color:#555;margin-top:0.3em}"""

# After load: each image's natural width (0: it did not decode) on the image, and a readiness flag on <body>,
# both readable from a headless browser's --dump-dom.
_SCRIPT = """<script>window.addEventListener('load',function(){var imgs=document.images;
for(var i=0;i<imgs.length;i++){imgs[i].setAttribute('data-natural-width',String(imgs[i].naturalWidth));}
document.body.dataset.pageReady='1';});</script>"""
