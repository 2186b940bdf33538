"""The high- versus low-frequency lab: early convolutions are frequency filters; when a target's labels can only be
read from frequencies that the pre-trained early layers discard, tuning the later layers cannot recover them.
Measured: test accuracy of linear_probe, freeze:k=3 and full fine-tuning of efficientnet_lite0 (ImageNet) and of
the same network with a low-pass stem, on a target whose label is a high-frequency grating and on a low-frequency
control; and whether `transferlab diagnose frequency`'s gain of each depth group at the label's frequency predicts
which strategies fail.

Data (written under OUT/data, never into the repository), on hymenoptera's real photographs as carriers
($TRANSFERLAB_DATA/hymenoptera, docs/data.md):
- every photograph is resized (shorter side, Lanczos) and centre-cropped to R x R, R = int(S / crop_pct) = 146 for
  --image-size S = 128 and efficientnet_lite0's crop_pct 0.875, and written as a lossless PNG, so the eval
  transform's Resize(R) is the identity and its CenterCrop(S) keeps pixels: the model sees exactly the designed
  pattern (checked below through transferlab's own eval transform);
- two classes "a" and "b", assigned at random (seed 0, balanced): the photograph carries no label information.
  The class is marked only by a faint grey sinusoidal grating of amplitude A (--amplitude, default 8/255 in [0, 1]
  pixel units), axis-aligned: class a vertical stripes (varying along x), class b horizontal stripes;
  - target `high`: f = 1/3 cycles per pixel of the model input. The phase is a random sign, with the grating's zero
    crossing placed on the stem's 'same'-padding column/row (right and bottom for an even S), so that every 3-tap
    window of the stride-2 stem, the padded border included, sums the grating to exactly zero; its integer pixel
    levels round(255 A sin(2 pi u / 3)) = (0, +l, -l) keep that sum exactly zero after 8-bit quantisation;
  - target `low` (the control): f = 1/32 cycles per pixel (about 4 cycles across the image), uniform random phase;
  - the same photographs, labels and signs in both targets; the photograph's levels are first compressed to
    [l_max, 255 - l_max] so that adding the grating never clips;
- splits: train/ from hymenoptera train/ (245 photographs) with a val/ of 20 % of them (stratified by the random
  label, seed 0) written as its own folder, test/ = hymenoptera val/ (153 photographs): the loader's
  DIR/{train,val,test}/<class>/ layout.
Models: `efficientnet_lite0` (bundled ImageNet weights) and `lowpass`: the same weights saved to
OUT/weights/efficientnet_lite0_lowpass.safetensors with every 3x3 kernel w[o, i] of `conv_stem.weight`
(32, 3, 3, 3) replaced by its mean over the 9 taps (a box filter per kernel: response (1 + 2 cos 2 pi f) / 3 along
an axis, exactly zero at f = 1/3, 0.987 at 1/32; each channel's colour/DC response is kept), run as
`--model efficientnet_lite0 --weights FILE` (the registry model's own input config and depth groups; its file
loader takes the same tensors, source classifier included). Checked before any run (OUT/checks.json): a written
PNG through transferlab's eval transform equals its pixel crop, the grating's FFT peak and fitted amplitude are
f and A, the low-pass stem's output (and the whole low-pass network's pooled features) on a high-target image
equal those on its bare photograph, and --weights with the unmodified file gives the bundled model's features.
Runs: targets x models x strategies (--strategies, default linear_probe,freeze:k=3,full; freeze:k=3 freezes
stem, blocks.0, blocks.1) x seeds (--seeds N: 0..N-1) of `transferlab finetune --image-size S --epochs E
--batch-size 32` without --augment (the training transform is then the eval transform), other settings default,
a shared --cache-dir for the frozen-prefix cache; test accuracy from each RUN/metrics.json. A run whose
metrics.json exists is skipped (one with only config.json is resumed), so the script resumes.
Diagnostic (skip with --no-diagnostic, or skipped with a note when the command is missing): per model
`transferlab diagnose frequency --model efficientnet_lite0 [--weights FILE | --run RUN] --image-size S --json`;
each depth group's gain interpolated at 1/3 and 1/32, and for each strategy the gain after its last frozen group.
Output: OUT/results.json (every run: target, model, strategy, seed, val and test accuracy, seconds; the summary,
checks and gains) and OUT/table.md (mean ± sample std of test accuracy over seeds, chance 0.5), printed at the end.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/frequency_lab.py [--out /tmp/transferlab_frequency_lab]
        [--image-size 128] [--amplitude 8/255] [--seeds 3] [--epochs 5] [--strategies linear_probe,freeze:k=3,full]
        [--targets high,low] [--models efficientnet_lite0,lowpass] [--max-images N] [--no-diagnostic]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from _data import dataset
# the data and weights (the lab `frequency` builds the same): transferlab/labs/frequency_data.py
from transferlab.labs.frequency_data import CLASSES, FREQUENCY, MODEL, build_data, carrier, write_weights

ROOT = Path(__file__).resolve().parents[1]
TL = str(Path(sys.executable).parent / "transferlab")
MODELS = ("efficientnet_lite0", "lowpass")
CHANCE = 0.5


# ---------------------------------------------------------------------------------------------- geometry
# ---------------------------------------------------------------------------------------------- checks
def run_checks(out: Path, manifest: dict, geo: dict, size: int, amplitude: float, weights: dict,
               hymenoptera: Path) -> dict:
    """What the model is fed, checked through transferlab's own loader (see the docstring); exits on a failure."""
    check_file = out / "checks.json"
    if check_file.exists():
        return json.loads(check_file.read_text())
    import torch

    from transferlab.data import DataOptions, load_single_image
    from transferlab.models import create_model, model_cfg

    torch.set_grad_enabled(False)
    cfg = model_cfg(MODEL)
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    off = geo["offset"]
    models = {"bundled": create_model(MODEL, 2).eval(),
              "original_file": create_model(MODEL, 2, weights=str(weights["original"])).eval(),
              "lowpass": create_model(MODEL, 2, weights=str(weights["lowpass"])).eval()}
    failures = []
    report = {"crop_pct": geo["crop_pct"], "written_side": geo["side"], "image_size": size, "crop_offset": off,
              "stem_padded_positions": geo["padded"], "interpolation": geo["interpolation"],
              "source_head": {k: m.source_head is not None for k, m in models.items()}, "images": []}
    for target, f in FREQUENCY.items():
        for cls in CLASSES:
            item = next(m for m in manifest["images"] if m["split"] == "train" and m["class"] == cls)
            path = out / "data" / target / "train" / cls / item["name"]
            with Image.open(path) as img:
                written = np.asarray(img.convert("RGB"), dtype=np.float64)
                side_ok = img.size == (geo["side"], geo["side"]) and img.format == "PNG"
            fed = load_single_image(str(path), cfg, DataOptions(image_size=size))  # (3, S, S), normalised
            pixels = (fed * std + mean).numpy().transpose(1, 2, 0)
            crop = written[off:off + size, off:off + size] / 255
            identity = float(np.abs(pixels - crop).max())
            base = carrier(hymenoptera / item["source"], geo["side"], manifest["margin"])
            base_crop = base[off:off + size, off:off + size].astype(np.float64) / 255
            residual = (pixels - base_crop).mean(axis=2)  # the grating as fed, (S, S)
            profile = residual.mean(axis=0) if cls == "a" else residual.mean(axis=1)
            across = residual - (profile[None, :] if cls == "a" else profile[:, None])
            peak, amp = spectrum_peak(profile, f)
            # the low-pass (and original) stem on the fed image minus on its bare photograph
            x = fed.unsqueeze(0)
            x0 = ((torch.from_numpy(base_crop.transpose(2, 0, 1)).float() - mean) / std).unsqueeze(0)
            stem = {k: float((models[k].backbone.conv_stem(x) - models[k].backbone.conv_stem(x0)).abs().max())
                    for k in ("bundled", "lowpass")}
            feats = {k: float((models[k].features({"pixel_values": x}) - models[k].features({"pixel_values": x0}))
                              .abs().max()) for k in ("bundled", "lowpass")}
            row = {"target": target, "class": cls, "file": str(path.relative_to(out)), "written_side_ok": side_ok,
                   "fed_minus_crop_max": identity, "fft_peak_frequency": peak, "designed_frequency": f,
                   "fitted_amplitude_255": amp * 255, "designed_amplitude_255": amplitude * 255,
                   "variation_across_stripes_max_255": float(np.abs(across).max() * 255),
                   "stem_output_change_max": stem, "pooled_feature_change_max": feats}
            report["images"].append(row)
            print(f"check {target}/{cls}: fed == crop (max diff {identity:.1e}), FFT peak {peak:.4f} c/px "
                  f"(designed {f:.4f}), amplitude {amp * 255:.2f}/255 (designed {amplitude * 255:.2f}), "
                  f"stem change original {stem['bundled']:.3g} low-pass {stem['lowpass']:.3g}, pooled features "
                  f"original {feats['bundled']:.3g} low-pass {feats['lowpass']:.3g}", flush=True)
            if not side_ok or identity > 1e-5:
                failures.append(f"{path}: not fed as written (side ok {side_ok}, max diff {identity})")
            if abs(peak - f) > 1 / size or abs(amp - amplitude) > 0.15 * amplitude or np.abs(across).max() > 1e-5:
                failures.append(f"{path}: grating at {peak:.4f} c/px, amplitude {amp * 255:.2f}/255")
            if target == "high" and stem["lowpass"] > 1e-4 * max(stem["bundled"], 1e-12):
                failures.append(f"{path}: the low-pass stem passes the high-frequency grating ({stem['lowpass']})")
    batch = torch.stack([load_single_image(str(out / "data/high" / m["split"] / m["class"] / m["name"]), cfg,
                                           DataOptions(image_size=size)) for m in manifest["images"][:8]])
    same = float((models["bundled"].features({"pixel_values": batch})
                  - models["original_file"].features({"pixel_values": batch})).abs().max())
    report["weights_file_vs_bundled_feature_max_diff"] = same
    print(f"check --weights {weights['original'].name} vs bundled {MODEL}: pooled features max diff {same:.1e}; "
          f"source heads kept: {report['source_head']}", flush=True)
    if same > 1e-6:
        failures.append(f"--weights with the unmodified file does not reproduce {MODEL} (max diff {same})")
    if failures:
        sys.exit("checks failed:\n  " + "\n  ".join(failures))
    check_file.write_text(json.dumps(report, indent=1))
    return report


