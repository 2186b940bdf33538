"""Export a finished run (ONNX fp32 + int8, TorchScript) and time the four ways of running it on the CPU
(image runs: random images at the run's size; text runs: random token ids at the run's max_length).

    python benchmarks/export_latency.py --run /tmp/exp_run --out /tmp/exp_bench [--threads 2]

Prints one Markdown table: export seconds, file size, max logit difference and validation accuracy per export,
then latency at batch 1 (p50/p95 over --repeats calls) and throughput at batch 32 for PyTorch eager,
TorchScript, ONNX Runtime fp32 and int8, all with --threads intra-op threads.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    from transferlab.export import export_run
    from transferlab.export._formats import Runner
    from transferlab.export._prepare import graph_module
    from transferlab.runs import load_run_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True, help="a new folder: onnx/ and torchscript/ are written in it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    onnx_report = export_run(args.run, "onnx", out / "onnx", quantize_mode="int8")
    ts_report = export_run(args.run, "torchscript", out / "torchscript")

    config, model, _ = load_run_model(args.run)
    graph = graph_module(model.eval())
    pre = json.loads((out / "onnx" / "preprocess.json").read_text())
    names = tuple(graph.input_names)
    rng = np.random.default_rng(0)
    if pre["modality"] == "image":
        size = pre["size"]
        shape_text = f"image {size} px"

        def feeds(batch: int) -> dict:
            return {"pixel_values": rng.standard_normal((batch, 3, size, size), dtype=np.float32)}
    else:  # token ids drawn at random at the run's max_length: the longest input the run's tokenizer gives
        length, vocab = pre["max_length"], len(model.tokenizer)
        shape_text = f"{length} tokens"

        def feeds(batch: int) -> dict:
            ids = rng.integers(1000, vocab, size=(batch, length), dtype=np.int64)
            all_feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            return {n: all_feeds[n] for n in names}
    runners = {"PyTorch eager": lambda f: graph(*[torch.from_numpy(f[n]) for n in names]),
               "TorchScript": Runner("torchscript", out / "torchscript" / "model.pt"),
               "ONNX Runtime fp32": Runner("onnx", out / "onnx" / "model.onnx", threads=args.threads),
               "ONNX Runtime int8": Runner("onnx", out / "onnx" / "model.int8.onnx", threads=args.threads)}
    one, many = feeds(1), feeds(32)
    rows = []
    with torch.no_grad():
        for name, runner in runners.items():
            call = (lambda f: runner(f)) if name == "PyTorch eager" else (lambda f, r=runner: r(f, names))
            lat = np.asarray(timed(lambda: call(one), args.repeats)) * 1000
            batch = timed(lambda: call(many), max(3, args.repeats // 10))
            rows.append((name, np.percentile(lat, 50), np.percentile(lat, 95), 32 / np.median(batch)))

    files = onnx_report["files"]
    print(f"model {config.model}, strategy {config.strategy}, {onnx_report['verified_on']['examples']} validation "
          f"examples, {args.threads} threads, {shape_text}\n")
    print("| export | seconds | file MB | max logit diff | val accuracy |\n|---|---|---|---|---|")
    print(f"| PyTorch (run) | - | - | - | {onnx_report['accuracy']['pytorch']:.4f} |")
    print(f"| ONNX fp32 ({onnx_report['exporter']}, opset {onnx_report['opset']}) | {onnx_report['export_seconds']} "
          f"(with int8) | {files['model.onnx'] / 1e6:.2f} | {onnx_report['max_abs_logit_diff']:.2e} | "
          f"{onnx_report['accuracy']['onnx']:.4f} |")
    i8 = onnx_report["int8"]
    print(f"| ONNX int8 ({'static QDQ' if pre['modality'] == 'image' else 'dynamic'}) | {i8['seconds']} | {files['model.int8.onnx'] / 1e6:.2f} | "
          f"{i8['max_abs_logit_diff']:.2e} | {i8['accuracy']:.4f} (drop {i8['accuracy_drop'] * 100:.1f} pt) |")
    print(f"| TorchScript | {ts_report['export_seconds']} | {ts_report['files']['model.pt'] / 1e6:.2f} | "
          f"{ts_report['max_abs_logit_diff']:.2e} | {ts_report['accuracy']['torchscript']:.4f} |\n")
    print("| runtime | batch 1 p50 ms | batch 1 p95 ms | batch 32 examples/s |\n|---|---|---|---|")
    for name, p50, p95, throughput in rows:
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {throughput:.1f} |")


if __name__ == "__main__":
    main()
