"""Hostile files: pickles that run a command when unpickled, and safetensors whose header lies.

Each pickle's payload would create a marker file; the tests check the error and that the marker is absent.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import uuid
from pathlib import Path

import pytest
import torch

from tests.reliability.conftest import RUN_ARGS, error_line, run_cli
from transferlab.errors import UnsafeFileError
from transferlab.safe_io import check_safetensors_header, load_state_dict_file, load_tensors


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path) -> Path:
    path = Path("/tmp") / f"transferlab-pwned-{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The same exploit in each container a user could be handed."""
    payload = {"conv_stem.weight": torch.zeros(1), "x": _Exploit(marker)}
    files = {}
    files["raw pickle"] = folder / "raw.pth"
    files["raw pickle"].write_bytes(pickle.dumps(payload, protocol=2))
    files["torch zip"] = folder / "zip.pth"
    torch.save(payload, files["torch zip"])
    files["torch legacy"] = folder / "legacy.pt"
    torch.save(payload, files["torch legacy"], _use_new_zipfile_serialization=False)
    files["pickle named .safetensors"] = folder / "model.safetensors"
    files["pickle named .safetensors"].write_bytes(pickle.dumps(payload))
    files["pickle named .bin"] = folder / "pytorch_model.bin"
    files["pickle named .bin"].write_bytes(pickle.dumps(payload, protocol=0))  # text protocol: no \x80 magic
    # the exploit really works when unpickled (so the refusals below prove something)
    probe = folder / "probe.pkl"
    probe.write_bytes(pickle.dumps(_Exploit(folder / "probe-marker")))
    pickle.loads(probe.read_bytes())
    assert (folder / "probe-marker").exists()
    return files


def test_evil_pickle_refused_by_the_loader(tmp_path, marker):
    for kind, path in _evil_files(tmp_path, marker).items():
        with pytest.raises(UnsafeFileError):
            load_state_dict_file(path)
        assert not marker.exists(), kind


def test_evil_pickle_as_weights_is_refused(tmp_path, marker, capsys):
    for kind, path in _evil_files(tmp_path, marker).items():
        code, _, err = run_cli(["finetune", *RUN_ARGS, "--weights", str(path), "--out", str(tmp_path / kind)],
                               capsys)
        assert code == 2, kind
        line = error_line(err)
        assert str(path) in line or path.name in line, line
        assert "weights_only" not in line, "never advise the user to unpickle"
        assert not marker.exists(), kind
        assert not (tmp_path / kind / "checkpoint").exists(), kind


def test_evil_pickle_as_resume_checkpoint_is_refused(run_copy, tmp_path, marker, capsys):
    (run_copy / "metrics.json").unlink()  # an unfinished run, so --resume reads checkpoint/last
    last = run_copy / "checkpoint" / "last.safetensors"
    for kind, path in _evil_files(tmp_path, marker).items():
        last.write_bytes(path.read_bytes())
        code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(run_copy), "--resume"], capsys)
        assert code == 2, kind
        assert "last.safetensors" in error_line(err)
        assert not marker.exists(), kind
        assert not (run_copy / "metrics.json").exists()


def test_evil_pickle_as_best_weights_is_refused_by_evaluate_and_predict(run_copy, tmp_path, marker, capsys):
    best = run_copy / "checkpoint" / "best.safetensors"
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    for kind, path in _evil_files(tmp_path, marker).items():
        best.write_bytes(path.read_bytes())
        for args in (["evaluate", "--run", str(run_copy)], ["predict", "--run", str(run_copy), str(image)]):
            code, out, err = run_cli(args, capsys)
            assert code == 2, (kind, args)
            assert "best.safetensors" in error_line(err)
            assert not marker.exists(), kind


def test_checkpoint_from_another_model_is_one_clear_error(run_copy, tmp_path, capsys):
    """Valid safetensors, wrong content: not a transferlab checkpoint, or tensors of the wrong shapes."""
    from safetensors.torch import save_file

    (run_copy / "metrics.json").unlink()
    last = run_copy / "checkpoint" / "last.safetensors"
    save_file({"w": torch.zeros(3)}, str(last))
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--out", str(run_copy), "--resume"], capsys)
    assert code == 2 and "not a transferlab checkpoint" in error_line(err)

    best = run_copy / "checkpoint" / "best.safetensors"
    state = load_tensors(best)
    state["head.weight"] = torch.zeros(3, 3)
    save_file(state, str(best))
    code, _, err = run_cli(["evaluate", "--run", str(run_copy)], capsys)
    assert code == 2 and "head.weight" in error_line(err)


