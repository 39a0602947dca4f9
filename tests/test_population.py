import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numerics.markov import InvalidInputError, MarkovChain, prefix_tree
from numerics.population import (
    EnumerationTooLargeError,
    monte_carlo_loss,
    population_loss,
)
from numerics.stationary_points import theta_pi, theta_star
from numerics.transformer import init_params, logits, prefix_logits
from tests.strategies import pq

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


def brute_force_loss(params, p, q, tying):
    """Σ over all 2^{N+1} sequences x_1..x_{N+1} of P(x) (1/N) Σ_n -log P_θ(x_{n+1} | x_1^n)."""
    n_pos = params["pos"].shape[0]
    kernel = [[1 - p, p], [q, 1 - q]]
    pi = [q / (p + q), p / (p + q)]
    total = 0.0
    for seq in itertools.product([0, 1], repeat=n_pos + 1):
        prob = pi[seq[0]] * math.prod(kernel[a][b] for a, b in itertools.pairwise(seq))
        z = logits(params, torch.tensor([seq[:-1]], dtype=torch.float64), tying=tying)[0]
        nll = sum(-torch.nn.functional.logsigmoid(z[n] if seq[n + 1] else -z[n]).item()
                  for n in range(n_pos))
        total += prob * nll / n_pos
    return total


@pytest.mark.parametrize("tying", [True, False])
@pytest.mark.parametrize("p, q, n_pos, d", [(0.5, 0.8, 5, 3), (0.2, 0.3, 6, 2), (0.9, 0.05, 4, 1)])
def test_exact_loss_equals_brute_force(p, q, n_pos, d, tying):
    params = init_params(d, n_pos, tying=tying, std=0.8, seed=11)
    exact = population_loss(params, p, q, tying=tying).item()
    assert exact == pytest.approx(brute_force_loss(params, p, q, tying), abs=1e-12)


@pytest.mark.parametrize("layers", [1, 2])
def test_exact_and_naive_enumerations_agree(layers):
    params = init_params(3, 7, layers=layers, std=0.7, seed=5)
    exact = population_loss(params, 0.3, 0.6, tying=True)
    naive = population_loss(params, 0.3, 0.6, tying=True, method="naive")
    assert exact.item() == pytest.approx(naive.item(), abs=1e-13)


def test_monte_carlo_agrees_with_exact_within_four_standard_errors():
    params = init_params(3, 8, tying=False, std=0.7, seed=2)
    exact = population_loss(params, 0.5, 0.8, tying=False).item()
    estimate = monte_carlo_loss(params, MarkovChain(0.5, 0.8), tying=False, num_samples=20000, seed=1)
    assert 0 < estimate.stderr < 0.01
    assert abs(estimate.mean.item() - exact) < 4 * estimate.stderr
    via_api = population_loss(params, 0.5, 0.8, tying=False, method="mc", num_samples=20000, seed=1)
    assert via_api.item() == estimate.mean.item()


@given(k=st.integers(1, 7), seed=st.integers(0, 10**6))
def test_changing_the_future_never_changes_past_logits(k, seed):
    params = init_params(3, 8, layers=2, std=1.0, seed=seed)
    x = MarkovChain(0.5, 0.5).sample(6, 8, seed=seed)
    y = x.clone()
    y[:, k:] = 1 - y[:, k:]
    torch.testing.assert_close(logits(params, x, tying=True)[:, :k],
                               logits(params, y, tying=True)[:, :k], rtol=0, atol=0)


