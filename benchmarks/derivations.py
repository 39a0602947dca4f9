"""Cold time of every symbolic derivation, and the chain rule against direct differentiation.

1. Cold: a fresh interpreter imports SymPy and ``theory.registry`` and proves every identity
   (``identities()``, all ``proven``); median of ``--repeats`` runs.  Reported, no target (SPEC §9
   sets none; about 8 s for 73 identities on 2 idle cores).
2. Ratio, in this process: the derivatives the identities need (∇L at θ_π and θ_*, ∇²L at
   θ_π, tied and untied) through the two logits (``gradient_at``/``hessian_at``) against the
   naive route, sp.diff of the whole loss then substitution and the same canonical form.
   Target: the chain rule at least ``--target`` times faster (default 5: it measured 7× on idle
   and 12× on busy cores; below 5 its reason to exist is fading).
Exit 0: the target is met; 1: missed (MISS); 2: bad input.  Progress goes to stderr.
Run:  python benchmarks/derivations.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from _common import Target, entry, parser, positive_float, positive_int, progress, report, stage

RATIO_TARGET = 5.0

COLD = """
import time
start = time.perf_counter()
from theory.registry import identities
assert all(result.proven for result in identities())
print(time.perf_counter() - start)
"""


def cold_seconds() -> float:
    """Seconds a fresh interpreter takes to import theory.registry and prove every identity."""
    out = subprocess.run([sys.executable, "-c", COLD], capture_output=True, text=True, check=True)
    return float(out.stdout)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ratio_target(chain_rule_s: float, direct_s: float, limit: float) -> Target:
    """The chain rule's speed-up over direct differentiation against ``limit``."""
    return Target("chain rule's speed-up over direct sp.diff", direct_s / chain_rule_s, limit, unit="x")


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__, prog="python benchmarks/derivations.py")
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="cold runs, each in a fresh interpreter; the median is reported (default 3)")
    ap.add_argument("--target", type=positive_float, default=RATIO_TARGET,
                    help=f"speed-up the chain rule must reach over direct differentiation (default {RATIO_TARGET:g})")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = [cold_seconds() for _ in progress(range(args.repeats), "cold derivations")]
    from theory import landscape as T
    from theory.markov import canonical
    from theory.registry import identities

    print(f"cold derivation of all {len(identities())} identities: median {statistics.median(runs):.2f} s "
          f"(runs: {', '.join(f'{r:.2f}' for r in runs)})")

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

    with stage("derivatives at the stationary points, both routes"):
        fast, naive = timed(chain_rule), timed(direct)
    print(f"derivatives at the stationary points: chain rule {fast:.2f} s, direct {naive:.2f} s, "
          f"ratio {naive / fast:.1f}x")
    return report([ratio_target(fast, naive, args.target)])


if __name__ == "__main__":
    entry(main)
