"""Curvature on the critical manifold M_π (claim MANIFOLD; special cases LOCAL-MIN, SADDLE, SADDLE-UNTIED).

The closed-form block of ``numerics.manifold`` is checked against the dense autograd Hessian of the
exact population loss (every weight random), its lag Jacobian A against a brute-force jacrev of an
independent forward pass, and its special cases against the closed forms of SPEC §4 and §10.
"""

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.func import jacrev

import numerics.manifold
import numerics.transformer
from numerics.curvature import block_names, flatten, hessian
from numerics.manifold import (
    KINK,
    LOCAL_MINIMUM,
    SADDLE_POINT,
    UNDECIDED,
    SampledBlock,
    block_jacobian,
    lag_powers,
    manifold_curvature,
    project_to_manifold,
    sampled_block,
    sequence_hessians,
    sequence_hessians_reference,
)
from numerics.markov import InvalidInputError, MarkovChain
from numerics.population import population_loss
from numerics.stationary_points import theta_pi
from numerics.transformer import init_params
from tests.strategies import pq

# p + q > 1, < 1, near 2 and near 0 (λ near -1 and 1); p == q is avoided (logit exactly 0)
CHAINS = [(0.2, 0.3), (0.5, 0.8), (0.9, 0.85), (0.1, 0.05)]


def _k_lam(p: float, q: float) -> tuple[float, float]:
    return p * q / (p + q) ** 2, 1.0 - p - q


def _random_point(d: int, seq_len: int, p: float, q: float, *, tying: bool, seed: int, std: float = 0.8) -> dict:
    """A point of M_π with every weight (pos, W_Q .. W_2) random."""
    return project_to_manifold(init_params(d, seq_len, tying=tying, std=std, seed=seed), p, q, tying=tying)


def _block_index(params: dict, tying: bool) -> torch.Tensor:
    """Flat indices of the (e, b) / (e, a, b) coordinates, in the order of ``manifold_curvature``'s block."""
    names = block_names(flatten(params)[1])
    order = ("e", "b") if tying else ("e", "a", "b")
    return torch.tensor([i for name in order for i, n in enumerate(names) if n == name])


def _split_block(H: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the rows and columns ``index`` of H, H with them zeroed)."""
    rest = H.clone()
    rest[index[:, None], index[None, :]] = 0.0
    return H[index][:, index], rest


def _dense_block(
    params: dict, p: float, q: float, tying: bool, method: str = "exact"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the (e, b) / (e, a, b) rows and columns of the dense Hessian, the Hessian with them zeroed)."""
    H = hessian(lambda P: population_loss(P, p, q, tying=tying, method=method), params)
    return _split_block(H, _block_index(params, tying))


def _cov(x: torch.Tensor) -> torch.Tensor:
    centred = x - x.mean(dim=0)
    return centred.T @ centred / x.shape[0]


# --- 1. the formula against the dense Hessian of the exact loss ---


@pytest.mark.parametrize("tying", [True, False])
@pytest.mark.parametrize(("p", "q"), CHAINS)
def test_block_equals_the_dense_hessian_and_nothing_else_is_nonzero(p, q, tying):
    d, seq_len = (3, 6) if (p + q > 1) == tying else (2, 5)
    params = _random_point(d, seq_len, p, q, tying=tying, seed=int(100 * p + 10 * q) + tying)
    dense, rest = _dense_block(params, p, q, tying)
    mc = manifold_curvature(params, p, q, tying=tying)
    assert mc.block.shape == dense.shape == ((d + 1, d + 1) if tying else (2 * d + 1, 2 * d + 1))
    assert (mc.block - dense).abs().max().item() < 1e-10
    assert rest.abs().max().item() < 1e-10  # the Hessian vanishes outside the block
    assert (mc.block - dense).abs().max().item() <= mc.error_bound < 1e-8
    torch.testing.assert_close(mc.eigenvalues, torch.linalg.eigvalsh(dense), rtol=0, atol=1e-10)


