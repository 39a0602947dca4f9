"""Checks of claims ``MANIFOLD`` and ``MANIFOLD-GENERAL``: the normal block on M_π against independent measurements.

``numerics.manifold`` computes the Hessian of the population loss at a point of M_π from one
forward pass and the attention Jacobian (closed form for one layer, forward mode for any depth, mask
and layer norm).  Here it meets what does not share that derivation: the dense autograd Hessian of
the exact loss over all D parameters (N ≤ 12), the loss itself along the predicted escape direction,
and, where the exact loss is out of reach, an unbiased Monte-Carlo mean of per-sequence Hessians
(first- or second-order source, the model's own mask).  Also the special case
(W_O = W_1 = W_2 = 0 in every layer: S = π0π1[Cov_n(pos_n) + 2(p+q-1)I]) at two position spreads.  The
dense comparison at a point with every weight random also catches a wrong softmax scale or a leaking
mask in the model: the normal block carries its own 1/√d and causal (windowed) sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor

from numerics.autocovariance import Source
from numerics.curvature import block_names
from numerics.manifold import (
    KINK,
    LOCAL_MINIMUM,
    SADDLE_POINT,
    ManifoldCurvature,
    MultistateCurvature,
    SampledBlock,
    manifold_curvature,
    multistate_curvature,
    project_onehot_to_manifold,
    project_to_manifold,
    sampled_block,
    sampling_bytes,
)
from numerics.markov import MarkovChain
from numerics.population import memory_budget_bytes
from numerics.transformer import Params, has_layer_norm, init_params, layer_key, num_layers
from verify import checks as C
from verify.cli import Config
from verify.measure import MeasuredPoint, classify, closed_form_rounding, measure
from verify.report import Check

#: The normal block of the scalar model or of the one-hot model (k symbols).
Curvature = ManifoldCurvature | MultistateCurvature
#: Standard errors allowed between the Monte-Carlo block and the closed form, per entry.
STANDARD_ERRORS = 4.0
#: Fewest state changes in the sample for its standard errors to mean anything: a chain that
#: almost never switches (p or q ~ 1e-6) gives identical sequences, a zero spread and no estimate.
MIN_SWITCHES = 30
#: Sequences of the pilot sample that measures the per-sequence spread before the sample size is chosen
#: (the spread's relative error is about 1/√(2 · 100) = 7 %, which the factor 2 of ``sample_size`` covers).
PILOT_SAMPLES = 100
#: Work the automatic sample may take, in position-coordinate products (N m d² per sequence): about 30 s
#: of per-sequence Hessians on 2 busy CPU cores (measured 8.8e-8 s per product at N = 1024, d = 4).
WORK_BUDGET = 300_000_000


def manifold_point(config: Config, source: Source, *, pos_std: float, weight_std: float, seed: int,
                   all_weights: bool = False, layers: int = 1, layer_norm: bool = False) -> Params:
    """A point of M_π of ``source`` in float64 on the CPU with ``layers`` blocks: e = a = 0 (one-hot model of
    ``config.onehot``: E = A = 0), b = log(π1/π0) (one-hot: log π), pos ~ N(0, pos_std²) and every W_Q, W_K,
    W_V ~ N(0, weight_std²) (and, if ``all_weights``, W_O, W_1, W_2 too; otherwise 0); with ``layer_norm`` every
    gain 1 + N(0, weight_std²) and bias N(0, weight_std²)."""
    params = init_params(config.d, config.seq_len, tying=config.tying, layers=layers, std=1.0, seed=seed,
                         symbols=source.k if config.onehot else None)
    params = {k: v * (pos_std if k == "pos" else weight_std) for k, v in params.items()}
    if not all_weights:
        params |= {k: torch.zeros_like(params[k]) for k in (layer_key(name, layer) for layer in range(layers)
                                                             for name in ("W_O", "W_1", "W_2"))}
    if layer_norm:
        norms = init_params(config.d, config.seq_len, layers=layers, layer_norm=True, std=0.0)
        gen = torch.Generator().manual_seed(seed + 1)
        params |= {k: v + weight_std * torch.randn(v.shape, generator=gen, dtype=torch.float64)
                   for k, v in norms.items() if k.startswith("ln_")}
    if config.onehot:
        return project_onehot_to_manifold(params, source, tying=config.tying)
    return project_to_manifold(params, tying=config.tying, source=source)


def normal_block(config: Config, params: Params) -> tuple[Params, Curvature, str]:
    """``params`` projected onto M_π of ``config.source`` (float64, CPU), its normal block (computed on
    ``config.device``, attention memory ``config.memory``) and the route: the one-hot model of a k-state chain
    by ``multistate_curvature`` (forward mode), the scalar model by ``manifold_curvature`` (the closed form for one
    layer without layer norm, forward mode otherwise)."""
    source = config.source
    exact = {k: v.detach().cpu().double() for k, v in params.items()}
    if config.onehot:
        exact = project_onehot_to_manifold(exact, source, tying=config.tying)
        on_device = {k: v.to(config.device) for k, v in exact.items()}
        return exact, multistate_curvature(on_device, source, tying=config.tying, memory=config.memory), \
            "forward-mode"
    exact = project_to_manifold(exact, tying=config.tying, source=source)
    on_device = {k: v.to(config.device) for k, v in exact.items()}
    route = "closed-form" if num_layers(exact) == 1 and not has_layer_norm(exact) else "forward-mode"
    return exact, manifold_curvature(on_device, tying=config.tying, source=source, memory=config.memory,
                                     route=route), route


def normal_indices(point: MeasuredPoint, tying: bool) -> list[int]:
    """Flat indices of the normal coordinates in the block's order: e, (a,) b (one-hot: E, (A,) b, symbol-major)."""
    names = block_names(point.layout)
    order = [name for name in (("e", "E", "b") if tying else ("e", "E", "a", "A", "b")) if name in names]
    return [i for block in order for i, name in enumerate(names) if name == block]


