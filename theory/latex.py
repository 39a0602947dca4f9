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


def _eq(expr: sp.Basic | str, label: str) -> str:
    tex = expr if isinstance(expr, str) else sp.latex(expr)
    return f"\\begin{{equation}}\\label{{eq:{label}}}\n{tex}\n\\end{{equation}}\n"


def _named(lhs: str, expr: sp.Basic, *, split: bool = False) -> str:
    """``lhs = expr``; with ``split`` each top-level term of a sum goes on a line of its own."""
    terms = [sp.latex(term) for term in sp.Add.make_args(expr)] if split else [sp.latex(expr)]
    rest = "".join(f" \\\\\n&\\quad + {term}" for term in terms[1:])
    return f"\\begin{{aligned}}\n{lhs} &= {terms[0]}{rest}\n\\end{{aligned}}"


#: α and β (the kernel's logit gap and logit P(1|0)) shown by name in substitutions.
_LOGIT_NAMES = {T.alpha: sp.Symbol("alpha"), T.beta: sp.Symbol("beta")}


def _substitution(point: dict) -> str:
    """A point in reduced coordinates, one coordinate per line, α and β by name."""
    lines = [f"{sp.latex(symbol)} &= {sp.latex(sp.sympify(value).subs(_LOGIT_NAMES))}"
             for symbol, value in point.items()]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


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
        _eq(sp.Eq(sp.Symbol("z_x"), R.logit(sp.Symbol("x"), False)), "logit"),
        "and the population loss (tied: $t = s$), in nats, is",
        _eq(_named("L", R.loss(False), split=True), "loss"),
        "\\section{Gradient and Hessian}",
        "$L = F(z_0, z_1)$ with $F$ the transition loss, so $\\nabla L = J^\\top \\nabla_z F$ and "
        "$\\nabla^2 L = J^\\top \\nabla_z^2 F\\, J + \\sum_x \\partial_{z_x} F\\, \\nabla^2 z_x$, "
        "with $J = \\partial z / \\partial \\rho$ and",
        _eq(_named("\\nabla_z F", T.logit_gradient()), "dF"),
        "\\subsection{At $\\theta_\\pi$}",
        _eq(_substitution(T.theta_pi(False)), "theta-pi"),
        "Both logits equal $\\log(p/q)$, so $\\sigma(z_x) = \\pi_1$ and $\\nabla_z F$ is",
        _eq(T.logit_gradient(T.theta_pi(False), tying=False), "dF-pi"),
        "whose two entries cancel against the equal rows of $J$: $\\nabla L(\\theta_\\pi) = 0$ "
        "(identity below). The tied Hessian in the coordinates $(s, b, c, g)$ is",
        _eq(T.normal_block_pi().extra["hessian"], "hess-pi"),
        "Its $(s, b)$ block has determinant",
        _eq(T.normal_block_pi().form, "det-pi"),
        "and $H_{bb} = \\pi_0 \\pi_1 > 0$, so by Sylvester's criterion the block is positive definite "
        "iff $(1+g)(p+q-1) > 0$; at $g = 0$ iff $p + q > 1$. The $c, g$ directions are flat. "
        "Untied, the $(s, t, b)$ block has determinant",
        _eq(T.untied_block_pi().form, "det-untied"),
        "negative whenever $p + q \\neq 1$, so the untied $\\theta_\\pi$ is a saddle. "
        "The nonzero eigenvalues of the full-space Hessian at $\\theta_\\pi$ (positions zero, $d$ the "
        "embedding dimension) follow; the first (the bias direction) is simple, each other one has "
        "multiplicity $d$. Tied, then untied:",
        _eq(sp.Matrix(list(T.spectrum_pi(True))), "spec-tied"),
        _eq(sp.Matrix(list(T.spectrum_pi(False))), "spec-untied"),
        "\\subsection{At $\\theta_*$}",
        "With $\\alpha = \\log\\frac{(1-p)(1-q)}{pq}$ and $\\beta = \\log\\frac{p}{1-p}$,",
        _eq(_substitution(T.theta_star(True)), "theta-star"),
        "(tied, real when $(1+g)\\alpha > 0$; untied $t = \\alpha/((1+g)s)$). The logits are the kernel's, "
        "$z_0 = \\log\\frac{p}{1-p}$, $z_1 = \\log\\frac{1-q}{q}$, where $\\nabla_z F$ is",
        _eq(T.logit_gradient(T.theta_star(True), tying=True), "dF-star"),
        "so $\\nabla L(\\theta_*) = 0$ and $\\nabla^2 L(\\theta_*) = J^\\top \\nabla_z^2 F\\, J$ with",
        _eq(T.gauss_newton_star().form, "gn-star"),
        "a Gram matrix with positive weights: positive semidefinite in every parametrisation.",
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
        margin = p_value + q_value - 1
        verdict = ("positive: the tied $\\theta_\\pi$ is a local minimum" if margin > 0 else
                   "negative: the tied $\\theta_\\pi$ is a saddle" if margin < 0 else "zero: degenerate")
        body.append(f"Here $p + q - 1 = {margin:.6g}$, {verdict}; the untied $\\theta_\\pi$ is a saddle "
                    "whenever $p + q \\neq 1$. Nonzero Hessian eigenvalues at $\\theta_\\pi$ (tied, untied):")
        for tying, label in ((True, "num-spec-tied"), (False, "num-spec-untied")):
            numeric = [ev.subs(values).evalf(10) for ev in T.spectrum_pi(tying)]
            body.append(_eq(sp.Matrix(numeric), label))
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