def test_a_tied_point_of_m_pi_can_be_a_saddle_for_p_plus_q_above_one():
    """SPEC claim 7: with random W_O, W_1, W_2 the bad-local-minimum region is not all of M_π."""
    p, q = 0.9, 0.85
    params = _random_point(3, 6, p, q, tying=True, seed=36)
    mc = manifold_curvature(params, p, q, tying=True)
    assert mc.classification == SADDLE_POINT
    assert mc.schur_eigenvalues[0].item() < 0
    # the loss decreases along the escape direction, with curvature λ_min (central second difference)
    def loss_at(t: float) -> float:
        moved = {**params, "e": params["e"] + t * mc.escape_direction["e"],
                 "b": params["b"] + t * mc.escape_direction["b"]}
        return population_loss(moved, p, q, tying=True).item()

    t = 1e-3
    assert loss_at(t) < loss_at(0.0)
    curvature = (loss_at(t) + loss_at(-t) - 2 * loss_at(0.0)) / t**2
    assert curvature == pytest.approx(mc.min_eigenvalue, rel=1e-4)


# --- 2. the analytic lag Jacobian against brute-force jacrev ---


def _hidden_states(params: dict, embedded: torch.Tensor) -> torch.Tensor:
    """z_n(x̃) of the one-layer model, written out independently of numerics.transformer."""
    seq_len, d = embedded.shape
    scores = (embedded @ params["W_Q"].T) @ (embedded @ params["W_K"].T).T / math.sqrt(d)
    future = torch.ones(seq_len, seq_len, dtype=torch.bool).triu(1)
    att = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    y = embedded + att @ (embedded @ params["W_V"].T) @ params["W_O"].T
    return y + torch.relu(y @ params["W_1"].T) @ params["W_2"].T


@pytest.mark.parametrize(("p", "q"), [*CHAINS, (0.25, 0.75), (0.9995, 0.9999), (0.0005, 0.0004)])
def test_lag_jacobian_equals_brute_force_jacrev(p, q):
    d, seq_len = 3, 24
    params = _random_point(d, seq_len, p, q, tying=True, seed=7)
    K = jacrev(lambda x: _hidden_states(params, x))(params["pos"])  # K[n, :, i, :] = ∂z_n/∂x̃_i
    lam = 1.0 - p - q
    reference = sum(lam ** (n + 1 - i) * K[n, :, i, :] for n in range(seq_len) for i in range(n + 1)) / seq_len
    mc = manifold_curvature(params, p, q, tying=True)
    assert (mc.lag_jacobian - reference).abs().max().item() < 1e-12
    torch.testing.assert_close(mc.hidden_mean, _hidden_states(params, params["pos"]).mean(dim=0), rtol=0, atol=1e-13)


def test_lag_powers_are_exact_for_extreme_and_signed_lambda():
    for lam in (0.0, -0.999999, 0.999999, -0.5, 1e-300):
        Lam = lag_powers(lam, 1200, device="cpu", dtype=torch.float64)
        assert bool(torch.isfinite(Lam).all())
        assert bool((Lam.triu(1) == 0).all())
        torch.testing.assert_close(Lam.diagonal(), torch.full((1200,), lam, dtype=torch.float64), rtol=0, atol=0)
        for n, i in ((1199, 0), (1198, 0), (700, 650)):
            assert Lam[n, i].item() == pytest.approx(lam ** (n + 1 - i), rel=1e-12, abs=0)


# --- 3. θ_π (claims LOCAL-MIN, SADDLE, SADDLE-UNTIED) ---


@pytest.mark.parametrize(("p", "q"), CHAINS)
def test_theta_pi_tied(p, q):
    d, k, _ = 3, *_k_lam(p, q)
    params = theta_pi(MarkovChain(p, q), d, 7)
    mc = manifold_curvature(params, p, q, tying=True)
    torch.testing.assert_close(mc.schur, 2 * k * (p + q - 1) * torch.eye(d, dtype=torch.float64), rtol=0, atol=1e-15)
    expected = torch.tensor(sorted([2 * k * (p + q - 1)] * d + [k]), dtype=torch.float64)
    torch.testing.assert_close(mc.eigenvalues, expected, rtol=0, atol=1e-15)
    if p + q > 1:
        assert mc.classification == LOCAL_MINIMUM and mc.escape_direction is None and mc.reason == ""
    else:
        assert mc.classification == SADDLE_POINT
        assert mc.escape_direction["b"] == 0.0
        assert mc.escape_direction["e"].norm().item() == pytest.approx(1.0)


