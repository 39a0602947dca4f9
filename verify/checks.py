"""Per-claim checks on measured points (``verify.measure``): each returns ``Check`` objects.

Every tolerance is derived from the quantity it guards: eigenvalues from the spectrum's error
estimate, loss comparisons from the loss's rounding estimate, step sizes from the curvature
they probe.  Where the measurement cannot decide (an eigenvalue within its error of 0, a
curvature below what the loss's rounding can resolve, a descent that needs more steps than its
budget), the check is undecided (``passed=None``) and says why: the verdict is then
"inconclusive", never a guess.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from numerics.curvature import block_names, gauss_newton_hessian, gradient, unflatten
from numerics.markov import MarkovChain
from numerics.population import chain_loss, population_loss
from numerics.reference import reference_logits
from numerics.stationary_points import reduced_point
from numerics.transformer import init_params, logits
from verify.cli import Config
from verify.measure import TOLERANCE, MeasuredPoint, loss_of
from verify.report import Check


def _random_directions(count: int, dim: int, seed: int, mask: Tensor | None = None) -> Tensor:
    """``count`` random unit vectors (rows) in R^dim, supported on ``mask`` when given."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, dim, generator=gen, dtype=torch.float64)
    if mask is not None:
        directions = directions * mask
    return directions / directions.norm(dim=1, keepdim=True)


def model_checks(config: Config) -> list[Check]:
    """The model itself: forward pass vs the plain reference, prefix tree vs full sequences."""
    symbols = config.source.k if config.onehot else None
    params = init_params(config.d, config.seq_len, tying=config.tying, std=0.6, seed=config.seed, symbols=symbols,
                         device=config.device, dtype=config.torch_dtype)
    x = config.source.sample(4, config.seq_len, seed=config.seed + 1, device=config.device, dtype=config.torch_dtype)
    fast = logits(params, x, tying=config.tying).cpu().double()
    cpu = {k: v.cpu().double() for k, v in params.items()}
    slow = torch.tensor([reference_logits(cpu, row, tying=config.tying) for row in x.long().tolist()],
                        dtype=torch.float64)
    tol = 1e-10 if config.dtype == "float64" else 1e-4
    gap = (fast - slow).abs().max().item()
    exact = chain_loss(params, config.source, tying=config.tying).item()
    naive = chain_loss(params, config.source, tying=config.tying, method="naive").item()
    return [
        Check("forward = paper's equations", gap <= tol, gap, 0.0, tol,
              "max |logit| gap to a position-by-position reference, random θ with attention on"),
        Check("prefix-tree loss = all-sequence loss", abs(exact - naive) <= tol, abs(exact - naive), 0.0, tol,
              f"exact {exact:.12g} vs naive {naive:.12g} at the same random θ"),
    ]


def stationary_checks(point: MeasuredPoint, target: float, target_name: str) -> list[Check]:
    """Gradient over all D parameters and the loss value against its closed form."""
    g_tol, l_tol, _ = TOLERANCE[point.config.dtype]
    tol = max(l_tol * max(1.0, abs(target)), point.rounding)
    return [
        Check("stationary: max |dL/dθ|", point.grad_max <= g_tol, point.grad_max, 0.0, g_tol, "over all D parameters"),
        Check(f"loss = {target_name}", abs(point.value - target) <= tol, point.value, target, tol,
              "tolerance: the larger of the relative tolerance and the loss's rounding estimate"),
    ]


def spectrum_checks(point: MeasuredPoint, expected: list[float],
                    reference: str = "closed form") -> tuple[list[Check], bool]:
    """Nonzero eigenvalues vs the closed form and the null-space dimension; (checks, decided).

    ``expected`` lists the closed form's nonzero eigenvalues (``reference`` names where they come
    from, in the checks' names).  When one of them lies within the
    tolerance of 0 (p + q near 1) its sign cannot be resolved and the check is undecided.
    """
    rtol = TOLERANCE[point.config.dtype][2]
    s = point.spectrum
    measured, D = s.nonzero().tolist(), s.values.numel()
    tol = rtol * max((abs(v) for v in expected), default=0.0) + s.bounds.max().item()
    if any(abs(v) <= tol for v in expected):
        smallest = min(expected, key=abs)
        return [Check(f"Hessian spectrum = {reference}", None, measured, expected, tol,
                      f"the closed-form eigenvalue {smallest:.3g} is within the error estimate {tol:.2g} "
                      "of 0: its sign cannot be resolved at this precision")], False
    same = len(measured) == len(expected) and all(abs(a - b) <= tol for a, b in zip(measured, expected))
    return [
        Check(f"Hessian spectrum = {reference}", same, measured, expected, tol,
              "nonzero eigenvalues, ascending, with multiplicities"),
        Check("null-space dimension" + ("" if reference == "closed form" else f" ({reference})"),
              s.null_space_dim == D - len(expected), s.null_space_dim, D - len(expected), 0.0,
              "= dim of the tangent space of M_π (all directions with δe = δa = 0, δb = 0)", comparison="m = e"),
    ], True


