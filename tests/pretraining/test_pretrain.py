"""`transferlab pretrain`: the recorded normalisation, the kept checkpoints and their weights, the RUN@E / RUN@last /
RUN@scratch short forms in every command, an exact resume after SIGKILL, and one clear line for bad input."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.pretraining.conftest import (
    DIGITS_ARGS,
    DIGITS_KEPT,
    IMAGE_SIZE,
    cli,
    copy_run,
    error_line,
    history,
    load_json,
    run_cli,
    snapshot,
)
from tests.reliability.conftest import assert_same_run, run_subprocess, tensors_and_meta
from transferlab.models import create_model
from transferlab.models.pretrained_dir import kept_epochs

KILLED = -signal.SIGKILL
CFG_KEYS = ("mean", "std", "input_size", "source_classes", "num_source_classes")


def weights(run, epoch) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"epoch_{epoch}" / "model.safetensors"))


def as_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A TransferModel state (backbone.*, head.*) under the names a checkpoint stores: timm's, fc.* the head."""
    out = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out["fc.weight"], out["fc.bias"] = state["head.weight"], state["head.bias"]
    return out


def pil_pixels(path, size: int) -> np.ndarray:
    """(size, size, 3) floats in [0, 1]: decoded and resized with PIL alone (crop_pct 1: no crop)."""
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float64) / 255.0


