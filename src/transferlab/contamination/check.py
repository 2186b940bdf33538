"""`transferlab contamination`: which target examples the source already holds, written to a folder.

    summary = check_contamination(read_split(src, "train"), read_split(tgt, "test"), CheckOptions(), out)

OUT/matches.csv    target_id,source_id,score,method,dirty: one row per target example and method (the best
                   source match by that method; source_id empty when there is none)
OUT/summary.json   counts and fractions overall ("dirty": found by any method) and per method, each rule and how
                   its threshold was chosen (from this source's null distribution at a false-positive rate, or
                   fixed), its rate on the null and its recall of the tool's own near-copies, the warnings (a
                   method that cannot reach the rate is disabled; a source that holds the target's own files or
                   the same content), the target split's fingerprint (`fingerprint.py`: what `evaluate
                   --contamination` checks its data against), time and peak memory
OUT/contamination.html   the closest pairs side by side (images, or the two texts with shared n-grams marked)
"""
from __future__ import annotations

import csv
import io
import logging
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferlab.contamination.calibrate import (
    DEFAULT_FPR,
    DEFAULT_NULL_SIZE,
    THRESHOLD_MODES,
    Thresholds,
    choose_thresholds,
    low_recall_warnings,
)
from transferlab.contamination.detect import (
    DEFAULT_K,
    DEFAULT_THRESHOLDS,
    HIGHER_IS_CLOSER,
    IMAGE_METHODS,
    calibrate_images,
    check_threshold,
    match_images,
    match_rule,
)
from transferlab.contamination.feature_store import MANIFEST, FeatureStore, describe_embedder, inputs_fingerprint
from transferlab.contamination.fingerprint import split_fingerprint
from transferlab.contamination.image_features import Embedder, ImageFeatures, features_from_arrays, image_features
from transferlab.contamination.indexed import ANN_KINDS, StoreIndex, ann_kind
from transferlab.contamination.inputs import SplitExamples
from transferlab.contamination.page import ShownPair, write_page
from transferlab.contamination.text_near import (
    DEFAULT_MIN_WORDS,
    MinHashIndex,
    calibrate_minhash,
    jaccard_threshold,
    minhash_null,
)
from transferlab.contamination.text_overlap import (
    DEFAULT_NORMALIZATION,
    NORMALIZATIONS,
    TextOverlap,
    calibrate_text,
    has_markup,
)
from transferlab.data._images import read_image
from transferlab.errors import ConfigError
from transferlab.outputs import CONTAMINATION_COLUMNS, CONTAMINATION_FORMAT
from transferlab.progress import Progress
from transferlab.safe_io import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

TEXT_METHODS = ("exact", "ngram", "minhash", "embedding")
INDEX_MODES = ("auto", "exact", "faiss")
# "auto": the in-memory exact search up to this many source images (CIFAR-10's 50,000 training images included:
# every measurement in docs/contamination.md was made on it, and it writes nothing but the three outputs), the
# feature store and faiss above (the exact search holds about 7 KB of features per source image in memory)
EXACT_UP_TO = 50_000
STORE_FOLDER = "source_features"  # OUT/source_features/: the store of --index faiss (kept: a rerun resumes from it)
DEFAULT_TEXT_METHODS = ("exact", "ngram")  # minhash on request (--methods exact,ngram,minhash): ~20 s on SST-2
DEFAULT_MAX_NGRAM_ROWS = 50  # SST-2's most repeated 8-gram is in 18 training rows (nested phrases of a sentence)
THUMB_SIDE = 96  # pixels: the page shows small copies, never the full photographs


