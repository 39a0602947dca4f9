"""Global minimum (claims GLOBAL-MIN, REDUCED): the bigram point θ_* predicts the Markov kernel,
f = P(x_{n+1}=1 | x_n), reaches the entropy rate H_rate = π0 h(p) + π1 h(q) (the lower bound of
the loss), is stationary in all D parameters and has a positive semidefinite Hessian, tied or
untied, for all p, q.  Tied with p + q > 1 the feed-forward flips the sign (g = -2).

Exit code 0: every check agrees with the theory; 1: some check disagrees; 2: bad input;
3: inconclusive (some check cannot decide, none disagrees).
"""

from __future__ import annotations

from verify.analysis import analyse_bigram
from verify.cli import exit_now, main

THEOREM = "theorem_global_min"
DEFAULTS = {"p": 0.5, "q": 0.8, "tying": True}


def run(argv: list[str] | None = None) -> int:
    return main(__doc__, DEFAULTS, analyse_bigram, THEOREM, argv)


if __name__ == "__main__":
    exit_now(run())
