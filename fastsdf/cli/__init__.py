"""The ``fastsdf`` command line: one module per command, each with ``add_parser(subparsers)``.

Errors a user can cause (a missing or unreadable file, a bad argument, an output that exists, not
enough memory) end in one line on stderr and a non-zero exit: 2 for a bad command line (argparse's
errors and ``UsageError``), 1 for a run that failed.
"""

from __future__ import annotations

import argparse
import sys

from fastsdf.cli.common import Parser, UsageError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from fastsdf.cli import (bench, complete, demo, evaluate, extract, fit, generate, reconstruct, render, sample,
                             shapes, train_deepsdf, train_diffusion, train_occupancy, train_shape_vae)

    parser = Parser(prog="fastsdf", description="Kernel-accelerated signed distance functions.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, shapes, sample, fit, extract, evaluate, train_deepsdf, reconstruct, train_occupancy, complete,
                   train_shape_vae, train_diffusion, generate, render,
                   bench):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or the help)
        return int(exc.code or 0)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"fastsdf {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (OSError, ValueError, MemoryError, RuntimeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever the exception says
        print(f"fastsdf {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastsdf {args.command}: interrupted", file=sys.stderr)
        return 130
