"""A task for tests/test_runner.py, importable by every kind of worker (forked, spawned, Dask), and a
small command over it (``python -m tests.runner_tasks``) for the tests that stop a sweep with a signal.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from numerics.markov import InvalidInputError
from verify.cli import Parser, bad_input
from verify.runner import add_runner_flags, run_with_args


def default_sigint() -> None:
    """``preexec_fn`` of a command a test stops with SIGINT: the child gets SIGINT's default action, as a
    command typed at a terminal has.  A shell starts background jobs (a CI job among them) with SIGINT
    ignored, and a child inherits that: Python then never raises KeyboardInterrupt and the sweep runs on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spectrum(config: dict) -> dict:
    """Statistics of a seeded random Gram matrix: sums over many floats, so a different thread count or
    reduction order would show in the last bits.

    Optional keys, for the tests: ``log`` (a folder: one line per execution in ``SEED.runs``),
    ``sleep`` (seconds), ``fail`` (raise), ``die_once`` (a marker file: the first execution creates it
    and ends its process at once, as a crashed or killed worker would).
    """
    seed = config["seed"]
    if config.get("log"):
        with (Path(config["log"]) / f"{seed}.runs").open("a") as runs:
            runs.write(f"{os.getpid()}\n")
    if config.get("die_once"):
        marker = Path(config["die_once"])
        if not marker.exists():
            marker.touch()
            os._exit(3)
    time.sleep(config.get("sleep", 0.0))
    if config.get("fail"):
        raise ValueError(f"task {seed} fails on purpose\nand this second line is not recorded")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(config["n"], config["n"], generator=gen, dtype=torch.float64)
    gram = x @ x.T
    return {"seed": seed, "sum": gram.sum().item(), "smallest": torch.linalg.eigvalsh(gram)[:3].tolist(),
            "threads": torch.get_num_threads()}


def configs(count: int, **extra) -> list[dict]:
    return [{"seed": seed, "n": 40 + seed % 3} | extra for seed in range(count)]


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m tests.runner_tasks", description="a sweep of spectrum tasks")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--log", help="folder counting each task's executions")
    ap.add_argument("--fail", type=int, action="append", default=[], help="seeds that raise")
    add_runner_flags(ap)
    try:
        args = ap.parse_args(argv)
        extra = {"sleep": args.sleep} | ({"log": args.log} if args.log else {})
        tasks = [c | {"fail": True} if c["seed"] in args.fail else c for c in configs(args.tasks, **extra)]
        result = run_with_args(spectrum, tasks, args, out=Path(args.out))
    except InvalidInputError as err:
        return bad_input(err)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
