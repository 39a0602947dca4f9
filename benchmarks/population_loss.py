"""Exact population loss: prefix-tree evaluation vs the naive all-sequences baseline.

For each N this prints the number of logits each method evaluates (the floor is k + … + k^N
distinct prefixes, 2^{N+1} - 2 for a binary chain; the naive method evaluates N k^N positions),
the best-of-k wall time of each method in this process, their ratio, and the agreement of the
two losses.  The target ratio is at least N/2.
Run:  python benchmarks/population_loss.py [--device cuda] [--chain switching3 --seq-lens 6 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from numerics.markov import MarkovChain, num_prefixes, preset
from numerics.population import chain_loss
from numerics.transformer import init_params


def best_time(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls (the least noisy estimate on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--d", type=int, default=4)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chain", help="a k-state preset (one-hot model), e.g. switching3; default: binary (0.5, 0.8)")
    args = parser.parse_args()
    seq_lens = args.seq_lens or ([10, 14, 18, 20] if args.device == "cuda" else [10, 14, 18])
    dtype = getattr(torch, args.dtype)
    chain = preset(args.chain) if args.chain else MarkovChain(0.5, 0.8)
    k, symbols = chain.k, (chain.k if args.chain else None)
    source = f"chain {args.chain} (k = {k}, one-hot model)" if args.chain else "(p, q) = (0.5, 0.8), scalar model"
    print(f"device={args.device} dtype={args.dtype} d={args.d} {source}, tied")
    print(f"{'N':>3} {'prefix evals':>13} {'floor':>10} {'naive evals':>12} "
          f"{'exact s':>9} {'naive s':>9} {'ratio':>7} {'N/2':>5} {'|Δloss|':>9}")
    for n in seq_lens:
        params = init_params(args.d, n, std=0.5, seed=0, symbols=symbols, device=args.device, dtype=dtype)
        losses = {}

        def run(method: str, params=params, losses=losses) -> None:
            losses[method] = chain_loss(params, chain, tying=True, method=method)

        run("exact")  # warm-up
        exact_s = best_time(lambda: run("exact"), args.repeats)
        naive_s = best_time(lambda: run("naive"), args.repeats)
        floor = num_prefixes(k, n)
        diff = abs(losses["exact"] - losses["naive"]).item()
        print(f"{n:>3} {floor:>13} {floor:>10} {n * k**n:>12} {exact_s:>9.4f} {naive_s:>9.4f} "
              f"{naive_s / exact_s:>7.1f} {n / 2:>5.1f} {diff:>9.1e}")


if __name__ == "__main__":
    main()
