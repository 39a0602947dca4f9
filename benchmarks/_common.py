"""What the benchmark scripts share: flags and their checks, targets with OK / MISS, progress on stderr.

Exit codes, as for the theorem commands (``verify/cli.py``): 0 every target met; 1 a target missed;
2 bad input or usage (one line on stderr, no traceback).  A script's ``main(argv) -> int`` raises
``InvalidInputError`` for bad input; ``run`` turns that into the line and the 2, and ``entry`` leaves
the process with the code (``exit_now``: flushed, without torch's slow teardown).
The scripts import this module as ``_common``: ``python benchmarks/x.py`` puts benchmarks/ on sys.path.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import torch
from tqdm import tqdm

from numerics.markov import InvalidInputError
from verify.cli import Parser, bad_input, exit_now

T = TypeVar("T")

Main = Callable[[Sequence[str] | None], int]

#: seconds between two plain progress lines when stderr is not a terminal
PROGRESS_INTERVAL_S = 5.0


def parser(doc: str, *, prog: str) -> argparse.ArgumentParser:
    """The script's parser: its docstring's first line as description, the rest as epilog; usage
    errors raise InvalidInputError (one line, exit 2) instead of argparse's exit."""
    first, _, rest = doc.partition("\n")
    return Parser(prog=prog, description=first, epilog=rest.strip() or None,
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def count(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def add_threads(ap: argparse.ArgumentParser, *, default: int | None) -> None:
    """``--threads``: torch's intra-op threads, the same for every side of a comparison."""
    shown = "torch's choice" if default is None else default
    ap.add_argument("--threads", type=positive_int, default=default,
                    help=f"torch intra-op threads, the same for every timed side (default: {shown}). On a shared "
                         "machine OpenMP threads spin waiting for each other and many small operations slow down "
                         "far more than few large ones (4-6x for the theorem analyses on 2 busy cores); one "
                         "thread is the steady choice")


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (None keeps torch's choice); the count in force."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@dataclass(frozen=True)
class Target:
    """A measured ``value`` against its ``limit``: met when value ≥ limit (``at_least``) or ≤ limit."""

    name: str
    value: float
    limit: float
    at_least: bool = True
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def line(self) -> str:
        relation = ">=" if self.at_least else "<="
        verdict = "OK  " if self.met else "MISS"
        return (f"{verdict} {self.name}: {self.value:.3g}{self.unit} "
                f"(target {relation} {self.limit:.3g}{self.unit})")


def report(targets: Iterable[Target]) -> int:
    """Print one OK / MISS line per target on stdout; 0 if every target is met, else 1."""
    targets = list(targets)
    print("\ntargets")
    for target in targets:
        print(f"  {target.line()}")
    return 0 if all(t.met for t in targets) else 1


def progress(items: Sequence[T], desc: str) -> Iterator[T]:
    """Yield ``items`` with progress on stderr: a tqdm bar on a terminal, otherwise plain lines
    (``desc: i/n, s``) at most every PROGRESS_INTERVAL_S seconds and after the last item, so a log
    file gets readable lines rather than carriage returns."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, leave=False, file=sys.stderr)
        return
    start = last = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last >= PROGRESS_INTERVAL_S or i == len(items):
            print(f"  {desc}: {i}/{len(items)}, {now - start:.0f} s", file=sys.stderr, flush=True)
            last = now


@contextmanager
def stage(name: str) -> Iterator[None]:
    """A long single step: its name on stderr when it starts, its seconds when it ends."""
    print(f"  {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    print(f"  {name}: done, {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def run(main: Main, argv: Sequence[str] | None = None) -> int:
    """``main(argv)``'s exit code; bad input: one line on stderr and 2."""
    try:
        return main(argv)
    except InvalidInputError as err:
        return bad_input(err)


def entry(main: Main) -> None:
    """Run ``main`` on the command line and leave the process with its code."""
    exit_now(run(main))
