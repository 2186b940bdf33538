"""`transferlab modules list|show|merge|export`."""
from __future__ import annotations

import json

import pytest

from transferlab.cli import main


def test_modules_commands(image_runs, tmp_path, capsys):
    root = image_runs["lora"].out.parent
    main(["modules", "list", str(root)])
    listing = capsys.readouterr().out
    for method in ("lora", "adapter", "bitfit"):
        assert method in listing
    main(["modules", "show", "--json", str(image_runs["lora"].out)])
    shown = json.loads(capsys.readouterr().out)
    assert shown["method"] == "lora" and shown["trainable_params"] > 0 and shown["mergeable"]
    main(["modules", "merge", str(image_runs["bitfit"].out), "--out", str(tmp_path / "merged")])
    assert "max_abs_logit_diff" in capsys.readouterr().out
    assert (tmp_path / "merged" / "checkpoint" / "best.safetensors").is_file()
    main(["modules", "export", str(image_runs["lora"].out), "--out", str(tmp_path / "export")])
    capsys.readouterr()
    assert {"adapter_config.json", "adapter_model.safetensors", "module.safetensors", "README.md",
            "transferlab_module.json"} <= {p.name for p in (tmp_path / "export").iterdir()}
    main(["modules", "show", str(tmp_path / "export")])  # an exported module is a module
    assert "lora" in capsys.readouterr().out


def test_modules_errors_are_one_line(image_runs, tmp_path, capsys):
    for argv in (["modules", "show", str(tmp_path / "missing")],
                 ["modules", "merge", str(image_runs["adapter"].out), "--out", str(tmp_path / "m")]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("transferlab: error:") and len(err.strip().splitlines()) == 1
