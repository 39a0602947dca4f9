"""softplus and σ: exact values and exact first and second autograd derivatives everywhere."""

import math

import pytest
import torch
from torch.func import grad, jacfwd, jacrev

from numerics.primitives import sigmoid, softplus

POINTS = [0.0, 1e-8, -1e-8, 20.0, -20.0, 40.0, -40.0, 700.0, -700.0]


def closed_forms(x: float) -> tuple[float, float, float]:
    """log(1 + e^x), σ(x), σ(x)σ(-x), each in a form exact in float64 for every finite x."""
    s_pos, s_neg = 1 / (1 + math.exp(-x)), 1 / (1 + math.exp(x))  # |x| ≤ 700: no overflow
    value = max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    return value, s_pos, s_pos * s_neg


def _close(a: float, b: float, dtype: torch.dtype) -> bool:
    tiny = torch.finfo(dtype).tiny
    rtol = 4 * torch.finfo(dtype).eps
    # values below the dtype's smallest normal number can only be resolved to that number
    return math.isfinite(a) and abs(a - b) <= rtol * abs(b) + tiny


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("x", POINTS)
def test_softplus_value_and_derivatives_in_every_autograd_mode(x, dtype):
    value, first, second = closed_forms(x)
    t = torch.tensor(x, dtype=dtype)
    assert _close(softplus(t).item(), value, dtype)
    assert _close(grad(softplus)(t).item(), first, dtype)
    for mode in (grad(grad(softplus)), jacfwd(grad(softplus)), jacrev(jacfwd(softplus))):
        assert _close(mode(t).item(), second, dtype)
    leaf = t.clone().requires_grad_()
    (g,) = torch.autograd.grad(softplus(leaf), leaf, create_graph=True)
    (h,) = torch.autograd.grad(g, leaf)
    assert _close(h.item(), second, dtype)


def test_the_derivatives_at_zero_are_one_half_and_one_quarter():
    """The audit's bug: clamp + log1p(exp(-|x|)) differentiates its kinks and gives 1 and 0."""
    zero = torch.zeros((), dtype=torch.float64)
    assert grad(softplus)(zero).item() == 0.5
    assert grad(grad(softplus))(zero).item() == 0.25
    assert jacfwd(grad(sigmoid))(zero).item() == 0.0  # σ'' (0) = 0: odd around 0


def test_batched_hessian_of_a_sum_is_the_diagonal_of_sigma_prime():
    x = torch.linspace(-30, 30, 13, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(softplus(x).sum(), x, create_graph=True)
    (H,) = torch.autograd.grad(g, x, torch.eye(13, dtype=torch.float64), is_grads_batched=True)
    expected = torch.tensor([closed_forms(v)[2] for v in x.tolist()], dtype=torch.float64)
    torch.testing.assert_close(H, torch.diag(expected), rtol=1e-15, atol=0)
