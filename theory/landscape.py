"""Gradient, Hessian and their values at θ_π and θ_* of the reduced model, proven in SymPy.

Every result is a ``theory.calculus.Result``; gradients and Hessians at a point go through the chain rule
of ``theory.calculus`` (``gradient_at``, ``hessian_at``).  Everything is derived once per process
(``functools.cache``).  ``theory.registry.identities`` gathers these results with those of the other modules.
"""

from __future__ import annotations

from functools import cache

import sympy as sp

from theory import reduced as R
from theory.calculus import (
    UNIGRAM_BIAS,
    K,
    Result,
    Statement,
    Z,
    alpha,
    at_logits,
    beta,
    chain_rule,
    identity,
    logit_derivatives,
    pi0,
    pi1,
)
from theory.markov import (
    canonical,
    covariance,
    entropy_rate,
    k,
    mutual_information,
    p,
    q,
    second_eigenvalue,
    unigram_loss,
)


@cache
def gradient(tying: bool) -> sp.Matrix:
    """∇_ρ L of the reduced model."""
    L = R.loss(tying)
    return sp.Matrix([sp.diff(L, x) for x in R.parameters(tying)])


@cache
def hessian(tying: bool) -> sp.Matrix:
    """∇²_ρ L of the reduced model."""
    return sp.hessian(R.loss(tying), R.parameters(tying))


def theta_pi(tying: bool) -> dict[sp.Symbol, sp.Expr]:
    """θ_π in reduced coordinates: e = a = 0 (s = t = 0), b = log(p/q); c, g free."""
    point = {R.s: 0, R.b: UNIGRAM_BIAS}
    return point if tying else point | {R.t: 0}


def theta_star(tying: bool) -> dict[sp.Symbol, sp.Expr]:
    """θ_* in reduced coordinates with c, g (and untied s) free.

    Tied: s = √(α/(1+g)) (real when sign(1+g) = sign(α)); untied: t = α/((1+g)s).
    Both: b = β - t c (1+g), so logit(0) = β and logit(1) = α + β.
    """
    if tying:
        root = sp.sqrt(alpha / (1 + R.g))
        return {R.s: root, R.b: beta - root * R.c * (1 + R.g)}
    head = alpha / ((1 + R.g) * R.s)
    return {R.t: head, R.b: beta - head * R.c * (1 + R.g)}


_TYING = {True: "(tied)", False: "(untied)"}


def _model_logits(tying: bool) -> tuple[sp.Expr, sp.Expr]:
    return R.logit(0, tying), R.logit(1, tying)


def sigmoid(z: sp.Expr) -> sp.Expr:
    """σ(z) = 1 / (1 + e^{−z})."""
    return 1 / (1 + sp.exp(-z))


_SIGMA = sp.Function("sigma")  # σ unexpanded, for the statement as printed


@cache
def logit_gradient_identity() -> Result:
    """∇_z F = (π0 (σ(z0) − p), π1 (σ(z1) − (1 − q))): each logit's residual, weighted by its state's mass
    (claim STAT-PI: where every σ(z_x) is P(1|x), and where both are π1 against J's equal rows, it vanishes)."""
    def residuals(sig):
        return sp.Matrix([pi0 * (sig(Z[0]) - p), pi1 * (sig(Z[1]) - (1 - q))])

    expected = residuals(sigmoid)
    return identity("grad_z F = (pi0 (sigma(z0) - p), pi1 (sigma(z1) - (1 - q)))", "STAT-PI",
                    logit_derivatives()[0], expected,
                    statement=Statement(r"\nabla_z F",
                                        r"\big(\pi_0(\sigma(z_0) - p),\ \pi_1(\sigma(z_1) - (1 - q))\big)^\top",
                                        sides=(logit_derivatives()[0], residuals(_SIGMA))))


def logit_gradient(point: dict | None = None, tying: bool = True) -> sp.Matrix:
    """∇_z F, in general (point None) or at the logits of the reduced model at ``point``, canonical."""
    at_z = {} if point is None else at_logits(_model_logits(tying), point)
    return logit_derivatives()[0].subs(at_z).applyfunc(canonical)


def gradient_at(tying: bool, point: dict) -> sp.Matrix:
    """∇_ρ L at ``point`` (a substitution for some of the reduced coordinates), canonical."""
    return chain_rule(_model_logits(tying), R.parameters(tying), point, order=1)


def hessian_at(tying: bool, point: dict) -> sp.Matrix:
    """∇²_ρ L at ``point``, canonical."""
    return chain_rule(_model_logits(tying), R.parameters(tying), point, order=2)