def spectrum_peak(profile: np.ndarray, f: float) -> tuple[float, float]:
    """(frequency of the windowed, zero-padded FFT's peak in cycles per pixel, least-squares amplitude at f)."""
    p = profile - profile.mean()
    n = 96 * 32  # a multiple of 3 and 32: both designed frequencies fall on a bin
    spec = np.abs(np.fft.rfft(p * np.hanning(len(p)), n=n))
    peak = float(np.argmax(spec[1:]) + 1) / n
    u = np.arange(len(p))
    basis = np.stack([np.sin(2 * np.pi * f * u), np.cos(2 * np.pi * f * u)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, p, rcond=None)
    return peak, float(np.hypot(*coef))


# ---------------------------------------------------------------------------------------------- runs
def split_specs(text: str) -> list[str]:
    """'linear_probe,freeze:k=3,train_bn=true,full' -> specs (a piece with '=' but no ':' continues the last)."""
    specs: list[str] = []
    for piece in filter(None, (p.strip() for p in text.split(","))):
        if specs and "=" in piece and ":" not in piece:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    return specs


def slug(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.replace("=", ""))


def run(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        sys.exit(f"failed ({proc.returncode}), see {log}:\n  " + "\n  ".join(tail))
    return time.perf_counter() - t0


def model_args(model: str, weights: dict) -> list[str]:
    return ["--model", MODEL] + (["--weights", str(weights["lowpass"])] if model == "lowpass" else [])


def finetune_all(out: Path, args, weights: dict) -> list[dict]:
    rows = []
    grid = [(t, m, s, seed) for t in args.targets for m in args.models for s in args.strategies
            for seed in range(args.seeds)]
    for i, (target, model, strategy, seed) in enumerate(grid, 1):
        run_dir = out / "runs" / target / model / slug(strategy) / f"s{seed}"
        seconds_file = run_dir.parent / f"s{seed}.seconds"
        if not (run_dir / "metrics.json").exists():
            print(f"[{i}/{len(grid)}] {target} / {model} / {strategy} / seed {seed}", flush=True)
            seconds = run([TL, "finetune", *model_args(model, weights), "--data", str(out / "data" / target),
                           "--strategy", strategy, "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                           "--seed", str(seed), "--image-size", str(args.image_size),
                           "--cache-dir", str(out / "cache"), "--out", str(run_dir)]
                          + (["--resume"] if (run_dir / "config.json").exists() else []),
                          run_dir.parent / f"s{seed}.log")
            seconds_file.write_text(f"{seconds:.1f}\n")
            print(f"   {seconds:.0f} s", flush=True)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        if metrics.get("test") is None:
            sys.exit(f"{run_dir}/metrics.json has no test accuracy: is {out / 'data' / target / 'test'} there?")
        rows.append({"target": target, "frequency": FREQUENCY[target], "model": model, "strategy": strategy,
                     "seed": seed, "val_accuracy": metrics["val"]["accuracy"],
                     "test_accuracy": metrics["test"]["accuracy"], "test_n": metrics["test"]["n"],
                     "seconds": float(seconds_file.read_text()) if seconds_file.exists() else None,
                     "train_seconds": metrics.get("train_seconds"), "run": str(run_dir)})
        print(f"   {target} / {model} / {strategy} / seed {seed}: val {rows[-1]['val_accuracy']:.3f} "
              f"test {rows[-1]['test_accuracy']:.3f}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- diagnostic
def diagnose(out: Path, args, weights: dict, rows: list[dict]) -> dict:
    """Per model: `transferlab diagnose frequency ... --json`, each group's gain at 1/3 and 1/32 (or a note)."""
    result: dict = {}
    if args.no_diagnostic:
        return {"skipped": "--no-diagnostic"}
    probe = subprocess.run([TL, "diagnose", "frequency", "--help"], capture_output=True, text=True, check=False)
    if probe.returncode:
        print("diagnose frequency is not available here: skipped", flush=True)
        return {"skipped": "transferlab diagnose frequency is not available: "
                           + (probe.stderr.strip().splitlines() or ["?"])[-1]}
    flags = probe.stdout
    for model in args.models:
        target_file = out / f"diagnostic_{model}.json"
        if not target_file.exists():
            cmd = [TL, "diagnose", "frequency"]
            if model != "lowpass":
                cmd += ["--model", MODEL, "--image-size", str(args.image_size)]
            elif "--weights" in flags:
                cmd += ["--model", MODEL, "--weights", str(weights["lowpass"]), "--image-size", str(args.image_size)]
            elif "--run" in flags:  # a linear_probe run's weights are the low-pass file's (only the head trains)
                lp = next((r for r in rows if r["model"] == "lowpass" and r["strategy"] == "linear_probe"), None) \
                    or next((r for r in rows if r["model"] == "lowpass"), None)
                if lp is None:
                    result[model] = {"skipped": "diagnose frequency takes --run, and no low-pass run exists"}
                    continue
                cmd += ["--run", lp["run"]] + (["--image-size", str(args.image_size)]
                                               if "--image-size" in flags else [])
            else:  # the contract: --model NAME_OR_WEIGHTS
                cmd += ["--model", str(weights["lowpass"]), "--image-size", str(args.image_size)]
            print("$", " ".join(cmd), flush=True)
            proc = subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=False)
            try:
                parsed = json.loads(proc.stdout) if proc.returncode == 0 else None
            except json.JSONDecodeError:
                parsed = None
            if parsed is None:
                note = (proc.stderr.strip().splitlines() or ["no JSON on stdout"])[-1]
                print(f"   diagnose frequency failed for {model}: {note}", flush=True)
                result[model] = {"failed": note, "command": cmd + ["--json"]}
                continue
            target_file.write_text(json.dumps({"command": cmd + ["--json"], "output": parsed}, indent=1))
        saved = json.loads(target_file.read_text())
        result[model] = {"command": saved["command"], "gains": gains_at_labels(saved["output"])}
    return result


def gains_at_labels(output: dict) -> dict:
    """{group: {"high": gain at 1/3, "low": gain at 1/32}} in the diagnostic's group order (linear interpolation)."""
    gains = {}
    for name, curve in output.get("groups", {}).items():
        freq = np.asarray(curve["frequency"], dtype=float)
        gain = np.asarray(curve["gain"], dtype=float)
        order = np.argsort(freq)
        gains[name] = {t: float(np.interp(f, freq[order], gain[order])) for t, f in FREQUENCY.items()}
        if freq.max() < max(FREQUENCY.values()) or freq.min() > min(FREQUENCY.values()):
            gains[name]["note"] = f"frequencies {freq.min():.3g}-{freq.max():.3g}: clamped"
    return gains


def last_frozen_group(strategy: str, groups: list[str]) -> str | None:
    """The deepest depth group a strategy keeps frozen: linear_probe every backbone group, freeze:k the k-th."""
    backbone = [g for g in groups if g != "head"]
    if strategy == "linear_probe":
        return backbone[-1] if backbone else None
    if strategy.startswith("freeze"):
        k = 4  # freeze's default
        for part in strategy.partition(":")[2].split(","):
            if part.strip().startswith("k="):
                k = int(part.split("=")[1])
        return backbone[k - 1] if 0 < k <= len(backbone) else None
    return None


# ---------------------------------------------------------------------------------------------- summary
def summarise(rows: list[dict], diagnostic: dict) -> list[dict]:
    summary = []
    keys = sorted({(r["target"], r["model"], r["strategy"]) for r in rows},
                  key=lambda k: (list(FREQUENCY).index(k[0]), list(MODELS).index(k[1]),
                                 [r["strategy"] for r in rows].index(k[2])))
    for target, model, strategy in keys:
        part = [r for r in rows if (r["target"], r["model"], r["strategy"]) == (target, model, strategy)]
        test = [r["test_accuracy"] for r in part]
        val = [r["val_accuracy"] for r in part]
        gains = diagnostic.get(model, {}).get("gains") if isinstance(diagnostic.get(model), dict) else None
        group = last_frozen_group(strategy, list(gains)) if gains else None
        summary.append({"target": target, "frequency": FREQUENCY[target], "model": model, "strategy": strategy,
                        "n_seeds": len(part), "test_mean": statistics.fmean(test),
                        "test_std": statistics.stdev(test) if len(test) > 1 else None,
                        "val_mean": statistics.fmean(val), "val_std": statistics.stdev(val) if len(val) > 1 else None,
                        "chance": CHANCE, "last_frozen_group": group,
                        "gain_at_label_after_last_frozen": gains[group][target] if group else None,
                        "seconds_mean": statistics.fmean(r["seconds"] for r in part if r["seconds"] is not None)
                        if any(r["seconds"] is not None for r in part) else None})
    return summary


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f}"


def table(summary: list[dict], diagnostic: dict, checks: dict, args) -> str:
    title = (f"# Frequency lab: efficientnet_lite0 at {args.image_size} px, grating amplitude "
             f"{args.amplitude * 255:.1f}/255, {args.epochs} epochs, seeds 0..{args.seeds - 1}")
    about = ("Label = stripe orientation of a faint grating (high: 1/3 c/px, low: 1/32 c/px) on photographs with "
             "random labels. Test accuracy, mean ± sample std over seeds; chance 0.5.")
    header = ("| target | model | strategy | seeds | test accuracy | val accuracy | chance | last frozen group | "
              "gain at label f there | s/run |")
    lines = [title, "", about, "", header, "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        gain = "-" if s["gain_at_label_after_last_frozen"] is None else f"{s['gain_at_label_after_last_frozen']:.3g}"
        secs = "-" if s["seconds_mean"] is None else f"{s['seconds_mean']:.0f}"
        lines.append(f"| {s['target']} ({s['frequency']:.4g} c/px) | {s['model']} | {s['strategy']} | {s['n_seeds']} | "
                     f"{_pm(s['test_mean'], s['test_std'])} | {_pm(s['val_mean'], s['val_std'])} | {s['chance']} | "
                     f"{s['last_frozen_group'] or '-'} | {gain} | {secs} |")
    lines += ["", "## `diagnose frequency`: each depth group's gain at the label frequencies", ""]
    gains_by_model = {m: d["gains"] for m, d in diagnostic.items() if isinstance(d, dict) and "gains" in d}
    if gains_by_model:
        models = list(gains_by_model)
        lines.append("| group | " + " | ".join(f"{m} @1/3 | {m} @1/32" for m in models) + " |")
        lines.append("|---|" + "---|---|" * len(models))
        groups = list(dict.fromkeys(g for m in models for g in gains_by_model[m]))
        for g in groups:
            cells = []
            for m in models:
                v = gains_by_model[m].get(g)
                cells += ["-", "-"] if v is None else [f"{v['high']:.3g}", f"{v['low']:.3g}"]
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
    notes = {m: d.get("skipped") or d.get("failed") for m, d in diagnostic.items()
             if isinstance(d, dict) and ("skipped" in d or "failed" in d)}
    if diagnostic.get("skipped"):
        notes = {"all": diagnostic["skipped"]}
    lines += [f"- {m}: {n}" for m, n in notes.items()]
    images = checks.get("images", [])
    high = [r for r in images if r["target"] == "high"]
    identity = max((r["fed_minus_crop_max"] for r in images), default=float("nan"))
    lines += ["", "## Checks (OUT/checks.json)", "",
              (f"- written PNGs {checks.get('written_side')} px = int({args.image_size} / crop_pct "
               f"{checks.get('crop_pct')}), fed through the eval transform unchanged (max diff {identity:.1e})")]
    lines += [(f"- {r['target']}/{r['class']}: FFT peak {r['fft_peak_frequency']:.4f} c/px (designed "
               f"{r['designed_frequency']:.4f}), amplitude {r['fitted_amplitude_255']:.2f}/255") for r in images]
    if high:
        stem = {k: max(r["stem_output_change_max"][k] for r in high) for k in ("bundled", "lowpass")}
        feat = {k: max(r["pooled_feature_change_max"][k] for r in high) for k in ("bundled", "lowpass")}
        lines.append(f"- high target: stem output change from the grating, original {stem['bundled']:.3g}, "
                     f"low-pass {stem['lowpass']:.3g}; pooled features, original {feat['bundled']:.3g}, "
                     f"low-pass {feat['lowpass']:.3g}")
    lines.append("- --weights with the unmodified file vs the bundled model: features max diff "
                 f"{checks.get('weights_file_vs_bundled_feature_max_diff')}")
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/transferlab_frequency_lab")
    ap.add_argument("--image-size", type=int, default=128, help="pixels fed to the model (default 128)")
    ap.add_argument("--amplitude", type=lambda s: float(Fraction(s)), default=8 / 255,
                    help="grating amplitude in [0, 1] pixel units, e.g. 8/255 (default)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--strategies", default="linear_probe,freeze:k=3,full")
    ap.add_argument("--targets", default="high,low")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--max-images", type=int, help="at most this many photographs from each of hymenoptera's "
                                                   "train/ and val/ (a smoke test)")
    ap.add_argument("--no-diagnostic", action="store_true", help="skip `transferlab diagnose frequency`")
    args = ap.parse_args()
    args.strategies = split_specs(args.strategies)
    args.targets = [t for t in args.targets.split(",") if t]
    args.models = [m for m in args.models.split(",") if m]
    if set(args.targets) - set(FREQUENCY) or set(args.models) - set(MODELS):
        sys.exit(f"--targets from {list(FREQUENCY)}, --models from {list(MODELS)}")
    out = Path(args.out).resolve()
    if out == ROOT or ROOT in out.parents:
        sys.exit(f"--out {out} is inside the repository; write elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    hymenoptera = dataset("hymenoptera")
    manifest, geo = build_data(out, args.image_size, args.amplitude, args.max_images, hymenoptera)
    print(f"data: {manifest['counts']} (written side {geo['side']} px, crop offset {geo['offset']})", flush=True)
    weights = write_weights(out)
    checks = run_checks(out, manifest, geo, args.image_size, args.amplitude, weights, hymenoptera)
    rows = finetune_all(out, args, weights)
    diagnostic = diagnose(out, args, weights, rows)
    summary = summarise(rows, diagnostic)
    settings = {k: v for k, v in vars(args).items()}
    (out / "results.json").write_text(json.dumps({"settings": settings, "data": {k: manifest[k] for k in
                                                  ("params", "margin", "geometry", "counts")},
                                                  "checks": checks, "runs": rows, "summary": summary,
                                                  "diagnostic": diagnostic}, indent=1))
    text = table(summary, diagnostic, checks, args)
    (out / "table.md").write_text(text)
    print()
    print(text)
    print(f"results: {out / 'results.json'}, {out / 'table.md'} ({time.perf_counter() - t0:.0f} s this call)")


if __name__ == "__main__":
    main()