# ---- 1. the normalisation ------------------------------------------------------------------------------------
def test_recorded_normalisation_is_the_training_splits_per_channel_statistics(image_run, image_root):
    """mean/std per channel over every pixel of the training images of the selected classes, decoded and resized
    by PIL here; class c (left out by --classes) and the val/test splits do not count."""
    def reference(classes):
        pixels = np.concatenate([pil_pixels(p, IMAGE_SIZE).reshape(-1, 3) for name in classes
                                 for p in sorted((image_root / "train" / name).glob("*.png"))])
        return pixels.mean(0), pixels.std(0)

    mean, std = reference(("a", "b"))
    overrides = load_json(image_run / "config.json")["cfg_overrides"]
    np.testing.assert_allclose(overrides["mean"], mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(overrides["std"], std, rtol=0, atol=1e-5)
    with_c = reference(("a", "b", "c"))
    assert np.abs(with_c[0] - mean).max() > 0.01, "the test data must tell the selected classes apart"
    assert overrides["input_size"] == IMAGE_SIZE and overrides["source_classes"] == ["a", "b"]
    for folder in ["scratch", *(f"epoch_{e}" for e in kept_epochs(image_run))]:  # every export records them
        cfg = load_json(image_run / "checkpoints" / folder / "pretrained_cfg.json")["cfg"]
        assert {k: cfg[k] for k in CFG_KEYS} == {**{k: overrides[k] for k in CFG_KEYS}, "num_source_classes": 2}


def test_augment_does_not_change_the_recorded_normalisation(tmp_path):
    """The statistics are the images', not one draw of random crops: the same with and without --augment, and
    whatever the process's RNG drew before."""
    base = ["pretrain", "--data", "digits:0-2", "--image-size", "16", "--epochs", "1", "--max-train", "40",
            "--batch-size", "20"]
    torch.manual_seed(1)
    assert cli([*base, "--augment", "--out", tmp_path / "aug"]) == 0
    torch.manual_seed(2)
    assert cli([*base, "--out", tmp_path / "plain"]) == 0
    got, want = (load_json(tmp_path / n / "config.json")["cfg_overrides"] for n in ("aug", "plain"))
    assert (got["mean"], got["std"]) == (want["mean"], want["std"])


# ---- 2. the kept checkpoints ----------------------------------------------------------------------------------
def test_checkpoints_are_kept_every_E_epochs_and_at_the_last(digits_run):
    run = digits_run.path
    folders = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert folders == sorted([*(f"epoch_{e}" for e in DIGITS_KEPT), "scratch"])
    assert kept_epochs(run) == DIGITS_KEPT
    assert load_json(run / "metrics.json")["checkpoints"] == [f"epoch_{e}" for e in DIGITS_KEPT]
    assert load_json(run / "pretrain.json") == {"checkpoint_every": 2}
    by_epoch = {r["epoch"]: r for r in history(run)}
    index = load_json(run / "checkpoints" / "index.json")["epochs"]
    assert [e["epoch"] for e in index] == DIGITS_KEPT
    for entry in index:
        record = by_epoch[entry["epoch"]]
        assert entry["folder"] == f"epoch_{entry['epoch']}"
        assert (entry["train_accuracy"], entry["val_accuracy"], entry["val_loss"]) == \
            (record["train_accuracy"], record["val_accuracy"], record["val_loss"])
        raw = load_json(run / "checkpoints" / entry["folder"] / "pretrained_cfg.json")
        assert raw["builder"] == "resnet10_cifar" and raw["has_weights"] is True and raw["epoch"] == entry["epoch"]
        assert raw["source"]["val_accuracy"] == record["val_accuracy"] and raw["source"]["data"] == "digits:0-4"
    assert len({e["val_accuracy"] for e in index}) > 1, "the index copies each epoch's own numbers"


def test_each_checkpoint_holds_the_runs_weights_at_its_epoch(digits_run):
    run = digits_run.path
    for epoch in DIGITS_KEPT:
        saved, expected = weights(run, epoch), as_checkpoint(digits_run.states[epoch])
        assert sorted(saved) == sorted(expected)
        for key in saved:
            assert torch.equal(saved[key], expected[key]), (epoch, key)
    assert not torch.equal(weights(run, 2)["fc.weight"], weights(run, 5)["fc.weight"])
    # the last export against the run's own final checkpoint (model.backbone.*, model.head.*)
    last, _ = tensors_and_meta(run / "checkpoint" / "last.safetensors")
    for key, value in weights(run, DIGITS_KEPT[-1]).items():
        name = f"model.head.{key[3:]}" if key.startswith("fc.") else f"model.backbone.{key}"
        assert torch.equal(value, last[name]), key


def test_an_early_stop_keeps_its_last_epoch(tmp_path):
    """--patience 1 with a learning rate too small to improve: the run stops between two multiples of E, and
    that last epoch is kept too."""
    out = tmp_path / "run"
    assert cli(["pretrain", "--data", "digits:0-4", "--image-size", "16", "--epochs", "8", "--checkpoint-every",
                "3", "--patience", "1", "--lr", "1e-6", "--max-train", "60", "--max-val", "40", "--batch-size", "32",
                "--out", out]) == 0
    stop = len(history(out))
    assert stop < 8 and stop % 3 != 0, f"these settings must stop early off a multiple of 3 (stopped at {stop})"
    expected = [e for e in range(1, stop + 1) if e % 3 == 0] + [stop]
    assert kept_epochs(out) == expected
    assert load_json(out / "metrics.json")["epochs_run"] == stop


def test_a_model_built_from_a_checkpoint_has_the_pretraining_head(digits_run):
    """RUN@E (and RUN@last, and the folder path) builds a model whose source head gives the pre-training model's
    logits, bit for bit, and whose input config is the run's."""
    run = digits_run.path
    overrides = load_json(run / "config.json")["cfg_overrides"]
    x = {"pixel_values": torch.randn(6, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))}
    for name, epoch in ((f"{run}@2", 2), (f"{run}@last", 5), (str(run / "checkpoints" / "epoch_4"), 4)):
        model = create_model(name, 3).eval()
        pretraining = create_model("resnet10_cifar", 5).eval()  # the pre-training run's model at that epoch
        pretraining.load_state_dict(digits_run.states[epoch])
        with torch.no_grad():
            assert torch.equal(model.source_logits(x), pretraining(x)), name
        cfg = model.cfg
        assert (list(cfg.mean), list(cfg.std), cfg.input_size, list(cfg.source_classes)) == \
            (overrides["mean"], overrides["std"], overrides["input_size"], overrides["source_classes"])
        assert model.num_classes == 3 and model.source_head.out_features == 5


