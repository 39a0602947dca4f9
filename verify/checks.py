"""Checks on a measured point of the full model: each returns ``Check`` objects with tolerances.

A point is measured once (``measure``): its loss, gradient over all D parameters and certified
Hessian spectrum; the checks then compare these with the closed forms.  Eigenvalue signs are
decided only outside their certified error bounds (``numerics.curvature``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import vmap

from numerics.curvature import (
    Spectrum,
    block_names,
    certified_spectrum,
    composition,
    describe,
    flatten,
    gradient,
    hessian,
    hessian_vector_product,
    lanczos,
    unflatten,
)
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.reference import reference_logits
from numerics.stationary_points import reduced_point
from numerics.transformer import Params, init_params, logits
from verify.cli import Config
from verify.report import Check

#: (gradient, loss, relative eigenvalue) tolerances, and the floor of eigenvalue bounds, per dtype
TOLERANCE = {"float64": (1e-10, 1e-12, 1e-9, 0.0), "float32": (1e-4, 1e-5, 1e-3, 1e-5)}


def loss_of(config: Config) -> Callable[[Params], Tensor]:
    """θ ↦ L(θ), the exact population loss for the configured source and tying."""
    return lambda params: population_loss(params, config.p, config.q, tying=config.tying)


@dataclass
class MeasuredPoint:
    """A parameter point with its loss, gradient and certified Hessian spectrum."""

    config: Config
    params: Params
    theta: Tensor
    layout: list
    value: float
    grad_max: float
    hessian: Tensor  # D × D, float64 on the CPU
    spectrum: Spectrum

    def loss_at(self, step: Tensor) -> float:
        """L(θ + step) for a flat step."""
        return loss_of(self.config)(unflatten(self.theta + step.to(self.theta), self.layout)).item()

    def blocks(self, vector: Tensor) -> str:
        """Which parameter blocks a direction lives in, e.g. 'e 100 %'."""
        return describe(composition(vector, self.layout))

    def summary(self) -> dict:
        s = self.spectrum
        return {"loss": self.value, "grad_max_abs": self.grad_max,
                "hessian_eigenvalues_nonzero": s.nonzero().tolist(), "min_eigenvalue": s.min_eigenvalue,
                "null_space_dim": s.null_space_dim, "D": s.values.numel(),
                "eigenvalue_error_bound": s.bounds.max().item(),
                "lowest_eigenvector": self.blocks(s.vectors[:, 0])}


def measure(config: Config, params: Params) -> MeasuredPoint:
    loss = loss_of(config)
    theta, layout = flatten(params)
    H = hessian(loss, params).cpu().double()
    spectrum = certified_spectrum(H, zero_floor=TOLERANCE[config.dtype][3])
    return MeasuredPoint(config, params, theta, layout, loss(params).item(),
                         gradient(loss, params).abs().max().item(), H, spectrum)


def classify(spectrum: Spectrum, normal_dim: int) -> str:
    """Morse-Bott classification of a point of a critical manifold of codimension ``normal_dim``.

    The tangent space lies in the Hessian's kernel, so the point is a local minimum when exactly
    ``normal_dim`` eigenvalues are decidedly nonzero and all are positive, a saddle when one is
    decidedly negative, and undecided otherwise.
    """
    if (spectrum.values < -spectrum.bounds).any():
        return "saddle point"
    if int((spectrum.values > spectrum.bounds).sum()) == normal_dim:
        return "local minimum"
    return "undecided"


def model_checks(config: Config) -> list[Check]:
    """The model itself: forward pass vs the plain reference, prefix tree vs full sequences."""
    params = init_params(config.d, config.seq_len, tying=config.tying, std=0.6, seed=config.seed,
                         device=config.device, dtype=config.torch_dtype)
    chain = MarkovChain(config.p, config.q)
    x = chain.sample(4, config.seq_len, seed=config.seed + 1, device=config.device, dtype=config.torch_dtype)
    fast = logits(params, x, tying=config.tying).cpu().double()
    cpu = {k: v.cpu().double() for k, v in params.items()}
    slow = torch.tensor([reference_logits(cpu, row, tying=config.tying) for row in x.long().tolist()],
                        dtype=torch.float64)
    tol = 1e-10 if config.dtype == "float64" else 1e-4
    gap = (fast - slow).abs().max().item()
    exact = population_loss(params, config.p, config.q, tying=config.tying).item()
    naive = population_loss(params, config.p, config.q, tying=config.tying, method="naive").item()
    return [
        Check("forward = paper's equations", gap <= tol, gap, 0.0, tol,
              "max |logit| gap to a position-by-position reference, random θ with attention on"),
        Check("prefix-tree loss = all-sequence loss", abs(exact - naive) <= tol, abs(exact - naive), 0.0, tol,
              f"exact {exact:.12g} vs naive {naive:.12g} at the same random θ"),
    ]


def stationary_checks(point: MeasuredPoint, target: float, target_name: str) -> list[Check]:
    """Gradient over all D parameters and the loss value against its closed form."""
    g_tol, l_tol, *_ = TOLERANCE[point.config.dtype]
    return [
        Check("stationary: max |dL/dθ|", point.grad_max <= g_tol, point.grad_max, 0.0, g_tol, "over all D parameters"),
        Check(f"loss = {target_name}", abs(point.value - target) <= l_tol * max(1.0, target), point.value, target,
              l_tol),
    ]


def spectrum_checks(point: MeasuredPoint, expected: list[float]) -> tuple[list[Check], bool]:
    """Nonzero eigenvalues vs the closed form and the null-space dimension; (checks, decided)."""
    rtol = TOLERANCE[point.config.dtype][2]
    s = point.spectrum
    measured, D = s.nonzero().tolist(), s.values.numel()
    tol = rtol * max(abs(v) for v in expected) + s.bounds.max().item()
    if any(abs(v) <= tol for v in expected):
        return [Check("Hessian spectrum = closed form", None, measured, expected, tol,
                      "an eigenvalue 2π0π1(p+q-1) is within the error bound of 0: its sign is undecided")], False
    same = len(measured) == len(expected) and all(abs(a - b) <= tol for a, b in zip(measured, expected))
    return [
        Check("Hessian spectrum = closed form", same, measured, expected, tol,
              "nonzero eigenvalues, ascending, with multiplicities"),
        Check("null-space dimension", s.null_space_dim == D - len(expected), s.null_space_dim, D - len(expected), 0.0,
              "= dim of the tangent space of M_π (all directions with δe = δa = 0, δb = 0)"),
    ], True


def lanczos_check(point: MeasuredPoint, expected: list[float], steps: int = 80) -> list[Check]:
    """Matrix-free: Lanczos on Hessian-vector products of the loss finds the closed-form extremes.

    Independent of the dense Hessian: the smallest and largest Ritz values must equal the
    extremes of the closed-form spectrum (0 included when a null space is predicted), each
    within rtol·scale plus its own residual ‖Hy - θy‖.
    """
    D = point.theta.numel()
    predicted = [*expected, 0.0] if len(expected) < D else list(expected)
    ritz = lanczos(hessian_vector_product(loss_of(point.config), point.params), D, steps=steps,
                   seed=point.config.seed, dtype=point.theta.dtype, device=point.theta.device)
    rtol = TOLERANCE[point.config.dtype][2]
    scale = max(abs(v) for v in predicted)
    found = [ritz.values[0].item(), ritz.values[-1].item()]
    target = [min(predicted), max(predicted)]
    tol = [rtol * scale + ritz.residuals[i].item() for i in (0, -1)]
    ok = all(abs(a - b) <= t for a, b, t in zip(found, target, tol))
    return [Check("Lanczos extremes = closed form", ok, found, target, max(tol),
                  f"{ritz.iterations} Hessian-vector products, full reorthogonalisation; "
                  f"lowest Ritz vector: {point.blocks(ritz.vectors[:, 0])}")]


def flatness_check(point: MeasuredPoint, seed: int) -> list[Check]:
    """L is constant along the null space for finite steps (it is the tangent space of M_π)."""
    l_tol = TOLERANCE[point.config.dtype][1]
    null = point.spectrum.vectors[:, point.spectrum.zero]
    if not null.shape[1]:
        return []
    gen = torch.Generator().manual_seed(seed)
    directions = null @ torch.randn(null.shape[1], 3, generator=gen, dtype=torch.float64)
    directions = directions / directions.norm(dim=0)
    drift = max(abs(point.loss_at(0.5 * v) - point.value) for v in directions.T)
    return [Check("flat along the null space", drift <= 10 * l_tol, drift, 0.0, 10 * l_tol,
                  "|L(θ + 0.5 v) - L(θ)| for 3 random unit null-space vectors")]


def local_min_checks(point: MeasuredPoint, curvatures: list[float], target: float) -> list[Check]:
    """No random small perturbation lowers L; gradient descent from nearby returns to the loss.

    Descent uses step 1/λ_max and as many steps as the condition number λ_max/λ_min of the
    normal block needs to shrink the gap a thousandfold (at most 400).
    """
    config = point.config
    tol = 10 * TOLERANCE[config.dtype][1]
    gen = torch.Generator().manual_seed(config.seed + 7)
    directions = torch.randn(1000, point.theta.numel(), generator=gen, dtype=torch.float64).to(point.theta)
    directions = directions / directions.norm(dim=1, keepdim=True)
    batched = vmap(lambda th: loss_of(config)(unflatten(th, point.layout)))
    worst = min((batched(point.theta + r * directions) - point.value).min().item() for r in (1e-3, 1e-2, 1e-1))
    start = directions[0] * 0.05
    initial_gap = point.loss_at(start) - point.value
    contraction = max(1 - min(curvatures) / max(curvatures), 1e-12)  # per step, slowest direction
    steps = min(400, math.ceil(math.log(1e-3) / math.log(contraction)) + 1)
    theta = point.theta + start
    for _ in range(steps):
        theta = theta - gradient(loss_of(config), unflatten(theta, point.layout)) / max(curvatures)
    gap = loss_of(config)(unflatten(theta, point.layout)).item() - target
    return [
        Check("no descent among 3000 perturbations", worst >= -tol, worst, 0.0, tol,
              "min over 1000 random unit directions × radii 1e-3, 1e-2, 1e-1 of L(θ+rv) - L(θ)"),
        Check("gradient descent returns to H(pi)", -tol <= gap <= 1e-3 * initial_gap + tol, gap, 0.0,
              1e-3 * initial_gap + tol,
              f"{steps} steps of size 1/λ_max from a perturbation of norm 0.05 (initial gap {initial_gap:.3g})"),
    ]


def saddle_check(point: MeasuredPoint) -> list[Check]:
    """L decreases along the lowest eigenvector by λ_min t²/2 to within 5 %."""
    step = 1e-2
    lowest = point.spectrum.vectors[:, 0]
    drop = point.loss_at(step * lowest) - point.value
    predicted = 0.5 * step**2 * point.spectrum.min_eigenvalue
    tol = 0.05 * abs(predicted)
    return [Check("descent along negative curvature", drop < 0 and abs(drop - predicted) <= tol, drop, predicted,
                  tol, f"L(θ + 0.01 v_min) - L(θ) vs λ_min/2 · 0.01²; v_min = {point.blocks(lowest)}")]


def psd_check(point: MeasuredPoint) -> list[Check]:
    lam, bound = point.spectrum.min_eigenvalue, point.spectrum.bounds[0].item()
    return [Check("Hessian positive semidefinite", lam >= -bound, lam, 0.0, bound,
                  "smallest eigenvalue ≥ -(certified error bound)")]


def manifold_point(config: Config, chain: MarkovChain, *, pos_std: float, weight_std: float, seed: int,
                   all_weights: bool = False) -> Params:
    """A point of M_π: e = a = 0, b = log(p/q), random pos and W_Q, W_K, W_V (and, if
    ``all_weights``, random W_O, W_1, W_2 too; otherwise those are 0)."""
    params = init_params(config.d, config.seq_len, tying=config.tying, std=weight_std, seed=seed,
                         device=config.device, dtype=config.torch_dtype)
    params["pos"] = params["pos"] * (pos_std / weight_std)
    zero = ["e", "a"] + ([] if all_weights else ["W_O", "W_1", "W_2"])
    params |= {k: torch.zeros_like(params[k]) for k in zero if k in params}
    params["b"] = torch.tensor(chain.unigram_logit(), device=config.device, dtype=config.torch_dtype)
    return params


def manifold_checks(config: Config, chain: MarkovChain) -> list[Check]:
    """Claim MANIFOLD at two points of M_π (W_O = W_1 = W_2 = 0): positions of small and of
    large spread.  At each, the (e, b) Schur complement must equal π0π1[Cov_n(p_n) + 2(p+q-1)I]
    and the full-space classification must follow the sign of its smallest eigenvalue."""
    checks = []
    rtol = TOLERANCE[config.dtype][2]
    k = chain.pi[0] * chain.pi[1]
    for label, spread in (("small", 0.3), ("large", 3.0)):
        params = manifold_point(config, chain, pos_std=spread, weight_std=0.7, seed=config.seed + 3)
        point = measure(config, params)
        d, H, names = config.d, point.hessian, block_names(point.layout)
        e_idx = [i for i, name in enumerate(names) if name == "e"]
        b_idx = names.index("b")
        H_ee, H_eb, H_bb = H[e_idx][:, e_idx], H[e_idx, b_idx], H[b_idx, b_idx]
        schur = H_ee - torch.outer(H_eb, H_eb) / H_bb
        cov = torch.cov(params["pos"].cpu().double().T, correction=0).reshape(d, d)
        expected = k * (cov + 2 * (chain.p + chain.q - 1) * torch.eye(d, dtype=torch.float64))
        gap = (schur - expected).abs().max().item()
        tol = rtol * max(1.0, expected.abs().max().item())
        checks.append(Check(f"M_π Schur block = π0π1[Cov+2(p+q-1)I] ({label} spread)", gap <= tol, gap, 0.0, tol,
                            "Hessian in (e, b) at random pos, W_Q, W_K, W_V; W_O = W_1 = W_2 = 0"))
        lam = torch.linalg.eigvalsh(expected)[0].item()
        bound = point.spectrum.bounds.max().item() + tol
        predicted = "local minimum" if lam > bound else "saddle point" if lam < -bound else "undecided"
        found = classify(point.spectrum, normal_dim=d + 1)
        passed = None if "undecided" in (predicted, found) else predicted == found
        checks.append(Check(f"M_π point class follows λ_min(Cov)+2(p+q-1) ({label} spread)", passed, found,
                            predicted, bound, f"λ_min(π0π1[Cov+2(p+q-1)I]) = {lam:.4g}; full-space Hessian says "
                            f"{found} (min eigenvalue {point.spectrum.min_eigenvalue:.3g})"))
    return checks


def scan_manifold(config: Config, chain: MarkovChain, count: int) -> dict:
    """Claim MANIFOLD, empirically: ``count`` random points of M_π with every weight random
    (W_O, W_1, W_2 too) and their Morse-Bott class."""
    from tqdm import tqdm

    classes = []
    for i in tqdm(range(count), desc="scanning M_π", disable=count < 3, leave=False):
        params = manifold_point(config, chain, pos_std=0.7, weight_std=0.7, seed=config.seed + 100 + i,
                                all_weights=True)
        spectrum = measure(config, params).spectrum
        classes.append({"class": classify(spectrum, normal_dim=config.d + (1 if config.tying else config.d + 1)),
                        "min_eigenvalue": spectrum.min_eigenvalue})
    minima = sum(c["class"] == "local minimum" for c in classes)
    return {"points": count, "local_minima": minima, "fraction_minima": minima / count if count else None,
            "classes": classes}


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
        worst = max(worst, abs(full - fn(config.p, config.q, *(values[k] for k in names))))
    tol = TOLERANCE[config.dtype][1] * 10
    return [Check("full model on φ(ρ) = reduced L(ρ)", worst <= tol, worst, 0.0, tol,
                  "5 random ρ with c > 0, s + c > 0 (ReLU in its linear regime)")]


def below_entropy_rate_check(config: Config, chain: MarkovChain) -> list[Check]:
    """L(θ) ≥ H_rate at 40 random θ of several scales (the bigram loss is a lower bound)."""
    l_tol = TOLERANCE[config.dtype][1]
    losses = [population_loss(init_params(config.d, config.seq_len, tying=config.tying, std=std,
                                          seed=config.seed + 11 + i, device=config.device, dtype=config.torch_dtype),
                              config.p, config.q, tying=config.tying).item()
              for i, std in enumerate([0.1, 0.5, 1.0, 2.0] * 10)]
    lowest = min(losses)
    return [Check("no random θ below H_rate", lowest >= chain.entropy_rate() - l_tol, lowest, chain.entropy_rate(),
                  l_tol, "40 random θ, entries N(0, σ²), σ ∈ {0.1, 0.5, 1, 2}")]
