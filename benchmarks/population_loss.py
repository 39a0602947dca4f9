"""Exact population loss: prefix-tree evaluation vs the naive all-sequences baseline.

For each N this prints the number of logits each method evaluates (the floor is 2^{N+1} - 2
distinct prefixes; the naive method evaluates N 2^N positions), the best-of-k wall time of
each method in this process, their ratio, and the agreement of the two losses.  The target
ratio is at least N/2.  Run:  python benchmarks/population_loss.py [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from numerics.population import population_loss
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
    args = parser.parse_args()
    seq_lens = args.seq_lens or ([10, 14, 18, 20] if args.device == "cuda" else [10, 14, 18])
    dtype = getattr(torch, args.dtype)
    print(f"device={args.device} dtype={args.dtype} d={args.d} (p, q) = (0.5, 0.8), tied")
    print(f"{'N':>3} {'prefix evals':>13} {'floor':>10} {'naive evals':>12} "
          f"{'exact s':>9} {'naive s':>9} {'ratio':>7} {'N/2':>5} {'|Δloss|':>9}")
    for n in seq_lens:
        params = init_params(args.d, n, std=0.5, seed=0, device=args.device, dtype=dtype)
        losses = {}

        def run(method: str, params=params, losses=losses) -> None:
            losses[method] = population_loss(params, 0.5, 0.8, tying=True, method=method)

        run("exact")  # warm-up
        exact_s = best_time(lambda: run("exact"), args.repeats)
        naive_s = best_time(lambda: run("naive"), args.repeats)
        floor = 2 ** (n + 1) - 2
        diff = abs(losses["exact"] - losses["naive"]).item()
        print(f"{n:>3} {floor:>13} {floor:>10} {n * 2**n:>12} {exact_s:>9.4f} {naive_s:>9.4f} "
              f"{naive_s / exact_s:>7.1f} {n / 2:>5.1f} {diff:>9.1e}")


if __name__ == "__main__":
    main()
