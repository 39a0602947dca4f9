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

from numerics.curvature import block_names, flatten, gauss_newton_hessian, gradient, unflatten
from numerics.markov import MarkovChain, num_prefixes
from numerics.population import chain_loss, population_loss
from numerics.reference import reference_logits
from numerics.rounding import MARGIN, logit_condition, logit_jacobian, rounding_estimate
from numerics.stationary_points import reduced_point
from numerics.transformer import init_params, logits
from verify.cli import Config
from verify.measure import FLOAT64_EPS, MeasuredPoint, closed_form_rounding, entropy_rounding, loss_of
from verify.report import Check


def _random_directions(count: int, dim: int, seed: int, mask: Tensor | None = None) -> Tensor:
    """``count`` random unit vectors (rows) in R^dim, supported on ``mask`` when given."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, dim, generator=gen, dtype=torch.float64)
    if mask is not None:
        directions = directions * mask
    return directions / directions.norm(dim=1, keepdim=True)


def model_checks(config: Config) -> list[Check]:
    """The model itself: forward pass vs the plain reference, prefix tree vs full sequences.

    Tolerances from the rounding of what is compared: each logit's ε κ (``logit_condition``) in the
    run's dtype plus the float64 reference's, and the two loss routes' estimates (the naive one
    sums the same terms over N k^N evaluations).
    """
    symbols = config.source.k if config.onehot else None
    params = init_params(config.d, config.seq_len, tying=config.tying, std=0.6, seed=config.seed, symbols=symbols,
                         device=config.device, dtype=config.torch_dtype)
    x = config.source.sample(4, config.seq_len, seed=config.seed + 1, device=config.device, dtype=config.torch_dtype)
    fast, J = logit_jacobian(lambda p: logits(p, x, tying=config.tying), params)
    kappa = logit_condition(fast, J, flatten(params)[0].detach()).cpu().double()
    fast = fast.cpu().double()
    cpu = {k: v.cpu().double() for k, v in params.items()}
    slow = torch.tensor([reference_logits(cpu, row, tying=config.tying) for row in x.long().tolist()],
                        dtype=torch.float64).reshape(fast.shape)
    tols = MARGIN * (torch.finfo(config.torch_dtype).eps + FLOAT64_EPS) * kappa
    worst = int(((fast - slow).abs() / tols).argmax())
    gap, tol = (fast - slow).abs().reshape(-1)[worst].item(), tols.reshape(-1)[worst].item()
    exact = chain_loss(params, config.source, tying=config.tying).item()
    naive = chain_loss(params, config.source, tying=config.tying, method="naive").item()
    sequences = config.source.k ** config.seq_len * config.seq_len
    rounding = rounding_estimate(params, config.source, tying=config.tying)
    loss_tol = rounding.loss + rounding.summed_over(sequences)
    return [
        Check("forward = paper's equations", gap <= tol, gap, 0.0, tol,
              "|logit gap| to a position-by-position float64 reference at the logit where it is largest "
              f"relative to its rounding estimate {MARGIN:g} ε κ (run's ε plus the reference's); random θ with "
              "attention on"),
        Check("prefix-tree loss = all-sequence loss", abs(exact - naive) <= loss_tol, abs(exact - naive), 0.0,
              loss_tol, f"exact {exact:.12g} vs naive {naive:.12g} at the same random θ; tolerance: both routes' "
                        "rounding estimates"),
    ]


def _resolves(tol: float, competitor: float | None, competitor_name: str, gap: float | None) -> str:
    """Why a comparison within ``tol`` cannot tell its target from ``competitor``, ``gap`` away ('' if it can).

    A measurement within tol of the target is also within tol + gap of the competitor; only when
    tol < gap / 2 is it closer to one than the other.  ``gap`` None: no competing value (the two claims
    coincide, as H(π) and H_rate do for an i.i.d. source)."""
    if gap is None or tol < gap / 2:
        return ""
    return (f"the tolerance {tol:.2g} is not below half the gap {gap:.2g} to {competitor_name} = {competitor:.6g}: "
            f"the check could not tell the two apart")


def stationary_checks(point: MeasuredPoint, target: float, target_name: str, competitor: float | None = None,
                      competitor_name: str = "", gap: float | None = None) -> list[Check]:
    """Gradient over all D parameters and the loss value against its closed form.

    Each gradient coordinate is compared with its own rounding estimate (``numerics.rounding``:
    the sum of the absolute values of the terms it cancels), so a point of M_π with weights of size
    100 is as stationary as θ_π.  The loss is compared within its rounding estimate plus the
    closed form's, and undecided when that tolerance does not separate ``target`` from
    ``competitor`` (H(π) from H_rate), whose distance ``gap`` the caller gives when it knows it better
    than the difference of the two floats (the mutual information, computed without cancellation;
    default |target - competitor|): a check that would pass at the wrong critical point cannot pass.
    """
    grad = point.grad
    ratio = grad.abs() / point.grad_rounding
    worst = int(torch.nan_to_num(ratio, nan=math.inf).argmax())
    g, g_tol = grad[worst].item(), point.grad_rounding[worst].item()
    name = block_names(point.layout)[worst]
    tol = point.rounding + entropy_rounding(target, point.config.source.k)
    loss_passed = abs(point.value - target) <= tol
    if gap is None and competitor is not None:
        gap = abs(target - competitor)
    why = _resolves(tol, competitor, competitor_name, gap)
    detail = "tolerance: the loss's rounding estimate plus the closed form's"
    return [
        Check("stationary: max |dL/dθ|", bool(ratio.max() <= 1), abs(g), 0.0, g_tol,
              f"every coordinate within its rounding estimate; shown: the worst relative to its estimate ({name}); "
              f"largest |dL/dθ| {point.grad_max:.3g}"),
        Check(f"loss = {target_name}", None if why and loss_passed else loss_passed, point.value, target, tol,
              f"{detail}; {why}" if why else detail),
    ]


def spectrum_checks(point: MeasuredPoint, expected: list[float], reference: str = "closed form",
                    expected_error: float | None = None) -> tuple[list[Check], bool]:
    """Nonzero eigenvalues vs the closed form and the null-space dimension; (checks, decided).

    ``expected`` lists the closed form's nonzero eigenvalues (``reference`` names where they come
    from, in the checks' names) and ``expected_error`` their rounding (default:
    ``closed_form_rounding``).  The tolerance is that plus the measured spectrum's error estimate.
    When an expected eigenvalue lies within the tolerance of 0 (p + q near 1) its sign cannot be
    resolved and the check is undecided.
    """
    s = point.spectrum
    measured, D = s.nonzero().tolist(), s.values.numel()
    if expected_error is None:
        expected_error = closed_form_rounding(expected, point.config.source.k)
    tol = expected_error + s.bounds.max().item()
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
    the closed form's rounding, the products' rounding D ε ‖H‖ in the run's dtype, their own residual
    ‖Hy - θy‖ and the dense spectrum's error estimate.  Each is matched to the nearest predicted
    eigenvalue rather than to the predicted extreme: Lanczos stops once its Krylov space is invariant
    to working precision, and two eigenvalues closer than that (π0π1 and π0π1|1-p-q| at tiny p, q in
    float32) are one cluster to it.  A Ritz value that is no predicted eigenvalue (a curvature the
    theory does not have) fails.
    """
    from numerics.curvature import hessian_vector_product, lanczos

    D = point.theta.numel()
    predicted = [*expected, 0.0] if len(expected) < D else list(expected)
    ritz = lanczos(hessian_vector_product(loss_of(point.config), point.params), D, steps=steps,
                   seed=point.config.seed, dtype=point.theta.dtype, device=point.theta.device)
    # each Hessian-vector product rounds in the run's dtype like a row of the dense Hessian: D ε ‖H‖
    products = D * torch.finfo(point.theta.dtype).eps * max(abs(v) for v in predicted)
    expected_error = closed_form_rounding(predicted, point.config.source.k) + products
    found = [ritz.values[0].item(), ritz.values[-1].item()]
    target = [min(predicted, key=lambda v, f=f: abs(v - f)) for f in found]
    tol = [expected_error + ritz.residuals[i].item() + point.spectrum.hessian_error for i in (0, -1)]
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
    steps of length 0.5 in random tangent directions change it by no more than rounding.

    The competing claim is curvature: steps of the same length in random normal directions
    (e, a, b) change L by a measured amount; when 4 × rounding is not below half of the smallest
    such change, flat and curved cannot be told apart and the check is undecided."""
    tangent = tangent_mask(point)
    steps = 0.5 * _random_directions(3, point.theta.numel(), seed, tangent)
    drift = point.losses_at(steps).abs().max().item()
    curved = point.losses_at(0.5 * _random_directions(3, point.theta.numel(), seed + 1, 1 - tangent))
    curved = curved.abs().min().item()
    tol = 4 * point.rounding
    detail = ("|L(θ + 0.5 v) - L(θ)| for 3 random unit directions with δe = δa = δb = 0; tolerance 4 × the loss's "
              f"rounding estimate; steps of the same length normal to M_π change L by at least {curved:.3g}")
    passed = drift <= tol
    if passed and not tol < curved / 2:
        return [Check("flat along the manifold M_π", None, drift, 0.0, tol,
                      detail + ": not resolved from the tolerance, flat and curved cannot be told apart")]
    return [Check("flat along the manifold M_π", passed, drift, 0.0, tol, detail)]


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
    rounding = 4 * point.rounding + entropy_rounding(target, config.source.k)  # the loss's and the closed form's
    tol = 1e-3 * initial_gap + rounding
    return [Check("gradient descent returns to H(pi)", -rounding <= gap <= tol, gap, 0.0, tol,
                  f"{needed} steps of size 1/λ_max from a perturbation of norm 0.05 (initial gap {initial_gap:.3g}); "
                  f"a gap below -{rounding:.2g} (the rounding of both) fails too", comparison="-u <= m <= tol")]


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
                 name: str = "descent along negative curvature", expected_error: float | None = None) -> list[Check]:
    """L decreases along ``direction`` v (default: the dense Hessian's lowest eigenvector): its
    curvature vᵀHv, measured from the loss alone by second differences (``second_difference``),
    equals the predicted negative eigenvalue (within the differences' error estimate plus the
    prediction's rounding ``expected_error``, default ``closed_form_rounding``) and is negative
    beyond its error estimate.  Undecided when it agrees with the prediction but its error estimate
    does not resolve the sign; failed when it disagrees or is decidedly positive."""
    lowest = point.spectrum.vectors[:, 0] if direction is None else direction
    curvature, error, step = second_difference(point, lowest)
    if expected_error is None:
        expected_error = closed_form_rounding([expected_min], point.config.source.k)
    tol = error + expected_error
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
    # Σ_i w_i |J_i||J_i|ᵀ (w ≥ 0) has 2-norm at most its trace = trace(gram); its sum over M prefixes
    # rounds by ⌈log₂ M⌉ ε of that, and each product by 2ε
    prefixes = num_prefixes(chain.k, point.config.seq_len)
    eps = torch.finfo(point.config.torch_dtype).eps
    tol = point.spectrum.hessian_error + 16 * eps * (math.ceil(math.log2(prefixes)) + 2) * gram.trace().item()
    return [Check("Hessian = Gauss-Newton Gram matrix", gap <= tol, gap, 0.0, tol,
                  "‖∇²L - Jᵀ diag(P(prefix) w(x_n)) J / N‖₂, J the Jacobian of every prefix logit; tolerance: "
                  "the Hessian's error estimate plus the Gram matrix's rounding")]


def no_descent_below_check(point: MeasuredPoint, target: float, *, count: int = 300) -> list[Check]:
    """A global minimum: no perturbation of any size (r from 1e-3 to 3) goes below ``target``."""
    directions = _random_directions(count, point.theta.numel(), point.config.seed + 9)
    lowest = min(point.losses_at(r * directions).min().item() for r in (1e-3, 1e-2, 1e-1, 1.0, 3.0))
    lowest = lowest + point.value - target
    tol = 4 * point.rounding + entropy_rounding(target, point.config.source.k)
    return [Check("no perturbation below the global minimum", math.isfinite(lowest) and lowest >= -tol, lowest, 0.0,
                  tol, f"min over {count} random directions × radii 1e-3 .. 3 of L(θ+rv) - H_rate",
                  comparison="m >= -tol")]


def reduced_model_check(config: Config, chain: MarkovChain) -> list[Check]:
    """Claim REDUCED: L_full(φ(ρ)) = L_reduced(ρ) at random ρ in the exact region, each within the
    full loss's rounding estimate plus the closed form's (four softplus terms)."""
    from theory import reduced as R

    fn = R.numeric_loss(config.tying)
    names = [str(x) for x in R.parameters(config.tying)]
    gen = torch.Generator().manual_seed(config.seed + 5)
    gaps = []  # (gap, tolerance) per point
    for _ in range(5):
        s, t, b, g = (torch.randn(4, generator=gen, dtype=torch.float64) * 0.8).tolist()
        c = 0.2 + abs(s) + torch.rand(1, generator=gen).item()  # c > 0 and s + c > 0
        values = {"s": s, "t": s if config.tying else t, "b": b, "c": c, "g": g}
        params = reduced_point(*(values[k] for k in "stbcg"), config.d, config.seq_len, tying=config.tying,
                               device=config.device, dtype=config.torch_dtype)
        full = population_loss(params, config.p, config.q, tying=config.tying).item()
        reduced = fn(config.p, config.q, *(values[k] for k in names))
        gaps.append((abs(full - reduced),
                     rounding_estimate(params, chain, tying=config.tying).loss + closed_form_rounding([reduced], 4)))
    gap, tol = max(gaps, key=lambda pair: pair[0] / pair[1] if math.isfinite(pair[0]) else math.inf)
    return [Check("full model on φ(ρ) = reduced L(ρ)", all(g <= t for g, t in gaps), gap, 0.0, tol,
                  "5 random ρ with c > 0, s + c > 0 (ReLU in its linear regime); shown: the point worst relative "
                  "to its tolerance (both losses' rounding estimates)")]


def below_entropy_rate_check(config: Config) -> list[Check]:
    """L(θ) ≥ H_rate at 40 random θ of several scales (the bigram loss is a lower bound), each within
    its own loss's rounding estimate (computed where a loss falls below H_rate) plus H_rate's.

    A non-finite loss fails the check (it is never dropped from the minimum)."""
    chain = config.source
    symbols = chain.k if config.onehot else None
    points = [init_params(config.d, config.seq_len, tying=config.tying, std=std, seed=config.seed + 11 + i,
                          symbols=symbols, device=config.device, dtype=config.torch_dtype)
              for i, std in enumerate([0.1, 0.5, 1.0, 2.0] * 10)]
    losses = [chain_loss(params, chain, tying=config.tying).item() for params in points]
    rate = chain.entropy_rate()
    finite = all(math.isfinite(v) for v in losses)
    lowest = int(torch.tensor(losses).argmin()) if finite else 0
    tols = {i: rounding_estimate(points[i], chain, tying=config.tying).loss + entropy_rounding(rate, chain.k)
            for i, v in enumerate(losses) if i == lowest or v < rate}
    worst = min(tols, key=lambda i: (losses[i] - rate) / tols[i])
    passed = finite and all(losses[i] >= rate - tol for i, tol in tols.items())
    return [Check("no random θ below H_rate", passed, losses[worst] if finite else math.nan, rate, tols[worst],
                  "40 random θ, entries N(0, σ²), σ ∈ {0.1, 0.5, 1, 2}; tolerance: the rounding estimate of the "
                  "loss shown plus H_rate's"
                  + ("" if finite else f"; {sum(not math.isfinite(v) for v in losses)} losses are not finite"),
                  comparison="m >= e - tol")]
