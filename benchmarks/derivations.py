"""Cold time of every symbolic derivation, and the chain rule against direct differentiation.

1. Cold: a fresh interpreter imports SymPy and ``theory.landscape`` and proves every identity
   (``identities()``, all ``proven``).  Target ≤ 2 s on 2 cores.  Median of ``--repeats`` runs.
2. Ratio, in this process: the derivatives the identities need (∇L at θ_π and θ_*, ∇²L at
   θ_π, tied and untied) through the two logits (``gradient_at``/``hessian_at``) against the
   naive route, sp.diff of the whole loss then substitution and the same canonical form.
Run:  python benchmarks/derivations.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COLD = """
import time
start = time.perf_counter()
from theory.landscape import identities
assert all(result.proven for result in identities())
print(time.perf_counter() - start)
"""


def cold_seconds() -> float:
    out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True)
    return float(out.stdout)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs = [cold_seconds() for _ in range(args.repeats)]
    from theory import landscape as T

    print(f"cold derivation of all {len(T.identities())} identities: median {statistics.median(runs):.2f} s "
          f"(runs: {', '.join(f'{r:.2f}' for r in runs)})")

    from theory.markov import canonical

    points = [(tying, point(tying)) for tying in (True, False) for point in (T.theta_pi, T.theta_star)]

    def chain_rule():
        for tying, point in points:
            T.gradient_at(tying, point)
        for tying in (True, False):
            T.hessian_at(tying, T.theta_pi(tying))

    def direct():
        for tying, point in points:
            T.gradient(tying).subs(point).applyfunc(canonical)
        for tying in (True, False):
            T.hessian(tying).subs(T.theta_pi(tying)).applyfunc(canonical)

    fast, naive = timed(chain_rule), timed(direct)
    print(f"derivatives at the stationary points: chain rule {fast:.2f} s, direct {naive:.2f} s, "
          f"ratio {naive / fast:.1f}x")


if __name__ == "__main__":
    main()
