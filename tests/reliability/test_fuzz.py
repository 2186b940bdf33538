"""Property-based input fuzzing: every input gives a valid configuration or one clear error, never a traceback.

- the strategy-spec parser: any string -> ComposedStrategy or ConfigError;
- the CLI: any argument list -> exit 0, or exit 2 with one error line on stderr. `finetune` is fuzzed up to
  validation only (its command is replaced by one that builds and checks the run configuration);
- the data readers: any bytes in a text folder or in image files -> DataBundle or DataError, and reading
  every item of the bundle gives an item or a recorded skip.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlab.cli import core
from transferlab.data import DataBundle, DataError, DataOptions, load_data
from transferlab.errors import ConfigError
from transferlab.models._config import PretrainedCfg
from transferlab.strategies import list_strategies, parse_strategy
from transferlab.strategies.compose import ComposedStrategy
from transferlab.training.config import TrainConfig
from tests.reliability.conftest import run_cli

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])

# ---- strategy specs ------------------------------------------------------------------------------------------
_NAMES = [cls.name for cls in list_strategies()]
_KEYS = sorted({f.name for cls in list_strategies() for f in dataclasses.fields(cls.Params)})
_VALUES = st.one_of(st.sampled_from(["0", "1", "-1", "0.5", "1e309", "nan", "inf", "true", "no", "", "auto",
                                     "houlsby", "1_0", "٣", "0x10", " 2 "]),
                    st.floats(allow_nan=True).map(str), st.integers(-10**20, 10**20).map(str),
                    st.text(max_size=6))
_PIECE = st.builds(lambda name, kv: name + (":" + ",".join(f"{k}={v}" for k, v in kv) if kv else ""),
                   st.sampled_from(_NAMES) | st.text(max_size=8),
                   st.lists(st.tuples(st.sampled_from(_KEYS) | st.text(max_size=4), _VALUES), max_size=3))
SPECS = st.one_of(st.text(max_size=40), st.lists(_PIECE, min_size=1, max_size=3).map("+".join))


@FUZZ
@given(spec=SPECS)
def test_strategy_spec_parses_or_raises_config_error(spec):
    try:
        strategy = parse_strategy(spec)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(strategy, ComposedStrategy)
    assert strategy.spec()  # a parsed spec can be written back
    parse_strategy(strategy.spec())  # ... and read again


# ---- the CLI -------------------------------------------------------------------------------------------------
# "--" itself is left out: argparse (3.11) turns `--epochs=--` into [] (test_double_dash_value below)
_OPTION_VALUES = st.one_of(st.sampled_from(["0", "1", "-1", "0.5", "1e-3", "1e309", "-inf", "nan", "", "abc",
                                            "-", "---", "adamw", "sgd", "cosine", "skip", "source", "cpu",
                                            "cuda:7", "auto", "frozen", "label", "0,1", "é"]),
                           st.integers(-10**12, 10**12).map(str), st.floats().map(str),
                           st.text(max_size=8).filter(lambda v: v != "--"))
_FINETUNE_OPTIONS = ["--epochs", "--lr", "--batch-size", "--eval-batch-size", "--optimizer", "--weight-decay",
                     "--schedule", "--warmup", "--grad-clip", "--patience", "--seed", "--device", "--head-init",
                     "--on-nonfinite", "--bn-stats", "--val-fraction", "--max-train", "--image-size", "--text-column",
                     "--label-column", "--max-length", "--strategy"]
_FLAGS = ["--augment", "--no-header", "--resume", "--overwrite", "-v"]


def _validate_only(args) -> None:
    """cmd_finetune up to validation: the run configuration and the strategy, no data, no training."""
    config = core.run_config_from_args(args)
    parse_strategy(config.strategy)
    _check_config(config.train, config.data_options)


def _check_config(train: TrainConfig, data: DataOptions) -> None:
    """What an accepted configuration must satisfy for the trainer to be able to run it."""
    for f in dataclasses.fields(train):
        value = getattr(train, f.name)
        if isinstance(value, float):
            assert math.isfinite(value), f"--{f.name.replace('_', '-')} {value} was accepted"
    assert math.isfinite(data.val_fraction)


@FUZZ
@given(options=st.lists(st.tuples(st.sampled_from(_FINETUNE_OPTIONS), _OPTION_VALUES), max_size=4),
       flags=st.lists(st.sampled_from(_FLAGS), max_size=2, unique=True),
       positional=st.lists(st.text(max_size=6), max_size=1))
def test_finetune_arguments_give_a_config_or_one_line(options, flags, positional, capsys, monkeypatch):
    monkeypatch.setattr(core, "cmd_finetune", _validate_only)
    argv = ["finetune", "--model", "test_efficientnet", "--data", "digits", "--out", "/nonexistent/run",
            *itertools.chain.from_iterable((k, v) for k, v in options), *flags, *positional]
    argv = _join_dash_values(argv)
    _assert_exit_0_or_one_line(argv, capsys)


def _join_dash_values(argv: list[str]) -> list[str]:
    """`--lr=-1`, as a user must write it: argparse reads a separate `-1` as an option name."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a in _FINETUNE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{a}={argv[i + 1]}")
            skip = True
        else:
            out.append(a)
    return out


