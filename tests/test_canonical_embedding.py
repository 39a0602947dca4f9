"""The L2G canonical model embedded in the full transformer (claim L2G-EMBED) and the full gradient there.

The canonical loss is computed here independently, with numpy, from its definition:
logit_x = e²(1 + 2w|w|) x + b - e²/2 and L = Σ_x π_x Σ_y P_xy CE(y, logit_x).
"""

import math

import numpy as np
import pytest
import torch

from numerics import canonical_flow
from numerics.canonical_flow import normal_component, tangency
from numerics.dynamics import CanonicalModel
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.stationary_points import canonical_point

P, Q = 0.5, 0.8
CHAIN = MarkovChain(P, Q)
PI = np.array([Q, P]) / (P + Q)
KERNEL = np.array([[1 - P, P], [Q, 1 - Q]])


def numpy_canonical_loss(e: float, w: float, b: float) -> float:
    total = 0.0
    for x in (0, 1):
        logit = e * e * (1 + 2 * w * abs(w)) * x + b - e * e / 2
        # CE(1, ℓ) = log(1 + e^-ℓ), CE(0, ℓ) = log(1 + e^ℓ)
        total += PI[x] * (KERNEL[x, 1] * np.logaddexp(0, -logit) + KERNEL[x, 0] * np.logaddexp(0, logit))
    return float(total)


def residuals(f0: float, f1: float) -> tuple[float, float]:
    """g_x = π_x (σ(f_x) - P(1|x)): ∂L/∂f_x of the canonical loss."""
    sigma = 1 / (1 + np.exp(-np.array([f0, f1])))
    g = PI * (sigma - KERNEL[:, 1])
    return float(g[0]), float(g[1])


def random_frame(seed: int, d: int, r: int) -> dict:
    """(e, w, b), a unit α, v ≥ 0 with ‖v‖ = 2, drawn from ``seed``."""
    gen = np.random.default_rng(seed)
    alpha = gen.normal(size=d)
    v = np.abs(gen.normal(size=r))
    return {"e": float(gen.uniform(0.2, 2.0)), "w": float(gen.normal(scale=2.0)), "b": float(gen.normal()),
            "alpha": torch.from_numpy(alpha / np.linalg.norm(alpha)), "v": torch.from_numpy(2 * v / np.linalg.norm(v))}


def full_loss(params: dict) -> float:
    return population_loss(params, P, Q, tying=True).item()


@pytest.mark.parametrize("seed", range(4))
def test_embedded_canonical_model_has_the_canonical_loss(seed):
    """Claim 6 of the paper notes at random (e, w, b), α, v, r and W_Q, W_K, W_V of size 1."""
    d, r = 4, 3 + seed
    f = random_frame(seed, d, r)
    params = canonical_point(f["e"], f["w"], f["b"], d, 6, r=r, alpha=f["alpha"], v=f["v"], attention_std=1.0,
                             seed=seed)
    assert params["W_Q"].abs().max() > 0.5 and set(params) == {"e", "pos", "W_Q", "W_K", "W_V", "W_O", "W_1", "W_2",
                                                               "b"}
    expected = numpy_canonical_loss(f["e"], f["w"], f["b"])
    assert full_loss(params) == pytest.approx(expected, abs=1e-12)
    assert float(CanonicalModel(CHAIN).loss(f["e"], f["w"], f["b"])) == pytest.approx(expected, abs=1e-14)


def test_default_frame_is_the_authors_all_ones_direction():
    params = canonical_point(2.0, -1.5, 0.3, 4, 5)
    torch.testing.assert_close(params["e"], torch.full((4,), 1.0, dtype=torch.float64))  # e α = 2 · 1/√4
    torch.testing.assert_close(params["pos"], torch.full((5, 4), -0.5, dtype=torch.float64))
    # |w| v_i α_j = 1.5 · (2/√16) · (1/√4)
    torch.testing.assert_close(params["W_1"], torch.full((16, 4), 0.375, dtype=torch.float64))
    torch.testing.assert_close(params["W_2"], torch.full((4, 16), -0.375, dtype=torch.float64))
    assert all(params[k].abs().max() == 0 for k in ("W_Q", "W_K", "W_V", "W_O"))


