"""Data commands: `data corrupt` (ImageNet-C / CIFAR-10-C corrupted copies of an image folder)."""
from __future__ import annotations

from transferlab.cli._common import print_json


def register(sub) -> None:
    from transferlab.diagnostics.corrupt import KINDS, PRESETS

    p = sub.add_parser("data", help="data set tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("corrupt", help="write a corrupted copy of an image folder (the 15 "
                                                         "ImageNet-C / CIFAR-10-C corruptions)")
    c.add_argument("--data", required=True, help="image folder (any layout; it is copied as it is)")
    c.add_argument("--kind", required=True, choices=KINDS)
    c.add_argument("--severity", required=True, type=int, choices=range(1, 6), metavar="1..5")
    c.add_argument("--out", required=True, help="output folder: new or empty, outside --data (unreadable images "
                                                "and links out of --data are left out and listed in 'skipped')")
    c.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same output)")
    c.add_argument("--params", choices=PRESETS, default="auto",
                   help="whose published severity parameters: cifar (CIFAR-10-C), imagenet (ImageNet-C), or auto "
                        "(cifar for images whose larger side is at most 64 px, else imagenet)")
    c.set_defaults(func=cmd_corrupt)


def cmd_corrupt(args) -> None:
    from transferlab.diagnostics.corrupt import corrupt_folder

    r = corrupt_folder(args.data, args.out, args.kind, args.severity, seed=args.seed, params=args.params)
    print_json(r.to_dict())