@FUZZ
@given(argv=st.lists(st.one_of(st.sampled_from(["models", "strategies", "evaluate", "predict", "--json",
                                                 "--groups", "--run", "--help", "-h", "--split", "val",
                                                 "bogus", "--", "-x", "finetune"]),
                               st.text(max_size=8)), max_size=4))
def test_any_argv_exits_0_or_2_with_one_line(argv, capsys, monkeypatch):
    monkeypatch.setattr(core, "cmd_finetune", _validate_only)
    monkeypatch.setattr(core, "cmd_models", lambda args: None)  # building models is not argument parsing
    _assert_exit_0_or_one_line(argv, capsys)


def _assert_exit_0_or_one_line(argv: list[str], capsys) -> None:
    code, out, err = run_cli(argv, capsys)
    verbose = "-v" in argv or "--verbose" in argv  # -v may add debug lines and, for a foreign error, its traceback
    assert verbose or "Traceback" not in err
    if code in (0, None):
        return
    assert code == 2, (argv, code, err)
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("transferlab: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and (verbose or len(lines) == 1), (argv, err)


# ---- data readers --------------------------------------------------------------------------------------------
TEXT_CFG = PretrainedCfg(name="fuzz-text", modality="text", max_length=16)
IMAGE_CFG = PretrainedCfg(name="fuzz-image", modality="image", input_size=(3, 16, 16))
_CELL = st.text(alphabet=st.sampled_from(list('ab1 0\t,"\n\r\\{}:\x00\ufeffé')), max_size=10)
_TEXT_FILE = st.one_of(st.binary(max_size=400),
                       st.lists(st.tuples(_CELL, st.sampled_from(["0", "1", "", "x"])), max_size=10).map(
                           lambda rows: ("sentence\tlabel\n" + "\n".join("\t".join(r) for r in rows)).encode()))


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert_dir))


def _read_everything(bundle: DataBundle) -> None:
    for split in (bundle.train, bundle.val, bundle.test):
        if split is None:
            continue
        items = [split[i] for i in range(len(split))]
        bundle.collate(items)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train=_TEXT_FILE, dev=st.none() | _TEXT_FILE, suffix=st.sampled_from([".tsv", ".csv", ".jsonl"]))
def test_text_folder_gives_a_bundle_or_a_data_error(tokenizer, train, dev, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / f"train{suffix}").write_bytes(train)
        if dev is not None:
            (root / f"dev{suffix}").write_bytes(dev)
        try:
            bundle = load_data(str(root), TEXT_CFG, DataOptions(), tokenizer=tokenizer)
        except DataError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        _read_everything(bundle)


_HEADERS = [b"\xff\xd8\xff\xe0", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00"]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # PIL warns about the garbage; the test is about errors
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.tuples(st.sampled_from(_HEADERS) | st.just(b""), st.binary(max_size=300),
                                st.sampled_from([".jpg", ".png", ".gif", ".bmp", ".webp", ".tif"])),
                      min_size=1, max_size=4))