def lanczos_check(point: MeasuredPoint, expected: list[float], steps: int = 80) -> list[Check]:
    """Matrix-free: the extreme Ritz values of Lanczos on Hessian-vector products are closed-form eigenvalues.

    Independent of the dense Hessian: the smallest and largest Ritz values must each equal some
    eigenvalue of the closed-form spectrum (0 included when a null space is predicted), within
    rtol·scale plus their own residual ‖Hy - θy‖ plus the dense spectrum's error estimate.  Each
    is matched to the nearest predicted eigenvalue rather than to the predicted extreme: Lanczos
    stops once its Krylov space is invariant to working precision, and two eigenvalues closer than
    that (π0π1 and π0π1|1-p-q| at tiny p, q in float32) are one cluster to it.  A Ritz value that
    is no predicted eigenvalue (a curvature the theory does not have) fails.
    """
    from numerics.curvature import hessian_vector_product, lanczos

    D = point.theta.numel()
    predicted = [*expected, 0.0] if len(expected) < D else list(expected)
    ritz = lanczos(hessian_vector_product(loss_of(point.config), point.params), D, steps=steps,
                   seed=point.config.seed, dtype=point.theta.dtype, device=point.theta.device)
    rtol = TOLERANCE[point.config.dtype][2]
    scale = max(abs(v) for v in predicted)
    found = [ritz.values[0].item(), ritz.values[-1].item()]
    target = [min(predicted, key=lambda v, f=f: abs(v - f)) for f in found]
    tol = [rtol * scale + ritz.residuals[i].item() + point.spectrum.hessian_error for i in (0, -1)]
    ok = all(abs(a - b) <= t for a, b, t in zip(found, target, tol))
    return [Check("Lanczos extremes = closed form", ok, found, target, max(tol),
                  f"{ritz.iterations} Hessian-vector products, full reorthogonalisation; "
                  f"lowest Ritz vector: {point.blocks(ritz.vectors[:, 0])}")]


def tangent_mask(point: MeasuredPoint) -> Tensor:
    """1 on the coordinates of M_π's tangent space (every weight but e, a and b; E, A and b one-hot), 0 elsewhere."""
    normal = ("e", "a", "E", "A", "b")
    return torch.tensor([name not in normal for name in block_names(point.layout)], dtype=torch.float64)


def flatness_check(point: MeasuredPoint, seed: int) -> list[Check]:
    """L is exactly constant along M_π (e = a = 0, b = log(p/q), every other weight free): finite
    steps of length 0.5 in random tangent directions change it by no more than rounding."""
    steps = 0.5 * _random_directions(3, point.theta.numel(), seed, tangent_mask(point))
    drift = point.losses_at(steps).abs().max().item()
    tol = 4 * point.rounding
    return [Check("flat along the manifold M_π", drift <= tol, drift, 0.0, tol,
                  "|L(θ + 0.5 v) - L(θ)| for 3 random unit directions with δe = δa = δb = 0; "
                  "tolerance 4 × the loss's rounding estimate")]


