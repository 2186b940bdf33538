"""`transferlab export`: a finished run as a deployable model that needs nothing of transferlab.

    from transferlab.export import export_run
    report = export_run("runs/lora", "onnx", "deploy/lora", quantize="int8")

DIR/model.onnx | model.pt | model.safetensors   the run's model: mergeable PEFT methods (LoRA, BitFit, peft:<type>)
                     folded into the weights, unmergeable ones (adapters) part of the graph, the head included,
                     BatchNorm in eval mode; dynamic batch (and sequence length, for text)
DIR/model.int8.onnx  with quantize="int8": dynamic (text) or static, calibrated (images) int8
DIR/preprocess.json  how raw inputs become the graph's inputs (images: size, resize, crop, interpolation, mean,
                     std, channel order; text: the tokenizer files beside it and max_length)
DIR/classes.json     the class names, in logit order
DIR/export.json      the exporter, opset, tolerance, and the verification: max logit difference and accuracy of
                     PyTorch and of the export on the run's validation split, file sizes, export seconds

Every export is verified before it is kept: written into a temporary folder beside DIR, run on the validation
split, and renamed to DIR only when it passes (ExportMismatch otherwise, and nothing is left).

A multi-task module (`transferlab modules merge A B ... --out M`) exports one task at a time, as a run does:

    export_run("M", "onnx", "deploy/low", task="low")     # the merged backbone + task low's head and classes
    export_run("M", "onnx", "deploy/all", task="all")     # deploy/all/<task>/model.onnx ..., one folder a task

each verified on its task's validation split (the data its run recorded, or `data`).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from transferlab.errors import ConfigError, TransferlabError
from transferlab.export._formats import DEFAULT_OPSET, FILES, FORMATS, INT8_FILE, Runner, check_opset, \
    export_onnx, export_safetensors, export_torchscript, quantize
from transferlab.export._prepare import example_inputs, graph_module, merged_copy, preprocess_spec

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "transferlab-export-1"
FP32_TOLERANCE = 1e-3  # absolute, on logits: float32 kernels of two runtimes differ by ~1e-6..1e-4
DEFAULT_MAX_DROP = 0.01  # int8: at most one accuracy point lost on the validation split
CALIBRATION_IMAGES = 256
ALL_TASKS = "all"  # --task all: every task of a multi-task module, one subfolder each

__all__ = ["ALL_TASKS", "DEFAULT_MAX_DROP", "FORMATS", "FP32_TOLERANCE", "ExportMismatch", "export_run"]


class ExportMismatch(TransferlabError):
    """The written model does not reproduce the run's model within the tolerance (nothing is kept)."""


def check_request(run_dir: str | Path, fmt: str, out: str | Path, quantize_mode: str | None = None,
                  opset: int | None = None, task: str | None = None,
                  data: str | None = None) -> tuple[Path, Path, list[str | None]]:
    """(run folder, output folder, tasks to export) after every check that needs no model: a finished run (or a
    multi-task module and a task of it, or ALL_TASKS), a known format, an opset the exporters write, int8 only for
    ONNX, --out new or empty and clear of the run and its data. Tasks: [None] for a run."""
    from transferlab.outputs import check_output_path
    from transferlab.runs import read_run_config, run_inputs, run_state
    from transferlab.strategies.peft_methods.multitask_module import is_multitask

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    if quantize_mode not in (None, "int8"):
        raise ConfigError(f"--quantize {quantize_mode}: only int8 is supported")
    if quantize_mode and fmt != "onnx":
        raise ConfigError("--quantize int8 needs --format onnx (ONNX Runtime's quantisation)")
    if opset is not None:
        if fmt != "onnx":
            raise ConfigError(f"--opset applies to --format onnx, not {fmt}")
        check_opset(opset)
    if data is not None and not str(data).strip():
        raise ConfigError("--data is empty (an unset shell variable?): give a data set")
    run_dir = Path(run_dir)
    if task is not None or (run_dir.is_dir() and is_multitask(run_dir)):
        tasks, inputs = _multitask_request(run_dir, task, data)
    else:
        state = run_state(run_dir) if run_dir.is_dir() else "missing"
        if state != "finished":
            why = {"missing": "no such folder", "empty": "not a run", "foreign": "not a transferlab run",
                   "unfinished": "the run is not finished (no metrics.json)"}[state]
            raise ConfigError(f"--run {run_dir}: {why}; export takes a finished run")
        tasks, inputs = [None], run_inputs(read_run_config(run_dir))
    if data is not None:
        from transferlab.data import is_builtin_spec

        inputs["--data"] = None if is_builtin_spec(data) else data
    out_path = check_output_path(out, "--out", {"--run": str(run_dir), **inputs})
    if out_path.exists() and any(out_path.iterdir()):
        raise ConfigError(f"--out {out_path} is not empty; choose a new or empty folder (nothing was changed)")
    return run_dir, out_path, tasks