def test_image_folder_of_garbage_gives_a_bundle_or_a_data_error(files):
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for cls in ("a", "b"):
            (root / cls).mkdir()
            for i in range(3):  # a few real images, so a bundle is possible
                Image.new("RGB", (12, 10), (40 * i, 0, 0)).save(root / cls / f"ok{i}.png")
        for i, (head, body, ext) in enumerate(files):
            (root / "ab"[i % 2] / f"fuzz{i}{ext}").write_bytes(head + body)
        try:
            bundle = load_data(str(root), IMAGE_CFG, DataOptions(val_fraction=0.5))
        except DataError as exc:
            assert str(exc) and "\n" not in str(exc)
            return
        _read_everything(bundle)
        assert bundle.skipped.count <= len(files)


@pytest.mark.parametrize("name", ["weight_decay", "grad_clip"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_float_options_are_rejected(name, value):
    with pytest.raises(ConfigError):
        TrainConfig(**{name: value})


def test_double_dash_value(capsys, monkeypatch):
    monkeypatch.setattr(core, "cmd_finetune", _validate_only)
    _assert_exit_0_or_one_line(["finetune", "--model", "m", "--data", "d", "--out", "o", "--epochs=--"], capsys)


# ---- the CLI, on past the configuration checks to the first training step -----------------------------------
class _FirstStepDone(BaseException):
    """Raised at the second optimiser step: the run started, built its model and data, and made one update.
    A BaseException, so the CLI's error handling does not turn it into an error line."""


_VALID = {  # values a user would give (some extreme); the odd ones of _OPTION_VALUES are mixed in below
    "--lr": ["1e-3", "0.5", "1e9", "1e-30"], "--batch-size": ["1", "2", "7", "1000"],
    "--eval-batch-size": ["1", "3", "1000"], "--optimizer": ["adamw", "sgd"], "--weight-decay": ["0", "0.1", "100"],
    "--schedule": ["cosine", "linear", "constant"], "--warmup": ["0", "0.5", "0.99"],
    "--grad-clip": ["0", "1", "1e-9"], "--patience": ["0", "1"], "--seed": ["0", "1", "4294967295"],
    "--device": ["cpu", "auto", "cuda", "cuda:1", "mps"], "--head-init": ["random", "source"],
    "--on-nonfinite": ["stop", "skip"], "--bn-stats": ["auto", "frozen"], "--val-fraction": ["0.1", "0.5", "0.9"],
    "--strategy": ["linear_probe", "freeze:k=1", "lp_ft:lp_epochs=1", "gradual_unfreeze", "lora", "bitfit",
                   "adapter", "l2sp", "lwf", "ewc", "discriminative:decay=0.5", "full:backbone_lr=1000",
                   "freeze:k=99", "lora:r=1+l2sp"],
    "--image-size": ["8", "16", "24", "7"], "--max-train": ["2", "3", "11", "33", "1"],
}
_RUN_OPTION = st.sampled_from(sorted(_VALID)).flatmap(
    lambda k: st.tuples(st.just(k), st.one_of(st.sampled_from(_VALID[k]), st.sampled_from(_VALID[k]),
                                              st.sampled_from(_VALID[k]), _OPTION_VALUES)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(options=st.lists(_RUN_OPTION, max_size=4, unique_by=lambda kv: kv[0]),
       flags=st.lists(st.sampled_from(["--augment", "--overwrite"]), max_size=2, unique=True))
def test_finetune_starts_training_or_gives_one_line(options, flags, capsys, monkeypatch, tmp_path_factory):
    from transferlab import faults

    def stop_after_first_step(step: int) -> bool:
        if step >= 2:
            raise _FirstStepDone
        return False

    monkeypatch.setattr(faults, "on_step", stop_after_first_step)
    out = tmp_path_factory.mktemp("fuzzrun") / "run"
    given = dict(options)
    sizes = {"--image-size": given.pop("--image-size", "16"), "--max-train": given.pop("--max-train", "12")}
    argv = ["finetune", "--model", "test_efficientnet", "--data", "digits:0-2", "--epochs", "2", "--out", str(out),
            *itertools.chain.from_iterable(sizes.items()), *itertools.chain.from_iterable(given.items()), *flags]
    try:
        code, _, err = run_cli(_join_dash_values(argv), capsys)
    except _FirstStepDone:
        return  # the run got through set-up and its first update
    assert "Traceback" not in err, (argv, err)
    if code in (0, None):
        return
    assert code == 2, (argv, code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("transferlab: error: "), (argv, err)
