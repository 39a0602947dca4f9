"""The M_π block for any stationary source, depth, attention memory and layer norm (claim ``MANIFOLD-GENERAL``).

The reference is written here, independent of the package's loss code: the dense autograd Hessian in the normal
coordinates of the population loss summed over every sequence of length N, each weighted by its probability
under the source (first order: π and the kernel; second order: the pair law and the table).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import grad, hessian

import numerics.manifold as manifold
from numerics import transformer as model
from numerics.autocovariance import autocovariance
from numerics.manifold import (
    SADDLE_POINT,
    UNDECIDED,
    manifold_curvature,
    normal_coordinates,
    project_to_manifold,
    with_coordinates,
)
from numerics.markov import FiniteChain, InvalidInputError, MarkovChain, SecondOrderChain
from numerics.primitives import softplus

SOURCES = {
    "first order (0.5, 0.8)": MarkovChain(0.5, 0.8),
    "first order (0.2, 0.3)": MarkovChain(0.2, 0.3),
    "second order lagged (0.2, 0.3)": SecondOrderChain.lagged(0.2, 0.3),
    "second order table": SecondOrderChain(((0.1, 0.7), (0.4, 0.9))),
}


def _law(source, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every sequence x (2^N, N), its probability and P(x_{n+1} = 1 | x_1^n) at each position."""
    x = np.array(list(itertools.product([0, 1], repeat=length)), dtype=int)
    if isinstance(source, MarkovChain):
        kernel = source.transition
        prob = np.array(source.pi)[x[:, 0]]
        for i in range(length - 1):
            prob = prob * kernel[x[:, i], x[:, i + 1]]
        following = kernel[x, 1]
    else:
        table, pairs = np.array(source.table), source.pair_law
        prob = pairs.sum(axis=0)[x[:, 0]] if length == 1 else pairs[x[:, 0], x[:, 1]]
        for i in range(2, length):
            one = table[x[:, i - 2], x[:, i - 1]]
            prob = prob * np.where(x[:, i] == 1, one, 1 - one)
        order_one = (pairs * table).sum(axis=0) / pairs.sum(axis=0)
        following = np.concatenate([order_one[x[:, :1]], table[x[:, :-1], x[:, 1:]]], axis=1)
    return torch.tensor(x, dtype=torch.float64), torch.tensor(prob), torch.tensor(following)


def _loss(params, source, tying: bool, memory: int | None):
    x, prob, following = _law(source, params["pos"].shape[0])

    def loss(flat_params):
        ell = model.logits(flat_params, x, tying=tying, memory=memory)
        return (prob[:, None] * (following * softplus(-ell) + (1 - following) * softplus(ell))).mean(dim=1).sum()
    return loss


def dense_block(params, source, tying: bool, memory: int | None) -> torch.Tensor:
    """The Hessian of the brute-force loss in the normal coordinates (e, b) or (e, a, b)."""
    loss = _loss(params, source, tying, memory)
    return hessian(lambda c: loss(with_coordinates(params, c, tying)))(normal_coordinates(params, tying))