def no_descent_check(point: MeasuredPoint, normal_curvature: float, *, radius: float = 1e-3,
                     count: int = 1000) -> list[Check]:
    """No small perturbation lowers L: the defining property of a local minimum.

    At a local minimum with normal curvature μ > 0, L(θ + r v) - L(θ) ≥ 0 for every unit v once r
    is small enough for the quadratic term to dominate the cubic one; near p + q = 1 (μ small)
    that radius shrinks.  So the worst change over ``count`` random directions is taken at
    r = 1e-3, then at r/4, r/16, ... until no direction lowers L by more than the rounding
    estimate (pass).  A drop whose ratio to r² stays constant over three radii is negative
    curvature (fail); one that persists down to radii where μ r²/2 is below rounding is
    undecided.
    """
    directions = _random_directions(count, point.theta.numel(), point.config.seed + 7)
    u = point.rounding
    history = []
    while True:
        worst = point.losses_at(radius * directions).min().item()
        history.append((radius, worst))
        ratios = [w / r**2 for r, w in history[-3:]]
        if not math.isfinite(worst):
            passed, why = False, "the loss is not finite"
        elif worst >= -u:
            passed, why = True, ""
        elif len(ratios) == 3 and max(ratios) < 0 and max(ratios) <= 0.9 * min(ratios):
            passed, why = False, "the drop scales as r² over three radii: negative curvature"
        elif 0.5 * normal_curvature * radius**2 < 4 * u:
            passed, why = None, "the normal curvature is below what rounding resolves at this radius"
        else:
            radius /= 4
            continue
        break
    trail = ", ".join(f"r={r:.1e}: {w:.2e}" for r, w in history)
    return [Check("no descent among nearby perturbations", passed, worst, 0.0, u,
                  f"min over {count} random unit directions of L(θ+rv) - L(θ) ≥ -(rounding); {trail}"
                  + (f"; {why}" if why else ""), comparison="m >= -tol")]


def descent_returns_check(point: MeasuredPoint, curvatures: list[float], target: float, *,
                          budget: int = 400) -> list[Check]:
    """Gradient descent from a nearby point returns to the loss ``target`` (attraction).

    Step 1/λ_max; along the normal direction of curvature λ each step contracts the distance by
    1 - λ/λ_max, so shrinking the gap a thousandfold takes ⌈log(1e-3)/log(1 - λ_min/λ_max)⌉
    steps.  When that exceeds ``budget`` the check is undecided (p + q near 1), not failed.
    """
    config = point.config
    contraction = 1 - min(curvatures) / max(curvatures)
    needed = math.ceil(math.log(1e-3) / math.log(contraction)) + 1 if contraction > 0 else 1
    if needed > budget:
        return [Check("gradient descent returns to H(pi)", None, needed, budget, 0.0,
                      f"needs {needed} steps of size 1/λ_max (condition number {max(curvatures) / min(curvatures):.3g})"
                      f" to shrink the gap 1000×, more than the budget of {budget}", comparison="m <= e (steps)")]
    start = _random_directions(1, point.theta.numel(), config.seed + 8)[0] * 0.05
    initial_gap = point.loss_at(start) - point.value
    theta = point.theta + start.to(point.theta)
    for _ in range(needed):
        theta = theta - gradient(loss_of(config), unflatten(theta, point.layout)) / max(curvatures)
    gap = loss_of(config)(unflatten(theta, point.layout)).item() - target
    tol = 1e-3 * initial_gap + 4 * point.rounding
    return [Check("gradient descent returns to H(pi)", -4 * point.rounding <= gap <= tol, gap, 0.0, tol,
                  f"{needed} steps of size 1/λ_max from a perturbation of norm 0.05 (initial gap {initial_gap:.3g}); "
                  "a gap below -4 × rounding fails too", comparison="-4u <= m <= tol")]


