"""The autocovariance c(m) = Cov(x_{t+m}, x_t) of the binary sources, derived from their Markov chains in SymPy
(claims ``SRC`` for the first-order chain, ``AUTOCOV-SECOND-ORDER`` for the paper's second-order one).

On the manifold M_π the data enter the Hessian only through c(m) (``theory.manifold``, claim
``MANIFOLD-GENERAL``), so c(m) is derived here from each source's chain, not typed in.

A source is a stationary Markov chain on states s (kernel Q, law ρ with ρQ = ρ, Σρ = 1) read through an
observable obs(s) ∈ {0, 1}:

* first order: the states are the symbols, Q = P = [[1−p, p], [q, 1−q]], obs(x) = x;
* second order (x_{n+1} ~ P(·|x_{n−1}), two interleaved first-order chains): the pair chain on
  s = (x_{n−1}, x_n), index 2 x_{n−1} + x_n, moving (a, b) → (b, c) with probability P[a, c]; obs(a, b) = b.

Then π1 = ρ·obs and, exactly for every lag m ≥ 0,

    c(m) = Σ_s ρ_s obs(s) (Q^m obs)(s) − π1²                                          (``autocovariance``).

Facts proven (λ = 1 − p − q, k = π0π1):

* the pair chain's stationary law, solved from ρQ = ρ, Σρ = 1, is π ⊗ π (``pair_law_identity``): x_{n−1} and x_n
  are independent, one from each interleaved chain;
* two pair steps are one step of each chain: Q² = P ⊗ P (``pair_square_identity``);
* c(0), .., c(6) by exact matrix powers (``lag_identity``): kλ^m (first order); k, 0, kλ, 0, kλ², 0, kλ³
  (second order);
* all lags at once (``recursion_identity``).  Each source has a step s (1 first order, 2 second order) with
  Q^s obs = λ obs + (1 − λ) π1 1 (``step_identity``, together with Q1 = 1).  For every matrix W with W1 = 1,
  ρ_obs W Q^s obs − λ ρ_obs W obs − (1 − λ) π1² = (1 − λ) π1 (ρ_obs W 1 − π1) = 0 (ρ_obs = ρ ∘ obs, ρ_obs 1 = π1);
  Q1 = 1 gives Q^m 1 = 1, so W = Q^m is such a matrix for every m, and c(m + s) = λ c(m) for all m ≥ 0.
  SymPy reduces that expression to 0 with W a matrix of free symbols whose rows sum to 1.  With c(0) = k
  (and, second order, c(1) = 0) induction gives c(m) = kλ^m (first order) and, second order,
  c(m) = kλ^{m/2} for even m and 0 for odd m (``claimed``).

Everything is derived once per process (``functools.cache``); ``results`` returns the ``Result``s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import sympy as sp

from theory.calculus import K, Result, Statement, identity
from theory.markov import kernel, second_eigenvalue, stationary

#: the claim of each source's identities.
CLAIMS = {1: "SRC", 2: "AUTOCOV-SECOND-ORDER"}
ORDERS = tuple(CLAIMS)
#: the exact lags proven by matrix powers: 0..LAGS.
LAGS = 6
LAMBDA = second_eigenvalue()


@dataclass(frozen=True)
class Source:
    """A stationary chain read through obs: ``kernel`` Q, ``law`` ρ (row), ``observable`` obs (column), and the
    ``step`` s with Q^s obs = λ obs + (1 − λ) π1 1."""

    order: int
    kernel: sp.Matrix
    law: sp.Matrix
    observable: sp.Matrix
    step: int

    @property
    def mean(self) -> sp.Expr:
        """π1 = ρ·obs = P(x_t = 1)."""
        return sp.factor((self.law * self.observable)[0])

    @property
    def claim(self) -> str:
        return CLAIMS[self.order]


def pair_states() -> list[tuple[int, int]]:
    """The pair chain's states (x_{n−1}, x_n) in index order 2 x_{n−1} + x_n."""
    return [(a, b) for a in (0, 1) for b in (0, 1)]


