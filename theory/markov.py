"""The binary Markov source in SymPy: every quantity derived from the kernel, not typed in.

Symbols p, q are positive (the domain is 0 < p, q < 1; where SymPy needs 1 - p > 0 to
combine logarithms we say so and use ``expand_log(force=True)``, valid on that domain).
Claim IDs: ``SRC`` (stationary law, covariance), ``UNIGRAM``, ``BIGRAM``, ``MI``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

p, q = sp.symbols("p q", positive=True)
k = sp.Symbol("k", integer=True, nonnegative=True)


def h(t: sp.Expr) -> sp.Expr:
    """Binary entropy in nats, h(t) = -t log t - (1-t) log(1-t)."""
    return -t * sp.log(t) - (1 - t) * sp.log(1 - t)


@cache
def kernel() -> sp.Matrix:
    """P[i, j] = P(x_{n+1} = j | x_n = i)."""
    return sp.Matrix([[1 - p, p], [q, 1 - q]])


@cache
def stationary() -> tuple[sp.Expr, sp.Expr]:
    """(π0, π1) solved from π P = π and π0 + π1 = 1."""
    pi0, pi1 = sp.symbols("pi0 pi1")
    row = sp.Matrix([[pi0, pi1]])
    solution = sp.solve([*(row * kernel() - row), pi0 + pi1 - 1], [pi0, pi1], dict=True)[0]
    return sp.factor(solution[pi0]), sp.factor(solution[pi1])


@cache
def second_eigenvalue() -> sp.Expr:
    """λ: the kernel's eigenvalue other than 1.

    Rows of P sum to 1, so 1 is an eigenvalue; the two eigenvalues sum to tr P, so
    λ = tr P - 1.  The characteristic polynomial is checked to be (x - 1)(x - λ).
    """
    lam = sp.expand(kernel().trace() - 1)
    x = sp.Symbol("x")
    if sp.expand(kernel().charpoly(x).as_expr() - (x - 1) * (x - lam)) != 0:
        raise ArithmeticError("characteristic polynomial is not (x - 1)(x - λ)")
    return lam


@cache
def covariance() -> sp.Expr:
    """Cov(x_n, x_{n+k}) = π1 P^k[1, 1] - π1², with P^k from the spectral form V D^k V^{-1}.

    The columns of V are right eigenvectors for the eigenvalues 1 and λ (null spaces of P - μI).
    """
    eigenvalues = (sp.Integer(1), second_eigenvalue())
    V = sp.Matrix.hstack(*[(kernel() - mu * sp.eye(2)).nullspace(simplify=sp.cancel)[0] for mu in eigenvalues])
    power = V * sp.diag(*[mu**k for mu in eigenvalues]) * V.inv()
    pi1 = stationary()[1]
    return sp.factor(sp.cancel(pi1 * power[1, 1] - pi1**2))


@cache
def unigram_loss() -> sp.Expr:
    """H(π) = h(π1): cross-entropy of the best predictor that ignores the past."""
    return h(stationary()[1])


@cache
def entropy_rate() -> sp.Expr:
    """H(x_{n+1} | x_n) = Σ_x π_x h(P(1|x)) = π0 h(p) + π1 h(q)."""
    pi0, pi1 = stationary()
    return pi0 * h(p) + pi1 * h(q)


@cache
def mutual_information() -> sp.Expr:
    """I(x_n; x_{n+1}) = Σ_{x,x'} π_x P_{xx'} log(P_{xx'} / π_{x'}), from its definition."""
    pi = stationary()
    P = kernel()
    return sum(pi[i] * P[i, j] * sp.log(P[i, j] / pi[j]) for i in range(2) for j in range(2))


def _log_normal_form(arg: sp.Expr) -> sp.Expr:
    """log(arg) as log|c| + Σ m_i log f_i over the irreducible factors f_i of arg.

    Each factor's sign is fixed to be positive at an interior point of the domain (so p - 1
    becomes 1 - p); the logs' arguments are positive on 0 < p, q < 1, so the signs cancel.
    """
    numer, denom = sp.fraction(sp.cancel(sp.together(arg)))
    (c_num, f_num), (c_den, f_den) = sp.factor_list(numer), sp.factor_list(denom)
    coeff = c_num / c_den
    total = sp.Integer(0)
    interior = {p: sp.Rational(1, 3), q: sp.Rational(1, 5)}
    for f, m in [*f_num, *((f, -m) for f, m in f_den)]:
        if f.subs(interior).is_negative:
            f, coeff = -f, coeff * (-1) ** m
        total += m * sp.log(f)
    return sp.log(sp.Abs(coeff)) + total


def canonical(expr: sp.Expr) -> sp.Expr:
    """A normal form for the expressions of this package, fast and deterministic.

    exp of a sum is split and exp(log x) collapses; every log is rewritten over irreducible
    factors (``_log_normal_form``); the result is collected over those logs with each
    coefficient ``cancel``-ed.  Two expressions that agree on the domain have the same form
    when their logs are of rational functions of p, q (all of ours are).
    """
    expr = sp.sympify(expr)
    expr = expr.replace(lambda x: isinstance(x, sp.exp),
                        lambda x: sp.expand_power_exp(sp.exp(sp.expand(sp.cancel(x.args[0])))))
    expr = expr.replace(lambda x: isinstance(x, sp.log), lambda x: _log_normal_form(x.args[0]))
    if not expr.has(sp.log):  # a rational function: no expansion needed
        return sp.factor(sp.cancel(expr))
    expr = sp.expand(expr)
    logs = sorted(expr.atoms(sp.log), key=sp.default_sort_key)
    parts = sp.collect(expr, logs, evaluate=False)
    return sp.Add(*(sp.cancel(coeff) * term for term, coeff in parts.items()))
