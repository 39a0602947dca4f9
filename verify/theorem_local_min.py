"""Bad local minimum (claims MODEL, STAT-PI, LOCAL-MIN): with weight tying and p + q > 1 the
unigram point θ_π (e = 0, all weights 0, b = log(p/q), so f ≡ π1 and L = H(π)) is a local
minimum of the population loss.  Its full-space Hessian has nonzero eigenvalues π0π1 (once) and
2π0π1(p+q-1) (d times); every other direction is tangent to the critical manifold M_π.

For inputs outside the hypothesis (p + q < 1, or no tying) the theory predicts a saddle and
that is what gets verified.  Exit code 0: every check agrees with the theory; 1: some check
disagrees; 2: bad input; 3: inconclusive (some check cannot decide, none disagrees).
"""

from __future__ import annotations

from verify.analysis import analyse_unigram
from verify.cli import exit_now, main

THEOREM = "theorem_local_min"
DEFAULTS = {"p": 0.5, "q": 0.8, "tying": True}


def run(argv: list[str] | None = None) -> int:
    return main(__doc__, DEFAULTS, analyse_unigram, THEOREM, argv)


if __name__ == "__main__":
    exit_now(run())