@given(pq, st.booleans())
def test_stationary_points_give_unigram_and_bigram_losses(pq, tying):
    chain = MarkovChain(*pq)
    at_pi = population_loss(theta_pi(chain, 3, 5, tying=tying), *pq, tying=tying)
    at_star = population_loss(theta_star(chain, 3, 5, tying=tying), *pq, tying=tying)
    assert torch.isfinite(at_pi) and torch.isfinite(at_star)
    assert at_pi.item() == pytest.approx(chain.unigram_loss(), rel=1e-12, abs=1e-14)
    assert at_star.item() == pytest.approx(chain.entropy_rate(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_loss_on_device_and_dtype(device, dtype, tol):
    chain = MarkovChain(0.5, 0.8)
    params = theta_star(chain, 4, 10, device=device, dtype=dtype)
    loss = population_loss(params, 0.5, 0.8, tying=True)
    assert loss.device.type == device and loss.dtype == dtype
    assert loss.item() == pytest.approx(chain.entropy_rate(), abs=tol)


def test_loss_is_differentiable():
    params = {k: v.requires_grad_() for k, v in init_params(2, 4, std=0.5, seed=0).items()}
    population_loss(params, 0.4, 0.7, tying=True).backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in params.values())


def test_too_large_enumeration_names_the_monte_carlo_option():
    params = init_params(2, 40, std=0.0)
    with pytest.raises(EnumerationTooLargeError, match="mc"):
        population_loss(params, 0.5, 0.5, tying=True)


@pytest.mark.parametrize("kwargs", [{"method": "bogus"}, {"method": "mc"}])
def test_bad_method_arguments(kwargs):
    with pytest.raises(InvalidInputError):
        population_loss(init_params(2, 3), 0.5, 0.5, tying=True, **kwargs)


def test_untied_loss_needs_a_head_vector():
    with pytest.raises(InvalidInputError, match="'a'"):
        population_loss(init_params(2, 3, tying=True), 0.5, 0.5, tying=False)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("std", [1.0, 1.5, 2.0, 3.0])
def test_exact_loss_is_stable_at_large_weights(std, dtype, rtol):
    """The audit's cancellation: a shared max over both symbol values and base + X·(ω(1) - ω(0))
    gave NaN in 28 of 30 draws at std 3.  Per-prefix softmax: finite and within rtol of the
    all-sequences loss evaluated in float64."""
    for seed in range(6):
        params = init_params(4, 8, std=std, seed=seed)
        reference = population_loss(params, 0.5, 0.8, tying=True, method="naive").item()
        value = population_loss({k: v.to(dtype) for k, v in params.items()}, 0.5, 0.8, tying=True).item()
        assert math.isfinite(value)
        assert abs(value - reference) <= rtol * abs(reference)


def test_two_positions_worked_by_hand():
    """N = 2, d = 1, every weight a number: the logits from the paper's equations, by hand.

    x = (1, 0), e = 0.5, p_1 = 0.2, p_2 = -0.3: x̃ = (0.7, -0.3).  Scores of position 2 are
    W_Q x̃_2 · W_K x̃_i / √1 = (1.5·-0.3)(2·0.7, 2·-0.3) = (-0.63, 0.27); softmax weights
    (1, e^0.9)/(1 + e^0.9); values 0.8 x̃_i; y_2 = -0.3 + 1.1 · Σ_i a_i v_i; FF 0.4·ReLU(-1.2 y);
    logit = e·z + b with b = 0.1.  Position 1 attends only to itself.
    """
    numbers = {"e": [0.5], "pos": [[0.2], [-0.3]], "W_Q": [[1.5]], "W_K": [[2.0]], "W_V": [[0.8]],
               "W_O": [[1.1]], "W_1": [[-1.2]], "W_2": [[0.4]], "b": 0.1}
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in numbers.items()}

    def by_hand(y: float) -> float:
        return 0.5 * (y + 0.4 * max(-1.2 * y, 0.0)) + 0.1

    y1 = 0.7 + 1.1 * 0.8 * 0.7
    a2 = 1 / (1 + math.exp(0.27 + 0.63))
    y2 = -0.3 + 1.1 * 0.8 * (a2 * 0.7 + (1 - a2) * -0.3)
    expected = [by_hand(y1), by_hand(y2)]
    got = logits(params, torch.tensor([[1.0, 0.0]], dtype=torch.float64), tying=True)[0].tolist()
    assert got == pytest.approx(expected, rel=1e-14)
    chain = MarkovChain(0.3, 0.6)
    tree = prefix_tree(chain, 2)
    row = [i for i, (xs, n) in enumerate(zip(tree.symbols.tolist(), tree.length.tolist())) if n == 2 and xs == [1, 0]]
    assert prefix_logits(params, tree, tying=True)[row[0]].item() == pytest.approx(expected[1], rel=1e-14)


def test_next_symbol_probabilities_keep_a_tiny_q_exact():
    chain = MarkovChain(0.5, 1e-6)
    p_one, p_zero = chain.next_probabilities(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert p_zero[1].item() == 1e-6 and p_one[1].item() == 1 - 1e-6 and p_one[0].item() == 0.5