def test_general_norms_and_negative_e_give_the_documented_canonical_point():
    d, r, seq_len = 3, 5, 5
    f = random_frame(7, d, r)
    e, w, b = f["e"], f["w"], f["b"]
    # ‖α‖ = 1.7, ‖v‖ = 3: the canonical model at (e‖α‖, w‖α‖‖v‖/2, b)
    scaled = canonical_point(e, w, b, d, seq_len, r=r, alpha=1.7 * f["alpha"], v=1.5 * f["v"], attention_std=1.0,
                             seed=1)
    assert full_loss(scaled) == pytest.approx(numpy_canonical_loss(1.7 * e, w * 1.7 * 3 / 2, b), abs=1e-12)
    # e < 0 (the map's formula at -e): the ReLU fires at x = 0; canonical at (|e|, w, b - 2w|w|e²)
    flipped = canonical_point(e, w, b, d, seq_len, r=r, alpha=f["alpha"], v=f["v"], attention_std=1.0, seed=1)
    flipped |= {"e": -flipped["e"], "pos": -flipped["pos"]}
    assert full_loss(flipped) == pytest.approx(numpy_canonical_loss(e, w, b - 2 * w * abs(w) * e * e), abs=1e-12)
    assert abs(full_loss(flipped) - numpy_canonical_loss(e, w, b)) > 1e-3
    with pytest.raises(ValueError, match="e >= 0"):
        canonical_point(-e, w, b, d, seq_len)
    with pytest.raises(ValueError, match="nonnegative"):
        canonical_point(e, w, b, d, seq_len, r=r, v=-f["v"])
    with pytest.raises(ValueError, match="nonzero"):
        canonical_point(e, w, b, d, seq_len, alpha=torch.zeros(d, dtype=torch.float64))


def test_a_map_that_breaks_pos_equal_minus_e_over_2_is_caught():
    """Mutation: pos_n = -(e/3) α (instead of -(e/2) α) no longer gives the canonical loss."""
    f = random_frame(3, 4, 16)
    params = canonical_point(f["e"], f["w"], f["b"], 4, 6, alpha=f["alpha"], v=f["v"], attention_std=1.0, seed=0)
    corrupted = params | {"pos": params["pos"] * 2 / 3}
    assert abs(full_loss(corrupted) - numpy_canonical_loss(f["e"], f["w"], f["b"])) > 1e-3