def formula_block_check(point: MeasuredPoint, curvature: Curvature, name: str) -> Check:
    """The dense Hessian's normal block equals the closed form entry by entry, and the rest of the
    dense Hessian vanishes (the formula says M_π's tangent space is in the kernel)."""
    idx = normal_indices(point, point.config.tying)
    H = point.hessian
    rest = H.clone()
    rest[torch.tensor(idx)[:, None], torch.tensor(idx)[None, :]] = 0.0
    gap = max((H[idx][:, idx] - curvature.block.cpu().double()).abs().max().item(), rest.abs().max().item())
    tol = point.spectrum.hessian_error + curvature.error_bound
    if curvature.reason.startswith(KINK):  # the Hessian depends on the side of the kink autodiff takes
        return Check(name, None, gap, 0.0, tol, curvature.reason)
    return Check(name, gap <= tol, gap, 0.0, tol,
                 "dense Hessian vs k[mean zzᵀ - (A + Aᵀ)], k z̄, k (untied: the (e, a, b) block), "
                 "max |gap| in the block and outside it")


def manifold_checks(config: Config, chain: MarkovChain, *, layers: int = 1) -> list[Check]:
    """Claim MANIFOLD at two points of M_π with ``layers`` blocks without layer norm (W_O = W_1 = W_2 = 0 in
    each, so z_n = pos_n whatever the attention and its memory): positions of small and of large spread.  At each,
    the (e, b) Schur complement must equal π0π1[Cov_n(p_n) + 2(p+q-1)I] and the full-space classification must
    follow the sign of its smallest eigenvalue."""
    checks = []
    k = chain.pi[0] * chain.pi[1]
    for label, spread in (("small", 0.3), ("large", 3.0)):
        params = manifold_point(config, chain, pos_std=spread, weight_std=0.7, seed=config.seed + 3,
                                layers=layers)
        point = measure(config, params)
        d, H = config.d, point.hessian
        idx = normal_indices(point, True)
        e_idx, b_idx = idx[:d], idx[d]
        H_ee, H_eb, H_bb = H[e_idx][:, e_idx], H[e_idx, b_idx], H[b_idx, b_idx]
        schur = H_ee - torch.outer(H_eb, H_eb) / H_bb
        cov = torch.cov(params["pos"].cpu().double().T, correction=0).reshape(d, d)
        expected = k * (cov + 2 * (chain.p + chain.q - 1) * torch.eye(d, dtype=torch.float64))
        gap = (schur - expected).abs().max().item()
        # the Schur complement of the measured H moves by δH_ee + 2|H_eb| δH_eb / H_bb + H_eb² δH_bb / H_bb²
        # with every δ at most the Hessian's error estimate; the closed form rounds as a d-term sum
        ratio = H_eb.abs().max().item() / H_bb.item()
        tol = point.spectrum.hessian_error * (1 + ratio) ** 2 + closed_form_rounding(expected.reshape(-1), d + 2)
        checks.append(Check(f"M_π Schur block = π0π1[Cov+2(p+q-1)I] ({label} spread)", gap <= tol, gap, 0.0, tol,
                            "Hessian in (e, b) at random pos, W_Q, W_K, W_V; W_O = W_1 = W_2 = 0"))
        lam = torch.linalg.eigvalsh(expected)[0].item()
        bound = point.spectrum.bounds.max().item() + tol
        predicted = "local minimum" if lam > bound else "saddle point" if lam < -bound else "undecided"
        found = classify(point.spectrum, normal_dim=d + 1)
        passed = None if "undecided" in (predicted, found) else predicted == found
        checks.append(Check(f"M_π point class follows λ_min(Cov)+2(p+q-1) ({label} spread)", passed, found,
                            predicted, bound, f"λ_min(π0π1[Cov+2(p+q-1)I]) = {lam:.4g}; full-space Hessian says "
                            f"{found} (min eigenvalue {point.spectrum.min_eigenvalue:.3g})", comparison="m = e"))
    return checks


