"""Full-space Hessian at d=4, N=10: this package vs torch.func.hessian of the naive loss.

Both are timed in this process at the same random point (tied, attention on); the script
prints each time, their ratio (target ≥ 10) and the largest entry-wise disagreement.
Run:  python benchmarks/hessian.py [--d 4 --seq-len 10]
"""

from __future__ import annotations

import argparse
import time

from torch.func import hessian as func_hessian

from numerics.curvature import flatten, hessian, unflatten
from numerics.population import population_loss
from numerics.transformer import init_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=10)
    args = ap.parse_args()
    params = init_params(args.d, args.seq_len, std=0.5, seed=0)
    theta, layout = flatten(params)

    def loss(method):
        return lambda p: population_loss(p, 0.5, 0.8, tying=True, method=method)

    hessian(loss("exact"), init_params(args.d, 3, std=0.5, seed=0))  # warm up torch.func
    start = time.perf_counter()
    ours = hessian(loss("exact"), params)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    naive = func_hessian(lambda th: loss("naive")(unflatten(th, layout)))(theta)
    naive_s = time.perf_counter() - start
    gap = (ours - naive).abs().max().item()
    print(f"d={args.d} N={args.seq_len} D={theta.numel()}")
    print(f"prefix-tree, jacrev∘jacrev : {ours_s:8.3f} s")
    print(f"naive, torch.func.hessian  : {naive_s:8.3f} s")
    print(f"ratio                      : {naive_s / ours_s:8.1f}x   (target >= 10)")
    print(f"max |difference|           : {gap:8.1e}")


if __name__ == "__main__":
    main()