@cache
def stationarity_pi(tying: bool) -> Result:
    """∇L(θ_π) = 0 for every c, g (claim STAT-PI)."""
    grad = gradient_at(tying, theta_pi(tying))
    return identity("grad L(theta_pi) = 0 " + _TYING[tying], "STAT-PI", grad, sp.zeros(*grad.shape),
                    statement=Statement(r"\nabla_\rho L(\theta_\pi)", "0", _TYING[tying][1:-1]))


@cache
def loss_pi(tying: bool) -> Result:
    """L(θ_π) = H(π) (claim STAT-PI)."""
    loss = R.loss(tying).subs(theta_pi(tying))
    return identity("L(theta_pi) = H(pi) " + _TYING[tying], "STAT-PI", loss, unigram_loss(),
                    statement=Statement(r"L(\theta_\pi)", r"H(\pi)", _TYING[tying][1:-1]))


@cache
def stationarity_star(tying: bool) -> Result:
    """∇L(θ_*) = 0 for every admissible c, g, s (claim GLOBAL-MIN)."""
    grad = gradient_at(tying, theta_star(tying))
    sign = ("(1+g) alpha > 0 (g < -1 iff p+q > 1)",) if tying else ("s != 0, g != -1",)
    return identity("grad L(theta_*) = 0 " + _TYING[tying], "GLOBAL-MIN", grad, sp.zeros(*grad.shape), *sign,
                    statement=Statement(r"\nabla_\rho L(\theta_*)", "0", _TYING[tying][1:-1]))


@cache
def loss_star(tying: bool) -> Result:
    """L(θ_*) = H_rate (claim GLOBAL-MIN)."""
    loss = R.loss(tying).subs(theta_star(tying))
    return identity("L(theta_*) = H_rate " + _TYING[tying], "GLOBAL-MIN", loss, entropy_rate(),
                    statement=Statement(r"L(\theta_*)", r"H_{\mathrm{rate}}", _TYING[tying][1:-1]))


@cache
def gauss_newton_star() -> Result:
    """At the logits of θ_*, ∇²_z of the transition loss is diag(π0 p(1-p), π1 q(1-q)) (claim GLOBAL-MIN).

    L(ρ) = F(z(ρ)) with z = (logit_0, logit_1) and F the transition loss, so by the chain rule
    ∇²L = Jᵀ ∇²F J + Σ_x ∂F/∂z_x ∇²z_x.  At θ_* the logits are z* = (β, α + β), where ∇F = 0
    (``stationarity_star``), so ∇²L(θ_*) = Jᵀ diag(π0 p(1-p), π1 q(1-q)) J: a Gram matrix
    with positive weights, positive semidefinite in every parametrisation (tied or not).
    """
    hess = logit_derivatives()[1].subs({Z[0]: beta, Z[1]: alpha + beta})
    expected = sp.diag(pi0 * p * (1 - p), pi1 * q * (1 - q))
    return identity("Hess of F at the logits of theta_* (Gauss-Newton, PSD)", "GLOBAL-MIN", hess, expected,
                    statement=Statement(r"\nabla_z^2 F(z^*)", r"\mathrm{diag}\big(\pi_0 p(1-p),\ \pi_1 q(1-q)\big)",
                                        r"at the logits $z^*$ of $\theta_*$"))


@cache
def numeric_losses():
    """lambdify of (H(π), H_rate): f(p, q) -> (unigram loss, entropy rate) in nats (claims STAT-PI, GLOBAL-MIN)."""
    return sp.lambdify((p, q), [unigram_loss(), entropy_rate()], modules="math", cse=True)


@cache
def numeric_curvature_weights():
    """lambdify of σ'(ℓ(x)) = P(1|x)P(0|x) at θ_*: the Gauss-Newton weights per prefix ending in x.

    Read off ``gauss_newton_star``: its diagonal is π_x P(1|x)P(0|x), so dividing by π_x gives the
    weight of one prefix.  f(p, q) -> (w(0), w(1)).
    """
    form = gauss_newton_star().form
    weights = [canonical(form[x, x] / pi) for x, pi in enumerate((pi0, pi1))]
    return sp.lambdify((p, q), weights, modules="math", cse=True)


@cache
def normal_block_pi() -> Result:
    """Tied θ_π: the (s, b) block of ∇²L, its determinant 2π0²π1²(1+g)(p+q-1) (claim LOCAL-MIN).

    With H_bb = π0π1 > 0, Sylvester's criterion on the order (b, s) makes the block positive
    definite iff det > 0 iff (1+g)(p+q-1) > 0: at g = 0 iff p + q > 1.  The c and g rows
    vanish (the loss ignores c and g when s = 0): they are tangent to the critical manifold.
    """
    H = hessian_at(True, theta_pi(True))
    block = H.extract([0, 1], [0, 1])
    det = canonical(block.det())
    expected = 2 * K**2 * (1 + R.g) * (p + q - 1)
    result = identity("det of (s,b) block at theta_pi", "LOCAL-MIN", det, expected)
    return Result(result.name, result.claim, det, result.form, expected, result.assumptions,
                  notes="positive definite iff (1+g)(p+q-1) > 0",
                  extra={"block": block, "hessian": H, "H_bb": block[1, 1]},
                  statement=Statement(r"\det H_{(s,b)}(\theta_\pi)", r"2\pi_0^2\pi_1^2(1+g)(p+q-1)", "tied"))


