"""The verifications: build the point, measure it with autograd, compare with the closed forms.

``analyse_unigram`` serves theorem_local_min and theorem_saddle (both study θ_π; which one
the theory predicts depends on tying and the sign of p + q - 1), ``analyse_bigram`` serves
theorem_global_min.  Every check carries its tolerance; eigenvalue signs are decided only
outside their certified error bound (``numerics.curvature``).
"""

from __future__ import annotations

import math

import torch
from torch.func import vmap

from numerics.curvature import (
    certified_spectrum,
    composition,
    describe,
    flatten,
    gradient,
    hessian,
    unflatten,
)
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.reference import reference_logits
from numerics.stationary_points import reduced_point, theta_pi, theta_star
from numerics.transformer import init_params, logits
from verify.cli import Config
from verify.report import Check, Report

#: (gradient, loss, eigenvalue-relative) tolerances per dtype
TOLERANCE = {"float64": (1e-10, 1e-12, 1e-9), "float32": (1e-4, 1e-5, 1e-3)}


def _loss_fn(config: Config):
    return lambda params: population_loss(params, config.p, config.q, tying=config.tying)


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


def stationary_checks(config: Config, params, loss, target: float, target_name: str) -> tuple[list[Check], dict]:
    """Gradient over all D parameters and the loss value against its closed form."""
    g_tol, l_tol, _ = TOLERANCE[config.dtype]
    grad_max = gradient(loss, params).abs().max().item()
    value = loss(params).item()
    checks = [
        Check("stationary: max |dL/dθ|", grad_max <= g_tol, grad_max, 0.0, g_tol, "over all D parameters"),
        Check(f"loss = {target_name}", abs(value - target) <= l_tol * max(1.0, target), value, target, l_tol),
    ]
    return checks, {"loss": value, "grad_max_abs": grad_max}


def _closed_spectrum(config: Config, chain: MarkovChain) -> list[float]:
    from theory.landscape import numeric_spectrum

    fn, per_d = numeric_spectrum(config.tying)
    values = fn(chain.p, chain.q)
    return sorted(v for v, k in zip(values, per_d) for _ in range(config.d if k else 1))


def predict_unigram(config: Config) -> str:
    if config.p + config.q == 1:
        return "global minimum (degenerate: p + q = 1, i.i.d. source)"
    if config.tying and config.p + config.q > 1:
        return "local minimum"
    return "saddle point"


def analyse_unigram(config: Config, theorem: str) -> Report:
    """θ_π (e = a = 0, pos = 0, W = 0, b = log(p/q)): stationarity, spectrum, and the prediction."""
    chain = MarkovChain(config.p, config.q)
    _, l_tol, e_rtol = TOLERANCE[config.dtype]
    params = theta_pi(chain, config.d, config.seq_len, tying=config.tying,
                      device=config.device, dtype=config.torch_dtype)
    loss = _loss_fn(config)
    checks = model_checks(config)
    stat, numeric = stationary_checks(config, params, loss, chain.unigram_loss(), "H(pi)")
    checks += stat
    spectrum = certified_spectrum(hessian(loss, params).cpu().double(),
                                  zero_floor=0.0 if config.dtype == "float64" else 1e-5)
    expected = _closed_spectrum(config, chain)
    measured = spectrum.nonzero().tolist()
    D = spectrum.values.numel()
    scale = max(abs(v) for v in expected)
    tol = e_rtol * scale + spectrum.bounds.max().item()
    undecided = [v for v in expected if abs(v) <= tol]
    if undecided:
        checks.append(Check("Hessian spectrum = closed form", None, measured, expected, tol,
                            "an eigenvalue 2π0π1(p+q-1) is within the error bound of 0: its sign is undecided"))
    else:
        same = len(measured) == len(expected) and all(abs(a - b) <= tol for a, b in zip(measured, expected))
        checks.append(Check("Hessian spectrum = closed form", same, measured, expected, tol,
                            "nonzero eigenvalues, ascending, with multiplicities"))
        checks.append(Check("null-space dimension", spectrum.null_space_dim == D - len(expected),
                            spectrum.null_space_dim, D - len(expected), 0.0,
                            "= dim of the tangent space of M_π (all directions with δe = δa = 0, δb = 0)"))
    _, layout = flatten(params)
    theta = flatten(params)[0]
    gen = torch.Generator().manual_seed(config.seed)
    null = spectrum.vectors[:, spectrum.zero]
    if null.shape[1]:
        directions = null @ torch.randn(null.shape[1], 3, generator=gen, dtype=torch.float64)
        directions = (directions / directions.norm(dim=0)).to(theta)
        drift = max(abs(loss(unflatten(theta + 0.5 * v, layout)).item() - numeric["loss"]) for v in directions.T)
        checks.append(Check("flat along the null space", drift <= 10 * l_tol, drift, 0.0, 10 * l_tol,
                            "|L(θ + 0.5 v) - L(θ)| for 3 random unit null-space vectors"))
    prediction = predict_unigram(config)
    lowest = spectrum.vectors[:, 0]
    numeric |= {"hessian_eigenvalues_nonzero": measured, "min_eigenvalue": spectrum.min_eigenvalue,
                "null_space_dim": spectrum.null_space_dim, "D": D,
                "eigenvalue_error_bound": spectrum.bounds.max().item(),
                "lowest_eigenvector": describe(composition(lowest, layout))}
    if prediction == "local minimum" and not undecided:
        checks += local_min_checks(config, loss, theta, layout, numeric["loss"], chain, expected)
    elif prediction == "saddle point" and not undecided:
        step = 1e-2
        drop = loss(unflatten(theta + step * lowest.to(theta), layout)).item() - numeric["loss"]
        predicted = 0.5 * step**2 * spectrum.min_eigenvalue
        tol = 0.05 * abs(predicted)
        checks.append(Check("descent along negative curvature", drop < 0 and abs(drop - predicted) <= tol,
                            drop, predicted, tol,
                            "L(θ + 0.01 v_min) - L(θ) vs λ_min/2 · 0.01²; "
                            f"v_min = {describe(composition(lowest, layout))}"))
    if config.tying:
        checks.append(manifold_condition_check(config, chain))
    return Report(theorem, ["STAT-PI", "LOCAL-MIN" if config.tying else "SADDLE-UNTIED", "SADDLE", "MANIFOLD"],
                  config.inputs(), prediction,
                  {"loss": chain.unigram_loss(), "hessian_eigenvalues": expected}, numeric, checks)


