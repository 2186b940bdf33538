"""Linear probes per depth group: the numbers equal a probe fit by hand, known answers, the CLI and the report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import error_line, run_cli
from transferlab.diagnostics.probe import fit_probe, majority_baseline, probe_features, probe_for, probe_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from transferlab.runs import load_run

    _, data, model, _ = load_run(tiny_run)
    return data, model


def _reference_features(model, data, dataset, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Group k's output by forward_until, mean-pooled over positions by hand: (N, C), labels (N,)."""
    from torch.utils.data import DataLoader

    xs, ys = [], []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=16, collate_fn=data.collate):
            h = model.forward_until(batch, k)  # (B, C, H, W)
            xs.append(h.mean(dim=(2, 3)).numpy())
            ys.append(batch["labels"].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_a_probe_equals_logistic_regression_fit_by_hand(loaded):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data, model = loaded
    entry, _ = probe_model(model, data, CPU, batch_size=32)  # all 100 train examples: no subset to match
    last = model.num_backbone_groups - 1
    assert [g.index for g in entry.groups] == list(range(model.num_backbone_groups))
    for k in (1, last):
        x_train, y_train = _reference_features(model, data, data.train, k)
        x_val, y_val = _reference_features(model, data, data.val, k)
        scaler = StandardScaler().fit(x_train)
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x_train), y_train)
        g = entry.groups[k]
        assert g.dim == x_train.shape[1]
        assert g.train_accuracy == pytest.approx(clf.score(scaler.transform(x_train), y_train), abs=1e-9)
        assert g.val_accuracy == pytest.approx(clf.score(scaler.transform(x_val), y_val), abs=1e-9)
        assert g.test_accuracy is None  # digits has no test split


def test_one_hot_features_read_perfectly_and_constant_ones_at_the_majority_rate(loaded):
    _, model = loaded
    rng = np.random.default_rng(0)
    y = {"train": rng.choice(3, size=90, p=[0.6, 0.3, 0.1]), "val": rng.choice(3, size=40, p=[0.5, 0.3, 0.2])}
    y["train"][:3] = [0, 1, 2]  # every class present
    k = model.num_backbone_groups

    def groups(labels):  # group 0: the label one-hot; group 1: a constant; the others: noise
        one_hot = np.eye(3, dtype=np.float32)[labels]
        const = np.full((len(labels), 5), 2.5, dtype=np.float32)
        noise = [rng.normal(size=(len(labels), 4)).astype(np.float32) for _ in range(k - 2)]
        return [one_hot, const] + noise

    features = {s: (groups(y[s]), y[s]) for s in ("train", "val")}
    entry = probe_features(model, features)
    assert entry.groups[0].train_accuracy == 1.0 and entry.groups[0].val_accuracy == 1.0
    baseline = majority_baseline(features)
    assert baseline == {"train": pytest.approx(np.mean(y["train"] == 0)), "val": pytest.approx(np.mean(y["val"] == 0))}
    assert entry.groups[1].train_accuracy == pytest.approx(baseline["train"])
    assert entry.groups[1].val_accuracy == pytest.approx(baseline["val"])
    assert entry.c == [1.0] * k


def test_a_group_made_constant_reads_at_a_constant_guess_from_there_on(loaded):
    data, model = loaded
    handle = model.backbone.blocks[1].register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    try:
        entry, features = probe_model(model, data, CPU, batch_size=32)
    finally:
        handle.remove()
    y_train, y_val = features["train"][1], features["val"][1]
    assert np.bincount(y_train).tolist() == [20] * 5  # balanced: any constant guess scores 0.2 on train
    class_rates = {float(np.mean(y_val == c)) for c in range(5)}
    by_name = {g.name: g for g in entry.groups}
    # every example gives the same output from blocks.1 on, up to float32 rounding the probe must not fit
    for name in ("blocks.1", "blocks.2", "blocks.3", "blocks.4", "final"):
        assert by_name[name].train_accuracy == pytest.approx(0.2)
        assert any(by_name[name].val_accuracy == pytest.approx(rate) for rate in class_rates)
    assert by_name["stem"].train_accuracy > 0.5  # before it the digits are readable


def test_c_grid_chooses_on_val_and_reports_test():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=200)
    x = (y[:, None] + rng.normal(scale=2.0, size=(200, 30))).astype(np.float32)
    evals = {"val": (x[100:150], y[100:150]), "test": (x[150:], y[150:])}
    one, c_one = fit_probe(x[:100], y[:100], evals)
    assert c_one == 1.0 and set(one) == {"train", "val", "test"}
    grid = (1e-4, 1e-2, 1.0, 100.0)
    chosen, c = fit_probe(x[:100], y[:100], evals, c_grid=grid)
    assert c in grid
    assert chosen["val"] == max(fit_probe(x[:100], y[:100], evals, c_grid=(g,))[0]["val"] for g in grid)


