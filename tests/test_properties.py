"""Property-based checks of the full model against the SymPy closed forms, across (p, q) and dtypes.

At θ_π and θ_* (every one of the D parameters of the one-layer transformer): the gradient vanishes,
the loss equals the closed form lambdified from ``theory`` (H(π), H_rate), the whole Hessian
spectrum at θ_π equals the lambdified closed form (the nonzero eigenvalues, the rest 0) within the
spectrum's own error estimate, and no verdict is ever "contradicted" — these statements are proven.
Strategies (``tests/strategies.py``) reach p = q, the edges down to 1e-6 and |p + q - 1| down to 1e-10.
"""

import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from numerics.markov import MarkovChain
from numerics.stationary_points import theta_pi, theta_star
from tests.strategies import dtype, pq
from theory.markov import entropy_rate, p, q, unigram_loss
from verify.analysis import analyse_bigram, analyse_unigram, closed_form_spectrum
from verify.cli import Config
from verify.measure import closed_form_rounding, measure

D_MODEL, SEQ_LEN = 2, 3


def _exact(expression: sp.Expr, pq: tuple[float, float]) -> float:
    """The SymPy closed form at the binary values of (p, q), evaluated to 30 digits: the reference for
    losses whose own rounding is ~1e-18 (a float64 lambdify of h(π1) loses more at q = 1e-4)."""
    return float(expression.evalf(30, subs={p: sp.Float(pq[0], 30), q: sp.Float(pq[1], 30)}))


def _config(p, q, tying, dt):
    return Config(p, q, tying, D_MODEL, SEQ_LEN, "cpu", dt, 0)


@given(pq, st.booleans(), dtype)
def test_theta_pi_is_stationary_with_the_closed_form_loss_and_spectrum(pq, tying, dt):
    config = _config(*pq, tying, dt)
    chain = MarkovChain(*pq)
    point = measure(config, theta_pi(chain, D_MODEL, SEQ_LEN, tying=tying))
    unigram = _exact(unigram_loss(), pq)
    assert bool((point.grad.abs() <= point.grad_rounding).all())
    assert abs(point.value - unigram) <= point.rounding + closed_form_rounding([unigram])
    expected = closed_form_spectrum(config)
    D = point.spectrum.values.numel()
    full = torch.tensor(sorted([*expected, *[0.0] * (D - len(expected))]), dtype=torch.float64)
    gap = (point.spectrum.values - full).abs()
    assert bool((gap <= point.spectrum.bounds + closed_form_rounding(expected)).all()), (gap.max(), expected)


@given(pq, st.booleans(), dtype)
def test_theta_star_is_stationary_with_the_entropy_rate(pq, tying, dt):
    config = _config(*pq, tying, dt)
    point = measure(config, theta_star(MarkovChain(*pq), D_MODEL, SEQ_LEN, tying=tying))
    rate = _exact(entropy_rate(), pq)
    assert bool((point.grad.abs() <= point.grad_rounding).all())
    assert abs(point.value - rate) <= point.rounding + closed_form_rounding([rate])
    assert point.spectrum.min_eigenvalue >= -point.spectrum.bounds[0].item()


@given(pq, st.booleans(), dtype)
def test_no_verdict_is_ever_contradicted(pq, tying, dt):
    for analyse in (analyse_unigram, analyse_bigram):
        report = analyse(_config(*pq, tying, dt), "property", 0)
        assert report.verdict != "contradicted", [(c.name, c.measured, c.detail) for c in report.checks
                                                  if c.passed is False]
