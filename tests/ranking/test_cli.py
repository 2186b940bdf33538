"""`transferlab rank` end to end on tiny models (digits at 16-32 px, 100 examples), and its refusals: one line,
exit 2, nothing written."""
from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_IMAGE_MODEL, error_line, run_cli


def _args(models: str, out, *extra: str, size: str = "32") -> list[str]:
    args = ["rank", "--models", models, "--data", "digits", "--image-size", size, "--max-examples", "100",
            "--device", "cpu", *extra]
    return args + (["--out", str(out)] if out is not None else [])


def test_rank_writes_the_ranking_of_two_candidates(tmp_path, tiny_weights, capsys):
    out = tmp_path / "rank"
    with_weights = f"{TINY_IMAGE_MODEL}@{tiny_weights}"
    code, stdout, err = run_cli(_args(f"{TINY_IMAGE_MODEL},{with_weights}", out), capsys)
    assert code in (0, None), err
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["candidate", "features"]
    assert lines[1].startswith(TINY_IMAGE_MODEL + " ") and lines[2].startswith(with_weights)
    assert {p.name for p in out.iterdir()} == {"ranking.json", "ranking.md", "ranking.html", "plots"}
    result = json.loads((out / "ranking.json").read_text())
    assert result["format"] == "transferlab-ranking-1" and result["split"] == "train" and result["examples"] == 100
    assert [m["name"] for m in result["metrics"]] == ["logme", "leep", "nce", "hscore", "knn", "linear"]
    plain, weighted = result["candidates"]
    assert plain["features_shape"][0] == 100 and plain["source_classes"] is None
    assert weighted["weights"] == str(tiny_weights) and weighted["source_classes"] == 1000
    for name in ("leep", "nce"):  # no source head: skipped with the reason, not an error
        assert plain["scores"][name] is None and plain["ranks"][name] is None
        assert plain["notes"][name] == "no source head"
        assert weighted["ranks"][name] == 1
    for name in ("logme", "hscore", "knn", "linear"):
        assert sorted([plain["ranks"][name], weighted["ranks"][name]]) in ([1, 2], [1, 1])
        assert result["rankings"][name][0] in (plain["name"], weighted["name"])
    for c in (plain, weighted):
        assert c["forward_seconds"] > 0 and c["peak_memory_mb"] > 0 and set(c["metric_seconds"]) == set(c["scores"])
    html = (out / "ranking.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "src='plots/" not in html  # self-contained
    md = (out / "ranking.md").read_text()
    assert "## logme: You et al." in md and "skipped: no source head" in md and "(plots/scores.png)" in md


def test_rank_layers_ranks_the_depth_groups_of_one_model(tmp_path, tiny_weights, capsys):
    out = tmp_path / "layers"
    code, stdout, err = run_cli(_args(f"{TINY_IMAGE_MODEL}@{tiny_weights}", out, "--layers",
                                      "--metrics", "logme,leep,knn", size="16"), capsys)
    assert code in (0, None), err
    result = json.loads((out / "ranking.json").read_text())
    groups = [c["group"] for c in result["candidates"]]
    assert len(groups) >= 3 and all(groups) and result["layers"] is True
    assert sorted(c["ranks"]["logme"] for c in result["candidates"])[0] == 1
    assert all(c["scores"]["leep"] is None for c in result["candidates"])  # a source head reads the last layer only
    assert len(stdout.splitlines()) >= len(groups) + 1


def test_rank_without_out_prints_only(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(_args(TINY_IMAGE_MODEL, None, "--metrics", "knn", size="16"), capsys)
    assert code in (0, None), err
    assert TINY_IMAGE_MODEL in stdout and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, models, message", [
    (["--metrics", "logme,no_such_metric"], TINY_IMAGE_MODEL, "unknown metric 'no_such_metric'"),
    ([], f"{TINY_IMAGE_MODEL},no_such_model_xyz", "candidate 'no_such_model_xyz' cannot be built"),
    (["--max-examples", "5"], TINY_IMAGE_MODEL, "--max-examples 5 is smaller than the number of classes (10)"),
    (["--layers"], f"{TINY_IMAGE_MODEL},{TINY_IMAGE_MODEL}@7", "--layers ranks the depth groups of ONE model"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, models, message):
    out = tmp_path / "rank"
    code, stdout, err = run_cli(_args(models, out, *extra, size="16"), capsys)
    assert code == 2
    assert message in error_line(err)
    assert not out.exists()


def test_weights_that_do_not_fit_name_the_candidate(tmp_path, tiny_weights, capsys):
    out = tmp_path / "rank"
    code, _, err = run_cli(_args(f"resnet18@{tiny_weights}", out, size="16"), capsys)
    assert code == 2
    assert f"candidate 'resnet18@{tiny_weights}' cannot be built: weights do not fit resnet18" in error_line(err)
    assert not out.exists()


def test_a_folder_of_other_files_is_refused(tmp_path, capsys):
    out = tmp_path / "rank"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(_args(TINY_IMAGE_MODEL, out, "--metrics", "knn", size="16"), capsys)
    assert code == 2 and "not a transferlab ranking" in error_line(err)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