def _multitask_request(run_dir: Path, task: str | None, data: str | None) -> tuple[list[str], dict]:
    """(the tasks `task` selects, the paths their runs read) of the multi-task module at run_dir."""
    from transferlab.runs import RunConfig, run_inputs
    from transferlab.strategies.peft_methods.multitask_module import is_multitask, read_multitask

    if not run_dir.is_dir():
        raise ConfigError(f"--run {run_dir}: no such folder")
    if not is_multitask(run_dir):
        raise ConfigError(f"--task {task}: --run {run_dir} is not a multi-task module (transferlab modules merge "
                          f"A B ... --out DIR writes one); --task applies to those only")
    meta = read_multitask(run_dir)
    names = list(meta.get("tasks") or {})
    if task is None:
        raise ConfigError(f"--run {run_dir} is a multi-task module (tasks {', '.join(names)}): pass --task NAME "
                          f"or --task {ALL_TASKS}")
    if task in names:
        selected = [task]
    elif task == ALL_TASKS:
        selected = names
    else:
        raise ConfigError(f"--task {task}: {run_dir} has no such task; tasks: {', '.join(names)} "
                          f"(or {ALL_TASKS})")
    inputs: dict[str, object] = {}
    for name in selected:
        config = RunConfig.from_dict(meta["tasks"][name]["run_config"])
        if data is None and not str(config.data).strip():
            raise ConfigError(f"--task {name}: the module records no data set for this task (its module was made "
                              f"outside a run): pass --data with its validation inputs")
        inputs |= {f"{option} (task {name})": value for option, value in run_inputs(config).items()}
    return selected, inputs


