"""Property-based checks of the full model against the SymPy closed forms, across (p, q) and dtypes.

At θ_π and θ_* (every one of the D parameters of the one-layer transformer): the gradient vanishes,
the loss equals the closed form lambdified from ``theory`` (H(π), H_rate), the whole Hessian
spectrum at θ_π equals the lambdified closed form (the nonzero eigenvalues, the rest 0) within the
spectrum's own error estimate, and no verdict is ever "contradicted" — these statements are proven.
Strategies (``tests/strategies.py``) reach p = q, the edges down to 1e-6 and |p + q - 1| down to 1e-10.
"""

import torch
from hypothesis import given
from hypothesis import strategies as st

from numerics.markov import MarkovChain
from numerics.stationary_points import theta_pi, theta_star
from tests.strategies import dtype, pq
from theory.landscape import numeric_losses
from verify.analysis import analyse_bigram, analyse_unigram, closed_form_spectrum
from verify.cli import Config
from verify.measure import TOLERANCE, measure

D_MODEL, SEQ_LEN = 2, 3


def _config(p, q, tying, dt):
    return Config(p, q, tying, D_MODEL, SEQ_LEN, "cpu", dt, 0)


@given(pq, st.booleans(), dtype)
def test_theta_pi_is_stationary_with_the_closed_form_loss_and_spectrum(pq, tying, dt):
    config = _config(*pq, tying, dt)
    chain = MarkovChain(*pq)
    point = measure(config, theta_pi(chain, D_MODEL, SEQ_LEN, tying=tying))
    g_tol, l_tol, rtol = TOLERANCE[dt]
    unigram, _ = numeric_losses()(*pq)
    assert point.grad_max <= g_tol
    assert abs(point.value - unigram) <= max(l_tol * max(unigram, 1.0), point.rounding)
    expected = closed_form_spectrum(config)
    D = point.spectrum.values.numel()
    full = torch.tensor(sorted([*expected, *[0.0] * (D - len(expected))]), dtype=torch.float64)
    gap = (point.spectrum.values - full).abs()
    assert bool((gap <= point.spectrum.bounds + rtol * max(map(abs, expected))).all()), (gap.max(), expected)


@given(pq, st.booleans(), dtype)
def test_theta_star_is_stationary_with_the_entropy_rate(pq, tying, dt):
    config = _config(*pq, tying, dt)
    point = measure(config, theta_star(MarkovChain(*pq), D_MODEL, SEQ_LEN, tying=tying))
    g_tol, l_tol, _ = TOLERANCE[dt]
    _, rate = numeric_losses()(*pq)
    assert point.grad_max <= g_tol * max(1.0, point.spectrum.values.abs().max().item())
    assert abs(point.value - rate) <= max(l_tol * max(rate, 1.0), point.rounding)
    assert point.spectrum.min_eigenvalue >= -point.spectrum.bounds[0].item()


@given(pq, st.booleans(), dtype)
def test_no_verdict_is_ever_contradicted(pq, tying, dt):
    for analyse in (analyse_unigram, analyse_bigram):
        report = analyse(_config(*pq, tying, dt), "property", 0)
        assert report.verdict != "contradicted", [(c.name, c.measured, c.detail) for c in report.checks
                                                  if c.passed is False]
