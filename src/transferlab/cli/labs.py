"""`transferlab lab list` and `transferlab lab run NAME|all`: the chapter's claims as experiments."""
from __future__ import annotations

from transferlab.cli._common import print_json, print_table


def register(sub) -> None:
    p = sub.add_parser("lab", help="the chapter's claims as labs: run an experiment, draw its figure, state what "
                                   "the measurement says")
    lab_sub = p.add_subparsers(dest="lab_command", required=True)
    q = lab_sub.add_parser("list", help="every lab: its claim, its data, its expected run time")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = lab_sub.add_parser("run", help="run a lab (or all): DIR/figure.png, DIR/result.json, DIR/README.md")
    q.add_argument("name", help="a lab's name (transferlab lab list), or all")
    q.add_argument("--quick", action="store_true", help="the small version (what the test suite runs)")
    q.add_argument("--seeds", type=_seed_count, help="seeds per setting, 2 to 100 (default: 3; --quick: 2)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--data-root", metavar="DIR",
                   help="the folder that holds the real data sets a lab reads (hymenoptera/, ...: `lab list` names "
                        "them; docs/data.md says where to get them) (default: $TRANSFERLAB_DATA)")
    q.set_defaults(func=cmd_run)


def cmd_list(args) -> None:
    from transferlab.labs import LABS

    entries = [{"name": lab.name, "claim": lab.claim, "data": lab.data, "datasets": list(lab.datasets),
                "minutes": lab.minutes, "quick_minutes": lab.quick_minutes} for lab in LABS]
    if args.json:
        print_json(entries)
        return
    print_table([["lab", "minutes (quick)", "data", "reads from $TRANSFERLAB_DATA", "claim"]]
                + [[e["name"], f"{e['minutes']:g} ({e['quick_minutes']:g})", e["data"],
                    ", ".join(f"{n}/" for n in e["datasets"]) or "-", e["claim"]] for e in entries])


def cmd_run(args) -> None:
    import json

    from transferlab.labs import run_all, run_lab

    if args.name == "all":
        command = f"transferlab lab run all{' --quick' if args.quick else ''}" + \
                  (f" --seeds {args.seeds}" if args.seeds else "") + f" --out {args.out}"
        records = run_all(args.out, quick=args.quick, seeds=args.seeds, command=command, data_root=args.data_root)
        for r in records:
            print(f"{r['lab']:<16} {r['verdict']:<14} {r['seconds']:.0f} s")
        print(f"page written to {args.out}/labs.md and {args.out}/labs.html")
        return
    record = run_lab(args.name, args.out, quick=args.quick, seeds=args.seeds, data_root=args.data_root)
    print(json.dumps({k: record[k] for k in ("lab", "verdict", "rule", "summary", "seconds")}, indent=2))
    print(f"lab written to {args.out} (figure.png, result.json, README.md)")


def _seed_count(text: str) -> int:
    """--seeds: a whole number, at most MAX_SEEDS, refused at parse time (1e12 would be a list of 10^12 seeds);
    the lower bound is the runner's (labs.runner._seeds)."""
    import argparse

    from transferlab.labs.runner import MAX_SEEDS

    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not n.is_integer():
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text}")
    if n > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SEEDS} (each seed trains every setting of the lab "
                                         f"once), got {text}")
    return int(n)