def random_point(source, d: int, length: int, layers: int, layer_norm: bool, tying: bool, seed: int):
    params = model.init_params(d, length, layers=layers, layer_norm=layer_norm, tying=tying, std=0.7, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    for name in [n for n in params if n.startswith("ln")]:  # gains and biases away from 1 and 0
        params[name] = params[name] + 0.3 * torch.randn(params[name].shape, generator=generator, dtype=torch.float64)
    return project_to_manifold(params, tying=tying, source=source)


def _tolerance(curvature, reference: torch.Tensor) -> float:
    return 4 * curvature.error_bound + 64 * torch.finfo(torch.float64).eps * reference.abs().max().item()


@settings(max_examples=30, deadline=None)
@given(source=st.sampled_from(sorted(SOURCES)), layers=st.sampled_from([1, 2]),
       memory=st.sampled_from([1, 2, None]), layer_norm=st.booleans(), tying=st.booleans(),
       d=st.integers(1, 3), length=st.integers(2, 7), seed=st.integers(0, 10_000))
def test_general_block_is_the_dense_hessian(source, layers, memory, layer_norm, tying, d, length, seed):
    point = random_point(SOURCES[source], d, length, layers, layer_norm, tying, seed)
    curvature = manifold_curvature(point, tying=tying, source=SOURCES[source], memory=memory)
    reference = dense_block(point, SOURCES[source], tying, memory)
    assert (curvature.block - reference).abs().max().item() <= _tolerance(curvature, reference)


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("memory", [1, 3, None])
@pytest.mark.parametrize("tying", [True, False])
def test_closed_form_and_forward_mode_agree_in_one_layer(source, memory, tying):
    point = random_point(SOURCES[source], 3, 9, 1, False, tying, seed=11)
    closed = manifold_curvature(point, tying=tying, source=SOURCES[source], memory=memory, route="closed-form")
    forward = manifold_curvature(point, tying=tying, source=SOURCES[source], memory=memory, route="forward-mode")
    gap = (closed.block - forward.block).abs().max().item()
    assert gap <= 4 * (closed.error_bound + forward.error_bound)
    assert closed.classification == forward.classification


def test_every_other_hessian_entry_and_the_gradient_vanish():
    """Two layers, layer norm and a mask: the full Hessian is zero outside the normal block, and M_π is stationary."""
    source = SOURCES["second order table"]
    point = random_point(source, 2, 4, 2, True, True, seed=3)
    names = list(point)
    flat = torch.cat([point[n].reshape(-1) for n in names])
    sizes = [point[n].numel() for n in names]

    def unflatten(v):
        return {n: t.reshape(point[n].shape) for n, t in zip(names, v.split(sizes), strict=True)}

    loss = _loss(point, source, True, 2)
    full = hessian(lambda v: loss(unflatten(v)))(flat)
    normal = torch.zeros(len(flat), dtype=torch.bool)
    offsets = np.cumsum([0, *sizes])
    for name in ("e", "b"):
        i = names.index(name)
        normal[offsets[i]: offsets[i + 1]] = True
    outside = full.clone()
    outside[normal[:, None] & normal[None, :]] = 0
    scale = full.abs().max().item()
    assert outside.abs().max().item() <= 1e-13 * scale
    assert grad(lambda v: loss(unflatten(v)))(flat).abs().max().item() <= 1e-14
    curvature = manifold_curvature(point, tying=True, source=source, memory=2)
    assert (full[normal][:, normal] - curvature.block).abs().max().item() <= _tolerance(curvature, full)


def test_theta_pi_of_the_second_order_source_is_degenerate():
    """c(1) = 0: the symbol's own path bends nothing, S = 0 (SPEC §12), and the verdict says so instead of guessing."""
    source = SOURCES["second order lagged (0.2, 0.3)"]
    point = project_to_manifold(model.init_params(3, 16, std=0.0), tying=True, source=source)
    curvature = manifold_curvature(point, tying=True, source=source)
    assert curvature.schur_eigenvalues.abs().max().item() <= 4 * curvature.error_bound
    assert curvature.classification == UNDECIDED and "degenerate" in curvature.reason
    first = manifold_curvature(project_to_manifold(point, 0.2, 0.3, tying=True), 0.2, 0.3, tying=True)
    assert first.classification == SADDLE_POINT  # the first-order chain (0.2, 0.3) at θ_π: 2k(p+q-1) < 0


def test_second_order_autocovariance_vanishes_at_odd_lags():
    cov = autocovariance(SOURCES["second order lagged (0.2, 0.3)"])
    k, lam = 0.2 * 0.3 / 0.5**2, 0.5
    expected = [k * lam ** (m // 2) if m % 2 == 0 else 0.0 for m in range(1, 13)]
    assert np.allclose(cov.scalar(12), expected, rtol=0, atol=1e-15)
    assert cov.variance[1, 1] == pytest.approx(k, rel=1e-14)


# --- mutations: each corrupts one ingredient of the formula and the comparison with the dense Hessian fails ---


def _shifted_weights(original):
    def shifted(*args, **kwargs):
        weights = original(*args, **kwargs)
        out = torch.zeros_like(weights)
        out[:, :-1] = weights[:, 1:]  # w(n - i) in place of w(n + 1 - i)
        return out
    return shifted


def _shifted_sums(original):
    def shifted(params, rhos, memory, dtype):
        z, sums = original(params, rhos, memory, dtype)
        return z, sums / torch.tensor(rhos, dtype=torch.complex128)[:, None, None]  # Σ ρ^{n-i} K
    return shifted


def _mask_ignored(original):
    return lambda params, source, memory, dtype: original(params, source, None, dtype)


def _layer_norm_ignored(original):
    def without(params, rhos, memory, dtype):
        z, _ = original(params, rhos, memory, dtype)
        return z, original({k: v for k, v in params.items() if not k.startswith("ln")}, rhos, memory, dtype)[1]
    return without


def _second_attention_dropped(original):
    def dropped(params, rhos, memory, dtype):
        z, _ = original(params, rhos, memory, dtype)
        return z, original(params | {"W_O.1": torch.zeros_like(params["W_O.1"])}, rhos, memory, dtype)[1]
    return dropped


MUTATIONS = {
    "c(m) shifted by one lag (closed form)": ("lag_weights", _shifted_weights, 1, False, None),
    "c(m) shifted by one lag (forward mode)": ("lag_sums", _shifted_sums, 2, False, None),
    "mask ignored in K": ("forward_mode_lag_jacobian", _mask_ignored, 2, False, 1),
    "layer norm ignored in K": ("lag_sums", _layer_norm_ignored, 1, True, None),
    "second layer's attention dropped from K": ("lag_sums", _second_attention_dropped, 2, False, None),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
@pytest.mark.parametrize("source", ["first order (0.5, 0.8)", "second order table"])
def test_a_corrupted_formula_no_longer_matches(mutation, source, monkeypatch):
    name, corrupt, layers, layer_norm, memory = MUTATIONS[mutation]
    point = random_point(SOURCES[source], 2, 6, layers, layer_norm, True, seed=5)
    reference = dense_block(point, SOURCES[source], True, memory)
    honest = manifold_curvature(point, tying=True, source=SOURCES[source], memory=memory)
    assert (honest.block - reference).abs().max().item() <= _tolerance(honest, reference)
    monkeypatch.setattr(manifold, name, corrupt(getattr(manifold, name)))
    corrupted = manifold_curvature(point, tying=True, source=SOURCES[source], memory=memory)
    assert (corrupted.block - reference).abs().max().item() > 100 * _tolerance(corrupted, reference)


def test_refusals():
    point = random_point(SOURCES["first order (0.5, 0.8)"], 2, 4, 1, False, True, seed=0)
    with pytest.raises(InvalidInputError, match="binary source"):
        manifold_curvature(point, tying=True, source=FiniteChain.dirichlet(3, 0))
    with pytest.raises(InvalidInputError, match="not both"):
        manifold_curvature(point, 0.5, 0.8, tying=True, source=SOURCES["first order (0.5, 0.8)"])
    with pytest.raises(InvalidInputError, match="route must be"):
        manifold_curvature(point, 0.5, 0.8, tying=True, route="fast")


# --- hard inputs found by an independent review (mpmath references at 80-90 digits) ---


@pytest.mark.parametrize("seed, scale, p, q", [
    (11, 2.354290073931673e-09, 0.4789372587371202, 0.5210627412628799),  # exact 1-p-q = -5.55e-17, S_min -1.93e-13
    (2, 1.3159525186204539e-05, 0.4127351377598815, 0.5872647622401185),  # 1-p-q ≈ -1e-7, exact S_min -1.10e-13
])
@pytest.mark.parametrize("route", ["closed-form", "forward-mode"])
def test_a_saddle_next_to_p_plus_q_one_is_never_called_a_local_minimum(seed, scale, p, q, route):
    """λ = 1 - p - q rounded twice (1.0 - p - q) read 0.0 here and both routes said "local minimum" at true saddles.
    λ is now correctly rounded and the bound carries the source's rounding (``shifted_source``)."""
    point = model.init_params(2, 3, std=10.0, seed=seed)
    point["pos"] = point["pos"] / 10 * scale
    point = project_to_manifold(point, p, q, tying=True)
    curvature = manifold_curvature(point, p, q, tying=True, route=route)
    assert curvature.classification != "local minimum"
    assert curvature.schur_eigenvalues[0].item() == pytest.approx(-1.93e-13 if seed == 11 else -1.10e-13, rel=0.02)


@pytest.mark.parametrize("route", ["closed-form", "forward-mode"])
def test_a_slowly_mixing_second_order_chain_is_not_called_a_saddle(route):
    """lagged(1e-4, 1e-4): an eigenvector pair law gave c(1)/k = 3.9e-13 instead of 0 and a false "saddle point" at a
    point whose exact S is [+1.68e-15, +2.39e-15]; the GTH pair law keeps c(1) at rounding level."""
    source = SecondOrderChain.lagged(1e-4, 1e-4)
    point = model.init_params(2, 4, std=0.02, seed=0)
    for name in ("W_O", "W_1", "W_2"):
        point[name] = torch.zeros_like(point[name])
    point["pos"] = point["pos"] * 5e-6
    point = project_to_manifold(point, tying=True, source=source)
    curvature = manifold_curvature(point, tying=True, source=source, route=route)
    assert curvature.classification != SADDLE_POINT
    assert curvature.schur_eigenvalues.min().item() > 0  # exact: 1.68e-15 and 2.39e-15
    assert abs(autocovariance(source).scalar(1)[0]) <= 1e-15 * autocovariance(source).variance[1, 1]


def test_an_overflowing_float32_shadow_is_undecided_not_a_crash():
    """Three layers at weights of size 30: the float32 shadow pass overflows; the verdict says so."""
    point = model.init_params(3, 7, layers=3, std=30.0, seed=4, tying=False)
    point["pos"] = point["pos"] * 100 / 30
    point = project_to_manifold(point, 0.2, 0.7, tying=False)
    curvature = manifold_curvature(point, 0.2, 0.7, tying=False, memory=1)
    assert curvature.classification == UNDECIDED and math.isinf(curvature.error_bound)
    assert "float32 shadow pass" in curvature.reason and "overflows" in curvature.reason


def test_a_nearly_defective_pair_chain_keeps_forward_mode_within_its_bound():
    """Components α_r ≈ 5e4 c(0) of opposite signs: forward mode's A is a small difference of large terms; its bound
    counts their size (it was 900 times too small); the closed form, which needs no components, is the reference."""
    source = SecondOrderChain(((0.5077762787684749, 0.35020204726633264), (0.47079259994007955, 0.5559973801928206)))
    cov = autocovariance(source)
    assert max(abs(t.matrix[1, 1]) for t in cov.components) > 1e3 * cov.variance[1, 1]
    point = project_to_manifold(model.init_params(3, 150, std=1.0, seed=0), tying=True, source=source)
    closed = manifold_curvature(point, tying=True, source=source, route="closed-form")
    forward = manifold_curvature(point, tying=True, source=source, route="forward-mode")
    assert (closed.block - forward.block).abs().max().item() <= forward.error_bound
