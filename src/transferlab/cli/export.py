"""`transferlab export`: a finished run as ONNX, TorchScript or safetensors, verified (transferlab.export)."""
from __future__ import annotations

from transferlab.cli._common import print_json


def register(sub) -> None:
    from transferlab.export import ALL_TASKS, DEFAULT_MAX_DROP, FORMATS, FP32_TOLERANCE

    p = sub.add_parser("export", help="a finished run as a deployable model (PEFT merged, preprocessing and "
                                      "classes beside it), verified against the run on its validation split")
    p.add_argument("--run", required=True, help="a finished run folder, or a multi-task module (transferlab "
                                                 "modules merge) with --task")
    p.add_argument("--task", metavar="NAME", help=f"a multi-task module's task: its model (merged backbone and "
                                                  f"the task's head) and classes; {ALL_TASKS}: every task, one "
                                                  f"subfolder of --out each")
    p.add_argument("--data", help="verify on this data set's validation split (with the run's classes) instead of "
                                  "the one the run recorded; needed for a task whose module recorded none")
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--quantize", metavar="int8", help="also write model.int8.onnx (ONNX only): dynamic quantisation "
                                                      "for text, static (calibrated on training images) for images")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                   help=f"int8: the largest accuracy drop allowed on the validation split, as a fraction "
                        f"(default {DEFAULT_MAX_DROP:g}: one point); fp32 exports must match within "
                        f"{FP32_TOLERANCE:g} on every logit and in every prediction")
    p.add_argument("--max-val", type=int, metavar="N", help="verify on at most N validation examples")
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from transferlab.export import export_run

    report = export_run(args.run, args.format, args.out, quantize_mode=args.quantize, opset=args.opset,
                        max_drop=args.max_drop, max_val=args.max_val, task=args.task, data=args.data)
    print_json(report)
    if "tasks" in report:  # --task all
        counts = ", ".join(f"{name} on {r['verified_on']['examples']}" for name, r in report["tasks"].items())
        print(f"exported {len(report['tasks'])} tasks to {args.out}/<task> (verified {counts} validation examples)")
    else:
        print(f"exported to {args.out} (verified on {report['verified_on']['examples']} validation examples)")