def test_scratch_is_the_architecture_with_random_weights_and_the_same_input_config(digits_run):
    from transferlab.runs import RunConfig, build_model
    from transferlab.training.config import TrainConfig

    run = digits_run.path
    raw = load_json(run / "checkpoints" / "scratch" / "pretrained_cfg.json")
    assert raw["has_weights"] is False and raw["builder"] == "resnet10_cifar"
    assert not (run / "checkpoints" / "scratch" / "model.safetensors").exists()
    scratch, trained = create_model(f"{run}@scratch", 3), create_model(f"{run}@2", 3)
    assert scratch.source_head is None
    for key in (*CFG_KEYS, "architecture", "interpolation", "crop_pct"):
        assert getattr(scratch.cfg, key) == getattr(trained.cfg, key), key
    s, t = scratch.backbone.state_dict(), trained.backbone.state_dict()
    assert {k: v.shape for k, v in s.items()} == {k: v.shape for k, v in t.items()}
    assert not torch.equal(s["conv1.0.weight"], t["conv1.0.weight"])

    def initial(seed: int) -> dict:  # as a run builds it: seeded by --seed
        config = RunConfig(model=f"{run}@scratch", data="digits:5-9", classes=["5", "6", "7"],
                           train=TrainConfig(seed=seed))
        return build_model(config).backbone.state_dict()

    a, b, again = initial(0), initial(1), initial(0)
    assert all(torch.equal(a[k], again[k]) for k in a)
    assert not torch.equal(a["conv1.0.weight"], b["conv1.0.weight"])
    assert not torch.equal(a["layer4.0.conv1.weight"], b["layer4.0.conv1.weight"])


# ---- 3. every command takes a checkpoint ------------------------------------------------------------------------
def test_finetune_from_a_checkpoint_with_the_source_head_init(digits_finetuned, digits_run):
    from transferlab.runs import load_run

    out, init = digits_finetuned
    source = weights(digits_run.path, 5)
    assert torch.equal(init.source_weight, source["fc.weight"]) and torch.equal(init.source_bias, source["fc.bias"])
    assert init.source_classes == ("0", "1", "2", "3", "4")
    assert init.relation.shape == (5, 5)
    torch.testing.assert_close(init.relation.sum(1), torch.ones(5))
    # each target row is the source rows weighted by p(source class | target class)
    torch.testing.assert_close(init.weight, init.relation @ source["fc.weight"], rtol=0, atol=1e-6)
    torch.testing.assert_close(init.bias, init.relation @ source["fc.bias"], rtol=0, atol=1e-6)
    config = load_json(out / "config.json")
    assert config["model"] == str((digits_run.path / "checkpoints" / "epoch_5").resolve())
    _, bundle, model, _ = load_run(out)
    overrides = load_json(digits_run.path / "config.json")["cfg_overrides"]
    assert list(model.cfg.mean) == overrides["mean"] and list(model.cfg.std) == overrides["std"]
    assert tuple(bundle.val[0][0].shape) == (3, IMAGE_SIZE, IMAGE_SIZE)  # the checkpoint's input size


def test_evaluate_and_predict_a_run_from_a_checkpoint(digits_finetuned, tmp_path, capsys):
    from sklearn.datasets import load_digits

    out, _ = digits_finetuned
    code, text, err = run_cli(["evaluate", "--run", out], capsys)
    assert code == 0, err
    assert json.loads(text)["accuracy"] == pytest.approx(load_json(out / "metrics.json")["val"]["accuracy"])
    digits = load_digits()
    scan = (digits.images[list(digits.target).index(7)] * 255 / 16).astype(np.uint8)
    image = tmp_path / "seven.png"
    Image.fromarray(scan).convert("RGB").save(image)
    code, text, err = run_cli(["predict", "--run", out, image], capsys)
    assert code == 0, err
    label, probability, echoed, error = text.splitlines()[1].split("\t")
    assert label in {"5", "6", "7", "8", "9"} and 0.2 <= float(probability) <= 1
    assert echoed == str(image) and error == ""


def test_diagnose_drift_measures_against_the_checkpoint(digits_run, digits_finetuned, tmp_path, capsys):
    """A linear probe leaves the checkpoint's backbone as it was: zero weight change and CKA 1 in every group,
    which holds only if drift compares with the checkpoint (not with a fresh init of its architecture); the
    fully fine-tuned run moved."""
    probe = tmp_path / "probe"
    assert cli(["finetune", "--model", f"{digits_run.path}@2", "--data", "digits:5-9", "--strategy",
                "linear_probe", "--epochs", "1", "--max-train", "40", "--max-val", "20", "--out", probe]) == 0
    names = [g.name for g in create_model(f"{digits_run.path}@2", 5).depth_groups]
    changes = {}
    for name, run in (("probe", probe), ("full", digits_finetuned[0])):
        code, text, err = run_cli(["diagnose", "drift", "--run", run, "--json"], capsys)
        assert code == 0, err
        groups = json.loads(text)["groups"]
        assert [g["name"] for g in groups] == names
        changes[name] = {g["name"]: (g["weight_change"], g["cka"]) for g in groups if g["name"] != "head"}
    assert len(changes["probe"]) == 5
    assert all(w == 0 and cka == pytest.approx(1.0, abs=1e-6) for w, cka in changes["probe"].values())
    assert all(w > 0 for w, _ in changes["full"].values())


