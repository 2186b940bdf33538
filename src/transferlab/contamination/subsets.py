"""Accuracy on the clean and the dirty examples of an evaluation split, from a `transferlab contamination` folder.

    contamination = read_contamination("contamination_out")        # DIR/summary.json + DIR/matches.csv, checked
    examples, split = score_contamination(model, bundle, bundle.test, "test", contamination, device, 64)
    split.to_dict()  # {"all": {"n", "accuracy", "se"}, "clean": {...}, "dirty": {...}, "uncovered": int}

A target example is dirty when any of its matches.csv rows has dirty=1, clean when it has rows and none is dirty,
uncovered when it has none (it counts in "all" only). Both files are untrusted input: ids are only compared as
strings, never used as paths, and anything malformed is one ConfigError naming the file (and the line).
The folder applies only to the data its target fingerprint (`fingerprint.py`) was computed on: an id names a text
row by its index and an image by its relative path, so the same ids in other data would name other examples.

Importing this module registers the comparison report's "contamination" section (`compare --contamination`).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from transferlab import stats
from transferlab.errors import ConfigError
from transferlab.outputs import CONTAMINATION_COLUMNS, CONTAMINATION_FORMAT
from transferlab.sections import Bullets, Section, Table, Text, register_section

logger = logging.getLogger(__name__)

MODALITIES = ("image", "text")
_MAX_SUMMARY_BYTES = 16 * 2**20  # a summary is a few hundred bytes; refuse to parse a huge file as one
_SHOWN = 120  # characters of an untrusted value quoted in a message


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."


@dataclass(frozen=True)
class Contamination:
    """What a contamination folder says about its target split."""

    folder: str
    modality: str  # "image" or "text"
    target: dict  # {"data": str, "split": str, "file": str | None}: what the matches were computed for
    covered: frozenset[str]  # target ids with at least one row
    dirty: frozenset[str]  # target ids with a row marked dirty
    fingerprint: str | None = None  # of what the ids name (summary target.fingerprint); None: made before it existed

    def describe(self) -> str:
        """'data 'X', split 'test', file 'test.tsv'' (quoted: the values come from the file)."""
        text = f"data {_shown(self.target['data'])}, split {_shown(self.target['split'])}"
        return text + (f", file {_shown(self.target['file'])}" if self.target.get("file") else "")


def read_contamination(folder: str | Path) -> Contamination:
    """Read and check DIR/summary.json and DIR/matches.csv; ConfigError (one line) when either is unusable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--contamination {folder}: no such folder; give the --out folder of "
                          "transferlab contamination")
    modality, target = _read_summary(folder / "summary.json", folder)
    covered, dirty = _read_matches(folder / "matches.csv", folder)
    return Contamination(str(folder), modality, target, frozenset(covered), frozenset(dirty), target["fingerprint"])


def _read_summary(path: Path, folder: Path) -> tuple[str, dict]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; {folder} is not an output folder of transferlab contamination")
    if path.stat().st_size > _MAX_SUMMARY_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes, too large for a contamination summary")
    try:
        summary = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(summary, dict) or summary.get("format") != CONTAMINATION_FORMAT:
        found = summary.get("format") if isinstance(summary, dict) else None
        raise ConfigError(f"{path}: not a transferlab contamination summary (format {_shown(found)}, expected "
                          f"{CONTAMINATION_FORMAT!r})")
    modality = summary.get("modality")
    if modality not in MODALITIES:
        raise ConfigError(f"{path}: modality {_shown(modality)}; expected 'image' or 'text'")
    target = summary.get("target")
    if not isinstance(target, dict):
        raise ConfigError(f"{path}: no \"target\" object (the data, split and file the matches were computed for)")
    wanted = ("data", "split", "file") if modality == "text" else ("data", "split")
    for key in wanted:
        if not isinstance(target.get(key), str) or not target[key]:
            raise ConfigError(f"{path}: target.{key} is {_shown(target.get(key))}; expected a non-empty string")
    fingerprint = target.get("fingerprint")
    # absent: a folder from before fingerprints, refused where it is applied (`check_fingerprint`), so that it can
    # still be read and described; present, it must be what the check writes
    if fingerprint is not None and not (isinstance(fingerprint, str) and len(fingerprint) == 64
                                        and all(c in "0123456789abcdef" for c in fingerprint)):
        raise ConfigError(f"{path}: target.fingerprint is {_shown(fingerprint)}; expected 64 hex digits (a sha256)")
    return modality, {"data": target["data"], "split": target["split"], "file": target.get("file") if
                      modality == "text" else None, "fingerprint": fingerprint}