@cache
def pair_kernel() -> sp.Matrix:
    """Q[(a, b), (b', c)] = [b' = b] P[a, c]: x_{n+1} ~ P(·|x_{n−1}), the second-order source's pair chain."""
    P, states = kernel(), pair_states()
    return sp.Matrix(4, 4, lambda r, s: P[states[r][0], states[s][1]] if states[r][1] == states[s][0] else 0)


@cache
def pair_law() -> sp.Matrix:
    """ρ solved from ρQ = ρ and Σρ = 1 (a linear system: its only solution)."""
    rho = sp.symbols("rho_0:4")
    row = sp.Matrix([rho])
    (solution,) = sp.solve([*(row * pair_kernel() - row), sum(rho) - 1], rho, dict=True)
    return sp.Matrix([[sp.factor(solution[r]) for r in rho]])


@cache
def source(order: int) -> Source:
    """The first-order (``order`` 1) or the second-order (``order`` 2) source as a chain read through obs."""
    if order == 1:
        return Source(1, kernel(), sp.Matrix([list(stationary())]), sp.Matrix([0, 1]), step=1)
    if order == 2:
        return Source(2, pair_kernel(), pair_law(), sp.Matrix([b for _, b in pair_states()]), step=2)
    raise ValueError(f"no source of order {order}: 1 (first order) or 2 (the paper's second order)")


def autocovariance(order: int, lag: int) -> sp.Expr:
    """c(m) = Σ_s ρ_s obs(s) (Q^m obs)(s) − π1² by the exact matrix power Q^m (``lag`` m ≥ 0), factored."""
    chain = source(order)
    weighted = chain.law.multiply_elementwise(chain.observable.T)
    return sp.factor(sp.cancel((weighted * chain.kernel**lag * chain.observable)[0] - chain.mean**2))