def test_diagnose_forgetting_with_digits_source_data(digits_finetuned, digits_run, capsys):
    """The source head's accuracy before fine-tuning, on the source validation split, is the pre-training run's
    own validation accuracy at the checkpoint's epoch: the classes map by name, the input pipeline is the run's."""
    out, _ = digits_finetuned
    code, text, err = run_cli(["diagnose", "forgetting", "--run", out, "--source-data", "digits:0-4", "--json"],
                              capsys)
    assert code == 0, err
    result = json.loads(text)
    last = history(digits_run.path)[-1]
    assert result["mode"] == "source_accuracy" and result["source_classes"] == [0, 1, 2, 3, 4]
    assert result["examples"] == load_json(digits_run.path / "metrics.json")["val"]["n"]
    assert result["accuracy_before"] == pytest.approx(last["val_accuracy"], abs=1e-9)


def test_diagnose_forgetting_maps_an_image_folder_by_the_recorded_class_names(image_run, image_root, tmp_path,
                                                                               capsys):
    """The checkpoint was pre-trained on classes a, b of a folder that also holds c: forgetting reads a and b
    only and maps them to source classes 0 and 1 by name. Its accuracy before equals the checkpoint's accuracy
    computed here from the test images (PIL, the recorded normalisation); a linear probe forgets nothing."""
    probe = tmp_path / "probe"
    assert cli(["finetune", "--model", f"{image_run}@last", "--data", "digits:5-9", "--strategy", "linear_probe",
                "--epochs", "1", "--max-train", "30", "--max-val", "20", "--out", probe]) == 0
    code, text, err = run_cli(["diagnose", "forgetting", "--run", probe, "--source-data", image_root, "--split",
                               "test", "--json"], capsys)
    assert code == 0, err
    result = json.loads(text)
    assert result["source_classes"] == [0, 1] and result["examples"] == 6  # 3 test images of a and of b

    model = create_model(f"{image_run}@last", 2).eval()
    mean, std = np.array(model.cfg.mean), np.array(model.cfg.std)
    images, labels = [], []
    for label, name in enumerate(("a", "b")):
        for path in sorted((image_root / "test" / name).glob("*.png")):
            images.append(((pil_pixels(path, IMAGE_SIZE) - mean) / std).transpose(2, 0, 1))
            labels.append(label)
    x = torch.tensor(np.stack(images), dtype=torch.float32)
    with torch.no_grad():
        predicted = model.source_logits({"pixel_values": x}).argmax(-1)
    expected = (predicted == torch.tensor(labels)).float().mean().item()
    assert result["accuracy_before"] == pytest.approx(expected, abs=1e-9)
    assert result["accuracy_after"] == result["accuracy_before"] and result["forgetting"] == 0


def test_source_classes_map_by_recorded_name_before_digit_names(image_root, tmp_path):
    from transferlab.data import load_data
    from transferlab.data._source import load_source_data, source_label_map
    from transferlab.errors import ConfigError
    from transferlab.models._config import PretrainedCfg

    assert source_label_map(["3", "7"], 2, source_names=("3", "7")) == [0, 1]  # not 3 and 7
    assert source_label_map(["b"], 2, source_names=("a", "b")) == [1]
    assert source_label_map(["b"], 2, {"b": 0}, source_names=("a", "b")) == [0]  # a class map still wins
    with pytest.raises(ConfigError):
        source_label_map(["c"], 2, source_names=("a", "b"))
    cfg = PretrainedCfg(name="t", modality="image", input_size=IMAGE_SIZE, source_classes=("a", "c"))
    data = load_source_data(str(image_root), cfg)
    assert list(data.classes) == ["a", "c"] and len(data.test) == 6
    assert list(load_data(str(image_root), PretrainedCfg(name="t", modality="image", input_size=IMAGE_SIZE),
                          ).classes) == ["a", "b", "c"]


