"""Saddle (claims STAT-PI, SADDLE, SADDLE-UNTIED): θ_π is a saddle point when p + q < 1 (tied:
eigenvalue 2π0π1(p+q-1) < 0, d times) and, without weight tying, whenever p + q != 1
(eigenvalues ±π0π1|1-p-q|, d times each).  The loss strictly decreases along the
negative-curvature eigenvector.

For tied p + q > 1 the theory predicts a local minimum and that is verified instead.
Exit code 0: every check agrees with the theory; 1: some check disagrees; 2: bad input;
3: inconclusive (some check cannot decide, none disagrees).
"""

from __future__ import annotations

from verify.analysis import analyse_unigram
from verify.cli import exit_now, main

THEOREM = "theorem_saddle"
DEFAULTS = {"p": 0.2, "q": 0.3, "tying": True}


def run(argv: list[str] | None = None) -> int:
    return main(__doc__, DEFAULTS, analyse_unigram, THEOREM, argv)


if __name__ == "__main__":
    exit_now(run())