def local_min_checks(config: Config, loss, theta, layout, base: float, chain: MarkovChain,
                     curvatures: list[float]) -> list[Check]:
    """No random small perturbation lowers L; gradient descent from nearby returns to H(π).

    Descent uses step 1/λ_max and as many steps as the condition number λ_max/λ_min of the
    normal block needs to shrink the gap to H(π) a thousandfold (at most 400).
    """
    _, l_tol, _ = TOLERANCE[config.dtype]
    gen = torch.Generator().manual_seed(config.seed + 7)
    directions = torch.randn(1000, theta.numel(), generator=gen, dtype=torch.float64).to(theta)
    directions = directions / directions.norm(dim=1, keepdim=True)
    batched = vmap(lambda th: loss(unflatten(th, layout)))
    worst = min((batched(theta + radius * directions) - base).min().item() for radius in (1e-3, 1e-2, 1e-1))
    tol = 10 * l_tol
    checks = [Check("no descent among 3000 perturbations", worst >= -tol, worst, 0.0, tol,
                    "min over 1000 random unit directions × radii 1e-3, 1e-2, 1e-1 of L(θ+rv) - L(θ)")]
    point = theta + 0.05 * directions[0]
    start = loss(unflatten(point, layout)).item() - base
    step = 1 / max(curvatures)
    contraction = max(1 - min(curvatures) / max(curvatures), 1e-12)  # per step, slowest direction
    steps = min(400, math.ceil(math.log(1e-3) / math.log(contraction)) + 1)
    for _ in range(steps):
        point = point - step * gradient(loss, unflatten(point, layout))
    gap = loss(unflatten(point, layout)).item() - base
    checks.append(Check("gradient descent returns to H(pi)", -tol <= gap <= 1e-3 * start + tol, gap,
                        0.0, 1e-3 * start + tol,
                        f"{steps} steps of size 1/λ_max from a perturbation of norm 0.05 (initial gap "
                        f"{start:.3g}; H_rate = {chain.entropy_rate():.6f} is lower)"))
    return checks


def manifold_condition_check(config: Config, chain: MarkovChain) -> Check:
    """Claim MANIFOLD: on M_π with W_O = W_1 = W_2 = 0 and arbitrary pos, W_Q, W_K, W_V, the
    (e, b) Hessian's Schur complement over b is π0π1 [Cov_n(p_n) + 2(p+q-1) I]."""
    params = init_params(config.d, config.seq_len, tying=True, std=0.7, seed=config.seed + 3,
                         device=config.device, dtype=config.torch_dtype)
    params |= {"e": torch.zeros_like(params["e"]), "W_O": torch.zeros_like(params["W_O"]),
               "W_1": torch.zeros_like(params["W_1"]), "W_2": torch.zeros_like(params["W_2"]),
               "b": torch.tensor(chain.unigram_logit(), device=config.device, dtype=config.torch_dtype)}
    rest = {k: v for k, v in params.items() if k not in ("e", "b")}
    loss = _loss_fn(config)
    H = hessian(lambda eb: loss(rest | eb), {"e": params["e"], "b": params["b"]}).cpu().double()
    d = config.d
    schur = H[:d, :d] - torch.outer(H[:d, d], H[d, :d]) / H[d, d]
    pos = params["pos"].cpu().double()
    cov = torch.cov(pos.T, correction=0).reshape(d, d)
    k = chain.pi[0] * chain.pi[1]
    expected = k * (cov + 2 * (chain.p + chain.q - 1) * torch.eye(d, dtype=torch.float64))
    gap = (schur - expected).abs().max().item()
    tol = TOLERANCE[config.dtype][2] * max(1.0, expected.abs().max().item())
    lam = torch.linalg.eigvalsh(expected)[0].item()
    kind = "local minimum" if lam > tol else "saddle" if lam < -tol else "undecided"
    return Check("M_π normal block = π0π1[Cov(p_n)+2(p+q-1)I]", gap <= tol, gap, 0.0, tol,
                 f"random pos, W_Q, W_K, W_V: λ_min = {lam:.4g} → this point of M_π is a {kind}")