def test_bn_shift_of_a_checkpoint(digits_run, capsys):
    results = {}
    for which in ("2", "last"):
        code, text, err = run_cli(["diagnose", "bn-shift", "--model", f"{digits_run.path}@{which}", "--data",
                                   "digits:5-9", "--max-batches", "1", "--json"], capsys)
        assert code == 0, err
        results[which] = json.loads(text)
    model = create_model(f"{digits_run.path}@2", 5)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for r in results.values():
        assert len(r["layers"]) == len(norms) and r["layers"][0]["channels"] == norms[0].num_features == 8
    assert results["2"]["mean_skl"] != results["last"]["mean_skl"]  # each checkpoint's own running statistics


def test_compare_from_a_checkpoint_and_its_scratch_baseline(digits_run, tmp_path, capsys):
    """compare --model RUN@4: the strategies start from the checkpoint, the scratch baseline from random weights
    of the checkpoint's own architecture (resnet10_cifar), read with the checkpoint's input config; every candidate
    recipe of the baseline's search starts from that same random init."""
    from transferlab.compare.grid import SCRATCH_SEARCH, SCRATCH_STRATEGY, safe_name, scratch_name
    from transferlab.runs import load_run

    out = tmp_path / "grid"
    code, _, err = run_cli(["compare", "--model", f"{digits_run.path}@4", "--data", "digits:5-9", "--strategies",
                            "linear_probe", "--epochs", "1", "--max-train", "40", "--max-val", "20", "--out", out],
                           capsys)
    assert code == 0, err
    folder = str((digits_run.path / "checkpoints" / "epoch_4").resolve())
    probe = load_json(out / "runs" / "linear_probe" / "0" / "config.json")
    results = load_json(out / "results.json")
    choice = results["scratch_choice"]
    candidates = [scratch_name(r) for r in SCRATCH_SEARCH]
    assert [c["name"] for c in choice["candidates"]] == candidates and choice["selected"] in candidates
    selected = out / "runs" / safe_name(choice["selected"]) / "0"
    scratch = load_json(selected / "config.json")
    assert probe["model"] == folder and probe["weights"] is None
    assert scratch["model"] == folder and scratch["strategy"] == SCRATCH_STRATEGY and scratch["weights"]
    assert scratch["train"]["bn_stats"] == choice["recipe"]["bn_stats"]
    assert scratch["train"]["lr"] == pytest.approx(probe["train"]["lr"] * choice["recipe"]["lr_scale"])
    for name in candidates:  # the same random init for every recipe
        assert load_json(out / "runs" / safe_name(name) / "0" / "config.json")["weights"] == scratch["weights"]
    init, checkpoint = load_file(scratch["weights"]), weights(digits_run.path, 4)
    backbone = sorted(k for k in checkpoint if not k.startswith("fc."))
    assert sorted(k for k in init if not k.startswith("fc.")) == backbone
    assert all(init[k].shape == checkpoint[k].shape for k in backbone)
    assert not torch.equal(init["conv1.0.weight"], checkpoint["conv1.0.weight"])
    _, _, model, _ = load_run(selected)
    overrides = load_json(digits_run.path / "config.json")["cfg_overrides"]
    assert list(model.cfg.mean) == overrides["mean"] and model.cfg.input_size == IMAGE_SIZE
    assert results["strategies"] == ["linear_probe", "scratch"]


# ---- 4. SIGKILL, then --resume ------------------------------------------------------------------------------------
# digits 0-2, 60 images in batches of 16: 4 steps per epoch; a mid-epoch checkpoint every 3 steps; --augment
# draws from the RNG at every step, so a resume that lost its state would show.
KILL_ARGS = ["pretrain", "--data", "digits:0-2", "--image-size", "16", "--epochs", "3", "--checkpoint-every", "2",
             "--max-train", "60", "--max-val", "30", "--batch-size", "16", "--augment", "--checkpoint-every-steps", "3"]


def _without_run_path(path):
    raw = load_json(path)
    raw.pop("run")
    return raw