# ---- safetensors headers that lie ------------------------------------------------------------------------

def _safetensors(header: dict | bytes, data: bytes, header_len: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}
LIES = {
    "header length beyond the file": _safetensors(GOOD, bytes(12), header_len=10**6),
    "header length 0": _safetensors(b"", bytes(12), header_len=0),
    "header length 2**63": _safetensors(GOOD, bytes(12), header_len=2**63),
    "shorter than 8 bytes": b"\x01\x02",
    "empty file": b"",
    "offsets beyond the data": _safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                            bytes(8)),
    "end before begin": _safetensors({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}, bytes(8)),
    "overlapping entries": _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
    "shape does not match bytes": _safetensors({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
                                               bytes(8)),
    "huge shape": _safetensors({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, bytes(8)),
    "negative dimension": _safetensors({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8)),
    "float offsets": _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8.0]}}, bytes(8)),
    "string offsets": _safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}}, bytes(8)),
    "unknown dtype": _safetensors({"a": {"dtype": "F7", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
    "missing offsets": _safetensors({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)),
    "entry not an object": _safetensors({"a": [1, 2, 3]}, bytes(8)),
    "not JSON": _safetensors(b"{not json", bytes(8)),
    "not UTF-8": _safetensors(b"\xff\xfe{}", bytes(8)),
    "JSON list": _safetensors(b"[1, 2]", bytes(8)),
    "a pickle": pickle.dumps({"a": 1}),
}


def test_valid_handmade_safetensors_passes(tmp_path):
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_safetensors(GOOD, struct.pack("<3f", 1, 2, 3)))
    check_safetensors_header(path)
    assert load_tensors(path)["b"].tolist() == [3.0]


@pytest.mark.parametrize("name", sorted(LIES))
def test_lying_safetensors_header_is_refused(tmp_path, name):
    path = tmp_path / "lie.safetensors"
    path.write_bytes(LIES[name])
    with pytest.raises(UnsafeFileError):
        check_safetensors_header(path)
    with pytest.raises(UnsafeFileError):
        load_state_dict_file(path)


def test_lying_safetensors_as_weights_is_one_line(tmp_path, capsys):
    path = tmp_path / "lie.safetensors"
    path.write_bytes(LIES["offsets beyond the data"])
    code, _, err = run_cli(["finetune", *RUN_ARGS, "--weights", str(path), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "lie.safetensors" in error_line(err)


# ---- task modules ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    from transferlab.cli import main

    out = tmp_path_factory.mktemp("lora") / "run"
    try:
        main(["finetune", "--model", "test_efficientnet", "--data", "digits", "--image-size", "32", "--max-train",
              "100", "--epochs", "1", "--strategy", "lora", "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert (out / "task_module" / "module.safetensors").is_file()
    return out


def _base_model():
    """The run's base exactly as runs.prepare builds it (random init from --seed 0)."""
    from transferlab.models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model("test_efficientnet", 10)


@pytest.mark.parametrize("victim", ["module.safetensors", "adapter_model.safetensors"])
def test_evil_pickle_as_task_module_is_refused(lora_run, tmp_path, marker, capsys, victim):
    import shutil

    from transferlab.modules import load_task_module

    module = Path(shutil.copytree(lora_run / "task_module", tmp_path / "module"))
    load_task_module(module, model=_base_model())  # the intact module loads onto its base
    for kind, path in _evil_files(tmp_path, marker).items():
        (module / victim).write_bytes(path.read_bytes())
        with pytest.raises(UnsafeFileError, match=victim):
            load_task_module(module, model=_base_model())
        for args in (["modules", "merge", str(module), "--out", str(tmp_path / "merged")],
                     ["modules", "export", str(module), "--out", str(tmp_path / "exported")]):
            code, _, err = run_cli(args, capsys)
            assert code == 2, err  # both check every tensor file before they write anything
            error_line(err)
        assert not marker.exists(), kind
