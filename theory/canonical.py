"""The companion paper's canonical three-parameter model, proven in SymPy (claims L2G, L2G-BIAS, L2G-ENERGY).

"Local to Global" (NeurIPS 2024) restricts the tied single-layer transformer to rank-one weights
(paper-notes §2.4, §3.1; the authors' ``Markov-Fixed`` model) and gets three scalars θ = (e, w, b):

    logit(x) = e² κ(w) x + b − e²/2,    κ(w) = 1 + 2w|w|,

so z0 = b − e²/2 (after x = 0), z1 = b + e²(κ − ½) (after x = 1) and z1 − z0 = κe².  The loss is the
transition loss of ``theory.reduced`` (cross-entropy of one step of the chain, nats).  Results:

* L2G (recalled: the paper's landscape, the authors' ``contour_plot.py``): the loss equals the authors'
  log-sigmoid form; on the locus e²κ = α = log((1−p)(1−q)/(pq)), b = β + e²/2 the gradient vanishes and
  L = H_rate (κ has the sign of α, i.e. of 1 − p − q: w > −1/√2 iff p + q < 1); on the line e = 0,
  b = log(p/q) the gradient vanishes, L = H(π), ∂²L/∂e² = 2π0π1(p+q−1)κ and ∂²L/∂e∂b = 0, so the line
  is locally minimal in e iff (1−p−q)(1+2w|w|) < 0.  At (e, w) = (0, −1/√2), where κ = 0, the whole
  (e, w) Hessian vanishes and ∂³L/∂e²∂w = 4√2 π0π1(p+q−1) ≠ 0: a *degenerate* saddle (no negative
  eigenvalue; the cubic term takes both signs), not a Morse one.
* L2G-BIAS (the authors' formula, derived here): ∂L/∂b = 0 ⇔ π0σ(z0) + π1σ(z1) = π1, a quadratic
  q D u² + (q − p) u − p = 0 in u = e^{z0} with D = e^{κe²}; its positive root gives
  b*(e, w) = e²/2 + log u*, u* = [(p − q) + √((p − q)² + 4pqD)] / (2qD) = 2p / [√((p − q)² + 4pqD) + q − p].
  ∂²L/∂b² = Σ π_x σ'(z_x) > 0, so b* is the unique minimiser in b.  b*(0, w) = log(p/q);
  on the global locus b* = β + e²/2.
* L2G-ENERGY (recalled for the profiled flow; the joint-flow law derived here):
  E(e, w) = e² − w² − sign(w) log|w| satisfies ∇E · ∇z_x = −2e² for both logits (the key lemma, in
  (e, w)), so along the joint gradient flow θ' = −∇L of *any* loss of the two logits
  dE/dt = −Σ_x ∂L/∂z_x ∇E·∇z_x = 2e² ∂L/∂b = −2e² db/dt, and along the b-profiled flow
  (e, w)' = −∇L̃, L̃(e, w) = L(e, w, b*(e, w)), dE/dt = 0.  The lemma gives ∇E·∇(κe²) = 0: E is a first
  integral of the gradient lines of Δ = z1 − z0 = κe², and L̃ depends on (e, w) through Δ only
  (z0 = log u*(e^Δ), z1 = z0 + Δ).  So the profiled conservation holds for *any* bias of the form
  e²/2 + φ(κe²), optimal or not, and for any loss of the logits; ∂L/∂b = 0 at b* is a second, independent
  reason (the envelope term vanishes and the joint law applies).  w = 0 is invariant (∂L/∂w ∝ |w|).
  E has a saddle at (0, −1/√2) (∇E = 0, ∇²E = diag(2, −4)) at the level E_s = −(1 + log 2)/2: the
  separatrix.

Sign cases.  w|w| = ±w², |w| and sign(w) are not polynomial: every statement about w is differentiated
with |w| and sign(w) as they stand, then proven on w > 0 and on w < 0 separately by substituting
w = ±v with v > 0 (no log of a negative argument ever reaches ``canonical``, which assumes positive
log arguments).  Statements in κ hold for every real κ and so on both sides.

Everything is derived once per process (``functools.cache``); ``results`` returns the ``Result``s, which
``theory.registry.identities`` includes.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from theory.calculus import (
    DOMAIN,
    UNIGRAM_BIAS,
    K,
    Result,
    Statement,
    Z,
    alpha,
    beta,
    chain_rule,
    identity,
    logit_derivatives,
)
from theory.markov import canonical, entropy_rate, p, q, stationary, unigram_loss
from theory.reduced import transition_loss

e, w, b, kappa = sp.symbols("e w b kappa", real=True)
v = sp.Symbol("v", positive=True)  # |w| on one side of w = 0
D = sp.Symbol("D", positive=True)  # e^{κe²} = e^{z1 − z0}
COORDS = (e, w, b)
#: w = sign · v on each side of the invariant line w = 0.
SIDES = ((1, "w > 0"), (-1, "w < 0"))
#: Where the identities below hold, as the LaTeX document words it.
_LOCUS = r"on $e^2\kappa = \alpha$, $b = \beta + e^2/2$"
_LINE = r"on $e = 0$, $b = \log(p/q)$"
_SADDLE = r"at $(e, w, b) = (0, -1/\sqrt2, \log(p/q))$"
#: The saddle of the e = 0 line (κ = 0) and of the energy, and the energy's level there.
SADDLE_W = -1 / sp.sqrt(2)
#: The radicand of b*, named: S = (p − q)² + 4pq e^{κe²}.
S = sp.Symbol("S", positive=True)
SEPARATRIX = -(1 + sp.log(2)) / 2


def slope(w_: sp.Expr = w) -> sp.Expr:
    """κ(w) = 1 + 2w|w|: the gap z1 − z0 in units of e² (the feed-forward's sign flip when w < −1/√2)."""
    return 1 + 2 * w_ * sp.Abs(w_)


def logit(x: int | sp.Expr, k: sp.Expr = kappa) -> sp.Expr:
    """e²k x + b − e²/2 (claim L2G); k = κ, a symbol (every statement in κ), or ``slope()``."""
    return e**2 * k * x + b - e**2 / 2


def logits(k: sp.Expr = kappa) -> tuple[sp.Expr, sp.Expr]:
    """(z0, z1) = (logit(0), logit(1))."""
    return logit(0, k), logit(1, k)


@cache
def loss(k: sp.Expr = kappa) -> sp.Expr:
    """L(e, k, b) = Σ_{x,x'} π_x P_{xx'} ℓ(z_x, x'), nats (claim L2G)."""
    return transition_loss(logits(k))


def authors_loss() -> sp.Expr:
    """The loss exactly as the authors' ``contour_plot.py`` writes it, with their log-sigmoid x − log(1 + eˣ):

    L = −π1[q logσ(−f1) + (1−q) logσ(f1)] − π0[p logσ(f0) + (1−p) logσ(−f0)],
    f1 = (½ + 2w|w|)e² + b, f0 = b − e²/2.
    """
    pi0, pi1 = stationary()
    f1, f0 = (sp.Rational(1, 2) + 2 * w * sp.Abs(w)) * e**2 + b, b - e**2 / 2

    def log_sigmoid(z: sp.Expr) -> sp.Expr:
        return z - sp.log(1 + sp.exp(z))

    return (-pi1 * (q * log_sigmoid(-f1) + (1 - q) * log_sigmoid(f1))
            - pi0 * (p * log_sigmoid(f0) + (1 - p) * log_sigmoid(-f0)))


def energy(e_: sp.Expr = e, w_: sp.Expr = w) -> sp.Expr:
    """E(e, w) = e² − w² − sign(w) log|w| (claim L2G-ENERGY; the authors' ``contour_plot.py``)."""
    return e_**2 - w_**2 - sp.sign(w_) * sp.log(sp.Abs(w_))


def _radicand(d: sp.Expr) -> sp.Expr:
    return (p - q) ** 2 + 4 * p * q * d


def bias_root(d: sp.Expr) -> sp.Expr:
    """u* = e^{z0} at the optimal bias, given d = e^{z1 − z0}: the positive root of q d u² + (q − p)u − p."""
    return ((p - q) + sp.sqrt(_radicand(d))) / (2 * q * d)


def bias_root_rationalised(d: sp.Expr) -> sp.Expr:
    """The same root as 2p / (√S + q − p): no cancellation when p < q (``bias_root`` has none when p ≥ q)."""
    return 2 * p / (sp.sqrt(_radicand(d)) + q - p)


def optimal_bias(k: sp.Expr = kappa, rationalised: bool = False) -> sp.Expr:
    """b*(e, k) = e²/2 + log u*(e^{ke²}) (claim L2G-BIAS): the minimiser of L in b.

    ``rationalised``: u* as ``bias_root_rationalised``, the form without cancellation when p < q
    (``bias_root`` has none when p ≥ q); the two are equal (``bias_results``).
    """
    root = bias_root_rationalised if rationalised else bias_root
    return e**2 / 2 + sp.log(root(sp.exp(k * e**2)))


def _half_powers(expr: sp.Expr) -> set[sp.Pow]:
    return {a for a in expr.atoms(sp.Pow) if a.exp.is_Rational and a.exp.q == 2}


def _modulo_root(expr: sp.Expr) -> sp.Expr:
    """The normal form A + B√S of ``expr``, rational in one square root √S (A, B free of it): 0 iff expr ≡ 0.

    √S is named r (S in any arrangement of its terms); numerator and denominator are reduced modulo
    r² − S to n0 + n1·r and m0 + m1·r, and the denominator is cleared with its conjugate:
    A + B·r = (n0 + n1·r)(m0 − m1·r) / (m0² − m1²·S).  S = (p − q)² + 4pqD is no square in Q(p, q, D),
    so A + B√S ≡ 0 iff A = B = 0 (each reduced by ``canonical``).
    """
    radicands = {sp.expand(a.base) for a in _half_powers(expr)}
    if not radicands:
        return canonical(expr)
    if len(radicands) > 1:
        raise ValueError(f"more than one square root: {radicands}")
    (radicand,) = radicands
    r = sp.Dummy("r", positive=True)
    modulus = sp.Poly(r**2 - radicand, r)

    def linear(poly_expr: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
        reduced = sp.Poly(sp.expand(poly_expr), r).rem(modulus).as_expr()
        return reduced.coeff(r, 0), reduced.coeff(r, 1)

    numer, denom = sp.fraction(sp.together(expr.replace(lambda a: a in _half_powers(expr), lambda a: r ** (2 * a.exp))))
    (n0, n1), (m0, m1) = linear(numer), linear(denom)
    norm = m0**2 - m1**2 * radicand
    A, B = canonical((n0 * m0 - n1 * m1 * radicand) / norm), canonical((n1 * m0 - n0 * m1) / norm)
    return A + B * sp.sqrt(radicand)


def _perfect_squares(expr: sp.Expr) -> sp.Expr:
    """√S → √(factor S), so that √((p + q)²) = p + q; √((p + q − 2)²) = |p + q − 2| = 2 − p − q on the domain."""
    expr = expr.replace(lambda a: a in _half_powers(expr), lambda a: sp.factor(canonical(a.base)) ** a.exp)
    return expr.subs(sp.Abs(p + q - 2), 2 - p - q)


def _on_side(expr, sign: int):
    """``expr`` (or a matrix of them) on the side w = sign·v, v > 0: |w| → v, sign(w) → sign."""
    return expr.subs(w, sign * v)


@cache
def _logit_gradient_at_optimum() -> tuple[sp.Matrix, sp.Expr]:
    """(∂L/∂z_x)_x and the profiled-gradient correction ∂L/∂b·∇_{(e,κ)}b* at b = b*(e, κ), in u*, D.

    e^{z_x} at b*: e^{z0} = u*(D), e^{z1} = u*(D)·D (D named for e^{κe²}, kept free: the statements
    hold for every D > 0).  ∇F(z) is taken at z_x = log e^{z_x}, so σ(z_x) is rational in u* and D; each
    entry, and ∂L/∂b = Σ_x ∂L/∂z_x, is brought to its normal form A + B√S (``_modulo_root``).
    """
    dF = logit_derivatives()[0]
    exps = [sp.expand_power_exp(sp.exp(sp.expand(z.subs(b, optimal_bias()), log=False))).subs(sp.exp(kappa * e**2), D)
            for z in logits()]
    at_opt = dF.subs({zx: sp.log(x) for zx, x in zip(Z, exps)}).applyfunc(_modulo_root)
    grad_b_star = sp.Matrix([sp.diff(optimal_bias(), c) for c in (e, kappa)]).subs(sp.exp(kappa * e**2), D)
    dL_db = _modulo_root(at_opt[0] + at_opt[1])  # ∂z_x/∂b = 1
    return at_opt, dL_db * grad_b_star


def _logit_jacobian(k: sp.Expr, coords: tuple[sp.Symbol, ...]) -> sp.Matrix:
    return sp.Matrix([[sp.diff(z, c) for c in coords] for z in logits(k)])


def _energy_gradient(sign: int) -> sp.Matrix:
    """(∂E/∂e, ∂E/∂w) on the side w = sign·v (differentiated with |w|, sign(w) as they stand)."""
    return _on_side(sp.Matrix([sp.diff(energy(), c) for c in (e, w)]), sign)


@cache
def loss_results() -> tuple[Result, ...]:
    """Claim L2G: the transition loss of ``logit`` with κ = κ(w) is the authors' log-sigmoid form, on each side."""
    authors = authors_loss()
    return tuple(identity(f"L2G: loss = the authors' log-sigmoid form ({side})", "L2G",
                          _on_side(loss(slope()) - authors, sign), sp.Integer(0), side,
                          statement=Statement("L", r"L_{\mathrm{authors}}", f"${side}$",
                                              sides=(loss(slope()), authors)))
                 for sign, side in SIDES)


@cache
def locus_results() -> tuple[Result, ...]:
    """Claim L2G: on e²κ = α with b = β + e²/2 (every real κ, e ≠ 0): ∇L = 0 and L = H_rate.

    The logits there are the kernel's, z0 = β = logit P(1|0) and z1 = α + β = logit P(1|1).  κ = α/e² has the
    sign of α, and α > 0 iff (1−p)(1−q) > pq iff p + q < 1: the locus lies in w > −1/√2 iff p + q < 1.
    """
    locus = {kappa: alpha / e**2, b: beta + e**2 / 2}
    return (
        identity("L2G: grad L = 0 on e^2 kappa = alpha", "L2G",
                 chain_rule(logits(), (e, kappa, b), locus, order=1), sp.zeros(3, 1), "e != 0",
                 statement=Statement(r"\nabla_{(e,\kappa,b)} L", "0", _LOCUS)),
        identity("L2G: L = H_rate on e^2 kappa = alpha", "L2G", loss().subs(locus), entropy_rate(), "e != 0",
                 statement=Statement("L", r"H_{\mathrm{rate}}", _LOCUS)),
    )


@cache
def line_results() -> tuple[Result, ...]:
    """Claim L2G: on e = 0 with b = log(p/q) (every real κ): ∇L = 0, L = H(π), ∂²L/∂e² = 2π0π1(p+q−1)κ, H_eb = 0.

    So the line is locally minimal in e (b fixed, or profiled: H_eb = 0) iff (p+q−1)κ > 0, i.e.
    (1−p−q)(1+2w|w|) < 0; a local maximum in e on the complementary half-line.
    """
    line = {e: 0, b: UNIGRAM_BIAS}
    H = chain_rule(logits(), (e, b), line, order=2)
    return (
        identity("L2G: grad L = 0 on e = 0", "L2G", chain_rule(logits(), (e, kappa, b), line, order=1),
                 sp.zeros(3, 1), statement=Statement(r"\nabla_{(e,\kappa,b)} L", "0", _LINE)),
        identity("L2G: L = H(pi) on e = 0", "L2G", loss().subs(line), unigram_loss(),
                 statement=Statement("L", r"H(\pi)", _LINE)),
        identity("L2G: d2L/de2 on e = 0", "L2G", H[0, 0], 2 * K * (p + q - 1) * kappa,
                 statement=Statement(r"\frac{\partial^2 L}{\partial e^2}", r"2\pi_0\pi_1(p+q-1)\kappa", _LINE)),
        identity("L2G: d2L/de db on e = 0", "L2G", H[0, 1], sp.Integer(0),
                 statement=Statement(r"\frac{\partial^2 L}{\partial e\,\partial b}", "0", _LINE)),
    )


@cache
def saddle_results() -> tuple[Result, ...]:
    """Claim L2G: (e, w) = (0, −1/√2), b = log(p/q) is a degenerate saddle.

    κ(−1/√2) = 0, so the Hessian in (e, w, b) is diag(0, 0, π0π1): no negative eigenvalue, and the second
    order decides nothing.  The third derivative ∂³L/∂e²∂w = 4√2 π0π1(p+q−1) is nonzero for p + q ≠ 1:
    L − H(π) = 2√2 π0π1(p+q−1)(w + 1/√2)e² + O(e⁴, e²(w + 1/√2)²) takes both signs in every
    neighbourhood, so the point is no extremum.  (With b profiled: ∂²L/∂e∂b = ∂²L/∂w∂b = 0 on e = 0, so
    b* − log(p/q) = O(e²) and the profiled loss has the same Hessian and the same third derivative.)
    """
    line = {e: 0, b: UNIGRAM_BIAS}
    hessian = chain_rule(logits(slope()), COORDS, line | {w: SADDLE_W}, order=2)
    curvature_along_line = chain_rule(logits(slope()), COORDS, line, order=2)[0, 0]  # a function of w
    third = sp.diff(curvature_along_line, w).subs(w, SADDLE_W)
    return (
        identity("L2G: Hessian in (e, w, b) at (0, -1/sqrt 2, log(p/q)) = diag(0, 0, pi0 pi1)", "L2G",
                 hessian, sp.diag(0, 0, K),
                 statement=Statement(r"\nabla^2_{(e,w,b)} L", r"\mathrm{diag}(0, 0, \pi_0\pi_1)", _SADDLE)),
        identity("L2G: d3L/de2 dw at (0, -1/sqrt 2, log(p/q))", "L2G", third,
                 4 * sp.sqrt(2) * K * (p + q - 1),
                 statement=Statement(r"\frac{\partial^3 L}{\partial e^2\,\partial w}",
                                     r"4\sqrt2\,\pi_0\pi_1(p+q-1)", _SADDLE)),
    )


@cache
def bias_results() -> tuple[Result, ...]:
    """Claim L2G-BIAS: b*(e, w) zeroes ∂L/∂b; its two forms agree; its values on e = 0 and on the locus.

    The locus value uses √((p − q)² + 4(1−p)(1−q)) = √((2 − p − q)²) = 2 − p − q on 0 < p, q < 1.
    """
    dF_at_opt, _ = _logit_gradient_at_optimum()
    dL_db = dF_at_opt[0] + dF_at_opt[1]
    root = sp.expand_power_exp(sp.exp(optimal_bias() - e**2 / 2)).subs(sp.exp(kappa * e**2), D)
    at_locus = _perfect_squares(optimal_bias().subs(kappa, alpha / e**2))
    return (
        Result("L2G: dL/db = 0 at b*(e, w)", "L2G-BIAS", dL_db, _modulo_root(dL_db), sp.Integer(0),
               (DOMAIN, "D = exp(kappa e^2) > 0, every kappa"),
               statement=Statement(r"\frac{\partial L}{\partial b}", "0",
                                   r"at $b = b^*(e, w)$, $D = \exp(\kappa e^2)$")),
        Result("L2G: b* = e^2/2 + log(2p/(sqrt(S) + q - p)), S = (p-q)^2 + 4pq exp(kappa e^2)", "L2G-BIAS",
               root - bias_root_rationalised(D), _modulo_root(root - bias_root_rationalised(D)),
               sp.Integer(0), (DOMAIN, "D = exp(kappa e^2) > 0"),
               statement=Statement(r"\exp(b^* - e^2/2)", r"\frac{2p}{\sqrt S + q - p}",
                                   r"$S = (p-q)^2 + 4pqD$, $D = \exp(\kappa e^2)$; reduced modulo $\sqrt S$",
                                   sides=tuple(side.subs(_radicand(D), S)
                                               for side in (root, bias_root_rationalised(D))))),
        identity("L2G: b*(0, w) = log(p/q)", "L2G-BIAS", _perfect_squares(optimal_bias().subs(e, 0)),
                 UNIGRAM_BIAS, statement=Statement(r"b^*(0, w)", r"\log(p/q)")),
        identity("L2G: b* = beta + e^2/2 on e^2 kappa = alpha", "L2G-BIAS", at_locus, beta + e**2 / 2,
                 "e != 0", "|p + q - 2| = 2 - p - q",
                 statement=Statement(r"b^*", r"\beta + e^2/2", r"on $e^2\kappa = \alpha$")),
    )


@cache
def energy_side_results(sign: int) -> tuple[Result, ...]:
    """Claim L2G-ENERGY on the side w = sign·v: the key lemma, the joint flow, the profiled flow.

    * ∇E·∇z_x = −2e² for x = 0, 1;
    * along θ' = −∇L: dE/dt + 2e² db/dt = 0;
    * along (e, w)' = −∇L̃, ∇L̃ = ∇_{(e,w)}L + ∂L/∂b ∇b* at b = b* (both terms written out): dE/dt = 0.
    Differentiation in w goes through κ: ∂/∂w = κ'(w) ∂/∂κ with κ'(w) = ∂(1 + 2w|w|)/∂w.
    """
    side = dict(SIDES)[sign]
    on_side = {kappa: _on_side(slope(), sign)}
    dkappa = _on_side(sp.diff(slope(), w), sign)
    grad_E = _energy_gradient(sign)
    to_w = sp.diag(1, dkappa)  # (∂_e, ∂_κ) → (∂_e, ∂_w)
    lemma = _logit_jacobian(kappa, (e, kappa)).subs(on_side) * to_w * grad_E
    flow = -_loss_gradient().subs(on_side)  # (e', −∂L/∂κ, b'), w' = −κ'(w) ∂L/∂κ
    joint = (grad_E.T * to_w * flow[:2, 0])[0] + 2 * e**2 * flow[2]
    dF_at_opt, correction = _logit_gradient_at_optimum()
    profiled = _logit_jacobian(kappa, (e, kappa)).T * dF_at_opt + correction  # ∇_{(e,κ)} L̃ at b*
    profiled = -(grad_E.T * to_w * profiled.subs(on_side))[0]
    return (
        identity(f"L2G: grad E . grad z_x = -2 e^2, x = 0, 1 ({side})", "L2G-ENERGY", lemma,
                 sp.Matrix([-2 * e**2, -2 * e**2]), side,
                 statement=Statement(r"(\nabla E \cdot \nabla z_0,\ \nabla E \cdot \nabla z_1)",
                                     r"(-2e^2,\ -2e^2)", f"${side}$")),
        identity(f"L2G: dE/dt + 2 e^2 db/dt = 0 along the joint flow ({side})", "L2G-ENERGY", joint,
                 sp.Integer(0), side, statement=Statement(r"\frac{dE}{dt} + 2e^2 \frac{db}{dt}", "0",
                                                          f"along the joint flow, ${side}$")),
        Result(f"L2G: dE/dt = 0 along the b-profiled flow ({side})", "L2G-ENERGY", profiled,
               _modulo_root(profiled), sp.Integer(0), (DOMAIN, side, "D = exp(kappa e^2) > 0"),
               statement=Statement(r"\frac{dE}{dt}", "0",
                                   f"along the $b$-profiled flow, ${side}$; reduced modulo $\\sqrt S$")),
    )


@cache
def energy_point_results() -> tuple[Result, ...]:
    """Claim L2G-ENERGY: w = 0 is invariant; E has a saddle at (0, −1/√2) at the level E_s = −(1 + log 2)/2."""
    E = energy()
    at_saddle = {e: 0, w: SADDLE_W}
    derivatives = sp.Matrix([sp.diff(E, c) for c in (e, w)] + [sp.diff(E, e, 2), sp.diff(E, w, 2), sp.diff(E, e, w)])
    return (
        identity("L2G: dL/dw = 0 on w = 0 (the line w = 0 is invariant)", "L2G-ENERGY",
                 chain_rule(logits(slope()), COORDS, {w: 0}, order=1)[1], sp.Integer(0),
                 statement=Statement(r"\frac{\partial L}{\partial w}", "0", "on $w = 0$")),
        identity("L2G: E(0, -1/sqrt 2) = -(1 + log 2)/2", "L2G-ENERGY", E.subs(at_saddle), SEPARATRIX,
                 statement=Statement(r"E(0, -1/\sqrt2)", r"-(1 + \log 2)/2")),
        identity("L2G: grad E = 0, Hess E = diag(2, -4) at (0, -1/sqrt 2)", "L2G-ENERGY",
                 derivatives.subs(at_saddle), sp.Matrix([0, 0, 2, -4, 0]),
                 statement=Statement(r"(\partial_e E, \partial_w E, \partial_e^2 E, \partial_w^2 E, "
                                     r"\partial_e \partial_w E)", "(0, 0, 2, -4, 0)", r"at $(0, -1/\sqrt2)$")),
    )


@cache
def _loss_gradient() -> sp.Matrix:
    """(∂_e, ∂_κ, ∂_b) L at every point (κ a symbol)."""
    return chain_rule(logits(), (e, kappa, b), {}, order=1)


def results() -> list[Result]:
    """Every identity of the canonical model (claims L2G, L2G-BIAS, L2G-ENERGY)."""
    return [*loss_results(), *locus_results(), *line_results(), *saddle_results(), *bias_results(),
            *(r for sign, _ in SIDES for r in energy_side_results(sign)), *energy_point_results()]