def test_killed_mid_epoch_and_inside_an_export_then_resumed_equals_an_uninterrupted_run(tmp_path):
    baseline, run = tmp_path / "baseline", tmp_path / "run"
    assert cli([*KILL_ARGS, "--out", baseline]) == 0

    # before step 7 (epoch 2, its 3rd batch): the run resumes from the checkpoint of step 6, inside epoch 2
    proc = run_subprocess([*KILL_ARGS, "--out", str(run)], fault="kill_at_step:7")
    assert proc.returncode == KILLED, proc.stderr
    _, meta = tensors_and_meta(run / "checkpoint" / "last.safetensors")
    state = json.loads(meta["trainer_state"])
    assert (state["epoch"], state["step"], state["batch_in_epoch"]) == (1, 6, 2), state
    assert not (run / "checkpoints" / "epoch_2").exists()

    # inside epoch 2's export: its weights file complete in the temporary folder, not yet renamed into place
    proc = run_subprocess([*KILL_ARGS, "--out", str(run), "--resume"], fault="kill_during_write:model.safetensors:1")
    assert proc.returncode == KILLED, proc.stderr
    assert list((run / "checkpoints").glob(".epoch_2.*.transferlab-tmp")), "the kill must leave a temporary export"
    assert not (run / "checkpoints" / "epoch_2").exists()

    proc = run_subprocess([*KILL_ARGS, "--out", str(run), "--resume"])
    assert proc.returncode == 0, proc.stderr
    assert list((run / "checkpoints").glob(".*")) == [], "stale temporary exports are removed on resume"
    assert_same_run(run, baseline)
    assert kept_epochs(run) == kept_epochs(baseline) == [2, 3]
    for folder in ("epoch_2", "epoch_3"):
        got, want = run / "checkpoints" / folder, baseline / "checkpoints" / folder
        assert (got / "model.safetensors").read_bytes() == (want / "model.safetensors").read_bytes(), folder
        assert _without_run_path(got / "pretrained_cfg.json") == _without_run_path(want / "pretrained_cfg.json")
    assert _without_run_path(run / "checkpoints" / "scratch" / "pretrained_cfg.json") == \
        _without_run_path(baseline / "checkpoints" / "scratch" / "pretrained_cfg.json")
    assert load_json(run / "checkpoints" / "index.json") == load_json(baseline / "checkpoints" / "index.json")
    assert load_json(run / "config.json") == load_json(baseline / "config.json")


# ---- 5. --resume and --overwrite ------------------------------------------------------------------------------------
def test_resume_with_another_checkpoint_every_is_refused(digits_run, tmp_path, capsys):
    run = copy_run(digits_run.path, tmp_path / "run")
    (run / "metrics.json").unlink()  # an unfinished run, so that --resume would otherwise continue it
    before = snapshot(run)
    code, _, err = run_cli([*DIGITS_ARGS[:-2], "--checkpoint-every", "3", "--resume", "--out", run], capsys)
    assert code == 2 and "--checkpoint-every 3 contradicts the run's 2" in error_line(err)
    assert snapshot(run) == before


def test_overwrite_removes_the_old_checkpoints_and_keeps_a_users_files(digits_run, tmp_path, capsys):
    run = copy_run(digits_run.path, tmp_path / "run")
    (run / "checkpoints" / "epoch_2" / "notes.txt").write_text("mine")
    (run / "checkpoints" / "mine.txt").write_text("mine too")
    code, _, err = run_cli(["pretrain", "--data", "digits:0-4", "--image-size", "16", "--epochs", "3",
                            "--checkpoint-every", "3", "--max-train", "40", "--max-val", "20", "--out", run,
                            "--overwrite"], capsys)
    assert code == 0, err
    assert (run / "checkpoints" / "epoch_2" / "notes.txt").read_text() == "mine"
    assert (run / "checkpoints" / "mine.txt").read_text() == "mine too"
    assert sorted(p.name for p in (run / "checkpoints" / "epoch_2").iterdir()) == ["notes.txt"]
    assert not (run / "checkpoints" / "epoch_4").exists() and not (run / "checkpoints" / "epoch_5").exists()
    assert kept_epochs(run) == [3] and load_json(run / "pretrain.json") == {"checkpoint_every": 3}
    code, _, err = run_cli(["finetune", "--model", f"{run}@2", "--data", "digits:5-9", "--out", tmp_path / "ft"],
                           capsys)
    assert code == 2 and "not a kept checkpoint; kept: 3" in error_line(err)