@dataclass
class CheckOptions:
    """How to compare: methods (None: all of the modality), thresholds (method -> value, which wins for that
    method), how the other image thresholds are chosen (`threshold_mode` "data": from the source's own null
    distribution at the false-positive rate `fpr`, with at most `null_size` null images; "fixed": the CIFAR-10
    defaults), candidates per target for the aligned method, the embedding model and size, the text n (None:
    GPT-3's rule) and overlap threshold, near-copies made for the calibration (0: none), and pairs shown per
    method on the page."""

    methods: Sequence[str] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_mode: str = "data"
    fpr: float = DEFAULT_FPR
    null_size: int = DEFAULT_NULL_SIZE
    k: int = DEFAULT_K
    flip: bool = True  # images: the aligned method also scores each target mirrored (flipped copies)
    crop_views: bool = True  # images: candidates also by crop views' thumbnails (cropped copies)
    embed_model: str = "efficientnet_lite0"
    embed_size: int = 64
    ngram: int | None = None
    ngram_threshold: float = 0.0
    normalization: str = DEFAULT_NORMALIZATION  # text: "words", "gpt3" or "whitespace" (text_overlap.tokenizer)
    strip_markup: bool | None = None  # text: drop markup tags; None: when either side holds markup
    max_ngram_rows: int | None = DEFAULT_MAX_NGRAM_ROWS  # text: n-grams in more rows are boilerplate; None: off
    calibrate: int = 200
    show: int = 24
    batch: int = 256
    index: str = "auto"  # images: "exact" (in memory), "faiss" (the feature store and faiss indexes), "auto"
    ann: str = "auto"  # the faiss index: "flat" (exact), "ivf", "hnsw"; "auto": flat under IVF_FROM sources
    shard_size: int = 4096  # --index faiss: source images per shard of the store (a killed run resumes after one)
    text_model: str = "minilm_l6"  # text embedding method: the sentence model

    def check(self, modality: str) -> tuple[str, ...]:
        allowed = IMAGE_METHODS if modality == "image" else TEXT_METHODS
        methods = tuple(self.methods) if self.methods else (allowed if modality == "image" else DEFAULT_TEXT_METHODS)
        unknown = [m for m in methods if m not in allowed]
        if unknown:
            raise ConfigError(f"unknown {modality} method(s) {', '.join(unknown)}; choose from {', '.join(allowed)}")
        for m, value in self.thresholds.items():
            if modality == "text":
                raise ConfigError("--threshold applies to image methods; for text use --ngram-threshold")
            if m not in DEFAULT_THRESHOLDS:
                raise ConfigError(f"no threshold for method {m!r}; thresholds: {', '.join(DEFAULT_THRESHOLDS)}")
            try:
                check_threshold(m, value)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if self.threshold_mode not in THRESHOLD_MODES:
            raise ConfigError(f"--threshold-mode must be one of {', '.join(THRESHOLD_MODES)}, "
                              f"got {self.threshold_mode!r}")
        if not 0.0 < self.fpr < 0.5:
            raise ConfigError(f"--fpr must be in (0, 0.5) (a false-positive rate), got {self.fpr:g}")
        if self.null_size < 0:
            raise ConfigError(f"--null-size must be >= 0, got {self.null_size}")
        untuned = [m for m in methods if m in DEFAULT_THRESHOLDS and m not in self.thresholds]
        if modality == "image" and self.threshold_mode == "data" and self.null_size == 0 and untuned:
            raise ConfigError(f"--null-size 0 leaves nothing to calibrate {', '.join(untuned)} on: give "
                              "--threshold-mode fixed or a --threshold for each")
        if not 0.0 <= self.ngram_threshold <= 1.0:
            raise ConfigError(f"--ngram-threshold must be in 0..1 (an overlap fraction), got {self.ngram_threshold}")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        if self.max_ngram_rows is not None and self.max_ngram_rows < 1:
            raise ConfigError(f"--max-ngram-rows must be >= 1 (0 on the command line: off), got {self.max_ngram_rows}")
        if self.ngram is not None and not 1 <= self.ngram <= 50:
            raise ConfigError(f"--ngram must be in 1..50 words, got {self.ngram}")
        for name, value, low in (("--k", self.k, 1), ("--calibrate", self.calibrate, 0), ("--show", self.show, 0)):
            if value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        if not 16 <= self.embed_size <= 1024:
            raise ConfigError(f"--embed-size must be in 16..1024 pixels, got {self.embed_size}")
        if self.index not in INDEX_MODES:
            raise ConfigError(f"--index must be one of {', '.join(INDEX_MODES)}, got {self.index!r}")
        if self.ann not in ANN_KINDS:
            raise ConfigError(f"--ann must be one of {', '.join(ANN_KINDS)}, got {self.ann!r}")
        if self.shard_size < 1:
            raise ConfigError(f"--shard-size must be >= 1, got {self.shard_size}")
        return methods

    def use_store(self, n_source: int) -> bool:
        """Whether the image search goes through the feature store and faiss (`index`; "auto": from
        EXACT_UP_TO source images on)."""
        return self.index == "faiss" or self.index == "auto" and n_source > EXACT_UP_TO


@dataclass
class Found:
    """Per method: best source row (-1: none), score and dirty flag of each target example."""

    source: np.ndarray
    score: np.ndarray
    dirty: np.ndarray
    extra: list = field(default_factory=list)  # text: the shared n-grams of each target


def _split_info(ex: SplitExamples, data: str) -> dict:
    info = {"data": data, "split": ex.split, "n": len(ex), "skipped": ex.skipped.count}
    if ex.file is not None:
        info["file"] = ex.file
    return info