def second_difference(point: MeasuredPoint, direction: Tensor, start: float = 0.5,
                      levels: int = 24) -> tuple[float, float, float]:
    """The curvature of t ↦ L(θ + t v) at 0 from symmetric second differences, with an error estimate.

    D(t) = (L(θ+tv) + L(θ-tv) - 2L(θ))/t² = vᵀHv + O(t²) (odd orders cancel), with rounding error
    up to 4u/t².  Where the t² term dominates, the differences δ(t) = D(t) - D(t/2) keep their sign
    and shrink fourfold per halving, and the error of D(t) is δ(2t)/12 + O(t⁴).  Before that regime
    (higher orders still large, or a ReLU kink within reach of t) D(t) can sit on a plateau or a
    hump where one difference is small and misleading.  So a step t counts only where the regime
    is visible on both sides, δ(2t)/δ(t) and δ(t)/δ(t/2) in [2.5, 6.5], or where D has converged to
    rounding: every difference from δ(2t) down to the smallest step is within its rounding (a kink
    or a bend further down would show as a larger one).  Its truncation error is taken as |δ(2t)|/2
    (six times the asymptotic value).
    The counted step with the smallest total (truncation + rounding) is kept; if none counts, the
    error estimate is infinite and the caller cannot resolve the sign.  The loss is evaluated in
    float64 at the run's point (a float32 run's θ as rounded): in float32 the rounding 4u/t² swamps
    D(t) before the t² regime begins.  Returns (curvature, error estimate, step).
    """
    steps = start * 0.5 ** torch.arange(levels + 1, dtype=torch.float64)
    moves = torch.cat([steps[:, None] * direction, -steps[:, None] * direction])
    change = point.losses_at(moves, float64=True)
    D = (change[: levels + 1] + change[levels + 1 :]) / steps**2
    delta = D[:-1] - D[1:]  # δ(t_j) = D(t_j) - D(t_{j+1})
    rounding = 4 * point.float64_rounding() / steps**2
    ratio = delta[:-1] / delta[1:]
    fourfold = (ratio >= 2.5) & (ratio <= 6.5)
    within = delta.abs() <= rounding[1:]
    converged = within.flip(0).cumprod(0).flip(0).bool()  # δ(t_k) within rounding for every k from here on
    # at D(t_j), j = 1 .. L-2: δ(t_{j-1})/δ(t_j) and δ(t_j)/δ(t_{j+1}) fourfold, or converged from δ(t_{j-1})
    settled = (fourfold[:-1] & fourfold[1:]) | converged[:-2]
    total = torch.where(settled, delta[:-2].abs() / 2 + rounding[1:-2], torch.full_like(settled, math.inf,
                                                                                           dtype=D.dtype))
    best = int(torch.nan_to_num(total, nan=math.inf).argmin())
    return D[best + 1].item(), total[best].item(), steps[best + 1].item()


def saddle_check(point: MeasuredPoint, expected_min: float, direction: Tensor | None = None,
                 name: str = "descent along negative curvature") -> list[Check]:
    """L decreases along ``direction`` v (default: the dense Hessian's lowest eigenvector): its
    curvature vᵀHv, measured from the loss alone by second differences (``second_difference``),
    equals the predicted negative eigenvalue and is negative beyond its error estimate.  Undecided
    when it agrees with the prediction but its error estimate does not resolve the sign; failed when
    it disagrees or is decidedly positive."""
    lowest = point.spectrum.vectors[:, 0] if direction is None else direction
    curvature, error, step = second_difference(point, lowest)
    tol = error + TOLERANCE[point.config.dtype][2] * abs(expected_min)
    detail = (f"(L(θ+tv) + L(θ-tv) - 2L(θ))/t² at t = {step:.2g}, error estimate {error:.2g} "
              f"(truncation + rounding); v = {point.blocks(lowest)}")
    test = "|m - e| <= tol, m < 0"
    if not math.isfinite(curvature) or abs(curvature - expected_min) > tol or curvature - error > 0:
        return [Check(name, False, curvature, expected_min, tol, detail, comparison=test)]
    if curvature + error >= 0:  # consistent with the prediction, but the sign is not resolved
        return [Check(name, None, curvature, expected_min, tol,
                      detail + "; the curvature is below what the loss's rounding resolves", comparison=test)]
    return [Check(name, True, curvature, expected_min, tol, detail, comparison=test)]


def psd_check(point: MeasuredPoint) -> list[Check]:
    lam, bound = point.spectrum.min_eigenvalue, point.spectrum.bounds[0].item()
    return [Check("Hessian positive semidefinite", lam >= -bound, lam, 0.0, bound,
                  "smallest eigenvalue ≥ -(its error estimate)", comparison="m >= -tol")]