def claimed(order: int, lag: int | sp.Expr) -> sp.Expr:
    """The claimed c(m): kλ^m (first order); kλ^{m/2} for even m, 0 for odd m (second order)."""
    if order == 1:
        return K * LAMBDA**lag
    return K * LAMBDA ** (lag // 2) if lag % 2 == 0 else sp.Integer(0)


@cache
def values(order: int, count: int) -> tuple[sp.Expr, ...]:
    """(c(1), .., c(count)) by exact matrix powers: what ``theory.manifold`` substitutes for c_m."""
    return tuple(autocovariance(order, m) for m in range(1, count + 1))


@cache
def pair_law_identity() -> Result:
    """The second-order pair chain's stationary law is π ⊗ π (claim AUTOCOV-SECOND-ORDER)."""
    pi = stationary()
    return identity("second-order pair chain: stationary law = pi (x) pi", CLAIMS[2], pair_law(),
                    sp.Matrix([[pi[a] * pi[b] for a, b in pair_states()]]),
                    notes="solved from rho Q = rho, sum rho = 1",
                    statement=Statement(r"\rho", r"\pi \otimes \pi", r"the pair chain's law, solved from "
                                        r"$\rho Q = \rho$, $\sum_s \rho_s = 1$"))


@cache
def pair_square_identity() -> Result:
    """Two pair-chain steps are one step of each interleaved chain: Q² = P ⊗ P (claim AUTOCOV-SECOND-ORDER)."""
    return identity("second-order pair chain: Q^2 = P (x) P", CLAIMS[2], pair_kernel() ** 2,
                    sp.kronecker_product(kernel(), kernel()),
                    statement=Statement("Q^2", r"P \otimes P", r"states $(x_{n-1}, x_n)$ in the order "
                                        r"$2x_{n-1} + x_n$"))


@cache
def lag_identity(order: int) -> Result:
    """(c(0), .., c(LAGS)) by exact matrix powers = ``claimed`` (claims SRC, AUTOCOV-SECOND-ORDER)."""
    chain = source(order)
    kind = "first" if order == 1 else "second"
    return identity(f"{kind}-order source: c(m) = Cov(x_(t+m), x_t) by exact matrix powers, m = 0..{LAGS}",
                    chain.claim, sp.Matrix([[autocovariance(order, m) for m in range(LAGS + 1)]]),
                    sp.Matrix([[claimed(order, m) for m in range(LAGS + 1)]]),
                    statement=Statement(f"(c(0), \\dots, c({LAGS}))",
                                        "(" + ", ".join(sp.latex(claimed(order, m).subs(K, sp.Symbol("k"))
                                                                 .subs(LAMBDA, sp.Symbol("lambda")))
                                                        for m in range(LAGS + 1)) + ")",
                                        f"the {kind}-order source, exact powers $Q^m$"))


@cache
def step_identity(order: int) -> Result:
    """Q^s obs = λ obs + (1 − λ) π1 1 and Q1 = 1, stacked (claims SRC, AUTOCOV-SECOND-ORDER)."""
    chain = source(order)
    ones = sp.ones(chain.kernel.rows, 1)
    power = chain.kernel**chain.step
    kind = "first" if order == 1 else "second"
    return identity(f"{kind}-order source: Q^{chain.step} obs = lambda obs + (1 - lambda) pi1 1 and Q 1 = 1",
                    chain.claim, sp.Matrix.vstack(power * chain.observable, chain.kernel * ones),
                    sp.Matrix.vstack(LAMBDA * chain.observable + (1 - LAMBDA) * chain.mean * ones, ones),
                    statement=Statement(f"(Q^{chain.step} \\mathrm{{obs}},\\ Q \\mathbf 1)",
                                        r"(\lambda\, \mathrm{obs} + (1 - \lambda) \pi_1 \mathbf 1,\ \mathbf 1)",
                                        f"the {kind}-order source"))


def row_stochastic(size: int) -> sp.Matrix:
    """A size × size matrix of free symbols w_{r,s} whose rows sum to 1 (the last column is 1 minus the rest)."""
    free = sp.Matrix(size, size - 1, lambda r, s: sp.Symbol(f"w_{{{r + 1},{s + 1}}}"))
    return free.row_join(sp.ones(size, 1) - free * sp.ones(size - 1, 1))


@cache
def recursion_identity(order: int) -> Result:
    """c(m + s) − λ c(m) = 0 for every m: the defining sum with Q^m replaced by any W with W1 = 1 (claims SRC,
    AUTOCOV-SECOND-ORDER).  ``extra["W"]`` is that matrix of symbols."""
    chain = source(order)
    W = row_stochastic(chain.kernel.rows)
    weighted = chain.law.multiply_elementwise(chain.observable.T)
    ahead = (weighted * W * chain.kernel**chain.step * chain.observable)[0] - chain.mean**2
    now = (weighted * W * chain.observable)[0] - chain.mean**2
    kind, step = ("first" if order == 1 else "second"), chain.step
    result = identity(f"{kind}-order source: c(m+{step}) = lambda c(m) for every m (any W with W 1 = 1 for Q^m)",
                      chain.claim, ahead - LAMBDA * now, sp.Integer(0),
                      notes="W stands for Q^m: Q 1 = 1 gives Q^m 1 = 1",
                      statement=Statement(f"c(m + {step}) - \\lambda c(m)", "0",
                                          f"every lag $m \\ge 0$, the {kind}-order source",
                                          sides=(ahead - LAMBDA * now, sp.Integer(0))))
    return replace(result, extra={"W": W})


@cache
def results() -> tuple[Result, ...]:
    """Every autocovariance identity: the first-order chain (SRC), then the second-order pair chain."""
    per_order = tuple(r for order in ORDERS for r in (lag_identity(order), step_identity(order),
                                                       recursion_identity(order)))
    return (pair_law_identity(), pair_square_identity(), *per_order)
