"""Full-space Hessian: this package vs torch.func.hessian of the naive loss, and an agreement table.

At a generic smooth point (tied, d=4, N=10 by default, D=237: θ_* plus N(0, 0.02²) noise on every
entry, attention on; every ReLU input stays far from its kink, so finite differences are
meaningful) the script times, best of
``--repeats`` in this process, the package's Hessian (prefix-tree loss) and torch.func.hessian of
the naive all-sequences loss, prints their ratio (target ≥ 10), and compares the package's
Hessian with independent references: the naive autodiff Hessian (whole matrix) and
scipy.differentiate.hessian finite differences with their own error estimate (on a random
8 × 8 principal block: finite differences of all D² entries would take hours).  Last, the
extreme eigenvalues from Lanczos on Hessian-vector products against the dense eigenvalues.
Run:  python benchmarks/hessian.py [--d 4 --seq-len 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.differentiate import hessian as fd_hessian
from torch.func import hessian as func_hessian
from torch.func import vmap

from numerics.curvature import flatten, hessian, hessian_vector_product, lanczos, unflatten
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.stationary_points import theta_star
from numerics.transformer import init_params


def best_of(repeats: int, fn):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lanczos-steps", type=int, default=60)
    args = ap.parse_args()
    noise = init_params(args.d, args.seq_len, std=0.02, seed=0)
    params = {k: v + noise[k] for k, v in theta_star(MarkovChain(0.5, 0.8), args.d, args.seq_len).items()}
    theta, layout = flatten(params)

    def loss(method):
        return lambda p: population_loss(p, 0.5, 0.8, tying=True, method=method)

    hessian(loss("exact"), init_params(args.d, 3, std=0.5, seed=0))  # warm up torch.func
    ours_s, ours = best_of(args.repeats, lambda: hessian(loss("exact"), params))
    naive_s, naive = best_of(args.repeats, lambda: func_hessian(lambda th: loss("naive")(unflatten(th, layout)))(theta))
    print(f"d={args.d} N={args.seq_len} D={theta.numel()}  (best of {args.repeats})")
    print(f"package (prefix tree)           : {ours_s:8.3f} s")
    print(f"torch.func.hessian, naive loss  : {naive_s:8.3f} s")
    print(f"ratio                           : {naive_s / ours_s:8.1f}x   (target >= 10)")

    block = np.sort(np.random.default_rng(0).choice(theta.numel(), 8, replace=False))
    batched = vmap(lambda th: loss("exact")(unflatten(th, layout)))

    def f(x: np.ndarray) -> np.ndarray:  # x: (8, *batch) -> (*batch)
        flat = x.reshape(8, -1).T
        full = theta.repeat(flat.shape[0], 1)
        full[:, block] = torch.from_numpy(flat)
        return batched(full).numpy().reshape(x.shape[1:])

    fd = fd_hessian(f, theta[block].numpy(), initial_step=1e-2, tolerances={"rtol": 1e-7})
    sub = ours[block][:, block].numpy()
    print("\nagreement with independent references")
    print(f"  naive autodiff, all D² entries      max |Δ| = {(ours - naive).abs().max().item():.1e}")
    gap = np.abs(sub - fd.ddf)
    within = int(np.sum(gap <= 3 * fd.error + 1e-12))
    print(f"  scipy finite differences, 8×8 block max |Δ| = {gap.max():.1e}; {within}/64 entries within 3× "
          f"scipy's error estimate (median estimate {np.median(fd.error):.1e}, {int(fd.success.sum())}/64 converged)")

    dense_s, exact = best_of(args.repeats, lambda: torch.linalg.eigvalsh(hessian(loss("exact"), params)))
    product = hessian_vector_product(loss("exact"), params)
    lanczos_s, ritz = best_of(args.repeats, lambda: lanczos(product, theta.numel(), steps=args.lanczos_steps))
    print(f"\nextreme eigenvalues: Lanczos ({ritz.iterations} Hessian-vector products, full reorthogonalisation) "
          f"{lanczos_s:.3f} s vs dense Hessian + eigvalsh {dense_s:.3f} s, ratio {dense_s / lanczos_s:.1f}x")
    for name, i in (("smallest", 0), ("largest", -1)):
        print(f"  {name:<8} Ritz {ritz.values[i].item(): .12f}  dense {exact[i].item(): .12f}  "
              f"|Δ| = {abs(ritz.values[i] - exact[i]).item():.1e}  residual bound {ritz.residuals[i].item():.1e}")


if __name__ == "__main__":
    main()
