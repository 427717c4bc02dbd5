"""Baselines next to llamacpu: ``python -m llamacpu.bench baselines``.

The command line of ``llamacpu.evaluate.baselines``: the table goes to stdout (and to
``--out``, checked writable before any work), progress lines to stderr (``--quiet``: none).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from llamacpu.cli import Parser, add_verbosity, setup_logging
from llamacpu.core.isa import LlamacpuError
from llamacpu.evaluate.baselines import run_baselines


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m llamacpu.bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="{baselines}", parser_class=Parser)
    b = sub.add_parser("baselines", help="transformer and LSTM next to llamacpu")
    b.add_argument("--checkpoint", type=Path, required=True, help="a stage_N checkpoint dir")
    b.add_argument("--examples", type=int, default=300,
                   help="evaluation examples per task (split over the lengths)")
    b.add_argument("--long-examples", type=int, default=3, help="examples at 1000 digits")
    b.add_argument("--budget", type=float, default=None,
                   help="total training seconds per baseline (default: llamacpu's, from "
                        "the checkpoint's metrics.jsonl)")
    b.add_argument("--seed", type=int, default=0, help="seed of training and evaluation")
    b.add_argument("--out", type=Path, help="also write the table to this file")
    b.add_argument("--threads", type=int, default=1, help="torch threads (at least 1)")
    add_verbosity(b)
    a = p.parse_args(argv)
    if a.command != "baselines":
        p.error("choose a command: baselines")
    log = setup_logging(a.verbose, a.quiet)
    b.check_threads(a.threads)
    if a.out is not None:
        b.check_out_file(a.out)
    if not a.checkpoint.is_dir():
        p.error(f"--checkpoint {a.checkpoint}: no such checkpoint directory")
    if a.examples < 1 or a.long_examples < 0:
        p.error("--examples must be at least 1 and --long-examples at least 0")
    if a.budget is not None and a.budget <= 0:
        p.error(f"--budget must be positive seconds, got {a.budget}")
    torch.set_num_threads(a.threads)
    try:
        text = run_baselines(a.checkpoint, a.examples, a.long_examples, a.budget, a.seed,
                             log=log.info)
    except (LlamacpuError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