def escape_vector(point: MeasuredPoint, curvature: Curvature) -> Tensor:
    """The escape direction (a unit vector in the normal coordinates) as a flat step in all D."""
    parts = curvature.escape_direction
    normal = torch.cat([torch.as_tensor(parts[name]).reshape(-1).cpu().double()
                        for name in ("e", "E", "a", "A", "b") if name in parts])
    flat = torch.zeros(point.theta.numel(), dtype=torch.float64)
    flat[normal_indices(point, point.config.tying)] = normal
    return flat


def dense_checks(point: MeasuredPoint, curvature: Curvature, unigram_loss: float,
                 entropy_rate: float, gap: float | None) -> list[Check]:
    """Claim MANIFOLD at one point against the exact loss (N ≤ 12): stationary at H(π), the dense
    Hessian equal to the block with nothing outside it, the same nonzero spectrum and null space
    D - (d+1) (untied D - (2d+1)), flat along M_π, and the predicted class seen by the loss itself:
    descent along the escape direction for a saddle, no nearby descent for a local minimum.  ``gap``:
    H(π) - H_rate without cancellation (None for an i.i.d. source), which the loss check must resolve."""
    checks = [*C.stationary_checks(point, unigram_loss, "H(pi)", None if gap is None else entropy_rate, "H_rate",
                                   gap),
              formula_block_check(point, curvature, "M_π block = dense Hessian"),
              *C.flatness_check(point, point.config.seed)]
    if curvature.reason.startswith(KINK):
        return checks
    expected = curvature.eigenvalues.tolist()
    spectrum, decided = C.spectrum_checks(point, expected, reference="M_π formula",
                                          expected_error=curvature.error_bound)
    checks += spectrum
    if decided and curvature.classification == SADDLE_POINT:
        checks += C.saddle_check(point, expected[0], escape_vector(point, curvature),
                                 name="descent along the escape direction", expected_error=curvature.error_bound)
    elif decided and curvature.classification == LOCAL_MINIMUM:
        checks += C.no_descent_check(point, expected[0])
    return checks


def block_threshold(entries: int, false_alarm: float = 1e-4) -> float:
    """Standard errors each of ``entries`` Monte-Carlo entries may deviate by, so that a correct block
    fails with probability at most ``false_alarm`` overall (Bonferroni over the entries, Gaussian
    means): 4.6 for the 5 × 5 tied block at d = 4, 5.3 for 1000 entries; never below
    ``STANDARD_ERRORS``."""
    return max(STANDARD_ERRORS, NormalDist().inv_cdf(1 - false_alarm / (2 * entries)))


