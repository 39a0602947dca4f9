"""Exact population loss: prefix-tree evaluation vs the naive all-sequences baseline.

For each N this prints the number of logits each method evaluates (the floor is k + … + k^N
distinct prefixes, 2^{N+1} - 2 for a binary chain; the naive method evaluates N k^N positions),
the best-of-``--repeats`` wall time of each method in this process (after one untimed call of
each, same thread count), their ratio, and the agreement of the two losses.  The target ratio is
at least N/2 (SPEC §9), or ``--target``.  Exit 0: every N meets it; 1: some N misses (MISS);
2: bad input, e.g. an N whose naive enumeration would not fit in memory (refused before any work).
Run:  python benchmarks/population_loss.py [--device cuda] [--chain switching3 --seq-lens 6 8]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from _common import Target, add_threads, entry, parser, positive_float, positive_int, progress, report, set_threads

from numerics.markov import MarkovChain, num_prefixes, preset
from numerics.population import chain_loss, check_enumeration_fits
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
    ap.add_argument("--chain", help="a k-state preset (one-hot model), e.g. switching3, sticky5, dirichlet-4-0; "
                                    "default: the binary chain (p, q) = (0.5, 0.8), scalar model")
    ap.add_argument("--target", type=positive_float, default=None,
                    help="speed-up every N must reach (default N/2, SPEC §9)")
    add_threads(ap, default=1)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    threads = set_threads(args.threads)
    seq_lens = args.seq_lens or ([10, 14, 18, 20] if device == "cuda" else [10, 14, 18])
    dtype = getattr(torch, args.dtype)
    chain = preset(args.chain) if args.chain else MarkovChain(0.5, 0.8)
    k, symbols = chain.k, (chain.k if args.chain else None)
    points = {n: init_params(args.d, n, std=0.5, seed=0, symbols=symbols, device=device, dtype=dtype)
              for n in seq_lens}
    for params in points.values():  # the naive enumeration is the larger: refuse before any work
        check_enumeration_fits(params, "naive")
    source = f"chain {args.chain} (k = {k}, one-hot model)" if args.chain else "(p, q) = (0.5, 0.8), scalar model"
    print(f"device={device} dtype={args.dtype} d={args.d} {source}, tied, {threads} thread(s)")
    print(f"{'N':>3} {'prefix evals':>13} {'floor':>10} {'naive evals':>12} "
          f"{'exact s':>9} {'naive s':>9} {'ratio':>7} {'target':>6} {'|Δloss|':>9}")
    targets = []
    for n in progress(seq_lens, "sequence lengths"):
        params, losses = points[n], {}

        def run(method: str, params=params, losses=losses) -> None:
            losses[method] = chain_loss(params, chain, tying=True, method=method)

        run("exact")  # warm-ups
        run("naive")
        exact_s = best_time(lambda: run("exact"), args.repeats, device)
        naive_s = best_time(lambda: run("naive"), args.repeats, device)
        floor = num_prefixes(k, n)
        limit = args.target if args.target is not None else n / 2
        diff = abs(losses["exact"] - losses["naive"]).item()
        print(f"{n:>3} {floor:>13} {floor:>10} {n * k**n:>12} {exact_s:>9.4f} {naive_s:>9.4f} "
              f"{naive_s / exact_s:>7.1f} {limit:>6.3g} {diff:>9.1e}", flush=True)
        targets.append(Target(f"exact loss speed-up over the naive one at N={n}", naive_s / exact_s, limit, unit="x"))
    return report(targets)


if __name__ == "__main__":
    entry(main)