@cache
def untied_block_pi() -> Result:
    """Untied θ_π: det of the (s, t, b) block is -(π0π1)³(1+g)²(p+q-1)² < 0 (claim SADDLE-UNTIED).

    A 3×3 symmetric matrix with negative determinant has a negative eigenvalue, and H_bb > 0
    gives a positive one: indefinite whenever (1+g)(p+q-1) ≠ 0.
    """
    H = hessian_at(False, theta_pi(False))
    block = H.extract([0, 1, 2], [0, 1, 2])
    expected = -(K**3) * (1 + R.g) ** 2 * (p + q - 1) ** 2
    result = identity("det of (s,t,b) block at untied theta_pi", "SADDLE-UNTIED", canonical(block.det()), expected)
    return Result(result.name, result.claim, result.expr, result.form, expected, result.assumptions,
                  notes="indefinite whenever p+q != 1", extra={"block": block},
                  statement=Statement(r"\det H_{(s,t,b)}(\theta_\pi)", r"-\pi_0^3\pi_1^3(1+g)^2(p+q-1)^2", "untied"))


@cache
def spectrum_pi(tying: bool) -> dict[sp.Expr, int]:
    """Nonzero eigenvalues of the full-space Hessian at θ_π (pos = 0, all W = 0), per unit of d.

    That point is the reduced θ_π at c = g = 0, where the loss sees e (and a) only through
    |e|² (and <e, a>): the e-block is isotropic, so each eigenvalue of the reduced (s, b) or
    (s, t, b) block appears d times, except the b-eigenvalue.  Returned as
    {eigenvalue: 1 if it appears d times, 0 if once}.
    Tied: {π0π1: once, 2π0π1(p+q-1): d}.  Untied: {π0π1: once, ±π0π1(p+q-1): d each}.
    """
    H = hessian_at(tying, theta_pi(tying) | {R.c: 0, R.g: 0})
    block = H.extract([0, 1], [0, 1]) if tying else H.extract([0, 1, 2], [0, 1, 2])
    if tying:  # diagonal at c = 0: the s and b directions decouple
        return {block[1, 1]: 0, block[0, 0]: 1}
    st = block.extract([0, 1], [0, 1])  # [[0, A], [A, 0]]; b decoupled at c = 0
    return {block[2, 2]: 0} | {canonical(ev): 1 for ev in st.eigenvals()}


_LAG = sp.Symbol("m", integer=True, nonnegative=True)  # the lag as printed: k is π0π1 in the document


@cache
def chain_results() -> tuple[Result, ...]:
    """Claim SRC: the covariance and mutual information of the source, derived then matched."""
    lam = second_eigenvalue()
    return (
        # proven as Cov / λ^k = π0π1: a rational function of p, q, which ``canonical`` decides
        identity("Cov(x_n, x_{n+k}) = pi0 pi1 lambda^k", "SRC", covariance() / lam**k, K,
                 statement=Statement(r"\mathrm{Cov}(x_n, x_{n+m})", r"\pi_0 \pi_1 \lambda^m", r"lag $m \ge 0$",
                                     sides=(covariance().subs(k, _LAG), K * lam**_LAG))),
        identity("I(x_n; x_{n+1}) = H(pi) - H_rate", "SRC", mutual_information(), unigram_loss() - entropy_rate(),
                 statement=Statement(r"I(x_n; x_{n+1})", r"H(\pi) - H_{\mathrm{rate}}")),
    )


def spectrum_closed_form(tying: bool, d: int) -> list[tuple[sp.Expr, int]]:
    """Nonzero full-space eigenvalues at θ_π (pos = 0) with multiplicities, for embedding dim d."""
    return [(ev, d if per_d else 1) for ev, per_d in spectrum_pi(tying).items()]


@cache
def numeric_spectrum(tying: bool):
    """lambdify of the θ_π spectrum: f(p, q) -> list of (eigenvalue, per-d flag), for float p, q.

    ``math``, not ``numpy``: lambdify's numpy namespace (``from numpy import *``) costs the main command
    about 0.15 s, and every caller passes one (p, q).
    """
    items = list(spectrum_pi(tying).items())
    fn = sp.lambdify((p, q), [ev for ev, _ in items], modules="math", cse=True)
    return fn, [per_d for _, per_d in items]