def analyse_bigram(config: Config, theorem: str) -> Report:
    """θ_*: stationarity, loss = H_rate, PSD Hessian, no random point below H_rate, reduced = full."""
    chain = MarkovChain(config.p, config.q)
    l_tol = TOLERANCE[config.dtype][1]
    params = theta_star(chain, config.d, config.seq_len, tying=config.tying,
                        device=config.device, dtype=config.torch_dtype)
    loss = _loss_fn(config)
    checks = model_checks(config)
    stat, numeric = stationary_checks(config, params, loss, chain.entropy_rate(), "H_rate")
    checks += stat
    spectrum = certified_spectrum(hessian(loss, params).cpu().double(),
                                  zero_floor=0.0 if config.dtype == "float64" else 1e-5)
    lam, bound = spectrum.min_eigenvalue, spectrum.bounds[0].item()
    checks.append(Check("Hessian positive semidefinite", lam >= -bound, lam, 0.0, bound,
                        "smallest eigenvalue ≥ -(certified error bound)"))
    gen_seed = config.seed + 11
    random_losses = [population_loss(init_params(config.d, config.seq_len, tying=config.tying, std=std,
                                                 seed=gen_seed + i, device=config.device, dtype=config.torch_dtype),
                                     config.p, config.q, tying=config.tying).item()
                     for i, std in enumerate([0.1, 0.5, 1.0, 2.0] * 10)]
    lowest = min(random_losses)
    checks.append(Check("no random θ below H_rate", lowest >= chain.entropy_rate() - l_tol, lowest,
                        chain.entropy_rate(), l_tol, "40 random θ, entries N(0, σ²), σ ∈ {0.1, 0.5, 1, 2}"))
    checks.append(reduced_model_check(config, chain))
    numeric |= {"hessian_eigenvalues_nonzero": spectrum.nonzero().tolist(), "min_eigenvalue": lam,
                "null_space_dim": spectrum.null_space_dim, "D": spectrum.values.numel(),
                "eigenvalue_error_bound": spectrum.bounds.max().item()}
    return Report(theorem, ["GLOBAL-MIN", "REDUCED"], config.inputs(), "global minimum",
                  {"loss": chain.entropy_rate(), "hessian_eigenvalues": None,
                   "hessian": "positive semidefinite: Gauss-Newton Gram matrix, all residuals vanish"},
                  numeric, checks)


def reduced_model_check(config: Config, chain: MarkovChain) -> Check:
    """Claim REDUCED: L_full(φ(ρ)) = L_reduced(ρ) at random ρ in the exact region."""
    import sympy as sp

    from theory import reduced as R
    from theory.markov import p, q

    symbols = R.parameters(config.tying)
    fn = sp.lambdify((p, q, *symbols), R.loss(config.tying), modules="math", cse=True)
    gen = torch.Generator().manual_seed(config.seed + 5)
    worst = 0.0
    for _ in range(5):
        s, t, b, g = (torch.randn(4, generator=gen, dtype=torch.float64) * 0.8).tolist()
        c = 0.2 + abs(s) + torch.rand(1, generator=gen).item()  # c > 0 and s + c > 0
        values = {"s": s, "t": t, "b": b, "c": c, "g": g}
        full = population_loss(reduced_point(s, s if config.tying else t, b, c, g, config.d, config.seq_len,
                                             tying=config.tying, device=config.device, dtype=config.torch_dtype),
                               config.p, config.q, tying=config.tying).item()
        reduced = fn(config.p, config.q, *(values[str(x)] for x in symbols))
        worst = max(worst, abs(full - reduced))
    tol = TOLERANCE[config.dtype][1] * 10
    return Check("full model on φ(ρ) = reduced L(ρ)", worst <= tol, worst, 0.0, tol,
                 "5 random ρ with c > 0, s + c > 0 (ReLU in its linear regime)")