def _read_matches(path: Path, folder: Path) -> tuple[set[str], set[str]]:
    if not path.is_file():
        raise ConfigError(f"{path}: missing; {folder} is not an output folder of transferlab contamination")
    covered: set[str] = set()
    dirty: set[str] = set()
    reader = None
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ConfigError(f"{path}: empty; expected the header {','.join(CONTAMINATION_COLUMNS)}")
            names = [name.strip() for name in header]
            missing = [c for c in CONTAMINATION_COLUMNS if c not in names]
            if missing:
                raise ConfigError(f"{path}: no column {', '.join(missing)}; expected the header "
                                  f"{','.join(CONTAMINATION_COLUMNS)} (found {_shown(','.join(names))})")
            doubled = sorted({c for c in CONTAMINATION_COLUMNS if names.count(c) > 1})
            if doubled:
                raise ConfigError(f"{path}: column {', '.join(doubled)} appears more than once")
            at = {c: names.index(c) for c in CONTAMINATION_COLUMNS}
            for row in reader:
                line = reader.line_num
                if not row:
                    continue  # a blank line
                if len(row) != len(names):
                    raise ConfigError(f"{path}:{line}: expected {len(names)} fields, found {len(row)}")
                target_id, flag = row[at["target_id"]], row[at["dirty"]].strip()
                if not target_id:
                    raise ConfigError(f"{path}:{line}: empty target_id")
                if flag not in ("0", "1"):
                    raise ConfigError(f"{path}:{line}: dirty is {_shown(row[at['dirty']])}; expected 0 or 1")
                if not row[at["method"]].strip():
                    raise ConfigError(f"{path}:{line}: empty method")
                if not _is_score(row[at["score"]]):
                    raise ConfigError(f"{path}:{line}: score is {_shown(row[at['score']])}; expected a number "
                                      "or nothing")
                covered.add(target_id)
                if flag == "1":
                    dirty.add(target_id)
    except csv.Error as exc:  # a field above csv's size limit
        line = reader.line_num if reader is not None else 1
        raise ConfigError(f"{path}:{line}: cannot parse the file ({exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return covered, dirty


def _is_score(text: str) -> bool:
    if not text.strip():
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- accuracy on the parts ---------------------------------------------------------------------------------
@dataclass
class SubsetAccuracy:
    n: int = 0
    correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def se(self) -> float | None:
        """The binomial standard error sqrt(p (1 - p) / n); None when n is 0."""
        p = self.accuracy
        return None if p is None else math.sqrt(p * (1 - p) / self.n)

    def add(self, correct: bool) -> None:
        self.n += 1
        self.correct += bool(correct)

    def to_dict(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "se": self.se}


@dataclass
class ContaminationSplit:
    all: SubsetAccuracy
    clean: SubsetAccuracy
    dirty: SubsetAccuracy
    uncovered: int  # evaluated examples that matches.csv has no row for (in "all" only)

    def to_dict(self) -> dict:
        return {"all": self.all.to_dict(), "clean": self.clean.to_dict(), "dirty": self.dirty.to_dict(),
                "uncovered": self.uncovered}


def split_accuracy(contamination: Contamination, ids: list[str], correct: list[bool | None],
                   evaluated: str = "the evaluated split") -> ContaminationSplit:
    """Accuracy on all, clean and dirty examples: `ids[i]` names example i, `correct[i]` says whether it was
    predicted correctly (None: not evaluated, e.g. unreadable). `evaluated` names the data in the refusal: a
    ConfigError when matches.csv covers none of the evaluated examples."""
    if len(ids) != len(correct):
        raise ValueError(f"{len(ids)} ids for {len(correct)} results")
    split = ContaminationSplit(SubsetAccuracy(), SubsetAccuracy(), SubsetAccuracy(), 0)
    for example_id, ok in zip(ids, correct):
        if ok is None:
            continue
        split.all.add(ok)
        if example_id in contamination.dirty:
            split.dirty.add(ok)
        elif example_id in contamination.covered:
            split.clean.add(ok)
        else:
            split.uncovered += 1
    if split.clean.n + split.dirty.n == 0:
        _refuse_uncovered(contamination, f"the {split.all.n} examples evaluated ({evaluated})")
    return split


def _refuse_uncovered(contamination: Contamination, what: str) -> None:
    raise ConfigError(f"{contamination.folder}/matches.csv covers none of {what}; it was computed for "
                      f"{contamination.describe()}: run transferlab contamination on the data and split you evaluate")


def describe_split(bundle, dataset, split: str) -> str:
    from transferlab.data import split_file

    file = split_file(dataset)
    return f"data {bundle.source}, split {split}" + (f", file {file}" if file else "")


def check_applies(contamination: Contamination, bundle, dataset, split: str) -> None:
    """Refuse a contamination folder of the other modality and, for text, one computed for another file (its row
    ids would name other rows); warn when it was computed for another split."""
    from transferlab.data import split_file

    if contamination.modality != bundle.kind:
        raise ConfigError(f"{contamination.folder} holds the contamination of {contamination.modality} data "
                          f"({contamination.describe()}), but {bundle.source} holds {bundle.kind} data")
    if contamination.modality == "text":
        file = split_file(dataset)
        if file != contamination.target["file"]:
            raise ConfigError(f"{contamination.folder} was computed for {contamination.describe()}, but the {split} "
                              f"split evaluated here was read from {file}: row ids of another file name other rows; "
                              f"run transferlab contamination with --split {split} on {bundle.source}")
    if contamination.target["split"] != split:
        logger.warning("%s was computed for split %s; evaluating split %s", contamination.folder,
                       _shown(contamination.target["split"]), split)


def check_fingerprint(contamination: Contamination, bundle, dataset, split: str) -> None:
    """Refuse a folder whose ids name other examples in this data: computed on other files (a test.tsv of the same
    name, another image folder with the same relative paths), on files changed since, or before fingerprints were
    recorded (nothing to check it by)."""
    from transferlab.contamination.fingerprint import evaluated_fingerprint

    if contamination.fingerprint is None:
        raise ConfigError(f"{contamination.folder}/summary.json records no fingerprint of its target split (it was "
                          f"made by an older transferlab), so nothing shows its ids name the examples of "
                          f"{describe_split(bundle, dataset, split)}: re-run transferlab contamination on this data")
    found = evaluated_fingerprint(bundle, dataset, contamination.target["split"])
    if found != contamination.fingerprint:
        why = (f"this data has no split {_shown(contamination.target['split'])} to compare" if found is None else
               f"fingerprint {contamination.fingerprint[:12]}... recorded, {found[:12]}... here")
        raise ConfigError(f"{contamination.folder} was computed on other data than "
                          f"{describe_split(bundle, dataset, split)} ({why}: other files, or files changed since); "
                          "its ids would name other examples: run transferlab contamination on the data you evaluate")


def score_contamination(model, bundle, dataset, split: str, contamination: Contamination, device,
                        batch_size: int, prepare=None, autocast=nullcontext):
    """(ExampleResults, ContaminationSplit) of `model` on `dataset` (the `split` of `bundle`)."""
    from transferlab.data import example_ids
    from transferlab.training.evaluate import evaluate_examples

    check_applies(contamination, bundle, dataset, split)
    ids = example_ids(bundle, dataset)
    if contamination.covered.isdisjoint(ids):  # before any forward pass: a folder of other data fails at once
        _refuse_uncovered(contamination, f"the {len(ids)} examples of {describe_split(bundle, dataset, split)}")
    check_fingerprint(contamination, bundle, dataset, split)  # also before any forward pass
    examples = evaluate_examples(model, dataset, bundle.collate, device, batch_size, prepare=prepare,
                                 autocast=autocast)
    return examples, split_accuracy(contamination, ids, examples.correct, describe_split(bundle, dataset, split))


def run_contamination(run_dir: str | Path, contamination: Contamination, split: str = "test") -> ContaminationSplit:
    """A run's selected weights scored on the parts of its data's `split`."""
    from transferlab.runs import load_run
    from transferlab.training.trainer import resolve_device

    config, bundle, model, _ = load_run(run_dir)
    dataset = {"val": bundle.val, "test": bundle.test, "train": bundle.train}[split]
    if dataset is None:
        raise ConfigError(f"{config.data} has no {split} split")
    device = resolve_device(config.train.device, fallback=True)
    model.to(device)
    return score_contamination(model, bundle, dataset, split, contamination, device,
                               config.train.eval_batch_size)[1]


def _dirty_minus_clean(splits: list[ContaminationSplit]) -> "stats.Comparison | None":
    """Accuracy on the dirty examples minus on the clean ones (disjoint example sets): Fisher's exact test for one
    seed, else the per-seed accuracies with their binomial variance; None when either part is empty."""
    if any(s.dirty.n == 0 or s.clean.n == 0 for s in splits):
        return None
    if len(splits) == 1:
        s = splits[0]
        return stats.two_proportions(s.dirty.correct, s.dirty.n, s.clean.correct, s.clean.n)
    return stats.unpaired_accuracies([s.dirty.accuracy for s in splits], min(s.dirty.n for s in splits),
                                     [s.clean.accuracy for s in splits], min(s.clean.n for s in splits))


# ---- the comparison report's section ------------------------------------------------------------------------
PARTS = ("all", "clean", "dirty")


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def _cell(part: dict) -> str:
    if part["mean"] is None:
        return f"- (n={part['n']})"
    spread = f" ± {part['std']:.3f}" if part["std"] else ""
    return f"{part['mean']:.3f}{spread} (n={part['n']})"


@register_section("contamination", order=68)
def contamination_section(ctx) -> Section | None:
    """Test accuracy per strategy on all, clean and dirty test examples (with `compare --contamination DIR`)."""
    folder = getattr(ctx, "contamination", None)
    if not folder:
        return None
    title = "Contamination"
    contamination = read_contamination(folder)
    r = ctx.results
    finished = [run for run in r.runs if run.status == "finished"]
    if not finished:
        return Section(title, [Text("Not computed: no run finished.")])
    if all(run.test is None for run in finished):
        note = (f"Not computed: {r.data} has no test split, and contamination is scored on the test split "
                f"({folder} was computed for {contamination.describe()}).")
        return Section(title, [Text(note)], data={"folder": str(folder), "note": note})
    rows, data, notes = [], {}, []
    for name in r.strategies:
        per_seed = []
        for run in r.finished_runs(name):
            logger.info("report section contamination: %s seed %s", name, run.seed)
            try:
                per_seed.append((run.seed, run_contamination(run.run_dir, contamination)))
            except Exception as exc:  # noqa: BLE001  (a diagnostic must not sink the report)
                notes.append(f"{name} (seed {run.seed}): not computed ({type(exc).__name__}: {exc})")
        if not per_seed:
            continue
        entry = {"seeds": [seed for seed, _ in per_seed], "uncovered": min(s.uncovered for _, s in per_seed),
                 "per_seed": [{"seed": seed, **s.to_dict()} for seed, s in per_seed]}
        for part in PARTS:
            subsets = [getattr(s, part) for _, s in per_seed]
            mean, std = _mean_std([x.accuracy for x in subsets if x.accuracy is not None])
            entry[part] = {"mean": mean, "std": std, "n": min(x.n for x in subsets)}
        entry["dirty_minus_clean"] = _dirty_minus_clean([s for _, s in per_seed])
        data[name] = entry
        rows.append([name, str(len(per_seed))] + [_cell(entry[part]) for part in PARTS] + [str(entry["uncovered"])])
    tested = [name for name in data if data[name]["dirty_minus_clean"] is not None]
    for name, test in zip(tested, stats.holm([data[name]["dirty_minus_clean"] for name in tested])):
        data[name]["dirty_minus_clean"] = test.to_dict()
    for row in rows:
        test = data[row[0]]["dirty_minus_clean"]
        row.append("-" if test is None else f"{test['band']} {test['verdict']}")
    blocks = [Text(f"Test accuracy of each strategy's selected weights on every test example (all), on those "
                   f"the source data holds (dirty: a row of {folder}/matches.csv marks them) and on the rest of "
                   "those matches.csv covers (clean); mean ± std over seeds, n examples. Test examples without a row "
                   "in matches.csv count in all only (not covered). The matches were computed "
                   f"for {contamination.describe()}. Much higher accuracy on dirty than on clean examples suggests "
                   "recall of source data rather than transfer. Dirty minus clean: the difference with its 95% "
                   f"interval, Holm-corrected over the strategies, under the project's rule: {stats.RULE}")]
    if rows:
        blocks.append(Table(["strategy", "seeds", "all", "clean", "dirty", "not covered", "dirty minus clean"],
                            rows))
    if notes:
        blocks.append(Bullets(notes))
    return Section(title, blocks, data={"folder": str(folder), "computed_for": contamination.target,
                                        "strategies": data, "notes": notes})
