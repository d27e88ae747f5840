"""``download``: fetch a dataset into the user cache (needs internet; verified by SHA-256).

    python -m digitrec download fashion-mnist
"""
from __future__ import annotations

from digitrec.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, CliError


def add_parser(sub, common) -> None:
    p = sub.add_parser("download", parents=[common], help="fetch a dataset into the cache")
    p.add_argument("name", help="mnist or fashion-mnist")
    p.set_defaults(func=command)


def command(args) -> int:
    from digitrec.datasets import DATASETS, SPLITS, load_dataset
    for split in SPLITS:
        try:
            images, _ = load_dataset(args.name, split, download=True)
        except ValueError as e:  # DatasetError: unknown name, no network, bad checksum
            code = EXIT_FAILED if args.name in DATASETS else EXIT_BAD_INPUT
            raise CliError(str(e), code) from None
        print(f"{args.name} {split}: {len(images)} images ready")
    return 0
