"""Hessian-vector products, Lanczos with full reorthogonalisation, spectra with error estimates."""

import math

import pytest
import torch

from numerics.curvature import (
    composition,
    estimated_spectrum,
    flatten,
    hessian,
    hessian_vector_product,
    lanczos,
    unflatten,
)
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.stationary_points import theta_pi, theta_star
from numerics.transformer import init_params


def _random_symmetric(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen, dtype=torch.float64))
    return Q @ torch.diag(eigenvalues) @ Q.T


def test_hessian_vector_product_equals_the_dense_hessian():
    chain = MarkovChain(0.3, 0.6)
    params = theta_star(chain, 3, 5, tying=False)
    params = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=v.dtype)
              for k, v in params.items()}

    def loss(p):
        return population_loss(p, chain.p, chain.q, tying=False)

    H = hessian(loss, params)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(hessian_vector_product(loss, params)(v), H @ v, rtol=1e-10, atol=1e-12)


def test_lanczos_finds_the_extremes_without_ghost_copies():
    """Run well past convergence: without reorthogonalisation the isolated extremes reappear as copies."""
    eigenvalues = torch.cat([torch.tensor([-3.0, 10.0], dtype=torch.float64),
                             torch.linspace(0.0, 1.0, 298, dtype=torch.float64)])
    H = _random_symmetric(eigenvalues)
    ritz = lanczos(lambda v: H @ v, 300, steps=150, seed=3)
    assert ritz.values[0].item() == pytest.approx(-3.0, abs=1e-10)
    assert ritz.values[-1].item() == pytest.approx(10.0, abs=1e-10)
    assert int(((ritz.values - 10.0).abs() < 1e-6).sum()) == 1
    assert int(((ritz.values + 3.0).abs() < 1e-6).sum()) == 1
    assert ritz.residuals[0] < 1e-8 and ritz.residuals[-1] < 1e-8
    # the residual is a certificate: an eigenvalue of H lies within it of each Ritz value
    exact = torch.linalg.eigvalsh(H)
    gaps = (ritz.values[:, None] - exact[None, :]).abs().min(dim=1).values
    assert bool((gaps <= ritz.residuals + 1e-12).all())


def test_lanczos_stops_on_an_invariant_subspace():
    H = _random_symmetric(torch.tensor([2.0] * 50 + [-1.0] * 50 + [0.0] * 100, dtype=torch.float64))
    ritz = lanczos(lambda v: H @ v, 200, steps=100)
    assert ritz.iterations == 3  # three distinct eigenvalues: the Krylov space is 3-dimensional
    torch.testing.assert_close(ritz.values, torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64))


def test_lanczos_on_the_model_certifies_the_saddle_direction_in_e():
    chain = MarkovChain(0.2, 0.3)  # p + q < 1, tied: eigenvalue 2π0π1(p+q-1) < 0 along e
    params = theta_pi(chain, 4, 6, tying=True)
    _, layout = flatten(params)
    ritz = lanczos(hessian_vector_product(lambda p: population_loss(p, 0.2, 0.3, tying=True), params),
                   flatten(params)[0].numel(), steps=40)
    pi0, pi1 = chain.pi
    assert ritz.values[0].item() == pytest.approx(2 * pi0 * pi1 * (0.2 + 0.3 - 1), rel=1e-10)
    assert ritz.values[0] + ritz.residuals[0] < 0  # negative curvature proven
    assert composition(ritz.vectors[:, 0], layout) == pytest.approx({"e": 1.0})


def test_error_estimate_covers_the_perturbation_and_leaves_signs_undecided_near_zero():
    H = _random_symmetric(torch.tensor([1e-14, 0.5, 2.0], dtype=torch.float64))
    spectrum = estimated_spectrum(H + 1e-9 * torch.tensor([[0.0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64))
    assert spectrum.hessian_error >= 1e-9
    assert spectrum.null_space_dim == 1  # 1e-14 is within the estimate of 0: not a decided sign
    assert bool((spectrum.values[1:] > spectrum.bounds[1:]).all())


def test_a_non_finite_hessian_decides_nothing():
    H = torch.eye(3, dtype=torch.float64)
    H[0, 1] = float("nan")
    spectrum = estimated_spectrum(H)
    assert spectrum.hessian_error == float("inf") and bool(torch.isinf(spectrum.bounds).all())


def _manifold_point(scale: float, seed: int, p: float, q: float) -> dict:
    params = init_params(2, 4, std=scale, seed=seed)
    params["e"] = torch.zeros(2, dtype=torch.float64)
    params["b"] = torch.tensor(math.log(p / q), dtype=torch.float64)
    return params


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_error_estimate_covers_float32_and_a_second_differentiation_route(scale):
    """At random points of M_π, the estimate of the float64 Hessian covers the gap to forward-over-
    reverse ``torch.func.hessian``, and the float32 estimate (with its float64 re-evaluation)
    covers the gap from the float32 eigenvalues to that independent float64 route."""
    p, q = 0.5, 0.8

    def loss(params):
        return population_loss(params, p, q, tying=True)

    for seed in range(2):
        exact = _manifold_point(scale, seed, p, q)
        theta, layout = flatten(exact)
        H64 = hessian(loss, exact)
        other = torch.func.hessian(lambda th, layout=layout: loss(unflatten(th, layout)))(theta)
        other_values = torch.linalg.eigvalsh((other + other.T) / 2)
        estimate64 = estimated_spectrum(H64)
        assert bool(((estimate64.values - other_values).abs() <= estimate64.bounds).all())
        H32 = hessian(loss, {k: v.float() for k, v in exact.items()})
        estimate32 = estimated_spectrum(H32, reference=H64)
        assert bool(((estimate32.values - other_values).abs() <= estimate32.bounds).all())