def gauss_newton_check(point: MeasuredPoint, chain: MarkovChain) -> list[Check]:
    """At θ_* the residuals σ(ℓ) - P(1|x_n) vanish, so ∇²L = E[w(x_n) ∇ℓ ∇ℓᵀ] (a Gram matrix) with
    w(x) = P(1|x)P(0|x) from the SymPy form of claim GLOBAL-MIN: a second Hessian route with no
    second derivative of the loss in it."""
    from theory.landscape import numeric_curvature_weights

    weights = numeric_curvature_weights()(chain.p, chain.q)
    gram = gauss_newton_hessian(point.params, chain, tying=point.config.tying, weights=weights).cpu().double()
    gap = torch.linalg.matrix_norm(point.hessian - gram, ord=2).item()
    tol = point.spectrum.hessian_error + TOLERANCE[point.config.dtype][2] * torch.linalg.matrix_norm(gram, ord=2).item()
    return [Check("Hessian = Gauss-Newton Gram matrix", gap <= tol, gap, 0.0, tol,
                  "‖∇²L - Jᵀ diag(P(prefix) w(x_n)) J / N‖₂, J the Jacobian of every prefix logit")]


def no_descent_below_check(point: MeasuredPoint, target: float, *, count: int = 300) -> list[Check]:
    """A global minimum: no perturbation of any size (r from 1e-3 to 3) goes below ``target``."""
    directions = _random_directions(count, point.theta.numel(), point.config.seed + 9)
    lowest = min(point.losses_at(r * directions).min().item() for r in (1e-3, 1e-2, 1e-1, 1.0, 3.0))
    lowest = lowest + point.value - target
    tol = 4 * point.rounding
    return [Check("no perturbation below the global minimum", math.isfinite(lowest) and lowest >= -tol, lowest, 0.0,
                  tol, f"min over {count} random directions × radii 1e-3 .. 3 of L(θ+rv) - H_rate",
                  comparison="m >= -tol")]


def reduced_model_check(config: Config, chain: MarkovChain) -> list[Check]:
    """Claim REDUCED: L_full(φ(ρ)) = L_reduced(ρ) at random ρ in the exact region."""
    from theory import reduced as R

    fn = R.numeric_loss(config.tying)
    names = [str(x) for x in R.parameters(config.tying)]
    gen = torch.Generator().manual_seed(config.seed + 5)
    worst = 0.0
    for _ in range(5):
        s, t, b, g = (torch.randn(4, generator=gen, dtype=torch.float64) * 0.8).tolist()
        c = 0.2 + abs(s) + torch.rand(1, generator=gen).item()  # c > 0 and s + c > 0
        values = {"s": s, "t": s if config.tying else t, "b": b, "c": c, "g": g}
        params = reduced_point(*(values[k] for k in "stbcg"), config.d, config.seq_len, tying=config.tying,
                               device=config.device, dtype=config.torch_dtype)
        full = population_loss(params, config.p, config.q, tying=config.tying).item()
        gap = abs(full - fn(config.p, config.q, *(values[k] for k in names)))
        worst = gap if not math.isfinite(gap) else max(worst, gap)
    tol = TOLERANCE[config.dtype][1] * 10
    return [Check("full model on φ(ρ) = reduced L(ρ)", worst <= tol, worst, 0.0, tol,
                  "5 random ρ with c > 0, s + c > 0 (ReLU in its linear regime)")]


def below_entropy_rate_check(config: Config) -> list[Check]:
    """L(θ) ≥ H_rate at 40 random θ of several scales (the bigram loss is a lower bound).

    A non-finite loss fails the check (it is never dropped from the minimum)."""
    l_tol = TOLERANCE[config.dtype][1]
    chain = config.source
    symbols = chain.k if config.onehot else None
    losses = torch.tensor([chain_loss(init_params(config.d, config.seq_len, tying=config.tying, std=std,
                                                  seed=config.seed + 11 + i, symbols=symbols, device=config.device,
                                                  dtype=config.torch_dtype),
                                      chain, tying=config.tying).item()
                           for i, std in enumerate([0.1, 0.5, 1.0, 2.0] * 10)], dtype=torch.float64)
    finite = bool(torch.isfinite(losses).all())
    lowest = losses.min().item() if finite else math.nan
    tol = l_tol * max(1.0, chain.entropy_rate())
    return [Check("no random θ below H_rate", finite and lowest >= chain.entropy_rate() - tol, lowest,
                  chain.entropy_rate(), tol, "40 random θ, entries N(0, σ²), σ ∈ {0.1, 0.5, 1, 2}"
                  + ("" if finite else f"; {int((~torch.isfinite(losses)).sum())} losses are not finite"),
                  comparison="m >= e - tol")]
