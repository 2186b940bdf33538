"""The contamination page: images decode back to the caller's pixels, shared n-grams are marked on the
original words, everything is escaped, the write is atomic, and a real browser loads it."""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.contamination.page import ShownPair, mark_shared, write_page
from transferlab.contamination.text_overlap import normalize

SUMMARY = {
    "modality": "image", "n_target": 40, "n_dirty": 3, "dirty_fraction": 0.075,
    "methods": {"exact": {"n_dirty": 1, "dirty_fraction": 0.025, "threshold": None, "match_if": "same bytes"},
                "phash": {"n_dirty": 3, "dirty_fraction": 0.075, "threshold": 10, "match_if": "distance <= 10"}},
    "source": {"data": "/data/train_set", "split": "train", "n": 500, "skipped": 2},
    "target": {"data": "/data/test_set", "split": "test", "n": 40, "skipped": 0},
    "elapsed_seconds": 1.5,  # a key the page ignores
}


def _gradient(h: int, w: int, channel: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., channel] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., (channel + 1) % 3] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    return img


class _Page(HTMLParser):
    """The page's <img> attributes, the text inside each <mark>, and the text of each div.text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.imgs: list[dict] = []
        self.marks: list[str] = []
        self.texts: list[str] = []
        self.scripts: list[dict] = []
        self._in_mark = False
        self._in_text = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
        elif tag == "script":
            self.scripts.append(attrs)
        elif tag == "mark":
            self._in_mark = True
            self.marks.append("")
        elif tag == "div" and "text" in (attrs.get("class") or "").split():
            self._in_text = 1
            self.texts.append("")
        elif self._in_text:
            self._in_text += 1

    def handle_endtag(self, tag):
        if tag == "mark":
            self._in_mark = False
        elif self._in_text and tag == "div":
            self._in_text -= 1

    def handle_data(self, data):
        if self._in_mark:
            self.marks[-1] += data
        if self._in_text:
            self.texts[-1] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _decode(src: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src[len(prefix):]))).convert("RGB"))


def _marked(text: str, shared: tuple[str, ...]) -> list[str]:
    return re.findall(r"<mark>(.*?)</mark>", mark_shared(text, shared))


def _image_pairs() -> list[ShownPair]:
    a, b, c = _gradient(32, 32, 0), _gradient(32, 32, 1), _gradient(24, 40, 2)
    return [ShownPair("test/cat/0042.jpg", "train/cat/0007.jpg", "exact", 0.0, True, a, a.copy()),
            ShownPair("test/dog/0001.jpg", "train/dog/0100.jpg", "phash", 4.0, True, b, c),
            ShownPair("test/dog/0002.jpg", "train/cat/0003.jpg", "phash", 22.0, False, c, b)]


def _text_pairs() -> list[ShownPair]:
    return [ShownPair("17", "3", "ngram", 0.5, True,
                      target_text="The film is a delight, truly.",
                      source_text="Critics agree: the FILM is a delight!",
                      shared_ngrams=("the film is a delight",)),
            ShownPair("4", "9", "exact", 1.0, True, target_text="<script>alert('x')</script> & more",
                      source_text="<script>alert('x')</script> & more", shared_ngrams=("scriptalertxscript more",))]


def test_images_decode_to_the_callers_pixels(tmp_path):
    pairs = _image_pairs()
    out = write_page(tmp_path / "contamination.html", SUMMARY, pairs)
    assert out == tmp_path / "contamination.html"
    page = _parse(out)
    expected = [img for p in pairs for img in (p.target_image, p.source_image)]
    assert len(page.imgs) == len(expected) == 6
    for attrs, img in zip(page.imgs, expected):
        np.testing.assert_array_equal(_decode(attrs["src"]), img)
    assert "test/cat/0042.jpg" in page.imgs[0]["alt"] and "train/cat/0007.jpg" in page.imgs[1]["alt"]
    html_text = out.read_text()
    assert "image-rendering:pixelated" in html_text


def test_summary_table_and_method_sections(tmp_path):
    text = write_page(tmp_path / "p.html", SUMMARY, _image_pairs(), title="CIFAR <vs> ImageNet").read_text()
    assert "<title>CIFAR &lt;vs&gt; ImageNet</title>" in text
    for cell in ("<td>40</td>", "<td>3</td>", "0.0750 (7.50%)", "distance &lt;= 10", "same bytes",
                 "/data/train_set", "/data/test_set", "<td>500</td>", "<td>2</td>", "<td>train</td>"):
        assert cell in text, cell
    assert "elapsed_seconds" not in text
    # one heading per method, in first-seen order, each pair under its own method's heading
    assert re.findall(r"<h2>(.*?)</h2>", text) == ["Summary", "exact", "phash"]
    phash = text.split("<h2>phash</h2>")[1]
    assert "test/dog/0001.jpg" in phash and "test/cat/0042.jpg" not in phash
    assert phash.index("test/dog/0001.jpg") < phash.index("test/dog/0002.jpg")  # the caller's order
    assert "score 22 · <strong>clean</strong>" in phash and "score 4 · <strong>dirty</strong>" in phash


def test_marking_marks_exactly_the_shared_words_on_the_original_text():
    shared = ("the film is a delight",)
    assert _marked("The film is a delight, truly.", shared) == ["The", "film", "is", "a", "delight,"]
    assert _marked("Critics agree: the FILM is a delight!", shared) == ["the", "FILM", "is", "a", "delight!"]
    # a run must be consecutive: the same words, out of order or interrupted, stay unmarked
    assert _marked("The film is not a delight.", shared) == []
    # a punctuation-only word normalises to nothing, so it sits inside the run without being marked
    assert _marked("The film -- is a delight", shared) == ["The", "film", "is", "a", "delight"]
    # two overlapping runs, and the original whitespace kept
    assert mark_shared("a b  c\nd", ("a b c", "b c d")) == \
        "<mark>a</mark> <mark>b</mark>  <mark>c</mark>\n<mark>d</mark>"


def test_marking_uses_the_ngram_finders_normalisation():
    # apostrophes, hyphens, symbols and full-width letters: normalised exactly as text_overlap does
    text = "Don't miss the well-made ＦＩＬＭ at $5 — really."
    gram = " ".join(normalize(text)[:6])
    assert gram == "dont miss the wellmade film at"
    assert _marked(text, (gram,)) == ["Don&#x27;t", "miss", "the", "well-made", "ＦＩＬＭ", "at"]
    assert _marked(text, ("at 5 really",)) == ["at", "$5", "really."]  # the em dash word drops out


def test_text_pairs_are_marked_and_escaped(tmp_path):
    out = write_page(tmp_path / "contamination.html", {**SUMMARY, "modality": "text"}, _text_pairs())
    text = out.read_text()
    page = _parse(out)
    assert page.imgs == []
    assert page.marks[:10] == ["The", "film", "is", "a", "delight,", "the", "FILM", "is", "a", "delight!"]
    # the script-bearing text is shown as text, never run: the page's only <script> is its own
    assert "<script>alert" not in text
    assert "<mark>&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;</mark> &amp; <mark>more</mark>" in text
    assert len(page.scripts) == 1
    assert page.texts[:2] == ["The film is a delight, truly.", "Critics agree: the FILM is a delight!"]
    assert page.texts[2] == "<script>alert('x')</script> & more"
    assert page.marks[10:] == ["<script>alert('x')</script>", "more"] * 2  # "&" normalises to nothing


def test_self_contained(tmp_path):
    text = write_page(tmp_path / "p.html", SUMMARY, _image_pairs() + _text_pairs()).read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", text)
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert 'dataset.pageReady' in text and "data-natural-width" in text


def test_empty_pairs_say_so(tmp_path):
    text = write_page(tmp_path / "p.html", SUMMARY, []).read_text()
    assert "No pairs are shown." in text and not re.search(r"<img\s", text)
    assert "distance &lt;= 10" in text  # the summary is still there


def test_pair_with_nothing_to_show_is_a_value_error(tmp_path):
    bad = ShownPair("5", "6", "ngram", 0.2, False)
    with pytest.raises(ValueError, match=r"pair 1 .*neither images nor texts"):
        write_page(tmp_path / "p.html", SUMMARY, [_text_pairs()[0], bad])
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_bad_image_is_a_value_error(tmp_path):
    pair = ShownPair("a", "b", "phash", 1.0, True, np.zeros((8, 8, 3), np.float32), None)
    with pytest.raises(ValueError, match="uint8"):
        write_page(tmp_path / "p.html", SUMMARY, [pair])


def test_atomic_write_leaves_no_temp_files_and_keeps_other_files(tmp_path):
    (tmp_path / "matches.csv").write_text("target_id\n")
    path = tmp_path / "contamination.html"
    path.write_text("old page")
    write_page(path, SUMMARY, _image_pairs())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["contamination.html", "matches.csv"]
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "matches.csv").read_text() == "target_id\n"


def test_a_failed_replace_keeps_the_old_page(tmp_path, monkeypatch):
    path = tmp_path / "contamination.html"
    path.write_text("old page")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_page(path, SUMMARY, _image_pairs())
    assert [p.name for p in tmp_path.iterdir()] == ["contamination.html"] and path.read_text() == "old page"


def test_page_renders_in_headless_chromium(tmp_path):
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                                 shutil.which("chromium-browser") or "") if p and Path(p).is_file()), None)
    if chromium is None:
        pytest.skip("headless Chromium is not installed (Debian package 'chromium'); .ci/run installs it")
    page = write_page(tmp_path / "out" / "contamination.html", SUMMARY, _image_pairs() + _text_pairs())
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", page.resolve().as_uri()]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'data-page-ready="1"' in dom, f"page did not finish loading: {proc.stderr[-2000:]}"
    widths = re.findall(r'data-natural-width="(\d+)"', dom)
    images = len(re.findall(r"<img\s", dom))
    assert images == 6 and len(widths) == images
    assert sorted(int(w) for w in widths) == [32, 32, 32, 32, 40, 40]  # every image decoded, at its own size
    assert len(re.findall(r"<mark>", dom)) == 14 and "<mark>delight,</mark>" in dom
