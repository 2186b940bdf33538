"""A poisoned --cache-dir: every kind of tampered frozen-prefix entry is noticed, named in a WARNING, recomputed
and replaced, and the run's results are those of a run without the cache.

Each case is a tiny real run (`test_efficientnet`, random init from the seed, digits at 32 px, 96 training and
64 validation images, 2 epochs) that reads a copy of a clean cache folder in which one entry was tampered with.
"Tampered, digest stale" keeps the file's metadata, so its sha256 no longer fits; "forged" rewrites the metadata
with the tool's own writer (`entry_metadata`), as someone who knows the format would, so only the checks
against the model and the data are left to catch it (docs/reliability.md, "The frozen-prefix cache")."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.reliability.conftest import TIMING_KEYS, strip_keys, strip_timing, tensors_and_meta
from transferlab.cli import main
from transferlab.training.prefix_cache import Expected, entry_metadata

ARGS = ["finetune", "--model", "test_efficientnet", "--data", "digits", "--image-size", "32", "--max-train", "96",
        "--max-val", "64", "--epochs", "2"]
# Whole backbone frozen: entries hold the head's input "features" (N, 256); freeze:k=2: group 1's output "h".
STRATEGIES = {"features": "linear_probe", "h": "freeze:k=2"}
TRAIN_EXAMPLES, VAL_EXAMPLES = 96, 64
LOGGER = "transferlab.training.prefix_cache"
VARYING = TIMING_KEYS | {"cache_dir"}  # metrics.json fields that may differ: wall-clock ones, the folder's name


def _run(out: Path, strategy: str, *extra: str) -> dict:
    try:
        code = main([*ARGS, "--strategy", strategy, "--out", str(out), *extra])
    except SystemExit as exc:
        code = exc.code
    assert code == 0
    return json.loads((out / "metrics.json").read_text())


def _read(path: Path) -> tuple[dict, dict]:
    """Tensors (copied out of safetensors' memory map: the file is overwritten or cut short later) and metadata."""
    tensors, meta = tensors_and_meta(path)
    return {name: t.clone() for name, t in tensors.items()}, meta


def _entries(folder: Path) -> dict[str, Path]:
    """"train" and "val": the entry file of each split, told apart by its number of examples."""
    split = {str(TRAIN_EXAMPLES): "train", str(VAL_EXAMPLES): "val"}
    return {split[_read(p)[1]["examples"]]: p for p in folder.glob("*.safetensors") if len(p.stem) == 64}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    """Per output kind: the metrics of a run without the cache and of a run that filled a clean cache folder."""
    root = tmp_path_factory.mktemp("poison_baseline")
    out = {}
    for kind, strategy in STRATEGIES.items():
        plain = _run(root / f"{kind}_plain", strategy, "--no-cache")
        cached = _run(root / f"{kind}_cached", strategy, "--cache-dir", str(root / f"{kind}_cache"))
        assert cached["cache_seconds"] > 0 and plain["cache_seconds"] == 0
        out[kind] = {"strategy": strategy, "plain": plain, "cached": cached, "folder": root / f"{kind}_cache",
                     "history": (root / f"{kind}_cached" / "history.jsonl").read_text()}
        assert sorted(_entries(out[kind]["folder"])) == ["train", "val"]
    return out


def _forged(meta: dict, tensors: dict) -> dict:
    """Metadata that fits `tensors` exactly, digest included, claiming the entry `meta` described."""
    claim = Expected(fingerprint=meta["fingerprint"], examples=int(meta["examples"]), classes=int(meta["classes"]),
                     outputs=())
    return entry_metadata(meta["key"], tensors, claim)


def _output(tensors: dict) -> str:
    return "features" if "features" in tensors else "h"


def _changed(change, forge: bool):
    """A tampering that changes the tensors in place; the metadata kept as it was (stale) or forged."""

    def tamper(path: Path, other: Path) -> None:
        tensors, meta = _read(path)
        change(tensors)
        save_file(tensors, str(path), metadata=_forged(meta, tensors) if forge else meta)

    return tamper


def _set(name, value):
    def change(tensors):
        tensors[name] = value(tensors)
    return change


def _out(fn):
    return lambda tensors: tensors.__setitem__(_output(tensors), fn(tensors[_output(tensors)]))


def _shuffled(t: torch.Tensor) -> torch.Tensor:
    return t[torch.roll(torch.arange(t.shape[0]), 1)]  # every row gets its neighbour's outputs


def _index_out_of_range(tensors):
    tensors["index"] = tensors["index"].clone()
    tensors["index"][-1] = TRAIN_EXAMPLES  # one past the split's last example


def _label_out_of_range(tensors):
    tensors["labels"] = tensors["labels"].clone()
    tensors["labels"][0] = 10  # digits has classes 0..9


def _other_split(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)


def _other_split_claiming_this_one(path: Path, other: Path) -> None:
    """The validation entry's rows, with metadata claiming to be this entry (key, fingerprint, examples)."""
    _, meta = _read(path)
    tensors, _ = _read(other)
    save_file(tensors, str(path), metadata=_forged(meta, tensors))


def _truncated(path: Path, other: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _garbage(path: Path, other: Path) -> None:
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())


def _without_metadata(path: Path, other: Path) -> None:
    """A valid safetensors file with the right tensors but no metadata (another version, or a careless copy)."""
    tensors, _ = _read(path)
    save_file(tensors, str(path))


# (case, output kind, tampering, a word of the WARNING's reason)
CASES = [
    ("zeroed", "features", _changed(_out(torch.zeros_like), forge=False), "sha256"),
    ("scaled", "features", _changed(_out(lambda t: t * 2), forge=False), "sha256"),
    ("shuffled", "features", _changed(_out(_shuffled), forge=False), "sha256"),
    ("zeroed_h", "h", _changed(_out(torch.zeros_like), forge=False), "sha256"),
    ("scaled_forged", "features", _changed(_out(lambda t: t * 2), forge=True), "differ from what the model computes"),
    ("shuffled_forged", "features", _changed(_out(_shuffled), forge=True), "differ from what the model computes"),
    ("constant_labels_forged", "features", _changed(_set("labels", lambda t: torch.zeros_like(t["labels"])),
                                                    forge=True), "are not the dataset's"),
    ("other_split", "features", _other_split, "entry of key"),
    # The validation rows claiming to be the training entry have the wrong labels; the training rows claiming to
    # be the validation entry also have indices beyond its 64 examples.
    ("other_split_forged", "features", _other_split_claiming_this_one,
     {"train": "are not the dataset's", "val": "outside the split's"}),
    ("index_out_of_range", "features", _changed(_index_out_of_range, forge=False), "index range"),
    ("index_out_of_range_forged", "features", _changed(_index_out_of_range, forge=True), "outside the split's"),
    ("index_repeated_forged", "features",
     _changed(_set("index", lambda t: torch.cat([t["index"][:1], t["index"][:-1]])), forge=True), "repeated"),
    ("label_out_of_range_forged", "features", _changed(_label_out_of_range, forge=True), "outside the 10 classes"),
    ("narrower_features_forged", "features", _changed(_out(lambda t: t[:, :128].contiguous()), forge=True),
     "the head takes (N, 256)"),
    ("narrower_h_forged", "h", _changed(_out(lambda t: t[:, :t.shape[1] // 2].contiguous()), forge=True),
     "rows of shape"),
    ("float64_features_forged", "features", _changed(_out(lambda t: t.double()), forge=True), "dtype float64"),
    ("float16_h_forged", "h", _changed(_out(lambda t: t.half()), forge=True), "dtype float16"),
    ("int32_labels_forged", "features", _changed(_set("labels", lambda t: t["labels"].int()), forge=True),
     "labels of dtype int32"),
    ("truncated", "features", _truncated, "not a valid safetensors file"),
    ("garbage", "h", _garbage, "not a valid safetensors file"),
    ("without_metadata", "features", _without_metadata, "format None"),
]


def _user_files(folder: Path) -> dict[str, bytes]:
    """Files of the user's own in the cache folder, which the tool must leave alone."""
    (folder / "notes.txt").write_text("mine\n")
    save_file({"w": torch.ones(3)}, str(folder / "mine.safetensors"))
    return {name: (folder / name).read_bytes() for name in ("notes.txt", "mine.safetensors")}


def _assert_same_results(metrics: dict, base: dict) -> None:
    """Equal to the clean cached run in every field but wall-clock ones (the same entry, recomputed in the same
    batches, so bit for bit), and to the run without the cache: accuracy exactly, loss to 1e-6 (the uncached
    run computes the features in training batches of another size; on this CPU they come out equal too)."""
    assert _same(metrics, base["cached"])
    for split in ("val", "test"):
        if base["plain"][split] is None:
            assert metrics[split] is None
            continue
        assert metrics[split]["accuracy"] == base["plain"][split]["accuracy"], split
        assert metrics[split]["loss"] == pytest.approx(base["plain"][split]["loss"], rel=1e-6, abs=1e-7), split


def _same(metrics: dict, other: dict) -> bool:
    return strip_keys(metrics, VARYING) == strip_keys(other, VARYING)


def _history(run: Path) -> list[dict]:
    return [strip_timing(json.loads(line)) for line in (run / "history.jsonl").read_text().splitlines()]


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]


@pytest.mark.parametrize("case, kind, tamper, reason", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("split", ["train", "val"])
def test_a_poisoned_entry_is_recomputed_and_replaced(tmp_path, caplog, baseline, case, kind, tamper, reason, split):
    base = baseline[kind]
    folder = Path(shutil.copytree(base["folder"], tmp_path / "cache"))
    mine = _user_files(folder)
    entries = _entries(folder)
    clean = {name: _read(path) for name, path in entries.items()}
    target, other = entries[split], entries["val" if split == "train" else "train"]
    reason = reason[split] if isinstance(reason, dict) else reason
    tamper(target, other)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        metrics = _run(tmp_path / "run", base["strategy"], "--cache-dir", str(folder))

    warned = _warnings(caplog)
    assert len(warned) == 1, warned
    assert str(target) in warned[0] and reason in warned[0], warned[0]
    _assert_same_results(metrics, base)
    assert _history(tmp_path / "run") == [strip_timing(json.loads(x)) for x in base["history"].splitlines()]
    assert metrics["cache_seconds"] > 0  # the poisoned split was computed again
    # The bad file was replaced by a good entry (same tensors bit for bit, same metadata); nothing else changed.
    tensors, meta = _read(target)
    want_tensors, want_meta = clean[split]
    assert meta == want_meta
    assert sorted(tensors) == sorted(want_tensors)
    for name in tensors:
        assert tensors[name].dtype == want_tensors[name].dtype
        assert torch.equal(tensors[name], want_tensors[name]), name
    assert {name: (folder / name).read_bytes() for name in mine} == mine
    assert sorted(p.name for p in folder.iterdir()) == sorted([*mine, *(p.name for p in entries.values())])


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_a_clean_copy_of_the_cache_is_used_without_a_word(tmp_path, caplog, baseline, kind):
    """The checks (a few rows computed anew included) accept a good folder of another process and change no
    result: nothing is computed again, nothing is written, the numbers are those of the run that wrote it."""
    base = baseline[kind]
    folder = Path(shutil.copytree(base["folder"], tmp_path / "cache"))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        metrics = _run(tmp_path / "run", base["strategy"], "--cache-dir", str(folder))
    assert _warnings(caplog) == []
    assert metrics["cache_seconds"] == 0
    assert _same(metrics, base["cached"])
    assert _history(tmp_path / "run") == [strip_timing(json.loads(x)) for x in base["history"].splitlines()]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_file_this_process_wrote_is_held_to_the_digest_it_was_written_with(tmp_path, caplog, baseline):
    """A change too small for the row comparison (x 1.00001), with forged metadata, in a file this process wrote:
    caught by the digest the process recorded when it wrote the file."""
    base = baseline["features"]
    folder = tmp_path / "cache"
    first = _run(tmp_path / "first", base["strategy"], "--cache-dir", str(folder))  # this process writes it
    assert _same(first, base["cached"])
    target = _entries(folder)["train"]
    clean, clean_meta = _read(target)
    _changed(_out(lambda t: t * 1.00001), forge=True)(target, target)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        metrics = _run(tmp_path / "run", base["strategy"], "--cache-dir", str(folder))
    warned = _warnings(caplog)
    assert len(warned) == 1 and str(target) in warned[0] and "not the entry this process wrote" in warned[0], warned
    _assert_same_results(metrics, base)
    tensors, meta = _read(target)
    assert meta == clean_meta and torch.equal(tensors["features"], clean["features"])


def test_text_model_entries_are_checked_on_their_real_tokens(tmp_path, caplog, tiny_bert_dir, small_text_data):
    """A text entry ("hidden" (N, T, H) padded to the split's longest text, "attention_mask" (N, T)): a clean
    copy passes the row comparison (rows computed anew are padded to another length), a forged one does not."""
    args = ["--model", str(tiny_bert_dir), "--data", str(small_text_data), "--max-train", "48", "--max-val", "32",
            "--max-length", "24", "--epochs", "1"]

    def run(name: str, *extra: str) -> dict:
        try:
            code = main(["finetune", *args, "--strategy", "freeze:k=2", "--out", str(tmp_path / name), *extra])
        except SystemExit as exc:
            code = exc.code
        assert code == 0
        return json.loads((tmp_path / name / "metrics.json").read_text())

    first = run("first", "--cache-dir", str(tmp_path / "cache"))
    folder = Path(shutil.copytree(tmp_path / "cache", tmp_path / "copy"))  # not this process's files
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        clean = run("clean", "--cache-dir", str(folder))
    assert _warnings(caplog) == [] and clean["cache_seconds"] == 0 and _same(clean, first)

    target = next(p for p in folder.glob("*.safetensors") if _read(p)[1]["examples"] == "48")
    _changed(lambda tensors: tensors.__setitem__("hidden", tensors["hidden"] * 2), forge=True)(target, target)
    folder2 = Path(shutil.copytree(folder, tmp_path / "copy2"))  # a path this process has not read
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = run("again", "--cache-dir", str(folder2))
    warned = _warnings(caplog)
    assert len(warned) == 1 and "hidden values differ from what the model computes" in warned[0], warned
    assert again["cache_seconds"] > 0 and _same(again, first)