def sampled_block_check(curvature: ManifoldCurvature, sampled: SampledBlock) -> Check:
    """Claim MANIFOLD at any N: every entry of the closed-form block lies within ``block_threshold``
    standard errors of the unbiased Monte-Carlo mean of per-sequence Hessians
    (``numerics.manifold.sampled_block``), plus the rounding of both: the closed form's error bound and
    the mean's, 16 ε ⌈log₂ 2S⌉ (|entry| + its per-sequence spread) for S sequences (entries such as
    H_bb = k are the same in every sequence: standard error 0)."""
    block = curvature.block.cpu().double()
    eps = torch.finfo(torch.float64).eps
    rounding = (curvature.error_bound
                + 16 * eps * math.ceil(math.log2(2 * sampled.samples)) * (block.abs() + sampled.spread))
    threshold = block_threshold(block.numel())
    # in standard errors, with the rounding spread over them: z ≤ t ⇔ |gap| ≤ t se + rounding
    z = ((sampled.mean - block).abs() / (sampled.stderr + rounding / threshold)).max().item()
    detail = (f"max over the {block.numel()} entries of |mean - formula| in standard errors (+ rounding, at most "
              f"{rounding.max().item():.1e}) over {sampled.samples} sampled sequences, against {threshold:.2f} "
              f"(false-alarm probability 1e-4 over all entries); largest standard error "
              f"{sampled.stderr.max().item():.2e}")
    name = "M_π block = Monte-Carlo Hessian"
    if curvature.reason.startswith(KINK):
        return Check(name, None, z, 0.0, threshold, curvature.reason)
    if sampled.switches < MIN_SWITCHES:
        return Check(name, None, z, 0.0, threshold,
                     f"the sampled sequences change state only {sampled.switches} times (< {MIN_SWITCHES}): "
                     "their spread does not estimate the block's; use the dense route (N ≤ 12) or more --samples")
    return Check(name, z <= threshold, z, 0.0, threshold, detail)


def sampled_class_check(curvature: ManifoldCurvature, sampled: SampledBlock, size: SampleSize | None = None) -> Check:
    """The class of the point read off the Monte-Carlo block alone equals the closed form's.

    By Weyl each eigenvalue of the mean lies within ‖mean - block‖₂ of the block's; entrywise
    |mean - block| ≤ 4 standard errors, and the spectral norm of a matrix is at most that of any
    nonnegative matrix bounding it entrywise, so the shift is at most 4‖stderr‖₂.  The sampled
    class is decided only beyond that bound; a closed form that is undecided, a sample that
    cannot decide, or an automatic ``size`` cut short by its budget leaves the check undecided (the
    verdict is then inconclusive).
    """
    found = torch.linalg.eigvalsh(sampled.mean)
    bound = STANDARD_ERRORS * torch.linalg.matrix_norm(sampled.stderr, ord=2).item() + curvature.error_bound
    low = found[0].item()
    sampled_class = SADDLE_POINT if low < -bound else LOCAL_MINIMUM if low > bound else "undecided"
    detail = f"λ_min of the Monte-Carlo block {low:.4g} ± {bound:.2g}; closed form {curvature.min_eigenvalue:.4g}"
    if size is not None:
        detail = f"{detail}; {size.samples} sequences: {size.reason}"
    if curvature.classification not in (LOCAL_MINIMUM, SADDLE_POINT):
        return Check("M_π class = Monte-Carlo class", None, sampled_class, curvature.classification, bound,
                     f"{detail}; the closed form cannot decide: {curvature.reason}", comparison="m = e")
    if size is not None and size.capped:
        return Check("M_π class = Monte-Carlo class", None, sampled_class, curvature.classification, bound,
                     detail, comparison="m = e")
    if sampled_class == "undecided" or sampled.switches < MIN_SWITCHES:
        return Check("M_π class = Monte-Carlo class", None, sampled_class, curvature.classification, bound,
                     f"{detail}; the sample cannot decide", comparison="m = e")
    return Check("M_π class = Monte-Carlo class", sampled_class == curvature.classification, sampled_class,
                 curvature.classification, bound, detail, comparison="m = e")


@dataclass(frozen=True)
class SampleSize:
    """How many sequences the Monte-Carlo route drew and why (the report's ``numeric.sample_size``).

    ``rule``: "--samples" (forced), "pilot spread" (enough for the class check, within the cap) or "pilot
    only" (no size can decide: the closed form is undecided).  ``needed``: the size the class check needs by
    the pilot's spread (None where none can do); ``cap``: the budget's largest size (None when forced).
    """

    samples: int
    rule: str
    reason: str
    pilot: int | None = None
    spread_norm: float | None = None
    needed: int | None = None
    cap: int | None = None

    @property
    def capped(self) -> bool:
        """Did the budget cut the sample below what the class check needs?"""
        return self.needed is not None and self.cap is not None and self.needed > self.cap