@pytest.mark.parametrize(("p", "q"), CHAINS)
def test_theta_pi_untied(p, q):
    d, k, lam = 3, *_k_lam(p, q)
    params = theta_pi(MarkovChain(p, q), d, 7, tying=False)
    mc = manifold_curvature(params, p, q, tying=False)
    expected = torch.tensor(sorted([-k * abs(lam)] * d + [k * abs(lam)] * d + [k]), dtype=torch.float64)
    torch.testing.assert_close(mc.eigenvalues, expected, rtol=0, atol=1e-15)
    assert mc.classification == SADDLE_POINT
    # the escape direction mixes e and a equally (the e–a block is -kλ I)
    assert mc.escape_direction["e"].norm().item() == pytest.approx(math.sqrt(0.5))
    assert mc.escape_direction["a"].norm().item() == pytest.approx(math.sqrt(0.5))


@pytest.mark.parametrize("tying", [True, False])
def test_theta_pi_at_p_plus_q_equal_one_is_undecided(tying):
    """λ = 0: the normal block is degenerate and the second-order test cannot decide (claim 6's case)."""
    params = theta_pi(MarkovChain(0.25, 0.75), 2, 5, tying=tying)
    mc = manifold_curvature(params, 0.25, 0.75, tying=tying)
    assert mc.classification == UNDECIDED
    assert "error bound" in mc.reason and mc.escape_direction is None


# --- 4. attention output and feed-forward off (claim MANIFOLD / SPEC claim 7) ---


@pytest.mark.parametrize(("p", "q"), CHAINS)
def test_schur_complement_without_attention_output_and_feed_forward(p, q):
    d, seq_len, k, _ = 3, 9, *_k_lam(p, q)
    params = _random_point(d, seq_len, p, q, tying=True, seed=3, std=0.9)
    for name in ("W_O", "W_1", "W_2"):
        params[name] = torch.zeros_like(params[name])
    mc = manifold_curvature(params, p, q, tying=True)
    expected = k * (_cov(params["pos"]) + 2 * (p + q - 1) * torch.eye(d, dtype=torch.float64))
    torch.testing.assert_close(mc.schur, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("spread", "verdict"), [(0.1, SADDLE_POINT), (3.0, LOCAL_MINIMUM)])
def test_spec_example_position_spread_decides(spread, verdict):
    """p = 0.2, q = 0.3, d = 2, N = 8: local minimum iff λ_min(Cov(pos)) > 2(1 - p - q) = 1."""
    p, q, d, seq_len = 0.2, 0.3, 2, 8
    params = theta_pi(MarkovChain(p, q), d, seq_len)
    gen = torch.Generator().manual_seed(11)
    params["pos"] = spread * torch.randn(seq_len, d, generator=gen, dtype=torch.float64)
    for name in ("W_Q", "W_K", "W_V"):
        params[name] = torch.randn(d, d, generator=gen, dtype=torch.float64)
    smallest = torch.linalg.eigvalsh(_cov(params["pos"]))[0].item()
    assert (smallest > 2 * (1 - p - q)) == (verdict == LOCAL_MINIMUM)
    mc = manifold_curvature(params, p, q, tying=True)
    assert mc.classification == verdict
    dense = torch.linalg.eigvalsh(hessian(lambda P: population_loss(P, p, q, tying=True), params))
    if verdict == LOCAL_MINIMUM:
        assert dense[0].item() > -1e-12  # PSD, the kernel being M_π's tangent space
    else:
        assert dense[0].item() == pytest.approx(mc.min_eigenvalue, abs=1e-12)


def test_relu_kink_is_undecided():
    """pos = 0 puts every ReLU input at exactly 0: the loss is not twice differentiable along e."""
    p, q = 0.5, 0.8
    params = _random_point(2, 4, p, q, tying=True, seed=5)
    params["pos"] = torch.zeros_like(params["pos"])
    mc = manifold_curvature(params, p, q, tying=True)
    assert mc.classification == UNDECIDED
    assert "ReLU kink" in mc.reason and "exactly 0" in mc.reason


# --- 5. refusals ---