def test_probe_for_a_run_before_and_after_with_a_cache(tiny_run, loaded):
    _, model = loaded
    cache: dict = {}
    r = probe_for(tiny_run, max_train=40, cache=cache)
    assert set(r.entries) == {"pretrained", "finetuned"} and len(cache) == 1
    names = [g.name for g in model.depth_groups[:-1]]
    for entry in r.entries.values():
        assert [g.name for g in entry.groups] == names
        for g in entry.groups:
            assert 0 <= g.train_accuracy <= 1 and 0 <= g.val_accuracy <= 1 and g.dim > 0
    assert r.examples["train"] == 40 and r.examples["train_available"] == 100
    again = probe_for(tiny_run, max_train=40, cache=cache)
    assert again.entries["pretrained"] is r.entries["pretrained"]  # not probed again
    assert again.to_dict() == r.to_dict()  # the same 40 examples: the subset is deterministic


def test_cli_probe_json_and_plot(tiny_run, tmp_path, capsys):
    code, out, _ = run_cli(["diagnose", "probe", "--run", str(tiny_run), "--json", "--max-train", "50",
                            "--plot", str(tmp_path / "probe.png")], capsys)
    assert code == 0
    r = json.loads(out)
    assert set(r["entries"]) == {"pretrained", "finetuned"}
    keys = {"name", "index", "dim", "train_accuracy", "val_accuracy", "test_accuracy"}
    for entry in r["entries"].values():
        assert len(entry["groups"]) == 7 and entry["groups"][-1]["name"] == "final"  # test_efficientnet
        assert all(set(g) == keys and 0 <= g["val_accuracy"] <= 1 for g in entry["groups"])
    assert r["examples"]["train"] == 50 and "logistic regression" in r["estimator"]
    assert (tmp_path / "probe.png").read_bytes().startswith(b"\x89PNG")


def test_cli_probe_table(tiny_run, capsys):
    code, out, _ = run_cli(["diagnose", "probe", "--run", str(tiny_run), "--max-train", "30"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["group", "dim", "pretrained", "train", "pretrained", "val", "finetuned", "train",
                                "finetuned", "val"]
    assert [ln.split()[0] for ln in lines[1:8]] == ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3",
                                                    "blocks.4", "final"]


@pytest.mark.parametrize("args, says", [
    (["--model", "test_efficientnet"], "--model needs --data"),
    (["--run", "RUN", "--image-size", "64"], "--image-size"),
    (["--run", "RUN", "--c-grid", "0.1,1"], "--split test"),
    (["--run", "RUN", "--split", "test"], "no test split"),
    (["--run", "RUN", "--max-train", "1"], "--max-train"),
])
def test_cli_probe_bad_options_give_one_line(tiny_run, capsys, args, says):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    code, _, err = run_cli(["diagnose", "probe"] + args, capsys)
    assert code == 2 and says in error_line(err)


def test_a_text_model_is_probed_over_its_token_states(tiny_bert_dir, small_text_data):
    r = probe_for(model_name=str(tiny_bert_dir), data=str(small_text_data), max_train=60, max_length=32)
    entry = r.entries["pretrained"]
    assert set(r.entries) == {"pretrained"}
    assert len(entry.groups) >= 3 and all(g.dim == 64 for g in entry.groups)  # embeddings + 2 layers, 64 wide
    assert r.examples == {"train": 60, "train_available": 160, "val": 80, "test": None}
    assert all(0 <= g.val_accuracy <= 1 for g in entry.groups)


def test_report_section(report_ctx):
    from transferlab.diagnostics import report  # registers the probe section
    from transferlab.sections import list_sections

    assert "probe" in list_sections()
    ctx = report_ctx
    section = report._probe_section.probe_section(ctx)
    figure, table = section.blocks[0], section.blocks[1]
    assert figure.png.startswith(b"\x89PNG")
    assert table.headers == ["depth group", "pre-trained", "full"] and len(table.rows) == 7
    assert section.data["full"]["examples"]["train"] == 100  # the report's cap (500) is above the run's 100
    from types import SimpleNamespace

    broken = SimpleNamespace(results=SimpleNamespace(strategies=["x"], finished_runs=lambda name: [
        SimpleNamespace(run_dir="/nonexistent", seed=0)]), cache={})
    assert "Not computed" in report._probe_section.probe_section(broken).blocks[0].text
