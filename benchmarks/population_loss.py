"""Exact population loss: prefix-tree evaluation vs the naive all-sequences baseline.

For each source and N this prints the number of logits each method evaluates (the floor is
k + … + k^N distinct prefixes, 2^{N+1} - 2 for a binary source; the naive method evaluates N k^N
positions), the best-of-``--repeats`` wall time of each method in this process (after one untimed
call of each, same thread count), their ratio, and the agreement of the two losses.  Sources: the
binary first-order chain (p, q) = (0.5, 0.8) and the paper's second-order chain, lagged (0.2, 0.3),
whose prefix tree is weighted by its pair chain (``--source``); or a k-state preset (``--chain``).
The target ratio is at least N/2 for every source (SPEC §9; the second-order tree has the same
2^{N+1} - 2 prefixes and the naive route the same N 2^N positions, so the same bound applies), or
``--target``.  Exit 0: every N meets it; 1: some N misses (MISS); 2: bad input, e.g. an N whose
naive enumeration would not fit in memory (refused before any work).
Run:  python benchmarks/population_loss.py [--device cuda] [--source second-order --memory 2]
      python benchmarks/population_loss.py --chain switching3 --seq-lens 6 8
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from _common import Target, add_threads, entry, parser, positive_float, positive_int, progress, report, set_threads

from numerics.markov import InvalidInputError, MarkovChain, SecondOrderChain, num_prefixes, preset
from numerics.population import Chain, chain_loss, check_enumeration_fits
from numerics.transformer import init_params
from verify.cli import resolve_device


def best_time(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Minimum wall time of ``repeats`` calls (the least noisy estimate on a shared machine); on CUDA
    the queue is drained after each call so the time covers the kernels."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


#: the binary sources (scalar model): name -> (heading, source)
BINARY: dict[str, tuple[str, Chain]] = {
    "first-order": ("first-order chain (p, q) = (0.5, 0.8), scalar model", MarkovChain(0.5, 0.8)),
    "second-order": ("second-order chain lagged (0.2, 0.3), prefixes weighted by its pair chain, scalar model",
                     SecondOrderChain.lagged(0.2, 0.3)),
}


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__, prog="python benchmarks/population_loss.py")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both losses run (default cpu)")
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                    help="floating-point type of the parameters (default float64)")
    ap.add_argument("--d", type=positive_int, default=4, help="embedding dimension d (default 4)")
    ap.add_argument("--seq-lens", type=positive_int, nargs="+", default=None, metavar="N",
                    help="sequence lengths to time (default 10 14 18 on the CPU, 10 14 18 20 on CUDA)")
    ap.add_argument("--repeats", type=positive_int, default=3, help="timed calls of each method; the best counts "
                                                                    "(default 3)")
    ap.add_argument("--chain", help="a k-state preset (one-hot model), e.g. switching3, sticky5, dirichlet-4-0, "
                                    "timed alone; default: the binary sources of --source, scalar model")
    ap.add_argument("--source", choices=[*BINARY, "both"], default=None,
                    help="binary sources to time: first-order (p, q) = (0.5, 0.8), second-order lagged "
                         "(0.2, 0.3), or both (the default; not with --chain)")
    ap.add_argument("--memory", type=positive_int, default=None, metavar="W",
                    help="attention sees the current symbol and the W before it, in both methods "
                         "(default: the whole past)")
    ap.add_argument("--target", type=positive_float, default=None,
                    help="speed-up every N must reach (default N/2, SPEC §9)")
    add_threads(ap, default=1)
    return ap


class Source(NamedTuple):
    """A source to time: its heading, the chain, one-hot symbols (None: the scalar model) and the
    suffix of its target names (empty for the first-order and k-state chains, as before)."""

    heading: str
    chain: Chain
    symbols: int | None
    suffix: str


def sources(args: argparse.Namespace) -> list[Source]:
    """The sources ``--chain`` / ``--source`` ask for, in the order they are timed."""
    if args.chain:
        if args.source is not None:
            raise InvalidInputError("--source picks binary sources; --chain times its k-state chain alone")
        chain = preset(args.chain)
        return [Source(f"chain {args.chain} (k = {chain.k}, one-hot model)", chain, chain.k, "")]
    names = list(BINARY) if args.source in (None, "both") else [args.source]
    return [Source(*BINARY[name], None, "" if name == "first-order" else f" ({name} source)") for name in names]


def time_source(source: Source, points: dict, args: argparse.Namespace, device: str) -> list[Target]:
    """Time the exact and the naive loss of ``source`` at every N of ``points``; one row and one target per N."""
    chain = source.chain
    print(f"\n{source.heading}")
    print(f"{'N':>3} {'prefix evals':>13} {'floor':>10} {'naive evals':>12} "
          f"{'exact s':>9} {'naive s':>9} {'ratio':>7} {'target':>6} {'|Δloss|':>9}")
    targets = []
    for n in progress(list(points), "sequence lengths"):
        params, losses = points[n], {}

        def run(method: str, params=params, losses=losses) -> None:
            losses[method] = chain_loss(params, chain, tying=True, method=method, memory=args.memory)

        run("exact")  # warm-ups
        run("naive")
        exact_s = best_time(lambda: run("exact"), args.repeats, device)
        naive_s = best_time(lambda: run("naive"), args.repeats, device)
        floor = num_prefixes(chain.k, n)
        limit = args.target if args.target is not None else n / 2
        diff = abs(losses["exact"] - losses["naive"]).item()
        print(f"{n:>3} {floor:>13} {floor:>10} {n * chain.k**n:>12} {exact_s:>9.4f} {naive_s:>9.4f} "
              f"{naive_s / exact_s:>7.1f} {limit:>6.3g} {diff:>9.1e}", flush=True)
        targets.append(Target(f"exact loss speed-up over the naive one at N={n}{source.suffix}", naive_s / exact_s,
                              limit, unit="x"))
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    seq_lens = args.seq_lens or ([10, 14, 18, 20] if device == "cuda" else [10, 14, 18])
    dtype = getattr(torch, args.dtype)
    runs = sources(args)
    points = [{n: init_params(args.d, n, std=0.5, seed=0, symbols=source.symbols, device=device, dtype=dtype)
               for n in seq_lens} for source in runs]
    for params in (p for per_source in points for p in per_source.values()):
        check_enumeration_fits(params, "naive")  # the naive enumeration is the larger: refuse before any work
    memory = "the whole past" if args.memory is None else f"memory W = {args.memory}"
    print(f"device={device} dtype={args.dtype} d={args.d}, tied, attention over {memory}, {threads} thread(s)")
    return report([target for source, per_source in zip(runs, points)
                   for target in time_source(source, per_source, args, device)])


if __name__ == "__main__":
    entry(main)
