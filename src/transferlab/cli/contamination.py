"""`transferlab contamination`: the target examples that a source data set already holds."""
from __future__ import annotations

import argparse


def _thresholds(values: list[str] | None) -> dict[str, float]:
    """--threshold METHOD=VALUE items as {method: value}, each checked: a known method, given once, with a value it
    can use (a whole Hamming distance for the hashes). Called first, before any path is looked at."""
    from transferlab.contamination.detect import DEFAULT_THRESHOLDS, check_threshold
    from transferlab.errors import ConfigError

    out = {}
    for item in values or []:
        method, sep, value = item.partition("=")
        method = method.strip()
        try:
            if not sep:
                raise ValueError
            number = float(value)
        except ValueError:
            raise ConfigError(f"--threshold {item!r}: expected METHOD=VALUE, e.g. aligned=0.9") from None
        if method in out:
            # one would silently win (the last, by argparse's order): the user meant one value, and we cannot know
            # which
            raise ConfigError(f"--threshold {method} is given twice ({out[method]:g} and {number:g}); give one "
                              "value per method")
        if method not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"no threshold for method {method!r}; thresholds: {', '.join(DEFAULT_THRESHOLDS)}")
        try:
            out[method] = check_threshold(method, number)
        except ValueError as exc:
            raise ConfigError(f"--threshold {item!r}: {exc}") from None
    return out


def _split_flags(args) -> dict[str, object]:
    """The digits-only options given, by flag (the bundled digits are split as finetune splits them; image folders
    and text files hold their splits as files, so there the flags would change nothing, and are refused)."""
    from transferlab.data._digits import is_digits_spec
    from transferlab.errors import ConfigError

    given = {flag: value for flag, value in (("--val-fraction", args.val_fraction),
                                             ("--test-fraction", args.test_fraction), ("--seed", args.seed))
             if value is not None}
    if given and not any(is_digits_spec(str(d)) for d in (args.source, args.target)):
        raise ConfigError(f"{next(iter(given))} splits the bundled digits only; {args.source} and {args.target} "
                          "hold their splits as folders or files (--split, --source-split choose them)")
    return given


