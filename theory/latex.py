"""A standalone LaTeX derivation built from the live SymPy expressions.

``python -m theory.latex --out derivations.tex [--p 0.5 --q 0.8]`` writes an article (amsmath)
with the setup, the reduced model, its loss, gradient and Hessian, their values at θ_π and
θ_*, the determinant and definiteness condition, and every identity with its claim ID.  Every
formula is printed by ``sympy.latex``; with p, q given, numeric values are added.
"""

from __future__ import annotations

import argparse
import sys

import sympy as sp

from numerics.markov import InvalidInputError, check_probability
from theory import landscape as T
from theory import reduced as R
from theory.markov import entropy_rate, kernel, p, q, stationary, unigram_loss


def _eq(expr, label: str) -> str:
    return f"\\begin{{equation}}\\label{{eq:{label}}}\n{sp.latex(expr)}\n\\end{{equation}}\n"


def document(p_value: float | None = None, q_value: float | None = None) -> str:
    """The whole derivation as LaTeX source."""
    pi0, pi1 = stationary()
    body = [
        "\\section{Source}",
        "Binary chain with kernel $P$ and stationary law $\\pi$ solved from $\\pi P = \\pi$:",
        _eq(sp.Eq(sp.Symbol("P"), kernel(), evaluate=False), "kernel"),
        _eq(sp.Eq(sp.Symbol("\\pi_0"), pi0), "pi0") + _eq(sp.Eq(sp.Symbol("\\pi_1"), pi1), "pi1"),
        "Unigram loss and entropy rate (nats):",
        _eq(sp.Eq(sp.Symbol("H(\\pi)"), unigram_loss()), "unigram"),
        _eq(sp.Eq(sp.Symbol("H_{rate}"), entropy_rate()), "rate"),
        "\\section{Reduced model}",
        "Attention off, $e = s u$, $p_n = c u$, $W_1 = w v u^\\top$, $W_2 = (g/w) u v^\\top$, $a = t u$; "
        "exact where every ReLU input is positive ($c > 0$, $s + c > 0$). The logits are",
        _eq(sp.Eq(sp.Symbol("\\ell(x)"), R.logit(sp.Symbol("x"), False)), "logit"),
        "and the population loss (tied: $t = s$) is",
        _eq(sp.Eq(sp.Symbol("L"), R.loss(False)), "loss"),
        "\\section{Hessian at $\\theta_\\pi$ (tied)}",
        _eq(T.normal_block_pi().extra["block"], "hess-pi"),
        "Its determinant, positive (hence the block positive definite, as $H_{bb} > 0$) iff $(1+g)(p+q-1) > 0$:",
        _eq(T.normal_block_pi().form, "det-pi"),
        "Nonzero eigenvalues of the full-space Hessian at $\\theta_\\pi$ (positions zero), tied and untied:",
        _eq(sp.Matrix(list(T.spectrum_pi(True))), "spec-tied"),
        _eq(sp.Matrix(list(T.spectrum_pi(False))), "spec-untied"),
        "\\section{Identities}",
        "Each difference below was reduced to exactly $0$ by SymPy.",
    ]
    for i, result in enumerate(T.identities()):
        status = "proven" if result.proven else "NOT proven"
        name = result.name.replace("_", "\\_").replace("^", "\\^{}")
        body.append(f"\\paragraph{{{name}}} (claim {result.claim}, {status})")
        body.append(_eq(result.form, f"id{i}"))
    if p_value is not None and q_value is not None:
        values = {p: sp.Float(p_value), q: sp.Float(q_value)}
        body += ["\\section{Values at the given inputs}",
                 f"At $p = {p_value}$, $q = {q_value}$:",
                 _eq(sp.Eq(sp.Symbol("H(\\pi)"), unigram_loss().subs(values).evalf(10)), "num-unigram"),
                 _eq(sp.Eq(sp.Symbol("H_{rate}"), entropy_rate().subs(values).evalf(10)), "num-rate")]
    preamble = ("\\documentclass{article}\n\\usepackage{amsmath}\n\\usepackage[margin=2cm]{geometry}\n"
                "\\allowdisplaybreaks\n\\title{Attention with Markov: derivations}\n\\date{}\n"
                "\\begin{document}\n\\maketitle\n")
    return preamble + "\n".join(body) + "\n\\end{document}\n"


def write_document(path: str, *, p: float | None = None, q: float | None = None) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(document(p, q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="file to write")
    ap.add_argument("--p", type=float)
    ap.add_argument("--q", type=float)
    args = ap.parse_args(argv)
    try:
        if (args.p is None) != (args.q is None):
            raise InvalidInputError("give both --p and --q, or neither")
        if args.p is not None:
            check_probability("p", args.p), check_probability("q", args.q)
        write_document(args.out, p=args.p, q=args.q)
    except (InvalidInputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