def test_refuses_points_off_the_manifold_and_other_models():
    p, q = 0.2, 0.3
    point = _random_point(2, 4, p, q, tying=False, seed=1)
    cases = {
        "e must be 0": {**point, "e": point["e"] + 1e-9},
        "a must be 0": {**point, "a": point["a"] + 1e-9},
        "must equal log(π1/π0)": {**point, "b": point["b"] + 1e-9},
        "non-finite values in W_1": {**point, "W_1": point["W_1"] * float("nan")},
    }
    for message, params in cases.items():
        with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            manifold_curvature(params, p, q, tying=False)
    with pytest.raises(InvalidInputError, match="lack a"):
        manifold_curvature({k: v for k, v in point.items() if k != "a"}, p, q, tying=False)
    two_layers = project_to_manifold(init_params(2, 4, layers=2, std=0.5, seed=0), p, q, tying=True)
    with pytest.raises(InvalidInputError, match="closed-form route is the one-layer model without layer norm"):
        manifold_curvature(two_layers, p, q, tying=True, route="closed-form")
    for memory in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="memory must be a positive integer"):
            manifold_curvature(two_layers, p, q, tying=True, memory=memory)
    for bad in (1.5, 0.0, float("nan"), "x"):
        with pytest.raises(InvalidInputError, match="p must"):
            manifold_curvature(point, bad, q, tying=False)


def test_project_to_manifold_keeps_the_other_weights_and_copies():
    params = init_params(3, 5, tying=False, std=0.7, seed=2)
    before = {k: v.clone() for k, v in params.items()}
    out = project_to_manifold(params, 0.3, 0.6, tying=False)
    for name, value in params.items():
        assert torch.equal(value, before[name])  # input untouched
        if name in ("e", "a"):
            assert bool((out[name] == 0).all())
        elif name == "b":
            assert out[name].item() == math.log(0.3) - math.log(0.6)
        else:
            assert torch.equal(out[name], value) and out[name] is not value


def test_float32_parameters_are_accepted_and_computed_in_float64():
    p, q = 0.5, 0.8
    params64 = _random_point(3, 6, p, q, tying=True, seed=4)
    params32 = project_to_manifold({k: v.float() for k, v in params64.items()}, p, q, tying=True)
    mc32 = manifold_curvature(params32, p, q, tying=True)
    widened = {k: v.double() for k, v in params32.items()}
    widened["b"] = torch.tensor(math.log(p) - math.log(q), dtype=torch.float64)
    mc64 = manifold_curvature(widened, p, q, tying=True)
    assert mc32.block.dtype == torch.float64
    torch.testing.assert_close(mc32.block, mc64.block, rtol=0, atol=0)


# --- 6. the paper's length ---


@pytest.mark.parametrize(("p", "q", "tying"), [(0.5, 0.8, True), (0.9999, 0.9998, False), (0.0002, 0.0001, True)])
def test_runs_at_the_papers_sequence_length(p, q, tying):
    d, seq_len = 8, 1024
    mc = manifold_curvature(_random_point(d, seq_len, p, q, tying=tying, seed=9, std=0.3), p, q, tying=tying)
    for value in (mc.block, mc.eigenvalues, mc.schur_eigenvalues, mc.lag_jacobian, mc.hidden_mean):
        assert bool(torch.isfinite(value).all())
    assert math.isfinite(mc.error_bound) and 0 < mc.error_bound < 1e-6
    assert mc.classification in (LOCAL_MINIMUM, SADDLE_POINT, UNDECIDED)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    p, q = 0.5, 0.8
    params = _random_point(4, 64, p, q, tying=False, seed=6)
    cpu = manifold_curvature(params, p, q, tying=False)
    gpu = manifold_curvature({k: v.cuda() for k, v in params.items()}, p, q, tying=False)
    assert gpu.block.device.type == "cuda"
    torch.testing.assert_close(gpu.block.cpu(), cpu.block, rtol=0, atol=1e-12)
    assert gpu.classification == cpu.classification


# --- 7. the formula is an independent check of the model ---


def test_a_model_without_causal_mask_no_longer_matches(monkeypatch):
    """The whole-sequence forward pass without its causal mask sees the future: its Hessian differs."""
    p, q = 0.5, 0.8
    params = _random_point(2, 4, p, q, tying=True, seed=8)
    mc = manifold_curvature(params, p, q, tying=True)
    honest, _ = _dense_block(params, p, q, True, method="naive")
    assert (honest - mc.block).abs().max().item() < 1e-10
    monkeypatch.setattr(
        numerics.transformer, "attention_mask",
        lambda n, memory=None, device="cpu": torch.ones(n, n, dtype=torch.bool, device=device),
    )
    corrupted, _ = _dense_block(params, p, q, True, method="naive")
    assert (corrupted - mc.block).abs().max().item() > 1e-3
    assert torch.equal(manifold_curvature(params, p, q, tying=True).block, mc.block)  # the formula is unaffected


