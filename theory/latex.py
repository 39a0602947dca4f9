"""A standalone LaTeX derivation built from the live SymPy expressions.

``python -m theory.latex --out derivations.tex [--p 0.5 --q 0.8] [--pdf]`` writes an article (amsmath)
with the setup, the reduced model, its loss, gradient and Hessian, their values at θ_π and θ_*, the
determinant and definiteness condition, the k-state, critical-manifold (first-order chain, then any stationary
source with the sources' autocovariances) and canonical-model sections, and every identity with its claim ID:
its statement as the title, its left side, its right side and their difference reduced to 0.  Every formula is
printed from the live expressions, in a form chosen for reading (``_readable``: shortest of a few equal forms,
signs made positive); the proofs use the canonical forms whatever is shown.  With p, q given, numeric values are
added; ``--pdf`` compiles it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import sympy as sp
from sympy.printing.latex import LatexPrinter

from numerics.markov import PRESETS, InvalidInputError, check_probability
from theory import autocovariance as AC
from theory import canonical as C
from theory import landscape as T
from theory import manifold as M
from theory import multistate as MS
from theory import reduced as R
from theory.calculus import K, Result, Statement, alpha, beta
from theory.cli import Parser, bad_input, check_writable
from theory.markov import canonical, entropy_rate, kernel, p, q, stationary, unigram_loss
from theory.registry import identities


def _eq(expr: sp.Basic | str, label: str) -> str:
    tex = expr if isinstance(expr, str) else sp.latex(expr)
    return f"\\begin{{equation}}\\label{{eq:{label}}}\n{tex}\n\\end{{equation}}\n"


def _lines(lhs: str, expr: sp.Basic, *, split: bool = False, per_row: int = 1) -> str:
    """The rows ``lhs &= expr`` of an aligned block.

    With ``split`` the top-level terms of a sum go ``per_row`` to a row; a product c·(sum) keeps c in front and
    splits the sum inside big parentheses.
    """
    factor, inner = "", expr
    if split and isinstance(expr, sp.Mul) and sum(isinstance(arg, sp.Add) for arg in expr.args) == 1:
        (inner,) = [arg for arg in expr.args if isinstance(arg, sp.Add)]
        factor = _latex(sp.Mul(*(arg for arg in expr.args if arg is not inner))) + " \\Big("
    terms = [_latex(term) for term in sp.Add.make_args(inner)] if split else [_latex(expr)]
    return f"{lhs} &= {factor}" + _rows(terms, per_row=per_row) + (" \\Big)" if factor else "")


def _rows(terms: list[str], *, per_row: int | None = None, width: int | None = None) -> str:
    """The printed terms of a sum, signed, as rows of an aligned block (``&\\quad`` continues): ``per_row``
    terms to a row, or as many as fit in ``width`` characters."""
    signed = [term if i == 0 or term.startswith("-") else f"+ {term}" for i, term in enumerate(terms)]
    rows: list[list[str]] = []
    for term in signed:
        full = rows and (len(rows[-1]) == per_row if per_row else len(" ".join([*rows[-1], term])) > width)
        if not rows or full:
            rows.append([])
        rows[-1].append(term)
    return " \\\\\n&\\quad ".join(" ".join(row) for row in rows)


def _named(lhs: str, expr: sp.Basic, *, split: bool = False) -> str:
    """``lhs = expr`` as an aligned block; with ``split`` each top-level term of a sum goes on a line of its own."""
    return f"\\begin{{aligned}}\n{_lines(lhs, expr, split=split)}\n\\end{{aligned}}"


class _Printer(LatexPrinter):
    """SymPy's LaTeX with a positive constant leading its sum (``1 - p - q``, ``p + q - 1``) and, with
    ``exp_by_name``, exp(x) as \\exp(x): where a weight is named e (the canonical model) e^{x} is ambiguous."""

    def __init__(self, settings: dict, *, exp_by_name: bool = False):
        super().__init__(settings)
        self.exp_by_name = exp_by_name

    def _print_exp(self, expr, exp=None):
        if not self.exp_by_name:
            return self._print_ExpBase(expr, exp)
        tex = f"\\exp\\left({self._print(expr.args[0])}\\right)"
        return tex if exp is None else f"{tex}^{{{exp}}}"

    def _as_ordered_terms(self, expr, order=None):
        terms = super()._as_ordered_terms(expr, order=order)
        lead = [t for t in terms if t.is_Number and t > 0]
        return lead + [t for t in terms if not (t.is_Number and t > 0)]


def _latex(expr: sp.Basic, *, exp_by_name: bool | None = None) -> str:
    """LaTeX of ``expr`` (``_Printer``) with the position symbols pos_{n,c} set upright, as in the text;
    exp by name when ``expr`` has a weight named e (``exp_by_name`` decides for a term of a larger sum)."""
    names = {s: "\\mathrm{pos}" + s.name[3:] for s in expr.free_symbols if s.name.startswith("pos_")}
    if exp_by_name is None:
        exp_by_name = any(s.name == "e" for s in expr.free_symbols)
    return _Printer({"symbol_names": names}, exp_by_name=exp_by_name).doprint(expr)


#: Points spread over 0 < p, q < 1 where a factor's sign is read off.
_GRID = [{p: sp.Rational(i, 6), q: sp.Rational(j, 6)} for i in range(1, 6) for j in range(1, 6)]


def _negative_factor(base: sp.Expr) -> bool:
    """Is ``base`` a sum in p, q alone that is negative all over the domain, as p − 1 is (p + q − 1 is not)?

    Read off a grid: the factors met here are linear or quadratic, of one sign on the square or not."""
    return isinstance(base, sp.Add) and base.free_symbols <= {p, q} and all(base.subs(at) < 0 for at in _GRID)


def _positive(expr: sp.Basic) -> sp.Basic:
    """``expr`` for reading: each factor that is negative on the domain flipped (p − 1 → 1 − p) and its sign
    moved to the front, (−1)^k (p + q − 1)^k merged into (1 − p − q)^k.  Unevaluated, for printing only."""
    if isinstance(expr, sp.Add):
        return sp.Add(*map(_positive, expr.args), evaluate=False)
    if isinstance(expr, sp.Pow):
        return sp.Pow(_positive(expr.base), expr.exp, evaluate=False)
    if isinstance(expr, sp.Function):
        return expr.func(*map(_positive, expr.args))
    if not isinstance(expr, sp.Mul):
        return expr
    sign, factors = sp.Integer(1), []
    powers = [f.as_base_exp() for f in expr.args]
    sums = [(base, exp) for base, exp in powers if isinstance(base, sp.Add) and not exp.is_Integer]
    merged = {exp for base, exp in powers if base == -1 and [e for _, e in sums].count(exp) == 1}
    for base, exp in powers:
        if base == -1 and exp in merged:
            continue
        if (base, exp) in sums and exp in merged:
            factors.append(sp.Pow(-base, exp, evaluate=False))  # (−1)^k (p + q − 1)^k = (1 − p − q)^k
        elif _negative_factor(base) and exp.is_Integer:
            sign *= (-1) ** exp
            factors.append(sp.Pow(-base, exp, evaluate=False) if exp != 1 else -base)
        elif base.is_Number and exp == 1:
            sign *= base
        else:
            factors.append(_positive(base if exp == 1 else sp.Pow(base, exp)))
    return sp.Mul(*([sign] if sign != 1 else []), *factors, evaluate=False)


def _readable(expr: sp.Basic) -> sp.Basic:
    """``expr`` for reading: whichever of ``expr``, its canonical form (the proof's), and each of them
    factored (rational functions) or collected over its logarithms prints shortest, with ``_positive`` signs.

    Two sides of an identity may well come out the same.  For reading only: the proofs use ``canonical``."""
    if isinstance(expr, sp.MatrixBase):
        return expr.applyfunc(_readable)
    return _readable_scalar(expr)


@cache  # the same sides recur across identities and sections (H(π), H_rate, π0π1, …)
def _readable_scalar(expr: sp.Expr) -> sp.Expr:
    if sp.count_ops(expr) > _READABLE_OPS:
        return expr
    form = canonical(expr)
    candidates = (_positive(c) for c in (expr, _gathered(expr), form, _gathered(form)))
    return min(candidates, key=lambda candidate: _ink(_latex(candidate)))


def _ink(tex: str) -> int:
    """How much a LaTeX form prints: its length without spaces and \\left, \\right sizing."""
    return len(re.sub(r"\\left|\\right|\s", "", tex))


def _gathered(expr: sp.Expr) -> sp.Expr:
    """``expr`` factored, or, with logarithms, expanded and collected over them with factored coefficients."""
    logs = sorted(expr.atoms(sp.log), key=sp.default_sort_key)
    if not logs:
        return sp.factor(expr)
    return sp.Add(*(sp.factor(c) * log for log, c in sp.collect(sp.expand(expr), logs, evaluate=False).items()))


#: Expressions larger than _READABLE_OPS (SymPy's ``count_ops``) are not normalised for display, and
#: printed forms longer than _SHOWN_CHARS are not shown at all: the proof does not need them, a reader
#: cannot use them.
_READABLE_OPS, _SHOWN_CHARS = 300, 900
#: Longest row of a displayed sum, in LaTeX characters (about a line of the page).
_ROW_CHARS = 200


def _shown(expr: sp.Basic) -> str:
    """``expr`` readable, a long sum a few terms to a row of an aligned block (``&\\quad`` continues), or a
    line saying how large it is."""
    form = _readable(expr)
    tex = _latex(form)
    if len(tex) > _SHOWN_CHARS:
        size = sum(map(sp.count_ops, expr)) if isinstance(expr, sp.MatrixBase) else sp.count_ops(expr)
        return f"\\text{{(an expression of {size} operations, not shown)}}"
    if len(tex) <= _ROW_CHARS or not isinstance(form, sp.Add):
        return tex
    weight_e = any(s.name == "e" for s in form.free_symbols)
    return _rows([_latex(t, exp_by_name=weight_e) for t in _Printer({})._as_ordered_terms(form)], width=_ROW_CHARS)


#: α and β (the kernel's logit gap and logit P(1|0)) shown by name in substitutions.
_LOGIT_NAMES = {alpha: sp.Symbol("alpha"), beta: sp.Symbol("beta")}


def _substitution(point: dict) -> str:
    """A point in reduced coordinates, one coordinate per line, α and β by name."""
    lines = [f"{sp.latex(symbol)} &= {sp.latex(sp.sympify(value).subs(_LOGIT_NAMES))}"
             for symbol, value in point.items()]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def _status(result: Result) -> str:
    verdict = "reduced to exactly $0$" if result.proven else "did NOT reduce to $0$"
    return f"(claim {result.claim}; the difference {verdict}.)"


def _sides(result: Result, lhs: str, rhs: str, label: str, *, entries: list[tuple[int, int]] | None = None,
           reduced: bool = False, claimed: sp.Matrix | None = None) -> str:
    """``lhs = expr`` and ``rhs = expected`` of ``result`` as stated (k, λ by name), then the verdict.

    ``reduced``: the left side's reduced form instead.  ``entries``: only those entries, a row each.
    ``claimed``: the right side written with named abbreviations, which the text defines.
    """
    expr = result.form if reduced else result.expr
    expected = result.extra.get("expected", result.expected) if claimed is None else claimed
    if entries is None:
        lines = [_lines(lhs, _readable(expr)), _lines(rhs, _readable(expected))]
    else:  # long entries: a term a row on the left, two on the right
        lines = [_lines(f"{side}_{{{r + 1}{c + 1}}}", matrix[r, c], split=True, per_row=per_row)
                 for r, c in entries for side, matrix, per_row in ((lhs, expr, 1), (rhs, expected, 2))]
    return _eq("\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}", label) + _status(result)


def _manifold_section() -> list[str]:
    """The critical manifold M_π (claim MANIFOLD): set-up, moment identity, derived block, Schur, special cases."""
    d = sp.Symbol("d")
    A, Mz, eye = sp.MatrixSymbol("A", d, d), sp.MatrixSymbol("M", d, d), sp.Identity(d)
    zbar, k = sp.MatrixSymbol("\\bar{z}", d, 1), M.K_SYMBOL
    N, d1 = M.SIZES[0]
    tied, untied = M.block_identity(N, d1, True), M.block_identity(N, d1, False)
    others = [M.block_identity(n, dim, tying) for tying in (True, False) for n, dim in M.SIZES]
    cov = sp.MatrixSymbol("\\mathrm{Cov}_n(z_n)", d, d)
    cov_pos = sp.MatrixSymbol("\\mathrm{Cov}_n(\\mathrm{pos}_n)", d, d)
    length, dim = M.SPECIAL_SIZE
    mean_pos = sp.Matrix([sp.Symbol(f"\\overline{{\\mathrm{{pos}}}}_{{{c}}}") for c in range(1, dim + 1)])
    return [
        "\\section{The critical manifold}\\label{sec:manifold}",
        "On the unigram critical manifold $M_\\pi$ the embedding is $e = 0$ and the bias $b = \\log(p/q)$ "
        "(untied also $a = 0$), every other weight free: every point predicts $\\pi_1$. The logit at position $n$ is "
        "$\\ell_n = e^\\top F_n(\\tilde x_1, \\dots, \\tilde x_n, \\omega) + b$ (untied $a^\\top F_n + b$) with "
        "$\\tilde x_i = x_i e + \\mathrm{pos}_i$, $x_i \\in \\{0, 1\\}$, and $F_n$ (everything after the embedding) "
        "$d$ undefined SymPy functions of the $n d$ embedding coordinates and of a further weight $\\omega$: any "
        "direction among $W_Q, W_K, W_V, W_O, W_1, W_2$ and the positions. For $d = 1$, as SymPy holds them,",
        _eq(", \\qquad ".join(_latex(M.hidden_state(n, M.sequence_symbols(n), sp.Matrix(M.parameters(1, True)[:1]))[0])
                               for n in (1, 2)), "F-jet"),
        "SymPy differentiates the composed loss $f(\\ell_n(\\theta), x_{n+1})$, $f(u, y) = \\log(1 + e^u) - y u$, "
        "twice in $(e, b, \\omega)$ (untied $(e, a, b, \\omega)$) and sets $e = a = \\omega = 0$, "
        "$b = \\log(\\sigma/(1-\\sigma))$. What is left are the hidden states $z_n = F_n(\\mathrm{pos}, 0) "
        "\\in \\mathbb{R}^d$, their Jacobians $K_{n,i} = \\partial F_n / \\partial \\tilde x_i$ ($d \\times d$, "
        "$i \\le n$, entries $K_{n,i}^{(j,c)}$ when $d > 1$) and $z'_n = \\partial F_n / \\partial \\omega$ there, "
        "renamed to symbols; any other derivative left would stop the derivation. The per-sequence Hessian is a "
        "polynomial in the $x_t$; its expectation takes each monomial's moment. Here, on the first-order chain, "
        "$\\sigma = \\pi_1$ and every moment is the exact sum over the sequences with probability "
        "$\\pi_{x_1} \\prod_t P_{x_t x_{t+1}}$ (Section~\\ref{sec:manifold-general} keeps the moments, and the "
        "source, free). Write",
        _eq(f"k = \\pi_0 \\pi_1 = {sp.latex(K)}, \\quad \\lambda = 1 - p - q, \\quad "
            "\\bar z = \\frac1N \\sum_n z_n, \\quad M = \\frac1N \\sum_n z_n z_n^\\top, \\quad "
            "A = \\frac1N \\sum_n \\sum_{i \\le n} \\lambda^{n+1-i} K_{n,i}", "manifold-notation"),
        "($A$ weights each Jacobian $K_{n,i}$ by $\\lambda^{n+1-i}$, the correlation of $x_i$ with the predicted "
        "$x_{n+1}$).",
        "\\subsection{The moment identity}",
        "On $M_\\pi$, $\\partial_u f = \\sigma(b) - x_{n+1} = \\pi_1 - x_{n+1}$ and $\\partial_u^2 f = k$. "
        "$\\nabla \\ell_n$ is deterministic and the random part of $\\nabla^2 \\ell_n$ is linear in the $x_i$, so "
        f"the weights are the moments below (row $n$, column $i$, $N = {M.moment_identity().expr.rows}$), "
        "enumerated over the $2^{N+1}$ sequences and reduced, then claimed:",
        _sides(M.moment_identity(), "E[(\\pi_1 - x_{n+1}) x_i]", "-k \\lambda^{n+1-i}", "moments", reduced=True),
        "This is $-\\mathrm{Cov}(x_i, x_{n+1})$, the covariance of the identities below.",
        "\\subsection{The Hessian on the manifold}",
        f"For $N = {N}$, $d = {d1}$ (tied) SymPy's Hessian in $(e, b, \\omega)$ has",
        _eq("\\begin{aligned}\n" + _lines("H_{ee}", tied.form[0, 0], split=True, per_row=3) + "\n\\end{aligned}",
            "manifold-Hee"),
        _eq(f"H_{{eb}} = {sp.latex(tied.form[0, 1])}, \\qquad H_{{bb}} = {sp.latex(tied.form[1, 1])}, \\qquad "
            f"H_{{\\omega \\cdot}} = {sp.latex(tied.form[-1, :])}", "manifold-Heb"),
        "and the closed form, in $k$ and $\\lambda$, is",
        _eq(sp.latex(tied.extra["expected"]), "manifold-tied-claim"),
        _status(tied) + " Untied, the derived $e$--$a$ entry and the claim:",
        _eq("\\begin{aligned}\n" + _lines("H_{ea}", untied.form[0, 1], split=True, per_row=3) + " \\\\\n"
            + _lines("-k A", untied.extra["expected"][0, 1]) + "\n\\end{aligned}", "manifold-Hea"),
        _status(untied) + " In general (any $N$, $d$), tied and untied:",
        _eq("\\begin{aligned}\n"
            f"H_{{ee}} &= {sp.latex(k * (Mz - A - A.T))}, & H_{{eb}} &= {sp.latex(k * zbar)}, & H_{{bb}} &= k; \\\\\n"
            f"H_{{ee}} &= 0, \\quad H_{{e_c a_j}} = -k A_{{jc}}, & H_{{aa}} &= {sp.latex(k * Mz)}, & "
            f"H_{{ab}} &= {sp.latex(k * zbar)}, \\quad H_{{bb}} = k, \\quad H_{{eb}} = 0,"
            "\n\\end{aligned}", "manifold-general"),
        "and every entry of the $\\omega$ row is $0$: $\\omega$ being any direction, the Hessian vanishes outside "
        "these blocks. The argument is free of $N$ and $d$; the derived Hessian was matched with the closed form "
        "at these sizes ($N = 3$ reaches $\\lambda^3$; $d = 2$ tells $K_{n,i}$ from $K_{n,i}^\\top$):",
        "\\begin{itemize}\n" + "\n".join(
            f"\\item {_title(r.statement)}: {'proven' if r.proven else 'NOT proven'}" for r in others)
        + "\n\\end{itemize}",
        "\\subsection{The Schur complement}",
        "Eliminating $b$, $S = H_{ee} - H_{eb} H_{eb}^\\top / H_{bb}$ is",
        _eq(f"S = {sp.latex(k * (cov - A - A.T))}", "manifold-schur"),
        f"with $\\mathrm{{Cov}}_n$ weighted $1/N$ (no Bessel correction) {_status(M.schur_identity())} "
        "So a point of $M_\\pi$ is a local minimum of the tied model if $S \\succ 0$ and a saddle if $S$ has a "
        "negative eigenvalue (a singular $S \\succeq 0$ leaves it to higher orders); untied, the zero $H_{ee}$ "
        "next to a nonzero $e$--$a$ block makes every $A \\neq 0$ "
        "a saddle. With $W_O = W_1 = W_2 = 0$, $F_n(\\tilde x) = \\tilde x_n$: $z_n = \\mathrm{pos}_n$ and "
        "$K_{n,i} = \\delta_{in} I$, and the claim is",
        _eq(f"S = {sp.latex(k * (cov_pos + 2 * (p + q - 1) * eye))}", "manifold-schur-pos"),
        "with $\\mathbb{I}$ (and $I$) the identity.",
        f"For $N = {length}$, $d = {dim}$ the two sides' entries (left: $S$ from the closed form; right: the claim, "
        "$\\overline{\\mathrm{pos}} = \\frac1N \\sum_n \\mathrm{pos}_n$):",
        _sides(M.position_schur_identity(), "S", "\\mathrm{claim}", "schur-pos", entries=[(0, 0), (0, 1)],
               claimed=k * (M.covariance(M.position_symbols(length, dim), mean_pos) + 2 * (p + q - 1) * sp.eye(dim))),
        " So spread-out positions ($\\lambda_{\\min}(\\mathrm{Cov}) > 2(1 - p - q)$) make local minima even for "
        "$p + q < 1$.",
        "\\subsection{Special cases}",
        "At $\\theta_\\pi$ (all $W = 0$, positions $0$): $z_n = 0$, $K_{n,n} = I$, $K_{n,i<n} = 0$. Tied, the "
        "closed form against the $\\theta_\\pi$ spectrum of the Gradient and Hessian section "
        f"($d = {M.SPECIAL_SIZE[1]}$):",
        _sides(M.theta_pi_identity(), "H", "\\mathrm{diag}", "manifold-theta-pi"),
        "Untied, the block and its characteristic polynomial against the one the spectrum gives:",
        _eq(sp.latex(M.untied_theta_pi_identity().extra["block"]), "manifold-theta-pi-untied"),
        _sides(M.untied_theta_pi_identity(), "\\det(\\mu I - H)", "\\prod (\\mu - \\mathrm{ev})",
               "manifold-charpoly"),
        "On the reduced model ($d = 1$, $z_n = (1+g)c$, $K_{n,n} = 1 + g$, $K_{n,i<n} = 0$) the closed form is the "
        "$(s, b)$ block at $\\theta_\\pi$ derived there, for every $c, g$:",
        _sides(M.reduced_identity(True), "H", "H_{(s,b)}", "manifold-reduced"),
        "and untied the $(s, t, b)$ block:",
        _sides(M.reduced_identity(False), "H", "H_{(s,t,b)}", "manifold-reduced-untied"),
    ]


def _general_manifold_section() -> list[str]:
    """M_π for any stationary source, depth and mask (claims MANIFOLD-GENERAL, AUTOCOV-SECOND-ORDER,
    SECOND-ORDER-DEGENERATE): the moment form, the closed form in c_m, the autocovariances, the corollaries."""
    d = sp.Symbol("d")
    A, Mz, k = sp.MatrixSymbol("A_c", d, d), sp.MatrixSymbol("M", d, d), M.K_SYMBOL
    zbar = sp.MatrixSymbol("\\bar{z}", d, 1)
    cov = sp.MatrixSymbol("\\mathrm{Cov}_n(z_n)", d, d)
    N, d1 = M.SIZES[0]
    law, general = M.law_identity(N, d1, True), M.general_block_identity(N, d1, True)
    untied = M.general_block_identity(N, d1, False)
    lags = range(AC.LAGS + 1)
    table = " \\\\\n".join(
        f"c^{{({order})}}(m) &: " + " & ".join(_latex(_readable(AC.autocovariance(order, m))) for m in lags)
        for order in AC.ORDERS)
    odd = M.second_order_schur(M.jet(N, d1))
    results = [r for r in M.general_results() + AC.results() if r.claim in _GENERAL_CLAIMS]
    return [
        "\\section{Any stationary source, depth and mask}\\label{sec:manifold-general}",
        "The derivation of Section~\\ref{sec:manifold} never used the chain, the depth or the attention pattern: "
        "$F_n$ is undefined. Here the source is left free too. For ANY joint law of $x_1, \\dots, x_{N+1}$ the "
        "expectation replaces each monomial $\\prod_{t \\in S} x_t$ of the per-sequence Hessian by a moment symbol "
        "$E[x_S]$, and $\\sigma = \\sigma(b)$ stays a symbol. "
        f"For $N = {N}$, $d = {d1}$, tied, SymPy's $H_{{ee}}$ is",
        _eq("\\begin{aligned}\n" + _lines("H_{ee}", law.form[0, 0], split=True, per_row=3) + "\n\\end{aligned}",
            "general-law-Hee"),
        _eq(f"H_{{eb}} = {_latex(law.form[0, 1])}, \\qquad H_{{bb}} = {_latex(law.form[1, 1])}, \\qquad "
            f"H_{{e\\omega}} = {_latex(law.form[0, 2])}", "general-law-Heb"),
        "Only $E[x_i]$, $E[x_{n+1}]$ and $E[x_i x_{n+1}]$ ($i \\le n$) enter, as the moment form claims:",
        _eq("\\nabla^2 L = \\frac1N \\sum_n \\Big[\\sigma(1-\\sigma)\\, g_n g_n^\\top + E[\\sigma - x_{n+1}]\\, "
            "\\Omega_n + \\sum_{i \\le n} E[(\\sigma - x_{n+1}) x_i]\\, B_{n,i}\\Big]", "general-moment-form"),
        "with $g_n = \\nabla \\ell_n = (z_n, 1, 0)$ (untied $(0, z_n, 1, 0)$), $\\Omega_n$ the $\\omega$ row "
        "($z'_n$ against $e$, untied against $a$) and $B_{n,i}$ the $x_i$-part of $\\nabla^2 \\ell_n$: "
        "$K_{n,i} + K_{n,i}^\\top$ in $e$--$e$ (untied $K_{n,i}$ in $a$--$e$). "
        + _status(law) + " No moment of three symbols, and none of the source's other structure, enters.",
        "\\subsection{A stationary source}",
        "A stationary binary source has $E[x_t] = \\pi_1$ and $E[x_i x_j] = \\pi_1^2 + c_{|j - i|}$ with the "
        "autocovariance $c_m = \\mathrm{Cov}(x_{t+m}, x_t)$, symbols $c_1, c_2, \\dots$; on $M_\\pi$, "
        "$\\sigma = \\pi_1$, so $E[\\sigma - x_{n+1}] = 0$ and $E[(\\sigma - x_{n+1}) x_i] = -c_{n+1-i}$. "
        f"Substituted, for $N = {N}$, $d = {d1}$, tied:",
        _eq("\\begin{aligned}\n" + _lines("H_{ee}", general.form[0, 0], split=True, per_row=3) + "\n\\end{aligned}",
            "general-Hee"),
        "and the closed form, with $k = \\pi_0 \\pi_1 = \\pi_1(1 - \\pi_1)$, is",
        _eq(sp.latex(general.extra["expected"]), "general-tied-claim"),
        _status(general) + " Untied, the derived $e$--$a$ entry and the claim:",
        _eq("\\begin{aligned}\n" + _lines("H_{ea}", untied.form[0, 1], split=True, per_row=3) + " \\\\\n"
            + _lines("-A_c", untied.extra["expected"][0, 1]) + "\n\\end{aligned}", "general-Hea"),
        _status(untied) + " In general, with $A_c = \\frac1N \\sum_n \\sum_{i \\le n} c_{n+1-i} K_{n,i}$:",
        _eq("\\begin{aligned}\n"
            f"H_{{ee}} &= {sp.latex(k * Mz - A - A.T)}, & H_{{eb}} &= {sp.latex(k * zbar)}, & H_{{bb}} &= k; \\\\\n"
            f"H_{{ee}} &= 0, \\quad H_{{e_c a_j}} = -(A_c)_{{jc}}, & H_{{aa}} &= {sp.latex(k * Mz)}, & "
            f"H_{{ab}} &= {sp.latex(k * zbar)}, \\quad H_{{bb}} = k,"
            "\n\\end{aligned}", "general-closed-form"),
        "the $\\omega$ row $0$, and after eliminating $b$",
        _eq(f"S = {sp.latex(k * cov - A - A.T)}", "general-schur"),
        _status(M.general_schur_identity()) + " The data enter the curvature of $M_\\pi$ only through $c_m$; "
        "the architecture (depth, mask, layer norm) only through $z_n$ and $K_{n,i}$.",
        "\\subsection{The autocovariance of the two sources}",
        "Each source is a stationary Markov chain read through an observable: the first-order chain itself "
        "($Q = P$, $\\mathrm{obs}(x) = x$), and the paper's second-order source $x_{n+1} \\sim P(\\cdot \\mid "
        "x_{n-1})$ as the pair chain on $(x_{n-1}, x_n)$ (index $2x_{n-1} + x_n$), $\\mathrm{obs}(a, b) = b$:",
        _eq(f"Q = {_latex(AC.pair_kernel())}, \\qquad \\rho = {_latex(_readable(AC.pair_law()))}", "pair-chain"),
        f"$\\rho$ solved from $\\rho Q = \\rho$, $\\sum_s \\rho_s = 1$, is $\\pi \\otimes \\pi$ "
        f"{_status(AC.pair_law_identity())} and $Q^2 = P \\otimes P$ {_status(AC.pair_square_identity())} "
        "By exact matrix powers, $c(m) = \\sum_s \\rho_s\\, \\mathrm{obs}(s) (Q^m \\mathrm{obs})(s) - \\pi_1^2$ "
        f"for $m = 0, \\dots, {AC.LAGS}$ (first row: the first-order chain; second: the second-order source):",
        _eq(f"\\begin{{aligned}}\n{table}\n\\end{{aligned}}", "autocov-table"),
        _status(AC.lag_identity(1)) + " " + _status(AC.lag_identity(2)) + " For every lag: "
        "$Q^s \\mathrm{obs} = \\lambda\\, \\mathrm{obs} + (1 - \\lambda) \\pi_1 \\mathbf 1$ with $s = 1$ (first "
        f"order) {_status(AC.step_identity(1))} and $s = 2$ (second order) {_status(AC.step_identity(2))} "
        "Any $W$ with $W \\mathbf 1 = \\mathbf 1$, $Q^m$ among them, gives "
        "$\\rho_{\\mathrm{obs}} W Q^s \\mathrm{obs} - \\lambda \\rho_{\\mathrm{obs}} W \\mathrm{obs} - (1 - \\lambda) "
        f"\\pi_1^2 = 0$ ($W$ a matrix of symbols with rows summing to $1$) {_status(AC.recursion_identity(1))} "
        f"{_status(AC.recursion_identity(2))} So $c(m + s) = \\lambda c(m)$ for all $m$, and with $c(0) = k$ "
        "(second order also $c(1) = 0$): $c(m) = k \\lambda^m$ on the first-order chain; on the second-order "
        "source $c(m) = k \\lambda^{m/2}$ at even $m$ and $0$ at odd $m$.",
        "\\subsection{Corollaries}",
        "Section~\\ref{sec:manifold}'s block is the case $c_m = k\\lambda^m$: the closed form above at the "
        f"first-order $c(m)$ is it, tied {_status(M.first_order_case_identity(True))} and untied "
        f"{_status(M.first_order_case_identity(False))} On the second-order source the odd lags drop out of $S$, "
        f"the symbol's own path $K_{{n,n}}$ among them; for $N = {N}$, $d = {d1}$:",
        _eq(f"S = {_latex(odd[0, 0])}", "second-order-schur"),
        f"(the $d = {M.SPECIAL_SIZE[1]}$ identity: {_status(M.odd_lag_identity())}) So at $\\theta_\\pi$ "
        "($z_n = 0$, $K_{n,n} = I$, $K_{n,i<n} = 0$) $S = -2c(1) I = 0$: fully degenerate at second order "
        f"{_status(M.second_order_theta_pi_identity())} Every identity of this section:",
        "\\begin{itemize}\n" + "\n".join(f"\\item {_title(r.statement)}: {'proven' if r.proven else 'NOT proven'}"
                                        for r in results) + "\n\\end{itemize}",
    ]


def _multistate_section() -> list[str]:
    """k-state chains at θ_π (claims MULTI-STATE-PI, MULTI-STATE-LOCAL-MIN, MULTI-STATE-SADDLE-UNTIED)."""
    k3 = 3
    results = MS.results()
    tied, untied = MS.hessian_identity(k3, 1, True), MS.hessian_identity(k3, 1, False)
    untied_names = [sp.latex(x) for x in MS.weights(k3, 1, False).flat if x not in MS.weights(k3, 1, False).pos]
    presets = []
    for name in ("sticky5", "switching3", "rotating3"):
        P = PRESETS[name][1]
        normal = ", ".join(f"${x:.4f}$" for x in np.linalg.eigvalsh(MS.normal_matrix(P)))
        eigs = ", ".join(f"${x.real:.3f} {'+' if x.imag > 0 else '-'} {abs(x.imag):.3f}i$" if abs(x.imag) > 1e-12
                         else f"${x.real:.3f}$" for x in np.linalg.eigvals(P).astype(complex))
        presets.append(f"\\item \\texttt{{{name}}} ($k = {len(P)}$; eigenvalues of $P$: {eigs}): $M_s$ on "
                       f"$\\mathbf 1^\\perp$ has eigenvalues {normal}, so the tied $\\theta_\\pi$ is a "
                       f"{MS.predicted_class(P)}; untied a {MS.predicted_class(P, tying=False)}.")
    return [
        "\\section{Multi-state chains}\\label{sec:multistate}",
        "A chain on $k$ symbols has the transition matrix $P$, $P_{ij} = P(x_{n+1} = j \\mid x_n = i)$. "
        "Symbolically the off-diagonal entries are positive symbols and each diagonal entry is $1$ minus the rest "
        "of its row; for $k = 2$, $P$ is the binary kernel in $p, q$. The stationary law is "
        "$\\pi_i = w_i / \\sum_m w_m$, $w_i$ the $i$-th diagonal cofactor of $I - P$ (Markov chain tree theorem); "
        f"for $k = 3$, $w_0 = {sp.latex(MS.cofactors(k3)[0].as_expr())}$ and cyclically. "
        f"$\\pi P = \\pi$ and $\\sum_i \\pi_i = 1$ reduce to $0$ for $k = 2, 3$ {_status(MS.stationary_identity(k3))}",
        "The model (the one of the paper's released code) embeds $x_n$ as $\\tilde x_n = E[x_n] + "
        "\\mathrm{pos}_n$, $E \\in \\mathbb{R}^{k \\times d}$ (row $c$: symbol $c$), runs the same attention and "
        "feed-forward block to $z_n$, and predicts $\\mathrm{softmax}(A z_n + b)$, $A \\in \\mathbb{R}^{k \\times d}$ "
        "(row $j$: symbol $j$), $b \\in \\mathbb{R}^k$; tied, $A = E$. At $\\theta_\\pi$: $E = A = 0$, every "
        "$W = 0$, $\\mathrm{pos} = 0$, $b = \\log \\pi$. Every weight but $b$ vanishes there; the attention "
        "output $W_O \\sum_i \\mathrm{att}_{n,i} W_V \\tilde x_i$ and the feed-forward output "
        "$W_2 \\mathrm{ReLU}(W_1 y_n)$ are of degree $\\ge 3$ in them, so the logits are "
        "$b + A(E[x_n] + \\mathrm{pos}_n)$ up to degree $4$, and to second order the loss is",
        _eq("L_2 = \\sum_i \\pi_i \\sum_j P_{ij}\\, f\\big(A (E[i] + \\mathrm{pos}) + b,\\ j\\big), \\qquad "
            "f(u, y) = -u_y + \\log \\sum_m e^{u_m}", "ms-loss"),
        "(each position has the pair law $\\pi_i P_{ij}$; every $W$ row of the Hessian is $0$). SymPy "
        "differentiates $f$ in $u$ and the quadratic logits $u^{(i)}$ in the weights and applies the chain rule",
        _eq("\\nabla^2 L_2 = \\sum_i \\pi_i \\Big[J_i^\\top \\Big(\\sum_j P_{ij} \\nabla_u^2 f\\Big) J_i + "
            "\\sum_m \\Big(\\sum_j P_{ij} \\partial_{u_m} f\\Big) \\nabla^2 u^{(i)}_m\\Big], \\qquad "
            "J_i = \\partial u^{(i)} / \\partial \\theta", "ms-chain"),
        "The derivation keeps $\\pi$ free on the simplex "
        "($\\pi_{k-1} = 1 - \\sum_{m < k-1} \\pi_m$): at $u = \\log \\pi$ the softmax is $\\pi$, and SymPy's "
        "$\\nabla_u f(\\cdot, 0)$ and $\\nabla_u^2 f$ there are, for $k = 3$,",
        _eq(f"{_latex(MS.prediction_jet(k3, (1,) * k3).slope[0].to_Matrix())}, \\qquad "
            f"{_latex(MS.prediction_jet(k3, (1,) * k3).curvature[0].to_Matrix())}", "ms-jet"),
        "i.e. $\\pi - e_y$ and $D_\\pi - \\pi\\pi^\\top$. Where stationarity matters the result is then put at the "
        "cofactor form. Write",
        _eq("D_\\pi = \\mathrm{diag}(\\pi), \\qquad M = D_\\pi (P - \\mathbf{1} \\pi^\\top),\\ "
            "M_{ij} = \\pi_i (P_{ij} - \\pi_j), \\qquad M_s = \\tfrac12 (M + M^\\top)",
            "ms-notation"),
        "\\subsection{Stationarity and loss}",
        "On the simplex the $b$-gradient is $\\pi - \\pi P$ and the weight of $-\\log \\pi_j$ in $L(\\theta_\\pi)$ is "
        "$\\sum_i \\pi_i P_{ij}$; at the stationary law the gradient in $(E, [A], \\mathrm{pos}, b)$, tied and "
        f"untied, reduces to $0$ for $k = 2, 3$ and $d = 1, 2$ {_status(MS.gradient_identity(k3, 2))} and, with "
        "$\\log \\pi_m$ kept as atoms (no log identity used), for $k = 2$:",
        _sides(MS.loss_identity(2), "L(\\theta_\\pi)", "H(\\pi)", "ms-loss-pi"),
        f" For $k = 3$ the same {_status(MS.loss_identity(k3))}",
        "\\subsection{The Hessian}",
        "Claimed, in the order $(E, [A], b)$ with $E$ and $A$ row by row:",
        _eq("\\text{tied: } \\begin{pmatrix} -2 M_s \\otimes I_d & 0 \\\\ 0 & D_\\pi - \\pi\\pi^\\top "
            "\\end{pmatrix}, \\qquad \\text{untied: } \\begin{pmatrix} 0 & -M \\otimes I_d & 0 \\\\ "
            "-M^\\top \\otimes I_d & 0 & 0 \\\\ 0 & 0 & D_\\pi - \\pi\\pi^\\top \\end{pmatrix}", "ms-claim"),
        "so $\\partial^2 L / \\partial E_{c,\\cdot} \\partial A_{j,\\cdot} = -M_{cj} I_d$; $A$ and $b$ do not couple "
        "($\\partial \\ell / \\partial A = z = 0$ at $\\theta_\\pi$). These blocks need only $\\sum_i \\pi_i = 1$ "
        "and are proven on the simplex. For $k = 2$, $d = 1$, tied, SymPy's $(E, b)$ block and the claim "
        "($\\pi_1 = 1 - \\pi_0$):",
        _sides(MS.hessian_identity(2, 1, True), "H", "\\mathrm{claim}", "ms-hess-2"),
        f" For $k = {k3}$, $d = 1$ the entry $({untied_names[0]}, {untied_names[1]})$, tied, is "
        "$-(M_{01} + M_{10})$; the untied entries "
        f"$({untied_names[0]}, {untied_names[4]})$ and $({untied_names[1]}, {untied_names[3]})$ are $-M_{{01}}$ and "
        "$-M_{10}$, which differ ($k = 3$ tells $M$ from $M^\\top$; every 2-state chain is reversible):",
        _sides(tied, "H", "\\mathrm{claim}", "ms-hess-3", entries=[(0, 1)]),
        _sides(untied, "H", "\\mathrm{claim}", "ms-hess-3u", entries=[(0, 4), (1, 3)]),
        "Every identity of this section, for $k = 2, 3$ and $d = 1, 2$ ($d = 2$ shows the $\\otimes I_d$ "
        "structure):",
        "\\begin{itemize}\n" + "\n".join(f"\\item {_title(r.statement)}: {'proven' if r.proven else 'NOT proven'}"
                                        for r in results) + "\n\\end{itemize}",
        "The $\\mathrm{pos}$ rows vanish only at the stationary law: their $(\\mathrm{pos}, A_j)$ entries are "
        f"$(\\pi - \\pi P)_j I_d$ {_status(MS.position_identity(k3, 2))} And "
        "$M \\mathbf 1 = 0$ (rows of $P$ sum to $1$), $\\mathbf 1^\\top M = 0$ "
        f"(stationarity), $(D_\\pi - \\pi\\pi^\\top) \\mathbf 1 = 0$ {_status(MS.kernel_identity(k3))}",
        "\\subsection{Spectrum and class}",
        "$E = \\mathbf 1 v^\\top$ (and $A = \\mathbf 1 w^\\top$) and $b \\propto \\mathbf 1$ shift every logit "
        "alike: flat. On $\\mathbf 1^\\perp$, $D_\\pi - \\pi\\pi^\\top$ has $k - 1$ positive eigenvalues "
        "($v^\\top (D_\\pi - \\pi\\pi^\\top) v = \\mathrm{Var}_\\pi(v)$); tied, the $E$-block has the $k - 1$ "
        "eigenvalues of $-2M_s$ on $\\mathbf 1^\\perp$, $d$ times each; untied, $\\pm$ the singular values of $M$, "
        "$d$ times each. The points $\\{E = \\mathbf 1 v^\\top, b \\in \\log\\pi + \\mathbb{R}\\mathbf 1, "
        "\\text{other weights free}\\}$ all predict $\\pi$ and are critical with loss $H(\\pi)$; their tangent "
        "space is the kernel when $M_s$ is nondegenerate on $\\mathbf 1^\\perp$. So, tied, $\\theta_\\pi$ is a "
        "local minimum if $M_s \\prec 0$ on $\\mathbf 1^\\perp$ and a saddle if $M_s$ has a positive eigenvalue "
        "there (a singular $M_s \\preceq 0$ leaves it to higher orders); untied it is a saddle unless $M = 0$ "
        "($P = \\mathbf 1 \\pi^\\top$). This is not the sign of $P$'s "
        "eigenvalues: $M_s$ is the symmetric part of a non-normal matrix. At the package's named chains:",
        "\\begin{itemize}\n" + "\n".join(presets) + "\n\\end{itemize}",
        "\\subsection{Two states and the scalar model}",
        "For $k = 2$ the softmax is $\\sigma(u_1 - u_0)$ and $u_1 - u_0 = (A_1 - A_0)\\big((E_0 + \\mathrm{pos}) + "
        "x (E_1 - E_0)\\big) + b_1 - b_0$: the scalar model $t(xs + c) + b$ at $g = 0$ under the linear map $R$: "
        "$s = E_1 - E_0$, $t = A_1 - A_0$ (tied $t = s$), $b = b_1 - b_0$, $c = E_0 + \\mathrm{pos}$. So "
        "$\\nabla^2 L_{\\text{one-hot}} = R^\\top \\nabla^2 L_{\\text{scalar}} R$; tied, in "
        "$(E_0, E_1, \\mathrm{pos}, b_0, b_1)$, with $R$'s rows $(s, b, c)$",
        _eq(f"R = {sp.latex(MS.binary_identity(True).extra['map'])}", "ms-map"),
        _sides(MS.binary_identity(True), "H", "R^\\top H_{\\text{scalar}} R", "ms-binary"),
        f" Untied likewise {_status(MS.binary_identity(False))} On $v = (1, -1)$, spanning $\\mathbf 1^\\perp$,",
        _sides(MS.binary_sign_identity(), "-2 \\frac{v^\\top M_s v}{v^\\top v}",
               "2 \\cdot 2\\pi_0\\pi_1(p+q-1)", "ms-sign"),
        " twice the scalar model's eigenvalue (the unit vector of $\\mathbf 1^\\perp$ has $s = \\sqrt 2$), positive "
        "iff $p + q > 1$: the one-hot $\\theta_\\pi$ is a local minimum exactly where the scalar one is, and its "
        "whole nonzero spectrum is twice the scalar one.",
    ]


def _status_sides(positive: Result, negative: Result) -> str:
    """``_status`` of one statement proven on w > 0 and on w < 0."""
    verdict = "reduced to exactly $0$" if positive.proven and negative.proven else "did NOT reduce to $0$ on both"
    return f"(claim {positive.claim}; on $w > 0$ and on $w < 0$ the difference {verdict}.)"


def _canonical_section() -> list[str]:
    """The canonical model of Local to Global (claims L2G, L2G-BIAS, L2G-ENERGY): loss, b*, locus, line, energy."""
    loss_pos, loss_neg = C.loss_results()
    grad_locus, loss_locus = C.locus_results()
    grad_line, loss_line, curvature, cross = C.line_results()
    saddle_hessian, third = C.saddle_results()
    bias_zero, bias_forms, bias_line, bias_locus = C.bias_results()
    (lemma, joint, profiled), (lemma_neg, joint_neg, profiled_neg) = (C.energy_side_results(s) for s, _ in C.SIDES)
    invariant, level, energy_saddle = C.energy_point_results()
    k_w, E_s, S = C.slope(), C.SEPARATRIX, C.S
    return [
        "\\section{The canonical model of Local to Global}\\label{sec:canonical}",
        "The companion paper restricts the tied model to rank-one weights (attention off, embedding vector "
        "$e\\hat u$, positions $-\\frac{e}{2}\\hat u$, $W_1 = |w| v \\hat u^\\top$, $W_2 = w \\hat u v^\\top$, output "
        "$e\\hat u$, with $\\hat u$ a unit vector, $v \\ge 0$ entrywise and $\\|v\\| = 2$) and gets three scalars "
        "$\\theta = (e, w, b)$, $e \\ge 0$ (every ReLU input is then $\\ge 0$, which the formula needs: a $v$ with "
        "negative entries or $e < 0$ gives other logits), with",
        _eq(f"z_x = {_latex(C.logit(sp.Symbol('x'), C.kappa))}, \\qquad \\kappa(w) = {_latex(k_w)}", "l2g-logit"),
        "so $z_1 - z_0 = \\kappa e^2$; $\\kappa > 0$ iff $w > -1/\\sqrt2$. The loss is the transition loss of the "
        "reduced model,",
        _eq(_named("L", C.loss(), split=True), "l2g-loss"),
        "and equals the authors' log-sigmoid form "
        "$-\\pi_1[q \\log\\sigma(-z_1) + (1-q)\\log\\sigma(z_1)]$ "
        "$- \\pi_0[p\\log\\sigma(z_0) + (1-p)\\log\\sigma(-z_0)]$ "
        + _status_sides(loss_pos, loss_neg) + " Every statement in $w$ is proven on $w > 0$ and on $w < 0$ separately "
        "($w = \\pm v$, $v > 0$, after differentiating $|w|$ and $\\mathrm{sign}(w)$ as they stand).",
        "\\subsection{The optimal bias}",
        "$\\partial L/\\partial b = \\pi_0 \\sigma(z_0) + \\pi_1 \\sigma(z_1) - \\pi_1$ vanishes iff "
        "$u = \\exp(z_0)$ solves $q D u^2 + (q - p) u - p = 0$, $D = \\exp(\\kappa e^2)$; the positive root gives",
        _eq(f"b^*(e, w) = {_latex(_readable(C.optimal_bias()))}", "l2g-bias"),
        "and $\\partial^2 L/\\partial b^2 = \\sum_x \\pi_x \\sigma'(z_x) > 0$ makes it the unique minimiser in $b$. "
        f"At $b^*$, $\\partial L/\\partial b$ reduces to $0$ {_status(bias_zero)} With "
        f"$S = {_latex(C._radicand(C.D))}$ the root is also "
        f"$u^* = {_latex(C.bias_root_rationalised(C.D).subs(C._radicand(C.D), S))}$ "
        f"{_status(bias_forms)} (numerics use the form without cancellation). "
        f"On $e = 0$, $b^* = \\log(p/q)$ {_status(bias_line)} On the global locus below, "
        f"$b^* = \\beta + e^2/2$ {_status(bias_locus)}",
        "\\subsection{Global minima and the line $e = 0$}",
        "On the locus $e^2 \\kappa(w) = \\alpha$, $b = \\beta + e^2/2$ the logits are the kernel's, "
        f"$\\nabla_{{(e, \\kappa, b)}} L = 0$ {_status(grad_locus)} "
        f"and $L = H_{{\\mathrm{{rate}}}}$ {_status(loss_locus)} "
        "Since $\\alpha > 0$ iff $(1-p)(1-q) > pq$ iff $p + q < 1$, the locus lies in $w > -1/\\sqrt2$ when "
        "$p + q < 1$ and in $w < -1/\\sqrt2$ when $p + q > 1$. On the line $e = 0$, $b = \\log(p/q)$: "
        f"$\\nabla L = 0$ {_status(grad_line)} $L = H(\\pi)$ {_status(loss_line)} and",
        _eq(f"\\frac{{\\partial^2 L}}{{\\partial e^2}} = {_latex(curvature.expected)}, \\qquad "
            "\\frac{\\partial^2 L}{\\partial e \\partial b} = 0", "l2g-line"),
        f"{_status(curvature)} {_status(cross)} So the line is locally minimal in $e$ (with $b$ fixed or "
        "profiled) iff $(1 - p - q)(1 + 2w|w|) < 0$: for $w < -1/\\sqrt2$ when $p + q < 1$, for $w > -1/\\sqrt2$ "
        "when $p + q > 1$. At $(e, w) = (0, -1/\\sqrt2)$, $\\kappa = 0$ and the Hessian in $(e, w, b)$ is "
        f"$\\mathrm{{diag}}(0, 0, \\pi_0\\pi_1)$ {_status(saddle_hessian)} with",
        _eq(f"\\frac{{\\partial^3 L}}{{\\partial e^2 \\partial w}} = {_latex(third.expected)}", "l2g-third"),
        f"{_status(third)} The point is a degenerate saddle: no negative eigenvalue, but "
        "$L - H(\\pi) \\approx 2\\sqrt2\\,\\pi_0\\pi_1(p+q-1)(w + 1/\\sqrt2)\\, e^2$ takes both signs nearby.",
        "\\subsection{The energy}",
        _eq(f"E(e, w) = {_latex(C.energy())}", "l2g-energy"),
        "has, on each side of $w = 0$, $\\nabla E \\cdot \\nabla z_x = -2e^2$ for both logits "
        + _status_sides(lemma, lemma_neg) + " Hence along the joint gradient flow $\\dot\\theta = -\\nabla L$ "
        "(any loss of the two logits) $\\dot E = -\\sum_x \\partial_{z_x} L\\, \\nabla E \\cdot \\nabla z_x = "
        "2e^2 \\partial_b L$:",
        _eq("\\frac{dE}{dt} = -2 e^2 \\frac{db}{dt}", "l2g-joint"),
        _status_sides(joint, joint_neg) + " Along the $b$-profiled flow $(\\dot e, \\dot w) = -\\nabla \\tilde L$, "
        "$\\tilde L(e, w) = L(e, w, b^*(e, w))$, with $\\nabla \\tilde L = \\nabla_{(e,w)} L + \\partial_b L\\, "
        "\\nabla b^*$ written out at $b^*$, $dE/dt$ reduces to $0$ " + _status_sides(profiled, profiled_neg)
        + " This needs less than optimality: at $b^*$, $z_0 = \\log u^*(\\exp(\\kappa e^2))$ and "
        "$z_1 = z_0 + \\kappa e^2$, so $\\tilde L$ depends on $(e, w)$ through $\\kappa e^2 = z_1 - z_0$ only, "
        "and the lemma gives "
        "$\\nabla E \\cdot \\nabla(\\kappa e^2) = 0$: any bias $e^2/2 + \\varphi(\\kappa e^2)$ conserves $E$."
        + f" The line $w = 0$ is invariant ($\\partial L/\\partial w = 0$ there) {_status(invariant)} "
        f"$E$ has a saddle at $(0, -1/\\sqrt2)$ ($\\nabla E = 0$, $\\nabla^2 E = \\mathrm{{diag}}(2, -4)$) "
        f"{_status(energy_saddle)} at the level",
        _eq(f"E_s = {_latex(E_s)}", "l2g-separatrix"),
        f"{_status(level)} Level curves of $E$ are the profiled trajectories; $e^2 = E + w^2 - \\log|w|$ on "
        "$w < 0$ reaches $e = 0$ iff $E \\le E_s$. The recalled basins (the authors' region plots), checked "
        "numerically by \\texttt{python -m verify.theorem\\_basins}: for $p + q < 1$ the unigram line attracts "
        "$\\{w < -1/\\sqrt2, E < E_s\\}$; for $p + q > 1$ it attracts "
        "$\\{-1/\\sqrt2 < w < 0, E < E_s\\} \\cup \\{w > 0\\}$; every other start reaches the global locus.",
    ]


def _title(statement: Statement) -> str:
    """``lhs = rhs`` in math mode, then where it holds."""
    return f"${statement.lhs} = {statement.rhs}$" + (f" ({statement.where})" if statement.where else "")


def _identity_paragraph(result: Result, label: str) -> str:
    """One identity: its statement as the title, then ``_sides_shown``; identities in dozens of symbols
    point to the section that shows them."""
    head = (f"\\paragraph{{{_title(result.statement)}}} "
            f"(claim {result.claim}, {'proven' if result.proven else 'NOT proven'}.)")
    if result.claim in _SECTIONS:
        return (f"{head} Listed in Section~\\ref{{sec:{_SECTIONS[result.claim]}}}, which shows the forms of "
                "representative sizes (its matrices run to dozens of symbols).")
    return head + "\n" + _sides_shown(result, label)


def _sides_shown(result: Result, label: str) -> str:
    """The left side as derived, the right side as claimed, and their difference, which SymPy reduced to
    exactly 0 (``Result.proven``), as one numbered display."""
    statement, proven = result.statement, result.proven
    lhs, rhs = statement.sides or (result.expr, result.expected)
    shown = _shown(lhs)
    rows = [] if statement.rhs == "0" and shown == "0" else [f"{statement.lhs} &= {shown}"]
    if statement.rhs != "0":
        rows.append(f"{statement.rhs} &= {_shown(rhs)}")
    difference = statement.lhs if statement.rhs == "0" else f"{statement.lhs} - \\Big({statement.rhs}\\Big)"
    relation, verdict = ("=", "reduced") if proven else ("\\neq", "not reduced")
    rows.append(f"{difference} &{relation} 0\\quad\\text{{({verdict} by SymPy)}}")
    return _eq("\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}", label)


#: the claims of the general manifold section.
_GENERAL_CLAIMS = (M.GENERAL_CLAIM, M.DEGENERATE_CLAIM, AC.CLAIMS[2])
#: claims whose identities are shown in a section of their own, not in the list of identities.
_SECTIONS = ({M.CLAIM: "manifold"} | dict.fromkeys(_GENERAL_CLAIMS, "manifold-general")
             | dict.fromkeys(MS.CLAIMS, "multistate"))


def document(p_value: float | None = None, q_value: float | None = None) -> str:
    """The whole derivation as LaTeX source."""
    pi0, pi1 = stationary()
    body = [
        "Each statement below carries the ID of the paper's claim it supports (the registry "
        "\\texttt{paper\\_refs/claims.toml} maps IDs to the paper and to the checks); \\emph{proven} means SymPy "
        "reduced the difference of the two sides to exactly $0$.",
        "\\section{Source}",
        "A binary Markov chain $x_1, x_2, \\dots \\in \\{0, 1\\}$ with switching probabilities "
        "$p = P(x_{n+1} = 1 \\mid x_n = 0)$ and $q = P(x_{n+1} = 0 \\mid x_n = 1)$, $0 < p, q < 1$, has the "
        "kernel $P$ ($P_{ij} = P(x_{n+1} = j \\mid x_n = i)$); its eigenvalues are $1$ and "
        "$\\lambda = 1 - p - q$. The stationary law $\\pi$, solved by SymPy from $\\pi P = \\pi$, "
        "$\\pi_0 + \\pi_1 = 1$:",
        _eq(f"P = {_latex(kernel())}, \\qquad \\pi_0 = {_latex(pi0)}, \\qquad \\pi_1 = {_latex(pi1)}.", "kernel"),
        "Every quantity below is in nats. The unigram loss (the cross-entropy of predicting $\\pi_1$ whatever "
        "the past) is the entropy of $\\pi$, and the bigram loss (predicting with the kernel) is the entropy "
        "rate, with $h(t) = -t \\log t - (1 - t) \\log(1 - t)$:",
        _eq("\\begin{aligned}\n"
            f"H(\\pi) &= -\\pi_0 \\log \\pi_0 - \\pi_1 \\log \\pi_1 = {_latex(_readable(unigram_loss()))}, \\\\\n"
            f"H_{{\\mathrm{{rate}}}} &= \\pi_0 h(p) + \\pi_1 h(q) = {_shown(entropy_rate())}."
            "\n\\end{aligned}", "unigram-rate"),
        "\\section{Reduced model}",
        "The single-layer transformer of the paper (embedding $e$, positions $p_n$, attention, feed-forward "
        "$W_1, W_2$ with ReLU, output $a$ and bias $b$) restricted to five numbers $\\rho = (s, t, b, c, g)$: "
        "attention off, $e = s u$, $p_n = c u$, $W_1 = w v u^\\top$, $W_2 = (g/w) u v^\\top$, $a = t u$, with "
        "$u$ a unit vector of the embedding space, $v$ a unit vector of the hidden layer and $w > 0$. The "
        "restriction is exact where every ReLU input is positive ($c > 0$, $s + c > 0$). The logit after "
        "symbol $x$ is",
        _eq(f"z_x = {_latex(R.logit(sp.Symbol('x'), False))}", "logit"),
        "and the population loss (tied: $t = s$) is the cross-entropy of one transition "
        "$(x, x') \\sim \\pi_x P_{xx'}$,",
        _eq(_named("L", R.loss(False), split=True), "loss"),
        "\\section{Gradient and Hessian}",
        "$L = F(z_0, z_1)$ with $F$ the transition loss, so with $J = \\partial z / \\partial \\rho$ the "
        "Jacobian of the two logits, $\\nabla_\\rho L = J^\\top \\nabla_z F$ and $\\nabla^2_\\rho L = "
        "J^\\top \\nabla_z^2 F\\, J + \\sum_x \\partial_{z_x} F\\, \\nabla^2 z_x$. With "
        "$\\sigma(z) = 1/(1 + e^{-z})$, SymPy's derivative of $F$ and its closed form:",
        _sides_shown(T.logit_gradient_identity(), "dF"),
        _status(T.logit_gradient_identity()),
        "\\subsection{At $\\theta_\\pi$}",
        "The unigram point $\\theta_\\pi$: no embedding ($s = 0$; untied also $t = 0$) and the bias of the "
        "stationary law, so the model predicts $\\pi_1$ whatever it reads; $c$ and $g$ stay free:",
        _eq(_substitution(T.theta_pi(False)), "theta-pi"),
        "Both logits equal $\\log(p/q)$, so $\\sigma(z_x) = \\pi_1$ and $\\nabla_z F$ is",
        _eq(_shown(T.logit_gradient(T.theta_pi(False), tying=False)), "dF-pi"),
        "whose two entries cancel against the equal rows of $J$: $\\nabla L(\\theta_\\pi) = 0$ "
        "(identity below). The tied Hessian in the coordinates $(s, b, c, g)$ is",
        _eq(_shown(T.normal_block_pi().extra["hessian"]), "hess-pi"),
        "Its $(s, b)$ block has determinant",
        _eq(T.normal_block_pi().form, "det-pi"),
        "and $H_{bb} = \\pi_0 \\pi_1 > 0$, so by Sylvester's criterion the block is positive definite "
        "iff $(1+g)(p+q-1) > 0$; at $g = 0$ iff $p + q > 1$. The $c, g$ directions are flat. "
        "Untied, the $(s, t, b)$ block has determinant",
        _eq(T.untied_block_pi().form, "det-untied"),
        "negative whenever $p + q \\neq 1$ and $g \\neq -1$, so the untied $\\theta_\\pi$ is a saddle. "
        "The nonzero eigenvalues of the full-space Hessian at $\\theta_\\pi$ (positions zero, $d$ the "
        "embedding dimension) follow; the first (the bias direction) is simple, each other one has "
        "multiplicity $d$. Tied, then untied:",
        _eq(sp.Matrix(list(T.spectrum_pi(True))), "spec-tied"),
        _eq(sp.Matrix(list(T.spectrum_pi(False))), "spec-untied"),
        "\\subsection{At $\\theta_*$}",
        "The bigram point $\\theta_*$ makes the logits the kernel's. With "
        "$\\alpha = \\log\\frac{(1-p)(1-q)}{pq}$ and $\\beta = \\log\\frac{p}{1-p}$,",
        _eq(_substitution(T.theta_star(True)), "theta-star"),
        "(tied, real when $(1+g)\\alpha > 0$; untied $t = \\alpha/((1+g)s)$). The logits are the kernel's, "
        "$z_0 = \\log\\frac{p}{1-p}$, $z_1 = \\log\\frac{1-q}{q}$, where $\\nabla_z F$ is",
        _eq(T.logit_gradient(T.theta_star(True), tying=True), "dF-star"),
        "so $\\nabla L(\\theta_*) = 0$ and $\\nabla^2 L(\\theta_*) = J^\\top \\nabla_z^2 F\\, J$ with",
        _eq(_shown(T.gauss_newton_star().form), "gn-star"),
        "a Gram matrix with positive weights: positive semidefinite in every parametrisation.",
        *_multistate_section(),
        *_manifold_section(),
        *_general_manifold_section(),
        *_canonical_section(),
        "\\section{Identities}",
        "Every identity of the package, with its claim. Each shows its left side as derived and its right side "
        "as claimed, each printed in the shortest of a few equal forms (the expression, its canonical form, "
        "either factored or collected over its logarithms), so the two may coincide; then their difference, "
        "which SymPy reduced to exactly $0$ in the canonical form (logarithms split over irreducible factors, "
        "coefficients cancelled; a square root $\\sqrt S$ reduced modulo $S$ where said).",
    ]
    for i, result in enumerate(identities()):
        body.append(_identity_paragraph(result, f"id{i}"))
    if p_value is not None and q_value is not None:
        values = {p: sp.Float(p_value), q: sp.Float(q_value)}
        body += ["\\section{Values at the given inputs}",
                 f"At $p = {p_value}$, $q = {q_value}$:",
                 _eq(sp.Eq(sp.Symbol("H(\\pi)"), unigram_loss().subs(values).evalf(10)), "num-unigram"),
                 _eq(sp.Eq(sp.Symbol("H_{\\mathrm{rate}}"), entropy_rate().subs(values).evalf(10)), "num-rate")]
        margin = p_value + q_value - 1
        verdict = ("positive: the tied $\\theta_\\pi$ is a local minimum" if margin > 0 else
                   "negative: the tied $\\theta_\\pi$ is a saddle" if margin < 0 else "zero: degenerate")
        body.append(f"Here $p + q - 1 = {margin:.6g}$, {verdict}; the untied $\\theta_\\pi$ is a saddle "
                    "whenever $p + q \\neq 1$. Nonzero Hessian eigenvalues at $\\theta_\\pi$ (tied, untied):")
        for tying, label in ((True, "num-spec-tied"), (False, "num-spec-untied")):
            shown = [f"{_latex(_readable(ev))} = {sp.latex(ev.subs(values).evalf(10))}"
                     + (" \\ (\\times d)" if per_d else " \\ (\\times 1)")
                     for ev, per_d in T.spectrum_pi(tying).items()]
            rows = " \\\\\n".join(f"&{row}" for row in shown)
            body.append(_eq(f"\\begin{{aligned}}\n{rows}\n\\end{{aligned}}", label))
    preamble = ("\\documentclass{article}\n\\usepackage{amsmath}\n\\usepackage{amssymb}\n"
                "\\usepackage[margin=2cm]{geometry}\n"
                "\\allowdisplaybreaks\n\\title{Attention with Markov: derivations}\n\\date{}\n"
                "\\begin{document}\n\\maketitle\n")
    return preamble + "\n".join(body) + "\n\\end{document}\n"


def write_document(path: str, *, p: float | None = None, q: float | None = None) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(document(p, q))


def compile_pdf(tex: Path) -> Path:
    """Run pdflatex on ``tex`` twice (the second pass resolves the references) beside it; the PDF's path.

    Raises ``OSError`` with the log's path when pdflatex fails."""
    for _ in range(2):
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                             cwd=tex.parent, capture_output=True, timeout=300)
        if run.returncode != 0:
            raise OSError(f"pdflatex failed on {tex} (exit {run.returncode}); see {tex.with_suffix('.log')}")
    return tex.with_suffix(".pdf")


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="python -m theory.latex", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, metavar="FILE", help="the .tex file to write")
    ap.add_argument("--p", type=float, help="P(x_{n+1}=1 | x_n=0) for a section of values at these inputs "
                                            "(give with --q; default: symbolic only)")
    ap.add_argument("--q", type=float, help="P(x_{n+1}=0 | x_n=1), with --p")
    ap.add_argument("--pdf", action="store_true", help="also compile FILE with pdflatex (twice, beside FILE) "
                                                       "into the PDF; without pdflatex FILE is still written, "
                                                       "then exit 2")
    try:
        args = ap.parse_args(argv)
        if (args.p is None) != (args.q is None):
            raise InvalidInputError("give both --p and --q, or neither")
        if args.p is not None:
            check_probability("p", args.p), check_probability("q", args.q)
        check_writable(args.out)
        write_document(args.out, p=args.p, q=args.q)
    except (InvalidInputError, OSError) as err:
        return bad_input(err)
    print(f"wrote {args.out}")
    if args.pdf and shutil.which("pdflatex") is None:  # the .tex is the work; only its compilation is missing
        return bad_input(InvalidInputError(f"the PDF was not made: --pdf needs pdflatex on PATH (TeX Live or "
                                           f"MiKTeX); {args.out} is written and compiles with any LaTeX"))
    if args.pdf:
        try:
            print(f"wrote {compile_pdf(Path(args.out).resolve())}")
        except (OSError, subprocess.TimeoutExpired) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
