"""The k-state one-hot model at θ_π, proven in SymPy (claims ``MULTI-STATE-PI``, ``MULTI-STATE-LOCAL-MIN``,
``MULTI-STATE-SADDLE-UNTIED``), and its closed-form spectrum in NumPy.

Source.  P is k × k, P[i, j] = P(x_{n+1} = j | x_n = i).  Symbolically (``kernel``) every off-diagonal entry is a
positive symbol and the diagonal is 1 minus the rest of its row, so the rows sum to 1 by construction; for k = 2
it is ``theory.markov.kernel()``, [[1-p, p], [q, 1-q]], so that the binary results can be quoted.  The
stationary law is the normalised vector of diagonal cofactors of I − P (``stationary``; the Markov chain tree
theorem: adj(I − P) = 1 wᵀ with wᵀ(I − P) = 0, since I − P has rank k − 1).  It is a rational function of the
symbols, positive for positive off-diagonal entries, computed once, no ``solve``: πP = π and Σπ = 1 are
identities proven below (``stationary_identity``).

Two fields.  The derivation runs with π free on the simplex (``simplex_field``: QQ(P's symbols, π_0..π_{k−2}),
π_{k−1} = 1 − Σ the others).  At u = b = log π the softmax normaliser is Σπ = 1, so every derivative of f is a
polynomial in π and the sums take no gcd (with the cofactor form inside, each product costs a gcd of large
polynomials: seconds at k = 3).  Where stationarity matters the result is put at the stationary law by
``at_pi`` (π_m = w_m/W, one reduction in ``field`` = QQ(P's symbols)): the gradient (its b-part is π − πP),
L(θ_π) (the weight of −log π_j is Σ_i π_i P_ij), the pos rows ((π − πP)_j) and 1ᵀM.  The (E, [A], b) block of
the Hessian needs Σπ = 1 only: it is proven for every π on the simplex, the stationary one included.

Model (SPEC §11).  One-hot embedding E (k × d), row E[c] the embedding of symbol c; x̃_n = E[x_n] + pos_n; the
binary model's attention and feed-forward block gives z_n; logits A z_n + b with A (k × d), row A[j] the output
weight of symbol j, b ∈ R^k, softmax over the k symbols; tied A = E.  θ_π: E = A = 0, every W = 0, pos = 0,
b = log π.  The loss is L = (1/N) Σ_n E[f(logits_n, x_{n+1})] with f(u, y) = −u_y + log Σ_m e^{u_m} (nats).

Why E, A, pos and b are all there is at θ_π.  Count the weights other than b (all 0 at θ_π): x̃_n = E[x_n] +
pos_n is of degree 1 in them; the attention output W_O Σ_i att_{n,i} W_V x̃_i is of degree ≥ 3 (att is smooth
and bounded); the feed-forward output W_2 ReLU(W_1 y_n) is bounded by |W_2||W_1||y_n|, degree ≥ 3 as well, and
its first derivatives vanish at θ_π whatever ReLU'(0) is.  So logits_n = b + A(E[x_n] + pos_n) + A R_n with
A R_n of degree ≥ 4: the loss agrees with the bigram-level loss below to second order, and every Hessian entry
in a W direction is 0.  By stationarity each position n has the same pair law π_i P_ij, so

    L_2(E, A, pos, b) = Σ_i π_i Σ_j P_ij f(A (E[i] + pos) + b, j)

(one pos standing for any pos_n, whose blocks are 1/N times the ones here) has the Hessian of L at θ_π in
(E, A, pos_n, b).  SymPy differentiates f in the logits u and the (polynomial) logits in the weights, and
applies the chain rule (``derived``), as ``theory.landscape`` does:
∇²L_2 = Σ_i π_i [J_iᵀ (Σ_j P_ij ∇²_u f) J_i + Σ_m (Σ_j P_ij ∂_{u_m} f) ∇² u^{(i)}_m].  At u = b = log π every
e^{u_m} is π_m: the derivatives of f are rational there.  log π_m stays an atom (``log_pi``): no log identity
is used beyond log(c π_m) = log c + log π_m for a rational c > 0, so no sign question arises (SPEC §5).

Results, with D_π = diag(π), M = D_π (P − 1πᵀ) (M_ij = π_i (P_ij − π_j)), M_s = (M + Mᵀ)/2, parameters in the
order (E, [A], pos, b), E and A flattened row by row (index c·d + coordinate, so X ⊗ I_d acts on them):

* ∇L(θ_π) = 0 and L(θ_π) = H(π) = −Σ π_j log π_j (``MULTI-STATE-PI``);
* tied:   (E, b) block diag(−2 M_s ⊗ I_d, D_π − ππᵀ)                           (``MULTI-STATE-LOCAL-MIN``);
* untied: (E, A, b) block [[0, −M ⊗ I_d], [−Mᵀ ⊗ I_d, 0]] ⊕ (D_π − ππᵀ)         (``MULTI-STATE-SADDLE-UNTIED``),
  i.e. ∂²L/∂E_{c,·}∂A_{j,·} = −M_cj I_d: the embedding row c pairs with the output row j through π_c(π_j − P_cj).
  A and b do not couple at θ_π: ∂ logit/∂A = z = E[x] + pos = 0 there, and ∂²logit/∂A∂b = 0;
* the pos rows are 0 (tied and untied): the (pos, A_j) entry is (π − πP)_j I_d.
* M 1 = 0 (rows of P sum to 1) and 1ᵀ M = 0 (πP = π), and (D_π − ππᵀ) 1 = 0 (``kernel_identity``): E = 1vᵀ
  (untied also A = 1wᵀ) and b ∝ 1 only shift every logit by the same amount, exactly flat.  So the b-block
  has k − 1 positive eigenvalues (vᵀ(D_π − ππᵀ)v = Var_π(v) > 0 on 1^⊥); tied, the E-block has the k − 1
  eigenvalues of −2M_s on 1^⊥, each d times; untied, ± the singular values of M, each d times.

Classification (tied).  The points {E = 1vᵀ, b ∈ log π + R1, every other weight arbitrary} all predict π at every
position (logits = 1 vᵀz_n + b), are critical with loss H(π), and their tangent space at θ_π is the Hessian's
kernel when M_s is nondegenerate on 1^⊥.  So, as for the binary ``LOCAL-MIN`` (Morse–Bott), θ_π is a local
minimum iff M_s is negative definite on 1^⊥ and a saddle iff M_s has a positive eigenvalue there (the loss
decreases along E = u wᵀ, u that eigenvector); a zero eigenvalue is degenerate (undecided at second order).
The class is not read off P's eigenvalues: M_s is the symmetric part of M, whose eigenvalues it does not share
when the chain is not reversible (``numerics.markov.PRESETS['rotating3']``: P's other eigenvalues −0.125 ± 0.383i,
yet M_s has eigenvalues −0.067 and +0.033 on 1^⊥: a saddle).  Untied, a nonzero E–A
block next to zero diagonal blocks makes θ_π a saddle unless M = 0, i.e. P = 1πᵀ (i.i.d.).

k = 2 and the binary scalar model.  Softmax over two logits is σ(u_1 − u_0), and (u_1 − u_0)(x) =
(A_1 − A_0)·((E_0 + pos) + x (E_1 − E_0)) + b_1 − b_0 is the scalar model's t (x s + c) + b at g = 0 under the
linear map s = E_1 − E_0, t = A_1 − A_0, c = E_0 + pos, b = b_1 − b_0 (tied: t = s).  So L_onehot = L_scalar ∘ R
exactly and ∇²L_onehot(θ_π) = Rᵀ ∇²L_scalar(θ_π) R (``binary_identity``, d = 1), and M = π0π1(1−p−q)[[1, −1],
[−1, 1]]: on v = (1, −1)/√2, −2 vᵀM_s v = 4π0π1(p+q−1), twice the scalar eigenvalue 2π0π1(p+q−1) (the unit
v has s = √2); positive, a local minimum, iff p + q > 1 (``binary_sign_identity``).  Likewise the whole one-hot
spectrum is twice the scalar one.

Proofs are for k ∈ {2, 3} and d ∈ {1, 2} (``SIZES``): k = 3 is the first size with non-reversible chains (at the
stationary law every 2-state chain is reversible, M = Mᵀ, and the orientation of the E–A block could not be
told apart there), d = 2 shows the ⊗ I_d structure.  Both sides of every identity are in one field's normal form
(numerator and denominator expanded, reduced); an identity is proven when their difference is exactly 0.

Numerics (closed form, NumPy): ``coupling_matrix`` (M), ``normal_matrix`` (M_s on 1^⊥ in an orthonormal basis),
``closed_form_spectrum`` (the nonzero Hessian eigenvalues at θ_π), ``predicted_class``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import sympy as sp
from sympy.polys.domains import FractionField, PolynomialRing
from sympy.polys.fields import FracElement
from sympy.polys.matrices import DomainMatrix
from sympy.polys.rings import PolyElement

from numerics.markov import FiniteChain
from theory import landscape as T
from theory import markov as B
from theory import reduced as R
from theory.calculus import Result, Statement

PI_CLAIM, LOCAL_MIN_CLAIM, UNTIED_CLAIM = "MULTI-STATE-PI", "MULTI-STATE-LOCAL-MIN", "MULTI-STATE-SADDLE-UNTIED"
CLAIMS = (PI_CLAIM, LOCAL_MIN_CLAIM, UNTIED_CLAIM)
#: (k, d) of the symbolic proofs: k = 3 has non-reversible chains (M ≠ Mᵀ at the stationary law), d = 2 shows ⊗ I_d.
SIZES = ((2, 1), (2, 2), (3, 1), (3, 2))
DOMAIN = "off-diagonal P_ij > 0, rows of P sum to 1 (so pi > 0)"
_TYING = {True: "tied", False: "untied"}


# --- the source -----------------------------------------------------------------------------------------------

@cache
def kernel(k: int) -> sp.Matrix:
    """P (k × k): off-diagonal entries are positive symbols P_{ij}, the diagonal 1 minus the rest of the row.

    k = 2 is ``theory.markov.kernel()`` ([[1-p, p], [q, 1-q]]), so binary results can be quoted.
    """
    if k == 2:
        return B.kernel()
    entries = [[sp.Symbol(f"P_{{{i}{j}}}", positive=True) if i != j else None for j in range(k)] for i in range(k)]
    for i, row in enumerate(entries):
        row[i] = 1 - sum(x for x in row if x is not None)
    return sp.Matrix(entries)


def transition_symbols(k: int) -> tuple[sp.Symbol, ...]:
    """The free symbols of ``kernel(k)``: (p, q) for k = 2, the off-diagonal P_{ij} row by row otherwise."""
    if k == 2:
        return (B.p, B.q)
    return tuple(kernel(k)[i, j] for i in range(k) for j in range(k) if i != j)


def pi_symbols(k: int) -> tuple[sp.Symbol, ...]:
    """π_0, .., π_{k−1} as positive symbols (the law on the simplex; ``simplex_field``)."""
    return tuple(sp.Symbol(f"pi_{m}", positive=True) for m in range(k))


def log_pi(k: int) -> tuple[sp.Expr, ...]:
    """log π_m as atoms: no log identity is applied to them."""
    return tuple(sp.log(x) for x in pi_symbols(k))


@cache
def field(k: int) -> FractionField:
    """QQ(transition symbols): π is the cofactor form (``stationary``) here."""
    return sp.QQ.frac_field(*transition_symbols(k))


@cache
def simplex_field(k: int) -> FractionField:
    """QQ(transition symbols, π_0, .., π_{k−2}) with π_{k−1} = 1 − Σ_{m<k−1} π_m: π free on the simplex."""
    return sp.QQ.frac_field(*transition_symbols(k), *pi_symbols(k)[:-1])


def _matrix(rows: list[list], domain: FractionField) -> DomainMatrix:
    """A DomainMatrix over ``domain`` from rows of its elements or of SymPy expressions."""
    return DomainMatrix([[x if isinstance(x, FracElement) else domain.from_sympy(x) for x in row] for row in rows],
                        (len(rows), len(rows[0]) if rows else 0), domain)


def _simplex_matrix(rows: list[list[sp.Expr]], k: int) -> DomainMatrix:
    """SymPy expressions in the transition symbols and π_m over ``simplex_field(k)`` (π_{k−1} eliminated)."""
    *free, last = pi_symbols(k)
    return _matrix([[sp.sympify(x).subs(last, 1 - sp.Add(*free)) for x in row] for row in rows], simplex_field(k))


def _domain(k: int, stationary: bool) -> FractionField:
    return field(k) if stationary else simplex_field(k)


@cache
def cofactors(k: int) -> tuple[PolyElement, ...]:
    """w_i: the i-th diagonal cofactor of I − P, a polynomial in the transition symbols (positive coefficients)."""
    gap = _matrix((sp.eye(k) - kernel(k)).tolist(), field(k))
    keep = [[r for r in range(k) if r != i] for i in range(k)]
    return tuple(gap.extract(rows, rows).det().numer for rows in keep)


@cache
def stationary(k: int) -> tuple[FracElement, ...]:
    """π_i = w_i / Σ w (Markov chain tree theorem), in ``field(k)``."""
    total = sum(cofactors(k), field(k).field.ring.zero)
    return tuple(field(k).field.new(w, total) for w in cofactors(k))


def _at_pi_poly(poly: PolyElement, k: int) -> tuple[PolyElement, int]:
    """poly(P, π = w/W) as (W^D poly(P, w/W), D), D its degree in π: a polynomial, no division."""
    ring, w = field(k).field.ring, cofactors(k)
    total = sum(w, ring.zero)
    n = len(transition_symbols(k))
    degree = max((sum(m[n:]) for m in poly), default=0)
    out = ring.zero
    for monomial, c in poly.items():
        term = ring({monomial[:n]: c}) * total ** (degree - sum(monomial[n:]))
        for wm, power in zip(w, monomial[n:]):  # π_{k−1} is no generator: zip stops at π_{k−2}
            term *= wm**power
        out += term
    return out, degree


def at_pi(x: FracElement, k: int) -> FracElement:
    """An element of ``simplex_field(k)`` at the stationary law, in ``field(k)`` (one reduction)."""
    (top, up), (bottom, down) = _at_pi_poly(x.numer, k), _at_pi_poly(x.denom, k)
    total = sum(cofactors(k), field(k).field.ring.zero)
    return field(k).field.new(top * total**down, bottom * total**up)


def at_pi_matrix(X: DomainMatrix, k: int) -> DomainMatrix:
    """``at_pi`` entry by entry (zeros skipped), dense over ``field(k)``."""
    dod = {r: {c: at_pi(v, k) for c, v in row.items() if v} for r, row in X.to_dod().items()}
    return DomainMatrix.from_dod(dod, X.shape, field(k)).to_dense()


@cache
def law(k: int, stationary_law: bool) -> DomainMatrix:
    """π as a row: the cofactor form over ``field(k)``, or the simplex symbols over ``simplex_field(k)``."""
    if stationary_law:
        return _matrix([list(stationary(k))], field(k))
    return _simplex_matrix([list(pi_symbols(k))], k)


def transition(k: int, stationary_law: bool) -> DomainMatrix:
    """P over the domain of ``law(k, stationary_law)``."""
    return _matrix(kernel(k).tolist(), _domain(k, stationary_law))


def softmax_curvature_of(pi: DomainMatrix) -> DomainMatrix:
    """D_π − ππᵀ for the row π: ∇²_u of log Σ e^{u_m} at u = log π when Σπ = 1 (the b-block)."""
    return DomainMatrix.diag(pi.to_list()[0], pi.domain) - pi.transpose() * pi


def coupling_of(pi: DomainMatrix, P: DomainMatrix) -> DomainMatrix:
    """M = D_π (P − 1πᵀ), M_ij = π_i (P_ij − π_j), for the row π and the matrix P (any, for mutation tests)."""
    ones = DomainMatrix.ones((P.shape[0], 1), pi.domain)
    return DomainMatrix.diag(pi.to_list()[0], pi.domain) * (P - ones * pi)


@cache
def softmax_curvature(k: int) -> DomainMatrix:
    """D_π − ππᵀ on the simplex (``at_pi_matrix`` puts it at the stationary law)."""
    return softmax_curvature_of(law(k, False))


@cache
def coupling(k: int) -> DomainMatrix:
    """M = D_π (P − 1πᵀ) on the simplex (``at_pi_matrix`` puts it at the stationary law)."""
    return coupling_of(law(k, False), transition(k, False))


def symmetric_part(X: DomainMatrix) -> DomainMatrix:
    """(X + Xᵀ)/2: M_s for X = M."""
    return (X + X.transpose()) * X.domain.convert(sp.Rational(1, 2))


# --- the model at second order --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """E (k × d), A (k × d; E when tied), pos (d) and b (k) as symbols; ``flat`` in the order (E, [A], pos, b)."""

    E: sp.Matrix
    A: sp.Matrix
    pos: sp.Matrix
    b: sp.Matrix
    tying: bool

    @property
    def flat(self) -> tuple[sp.Symbol, ...]:
        head = () if self.tying else tuple(self.A)
        return (*self.E, *head, *self.pos, *self.b)

    @property
    def position_indices(self) -> list[int]:
        """Where pos sits in ``flat``."""
        start = len(self.E) * (1 if self.tying else 2)
        return list(range(start, start + len(self.pos)))

    @property
    def other_indices(self) -> list[int]:
        """Where E, [A] and b sit in ``flat``."""
        return [r for r in range(len(self.flat)) if r not in self.position_indices]

    def logits(self, state: int) -> sp.Matrix:
        """A (E[state] + pos) + b: the logits after symbol ``state`` at second order (module docstring)."""
        return self.A * (self.E[state, :].T + self.pos) + self.b


@cache
def weights(k: int, d: int, tying: bool) -> Weights:
    """The symbols of the bigram-level model; E and A flatten row by row (E[c] is symbol c's embedding)."""
    def table(name: str) -> sp.Matrix:
        return sp.Matrix(k, d, lambda c, j: sp.Symbol(f"{name}_{{{c},{j + 1}}}", real=True))

    E = table("E")
    pos = sp.Matrix([sp.Symbol(f"pos_{{{j + 1}}}", real=True) for j in range(d)])
    bias = sp.Matrix([sp.Symbol(f"b_{{{j}}}", real=True) for j in range(k)])
    return Weights(E, E if tying else table("A"), pos, bias, tying)


def logit_symbols(k: int) -> tuple[sp.Symbol, ...]:
    return tuple(sp.Symbol(f"u_{m}", real=True) for m in range(k))


@cache
def prediction_loss(k: int) -> tuple[sp.Expr, ...]:
    """f(u, y) = −u_y + log Σ_m e^{u_m} for y = 0..k−1: cross-entropy of softmax(u) at the next symbol y (nats)."""
    u = logit_symbols(k)
    lse = sp.log(sp.Add(*(sp.exp(x) for x in u)))
    return tuple(lse - u[y] for y in range(k))


@dataclass(frozen=True)
class PredictionJet:
    """f(·, y) at u = b for each next symbol y: ``value`` {log atom: coefficient}, ``slope`` (k × 1) and
    ``curvature`` (k × k), all over ``simplex_field(k)``."""

    value: tuple[dict[sp.Expr, FracElement], ...]
    slope: tuple[DomainMatrix, ...]
    curvature: tuple[DomainMatrix, ...]


@cache
def prediction_jet(k: int, scale: tuple[int, ...]) -> PredictionJet:
    """SymPy's derivatives of f in u at u_m = b_m = log(scale_m π_m) = log scale_m + log π_m.

    There e^{u_m} = scale_m π_m: the derivatives are rational in π.  In the value, log π_m and log scale_m stay
    atoms; the log-sum-exp is log Σ_m scale_m π_m, which is log 1 = 0 at scale 1 (Σπ = 1) and otherwise stays
    as the log of its normal form.
    """
    u, F = logit_symbols(k), simplex_field(k)
    at_bias = {x: sp.log(c) + log for x, c, log in zip(u, scale, log_pi(k))}
    values, slopes, curvatures = [], [], []
    for f in prediction_loss(k):
        atoms: dict[sp.Expr, FracElement] = {}
        for term, c in sp.expand(f.subs(at_bias)).as_coefficients_dict().items():
            if isinstance(term, sp.log) and term not in log_pi(k) and not term.args[0].is_Rational:
                argument = _simplex_matrix([[term.args[0]]], k)[0, 0].element
                if argument == F.one:
                    continue
                term = sp.log(argument.as_expr())
            atoms[term] = atoms.get(term, F.zero) + F.convert(c, sp.QQ)
        values.append(atoms)
        slopes.append(_simplex_matrix([[sp.diff(f, x).subs(at_bias)] for x in u], k))
        curvatures.append(_simplex_matrix([[sp.diff(f, x, y).subs(at_bias) for y in u] for x in u], k))
    return PredictionJet(tuple(values), tuple(slopes), tuple(curvatures))


@dataclass(frozen=True)
class Derivation:
    """L, ∇L and ∇²L at b = log(scale·π), E = A = pos = 0, in ``weights(k, d, tying).flat`` order, over
    ``simplex_field(k)``.  ``loss``: {log atom: coefficient}; ``gradient`` (D × 1), ``hessian`` (D × D)."""

    loss: dict[sp.Expr, FracElement]
    gradient: DomainMatrix
    hessian: DomainMatrix


@cache
def derived(k: int, d: int, tying: bool, scale: tuple[int, ...] | None = None) -> Derivation:
    """The chain rule of the module docstring, by SymPy, exactly, with π on the simplex (claims MULTI-STATE-*).

    For each current symbol i: J_i = ∂u^{(i)}/∂θ and ∇²u^{(i)}_m at the point (``_taylor``) and Σ_j π_i P_ij
    of f's value, slope and curvature at u = b (``prediction_jet``).  ``scale`` (default all 1) moves b off
    log π: b_m = log(scale_m π_m).
    """
    model = weights(k, d, tying)
    theta = model.flat
    jet = prediction_jet(k, scale or (1,) * k)
    D = _summing_domain(k, (*jet.slope, *jet.curvature))
    slopes, curvatures = [x.convert_to(D) for x in jet.slope], [x.convert_to(D) for x in jet.curvature]
    values = [{atom: D.convert(c, simplex_field(k)) for atom, c in value.items()} for value in jet.value]
    P, pi = transition(k, False).convert_to(D), law(k, False).convert_to(D)
    size = len(theta)
    hessian = DomainMatrix.zeros((size, size), D).to_sparse()
    gradient = DomainMatrix.zeros((size, 1), D)
    loss: dict[sp.Expr, object] = {}
    for i in range(k):
        taylor = [_taylor(logit, theta, tuple(model.b), D) for logit in model.logits(i)]
        J = DomainMatrix.vstack(*(slope for slope, _ in taylor)).to_dense()
        slope = DomainMatrix.zeros((k, 1), D)
        curvature = DomainMatrix.zeros((k, k), D)
        for j in range(k):
            weight = pi[0, i].element * P[i, j].element
            slope += slopes[j] * weight
            curvature += curvatures[j] * weight
            for atom, c in values[j].items():
                loss[atom] = loss.get(atom, D.zero) + c * weight
        gradient += J.transpose() * slope
        hessian += (J.transpose() * curvature * J).to_sparse()
        for m, (_, second) in enumerate(taylor):
            hessian += second * slope[m, 0].element
    F = simplex_field(k)
    return Derivation({atom: F.convert(c, D) for atom, c in loss.items()}, gradient.convert_to(F),
                      hessian.to_dense().convert_to(F))


def _summing_domain(k: int, matrices: tuple[DomainMatrix, ...]) -> FractionField | PolynomialRing:
    """QQ[transition symbols, π_0..π_{k−2}] when every entry of ``matrices`` is a polynomial (at θ_π, where
    Σπ = 1 clears the softmax denominators): sums and products there take no gcd; else ``simplex_field(k)``."""
    if all(x.denom.is_one for m in matrices for x in m.to_list_flat()):
        return sp.QQ[(*transition_symbols(k), *pi_symbols(k)[:-1])]
    return simplex_field(k)


def _taylor(logit: sp.Expr, theta: tuple[sp.Symbol, ...], bias: tuple[sp.Symbol, ...],
            F: FractionField | PolynomialRing) -> tuple[DomainMatrix, DomainMatrix]:
    """The slope (1 × D) and Hessian (D × D, sparse) at θ_π (every weight 0 but b) of a logit, read off its
    coefficients: it must be a polynomial of degree ≤ 2 in the weights and affine in b (else ArithmeticError)."""
    poly = sp.Poly(logit, *theta)
    if poly.total_degree() > 2:
        raise ArithmeticError(f"a logit is not quadratic in the weights: {logit}")
    in_b = {theta.index(x) for x in bias}
    slope: dict[int, FracElement] = {}
    second: dict[int, dict[int, FracElement]] = {}
    for monomial, c in poly.terms():
        where = [r for r, power in enumerate(monomial) for _ in range(power)]
        value = F.convert(c, sp.QQ)
        if len(where) == 1:
            slope[where[0]] = value
        elif len(where) == 2 and in_b.isdisjoint(where):  # slope of w·w' at w = w' = 0 is 0, curvature c
            r, s = where
            for a, b in {(r, s), (s, r)}:
                second.setdefault(a, {})[b] = value * (2 if r == s else 1)
        elif len(where) == 2:
            raise ArithmeticError(f"a logit is not affine in b: {logit}")
    return (DomainMatrix.from_dod({0: slope} if slope else {}, (1, len(theta)), F),
            DomainMatrix.from_dod(second, (len(theta), len(theta)), F))


# --- the claims -------------------------------------------------------------------------------------------------

def _block_diag(blocks: list[DomainMatrix]) -> DomainMatrix:
    dod: dict[int, dict[int, FracElement]] = {}
    offset = 0
    for block in blocks:
        for r, row in block.to_dod().items():
            dod.setdefault(r + offset, {}).update({c + offset: v for c, v in row.items()})
        offset += block.shape[0]
    return DomainMatrix.from_dod(dod, (offset, offset), blocks[0].domain).to_dense()


def kron_identity(X: DomainMatrix, d: int) -> DomainMatrix:
    """X ⊗ I_d: entry (r·d + a, c·d + a) is X[r, c]."""
    dod = {r * d + a: {c * d + a: v for c, v in row.items()} for r, row in X.to_dod().items() for a in range(d)}
    return DomainMatrix.from_dod(dod, (X.shape[0] * d, X.shape[1] * d), X.domain)


def assemble(d: int, tying: bool, embedding_block: DomainMatrix, bias_block: DomainMatrix) -> DomainMatrix:
    """A Hessian in (E, [A], b) order from X = ``embedding_block`` and Y = ``bias_block`` (k × k):
    tied diag(X ⊗ I_d, Y); untied [[0, X ⊗ I_d], [Xᵀ ⊗ I_d, 0]] ⊕ Y (X the E–A block, E rows)."""
    X = kron_identity(embedding_block, d)
    if not tying:
        zero = DomainMatrix.zeros(X.shape, X.domain)
        X = zero.hstack(X).vstack(X.transpose().hstack(zero))
    return _block_diag([X, bias_block])


def claimed_hessian(k: int, d: int, tying: bool) -> DomainMatrix:
    """SPEC §11 at θ_π in (E, [A], b), on the simplex: tied X = −2 M_s, untied X = −M; Y = D_π − ππᵀ."""
    M = coupling(k)
    embedding = symmetric_part(M) * M.domain.convert(-2) if tying else -M
    return assemble(d, tying, embedding, softmax_curvature(k))


def _result(name: str, claim: str, expr: sp.Matrix | sp.Expr, expected: sp.Matrix | sp.Expr, *assumptions: str,
            notes: str = "", extra: dict | None = None, statement: Statement | None = None) -> Result:
    """Both sides already in a field's normal form: ``Result.proven`` cancels like terms, factors nothing."""
    return Result(name, claim, expr, expr, expected, (DOMAIN, *assumptions), notes, extra or {}, statement)


def _sizes(k: int, d: int | None = None, tying: bool | None = None) -> str:
    """Where a k-state identity holds, for the LaTeX document: "tied, $k = 3$, $d = 2$"."""
    kind = "" if tying is None else f"{_TYING[tying]}, "
    return kind + f"$k = {k}$" + ("" if d is None else f", $d = {d}$")


def _log_sum(atoms: dict[sp.Expr, FracElement]) -> sp.Expr:
    """Σ coefficient · atom, each coefficient in its field's normal form."""
    return sp.Add(*(c.as_expr() * atom for atom, c in atoms.items() if c))


@cache
def stationary_identity(k: int) -> Result:
    """πP = π and Σπ = 1 for the cofactor form (claim MULTI-STATE-PI)."""
    pi = law(k, True)
    balance = (pi * transition(k, True) - pi).to_Matrix()
    total = sum(stationary(k), field(k).zero) - field(k).one
    return _result(f"k-state: pi P = pi, sum pi = 1 (cofactor form, k={k})", PI_CLAIM,
                   sp.Matrix([[*balance, total.as_expr()]]), sp.zeros(1, k + 1),
                   notes="pi_i = i-th diagonal cofactor of I - P, normalised",
                   statement=Statement(r"\big(\pi P - \pi,\ \textstyle\sum_i \pi_i - 1\big)", "0",
                                       "cofactor form, " + _sizes(k)))


@cache
def gradient_identity(k: int, d: int, scale: tuple[int, ...] | None = None) -> Result:
    """∇L(θ_π) = 0 in (E, [A], pos, b), tied then untied stacked, at the stationary law (claim MULTI-STATE-PI).

    On the simplex the b-entries are π − πP: stationarity is what makes them vanish.  ``scale``: the model
    with b = log(scale·π) (``derived``), off θ_π, for mutation tests; likewise in the identities below.
    """
    expr = sp.Matrix.vstack(*(at_pi_matrix(derived(k, d, tying, scale).gradient, k).to_Matrix()
                              for tying in (True, False)))
    return _result(f"k-state: grad L(theta_pi) = 0 (tied and untied, k={k}, d={d})", PI_CLAIM, expr,
                   sp.zeros(expr.rows, 1), notes="tied gradient, then untied, in (E, [A], pos, b) order",
                   statement=Statement(r"\nabla L(\theta_\pi)", "0", "tied and untied, " + _sizes(k, d)))


def entropy_atoms(k: int) -> dict[sp.Expr, FracElement]:
    """H(π) = −Σ π_m log π_m as {log π_m: −π_m}, at the cofactor form."""
    return {atom: -pi for atom, pi in zip(log_pi(k), stationary(k))}


@cache
def loss_identity(k: int, scale: tuple[int, ...] | None = None) -> Result:
    """L(θ_π) = H(π) at the stationary law (claim MULTI-STATE-PI); it depends on neither d nor tying.

    On the simplex the coefficient of −log π_j is Σ_i π_i P_ij: stationarity makes it π_j.
    """
    loss = {atom: at_pi(c, k) for atom, c in derived(k, 1, True, scale).loss.items()}
    return _result(f"k-state: L(theta_pi) = H(pi) (k={k})", PI_CLAIM, _log_sum(loss), _log_sum(entropy_atoms(k)),
                   "log pi_m kept as atoms", statement=Statement(r"L(\theta_\pi)", r"H(\pi)", _sizes(k)))


def hessian_name(k: int, d: int, tying: bool) -> str:
    """The name of ``hessian_identity(k, d, tying)``."""
    block = "(E,b) block = diag(-2 M_s (x) I_d, D_pi - pi pi^T)" if tying else \
        "(E,A,b) block = [[0, -M (x) I_d], [-M^T (x) I_d, 0]] + (D_pi - pi pi^T)"
    return f"k-state Hessian at theta_pi: {block} ({_TYING[tying]}, k={k}, d={d})"


def block_of(k: int, d: int, tying: bool, hessian: DomainMatrix) -> DomainMatrix:
    """The (E, [A], b) rows and columns of a Hessian in ``weights(k, d, tying).flat`` order."""
    keep = weights(k, d, tying).other_indices
    return hessian.extract(keep, keep)


@cache
def hessian_identity(k: int, d: int, tying: bool, scale: tuple[int, ...] | None = None) -> Result:
    """The (E, [A], b) block of ∇²L(θ_π) is ``claimed_hessian`` for every π on the simplex, so at the stationary
    law (claims MULTI-STATE-LOCAL-MIN tied, MULTI-STATE-SADDLE-UNTIED untied)."""
    block, claimed = ((r"H_{(E,b)}(\theta_\pi)", r"\mathrm{diag}(-2M_s \otimes I_d,\ D_\pi - \pi\pi^\top)")
                      if tying else
                      (r"H_{(E,A,b)}(\theta_\pi)", r"\begin{pmatrix} 0 & -M \otimes I_d \\ -M^\top \otimes I_d & 0 "
                                                     r"\end{pmatrix} \oplus (D_\pi - \pi\pi^\top)"))
    return _result(hessian_name(k, d, tying), LOCAL_MIN_CLAIM if tying else UNTIED_CLAIM,
                   block_of(k, d, tying, derived(k, d, tying, scale).hessian).to_Matrix(),
                   claimed_hessian(k, d, tying).to_Matrix(), f"pi on the simplex, pi_{k - 1} = 1 - (the others)",
                   notes="order (E, [A], b), E and A row by row; needs only sum pi = 1, not stationarity",
                   statement=Statement(block, claimed, _sizes(k, d, tying)))


def position_name(k: int, d: int) -> str:
    """The name of ``position_identity(k, d)``."""
    return f"k-state Hessian at theta_pi: pos rows = 0 (tied and untied, k={k}, d={d})"


@cache
def position_identity(k: int, d: int, scale: tuple[int, ...] | None = None) -> Result:
    """The pos rows of ∇²L(θ_π) vanish at the stationary law, tied then untied stacked (claims
    MULTI-STATE-LOCAL-MIN and MULTI-STATE-SADDLE-UNTIED).

    On the simplex the (pos, A_j) entries (tied (pos, E_j)) are (π − πP)_j: ∂²u_j/∂A_j∂pos = I_d meets
    Σ_i π_i (softmax(b) − P_i) = π − πP, zero by stationarity only.
    """
    rows = []
    for tying in (True, False):
        hessian = derived(k, d, tying, scale).hessian
        positions = hessian.extract(weights(k, d, tying).position_indices, list(range(hessian.shape[1])))
        rows.append(at_pi_matrix(positions, k).to_Matrix())
    expr = sp.Matrix.hstack(*rows)
    return _result(position_name(k, d), LOCAL_MIN_CLAIM, expr, sp.zeros(*expr.shape),
                   notes="tied pos rows, then untied, side by side",
                   statement=Statement(r"H_{\mathrm{pos},\cdot}(\theta_\pi)", "0",
                                       "tied and untied, " + _sizes(k, d)))


@cache
def kernel_identity(k: int) -> Result:
    """M 1 = 0, Mᵀ 1 = 0, (D_π − ππᵀ) 1 = 0 at the stationary law: E = 1vᵀ and b ∝ 1 are flat
    (claim MULTI-STATE-LOCAL-MIN).  Mᵀ1 = (πP − π)ᵀ needs stationarity; the others only row sums."""
    ones = DomainMatrix.ones((k, 1), simplex_field(k))
    M = coupling(k)
    expr = at_pi_matrix((M * ones).hstack(M.transpose() * ones, softmax_curvature(k) * ones), k).to_Matrix()
    return _result(f"k-state: M 1 = 0, M^T 1 = 0, (D_pi - pi pi^T) 1 = 0 (k={k})", LOCAL_MIN_CLAIM, expr,
                   sp.zeros(k, 3), notes="columns M 1, M^T 1, (D_pi - pi pi^T) 1",
                   statement=Statement(r"\big(M\mathbf 1,\ M^\top \mathbf 1,\ (D_\pi - \pi\pi^\top)\mathbf 1\big)",
                                       "0", _sizes(k)))


def binary_map(tying: bool) -> DomainMatrix:
    """R: (E_0, E_1, [A_0, A_1], pos, b_0, b_1) at d = 1 ↦ the scalar model's (s, [t], b, c), rows
    s = E_1 − E_0, t = A_1 − A_0 (tied t = s), b = b_1 − b_0, c = E_0 + pos."""
    rows = [[-1, 1, 0, 0, 0], [0, 0, 0, -1, 1], [1, 0, 1, 0, 0]] if tying else \
        [[-1, 1, 0, 0, 0, 0, 0], [0, 0, -1, 1, 0, 0, 0], [0, 0, 0, 0, 0, -1, 1], [1, 0, 0, 0, 1, 0, 0]]
    return _matrix(rows, field(2))


@cache
def scalar_hessian(tying: bool) -> DomainMatrix:
    """``theory.landscape``'s Hessian at θ_π, c = g = 0, in (s, [t], b, c) (the g row dropped)."""
    H = T.hessian_at(tying, T.theta_pi(tying) | {R.c: 0, R.g: 0})
    keep = [R.parameters(tying).index(x) for x in R.parameters(tying) if x != R.g]
    return _matrix(H.extract(keep, keep).tolist(), field(2))


def binary_name(tying: bool) -> str:
    """The name of ``binary_identity(tying)``."""
    head = ", t = A1 - A0" if not tying else ""
    return (f"k=2 one-hot Hessian at theta_pi = R^T (scalar model Hessian) R; s = E1 - E0{head}, b = b1 - b0, "
            f"c = E0 + pos ({_TYING[tying]}, d=1)")


@cache
def binary_identity(tying: bool, scale: tuple[int, ...] | None = None) -> Result:
    """k = 2, d = 1: ∇²L_onehot(θ_π) = Rᵀ ∇²L_scalar(θ_π) R with R = ``binary_map`` (claims MULTI-STATE-LOCAL-MIN
    tied, MULTI-STATE-SADDLE-UNTIED untied): the one-hot model is the scalar model composed with R."""
    Rm = binary_map(tying)
    expected = Rm.transpose() * scalar_hessian(tying) * Rm
    return _result(binary_name(tying), LOCAL_MIN_CLAIM if tying else UNTIED_CLAIM,
                   at_pi_matrix(derived(2, 1, tying, scale).hessian, 2).to_Matrix(), expected.to_Matrix(),
                   extra={"map": Rm.to_Matrix()},
                   statement=Statement(r"\nabla^2 L_{\text{one-hot}}(\theta_\pi)",
                                       r"R^\top \nabla^2 L_{\text{scalar}}(\theta_\pi) R", _sizes(2, 1, tying)))


@cache
def binary_sign_identity() -> Result:
    """k = 2: −2 vᵀM_s v / vᵀv = 4π0π1(p+q−1) = 2 × the scalar model's e-eigenvalue (claim MULTI-STATE-LOCAL-MIN).

    v = (1, −1) spans 1^⊥.  The expected side is twice the repeated (d-fold) eigenvalue of
    ``landscape.spectrum_closed_form``: positive, so M_s negative on 1^⊥ and θ_π a local minimum, iff p + q > 1.
    """
    v = _matrix([[1], [-1]], simplex_field(2))
    quadratic = at_pi((v.transpose() * symmetric_part(coupling(2)) * v)[0, 0].element, 2)
    (repeated,) = [ev for ev, mult in T.spectrum_closed_form(True, 2) if mult == 2]
    return _result("k=2 one-hot: -2 M_s on 1^perp = 2 x (2 pi0 pi1 (p+q-1)), twice the scalar eigenvalue",
                   LOCAL_MIN_CLAIM, (-quadratic).as_expr(), field(2).from_sympy(2 * repeated).as_expr(),
                   notes="-2 v^T M_s v / v^T v with v = (1, -1); positive (a local minimum) iff p + q > 1; "
                         "the factor 2: the unit vector of 1^perp has s = E1 - E0 = sqrt 2",
                   statement=Statement(r"-2\,\frac{v^\top M_s v}{v^\top v}", r"2 \cdot 2\pi_0\pi_1(p+q-1)",
                                       r"$k = 2$, $v = (1, -1)$"))


@cache
def results() -> tuple[Result, ...]:
    """Every k-state identity, for ``theory.registry.identities``."""
    ks = sorted({k for k, _ in SIZES})
    return (*(stationary_identity(k) for k in ks), *(loss_identity(k) for k in ks),
            *(gradient_identity(k, d) for k, d in SIZES),
            *(hessian_identity(k, d, tying) for tying in (True, False) for k, d in SIZES),
            *(position_identity(k, d) for k, d in SIZES),
            *(kernel_identity(k) for k in ks), binary_identity(True), binary_identity(False), binary_sign_identity())


# --- closed form, numerically ---------------------------------------------------------------------------------

def complement_basis(k: int) -> np.ndarray:
    """An orthonormal basis of 1^⊥ in R^k (k × (k−1), Helmert): column m ∝ (1, .., 1, −m, 0, ..) with m ones;
    for k = 2 the column (1, −1)/√2."""
    basis = np.zeros((k, k - 1))
    for m in range(1, k):
        basis[:m, m - 1] = 1.0
        basis[m, m - 1] = -m
        basis[:, m - 1] /= np.sqrt(m * (m + 1))
    return basis


def _law_and_coupling(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(π, M) in float64 for a transition matrix validated by ``numerics.markov.FiniteChain`` (InvalidInputError)."""
    chain = FiniteChain(P)
    pi = chain.pi
    return pi, pi[:, None] * (chain.transition - pi[None, :])


def coupling_matrix(P: np.ndarray) -> np.ndarray:
    """M = D_π (P − 1πᵀ), M_ij = π_i (P_ij − π_j): the untied E–A block at θ_π is −M ⊗ I_d (E rows)."""
    return _law_and_coupling(P)[1]


def normal_matrix(P: np.ndarray) -> np.ndarray:
    """M_s = (M + Mᵀ)/2 restricted to 1^⊥ in ``complement_basis``, (k−1) × (k−1): tied θ_π is a local minimum iff
    it is negative definite, a saddle iff it has a positive eigenvalue (claim MULTI-STATE-LOCAL-MIN)."""
    M = coupling_matrix(P)
    Q = complement_basis(M.shape[0])
    return Q.T @ ((M + M.T) / 2) @ Q


def eigenvalue_rounding(P: np.ndarray) -> float:
    """Estimated float64 rounding of the closed-form eigenvalues at θ_π: 16 k² ε max_i π_i.

    Every entry of D_π - ππᵀ, M = D_π(P - 1πᵀ) and M_s is a sum of at most k + 1 products of
    probabilities no larger than max π (π itself by subtraction-free elimination, relative error
    O(k ε)); an entrywise error δ moves an eigenvalue of a k × k matrix by at most k δ, and the
    symmetric eigensolver adds k ε ‖·‖.  An eigenvalue within this of 0 is zero to the precision of
    the computation: its sign is not the theory's but rounding's.
    """
    pi = FiniteChain(P).pi
    k = len(pi)
    return 16 * k**2 * float(np.finfo(np.float64).eps) * float(pi.max())


def closed_form_spectrum(P: np.ndarray, d: int, tying: bool, tol: float | None = None) -> np.ndarray:
    """The nonzero eigenvalues of the full Hessian at θ_π, ascending, with multiplicity (SPEC §11).

    The k − 1 eigenvalues of D_π − ππᵀ on 1^⊥, once each; tied, those of −2M_s on 1^⊥, d times each; untied,
    ± the singular values of M, d times each (M = Q (QᵀMQ) Qᵀ, since M1 = 0 = 1ᵀM, so QᵀMQ has M's nonzero
    singular values).  Eigenvalues with |λ| ≤ ``tol`` (default: their rounding, ``eigenvalue_rounding``)
    count as zero and are left out.  Claims MULTI-STATE-LOCAL-MIN (tied) and MULTI-STATE-SADDLE-UNTIED (untied).
    """
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"d must be a positive integer, got {d!r}")
    tol = eigenvalue_rounding(P) if tol is None else tol
    pi, M = _law_and_coupling(P)
    Q = complement_basis(len(pi))
    bias = np.linalg.eigvalsh(Q.T @ (np.diag(pi) - np.outer(pi, pi)) @ Q)
    if tying:
        embedding = np.linalg.eigvalsh(-2 * normal_matrix(P))
    else:
        singular = np.linalg.svd(Q.T @ M @ Q, compute_uv=False)
        embedding = np.concatenate([singular, -singular])
    values = np.concatenate([bias, np.repeat(embedding, d)])
    return np.sort(values[np.abs(values) > tol])


def predicted_class(P: np.ndarray, tol: float | None = None, tying: bool = True) -> str:
    """"local minimum" | "saddle" | "degenerate": what the Hessian at θ_π says about the k-state model.

    Tied (claim MULTI-STATE-LOCAL-MIN): λ_max of ``normal_matrix`` < −tol a local minimum, > tol a saddle, else
    degenerate.  Untied (claim MULTI-STATE-SADDLE-UNTIED): a saddle if the largest singular value of M exceeds
    tol, else degenerate (M = 0: P = 1πᵀ, the i.i.d. source, where θ_π is the global minimum).  ``tol``
    defaults to the eigenvalues' rounding (``eigenvalue_rounding``): a sign within it is not decided.
    """
    tol = eigenvalue_rounding(P) if tol is None else tol
    if tying:
        top = float(np.linalg.eigvalsh(normal_matrix(P)).max())
        return "saddle" if top > tol else "local minimum" if top < -tol else "degenerate"
    return "saddle" if float(np.linalg.norm(coupling_matrix(P), 2)) > tol else "degenerate"