def test_a_model_with_another_activation_no_longer_matches(monkeypatch):
    """The same for the exact (prefix) loss: a feed-forward with tanh instead of ReLU."""
    p, q = 0.2, 0.3
    params = _random_point(2, 4, p, q, tying=False, seed=8)
    mc = manifold_curvature(params, p, q, tying=False)
    monkeypatch.setattr(
        numerics.transformer, "feed_forward",
        lambda P, layer, y: torch.tanh(y @ P["W_1"].T) @ P["W_2"].T,
    )
    corrupted, _ = _dense_block(params, p, q, False)
    assert (corrupted - mc.block).abs().max().item() > 1e-3


# --- 8. property: the formula is the whole Hessian at random points of M_π ---

# Float64 rounding of the dense Hessian: each entry is a sum over the 2^{N+1} - 2 ≤ 510 prefixes of
# products formed along a forward and two backward passes of a few hundred operations, so the standard
# forward bound (Higham §3.1) is |error| ≲ L u Σ|terms| with L ~ 10³, u = 1.1e-16 and Σ|terms| a small
# multiple of ‖H‖₂: about 1e-13 ‖H‖₂ (observed over 300 draws of this test: at most 5e-15 ‖H‖₂).
# 1e-10 max(1, ‖H‖₂) keeps a margin of 10³ over that.  ‖H‖₂ grows like |z_n|² (up to ~2·10² at weight
# scale 1.5), hence the relative scale; below ‖H‖₂ = 1 the tolerance stays absolute, since the cancelling
# terms of E[(σ(ℓ) - x_{n+1}) ∇²ℓ] are O(1) even where k = π0π1 is small.  A wrong or missing term of
# the formula is of size k |z|² or k |A|: far above 1e-10 at interior (p, q), which carry the check; at
# the edges (k ~ 1e-6) the margin is smaller, which is why the tolerance is not made looser.
DENSE_TOLERANCE = 1e-10


