"""`transferlab rank`: which pre-trained model to start from (or, with --layers, which layer of one model to
transfer from), ranked by transferability metrics before any fine-tuning (transferlab.ranking)."""
from __future__ import annotations

from transferlab.cli._common import print_table


def register(sub) -> None:
    from transferlab.ranking.rank import DEFAULT_MAX_EXAMPLES, RankOptions
    from transferlab.ranking.registry import MetricOptions, list_metrics

    metrics = list_metrics()
    p = sub.add_parser(
        "rank", help="rank pre-trained models for a target data set before fine-tuning: "
                     + ", ".join(m.name for m in metrics),
        description="One forward pass per candidate over a stratified, seeded subsample of the target's training "
                    "split (never its validation or test split); each metric scores the pooled features (LEEP and "
                    "NCE: the source head's predictions). Prints one line per candidate; with --out also writes "
                    "ranking.json, ranking.md and ranking.html. Metrics: "
                    + "; ".join(f"{m.name} ({m.paper}): {m.help}" for m in metrics) + ".")
    p.add_argument("--models", required=True,
                   help="comma-separated candidates: registry names, timm architectures (random init), Hugging Face "
                        "folders, pretrain checkpoints RUN@E, or NAME@FILE for a timm architecture with the "
                        "state-dict FILE (as finetune --model NAME --weights FILE)")
    p.add_argument("--data", required=True, help="the target data set, as finetune reads it")
    p.add_argument("--metrics", help=_help(RankOptions, "metrics"))
    p.add_argument("--max-examples", type=int, default=DEFAULT_MAX_EXAMPLES, help=_help(RankOptions, "max_examples")
                   + f" (default: {DEFAULT_MAX_EXAMPLES}; at least the number of classes)")
    p.add_argument("--layers", action="store_true", help=_help(RankOptions, "layers"))
    p.add_argument("--out", help="folder to write ranking.json, ranking.md, ranking.html and plots/ to (new or empty; "
                                 "default: print only)")
    p.add_argument("--overwrite", action="store_true", help="replace a ranking already in --out")
    p.add_argument("--seed", type=int, default=0, help=_help(MetricOptions, "seed") + " (default: 0)")
    p.add_argument("--k", type=int, default=5, help=_help(MetricOptions, "k") + " (default: 5)")
    p.add_argument("--knn-metric", choices=["euclidean", "cosine"], default="euclidean",
                   help=_help(MetricOptions, "knn_metric") + " (default: euclidean)")
    p.add_argument("--folds", type=int, default=5, help=_help(MetricOptions, "folds") + " (default: 5)")
    p.add_argument("--batch-size", type=int, default=64, help=_help(RankOptions, "batch_size") + " (default: 64)")
    p.add_argument("--image-size", type=int, help=_help(RankOptions, "image_size"))
    p.add_argument("--classes", help=_help(RankOptions, "classes"))
    p.add_argument("--val-fraction", type=float, default=0.2, help=_help(RankOptions, "val_fraction")
                   + " (default: 0.2)")
    p.add_argument("--device", default="auto", help=_help(RankOptions, "device"))
    p.set_defaults(func=cmd_rank)


def _help(cls, name: str) -> str:
    import dataclasses

    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def cmd_rank(args) -> None:
    from transferlab.cli._common import check_command_outputs
    from transferlab.models._families import model_path
    from transferlab.outputs import remove_owned, require_writable
    from transferlab.ranking.rank import RankOptions, check_request, parse_candidates, rank_models
    from transferlab.ranking.registry import MetricOptions
    from transferlab.ranking.report import RANKING_FOLDER, summary_rows, write_ranking

    # every check that needs no model or data first: a mistyped metric must not wait for a forward pass
    options = RankOptions(metrics=args.metrics, max_examples=args.max_examples, layers=args.layers,
                          batch_size=args.batch_size, image_size=args.image_size, classes=args.classes,
                          val_fraction=args.val_fraction, device=args.device,
                          metric=MetricOptions(k=args.k, knn_metric=args.knn_metric, folds=args.folds, seed=args.seed))
    candidates = parse_candidates(args.models)
    check_request(candidates, options)
    state = None
    if args.out is not None:
        inputs = {"--data": args.data}
        for c in candidates:
            inputs[f"--models ({c.name})"] = c.weights or _path_or_none(model_path, c.model)
        out = check_command_outputs({"--out": args.out}, inputs)["--out"]
        state = require_writable(out, RANKING_FOLDER, args.overwrite)
    result = rank_models(candidates, args.data, options)
    headers, rows = summary_rows(result)
    print_table([headers] + rows)
    if args.out is not None:
        if state == "ours":  # --overwrite: our files only
            remove_owned(out, RANKING_FOLDER)
        write_ranking(result, out)
        print(f"written to {out} (ranking.json, ranking.md, ranking.html)")


def _path_or_none(model_path, name: str):
    try:
        return model_path(name)
    except Exception:  # noqa: BLE001  (a broken name is reported when the candidate is built)
        return None
