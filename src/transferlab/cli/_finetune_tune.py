"""`transferlab finetune --tune TRIALS [--tune-space SPEC]`: the study, then the final run (compare/tune_one.py);
what the command prints."""
from __future__ import annotations

from transferlab.errors import ConfigError


def cmd_finetune_tune(args, config, tracks, given: set[str], print_summary) -> None:
    """`config`: the run's options as `finetune` read them; `tracks`: the --track targets (the final run's);
    `given`: the run options passed; `print_summary(metrics, out)`: finetune's own summary."""
    from transferlab.compare.tune_one import tune_finetune
    from transferlab.tracking.live import LiveTracking

    if args.tune is None:
        raise ConfigError("--tune-space needs --tune TRIALS")
    if getattr(args, "nproc", None) is not None:
        raise ConfigError("--tune runs its trials one after another in this process; drop --nproc (or tune first, "
                          "then train the chosen setting with --nproc)")
    tracker = LiveTracking(tracks)
    with tracker:
        metrics, summary = tune_finetune(config, args.out, args.tune, args.tune_space, resume=args.resume,
                                         overwrite=args.overwrite, given=given,
                                         callbacks=[tracker] if tracks else None)
    print_summary(metrics, args.out)
    best = summary["best"]
    print(f"tuned over {summary['counted']} trial(s) in {summary['tuning_seconds']:.1f} s "
          f"({summary['complete']} finished, {summary['pruned']} pruned, {summary['failed']} failed): best trial "
          f"{best['trial']} (validation accuracy {best['val_accuracy']:.4f}): {best['strategy']}, lr {best['lr']:.4g}, "
          f"weight decay {best['weight_decay']:.4g}; the study's summary in {args.out}/tune.json")
    for line in tracker.lines():
        print(line)
    tracker.raise_failures()