@given(
    pq=pq,
    tying=st.booleans(),
    d=st.integers(1, 4),
    seq_len=st.integers(1, 8),
    scale=st.floats(0.1, 1.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_formula_is_the_nonzero_part_of_the_dense_hessian(pq, tying, d, seq_len, scale, seed):
    """At a random point of M_π (every weight N(0, scale²)) the dense autograd Hessian of the exact loss is
    ``manifold_curvature``'s block and zeros: its spectrum is the block's eigenvalues plus D - m zeros."""
    p, q = pq
    params = _random_point(d, seq_len, p, q, tying=tying, seed=seed, std=scale)
    mc = manifold_curvature(params, p, q, tying=tying)
    # at a ReLU kink the Hessian along e does not exist; autograd would silently pick one side
    assume(not mc.reason.startswith(KINK))
    H = hessian(lambda P: population_loss(P, p, q, tying=tying), params)
    dense_spectrum = torch.linalg.eigvalsh((H + H.T) / 2)
    tol = DENSE_TOLERANCE * max(1.0, dense_spectrum.abs().max().item())
    block, rest = _split_block(H, _block_index(params, tying))
    assert rest.abs().max().item() <= tol  # the Hessian vanishes outside the block
    assert (mc.block - block).abs().max().item() <= tol
    # no guess of which dense eigenvalues are "nonzero" (a block eigenvalue may itself be near 0): the
    # whole sorted spectrum must be the block's eigenvalues merged with D - m zeros
    zeros = torch.zeros(H.shape[0] - mc.eigenvalues.numel(), dtype=H.dtype)
    expected = torch.sort(torch.cat([mc.eigenvalues, zeros])).values
    assert (dense_spectrum - expected).abs().max().item() <= tol, (dense_spectrum - expected).abs().max().item()


# --- 9. the Monte-Carlo route: per-sequence Hessians from one Jacobian ---


def test_block_jacobian_is_the_jacobian_of_an_independent_forward_pass():
    params = _random_point(3, 9, 0.5, 0.8, tying=True, seed=4)
    rows = torch.tensor([0, 4, 8])
    reference = jacrev(lambda x: _hidden_states(params, x))(params["pos"])[rows]
    torch.testing.assert_close(block_jacobian(params, rows), reference, rtol=0, atol=1e-13)


@pytest.mark.parametrize("tying", [True, False])
@pytest.mark.parametrize(("p", "q", "seq_len"), [(0.2, 0.3, 5), (0.9, 0.85, 16), (0.5, 0.8, 70)])
def test_batched_hessians_equal_the_whole_model_per_sequence(p, q, seq_len, tying, monkeypatch):
    """The linearised, batched route gives the same per-sequence Hessians as forward-over-reverse through
    the full model on the same sequences, also when memory allows only one position per chunk."""
    chain = MarkovChain(p, q)
    params = _random_point(3, seq_len, p, q, tying=tying, seed=seq_len)
    x = chain.sample(12, seq_len, seed=1)
    reference = sequence_hessians_reference(params, chain, x, tying=tying)
    tol = 1e-13 * max(1.0, reference.abs().max().item())
    torch.testing.assert_close(sequence_hessians(params, chain, x, tying=tying), reference, rtol=0, atol=tol)
    monkeypatch.setattr(numerics.manifold, "memory_budget_bytes", lambda device: 1)
    chunks = []
    chunked = sequence_hessians(params, chain, x, tying=tying, progress=lambda c: chunks.extend(c) or c)
    assert len(chunks) == seq_len  # one position per chunk
    torch.testing.assert_close(chunked, reference, rtol=0, atol=tol)


def test_sampled_block_mean_is_the_closed_form_within_its_standard_errors():
    p, q = 0.2, 0.3
    params = _random_point(2, 20, p, q, tying=False, seed=3)
    sampled = sampled_block(params, p, q, tying=False, samples=3000, seed=0)
    block = manifold_curvature(params, p, q, tying=False).block
    assert sampled.samples == 3000 and sampled.switches > 1000
    assert ((sampled.mean - block).abs() <= 4 * sampled.stderr + 1e-12).all()
    assert sampled.stderr.max().item() < 0.01 * block.abs().max().item()


def test_merged_samples_equal_one_pass_over_both():
    gen = torch.Generator().manual_seed(0)
    first = 5 + torch.randn(7, 3, 3, generator=gen, dtype=torch.float64)
    second = 5 + 2 * torch.randn(11, 3, 3, generator=gen, dtype=torch.float64)

    def summary(h: torch.Tensor, switches: int) -> SampledBlock:
        return SampledBlock(h.mean(dim=0), h.std(dim=0) / math.sqrt(h.shape[0]), h.shape[0], switches)

    merged, whole = summary(first, 4).merge(summary(second, 6)), summary(torch.cat([first, second]), 10)
    assert merged.samples == 18 and merged.switches == 10
    torch.testing.assert_close(merged.mean, whole.mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(merged.stderr, whole.stderr, rtol=1e-13, atol=0)


def test_the_class_is_read_from_the_schur_complement_where_the_block_is_ill_conditioned():
    """Review finding: at weight std 20 the (e, b) block's smallest eigenvalue is ~1e-6 next to 1e15 and
    within its error bound, while S's are ~1e7: the class is decided by S (Haynsworth: the block's
    inertia is k's plus S's)."""
    params = project_to_manifold(init_params(2, 4, std=20, seed=0), 0.3, 0.9, tying=True)
    found = manifold_curvature(params, 0.3, 0.9, tying=True)
    assert abs(found.eigenvalues[0].item()) < found.error_bound < found.schur_eigenvalues[0].item() / 4
    assert found.classification == LOCAL_MINIMUM


@pytest.mark.parametrize("tying", [True, False])
def test_the_schur_class_agrees_with_the_blocks_wherever_both_decide(tying):
    for seed in range(12):
        params = project_to_manifold(init_params(3, 6, tying=tying, std=0.8, seed=seed), 0.3, 0.9, tying=tying)
        found = manifold_curvature(params, 0.3, 0.9, tying=tying)
        low, bound = found.eigenvalues[0].item(), found.error_bound
        if abs(low) > bound and found.classification != "undecided":
            assert found.classification == (LOCAL_MINIMUM if low > 0 else SADDLE_POINT)