def test_overwrite_writes_an_export_next_to_a_users_file(digits_run, tmp_path, capsys):
    """The new run keeps epoch 2 as well: its export goes into the folder that holds the user's file."""
    run = copy_run(digits_run.path, tmp_path / "run")
    (run / "checkpoints" / "epoch_2" / "notes.txt").write_text("mine")
    code, _, err = run_cli(["pretrain", "--data", "digits:0-4", "--image-size", "16", "--epochs", "2",
                            "--checkpoint-every", "2", "--max-train", "40", "--max-val", "20", "--out", run,
                            "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (run / "checkpoints" / "epoch_2").iterdir()) == \
        ["model.safetensors", "notes.txt", "pretrained_cfg.json"]
    assert kept_epochs(run) == [2]
    assert load_json(run / "checkpoints" / "epoch_2" / "pretrained_cfg.json")["epoch"] == 2
    assert create_model(f"{run}@2", 3).source_head.out_features == 5


# ---- 6. bad input: one line, exit 2, nothing lost --------------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--classes", "1,2,11"], "digits has no class '11'"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be a whole number of epochs >= 1, got 0"),
    (["--model", "efficientnet_lite0"], "efficientnet_lite0 is already pre-trained"),
    (["--model", "no_such_architecture"], "is not one"),
    (["--weights", "w.safetensors"], "unrecognized arguments: --weights"),
])
def test_bad_pretrain_input_is_one_line_and_changes_nothing(digits_run, tmp_path, capsys, extra, message):
    """Refused even with --overwrite, before the run in --out is touched."""
    run = copy_run(digits_run.path, tmp_path / "run")
    before = snapshot(run)
    code, _, err = run_cli([*DIGITS_ARGS, *extra, "--out", run, "--overwrite"], capsys)  # the last option wins
    assert code == 2 and message in error_line(err)
    assert snapshot(run) == before


def test_pretrain_api_refuses_weights():
    from transferlab.errors import ConfigError
    from transferlab.pretraining import check_pretrainable
    from transferlab.runs import RunConfig

    with pytest.raises(ConfigError, match="starts from random weights"):
        check_pretrainable(RunConfig(model="resnet10_cifar", data="digits", weights="w.safetensors"))


@pytest.fixture
def broken_checkpoints(digits_run, tmp_path):
    """Copies of epoch_4: without its pretrained_cfg.json, and with its builder changed to resnet18."""
    import shutil

    no_cfg = shutil.copytree(digits_run.path / "checkpoints" / "epoch_4", tmp_path / "no_cfg")
    (no_cfg / "pretrained_cfg.json").unlink()
    other = shutil.copytree(digits_run.path / "checkpoints" / "epoch_4", tmp_path / "other_arch")
    raw = load_json(other / "pretrained_cfg.json")
    raw["builder"] = "resnet18"
    (other / "pretrained_cfg.json").write_text(json.dumps(raw))
    return {"no_cfg": no_cfg, "other_arch": other}


@pytest.mark.parametrize("case, message", [
    ("no_cfg", "holds weights but no pretrained_cfg.json"),
    ("other_arch", "weights do not fit resnet18"),
    ("weights_of_other_arch", "weights do not fit resnet18"),
    ("epoch_not_kept", "epoch_7 is not a kept checkpoint; kept: 2, 4, 5"),
])
def test_a_bad_checkpoint_is_one_line(digits_run, broken_checkpoints, tmp_path, capsys, case, message):
    model = {"no_cfg": ["--model", broken_checkpoints["no_cfg"]],
             "other_arch": ["--model", broken_checkpoints["other_arch"]],
             "weights_of_other_arch": ["--model", "resnet18", "--weights",
                                       digits_run.path / "checkpoints" / "epoch_4" / "model.safetensors"],
             "epoch_not_kept": ["--model", f"{digits_run.path}@7"]}[case]
    before = snapshot(digits_run.path)
    out = tmp_path / "out"
    code, _, err = run_cli(["finetune", *model, "--data", "digits:5-9", "--epochs", "1", "--max-train", "20",
                            "--out", out], capsys)
    assert code == 2 and message in error_line(err)
    assert not out.exists() and snapshot(digits_run.path) == before