def export_run(run_dir: str | Path, fmt: str, out: str | Path, quantize_mode: str | None = None,
               opset: int | None = None, max_drop: float = DEFAULT_MAX_DROP, max_val: int | None = None,
               task: str | None = None, data: str | None = None) -> dict:
    """Export, verify and write a finished run (see the module docstring); returns export.json's content.
    `max_val`: verify on at most this many validation examples (default: all the run validated on).
    `task`: a task of the multi-task module at `run_dir`, or ALL_TASKS (one subfolder per task; export.json at
    the top holds every task's report under `tasks`). `data`: verify on this data set's validation split (with
    the run's classes) instead of the one the run recorded."""
    run_dir, out_path, tasks = check_request(run_dir, fmt, out, quantize_mode, opset, task, data)
    opset = opset or DEFAULT_OPSET
    started = time.perf_counter()
    made = [d for d in out_path.parents if not d.exists()]  # innermost first: removed again if the export fails
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".export-tmp", dir=out_path.parent))
    try:
        one = dict(fmt=fmt, quantize_mode=quantize_mode, opset=opset, max_drop=max_drop, max_val=max_val, data=data)
        if task == ALL_TASKS and tasks != [ALL_TASKS]:
            reports = {name: _export_one(tmp / name, run_dir, name, **one) for name in tasks}
            report = {"format": EXPORT_FORMAT, "multitask": str(run_dir.resolve()), "tasks": reports,
                      "export_seconds": round(time.perf_counter() - started, 2)}
            (tmp / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        else:
            report = _export_one(tmp, run_dir, tasks[0], **one)
        if out_path.exists():
            out_path.rmdir()  # empty (checked); the rename below takes its place
        tmp.rename(out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return report


def _export_one(folder: Path, run_dir: Path, task: str | None, fmt: str, quantize_mode, opset: int,
                max_drop: float, max_val: int | None, data: str | None) -> dict:
    """Load the run (or one task of a multi-task module), write and verify its export into `folder`."""
    from transferlab.runs import load_run

    started = time.perf_counter()
    config, dataset, model, strategy = load_run(run_dir, data, augment=False, max_val=max_val, task=task)
    model.eval()
    exported, merged, kept = merged_copy(model, strategy)
    multitask = None
    if task is not None:
        multitask, merged, kept = _multitask_parts(run_dir, task)
    graph = graph_module(exported)
    text = model.cfg.modality == "text"
    val_batches = _batches(dataset.val, dataset.collate, config.train.eval_batch_size)
    if not val_batches:
        where = f"--task {task}: " if task else ""
        raise ConfigError(f"{where}{run_dir}: the validation split has no readable examples to verify the export on")
    folder.mkdir(parents=True, exist_ok=True)
    report = _write_and_verify(folder, fmt, config, dataset, model, exported, graph, text, merged, kept,
                               val_batches, quantize_mode, opset, max_drop)
    report["verified_on"]["data"] = str(config.data)
    report["export_seconds"] = round(time.perf_counter() - started, 2)
    report["run"] = str(run_dir.resolve())
    if multitask is not None:
        report["task"] = task
        report["multitask"] = multitask
    (folder / "export.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _multitask_parts(run_dir: Path, task: str) -> tuple[dict, list[str], list[str]]:
    """(what export.json says of the module, merged methods, methods kept in the graph) for one task of a
    multi-task module: its backbone update is folded into the weights (kind 'weights') or is a merged adapter
    layer (kind 'module', part of the graph); the task's head and BatchNorm statistics are its own."""
    from transferlab.strategies.peft_methods.multitask_module import read_multitask

    meta = read_multitask(run_dir)
    backbone = meta["backbone"]
    in_graph = backbone["kind"] == "module"
    about = {"module": str(run_dir.resolve()), "task": task, "tasks": list(meta["tasks"]),
             "merge_method": meta.get("method"), "module_method": meta.get("module_method"),
             "backbone": backbone["kind"]}
    return about, ([] if in_graph else [str(meta.get("module_method"))]), ([backbone["spec"]] if in_graph else [])


def _batches(dataset, collate, batch_size: int) -> list[dict]:
    from transferlab.training.evaluate import ordered_loader

    out = []
    for batch in ordered_loader(dataset, batch_size, collate):
        if batch["labels"].numel():
            out.append(batch)
    return out


def _write_and_verify(tmp: Path, fmt, config, data, model, exported, graph, text, merged, kept, val_batches,
                      quantize_mode, opset, max_drop) -> dict:
    names = tuple(graph.input_names)
    sample = example_inputs(graph, _example(val_batches, text))
    path = tmp / FILES[fmt]
    with torch.no_grad():
        if fmt == "onnx":
            exporter = export_onnx(graph, sample, path, opset, text)
        elif fmt == "torchscript":
            exporter = export_torchscript(graph, sample, path)
        else:
            exporter = export_safetensors(exported, path, config, merged, kept)
    preprocess = preprocess_spec(config, model, tmp)
    (tmp / "preprocess.json").write_text(json.dumps(preprocess, indent=2) + "\n", encoding="utf-8")
    (tmp / "classes.json").write_text(json.dumps(list(config.classes), indent=2) + "\n", encoding="utf-8")

    reference, labels = _torch_logits(model, val_batches)
    runner = Runner(fmt, path, config, kept)
    got = np.concatenate([runner(_feeds(b, names), names) for b in val_batches])
    diff = float(np.abs(got - reference).max())
    changed = int((got.argmax(1) != reference.argmax(1)).sum())
    torch_acc, export_acc = _accuracy(reference, labels), _accuracy(got, labels)
    report = {"format": EXPORT_FORMAT, "export_format": fmt, "exporter": exporter,
              "opset": opset if fmt == "onnx" else None, "model": config.model, "strategy": config.strategy,
              "merged": merged, "in_graph": kept, "modality": model.cfg.modality, "inputs": list(names),
              "tolerance": {"max_abs_logit_diff": FP32_TOLERANCE, "predictions_changed": 0},
              "verified_on": {"split": "val", "examples": int(len(labels))},
              "max_abs_logit_diff": diff, "predictions_changed": changed,
              "accuracy": {"pytorch": torch_acc, fmt: export_acc},
              "files": {FILES[fmt]: path.stat().st_size}}
    if not diff <= FP32_TOLERANCE or changed:
        raise ExportMismatch(f"the exported model differs from the run's: max logit difference {diff:.2e} "
                             f"(tolerance {FP32_TOLERANCE:g}), {changed} of {len(labels)} predictions changed; "
                             f"nothing was written")
    if quantize_mode == "int8":
        calibration = None if text else _calibration(data, config.train.eval_batch_size)
        started = time.perf_counter()
        how = quantize(path, tmp / INT8_FILE, text, calibration)
        int8 = Runner("onnx", tmp / INT8_FILE)
        got8 = np.concatenate([int8(_feeds(b, names), names) for b in val_batches])
        int8_acc = _accuracy(got8, labels)
        drop = torch_acc - int8_acc
        report["int8"] = {"quantization": how, "seconds": round(time.perf_counter() - started, 2),
                          "calibration_images": None if text else sum(len(c["pixel_values"]) for c in calibration),
                          "accuracy": int8_acc, "accuracy_drop": drop, "max_drop": max_drop,
                          "max_abs_logit_diff": float(np.abs(got8 - reference).max()),
                          "predictions_changed": int((got8.argmax(1) != reference.argmax(1)).sum())}
        report["accuracy"]["onnx_int8"] = int8_acc
        report["files"][INT8_FILE] = (tmp / INT8_FILE).stat().st_size
        if drop > max_drop:
            raise ExportMismatch(f"int8 loses {drop * 100:.1f} accuracy points on the validation split "
                                 f"({torch_acc:.4f} -> {int8_acc:.4f}; --max-drop {max_drop:g}); nothing was written")
    report["files"] |= {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.name not in report["files"]}
    return report


def _example(val_batches: list[dict], text: bool) -> dict:
    """Two examples (so no axis is traced as size 1), of the first validation batch."""
    batch = val_batches[0]
    if batch["labels"].numel() >= 2:
        return {k: v[:2] for k, v in batch.items()}
    return {k: torch.cat([v, v]) for k, v in batch.items()}


def _feeds(batch: dict, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {n: batch[n].numpy() for n in names}


@torch.no_grad()
def _torch_logits(model, batches: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    logits = [model({k: v for k, v in b.items() if k != "labels"}).float().numpy() for b in batches]
    return np.concatenate(logits), np.concatenate([b["labels"].numpy() for b in batches])


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _calibration(data, batch_size: int) -> list[dict]:
    """Up to CALIBRATION_IMAGES training images, preprocessed as for evaluation, in batches."""
    import torch.utils.data as tud

    count = min(CALIBRATION_IMAGES, len(data.train))
    subset = tud.Subset(data.train, list(np.linspace(0, len(data.train) - 1, count).astype(int)))
    return [{"pixel_values": b["pixel_values"].numpy()} for b in _batches(subset, data.collate, batch_size)]
