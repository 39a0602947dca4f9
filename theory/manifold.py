"""Curvature of the population loss on the unigram critical manifold M_π, proven in SymPy for every stationary
binary source, depth and attention mask at once (claims ``MANIFOLD``, ``MANIFOLD-GENERAL``,
``SECOND-ORDER-DEGENERATE``; SPEC §10, §12).

Set-up.  The logit at position n is ℓ_n = eᵀ F_n(x̃_1, .., x̃_n, ω) + b (tied) or aᵀ F_n + b (untied), with
x̃_i = x_i e + pos_i, x_i ∈ {0, 1}, and F_n = (F_{n,1}, .., F_{n,d}) UNDEFINED SymPy functions of the n·d
embedding coordinates and of a further weight ω (any coordinate of W_Q, W_K, W_V, W_O, W_1, W_2 or pos, or any
direction among them; ``hidden_state``).  F_n stands for everything after the embedding: any number of layers,
any attention mask, layer norm or not.  M_π is {e = 0, σ(b) = π1} (untied also a = 0), every other weight free.
On it x̃ = pos, and what the derivation leaves are the hidden states z_n = F_n(pos, 0), their Jacobians
K_{n,i} = ∂F_n/∂x̃_i (d × d, entry (j, c) = ∂F_{n,j}/∂x̃_{i,c}) and z'_n = ∂F_n/∂ω there, renamed to symbols
(``jet``); anything else left (a second derivative of F, say) would stop the derivation with an error.

Derivation (``sequence_hessian``, ``moment_block``).  Per position n SymPy differentiates the composed
f(ℓ_n(θ), x_{n+1}), f(u, y) = log(1 + eᵘ) − y u (nats), twice in the weights ``parameters`` = (e, b, ω) (untied
(e, a, b, ω)) and evaluates at e = a = ω = 0, b = log(σ/(1 − σ)), σ a symbol: the probability predicted there.
The result is a polynomial in x_1..x_{N+1}.  E is linear, so for ANY joint law of binary x_1..x_{N+1} the expected
Hessian replaces each monomial Π_{t∈S} x_t by the moment symbol E[x_S] (x_t² = x_t).  Proven
(``law_identity``): only E[x_i], E[x_{n+1}] and E[x_i x_{n+1}] (i ≤ n) enter, as

    ∇²L = (1/N) Σ_n [ σ(1−σ) g_n g_nᵀ + E[σ − x_{n+1}] Ω_n + Σ_{i≤n} E[(σ − x_{n+1}) x_i] B_{n,i} ],

g_n = ∇ℓ_n = (z_n, 1, 0) (untied (0, z_n, 1, 0)), Ω_n the ω row (z'_n against e, untied against a), B_{n,i} the
x_i-part of ∇²ℓ_n: K_{n,i} + K_{n,i}ᵀ in e–e (untied K_{n,i} in a–e).  A source fixes the moments:

* a stationary source (``stationary_block``): E[x_t] = π1, E[x_i x_j] = π1² + c_{|j−i|} with symbolic
  autocovariances c_1, c_2, ..; on M_π, σ = π1, so E[σ − x_{n+1}] = 0 and E[(σ − x_{n+1}) x_i] = −c_{n+1−i}.  It
  knows no third moment: a derivation needing one would stop;
* the first-order chain (``derived_block``): every moment by exact enumeration of the chain's sequences.

Closed form (``closed_form``).  With k = π0π1 = σ'(b) on M_π, z̄ = mean_n z_n, M = mean_n z_n z_nᵀ and the lag
Jacobian A_c = (1/N) Σ_n Σ_{i≤n} c(n+1−i) K_{n,i} (``lag_jacobian``; the lag n + 1 − i is ``lag``):

    tied:    H_ee = k M − (A_c + A_cᵀ),   H_eb = k z̄,   H_bb = k;
    untied:  H_ee = 0,   H_{e_c,a_j} = −(A_c)_{jc},   H_aa = k M,   H_ab = k z̄,   H_bb = k,   H_eb = 0;

every entry in the ω row 0: ω being any direction, the Hessian vanishes outside the block.  After eliminating b
(``schur_complement``) S = k Cov_n(z_n) − (A_c + A_cᵀ) (uniform weights 1/N, no Bessel correction).

The first-order chain has c(m) = kλ^m (λ = 1 − p − q; ``theory.autocovariance``): SPEC §10's block, claim
``MANIFOLD``, written with A = (1/N) Σ λ^{n+1−i} K_{n,i} (so A_c = kA) — derived from the chain
(``block_identity``) and as the case c(m) = kλ^m of the general form (``first_order_case_identity``).  The paper's
second-order chain has c(m) = kλ^{m/2} at even m and 0 at odd m: the Jacobians of odd lag, the symbol's own path
K_{n,n} among them, drop out of S (``odd_lag_identity``), and θ_π (z = 0, K_{n,n} = I, K_{n,i<n} = 0) has S = 0
(``second_order_theta_pi_identity``): fully degenerate.

Why the derivation is free of N and d: on M_π ∂²_u f = σ'(b) and ∂_u f = σ − x_{n+1}; ∇ℓ_n is deterministic;
∇²ℓ_n is linear in x.  The proofs run at the sizes ``SIZES``: N = 3 reaches the lags 1, 2, 3, d = 2 tells K_{n,i}
from K_{n,i}ᵀ.

Special cases of the first-order form, substituted in the closed form (N = 3, d = 2 unless noted):
* θ_π: the tied block is diag(2k(p+q−1) I, k), exactly the θ_π spectrum of ``theory.landscape`` (``LOCAL-MIN``
  for p + q > 1, ``SADDLE`` for p + q < 1); the untied block has characteristic polynomial
  (μ − k)(μ² − k²(p+q−1)²)^d (``SADDLE-UNTIED``).
* the reduced model of ``theory.reduced`` (d = 1, z_n = (1+g)c, K_{n,n} = 1+g, K_{n,i<n} = 0): the closed form
  is the (s, b) block (tied) and the (s, t, b) block (untied) that ``theory.landscape`` derives at θ_π.
* W_O = W_1 = W_2 = 0 (z_n = pos_n, K_{n,i} = δ_{in} I): S = k [Cov_n(pos_n) + 2(p+q−1) I].

Everything is derived once per process (``functools.cache``); ``results`` returns the ``Result``s of claim
MANIFOLD, ``general_results`` those of MANIFOLD-GENERAL and SECOND-ORDER-DEGENERATE.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.polys.fields import FracElement
from sympy.polys.rings import PolyElement, ring

from theory import autocovariance as AC
from theory import landscape as T
from theory import reduced as R
from theory.calculus import DOMAIN, UNIGRAM_BIAS, K, Result, Statement
from theory.markov import kernel, p, q, second_eigenvalue, stationary

CLAIM = "MANIFOLD"
GENERAL_CLAIM = "MANIFOLD-GENERAL"
DEGENERATE_CLAIM = "SECOND-ORDER-DEGENERATE"
#: (N, d) of the exact derivations: N = 3 reaches the lags 1..3, d = 2 tells K from Kᵀ.
SIZES = ((3, 1), (2, 2))
#: (N, d) at which the special cases are substituted into the closed form.
SPECIAL_SIZE = (3, 2)
LAMBDA = second_eigenvalue()
#: k and λ as plain symbols: the closed forms are stated, and printed, in them.
K_SYMBOL, LAMBDA_SYMBOL = sp.symbols("k lambda", real=True)
#: what they stand for on the first-order chain: k = π0 π1, λ = 1 − p − q.
MEANING = {K_SYMBOL: K, LAMBDA_SYMBOL: LAMBDA}
#: a further weight: any direction among W_Q, W_K, W_V, W_O, W_1, W_2, pos.
OMEGA = sp.Symbol("omega", real=True)
MU = sp.Symbol("mu")  # the variable of characteristic polynomials
#: σ(b), the probability predicted at the derivation's point b = log(σ/(1 − σ)); on M_π it is π1.
SIGMA = sp.Symbol("sigma", positive=True)
#: E[x_t] of a general stationary source; there k = σ'(b) = π1(1 − π1) = Var(x_t) on M_π.
PI1 = sp.Symbol("pi_1", positive=True)
GENERAL_MEANING = {K_SYMBOL: PI1 * (1 - PI1)}

_u, _y = sp.symbols("u y", real=True)
#: the loss of one prediction, as a function of its logit u and the next symbol y (nats).
PREDICTION_LOSS = sp.log(1 + sp.exp(_u)) - _y * _u
#: coefficients of the first-order Hessians: rational functions of p, q.
_FIELD = sp.QQ.frac_field(p, q)


def _vector(name: str, dim: int) -> sp.Matrix:
    return sp.Matrix([sp.Symbol(f"{name}_{{{c}}}", real=True) for c in range(1, dim + 1)])


def _indexed_vector(name: str, n: int, dim: int) -> sp.Matrix:
    """v_n as d symbols: v_{n} for d = 1, v_{n,c} otherwise."""
    if dim == 1:
        return sp.Matrix([sp.Symbol(f"{name}_{{{n}}}", real=True)])
    return sp.Matrix([sp.Symbol(f"{name}_{{{n},{c}}}", real=True) for c in range(1, dim + 1)])


def _indexed_matrix(name: str, n: int, i: int, dim: int) -> sp.Matrix:
    """M_{n,i} as d × d symbols: M_{n,i} for d = 1, entry (j, c) named M_{n,i}^{(j,c)} otherwise."""
    if dim == 1:
        return sp.Matrix([[sp.Symbol(f"{name}_{{{n},{i}}}", real=True)]])
    return sp.Matrix(dim, dim, lambda j, c: sp.Symbol(f"{name}_{{{n},{i}}}^{{({j + 1},{c + 1})}}", real=True))


def sequence_symbols(length: int) -> tuple[sp.Symbol, ...]:
    """x_1, .., x_length: the symbols of one sequence of the source."""
    return tuple(sp.Symbol(f"x_{{{t}}}", real=True) for t in range(1, length + 1))


def parameters(dim: int, tying: bool) -> tuple[sp.Symbol, ...]:
    """The differentiated weights in block order: (e, b, ω) tied, (e, a, b, ω) untied."""
    head = () if tying else tuple(_vector("a", dim))
    return (*_vector("e", dim), *head, R.b, OMEGA)


@dataclass(frozen=True)
class Jet:
    """z_n, K_{n,i} (and z'_n) on M_π: all that the Hessian there depends on (claims MANIFOLD, MANIFOLD-GENERAL).

    ``hidden[n-1]`` = z_n (d × 1), ``jacobian[n, i]`` = K_{n,i} (d × d) for i ≤ n, ``slope[n-1]`` = z'_n = ∂z_n/∂ω
    (None where the case fixes no ω).  Symbols in the general case (``jet``), values in the special cases
    (``frozen_jet`` and the jets built on it).
    """

    hidden: tuple[sp.Matrix, ...]
    jacobian: dict[tuple[int, int], sp.Matrix]
    slope: tuple[sp.Matrix, ...] | None = None

    @property
    def length(self) -> int:
        return len(self.hidden)

    @property
    def dim(self) -> int:
        return self.hidden[0].rows

    @property
    def symbols(self) -> tuple[sp.Symbol, ...]:
        """Every symbol of z_n, K_{n,i} and z'_n, in that order."""
        parts = (*self.hidden, *self.jacobian.values(), *(self.slope or ()))
        return tuple(dict.fromkeys(s for m in parts for entry in m
                                   for s in sorted(entry.free_symbols, key=sp.default_sort_key)))


def _pairs(length: int) -> list[tuple[int, int]]:
    """(n, i) for 1 ≤ i ≤ n ≤ N: the Jacobians of a causal model."""
    return [(n, i) for n in range(1, length + 1) for i in range(1, n + 1)]


@cache
def jet(length: int, dim: int) -> Jet:
    """z_n, K_{n,i} and z'_n as symbols, for sequence length N = ``length`` and embedding dimension d = ``dim``."""
    positions = range(1, length + 1)
    return Jet(tuple(_indexed_vector("z", n, dim) for n in positions),
               {(n, i): _indexed_matrix("K", n, i, dim) for n, i in _pairs(length)},
               tuple(_indexed_vector("z'", n, dim) for n in positions))


def frozen_jet(hidden: tuple[sp.Matrix, ...], gain: sp.Expr = sp.S.One) -> Jet:
    """z_n = ``hidden[n-1]``, K_{n,i} = δ_{in} ``gain`` I: attention and W_O off, the FF a fixed gain."""
    dim = hidden[0].rows
    return Jet(hidden, {(n, i): (gain if n == i else 0) * sp.eye(dim) for n, i in _pairs(len(hidden))})


def theta_pi_jet(length: int, dim: int) -> Jet:
    """θ_π (all W = 0, pos = 0): z_n = 0, K_{n,n} = I, K_{n,i<n} = 0."""
    return frozen_jet(tuple(sp.zeros(dim, 1) for _ in range(length)))


def position_symbols(length: int, dim: int) -> tuple[sp.Matrix, ...]:
    """pos_1, .., pos_N as d × 1 symbols."""
    return tuple(_indexed_vector("pos", n, dim) for n in range(1, length + 1))


def position_jet(length: int, dim: int) -> Jet:
    """W_O = W_1 = W_2 = 0: F_n(x̃) = x̃_n, so z_n = pos_n and K_{n,i} = δ_{in} I."""
    return frozen_jet(position_symbols(length, dim))


def reduced_jet(length: int) -> Jet:
    """The reduced model of ``theory.reduced`` (d = 1, pos_n = c, FF gain 1 + g): z_n = (1+g)c, K_{n,n} = 1+g."""
    gain = 1 + R.g
    return frozen_jet(tuple(sp.Matrix([gain * R.c]) for _ in range(length)), gain)


def hidden_state(n: int, x: tuple[sp.Expr, ...], e: sp.Matrix) -> sp.Matrix:
    """F_n(x_1 e + pos_1, .., x_n e + pos_n, ω): d undefined functions F_{n,j} of the n·d embedding coordinates
    (position by position, coordinate by coordinate) and of ω."""
    dim = e.rows
    coordinates = [x[i] * e[c] + pos[c] for i, pos in enumerate(position_symbols(n, dim)) for c in range(dim)]
    names = [f"F_{{{n}}}"] if dim == 1 else [f"F_{{{n},{j}}}" for j in range(1, dim + 1)]
    return sp.Matrix([sp.Function(name, real=True)(*coordinates, OMEGA) for name in names])


def _on_manifold(expr: sp.Expr, dim: int) -> sp.Expr:
    """``expr`` at e = a = 0, b = log(σ/(1 − σ)), ω = 0.

    The weights go by ``xreplace`` (no derivative is taken in them), ω by ``subs`` (derivatives are); ``doit``
    turns a Subs at the symbols pos into the derivative there, one object per partial derivative.
    """
    point = {w: sp.Integer(0) for w in (*_vector("e", dim), *_vector("a", dim))} | {R.b: sp.log(SIGMA / (1 - SIGMA))}
    return expr.xreplace(point).subs(OMEGA, 0).doit()


@cache
def _jet_objects(length: int, dim: int) -> dict[sp.Basic, sp.Symbol]:
    """{SymPy's F_n(pos, 0), ∂F_n/∂x̃_{i,c} and ∂F_n/∂ω there: the symbol of ``jet`` it stands for}, each object
    built the way the derivation meets it (``_on_manifold`` of a derivative of ``hidden_state``)."""
    model, x, e = jet(length, dim), sequence_symbols(length), _vector("e", dim)
    objects: dict[sp.Basic, sp.Symbol] = {}
    for n in range(1, length + 1):
        F = hidden_state(n, x, e)
        for j in range(dim):
            objects[_on_manifold(F[j], dim)] = model.hidden[n - 1][j]
            objects[_on_manifold(F[j].diff(OMEGA), dim)] = model.slope[n - 1][j]
            for c in range(dim):
                along = sp.expand(_on_manifold(F[j].diff(e[c]), dim))  # Σ_i x_i ∂F_{n,j}/∂x̃_{i,c}
                for i in range(1, n + 1):
                    objects[along.coeff(x[i - 1])] = model.jacobian[n, i][j, c]
    return objects


@cache
def sequence_hessian(length: int, dim: int, tying: bool) -> tuple[sp.Matrix, ...]:
    """Per position n, ∇²f(ℓ_n, x_{n+1}) in ``parameters(dim, tying)`` at e = a = ω = 0, b = log(σ/(1 − σ)).

    SymPy differentiates the composed f(ℓ_n(θ), x_{n+1}) with F_n undefined; z_n, K_{n,i}, z'_n become the symbols
    of ``jet``.  Any other object left (a derivative of F of second order, say) raises ``ArithmeticError``.
    """
    weights, x, e = parameters(dim, tying), sequence_symbols(length + 1), _vector("e", dim)
    head = e if tying else _vector("a", dim)
    objects = _jet_objects(length, dim)
    pairs = list(itertools.combinations_with_replacement(range(len(weights)), 2))
    out = []
    for n in range(1, length + 1):
        loss = PREDICTION_LOSS.xreplace({_u: (head.T * hidden_state(n, x, e))[0] + R.b, _y: x[n]})
        gradient = [loss.diff(w) for w in weights]
        entries = {}
        for r, c in pairs:
            entry = _on_manifold(gradient[r].diff(weights[c]), dim).xreplace(objects)
            if left := entry.atoms(AppliedUndef, sp.Derivative, sp.Subs):
                raise ArithmeticError(f"position {n}: the Hessian on M_π depends on more than z, K, z': {left}")
            entries[r, c] = entry
        out.append(sp.Matrix([[entries[min(r, c), max(r, c)] for c in range(len(weights))]
                              for r in range(len(weights))]))
    return tuple(out)


@cache
def moment_symbol(support: tuple[int, ...]) -> sp.Expr:
    """E[Π_{t ∈ support} x_t] as a symbol (1 for the empty product): a moment of any joint law."""
    if not support:
        return sp.Integer(1)
    return sp.Symbol("E[" + " ".join(f"x_{{{t}}}" for t in support) + "]", real=True)


def _supports(count: int) -> list[tuple[int, ...]]:
    """Every nonempty set of positions among 1..count, as sorted tuples."""
    return [s for size in range(1, count + 1) for s in itertools.combinations(range(1, count + 1), size)]


def _linear_expectation(poly: PolyElement, count: int) -> sp.Expr:
    """E[poly] for any law of the first ``count`` generators (binary): each monomial's x-part → its moment symbol."""
    gens, domain = poly.ring.symbols, poly.ring.domain
    return sp.Add(*(domain.to_sympy(c) * moment_symbol(tuple(t + 1 for t in range(count) if monomial[t]))
                    * sp.Mul(*(g**m for g, m in zip(gens[count:], monomial[count:])))
                    for monomial, c in poly.items()))


@cache
def moment_block(length: int, dim: int, tying: bool) -> sp.Matrix:
    """(1/N) Σ_n E[∇²f(ℓ_n, x_{n+1})] for ANY joint law of binary x_1..x_{N+1}, in moment symbols (``collected``).

    The per-sequence Hessians (``sequence_hessian``) are polynomials in x with coefficients in QQ(σ) (σ'(b) and
    σ(b) as rational functions of e^b = σ/(1 − σ)); E is linear.
    """
    x = sequence_symbols(length + 1)
    poly_ring = ring((*x, *jet(length, dim).symbols), sp.QQ.frac_field(SIGMA))[0]
    total = sum((hessian.applyfunc(lambda entry: _linear_expectation(poly_ring(entry), len(x)))
                 for hessian in sequence_hessian(length, dim, tying)), sp.zeros(len(parameters(dim, tying))))
    return (total / length).applyfunc(collected)


def entering_moments(length: int, dim: int, tying: bool) -> list[tuple[int, ...]]:
    """The supports S whose moment E[x_S] appears in ``moment_block``."""
    free = set().union(*(entry.free_symbols for entry in moment_block(length, dim, tying)))
    return [s for s in _supports(length + 1) if moment_symbol(s) in free]


def autocovariance_symbol(lag_value: int) -> sp.Symbol:
    """c_m = Cov(x_{t+m}, x_t) of a general stationary source, a symbol."""
    return sp.Symbol(f"c_{{{lag_value}}}", real=True)


def stationary_moment(support: tuple[int, ...]) -> sp.Expr:
    """E[x_S] of a stationary binary source with mean π1 and autocovariance c: π1, or π1² + c_{j−i} for S = {i, j}.

    It knows no moment of three or more symbols: a block that needed one raises ``ArithmeticError``.
    """
    if len(support) > 2:
        raise ArithmeticError(f"a moment of {len(support)} symbols entered: E[x_S], S = {support}")
    if len(support) == 1:
        return PI1
    first, last = support
    return PI1**2 + autocovariance_symbol(last - first)


def first_order_moment(support: tuple[int, ...]) -> sp.Expr:
    """E[x_S] of the stationary first-order chain, by exact enumeration (``moment``)."""
    return _FIELD.to_sympy(moment(tuple(int(t in support) for t in range(1, max(support) + 1))))


def _at_source(block: sp.Matrix, length: int, moments: Callable[[tuple[int, ...]], sp.Expr],
               prediction: sp.Expr) -> sp.Matrix:
    """``block`` (in moment symbols and σ) with σ = ``prediction`` and the moments that enter from ``moments``."""
    free = set().union(*(entry.free_symbols for entry in block))
    values = {moment_symbol(s): moments(s) for s in _supports(length + 1) if moment_symbol(s) in free}
    return block.xreplace(values | {SIGMA: prediction}).applyfunc(collected)


@cache
def derived_block(length: int, dim: int, tying: bool, bias: sp.Expr = UNIGRAM_BIAS) -> sp.Matrix:
    """∇²L in ``parameters(dim, tying)`` at e = a = ω = 0, b = ``bias`` on the first-order chain (claim MANIFOLD).

    ``moment_block`` with σ = σ(``bias``) and every moment the chain's exact one; ``bias`` must make e^b rational
    in p, q (log(p/q) on M_π, log(q/p), log(2p/q), ...).  Entries in the form of ``collected``.
    """
    prediction = sp.cancel(1 / (1 + sp.exp(-bias)))
    return _at_source(moment_block(length, dim, tying), length, first_order_moment, prediction)


@cache
def stationary_block(length: int, dim: int, tying: bool) -> sp.Matrix:
    """∇²L on M_π (σ = π1) for a stationary source with symbolic mean π1 and autocovariance c (MANIFOLD-GENERAL)."""
    return _at_source(moment_block(length, dim, tying), length, stationary_moment, PI1)


def _probability(sequence: tuple[int, ...]) -> sp.Expr:
    """π_{x_1} Π_t P(x_t, x_{t+1}): the stationary chain's probability of one binary sequence."""
    P = kernel()
    out = stationary()[sequence[0]]
    for a, b in itertools.pairwise(sequence):
        out *= P[a, b]
    return out


def expectation(expr: sp.Expr, length: int) -> sp.Expr:
    """E[expr] over the stationary chain x_1..x_length, exactly: the sum over all 2^length sequences."""
    x = sequence_symbols(length)
    return sum((_probability(seq) * expr.subs(dict(zip(x, seq))) for seq in itertools.product((0, 1), repeat=length)),
               sp.Integer(0))


@cache
def moment(exponents: tuple[int, ...]) -> FracElement:
    """E[Π_t x_t^{m_t}] over x_1..x_len(m), in QQ(p, q): the sum of the probabilities of the sequences with
    x_t = 1 wherever m_t > 0 (x_t ∈ {0, 1}, so x_t^m = x_t)."""
    sequences = itertools.product((0, 1), repeat=len(exponents))
    return sum((_FIELD.from_sympy(_probability(seq)) for seq in sequences
                if all(x or not m for x, m in zip(seq, exponents))), _FIELD.zero)


@cache
def lag_moments(length: int) -> sp.Matrix:
    """[E[(π1 − x_{n+1}) x_i]]_{n,i} for i ≤ n ≤ N (0 above the diagonal), by ``expectation``."""
    pi1 = stationary()[1]
    x = sequence_symbols(length + 1)
    return sp.Matrix(length, length, lambda r, c: expectation((pi1 - x[r + 1]) * x[c], length + 1) if c <= r else 0)


def claimed_lag_moments(length: int) -> sp.Matrix:
    """[−k λ^{n+1−i}]_{n,i} for i ≤ n ≤ N (0 above the diagonal), in the symbols k, λ."""
    return sp.Matrix(length, length, lambda r, c: -K_SYMBOL * LAMBDA_SYMBOL ** (r + 1 - c) if c <= r else 0)


@cache
def _factored(c: FracElement) -> sp.Expr:
    """c ∈ QQ(p, q) as a product of powers of irreducible polynomials (factored in the ring: milliseconds)."""
    (top, tops), (bottom, bottoms) = c.numer.factor_list(), c.denom.factor_list()
    return sp.Mul(_FIELD.dom.to_sympy(top / bottom), *(f.as_expr() ** m for f, m in tops),
                  *(f.as_expr() ** -m for f, m in bottoms))


def _from_terms(terms: dict[tuple[int, ...], FracElement], gens: tuple[sp.Symbol, ...]) -> sp.Expr:
    """Σ_m c_m m from {exponents of m: c_m ∈ QQ(p, q)}, each c_m factored: the canonical form of our entries."""
    return sp.Add(*(_factored(c) * sp.Mul(*(g**m for g, m in zip(gens, monomial)))
                    for monomial, c in terms.items() if c))


def collected(expr: sp.Expr) -> sp.Expr:
    """A polynomial in symbols other than p, q, with coefficients rational in p, q, as Σ (factored c_m) m.

    k and λ (``K_SYMBOL``, ``LAMBDA_SYMBOL``) are replaced by what they stand for (``MEANING``).
    ``theory.markov.canonical`` factors whole expressions: right in p, q, seconds in dozens of symbols; this is
    the same normal form taken coefficient by coefficient in SymPy's sparse polynomial rings (milliseconds).
    """
    expr = sp.sympify(expr)
    gens = tuple(sorted(expr.free_symbols - {p, q}, key=sp.default_sort_key))
    if not gens:
        return _factored(_FIELD.from_sympy(expr))
    domain = _FIELD if expr.has(p, q) else sp.QQ  # rational coefficients convert faster over QQ
    named = {i: _FIELD.from_sympy(MEANING[g]) for i, g in enumerate(gens) if g in MEANING}
    terms: dict[tuple[int, ...], FracElement] = {}
    for monomial, c in ring(gens, domain)[0](expr).items():
        value = _FIELD.convert(c, domain)
        for i, meaning in named.items():
            value *= meaning ** monomial[i]
        key = tuple(0 if i in named else m for i, m in enumerate(monomial))
        terms[key] = terms.get(key, _FIELD.zero) + value
    return _from_terms(terms, gens)


def hidden_mean(model: Jet) -> sp.Matrix:
    """z̄ = (1/N) Σ_n z_n."""
    return sum(model.hidden, sp.zeros(model.dim, 1)) / model.length


def second_moment(model: Jet) -> sp.Matrix:
    """M = (1/N) Σ_n z_n z_nᵀ."""
    return sum((z * z.T for z in model.hidden), sp.zeros(model.dim)) / model.length


def covariance(vectors: tuple[sp.Matrix, ...], mean: sp.Matrix | None = None) -> sp.Matrix:
    """Cov_n(v_n) = (1/N) Σ_n (v_n − v̄)(v_n − v̄)ᵀ: uniform weights, no Bessel correction.

    ``mean`` stands for v̄ when given (a symbol, for printing); by default it is (1/N) Σ_n v_n.
    """
    if mean is None:
        mean = sum(vectors, sp.zeros(*vectors[0].shape)) / len(vectors)
    return sum(((v - mean) * (v - mean).T for v in vectors), sp.zeros(mean.rows)) / len(vectors)


def lag(n: int, i: int) -> int:
    """The lag between the predicted x_{n+1} and x_i: n + 1 − i."""
    return n + 1 - i


def first_order_covariance(n: int, i: int) -> sp.Expr:
    """Cov(x_{n+1}, x_i) = kλ^{n+1−i} on the first-order chain (k, λ as symbols)."""
    return K_SYMBOL * LAMBDA_SYMBOL ** lag(n, i)


def stationary_covariance(n: int, i: int) -> sp.Expr:
    """Cov(x_{n+1}, x_i) = c_{n+1−i} of a stationary source."""
    return autocovariance_symbol(lag(n, i))


def law_covariance(n: int, i: int) -> sp.Expr:
    """−E[(σ − x_{n+1}) x_i] = E[x_i x_{n+1}] − σ E[x_i] for any law: the covariance at σ = E[x_{n+1}]."""
    return moment_symbol((i, n + 1)) - SIGMA * moment_symbol((i,))


def law_drift(n: int) -> sp.Expr:
    """E[σ − x_{n+1}] for any law: 0 on M_π of a stationary source."""
    return SIGMA - moment_symbol((n + 1,))


def lag_jacobian(model: Jet, weight: Callable[[int, int], sp.Expr] = first_order_covariance) -> sp.Matrix:
    """A = (1/N) Σ_n Σ_{i≤n} w(n, i) K_{n,i}: the Jacobians weighted by Cov(x_{n+1}, x_i) (claims MANIFOLD,
    MANIFOLD-GENERAL); ``weight`` w(n, i) = c(n+1−i) for a stationary source."""
    return sum((weight(n, i) * jac for (n, i), jac in model.jacobian.items()), sp.zeros(model.dim)) / model.length


def closed_form(model: Jet, tying: bool, k: sp.Expr = K_SYMBOL,
                weight: Callable[[int, int], sp.Expr] = first_order_covariance,
                drift: Callable[[int], sp.Expr] | None = None) -> sp.Matrix:
    """The claimed Hessian in ``parameters(d, tying)`` (claims MANIFOLD, MANIFOLD-GENERAL).

    With A = ``lag_jacobian(model, weight)``: tied [[k M − A − Aᵀ, k z̄], [k z̄ᵀ, k]]; untied
    [[0, −Aᵀ, 0], [−A, k M, k z̄], [0, k z̄ᵀ, k]] (so H_{e_c,a_j} = −A_{jc}).  The ω row is 0, or with ``drift``
    (for any law: E[σ − x_{n+1}]) (1/N) Σ_n drift(n) z'_n against e (untied against a).  The default is the
    first-order chain in the symbols k, λ as printed; ``collected`` gives the value, k = π0π1 and λ = 1 − p − q.
    """
    d = model.dim
    A, M, mean = lag_jacobian(model, weight), second_moment(model), hidden_mean(model)
    if tying:
        top = sp.Matrix.hstack(k * M - A - A.T, k * mean)
    else:
        top = sp.Matrix.vstack(sp.Matrix.hstack(sp.zeros(d), -A.T, sp.zeros(d, 1)),
                               sp.Matrix.hstack(-A, k * M, k * mean))
    block = sp.Matrix.vstack(top, sp.Matrix.hstack(sp.zeros(1, top.cols - d - 1), k * mean.T, sp.Matrix([[k]])))
    omega = sp.zeros(block.rows, 1)
    if drift is not None:
        head = 0 if tying else d
        omega[head:head + d, 0] = sum((drift(n) * z for n, z in enumerate(model.slope, 1)),
                                      sp.zeros(d, 1)) / model.length
    return sp.Matrix.vstack(sp.Matrix.hstack(block, omega), sp.Matrix.hstack(omega.T, sp.zeros(1, 1)))


def without_omega(block: sp.Matrix) -> sp.Matrix:
    """The block without its last (ω) row and column: the (e, b) or (e, a, b) block."""
    return block[:-1, :-1]


def schur_complement(block: sp.Matrix, dim: int) -> sp.Matrix:
    """S = H_ee − H_eb H_ebᵀ / H_bb of a tied block ordered (e, b, ...)."""
    h_eb = block[:dim, dim]
    return block[:dim, :dim] - h_eb * h_eb.T / block[dim, dim]


def general_collected(expr: sp.Expr) -> sp.Expr:
    """``collected`` for a general stationary source: k is π1(1 − π1) there (``GENERAL_MEANING``)."""
    return collected(sp.sympify(expr).xreplace(GENERAL_MEANING))


def _identity(name: str, expr: sp.Expr | sp.Matrix, expected: sp.Expr | sp.Matrix, *assumptions: str,
              notes: str = "", extra: dict | None = None, statement: Statement | None = None, claim: str = CLAIM,
              normal: Callable[[sp.Expr], sp.Expr] = collected) -> Result:
    """``calculus.identity`` for ``claim`` with the ``normal`` form (``collected`` or ``general_collected``),
    for both sides.

    ``Result.proven`` reduces form − expected with ``canonical``; with both sides collected that is a
    cancellation of like terms, not a factorisation in dozens of symbols.
    """
    def normalised(side):
        return side.applyfunc(normal) if isinstance(side, sp.MatrixBase) else normal(side)

    return Result(name, claim, expr, normalised(expr), normalised(expected), (DOMAIN, *assumptions), notes,
                  {"expected": expected} | (extra or {}), statement)


@cache
def moment_identity(length: int = max(n for n, _ in SIZES)) -> Result:
    """E[(π1 − x_{n+1}) x_i] = −π0π1 λ^{n+1−i} for every i ≤ n ≤ N, by exact enumeration (claim MANIFOLD)."""
    return _identity(f"E[(pi1 - x_(n+1)) x_i] = -pi0 pi1 lambda^(n+1-i) (N={length})",
                     lag_moments(length), claimed_lag_moments(length),
                     notes="-Cov(x_i, x_(n+1)): the lag correlation that weights K_(n,i)",
                     statement=Statement(r"E[(\pi_1 - x_{n+1}) x_i]", r"-\pi_0\pi_1\lambda^{n+1-i}",
                                         f"$i \\le n \\le N = {length}$"))


def _kind(tying: bool) -> tuple[str, str, str]:
    """The block as names print it, the word for the head, and the coordinates as statements print them."""
    return ("(e,b)", "tied", r"(e, b, \omega)") if tying else ("(e,a,b)", "untied", r"(e, a, b, \omega)")


def block_name(length: int, dim: int, tying: bool) -> str:
    """The name of ``block_identity(length, dim, tying)``."""
    block, kind, _ = _kind(tying)
    return f"M_pi Hessian = closed form {block} block, 0 elsewhere ({kind}, N={length}, d={dim})"


@cache
def block_identity(length: int, dim: int, tying: bool) -> Result:
    """The derived Hessian on M_π equals ``closed_form`` (claim MANIFOLD), for sequence length N and dim d.

    ``derived_block`` is already in the ``collected`` form, so it is both ``expr`` and ``form``;
    ``extra["expected"]`` is the closed form with k and λ as symbols (``expected`` is its value).
    """
    derived = derived_block(length, dim, tying)
    claimed = closed_form(jet(length, dim), tying)
    _, kind, coords = _kind(tying)
    return Result(block_name(length, dim, tying), CLAIM, derived, derived, claimed.applyfunc(collected),
                  (DOMAIN, "F_n undefined functions; z_n, K_n,i, z'_n arbitrary symbols"),
                  notes="the omega-derivatives z'_n of F_n enter the per-sequence Hessian and drop out",
                  extra={"expected": claimed},
                  statement=Statement(f"\\nabla^2_{{{coords}}} L",
                                      r"\text{the closed form \eqref{eq:manifold-general}}",
                                      f"on $M_\\pi$, {kind}, $N = {length}$, $d = {dim}$"))


@cache
def schur_identity() -> Result:
    """S = H_ee − H_eb H_ebᵀ/H_bb of the tied closed form is k[Cov_n(z_n) − (A + Aᵀ)] (claim MANIFOLD)."""
    model = jet(*SPECIAL_SIZE)
    A = lag_jacobian(model, lambda n, i: LAMBDA_SYMBOL ** lag(n, i))
    schur = schur_complement(closed_form(model, True), model.dim)
    return _identity(f"M_pi Schur complement = pi0 pi1 [Cov(z) - (A + A^T)] (N={model.length}, d={model.dim})",
                     schur, K_SYMBOL * (covariance(model.hidden) - A - A.T),
                     statement=Statement("S", r"\pi_0\pi_1\big[\mathrm{Cov}_n(z_n) - (A + A^\top)\big]",
                                         f"$N = {model.length}$, $d = {model.dim}$"))


@cache
def position_schur_identity() -> Result:
    """W_O = W_1 = W_2 = 0: S = π0π1 [Cov_n(pos_n) + 2(p+q−1) I] (claim MANIFOLD).

    A local minimum of the tied model iff λ_min(Cov_n(pos_n)) > 2(1 − p − q): spread-out positions make
    M_π points local minima even for p + q < 1.
    """
    length, dim = SPECIAL_SIZE
    schur = schur_complement(closed_form(position_jet(length, dim), True), dim)
    expected = K_SYMBOL * (covariance(position_symbols(length, dim)) + 2 * (p + q - 1) * sp.eye(dim))
    return _identity(f"M_pi Schur complement with W_O = W_1 = W_2 = 0 = pi0 pi1 [Cov(pos) + 2(p+q-1) I] "
                     f"(N={length}, d={dim})", schur, expected,
                     statement=Statement("S", r"\pi_0\pi_1\big[\mathrm{Cov}_n(\mathrm{pos}_n) + 2(p+q-1) I\big]",
                                         f"$W_O = W_1 = W_2 = 0$, $N = {length}$, $d = {dim}$"))


@cache
def theta_pi_identity() -> Result:
    """At θ_π the tied closed form is diag(2π0π1(p+q−1) I, π0π1): the θ_π spectrum of ``theory.landscape``.

    Claims MANIFOLD and LOCAL-MIN (p + q > 1) / SADDLE (p + q < 1): the expected side is built from
    ``landscape.spectrum_closed_form`` (eigenvalue, multiplicity), the b eigenvalue being the simple one.
    """
    length, dim = SPECIAL_SIZE
    block = without_omega(closed_form(theta_pi_jet(length, dim), True))
    spectrum = T.spectrum_closed_form(True, dim)
    (simple,) = [ev for ev, mult in spectrum if mult == 1]
    (repeated,) = [ev for ev, mult in spectrum if mult == dim]
    return _identity(f"M_pi closed form at theta_pi = diag(2 pi0 pi1 (p+q-1) I, pi0 pi1) (LOCAL-MIN, SADDLE; d={dim})",
                     block, sp.diag(repeated * sp.eye(dim), simple),
                     statement=Statement(r"H_{(e,b)}(\theta_\pi)", r"\mathrm{diag}\big(2\pi_0\pi_1(p+q-1) I,\ "
                                         r"\pi_0\pi_1\big)", f"the closed form, tied, $d = {dim}$"))


@cache
def untied_theta_pi_identity() -> Result:
    """At untied θ_π the closed form's characteristic polynomial is Π (μ − ev)^mult over the θ_π spectrum.

    Claims MANIFOLD and SADDLE-UNTIED: eigenvalues π0π1 (once) and ±π0π1(p+q−1) (d times each), from
    ``landscape.spectrum_closed_form``.  ``extra["block"]`` is the block itself.
    """
    length, dim = SPECIAL_SIZE
    block = without_omega(closed_form(theta_pi_jet(length, dim), False))
    expected = sp.Mul(*((MU - ev) ** mult for ev, mult in T.spectrum_closed_form(False, dim)))
    return _identity(f"M_pi closed form at untied theta_pi: eigenvalues pi0 pi1, +-pi0 pi1 (p+q-1) "
                     f"(SADDLE-UNTIED; d={dim})", block.charpoly(MU).as_expr(), expected,
                     notes="characteristic polynomial in mu", extra={"block": block},
                     statement=Statement(r"\det(\mu I - H_{(e,a,b)}(\theta_\pi))",
                                         r"(\mu - \pi_0\pi_1)\prod_\pm (\mu \mp \pi_0\pi_1(p+q-1))^{d}",
                                         f"the closed form, untied, $d = {dim}$"))


@cache
def reduced_identity(tying: bool) -> Result:
    """On the reduced model (d = 1) the closed form is the θ_π block of ``theory.landscape`` (claim MANIFOLD).

    Tied: the (s, b) block whose determinant is the LOCAL-MIN identity; untied: the (s, t, b) block of
    SADDLE-UNTIED.  Both for every c, g: the manifold formula contains the reduced model's θ_π analysis.
    """
    block = without_omega(closed_form(reduced_jet(SPECIAL_SIZE[0]), tying))
    reference = T.normal_block_pi() if tying else T.untied_block_pi()
    name = ("M_pi closed form on the reduced model = its (s,b) block at theta_pi (LOCAL-MIN)" if tying else
            "M_pi closed form on the reduced model = its (s,t,b) block at untied theta_pi (SADDLE-UNTIED)")
    coords = "(s, b)" if tying else "(s, t, b)"
    return _identity(name, block, reference.extra["block"], "reduced model exact: c > 0",
                     statement=Statement(r"H_{\text{closed form \eqref{eq:manifold-general}}}",
                                         f"H_{{{coords}}}(\\theta_\\pi)",
                                         f"the reduced model, {'tied' if tying else 'untied'}, every $c, g$"))


@cache
def results() -> tuple[Result, ...]:
    """Every identity of claim MANIFOLD (and the θ_π special cases of LOCAL-MIN, SADDLE, SADDLE-UNTIED)."""
    blocks = tuple(block_identity(n, d, tying) for tying in (True, False) for n, d in SIZES)
    return (moment_identity(), *blocks, schur_identity(), position_schur_identity(), theta_pi_identity(),
            untied_theta_pi_identity(), reduced_identity(True), reduced_identity(False))


@cache
def law_identity(length: int, dim: int, tying: bool) -> Result:
    """For any joint law of x_1..x_{N+1} the Hessian at e = a = ω = 0, σ(b) = σ is ``closed_form`` with
    k = σ(1 − σ), w(n, i) = E[x_i x_{n+1}] − σE[x_i] and drift E[σ − x_{n+1}] (claim MANIFOLD-GENERAL).

    So only E[x_i], E[x_{n+1}] and E[x_i x_{n+1}] (i ≤ n) enter: the closed side holds no other moment.
    """
    _, kind, coords = _kind(tying)
    claimed = closed_form(jet(length, dim), tying, SIGMA * (1 - SIGMA), law_covariance, law_drift)
    return _identity(f"Hessian at e = 0 for any law of x_1..x_(N+1): only E[x_i], E[x_(n+1)], E[x_i x_(n+1)] "
                     f"enter ({kind}, N={length}, d={dim})", moment_block(length, dim, tying), claimed,
                     "x_t in {0, 1}, any joint law", "F_n undefined functions", claim=GENERAL_CLAIM,
                     statement=Statement(f"\\nabla^2_{{{coords}}} L",
                                         r"\text{the moment form \eqref{eq:general-moment-form}}",
                                         f"any law of $x_1, \\dots, x_{{N+1}}$, {kind}, $N = {length}$, $d = {dim}$"))


def general_block_name(length: int, dim: int, tying: bool) -> str:
    """The name of ``general_block_identity(length, dim, tying)``."""
    block, kind, _ = _kind(tying)
    return (f"M_pi Hessian, stationary source with autocovariance c_m = closed form {block} block, 0 elsewhere "
            f"({kind}, N={length}, d={dim})")


@cache
def general_block_identity(length: int, dim: int, tying: bool) -> Result:
    """On M_π of a stationary source with symbolic π1 and c_m, the Hessian is ``closed_form`` with
    w(n, i) = c_{n+1−i} and k = π1(1 − π1) (claim MANIFOLD-GENERAL)."""
    _, kind, coords = _kind(tying)
    claimed = closed_form(jet(length, dim), tying, weight=stationary_covariance)
    return _identity(general_block_name(length, dim, tying), stationary_block(length, dim, tying), claimed,
                     "stationary source: E[x_t] = pi_1, Cov(x_(t+m), x_t) = c_m", "F_n undefined functions",
                     claim=GENERAL_CLAIM, normal=general_collected,
                     statement=Statement(f"\\nabla^2_{{{coords}}} L",
                                         r"\text{the closed form \eqref{eq:general-closed-form}}",
                                         f"on $M_\\pi$, any stationary source, {kind}, $N = {length}$, $d = {dim}$"))


@cache
def general_schur_identity() -> Result:
    """S of the general tied closed form is k Cov_n(z_n) − (A_c + A_cᵀ) (claim MANIFOLD-GENERAL)."""
    model = jet(*SPECIAL_SIZE)
    A = lag_jacobian(model, stationary_covariance)
    schur = schur_complement(closed_form(model, True, weight=stationary_covariance), model.dim)
    return _identity(f"M_pi Schur complement, stationary source = k Cov(z) - (A_c + A_c^T) "
                     f"(N={model.length}, d={model.dim})", schur, K_SYMBOL * covariance(model.hidden) - A - A.T,
                     claim=GENERAL_CLAIM, normal=general_collected,
                     statement=Statement("S", r"k\,\mathrm{Cov}_n(z_n) - (A_c + A_c^\top)",
                                         f"any stationary source, $N = {model.length}$, $d = {model.dim}$"))


def _at_autocovariance(block: sp.Matrix, order: int) -> sp.Matrix:
    """``block`` with each c_m the autocovariance of the source of ``order``, derived from its chain."""
    count = max(lag(n, 1) for n in range(1, SPECIAL_SIZE[0] + 1))
    return block.xreplace({autocovariance_symbol(m): c for m, c in enumerate(AC.values(order, count), 1)})


@cache
def first_order_case_identity(tying: bool) -> Result:
    """The general closed form at the first-order chain's c(m) (matrix powers) is SPEC §10's block (claim
    MANIFOLD-GENERAL): the first-order theory is the case c(m) = kλ^m."""
    block, kind, _ = _kind(tying)
    model = jet(*SPECIAL_SIZE)
    general = _at_autocovariance(closed_form(model, tying, weight=stationary_covariance), 1)
    return _identity(f"general closed form at the first-order c(m) = SPEC 10 {block} block ({kind}, "
                     f"N={model.length}, d={model.dim})", general, closed_form(model, tying), claim=GENERAL_CLAIM,
                     statement=Statement(r"H\big|_{c_m = c^{(1)}(m)}", r"H^{(\S 10)}",
                                         f"$c^{{(1)}}(m) = \\mathrm{{Cov}}(x_{{t+m}}, x_t)$ of the first-order "
                                         f"chain, {kind}, $N = {model.length}$, $d = {model.dim}$"))


def second_order_schur(model: Jet) -> sp.Matrix:
    """S of the tied general closed form at the second-order source's c(m) (matrix powers of its pair chain)."""
    return _at_autocovariance(schur_complement(closed_form(model, True, weight=stationary_covariance), model.dim), 2)


@cache
def odd_lag_identity() -> Result:
    """On the second-order source S = k Cov_n(z_n) − (A + Aᵀ), A = (1/N) Σ over EVEN lags m = n+1−i of
    kλ^{m/2} K_{n,i}: the odd lags, the own position K_{n,n} among them, drop out (SECOND-ORDER-DEGENERATE)."""
    model = jet(*SPECIAL_SIZE)
    A = lag_jacobian(model, lambda n, i: K_SYMBOL * LAMBDA_SYMBOL ** (lag(n, i) // 2) if lag(n, i) % 2 == 0 else 0)
    return _identity(f"second-order source: M_pi Schur complement has only even lags: k Cov(z) - (A_even + "
                     f"A_even^T) (N={model.length}, d={model.dim})", second_order_schur(model),
                     K_SYMBOL * covariance(model.hidden) - A - A.T, claim=DEGENERATE_CLAIM,
                     statement=Statement("S", r"k\,\mathrm{Cov}_n(z_n) - (A_{\mathrm{even}} + "
                                         r"A_{\mathrm{even}}^\top)",
                                         f"the second-order source, $N = {model.length}$, $d = {model.dim}$"))


@cache
def second_order_theta_pi_identity() -> Result:
    """At θ_π the second-order source gives S = 0: fully degenerate, c(1) = 0 (SECOND-ORDER-DEGENERATE)."""
    length, dim = SPECIAL_SIZE
    return _identity(f"second-order source: M_pi Schur complement at theta_pi = 0 (N={length}, d={dim})",
                     second_order_schur(theta_pi_jet(length, dim)), sp.zeros(dim), claim=DEGENERATE_CLAIM,
                     statement=Statement(r"S(\theta_\pi)", "0", f"the second-order source, $d = {dim}$"))


@cache
def general_results() -> tuple[Result, ...]:
    """Every identity of claims MANIFOLD-GENERAL and SECOND-ORDER-DEGENERATE."""
    sizes = [(n, d, tying) for tying in (True, False) for n, d in SIZES]
    return (*(law_identity(*size) for size in sizes), *(general_block_identity(*size) for size in sizes),
            general_schur_identity(), first_order_case_identity(True), first_order_case_identity(False),
            odd_lag_identity(), second_order_theta_pi_identity())
