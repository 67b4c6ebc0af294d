"""``rl-tickets-export LEVEL_DIR --out DIR``: ship a ticket as plain SB3, compact, sparse and TorchScript."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

import torch

from rl_tickets.chain.workers import available_cores
from rl_tickets.export.bundle import export_level
from rl_tickets.export.level import ExportError
from rl_tickets.export.zoo import add_to_zoo

CALLS_MAX = 10**6  # timed calls per form and batch size: a million take minutes already


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``prog: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="rl-tickets-export",
        description="Export a finished level as model.zip (plain SB3), compact.zip (dead units removed), "
        "sparse.pt (CSR weights), actor.pt (TorchScript) and export.json (sizes and latencies).",
    )
    parser.add_argument("level_dir", type=Path, help="a finished .../level_NN/<variant> directory")
    parser.add_argument("--out", type=Path, required=True, help="directory to create (absent or empty)")
    parser.add_argument("--calls", type=int, default=200, help="timed forward passes per form and batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (default 1)")
    parser.add_argument(
        "--zoo",
        type=Path,
        help="also add the export as a new rl-baselines3-zoo run DIR/<algo>/<Env>_<n>/ (enjoy, plot scripts)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry; user errors print one line and exit with status 2.

    :param argv: arguments (default: the command line).
    """
    args = _parser().parse_args(argv)
    if not 1 <= args.calls <= CALLS_MAX or args.threads < 1:
        print(
            f"rl-tickets-export: error: --calls must lie in [1, {CALLS_MAX}] and --threads be >= 1",
            file=sys.stderr,
        )
        sys.exit(2)
    if args.threads > (cores := available_cores()):
        print(
            f"rl-tickets-export: --threads={args.threads} lowered to {cores}: this process may use {cores} cores"
        )
        args.threads = cores
    torch.set_num_threads(args.threads)
    try:
        record = export_level(args.level_dir, args.out, calls=args.calls)
    except ExportError as error:
        print(f"rl-tickets-export: error: {error}", file=sys.stderr)
        sys.exit(2)
    for name, size in record["files"].items():
        print(f"{args.out / name}  {size:,} bytes")
    for batch, times in record["latency_ms"].items():
        print(f"{batch}: " + ", ".join(f"{form} {ms:.3f} ms" for form, ms in times.items()))
    for note in record["notes"]:
        print(f"note: {note}")
    if args.zoo is not None:
        try:
            run = add_to_zoo(args.level_dir, args.out, args.zoo, record["algo"], record["env_id"])
        except ExportError as error:
            print(f"rl-tickets-export: error: {error}", file=sys.stderr)
            sys.exit(2)
        print(f"zoo run: {run}")


if __name__ == "__main__":
    main()