def memory_cap(seq_len: int, d: int, tying: bool, device: torch.device) -> int:
    """The most sequences one Monte-Carlo pass holds within a quarter of the memory budget
    (``numerics.manifold.sampling_bytes``): more is refused, even when asked for by --samples."""
    size = d + 1 if tying else 2 * d + 1
    return int(memory_budget_bytes(device) // (4 * sampling_bytes(seq_len, size, 8)))


def sample_cap(seq_len: int, d: int, tying: bool, device: torch.device) -> int:
    """The most sequences the automatic sample may draw: ``WORK_BUDGET`` position-coordinate products
    (N m d² per sequence, m = d + 1 tied, 2d + 1 untied) and ``memory_cap``, never below the pilot."""
    size = d + 1 if tying else 2 * d + 1
    work = WORK_BUDGET // (seq_len * size * d * d)
    return int(max(PILOT_SAMPLES, min(work, memory_cap(seq_len, d, tying, device))))


def sample_size(curvature: ManifoldCurvature, pilot: SampledBlock, cap: int) -> SampleSize:
    """The sample the class check needs, from the pilot's per-sequence spread σ (entrywise, so ‖σ‖₂ its
    spectral norm): ``sampled_class_check`` decides when |λ_min of the mean| exceeds 4‖σ‖₂/√S + the error
    bound ε; asking 4‖σ‖₂/√S ≤ (|λ_min| - ε)/2 puts that bound halfway between ε and |λ_min|, so a mean
    within about one standard error of λ_min clears it.  Hence S ≥ (8‖σ‖₂ / (|λ_min| - ε))², rounded up
    to whole pilots and at least one, at most ``cap`` (in whole pilots); beyond the cap the class check stays
    undecided."""
    spread = torch.linalg.matrix_norm(pilot.spread, ord=2).item()
    common = {"pilot": pilot.samples, "spread_norm": spread, "cap": cap}
    if curvature.classification not in (LOCAL_MINIMUM, SADDLE_POINT):
        return SampleSize(pilot.samples, "pilot only", "the closed form is undecided: no sample size decides the "
                          "class, the pilot serves the block check", **common)
    gap = abs(curvature.min_eigenvalue) - curvature.error_bound
    needed = math.ceil((2 * STANDARD_ERRORS * spread / gap) ** 2)
    chosen = pilot.samples * max(1, math.ceil(needed / pilot.samples))
    if chosen > cap:
        return SampleSize(pilot.samples * (cap // pilot.samples), "pilot spread", f"the class check needs about "
                          f"{needed} sequences (4 standard errors below (|λ_min| - error bound)/2 = {gap / 2:.3g}), "
                          f"above the budget of {cap}: rerun with --samples {needed}", needed=needed, **common)
    return SampleSize(chosen, "pilot spread", f"{needed} needed to put 4 standard errors of λ_min below "
                      f"(|λ_min| - error bound)/2 = {gap / 2:.3g} (per-sequence spread ‖σ‖₂ = {spread:.3g} from "
                      f"{pilot.samples} pilot sequences), rounded up to whole pilots", needed=needed, **common)


def monte_carlo_block(params: Params, source: Source, curvature: ManifoldCurvature, *, tying: bool,
                      samples: int | None, seed: int, memory: int | None = None,
                      progress: Callable[[Iterable, str], Iterable] = lambda chunks, _: chunks,
                      ) -> tuple[SampledBlock, SampleSize]:
    """The Monte-Carlo block (``numerics.manifold.sampled_block``, sequences of ``source``, attention memory
    ``memory``) of ``samples`` sequences, or, when None, of the size ``sample_size`` picks from a pilot of
    ``PILOT_SAMPLES`` (which the sample then includes; the rest drawn with seed + 1).  ``progress(chunks, label)``
    wraps each pass over the positions."""
    def draw(count: int, seed: int, label: str) -> SampledBlock:
        return sampled_block(params, tying=tying, samples=count, seed=seed, source=source, memory=memory,
                             progress=lambda chunks: progress(chunks, label))

    if samples is not None:
        return draw(samples, seed, "sampling"), SampleSize(samples, "--samples", "set by --samples")
    pilot = draw(PILOT_SAMPLES, seed, "pilot")
    seq_len, d = params["pos"].shape
    size = sample_size(curvature, pilot, sample_cap(seq_len, d, tying, params["pos"].device))
    if size.samples == pilot.samples:
        return pilot, size
    return pilot.merge(draw(size.samples - pilot.samples, seed + 1, "sampling")), size