def check_distinct(source: SplitExamples, target: SplitExamples) -> list[str]:
    """Refuse a target whose every example is itself a source example (the same files, links followed, the same
    rows of the same file, the same digits): a ConfigError, before any work. Returns the warning for a target that
    shares only some examples with the source.

    Refused rather than warned about: such a check can only answer "100 % dirty", each example matched with
    itself, which says nothing about contamination; what a user meant is almost always the training split as the
    source (`--source-split train`) and the evaluation split as the target. A partial overlap (class selections
    that share a class, a target folder nested in the source) is reported, since its other examples still get a
    real answer."""
    own = set(source.origins())
    shared = sum(origin in own for origin in target.origins())
    if not shared:
        return []
    where = f"{target.file}" if target.modality == "text" else f"split {target.split}"
    if shared == len(target):
        raise ConfigError(f"the target ({where}, {len(target)} examples) is the source's own examples (the same "
                          "files, rows or scans): each would match itself and read as 100% dirty; give the training split as "
                          "--source (--source-split) and the evaluation split as --target (--split)")
    return [f"{shared} of the {len(target)} target examples are the source's own files (the same paths or rows): "
            "they are dirty because they are the same examples, not copies"]


def _same_content(source: Sequence[str], target: Sequence[str], what: str) -> list[str]:
    """The warning for a target that holds exactly the source's examples (the same multiset of contents: a copy
    of the same split under another name), where "100% dirty" means the two are one data set twice."""
    if len(source) != len(target) or Counter(source) != Counter(target):
        return []
    return [f"the source and the target hold the same {len(target)} {what} (identical content, e.g. one split "
            "copied under two names): every target is its own copy, so the dirty fraction says nothing about "
            "contamination; check the --source and --target paths and splits"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def load_embedder(name: str, size: int) -> Embedder:
    """The bundled (or any registered / timm / pretrained-folder) model, or a run's fine-tuned model."""
    from transferlab.runs import load_run_model, read_run_config

    if Path(name).is_dir() and read_run_config(name) is not None:
        model = load_run_model(name)[1]  # a run's selected weights (its head is not used)
    else:
        from transferlab.models import create_model

        model = create_model(name, 2)
    if model.cfg.modality != "image":
        raise ConfigError(f"--embed-model {name} is not an image model")
    return Embedder(model, size=size)


# ---- images -------------------------------------------------------------------------------------------------
def _thumb(path: str) -> np.ndarray:
    img = read_image(path, min_side=THUMB_SIDE)
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return np.asarray(img)


def _thumb_array(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(rgb)
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return np.asarray(img)


def _progress(what: str):
    """`what: 1200 / 5000 images | about 40 s left`, every ~10 s (image_features calls it), the time left from the
    images per second so far. Log lines, also on a terminal: the caller tells no end at which a bar would close."""
    progress, start = Progress(logger, bar=False), time.perf_counter()

    def report(done: int, total: int) -> None:
        progress.add("images", total)
        progress.completed("images", done, time.perf_counter() - start)
        progress.note(f"{what}: {done} / {total} images")
    return report


def _features(ex: SplitExamples, embedder: Embedder | None, batch: int, what: str) -> ImageFeatures:
    if ex.arrays is not None:  # the bundled digits: in memory, nothing to decode or skip
        return features_from_arrays(ex.arrays, ex.ids, embedder, batch)
    return image_features(ex.paths, ex.ids, embedder, batch, ex.skipped, _progress(what))


def _rgb_reader(ex: SplitExamples, feats: ImageFeatures) -> Callable[[int], np.ndarray]:
    """Row of `feats` -> its H x W x 3 uint8 image. In-memory features keep every row in order (nothing is
    skipped), so a row is its index in `ex.arrays`."""
    if ex.arrays is not None:
        return lambda row: ex.arrays[row]
    return lambda row: np.asarray(read_image(feats.paths[row]))


def _thumb_reader(ex: SplitExamples, feats: ImageFeatures) -> Callable[[int], np.ndarray]:
    if ex.arrays is not None:
        return lambda row: _thumb_array(ex.arrays[row])
    return lambda row: _thumb(feats.paths[row])


def _check_images(source: SplitExamples, target: SplitExamples, methods: tuple[str, ...], opts: CheckOptions,
                  out: Path | None = None):
    embedder = load_embedder(opts.embed_model, opts.embed_size) if {"embedding", "aligned"} & set(methods) else None
    if opts.use_store(len(source)):
        if out is None:
            raise ValueError("--index faiss keeps the source's features in the output folder: give `out`")
        return _check_images_indexed(source, target, methods, opts, embedder, out / STORE_FOLDER)
    t0 = time.perf_counter()
    src = _features(source, embedder, opts.batch, "source")
    if len(src) == 0:
        raise ConfigError(f"no source image could be read ({source.skipped.count} skipped)")
    tgt = _features(target, embedder, opts.batch, "target")
    if len(tgt) == 0:
        raise ConfigError(f"no target image could be read ({target.skipped.count} skipped)")
    logger.info("features of %d source and %d target images: %.0fs", len(src), len(tgt), time.perf_counter() - t0)
    t0 = time.perf_counter()
    found = match_images(tgt, src, methods, opts.k, opts.flip, opts.crop_views)
    logger.info("matched in %.0fs", time.perf_counter() - t0)
    chosen = choose_thresholds(src, methods, opts.threshold_mode, opts.fpr, opts.thresholds, opts.k, opts.null_size,
                               flip=opts.flip, crops=opts.crop_views)
    results, thresholds, enabled = _decide(found, chosen, methods)
    calibration = None
    if opts.calibrate and len(src) >= 3 and enabled:
        t0 = time.perf_counter()
        calibration = calibrate_images(src, _rgb_reader(source, src), embedder, enabled,
                                       {m: thresholds[m] for m in enabled if thresholds[m] is not None},
                                       n_copied=opts.calibrate, k=opts.k, flip=opts.flip, crops=opts.crop_views)
        calibration["seconds"] = round(time.perf_counter() - t0, 1)
    readers = (_thumb_reader(target, tgt), _thumb_reader(source, src))
    same = _same_content(src.keys, tgt.keys, "images")  # keys: the sha256 of each image's decoded pixels
    return tgt.ids, src.ids, results, thresholds, calibration, readers, chosen, same, {"index": "exact"}


def _decide(found: dict, chosen: Thresholds, methods: tuple[str, ...]):
    """Each method's dirty flags at its chosen threshold (none for a disabled method)."""
    choices = chosen.choices
    thresholds = {m: choices[m].threshold if m in choices else None for m in methods}
    enabled = [m for m in methods if m not in choices or not choices[m].disabled]
    results = {m: Found(r.source, r.score, r.dirty(thresholds[m]) if m in enabled else np.zeros(len(r.source), bool))
               for m, r in found.items()}
    return results, thresholds, enabled


def source_store(source: SplitExamples, embedder: Embedder | None, root: Path, shard_size: int,
                 batch: int = 256) -> FeatureStore:
    """The source's features in the store at `root`, shard by shard: a store of the same inputs (ids, paths,
    embedder, shard size) left by a killed run is continued after its last complete shard, one of other inputs
    (a rerun with --overwrite on other data) is replaced. The files skipped in every shard join `source.skipped`."""
    import json

    paths = source.paths if source.arrays is None else [""] * len(source)
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("inputs") != inputs_fingerprint(source.ids, paths, describe_embedder(embedder)) \
                or old.get("shard_size") != shard_size:
            logger.info("%s holds the features of other inputs: computing them again", root)
            shutil.rmtree(root)
    elif root.exists():
        shutil.rmtree(root)  # a store that never recorded its manifest: nothing to continue
    n_shards = -(-len(source) // shard_size)
    t0 = time.perf_counter()

    def done(i: int) -> None:
        logger.info("source features: shard %d of %d written (%.0fs)", i + 1, n_shards, time.perf_counter() - t0)

    store = FeatureStore.extract(root, None if source.arrays is not None else paths, source.ids, embedder,
                                 shard_size=shard_size, batch=batch, arrays=source.arrays, on_shard=done)
    for entry in store.manifest["shards"]:
        skipped = root / entry["name"] / "skipped.json"
        for item in json.loads(skipped.read_text(encoding="utf-8")) if skipped.is_file() else []:
            source.skipped.add(item["path"], item["reason"], log=False)
    return store


class _StoreNames:
    """Store row -> the source's id (matches.csv and the page), without a list of every id."""

    def __init__(self, ids: Sequence[str], input_rows: np.ndarray):
        self.ids, self.input_rows = ids, input_rows

    def __getitem__(self, row: int) -> str:
        return self.ids[int(self.input_rows[row])]


def _check_images_indexed(source: SplitExamples, target: SplitExamples, methods: tuple[str, ...],
                          opts: CheckOptions, embedder: Embedder | None, root: Path):
    """`_check_images` through the feature store and faiss (`indexed.StoreIndex`)."""
    t0 = time.perf_counter()
    store = source_store(source, embedder, root, opts.shard_size, opts.batch)
    kind = ann_kind(opts.ann, len(store))
    index = StoreIndex(store, kind, crops=opts.crop_views)
    if index.n == 0:
        raise ConfigError(f"no source image could be read ({source.skipped.count} skipped)")
    tgt = _features(target, embedder, opts.batch, "target")
    if len(tgt) == 0:
        raise ConfigError(f"no target image could be read ({target.skipped.count} skipped)")
    logger.info("store and %s indexes of %d source images, features of %d targets: %.0fs", kind, index.n, len(tgt),
                time.perf_counter() - t0)
    t0 = time.perf_counter()
    found = index.match(tgt, methods, opts.k, opts.flip, opts.crop_views)
    logger.info("matched in %.0fs", time.perf_counter() - t0)
    chosen = choose_thresholds(index, methods, opts.threshold_mode, opts.fpr, opts.thresholds, opts.k, opts.null_size,
                               flip=opts.flip, crops=opts.crop_views,
                               null_scorer=lambda _source, *args: index.null_scores(*args))
    results, thresholds, enabled = _decide(found, chosen, methods)
    rows = index.input_rows
    if source.arrays is not None:
        def rgb(row: int) -> np.ndarray:
            return source.arrays[int(rows[row])]

        def thumb(row: int) -> np.ndarray:
            return _thumb_array(source.arrays[int(rows[row])])
    else:
        def rgb(row: int) -> np.ndarray:
            return np.asarray(read_image(source.paths[int(rows[row])]))

        def thumb(row: int) -> np.ndarray:
            return _thumb(source.paths[int(rows[row])])
    calibration = None
    if opts.calibrate and index.n >= 3 and enabled:
        t0 = time.perf_counter()
        calibration = index.calibrate(rgb, embedder, enabled,
                                      {m: thresholds[m] for m in enabled if thresholds[m] is not None},
                                      n_copied=opts.calibrate, k=opts.k, flip=opts.flip, crops=opts.crop_views)
        calibration["seconds"] = round(time.perf_counter() - t0, 1)
    readers = (_thumb_reader(target, tgt), thumb)
    same = _same_content(index.keys(), tgt.keys, "images") if index.n == len(tgt) else []
    info = {"index": "faiss", "ann": kind, "store": STORE_FOLDER, "shard_size": opts.shard_size,
            "shards": len(store.manifest["shards"])}
    return tgt.ids, _StoreNames(source.ids, rows), results, thresholds, calibration, readers, chosen, same, info


def _method_choices(chosen: Thresholds, calibration: dict | None) -> dict[str, dict]:
    """Per method: how its threshold was chosen, its rate on the null, its recall of the tool's near-copies."""
    recall = {m: e["recall"] for m, e in (calibration or {}).get("methods", {}).items()}
    out = {}
    for m, c in chosen.choices.items():
        entry = c.to_dict()
        out[m] = {key: entry[key] for key in ("chosen", "disabled", "fpr", "n_null", "null_rate", "null_rate_upper95",
                                              "warning")}
        out[m]["copy_recall"] = recall.get(m)
        # a method that cannot reach the rate on this data is switched off, never a mass of false "dirty" flags
        out[m]["unusable"] = c.disabled_because if c.disabled else None
    return out


def _image_pairs(results: dict[str, Found], tgt_ids, src_ids, readers, show: int) -> list[ShownPair]:
    tgt_thumb, src_thumb = readers  # row -> thumbnail
    pairs = []
    for m, f in results.items():
        has = np.flatnonzero(f.source >= 0)
        if not len(has):
            continue
        closeness = f.score[has] if HIGHER_IS_CLOSER[m] else -f.score[has]
        order = has[np.lexsort((-closeness, ~f.dirty[has]))][:show]  # dirty first, then closest
        for t in order:
            s = int(f.source[t])
            pairs.append(ShownPair(tgt_ids[t], src_ids[s], m, float(f.score[t]), bool(f.dirty[t]),
                                   target_image=tgt_thumb(t), source_image=src_thumb(s)))
    return pairs


# ---- text ---------------------------------------------------------------------------------------------------
def _markup(source: SplitExamples, target: SplitExamples, opts: CheckOptions) -> tuple[bool, str]:
    """Whether tags are stripped, and why (for the summary and the log)."""
    if opts.strip_markup is not None:
        return opts.strip_markup, "--strip-markup" if opts.strip_markup else "off (given)"
    where = [name for name, ex in (("source", source), ("target", target)) if has_markup(ex.texts)]
    if where:
        return True, f"markup detected in the {' and '.join(where)}"
    return False, "no markup detected"


def _check_texts(source: SplitExamples, target: SplitExamples, methods: tuple[str, ...], opts: CheckOptions):
    if not source.texts:
        raise ConfigError("the source holds no usable text rows")
    strip, why = _markup(source, target, opts)
    logger.info("text normalisation %s, markup tags %s (%s)", opts.normalization, "stripped" if strip else "kept",
                why)
    index = TextOverlap(opts.ngram, normalization=opts.normalization, strip_markup=strip,
                        max_ngram_rows=opts.max_ngram_rows).fit(source.texts)
    matches = index.match(target.texts)
    n = matches[0].n if matches else index.n_for(target.texts)
    results = {}
    if "exact" in methods:
        src = np.array([m.source_id if m.exact else -1 for m in matches], dtype=np.int64)
        results["exact"] = Found(src, (src >= 0).astype(np.float64), src >= 0)
    if "ngram" in methods:
        results["ngram"] = Found(
            np.array([-1 if m.source_id is None or not m.shared else m.source_id for m in matches], dtype=np.int64),
            np.array([m.overlap for m in matches]), np.array([m.dirty_at(opts.ngram_threshold) for m in matches]),
            [m.shared_ngrams for m in matches])
    thresholds = {"exact": None, "ngram": opts.ngram_threshold}
    text = {"normalization": opts.normalization, "strip_markup": strip, "strip_markup_why": why,
            "boilerplate": {"max_ngram_rows": opts.max_ngram_rows,
                            "source_ngrams": index.boilerplate_ngrams(n) if opts.max_ngram_rows else 0,
                            "target_rows": sum(m.boilerplate > 0 for m in matches),
                            "target_ngrams": sum(m.boilerplate for m in matches)}}
    if text["boilerplate"]["source_ngrams"]:
        logger.info("boilerplate: %d source %d-grams in more than %d rows set aside (%d target rows hold some)",
                    text["boilerplate"]["source_ngrams"], n, opts.max_ngram_rows, text["boilerplate"]["target_rows"])
    calibration = None
    if opts.calibrate:
        calibration = calibrate_text(source.texts, n, thresholds=(opts.ngram_threshold,), copies=opts.calibrate,
                                     normalization=opts.normalization, strip_markup=strip,
                                     max_ngram_rows=opts.max_ngram_rows)
    if "minhash" in methods:
        t0 = time.perf_counter()
        near = MinHashIndex().fit([index.words_(t) for t in source.texts])
        null = minhash_null(near, n=n, n_null=opts.null_size or 5000)
        choice = jaccard_threshold(null, opts.fpr)
        target_words = [index.words_(t) for t in target.texts]
        rows, score = near.best(target_words)
        dirty = score >= choice.threshold - 1e-9 if not choice.disabled else np.zeros(len(rows), bool)
        shared = [tuple(sorted(set(w) & set(index.words_(source.texts[r])))) if r >= 0 else ()
                  for w, r in zip(target_words, rows)]  # the shared words, for the page to mark
        results["minhash"] = Found(rows, score, dirty, shared)
        thresholds["minhash"] = choice.threshold
        text["minhash"] = {"choice": choice, "min_words": near.min_words, "shingle": near.shingle,
                           "num_perm": near.num_perm, "candidate_jaccard": near.candidate_jaccard}
        if opts.calibrate and not choice.disabled:
            rec = calibrate_minhash(near, source.texts, index.words_, choice.threshold, copies=opts.calibrate)
            calibration = {**(calibration or {}), "minhash": rec}
        text["minhash"]["seconds"] = round(time.perf_counter() - t0, 1)
    if "embedding" in methods:
        results["embedding"], thresholds["embedding"], text["embedding"], rec = _text_embedding(
            source, target, index, n, opts)
        if rec is not None:
            calibration = {**(calibration or {}), "embedding": rec}
    long = [m for m in matches if m.n_words >= n]  # GPT-3's n-gram rule proper (no short-example rule)
    long_stats = {"min_words": n, "n": len(long), "n_dirty": sum(m.dirty_at(opts.ngram_threshold) for m in long)}
    same = _same_content(source.texts, target.texts, "rows")
    return results, {m: thresholds[m] for m in methods}, calibration, n, long_stats, same, text


def _text_embedding(source: SplitExamples, target: SplitExamples, overlap: TextOverlap, n: int, opts: CheckOptions):
    """The text `embedding` method (`text_embed.py`): (Found, threshold, summary entry, recall of edited copies)."""
    from transferlab.contamination.text_embed import TextEmbedder, TextEmbeddingIndex

    t0 = time.perf_counter()
    near = TextEmbeddingIndex(TextEmbedder(opts.text_model), opts.ann).fit(
        source.texts, [overlap.words_(t) for t in source.texts])
    null = near.null(n=n, n_null=opts.null_size or 5000)
    choice = jaccard_threshold(null, opts.fpr, floor=0.0, method="embedding")
    target_words = [overlap.words_(t) for t in target.texts]
    rows, score = near.best(target.texts, target_words)
    dirty = (score >= choice.threshold - 1e-9) & (rows >= 0) if not choice.disabled else np.zeros(len(rows), bool)
    shared = [tuple(sorted(set(w) & set(overlap.words_(source.texts[r])))) if r >= 0 else ()
              for w, r in zip(target_words, rows)]  # the shared words, for the page to mark
    rec = None
    if opts.calibrate and not choice.disabled:
        rec = near.recall(overlap.words_, choice.threshold, copies=opts.calibrate)
    entry = {"choice": choice, "model": opts.text_model, "pooling": "mean", "ann": near.kind_,
             "min_words": near.min_words, "seconds": round(time.perf_counter() - t0, 1)}
    return Found(rows, score, dirty, shared), choice.threshold, entry, rec


def _text_pairs(results: dict[str, Found], target: SplitExamples, source: SplitExamples, show: int) -> list[ShownPair]:
    pairs = []
    for m, f in results.items():
        has = np.flatnonzero(f.source >= 0)
        order = has[np.lexsort((-f.score[has], ~f.dirty[has]))][:show]
        for t in order:
            s = int(f.source[t])
            pairs.append(ShownPair(target.ids[t], source.ids[s], m, float(f.score[t]), bool(f.dirty[t]),
                                   target_text=target.texts[t], source_text=source.texts[s],
                                   shared_ngrams=tuple(f.extra[t]) if f.extra else ()))
    return pairs


# ---- outputs ------------------------------------------------------------------------------------------------
def matches_csv(target_ids: Sequence[str], source_ids: Sequence[str], results: dict[str, Found]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CONTAMINATION_COLUMNS)
    for t, tid in enumerate(target_ids):
        for m, f in results.items():
            s = int(f.source[t])
            w.writerow([tid, source_ids[s] if s >= 0 else "", f"{f.score[t]:.6g}", m, int(bool(f.dirty[t]))])
    return buf.getvalue()


def _rule(modality: str, method: str, threshold, n: int | None, chosen: Thresholds | None = None) -> str:
    if modality == "image":
        choice = chosen.choices.get(method) if chosen is not None else None
        if choice is not None and choice.disabled:
            return choice.how  # "disabled: why"
        return match_rule(method, threshold)
    if method == "exact":
        return "normalised texts equal"
    if method == "embedding":
        if threshold is None:
            return "disabled: no cosine threshold reaches the false-positive rate"
        return (f"cosine of minilm_l6 sentence embeddings >= {threshold:g} (texts of {DEFAULT_MIN_WORDS}+ words; "
                "faiss nearest, exact cosine)")
    if method == "minhash":
        if threshold is None:
            return "disabled: no Jaccard threshold reaches the false-positive rate"
        return (f"word-set Jaccard >= {threshold:g} (texts of {DEFAULT_MIN_WORDS}+ words; MinHash LSH candidates, "
                "exact Jaccard)")
    rule = f"shares a {n}-gram" + (f" and overlap >= {threshold:g}" if threshold else "")
    return rule + f" (or, under {n} words, is contained in a source row)"


def check_contamination(source: SplitExamples, target: SplitExamples, opts: CheckOptions, out: Path,
                        source_data: str = "", target_data: str = "", export_to: Path | None = None) -> dict:
    """Compare, write OUT/matches.csv, OUT/contamination.html and (last) OUT/summary.json; return the summary.
    `export_to`: also write the clean examples there (`export_clean`)."""
    if source.modality != target.modality:
        raise ConfigError(f"the source holds {source.modality} and the target {target.modality}: "
                          "they cannot be compared")
    methods = opts.check(target.modality)
    if export_to is not None and target.arrays is not None:
        raise ConfigError(f"--export-clean: {target.root} is bundled with scikit-learn, not files to copy")
    warnings = check_distinct(source, target)
    t_start = time.perf_counter()
    ngram_n, long_stats, chosen, text, search = None, None, None, None, None
    if target.modality == "image":
        tgt_ids, src_ids, results, thresholds, calibration, readers, chosen, same, search = _check_images(
            source, target, methods, opts, out)
    else:
        results, thresholds, calibration, ngram_n, long_stats, same, text = _check_texts(source, target, methods,
                                                                                         opts)
        tgt_ids, src_ids = target.ids, source.ids
    warnings += same
    for warning in warnings:
        logger.warning("%s", warning)
    dirty = np.logical_or.reduce([f.dirty for f in results.values()]) if tgt_ids else np.zeros(0, bool)
    n = len(tgt_ids)

    def frac(k: int) -> float | None:
        return k / n if n else None

    target_info = _split_info(target, target_data)
    # what the ids of matches.csv name: `evaluate --contamination` refuses data with another fingerprint
    target_info["fingerprint"] = split_fingerprint(target)
    summary = {
        "format": CONTAMINATION_FORMAT, "modality": target.modality,
        "source": _split_info(source, source_data), "target": target_info,
        "n_target": n, "n_dirty": int(dirty.sum()), "dirty_fraction": frac(int(dirty.sum())),
        "dirty_rule": "found by any method",
        "methods": {m: {"n_dirty": int(f.dirty.sum()), "dirty_fraction": frac(int(f.dirty.sum())),
                        "threshold": thresholds.get(m), "match_if": _rule(target.modality, m, thresholds.get(m),
                                                                          ngram_n, chosen)}
                    for m, f in results.items()},
        "options": ({"k": opts.k, "embed_model": opts.embed_model, "embed_size": opts.embed_size,
                     "flip": opts.flip, "crop_views": opts.crop_views, "search": search}
                    if target.modality == "image" else
                    {"n": ngram_n, "ngram_threshold": opts.ngram_threshold, "normalization": text["normalization"],
                     "strip_markup": text["strip_markup"], "max_ngram_rows": opts.max_ngram_rows}),
        "calibration": calibration,
    }
    if chosen is not None:  # images: how each threshold was chosen, and what could not be
        for m, entry in _method_choices(chosen, calibration).items():
            summary["methods"][m].update(entry)
        summary["thresholds"] = chosen.to_dict()
        warnings += chosen.warnings
        for warning in low_recall_warnings(chosen, calibration):
            logger.warning("%s", warning)
            warnings.append(warning)
    if text is not None:  # how the words were read, what was set aside, how minhash's threshold was chosen
        summary["normalization"] = {"mode": text["normalization"], "strip_markup": text["strip_markup"],
                                    "strip_markup_why": text["strip_markup_why"]}
        summary["boilerplate"] = text["boilerplate"]
        for near in ("minhash", "embedding"):
            if near not in text:
                continue
            mh = text.pop(near)
            choice = mh.pop("choice")
            rec = (calibration or {}).get(near) or {}
            summary["methods"][near].update({**choice.to_dict(), "copy_recall": rec.get("recall"),
                                             "copy_recall_by_k": rec.get("recall_by_k"), **mh})
            if choice.warning:
                warnings.append(choice.warning)
                logger.warning("%s", choice.warning)
    summary["warnings"] = warnings
    if long_stats is not None:
        summary["long_examples"] = long_stats  # the examples of at least n words, where n-grams decide
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "matches.csv", matches_csv(tgt_ids, src_ids, results))
    pairs = (_image_pairs(results, tgt_ids, src_ids, readers, opts.show) if target.modality == "image"
             else _text_pairs(results, target, source, opts.show))
    write_page(out / "contamination.html", summary, pairs)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    summary["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    atomic_write_json(out / "summary.json", summary)
    if export_to is not None:  # the checked examples (unreadable ones were not) that no method marks
        export_clean(target, {tid for tid, d in zip(tgt_ids, dirty) if not d}, export_to)
    return summary


def check_export_folder(out: Path) -> None:
    """--export-clean writes only into a new or empty folder."""
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--export-clean {out} is not empty; give a new or empty folder (nothing was written)")


def export_clean(target: SplitExamples, clean: set[str], out: Path) -> int:
    """Write the target split's `clean` examples to a new or empty folder `out`: images copied to the same
    relative paths (``test/cat/0042.jpg``), text rows to OUT/<split file's name>.tsv with the columns text and
    label (the defaults every command reads). Returns how many examples were written."""
    check_export_folder(out)
    if target.arrays is not None:
        raise ConfigError(f"--export-clean: {target.root} is bundled with scikit-learn, not files to copy")
    keep = [i for i, tid in enumerate(target.ids) if tid in clean]
    out.mkdir(parents=True, exist_ok=True)
    if target.modality == "image":
        for i in keep:
            dest = out / target.ids[i]  # our own listing's relative path, never a path read from a file
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target.paths[i], dest)
        return len(keep)
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["text", "label"])
    for i in keep:
        w.writerow([target.texts[i], target.labels[i]])
    atomic_write_text(out / f"{Path(target.file).stem}.tsv", buf.getvalue())
    return len(keep)


__all__ = ["CheckOptions", "check_contamination", "check_distinct", "check_export_folder", "export_clean"]