def register(sub) -> None:
    from transferlab.contamination.calibrate import (
        DEFAULT_FPR,
        DEFAULT_NULL_SIZE,
        THRESHOLD_MODES,
    )
    from transferlab.contamination.detect import (
        DEFAULT_K,
        DEFAULT_THRESHOLDS,
        IMAGE_METHODS,
    )

    defaults = ", ".join(f"{m}={v:g}" for m, v in DEFAULT_THRESHOLDS.items())
    p = sub.add_parser(
        "contamination", help="find the target examples (e.g. a test split) that the source data already holds: "
                              "exact and near-copy images, shared word n-grams",
        description="Writes OUT/matches.csv (target_id,source_id,score,method,dirty per example and method), "
                    "OUT/summary.json and OUT/contamination.html (the closest pairs side by side). A target example "
                    "is dirty when any method finds it. Use the folder with `evaluate --contamination OUT` for "
                    "the metric on the clean and dirty parts.")
    p.add_argument("--source", required=True, help="the data a model was (pre-)trained on: an image folder, "
                                                   "text files or digits (digits:0-4), as finetune reads them")
    p.add_argument("--source-split", default="train", choices=["train", "val", "test"],
                   help="the source's split (default: train)")
    p.add_argument("--target", required=True, help="the evaluation data set (it may hold only --split)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="the target's split to check (default: test)")
    p.add_argument("--methods", help=f"comma-separated; images: {', '.join(IMAGE_METHODS)}; text: exact, ngram, "
                                     "minhash, embedding (default: all image methods; text: exact,ngram; aligned "
                                     "uses the embedding model too, to find its candidates; minhash: word-set "
                                     "Jaccard of edited copies; text embedding: cosine of minilm_l6 sentence "
                                     "embeddings; both with their threshold calibrated on the source at --fpr)")
    p.add_argument("--threshold", action="append", metavar="METHOD=VALUE",
                   help="an image method's threshold, repeatable; it wins over --threshold-mode for that method "
                        "(phash/dhash: Hamming distance 0-64, at most; embedding/aligned: similarity -1..1, at least)")
    p.add_argument("--threshold-mode", default="data", choices=THRESHOLD_MODES,
                   help="how the other image thresholds are chosen: data = from this source's own null distribution "
                        "(source images matched against the rest of the source) so that at most --fpr of images "
                        "that copy nothing are flagged, a method that cannot reach it disabled with a warning; "
                        f"fixed = the thresholds calibrated on CIFAR-10 at 32 px ({defaults}) (default: data)")
    p.add_argument("--fpr", type=float, default=DEFAULT_FPR,
                   help=f"--threshold-mode data: the false-positive rate each method is held to (default: "
                        f"{DEFAULT_FPR:g})")
    p.add_argument("--null-size", type=int, default=DEFAULT_NULL_SIZE, metavar="N",
                   help=f"source images (at most) matched against the rest of the source for the null distribution "
                        f"(default: {DEFAULT_NULL_SIZE}); 0: none (then --threshold-mode fixed, or --threshold for "
                        "each method)")
    p.add_argument("--k", type=int, default=DEFAULT_K,
                   help=f"candidates per target for the aligned method, by embedding and by thumbnail (default: "
                        f"{DEFAULT_K} each)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="images: do not search horizontally flipped copies (the aligned method scores each "
                        "target mirrored too, by default)")
    p.add_argument("--no-crop-views", dest="crop_views", action="store_false",
                   help="images: do not retrieve the aligned method's candidates by crop views (a 3 x 3 grid "
                        "of places), which find cropped copies among many sources")
    p.add_argument("--index", default="auto", choices=["auto", "exact", "faiss"],
                   help="images: how the source is searched: exact = its features in memory, searched exactly; "
                        "faiss = its features written shard by shard to OUT/source_features/ (a killed run, "
                        "started again with the same arguments, continues after the last complete shard) and "
                        "searched through faiss indexes, every candidate re-verified exactly, so memory is bounded "
                        "by the indexes; auto = exact up to 50000 source images, faiss above (default: auto)")
    p.add_argument("--ann", default="auto", choices=["auto", "flat", "ivf", "hnsw"],
                   help="--index faiss (and text --methods ...,embedding): the faiss index: flat = exact, ivf = "
                        "inverted lists (approximate: may miss a candidate, never makes a match), hnsw = graph; "
                        "auto = flat under 20000 rows, ivf from there (default: auto)")
    p.add_argument("--shard-size", type=int, default=4096, metavar="N",
                   help="--index faiss: source images per shard of the feature store (default: 4096)")
    p.add_argument("--embed-model", default="efficientnet_lite0",
                   help="the embedding's model: a registry name, timm architecture, pretrained folder or a run "
                        "folder (default: efficientnet_lite0)")
    p.add_argument("--embed-size", type=int, default=64, help="images are embedded at this side (default: 64)")
    p.add_argument("--ngram", type=int, help="text: n-gram length in words (default: GPT-3's rule, the 5th "
                                             "percentile of the target's lengths clamped to 8..13)")
    p.add_argument("--normalization", default="words", choices=["words", "gpt3", "whitespace"],
                   help="text: how words are read: words = every separator (backslash, slash, hyphen, markup) is a "
                        "word boundary, HTML entities unescaped, apostrophes inside words kept; gpt3 = GPT-3's "
                        "(punctuation deleted, so 'a\\b' is one word); whitespace = lower-cased split "
                        "(default: words)")
    p.add_argument("--strip-markup", action=argparse.BooleanOptionalAction, default=None,
                   help="text: drop markup tags (<br>, <p class=x>, escaped &lt;b&gt; too) before reading words "
                        "(default: on when the source or target holds markup; the summary says which)")
    p.add_argument("--max-ngram-rows", type=int, default=50, metavar="N",
                   help="text: an n-gram found in more than N source rows is boilerplate and makes no row dirty "
                        "on its own (default: 50; 0: off, GPT-3's rule)")
    p.add_argument("--ngram-threshold", type=float, default=0.0,
                   help="text: dirty when at least this fraction of the target's n-grams is shared "
                        "(default 0: any shared n-gram, GPT-3's rule)")
    p.add_argument("--calibrate", type=int, default=200, metavar="N",
                   help="near-copies of N source examples (x 6 kinds for images, x 3 edit counts for text) made "
                        "to measure recall and false positives at the thresholds used; 0: skip (default: 200)")
    p.add_argument("--show", type=int, default=24, help="pairs shown per method on the page (default: 24)")
    p.add_argument("--classes", help="comma-separated class names to read (both data sets; see finetune)")
    p.add_argument("--source-classes", help="class names to read from the source, when they differ")
    p.add_argument("--text-column", help="name of the text column (default: 'sentence' or 'text')")
    p.add_argument("--label-column", help="name of the label column (default: 'label')")
    p.add_argument("--no-header", action="store_true", help="text files have no header row")
    p.add_argument("--val-fraction", type=float,
                   help="digits: the fraction held out as the val split, as finetune holds it out (default: 0.2)")
    p.add_argument("--test-fraction", type=float,
                   help="digits: the fraction held out as the test split, as finetune's --test-fraction (default: "
                        "none, so digits has no test split)")
    p.add_argument("--seed", type=int, help="digits: the seed of those splits, as finetune's --seed (default: 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace a contamination check already in --out")
    p.add_argument("--export-clean", metavar="DIR",
                   help="also write the target split without its dirty examples to DIR (new or empty)")
    p.set_defaults(func=cmd_contamination)


def _resumable(out) -> str | None:
    """'resume' for a folder that a killed `--index faiss` run left: its feature store (a manifest) and at most
    the outputs written before summary.json (which is written last) or temporaries; else None (the usual checks)."""
    from transferlab.contamination.check import STORE_FOLDER
    from transferlab.contamination.feature_store import MANIFEST
    from transferlab.outputs import CONTAMINATION_FOLDER, TEMP_SUFFIX

    if not out.is_dir() or (out / "summary.json").exists() or not (out / STORE_FOLDER / MANIFEST).is_file():
        return None
    others = [p.name for p in out.iterdir() if p.name != STORE_FOLDER]
    ok = all(n in CONTAMINATION_FOLDER.files or n in CONTAMINATION_FOLDER.residue
             or n.startswith(".") and n.endswith(TEMP_SUFFIX) for n in others)
    return "resume" if ok else None


def _options(args):
    from transferlab.data import DataOptions

    split = {name: value for name, value in (("val_fraction", args.val_fraction),
                                             ("test_fraction", args.test_fraction), ("seed", args.seed))
             if value is not None}
    return DataOptions(text_column=args.text_column, label_column=args.label_column, no_header=args.no_header,
                       **split)


def cmd_contamination(args) -> None:
    from pathlib import Path

    from transferlab.contamination.check import (
        CheckOptions,
        check_contamination,
        check_distinct,
        check_export_folder,
    )
    from transferlab.contamination.inputs import read_split
    from transferlab.data._digits import is_digits_spec
    from transferlab.errors import ConfigError
    from transferlab.outputs import (
        CONTAMINATION_FOLDER,
        check_outputs,
        remove_owned,
        require_writable,
    )

    thresholds = _thresholds(args.threshold)  # the options first: a mistyped value must not wait for the data
    _split_flags(args)
    if args.export_clean and is_digits_spec(str(args.target)):
        raise ConfigError(f"--export-clean: {args.target} is bundled with scikit-learn, not files to copy")
    inputs = {"--source": args.source, "--target": args.target,
              "--embed-model": args.embed_model if args.embed_model and Path(args.embed_model).expanduser().is_dir()
              else None}
    # both outputs against the inputs and each other (equal or nested: refused), new paths included
    paths = check_outputs({"--out": args.out, "--export-clean": args.export_clean}, inputs)
    out, clean = paths["--out"], paths.get("--export-clean")
    state = _resumable(out) or require_writable(out, CONTAMINATION_FOLDER, args.overwrite)
    if clean is not None:
        check_export_folder(clean)  # before any work
    opts = CheckOptions(methods=[m.strip() for m in args.methods.split(",")] if args.methods else None,
                        thresholds=thresholds, threshold_mode=args.threshold_mode, fpr=args.fpr,
                        null_size=args.null_size, k=args.k, flip=args.flip, crop_views=args.crop_views,
                        embed_model=args.embed_model,
                        embed_size=args.embed_size, ngram=args.ngram, ngram_threshold=args.ngram_threshold,
                        calibrate=args.calibrate, show=args.show, normalization=args.normalization,
                        strip_markup=args.strip_markup, max_ngram_rows=args.max_ngram_rows or None,
                        index=args.index, ann=args.ann, shard_size=args.shard_size)
    source = read_split(args.source, args.source_split, _options(args), args.source_classes or args.classes)
    target = read_split(args.target, args.split, _options(args), args.classes)
    if source.modality != target.modality:
        raise ConfigError(f"--source {args.source} holds {source.modality} and --target {args.target} holds "
                          f"{target.modality}: they cannot be compared")
    opts.check(target.modality)  # bad options fail before any work
    # a target that is the source's own files is refused here, before --overwrite removes the previous check
    check_distinct(source, target)
    if state == "ours":  # --overwrite: our three files only, so that a failed rerun cannot mix two checks
        remove_owned(out, CONTAMINATION_FOLDER)
    elif state == "resume":  # a killed --index faiss run: its store stays, to be continued; any partial output goes
        for name in sorted(CONTAMINATION_FOLDER.files):
            (out / name).unlink(missing_ok=True)
    summary = check_contamination(source, target, opts, out, args.source, args.target, export_to=clean)
    _print_summary(summary)
    if clean is not None:
        kept = summary["n_target"] - summary["n_dirty"]
        print(f"clean split: {kept} of {len(target)} examples written to {clean}")
    print(f"written to {out} (matches.csv, summary.json, contamination.html)")


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print_summary(s: dict) -> None:
    src, tgt = s["source"], s["target"]
    print(f"target {tgt['data']} [{tgt['split']}]: {s['n_target']} examples ({tgt['skipped']} skipped); "
          f"source {src['data']} [{src['split']}]: {src['n']} ({src['skipped']} skipped)")
    frac = s["dirty_fraction"]
    print(f"dirty (any method): {s['n_dirty']} ({_fmt(frac)})")
    for m, e in s["methods"].items():
        how = f"  [{e['chosen']}; null rate {_fmt(e['null_rate'])}]" if e.get("chosen") and not e["disabled"] else ""
        print(f"  {m:<10} {e['n_dirty']:>7} ({_fmt(e['dirty_fraction'])})  {e['match_if']}{how}")
    th = s.get("thresholds")
    if th and th.get("null"):
        null = th["null"]
        print(f"null: {null['n']} source images matched against the rest of the source ({null['seconds']:.0f}s); "
              f"share flagged by any method {_fmt(th['null_rate_any'])}")
    for warning in s.get("warnings", []):
        print(f"warning: {warning}")
    long = s.get("long_examples")
    if long:
        print(f"  of the {long['n']} examples of {long['min_words']}+ words: {long['n_dirty']} dirty")
    norm, boiler = s.get("normalization"), s.get("boilerplate")
    if norm:
        print(f"normalisation: {norm['mode']}; markup tags {'stripped' if norm['strip_markup'] else 'kept'} "
              f"({norm['strip_markup_why']})")
    if boiler and boiler["max_ngram_rows"]:
        print(f"boilerplate: {boiler['source_ngrams']} source n-grams in more than {boiler['max_ngram_rows']} rows "
              f"set aside ({boiler['target_rows']} target rows hold some)")
    cal = s.get("calibration")
    if not cal:
        return
    if s["modality"] == "image":
        print(f"calibration: near-copies of {cal['n_copied']} source images ({cal['n_copies']} copies) and "
              f"{cal['n_negatives']} held-out source images as negatives:")
        for m, e in cal["methods"].items():
            kinds = ", ".join(f"{k} {_fmt(v)}" for k, v in e["recall_by_kind"].items())
            print(f"  {m:<10} recall {_fmt(e['recall'])} ({kinds}); false-positive rate "
                  f"{_fmt(e['false_positive_rate'])}, precision {_fmt(e['precision'])}")
        a = cal["any"]
        print(f"  any method recall {_fmt(a['recall'])}, false-positive rate {_fmt(a['false_positive_rate'])}, "
              f"precision {_fmt(a['precision'])}")
    else:
        mh = cal.get("minhash")
        if mh:
            by_k = ", ".join(f"{k} edit(s) {_fmt(v)}" for k, v in mh["recall_by_k"].items())
            print(f"minhash calibration: {mh['positives']} edited copies of source texts: recall {_fmt(mh['recall'])} "
                  f"({by_k}) at Jaccard >= {mh['threshold']:g}")
        emb = cal.get("embedding")
        if emb:
            by_k = ", ".join(f"{k} edit(s) {_fmt(v)}" for k, v in emb["recall_by_k"].items())
            print(f"embedding calibration: {emb['positives']} edited copies of source texts: recall "
                  f"{_fmt(emb['recall'])} ({by_k}) at cosine >= {emb['threshold']:g}")
        if "by_threshold" not in cal:
            return
        row = cal["by_threshold"][0]
        by_k = ", ".join(f"{k} edit(s) {_fmt(v)}" for k, v in row["recall_by_k"].items())
        print(f"calibration (n={cal['n']}): {cal['positives']} edited copies of source rows, {cal['negatives']} "
              f"held-out source rows (not independent of the rest: their false positives are often real overlaps, "
              f"so the rate is an upper bound): recall {_fmt(row['recall'])} ({by_k}); false-positive rate "
              f"{_fmt(row['false_positive_rate'])}, precision {_fmt(row['precision'])}")
