"""Curvature of the population loss on the unigram critical manifold M_π, proven in SymPy (claim ``MANIFOLD``).

Set-up.  The logit at position n is ℓ_n = eᵀ F_n(x̃_1, .., x̃_n) + b (tied) or ℓ_n = aᵀ F_n + b (untied), with
x̃_i = x_i e + pos_i, x_i ∈ {0, 1}, and F_n: R^{d×n} → R^d an arbitrary smooth map (everything after the
embedding) that also depends on a further weight ω (any coordinate of W_Q, W_K, W_V, W_O, W_1, W_2 or pos,
or any direction among them).  M_π is {e = 0, b = log(p/q)} (untied also a = 0), every other weight free.
Around x̃ = pos, ω = 0, through second order in (e, ω):

    F_n = z_n + ω z'_n + ½ω² z''_n + Σ_{i≤n} (K_{n,i} + ω K'_{n,i}) x_i e + Σ_{i≤j≤n} x_i x_j (eᵀ S^{(c)}_{n,i,j} e)_c,

with z_n = F_n(pos) the hidden state and K_{n,i} = ∂F_n/∂x̃_i (d × d) its Jacobians at x̃ = pos.  Every
coefficient is a SYMBOL (``Expansion``), so what is proven holds for every F_n.  The quadratic terms in e (their
x-dependence is general because x_i² = x_i) reach ℓ_n multiplied by eᵀ or aᵀ: cubic in the weights, they
cannot reach the Hessian at e = 0 (untied e = a = 0); they are kept and drop out of the derivation.

Loss.  L = (1/N) Σ_n E[f(ℓ_n, x_{n+1})], f(u, y) = log(1 + eᵘ) − y u (nats), E the stationary chain's exact
expectation: the sum over all 2^{N+1} sequences with probability π_{x_1} Π_t P(x_t, x_{t+1}).

Derivation (``derived_block``).  E is a finite sum, so ∇²L = (1/N) Σ_n E[∇²f(ℓ_n, x_{n+1})], and by the chain
rule (as in ``theory.landscape``) ∇²f(ℓ_n, y) = ∂²_u f ∇ℓ_n ∇ℓ_nᵀ + ∂_u f ∇²ℓ_n.  SymPy differentiates f, and
ℓ_n in a sparse polynomial ring (symbolic in x), evaluates at e = a = ω = 0 and b = log(p/q), and takes E
term by term with exact moments in QQ(p, q).

Closed form (``closed_form``).  With k = π0 π1, λ = 1 − p − q, z̄ = mean_n z_n, M = mean_n z_n z_nᵀ and the
lag Jacobian A = (1/N) Σ_n Σ_{i≤n} λ^{n+1−i} K_{n,i}:

    tied:    H_ee = k [M − (A + Aᵀ)],   H_eb = k z̄,   H_bb = k;
    untied:  H_ee = 0,   H_{e_c,a_j} = −k A_{jc},   H_aa = k M,   H_ab = k z̄,   H_bb = k,   H_eb = 0;

and every entry in the ω row is 0; ω being any direction, the Hessian vanishes outside the block (a symmetric
form that is 0 on every ω and pairs every ω with e, a, b to 0 is 0 there).

Why: on M_π ∂²_u f = σ'(b) = k and ∂_u f = π1 − x_{n+1}; ∇ℓ_n is deterministic; ∇²ℓ_n is Σ_i x_i (K_{n,i} +
K_{n,i}ᵀ) (tied e–e; untied e–a: Σ_i x_i K_{n,i}) plus deterministic terms that E[π1 − x_{n+1}] = 0 removes;
and E[(π1 − x_{n+1}) x_i] = −k λ^{n+1−i} (``moment_identity``; it is −Cov(x_i, x_{n+1}), the ``SRC``
covariance).  The argument is free of N and d; the symbolic proofs are for the sizes in ``SIZES``: N = 3
reaches every lag power λ, λ², λ³, and d = 2 tells K_{n,i} from K_{n,i}ᵀ.

Special cases, substituted in the closed form (N = 3, d = 2 unless noted):
* θ_π (z_n = 0, K_{n,n} = I, K_{n,i<n} = 0): the tied block is diag(2k(p+q−1) I, k), exactly the θ_π
  spectrum of ``theory.landscape`` (``LOCAL-MIN`` for p + q > 1, ``SADDLE`` for p + q < 1); the untied block
  has characteristic polynomial (μ − k)(μ² − k²(p+q−1)²)^d (``SADDLE-UNTIED``).
* the reduced model of ``theory.reduced`` (d = 1, z_n = (1+g)c, K_{n,n} = 1+g, K_{n,i<n} = 0): the closed form
  is the (s, b) block (tied) and the (s, t, b) block (untied) that ``theory.landscape`` derives at θ_π.
* W_O = W_1 = W_2 = 0 (z_n = pos_n, K_{n,i} = δ_{in} I): the Schur complement after eliminating b,
  S = H_ee − H_eb H_ebᵀ / H_bb = k [Cov_n(z_n) − (A + Aᵀ)] in general, is k [Cov_n(pos_n) + 2(p+q−1) I]
  (uniform weights 1/N, no Bessel correction).

Everything is derived once per process (``functools.cache``); ``results`` returns the ``Result``s.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache

import sympy as sp
from sympy.polys.fields import FracElement
from sympy.polys.rings import PolyElement, ring

from theory import landscape as T
from theory import reduced as R
from theory.calculus import DOMAIN, UNIGRAM_BIAS, K, Result, Statement
from theory.markov import canonical, kernel, p, q, second_eigenvalue, stationary

CLAIM = "MANIFOLD"
#: (N, d) of the exact derivations: N = 3 reaches λ³, d = 2 tells K from Kᵀ.
SIZES = ((3, 1), (2, 2))
#: (N, d) at which the special cases are substituted into the closed form.
SPECIAL_SIZE = (3, 2)
LAMBDA = second_eigenvalue()
#: k and λ as plain symbols: the closed forms are stated, and printed, in them.
K_SYMBOL, LAMBDA_SYMBOL = sp.symbols("k lambda", real=True)
#: what they stand for: k = π0 π1, λ = 1 − p − q.
MEANING = {K_SYMBOL: K, LAMBDA_SYMBOL: LAMBDA}
#: a further weight: any direction among W_Q, W_K, W_V, W_O, W_1, W_2, pos.
OMEGA = sp.Symbol("omega", real=True)
MU = sp.Symbol("mu")  # the variable of characteristic polynomials

_u, _y = sp.symbols("u y", real=True)
#: the loss of one prediction, as a function of its logit u and the next symbol y (nats).
PREDICTION_LOSS = sp.log(1 + sp.exp(_u)) - _y * _u
#: coefficients of every derived Hessian: rational functions of p, q (e^b is one where b = log(p/q)).
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
    """x_1, .., x_length: the symbols of one sequence of the chain."""
    return tuple(sp.Symbol(f"x_{{{t}}}", real=True) for t in range(1, length + 1))


def parameters(dim: int, tying: bool) -> tuple[sp.Symbol, ...]:
    """The differentiated weights in block order: (e, b, ω) tied, (e, a, b, ω) untied."""
    head = () if tying else tuple(_vector("a", dim))
    return (*_vector("e", dim), *head, R.b, OMEGA)


@dataclass(frozen=True)
class Jet:
    """z_n and K_{n,i} on M_π: all that the Hessian there depends on (claim MANIFOLD).

    ``hidden[n-1]`` = z_n (d × 1), ``jacobian[n, i]`` = K_{n,i} (d × d) for i ≤ n.  Symbols in the general case
    (``jet``), values in the special cases (``frozen_jet`` and the jets built on it).
    """

    hidden: tuple[sp.Matrix, ...]
    jacobian: dict[tuple[int, int], sp.Matrix]

    @property
    def length(self) -> int:
        return len(self.hidden)

    @property
    def dim(self) -> int:
        return self.hidden[0].rows


@dataclass(frozen=True)
class Expansion:
    """F_1..F_N around x̃ = pos, ω = 0 through second order in (e, ω), every coefficient a symbol.

    ``jet`` holds z_n and K_{n,i}.  The rest enter F_n only to show that they drop out: ``hidden_slope`` and
    ``hidden_curvature`` (z'_n, z''_n: z_n along ω), ``jacobian_slope[n, i]`` (K'_{n,i}: K_{n,i} along ω) and
    ``quadratic[n, i, j, c]`` (i ≤ j ≤ n: the symmetric S^{(c)}_{n,i,j} of the e–e term of output c).
    """

    jet: Jet
    hidden_slope: tuple[sp.Matrix, ...]
    hidden_curvature: tuple[sp.Matrix, ...]
    jacobian_slope: dict[tuple[int, int], sp.Matrix]
    quadratic: dict[tuple[int, int, int, int], sp.Matrix]

    @property
    def jet_symbols(self) -> tuple[sp.Symbol, ...]:
        """The symbols of z_n and K_{n,i}."""
        return tuple(s for m in (*self.jet.hidden, *self.jet.jacobian.values()) for s in m)

    @property
    def remainder_symbols(self) -> tuple[sp.Symbol, ...]:
        """The symbols that must drop out: ω-derivatives and the quadratic terms in e."""
        parts = (*self.hidden_slope, *self.hidden_curvature, *self.jacobian_slope.values(), *self.quadratic.values())
        return tuple(dict.fromkeys(s for m in parts for s in m))

    def output(self, n: int, x: tuple[sp.Expr, ...], e: sp.Matrix) -> sp.Matrix:
        """F_n(x e + pos; ω) through second order in (e, ω), as in the module docstring."""
        F = self.jet.hidden[n - 1] + OMEGA * self.hidden_slope[n - 1] + OMEGA**2 / 2 * self.hidden_curvature[n - 1]
        for i in range(1, n + 1):
            F += x[i - 1] * (self.jet.jacobian[n, i] + OMEGA * self.jacobian_slope[n, i]) * e
            for j in range(i, n + 1):
                F += x[i - 1] * x[j - 1] * sp.Matrix([(e.T * self.quadratic[n, i, j, c] * e)[0]
                                                      for c in range(self.jet.dim)])
        return F


def _symmetric(name: str, dim: int) -> sp.Matrix:
    """A symmetric d × d matrix of symbols (the quadratic form eᵀ S e sees only the symmetric part)."""
    return sp.Matrix(dim, dim, lambda u, v: sp.Symbol(f"{name}^{{({min(u, v) + 1},{max(u, v) + 1})}}", real=True))


def _pairs(length: int) -> list[tuple[int, int]]:
    """(n, i) for 1 ≤ i ≤ n ≤ N: the Jacobians of a causal model."""
    return [(n, i) for n in range(1, length + 1) for i in range(1, n + 1)]


@cache
def expansion(length: int, dim: int) -> Expansion:
    """The symbolic expansion for sequence length N = ``length`` and embedding dimension d = ``dim``."""
    positions, pairs = range(1, length + 1), _pairs(length)
    return Expansion(
        Jet(tuple(_indexed_vector("z", n, dim) for n in positions),
            {(n, i): _indexed_matrix("K", n, i, dim) for n, i in pairs}),
        hidden_slope=tuple(_indexed_vector("z'", n, dim) for n in positions),
        hidden_curvature=tuple(_indexed_vector("z''", n, dim) for n in positions),
        jacobian_slope={(n, i): _indexed_matrix("K'", n, i, dim) for n, i in pairs},
        quadratic={(n, i, j, c): _symmetric(f"S_{{{n},{i},{j}}}^{{{c + 1}}}", dim)
                   for n, i in pairs for j in range(i, n + 1) for c in range(dim)},
    )


def jet(length: int, dim: int) -> Jet:
    """z_n and K_{n,i} as symbols."""
    return expansion(length, dim).jet


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


def logit(model: Expansion, n: int, tying: bool, x: tuple[sp.Expr, ...]) -> sp.Expr:
    """ℓ_n = eᵀ F_n + b (tied) or aᵀ F_n + b (untied), for the sequence symbols ``x``."""
    e = _vector("e", model.jet.dim)
    head = e if tying else _vector("a", model.jet.dim)
    return (head.T * model.output(n, x, e))[0] + R.b


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
def _prediction_derivative(order: int, logit_value: sp.Expr) -> tuple[FracElement, ...]:
    """∂^order f/∂u^order at u = ``logit_value`` as its coefficients of y^0, y^1 (f is affine in y), in QQ(p, q).

    At u = log(p/q): order 1 gives (π1, −1) (∂_u f = σ(u) − y), order 2 gives (π0π1,) (σ'(u)).
    """
    derivative = canonical(sp.diff(PREDICTION_LOSS, _u, order).subs(_u, logit_value))
    return tuple(_FIELD.from_sympy(c) for c in reversed(sp.Poly(derivative, _y).all_coeffs()))


def _at_zero(poly: PolyElement, positions: tuple[int, ...]) -> PolyElement:
    """``poly`` with the generators at ``positions`` set to 0: the terms free of them."""
    return poly.ring.from_dict({m: c for m, c in poly.items() if not any(m[i] for i in positions)})


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


def _add_expectation(terms: dict[tuple[int, ...], FracElement], poly: PolyElement, scale: FracElement,
                     x_positions: range, symbol_positions: range) -> None:
    """terms += scale · E[poly] over the x generators, keyed by the monomial in the other symbols.

    A weight left in ``poly`` is an error: the point is e = a = ω = 0.
    """
    for monomial, c in poly.items():
        if any(monomial[i] for i in range(x_positions.start)):
            raise ArithmeticError(f"a Hessian entry depends on a weight: {poly.as_expr()}")
        key = tuple(monomial[i] for i in symbol_positions)
        value = scale * _FIELD.convert(c, sp.QQ) * moment(tuple(monomial[i] for i in x_positions))
        terms[key] = terms.get(key, _FIELD.zero) + value


@cache
def derived_block(length: int, dim: int, tying: bool, bias: sp.Expr = UNIGRAM_BIAS) -> sp.Matrix:
    """∇²L in ``parameters(dim, tying)`` at e = a = ω = 0, b = ``bias``, by SymPy (claim MANIFOLD).

    Per position ∂²_u f ∇ℓ_n ∇ℓ_nᵀ + ∂_u f ∇²ℓ_n (module docstring): ℓ_n is differentiated in the sparse
    polynomial ring QQ[weights, x, symbols of the expansion], ∂_u f and ∂²_u f are taken at the value ℓ_n has
    on M_π, with y = x_{n+1}, and E over x_1..x_{N+1} is exact.  The symbols of the expansion other than z_n,
    K_{n,i} are kept: they drop out, or the identity with the closed form fails.  ``bias`` must make e^b
    rational in p, q (log(p/q), log(q/p), log(2p/q), ...).  Entries in the form of ``collected``.
    """
    model = expansion(length, dim)
    weights = parameters(dim, tying)
    x = sequence_symbols(length + 1)
    symbols = (*model.jet_symbols, *model.remainder_symbols)
    poly_ring, *gens = ring((*weights, *x, *symbols), sp.QQ)
    on_manifold = tuple(i for i, w in enumerate(weights) if w != R.b)
    x_positions = range(len(weights), len(weights) + len(x))
    symbol_positions = range(x_positions.stop, len(gens))
    pairs = list(itertools.combinations_with_replacement(range(len(weights)), 2))
    terms: dict[tuple[int, int], dict] = {pair: {} for pair in pairs}
    mean = _FIELD.convert(sp.Rational(1, length))
    for n in range(1, length + 1):
        ell = poly_ring(logit(model, n, tying, x))
        value = _at_zero(ell, on_manifold).as_expr()
        if value.free_symbols - {R.b}:  # f's derivatives would then depend on x: not this derivation
            raise ArithmeticError(f"ℓ_{n} on M_π depends on more than b: {value}")
        slope = _prediction_derivative(1, value.subs(R.b, bias))
        curvature = _prediction_derivative(2, value.subs(R.b, bias))
        next_symbol = gens[x_positions[n]]  # y = x_{n+1}
        grad = [ell.diff(g) for g in gens[:len(weights)]]
        grad_on = [_at_zero(g, on_manifold) for g in grad]
        for r, c in pairs:
            second = _at_zero(grad[r].diff(gens[c]), on_manifold)
            for power, coeff in enumerate(curvature):
                _add_expectation(terms[r, c], grad_on[r] * grad_on[c] * next_symbol**power, mean * coeff,
                                 x_positions, symbol_positions)
            for power, coeff in enumerate(slope):
                _add_expectation(terms[r, c], second * next_symbol**power, mean * coeff, x_positions, symbol_positions)
    entries = {pair: _from_terms(terms[pair], symbols) for pair in pairs}
    return sp.Matrix(len(weights), len(weights), lambda r, c: entries[min(r, c), max(r, c)])


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


def lag_jacobian(model: Jet, lam: sp.Expr = LAMBDA_SYMBOL) -> sp.Matrix:
    """A = (1/N) Σ_n Σ_{i≤n} λ^{n+1−i} K_{n,i}: the Jacobians weighted by the lag correlation (claim MANIFOLD)."""
    return sum((lam ** (n + 1 - i) * jac for (n, i), jac in model.jacobian.items()), sp.zeros(model.dim)) / model.length


def closed_form(model: Jet, tying: bool, k: sp.Expr = K_SYMBOL, lam: sp.Expr = LAMBDA_SYMBOL) -> sp.Matrix:
    """The claimed Hessian on M_π in ``parameters(d, tying)`` (claim MANIFOLD); the ω row and column are 0.

    Tied [[k(M − A − Aᵀ), k z̄], [k z̄ᵀ, k]]; untied [[0, −k Aᵀ, 0], [−k A, k M, k z̄], [0, k z̄ᵀ, k]]
    (so H_{e_c,a_j} = −k A_{jc}).  In the symbols k, λ as printed; ``collected`` (or ``.subs(MEANING)``)
    gives the value, k = π0π1 and λ = 1 − p − q.
    """
    d = model.dim
    A, M, mean = lag_jacobian(model, lam), second_moment(model), hidden_mean(model)
    if tying:
        top = sp.Matrix.hstack(k * (M - A - A.T), k * mean)
    else:
        top = sp.Matrix.vstack(sp.Matrix.hstack(sp.zeros(d), -k * A.T, sp.zeros(d, 1)),
                               sp.Matrix.hstack(-k * A, k * M, k * mean))
    bottom = sp.Matrix.hstack(sp.zeros(1, top.cols - d - 1), k * mean.T, sp.Matrix([[k]]))
    return sp.diag(sp.Matrix.vstack(top, bottom), sp.Integer(0))


def without_omega(block: sp.Matrix) -> sp.Matrix:
    """The block without its last (ω) row and column: the (e, b) or (e, a, b) block."""
    return block[:-1, :-1]


def schur_complement(block: sp.Matrix, dim: int) -> sp.Matrix:
    """S = H_ee − H_eb H_ebᵀ / H_bb of a tied block ordered (e, b, ...)."""
    h_eb = block[:dim, dim]
    return block[:dim, :dim] - h_eb * h_eb.T / block[dim, dim]


def _identity(name: str, expr: sp.Expr | sp.Matrix, expected: sp.Expr | sp.Matrix, *assumptions: str,
              notes: str = "", extra: dict | None = None, statement: Statement | None = None) -> Result:
    """``calculus.identity`` for claim MANIFOLD with the ``collected`` form, for both sides.

    ``Result.proven`` reduces form − expected with ``canonical``; with both sides collected that is a
    cancellation of like terms, not a factorisation in dozens of symbols.
    """
    def normal(side):
        return side.applyfunc(collected) if isinstance(side, sp.MatrixBase) else collected(side)

    return Result(name, CLAIM, expr, normal(expr), normal(expected), (DOMAIN, *assumptions), notes,
                  {"expected": expected} | (extra or {}), statement)


@cache
def moment_identity(length: int = max(n for n, _ in SIZES)) -> Result:
    """E[(π1 − x_{n+1}) x_i] = −π0π1 λ^{n+1−i} for every i ≤ n ≤ N, by exact enumeration (claim MANIFOLD)."""
    return _identity(f"E[(pi1 - x_(n+1)) x_i] = -pi0 pi1 lambda^(n+1-i) (N={length})",
                     lag_moments(length), claimed_lag_moments(length),
                     notes="-Cov(x_i, x_(n+1)): the lag correlation that weights K_(n,i)",
                     statement=Statement(r"E[(\pi_1 - x_{n+1}) x_i]", r"-\pi_0\pi_1\lambda^{n+1-i}",
                                         f"$i \\le n \\le N = {length}$"))


def block_name(length: int, dim: int, tying: bool) -> str:
    """The name of ``block_identity(length, dim, tying)``."""
    block, kind = ("(e,b)", "tied") if tying else ("(e,a,b)", "untied")
    return f"M_pi Hessian = closed form {block} block, 0 elsewhere ({kind}, N={length}, d={dim})"


@cache
def block_identity(length: int, dim: int, tying: bool) -> Result:
    """The derived Hessian on M_π equals ``closed_form`` (claim MANIFOLD), for sequence length N and dim d.

    ``derived_block`` is already in the ``collected`` form, so it is both ``expr`` and ``form``;
    ``extra["expected"]`` is the closed form with k and λ as symbols (``expected`` is its value).
    """
    derived = derived_block(length, dim, tying)
    claimed = closed_form(jet(length, dim), tying)
    coords, kind = (r"(e, b, \omega)", "tied") if tying else (r"(e, a, b, \omega)", "untied")
    return Result(block_name(length, dim, tying), CLAIM, derived, derived, claimed.applyfunc(collected),
                  (DOMAIN, "F_n smooth; z_n, K_n,i arbitrary symbols"),
                  notes="the second-order terms and the omega-derivatives of F_n are symbols too, and drop out",
                  extra={"expected": claimed},
                  statement=Statement(f"\\nabla^2_{{{coords}}} L",
                                      r"\text{the closed form \eqref{eq:manifold-general}}",
                                      f"on $M_\\pi$, {kind}, $N = {length}$, $d = {dim}$"))


@cache
def schur_identity() -> Result:
    """S = H_ee − H_eb H_ebᵀ/H_bb of the tied closed form is k[Cov_n(z_n) − (A + Aᵀ)] (claim MANIFOLD)."""
    model = jet(*SPECIAL_SIZE)
    A = lag_jacobian(model)
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
