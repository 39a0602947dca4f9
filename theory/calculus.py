"""What every module of ``theory`` builds its derivations from: the ``Result`` of a derivation, and the chain
rule through the reduced model's two logits.

A ``Result`` holds an expression, its canonical (reduced) form, the expected canonical form when it is an
identity, the assumptions used and the claim ID it supports.  An identity is *proven* when
``canonical(expr - expected)`` is exactly 0.

The binary model predicts x_{n+1} from two logits z = (z_0, z_1), one per current state, so its loss is
L(ρ) = F(z(ρ)) with F the transition loss (``theory.reduced.transition_loss``) and z(ρ) polynomial in the
parameters ρ.  ``chain_rule`` differentiates F once, symbolically in z, and evaluates its transcendental part
at the two logit values only, which keeps every canonical form small.

Logs are combined with ``expand_log(force=True)``, valid on the domain 0 < p, q < 1 which is listed in each
result's assumptions.  This module imports no other derivation module: ``theory.landscape``,
``theory.canonical``, ``theory.manifold`` and ``theory.multistate`` import it, and ``theory.registry`` gathers
their results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import sympy as sp

from theory import reduced as R
from theory.markov import canonical, p, q, stationary

DOMAIN = "0 < p < 1, 0 < q < 1"
pi0, pi1 = stationary()
K = sp.factor(pi0 * pi1)  # π0 π1, the curvature unit
alpha = sp.log(1 - p) + sp.log(1 - q) - sp.log(p) - sp.log(q)  # logit P(1|1) - logit P(1|0)
beta = sp.log(p) - sp.log(1 - p)  # logit P(1|0)
UNIGRAM_BIAS = sp.log(p) - sp.log(q)  # logit π1
Z = sp.symbols("z0 z1", real=True)  # the two logits, z_x = logit(x)


@dataclass(frozen=True)
class Statement:
    """An identity as the LaTeX document states it: ``lhs = rhs`` (math mode) and where it holds (text mode,
    math in $…$).  ``sides``: the two expressions to print when ``Result.expr`` is not the left side itself
    (an identity proven as one difference)."""

    lhs: str
    rhs: str
    where: str = ""
    sides: tuple[sp.Basic, sp.Basic] | None = None


@dataclass(frozen=True)
class Result:
    """One derived statement: ``expr`` reduces to ``form``; an identity holds if form == expected."""

    name: str
    claim: str
    expr: sp.Expr | sp.Matrix
    form: sp.Expr | sp.Matrix
    expected: sp.Expr | sp.Matrix | None = None
    assumptions: tuple[str, ...] = (DOMAIN,)
    notes: str = ""
    extra: dict = field(default_factory=dict)
    statement: Statement | None = None

    @property
    def proven(self) -> bool | None:
        """True if form - expected is exactly 0; None for results that are not identities."""
        if self.expected is None:
            return None
        diff = self.form - self.expected
        if isinstance(diff, sp.MatrixBase):
            return all(canonical(entry) == 0 for entry in diff)
        return canonical(diff) == 0


def identity(name: str, claim: str, expr, expected, *assumptions: str, notes: str = "",
             statement: Statement | None = None) -> Result:
    """The identity ``expr = expected`` of ``claim``: ``expr`` reduced (entrywise for a matrix) by ``canonical``,
    on ``DOMAIN`` and ``assumptions``."""
    form = expr.applyfunc(canonical) if isinstance(expr, sp.MatrixBase) else canonical(expr)
    return Result(name, claim, expr, form, expected, (DOMAIN, *assumptions), notes, statement=statement)


@cache
def logit_derivatives() -> tuple[sp.Matrix, sp.Matrix]:
    """∇_z F and ∇²_z F of the transition loss F(z_0, z_1), derived once.

    ∂F/∂z_x = π_x (σ(z_x) - P(1|x)) and ∂²F/∂z_x² = π_x σ(z_x)(1 - σ(z_x)); F is separable.
    """
    F = R.transition_loss(Z)
    return sp.Matrix([sp.diff(F, z) for z in Z]), sp.hessian(F, Z)


def at_logits(logits: tuple[sp.Expr, sp.Expr], point: dict) -> dict[sp.Symbol, sp.Expr]:
    """The substitution z_x → logit x at ``point``, each value canonical."""
    return {z: canonical(zx.subs(point)) for z, zx in zip(Z, logits)}


def chain_rule(logits: tuple[sp.Expr, sp.Expr], coords: tuple[sp.Symbol, ...],
               point: dict, order: int) -> sp.Matrix:
    """∇L (order 1) or ∇²L (order 2) at ``point``, through the two logits z(ρ).

    L(ρ) = F(z(ρ)), so ∇L = Jᵀ ∇F(z) and ∇²L = Jᵀ ∇²F(z) J + Σ_x ∂F/∂z_x ∇²z_x, with J the
    Jacobian of the (polynomial) logits.  The transcendental part is evaluated at the two
    logit values only, which keeps every canonical form small.
    """
    dF, d2F = logit_derivatives()
    at_z = at_logits(logits, point)
    dF = dF.subs(at_z).applyfunc(canonical)
    J = sp.Matrix([[sp.diff(zx, v) for v in coords] for zx in logits]).subs(point)
    if order == 1:
        return (J.T * dF).applyfunc(canonical)
    curvature = J.T * d2F.subs(at_z).applyfunc(canonical) * J
    residual = sum((dF[x] * sp.hessian(zx, coords).subs(point) for x, zx in enumerate(logits)),
                   sp.zeros(len(coords)))
    return (curvature + residual).applyfunc(canonical)