def test_normal_component_removes_exactly_the_span_of_the_jacobian():
    gen = torch.Generator().manual_seed(0)
    J = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    n = torch.randn(20, generator=gen, dtype=torch.float64)
    n -= J @ torch.linalg.solve(J.T @ J, J.T @ n)  # orthogonal to range(J)
    c = torch.tensor([0.3, -2.0, 1.1], dtype=torch.float64)
    torch.testing.assert_close(normal_component(J @ c, J), torch.zeros(20, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(normal_component(J @ c + n, J), n, atol=1e-14, rtol=0)


def _closed_form_normal(e: float, w: float, b: float, seq_len: int) -> tuple[float, tuple[float, float, float]]:
    """‖g_⊥‖ in (e, pos) and ∇L_can, from the canonical logits (unit α, ‖v‖ = 2).

    In e_vec = s α, pos_n = c α: f0 = s c + b, f1 = s (s + c)(1 + 4w|w|) + b (x = 0 leaves the ReLU
    off because c < 0, x = 1 turns it on because s + c > 0).  The normal of t_e = (α, -α/2 per
    position) in that plane is (N/2, 1, ..., 1), so ‖g_⊥‖ = |∂_s L + (2/N) ∂_c L| / √(1 + 4/N).
    """
    s, c, k4 = e, -e / 2, 1 + 4 * w * abs(w)
    g0, g1 = residuals(s * c + b, s * (s + c) * k4 + b)
    d_s, d_c = g0 * c + g1 * (2 * s + c) * k4, g0 * s + g1 * s * k4
    normal = abs(d_s + 2 / seq_len * d_c) / math.sqrt(1 + 4 / seq_len)
    return normal, (-g0 * e + g1 * e * k4, 4 * g1 * e * e * abs(w), g0 + g1)


def _check_tangency_against_closed_forms(seed: int, attention_std: float) -> None:
    d, r, seq_len = 3, 4, 5
    f = random_frame(seed, d, r)
    result = tangency(CHAIN, f["e"], f["w"], f["b"], d, seq_len, r=r, alpha=f["alpha"], v=f["v"],
                      attention_std=attention_std, seed=seed)
    normal, canonical_gradient = _closed_form_normal(f["e"], f["w"], f["b"], seq_len)
    blocks = result.normal_blocks
    assert math.hypot(blocks["e"], blocks["pos"]) == pytest.approx(normal, rel=1e-10, abs=1e-13)
    assert result.pulled_back == pytest.approx(canonical_gradient, rel=1e-10, abs=1e-13)
    params = canonical_point(f["e"], f["w"], f["b"], d, seq_len, r=r, alpha=f["alpha"], v=f["v"],
                             attention_std=attention_std, seed=seed)
    params["W_O"].requires_grad_(True)
    (dW_O,) = torch.autograd.grad(population_loss(params, P, Q, tying=True), params["W_O"])
    assert blocks["W_O"] == pytest.approx(torch.linalg.vector_norm(dW_O).item(), rel=1e-12, abs=1e-15)
    assert all(blocks[k] < 1e-13 for k in ("W_Q", "W_K", "W_V", "W_1", "W_2", "b"))
    assert result.loss == pytest.approx(result.canonical_loss, abs=1e-12)
    assert result.normal_norm == pytest.approx(math.hypot(normal, blocks["W_O"]), rel=1e-10)


@pytest.mark.parametrize(("seed", "attention_std"), [(0, 0.0), (1, 1.0), (2, 1.0)])
def test_full_gradient_leaves_the_family_in_w_o_and_in_the_positions_as_derived(seed, attention_std):
    _check_tangency_against_closed_forms(seed, attention_std)


def test_the_family_is_not_invariant_except_at_its_global_minima():
    f = random_frame(1, 4, 16)
    off = tangency(CHAIN, f["e"], f["w"], f["b"], 4, 6, alpha=f["alpha"], v=f["v"], attention_std=1.0, seed=1)
    assert off.normal_fraction > 0.1 and off.normal_blocks["W_O"] > 1e-3
    # the bigram minimum of the canonical model, on the p + q > 1 side w < -1/√2
    w = -2.0
    e = math.sqrt(math.log((1 - P) * (1 - Q) / (P * Q)) / (1 + 2 * w * abs(w)))
    b = e * e / 2 + math.log(P / (1 - P))
    at_min = tangency(CHAIN, e, w, b, 4, 6, attention_std=1.0, seed=1)
    assert at_min.loss == pytest.approx(CHAIN.entropy_rate(), abs=1e-12) and at_min.gradient_norm < 1e-12


def test_a_projection_that_misses_a_tangent_direction_is_caught(monkeypatch):
    """Mutation: projecting out only ∂φ/∂e and ∂φ/∂w leaves the b-gradient in g_⊥; the checks fail."""
    real = canonical_flow.normal_component
    monkeypatch.setattr(canonical_flow, "normal_component", lambda g, J: real(g, J[:, :2]))
    with pytest.raises(AssertionError):
        _check_tangency_against_closed_forms(1, 1.0)


def test_a_corrupted_map_shows_in_the_measurement(monkeypatch):
    """Mutation: the measurement of a map with pos_n = -(e/3) α reports loss ≠ canonical loss and Jᵀg ≠ ∇L_can."""
    real = canonical_flow.canonical_point

    def corrupted(*args, **kwargs):
        params = real(*args, **kwargs)
        return params | {"pos": params["pos"] * 2 / 3}

    monkeypatch.setattr(canonical_flow, "canonical_point", corrupted)
    f = random_frame(2, 3, 4)
    result = tangency(CHAIN, f["e"], f["w"], f["b"], 3, 5, r=4, alpha=f["alpha"], v=f["v"])
    _, canonical_gradient = _closed_form_normal(f["e"], f["w"], f["b"], 5)
    assert abs(result.loss - result.canonical_loss) > 1e-3
    assert result.pulled_back != pytest.approx(canonical_gradient, rel=1e-6)


def test_tangency_refuses_the_kinks_of_the_map():
    for e, w in ((0.0, 1.0), (1.0, 0.0)):
        with pytest.raises(ValueError, match="e > 0 and w != 0"):
            tangency(CHAIN, e, w, 0.0, 3, 4)
