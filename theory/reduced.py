"""The reduced single-layer model: an exact low-dimensional restriction (claim ``REDUCED``).

The map φ (``numerics.stationary_points.reduced_point``) sends ρ = (s, t, b, c, g) to the full
parameters: attention off, e = s u, pos_n = c u, W_1 = w v uᵀ, W_2 = (g/w) u vᵀ, a = t u
(tied: t = s).  Wherever every ReLU input w(x s + c)/√r is positive the ReLU acts as the
identity and the logit depends on the current symbol only:

    logit(x) = t (1 + g)(x s + c) + b,

so the population loss is an expectation over one transition (x, x') ~ π_x P_{xx'}:

    L(ρ) = Σ_{x,x'} π_x P_{xx'} ℓ(logit(x), x'),   ℓ(z, 1) = log(1 + e^{-z}),  ℓ(z, 0) = log(1 + e^{z}).

The companion paper's three-parameter model (claim ``L2G``) uses the same ``transition_loss``; it lives
in ``theory.canonical``.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from theory.markov import kernel, p, q, stationary

s, t, b, c, g = sp.symbols("s t b c g", real=True)

TIED = (s, b, c, g)
UNTIED = (s, t, b, c, g)

#: Where φ is exact (every ReLU pre-activation positive, for x = 0 and x = 1; w > 0 as well).
EXACT_REGION = sp.And(c > 0, s + c > 0)


def parameters(tying: bool) -> tuple[sp.Symbol, ...]:
    """The reduced coordinates ρ, in order."""
    return TIED if tying else UNTIED


def in_exact_region(values: dict[str, float]) -> bool:
    """Is the numeric point {"s": .., "c": ..} inside the region where φ is exact?"""
    return bool(EXACT_REGION.subs({s: values["s"], c: values["c"]}))


def logit(x: int, tying: bool) -> sp.Expr:
    """logit(x) = t(1+g)(x s + c) + b, with t = s under weight tying."""
    head = s if tying else t
    return head * (1 + g) * (x * s + c) + b


def transition_loss(logits: tuple[sp.Expr, sp.Expr]) -> sp.Expr:
    """Σ_{x,x'} π_x P_{xx'} ℓ(logit_x, x') for the logits (logit_0, logit_1), in nats."""
    pi, P = stationary(), kernel()
    return sum(
        pi[x] * (P[x, 1] * sp.log(1 + sp.exp(-z)) + P[x, 0] * sp.log(1 + sp.exp(z)))
        for x, z in enumerate(logits)
    )


@cache
def loss(tying: bool) -> sp.Expr:
    """L(ρ) of the reduced model."""
    return transition_loss((logit(0, tying), logit(1, tying)))


@cache
def numeric_loss(tying: bool):
    """L(ρ) as a plain function f(p, q, *ρ) -> float (``lambdify``, built once)."""
    return sp.lambdify((p, q, *parameters(tying)), loss(tying), modules="math", cse=True)
