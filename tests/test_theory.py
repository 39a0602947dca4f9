import math
import random

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from theory import landscape as T
from theory import reduced as R
from theory import registry
from theory.calculus import identity
from theory.latex import document
from theory.markov import canonical, p, q


@pytest.mark.parametrize("result", registry.identities(), ids=lambda r: r.name)
def test_every_identity_reduces_to_zero(result):
    assert result.proven is True


@pytest.mark.parametrize("result", registry.identities()[:8], ids=lambda r: r.name)
def test_identities_hold_at_random_rational_points_exactly(result):
    rng, logits = random.Random(0), random.Random(1)  # logits apart: the (p, q) draws stay those tested before
    diff = result.expr - result.expected
    for _ in range(20):
        point = {p: sp.Rational(rng.randint(1, 98), 99), q: sp.Rational(rng.randint(1, 98), 99),
                 R.c: sp.Rational(rng.randint(1, 9), 7), R.g: sp.Rational(rng.randint(1, 9), 5), R.s: sp.Rational(1, 2),
                 **{z: sp.Rational(logits.randint(-9, 9), 4) for z in T.Z}}
        if result.name.startswith("grad L(theta_*)") and (point[p] + point[q] > 1):
            point[R.g] = -3  # tied θ_* needs (1+g) α > 0
        value = diff.subs(point)
        entries = list(value) if isinstance(value, sp.MatrixBase) else [value]
        assert all(abs(sp.N(v, 30)) < 1e-25 for v in entries)


def test_determinant_sign_flips_exactly_at_p_plus_q_equal_one():
    det = T.normal_block_pi().form.subs(R.g, 0)
    assert canonical(det / (p + q - 1)) != 0
    for pv, qv, sign in [(0.5, 0.8, 1), (0.2, 0.3, -1), (0.6, 0.45, 1), (0.6, 0.35, -1)]:
        assert math.copysign(1, float(det.subs({p: pv, q: qv}))) == sign


def test_untied_block_is_never_definite():
    det = T.untied_block_pi().form.subs(R.g, 0)
    for pv, qv in [(0.5, 0.8), (0.2, 0.3), (0.9, 0.9)]:
        assert float(det.subs({p: pv, q: qv})) < 0


def _clear_theory_caches():
    for module in (R, T):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


def test_corrupted_reduced_model_breaks_the_identities(monkeypatch):
    """A wrong FF sign or a bias off by a constant must make the identities fail."""
    original = R.logit
    monkeypatch.setattr(R, "logit", lambda x, tying: original(x, tying).subs(R.g, -R.g))
    _clear_theory_caches()
    try:
        assert T.loss_star(True).proven is False
    finally:
        monkeypatch.undo()
        _clear_theory_caches()  # nothing derived from the corrupted model may outlive this test
    wrong_bias = T.Result("L(theta_pi)+0.1", "STAT-PI", R.loss(True).subs(T.theta_pi(True)) + sp.Rational(1, 10),
                          canonical(R.loss(True).subs(T.theta_pi(True)) + sp.Rational(1, 10)), T.loss_pi(True).expected)
    assert wrong_bias.proven is False


@given(st.floats(0.05, 0.95), st.floats(0.05, 0.95), st.floats(-1, 1), st.floats(0.3, 2), st.floats(-0.5, 0.5))
def test_closed_form_gradient_and_hessian_match_autograd(pv, qv, s, c, g):
    symbols = R.parameters(True)
    args = (p, q, *symbols)
    f = sp.lambdify(args, R.loss(True), modules="math")
    grad = sp.lambdify(args, T.gradient(True), modules="numpy")
    hess = sp.lambdify(args, T.hessian(True), modules="numpy")
    point = (pv, qv, s, 0.3, c, g)

    def torch_loss(rho):
        s_, b_, c_, g_ = rho
        z = [s_ * (1 + g_) * (x * s_ + c_) + b_ for x in (0, 1)]
        pi = (qv / (pv + qv), pv / (pv + qv))
        P = ((1 - pv, pv), (qv, 1 - qv))
        softplus = torch.nn.functional.softplus
        return sum(pi[x] * (P[x][1] * softplus(-z[x]) + P[x][0] * softplus(z[x])) for x in (0, 1))

    rho = torch.tensor(point[2:], dtype=torch.float64)
    assert f(*point) == pytest.approx(torch_loss(rho).item(), rel=1e-12)
    torch.testing.assert_close(torch.tensor(grad(*point), dtype=torch.float64).reshape(-1),
                               torch.func.grad(torch_loss)(rho), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.tensor(hess(*point), dtype=torch.float64),
                               torch.func.hessian(torch_loss)(rho), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tying", [True, False])
def test_chain_rule_derivatives_equal_direct_differentiation(tying):
    """gradient_at / hessian_at (through the two logits) agree with sp.diff of the whole loss."""
    rng = np.random.default_rng(7)
    for _ in range(2):
        point = dict(zip(R.parameters(tying), rng.uniform(-1, 1, 5)))
        source = {p: rng.uniform(0.05, 0.95), q: rng.uniform(0.05, 0.95)}
        for chain, direct in ((T.gradient_at, T.gradient), (T.hessian_at, T.hessian)):
            ours = np.array(chain(tying, point).subs(source), dtype=float)
            reference = np.array(direct(tying).subs(point | source), dtype=float)
            np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-14)


def test_latex_document_structure():
    text = document(0.5, 0.8)
    assert text.startswith("\\documentclass{article}") and text.rstrip().endswith("\\end{document}")
    assert "amsmath" in text and text.count("\\begin{equation}") == text.count("\\end{equation}") > 20
    assert "NOT proven" not in text and "0.6662784424" in text




def test_logit_gradient_identity_fails_on_a_corrupted_residual():
    """∇_z F = (π0(σ(z0) − p), π1(σ(z1) − (1 − q))) is proven; σ(−z) for σ(z) or the residual of the other
    state's kernel row (P(1|1) at x = 0) must not reduce to 0."""
    assert T.logit_gradient_identity().proven
    derived = T.logit_gradient_identity().expr
    for wrong in (sp.Matrix([T.pi0 * (T.sigmoid(-T.Z[0]) - p), T.pi1 * (T.sigmoid(T.Z[1]) - (1 - q))]),
                  sp.Matrix([T.pi0 * (T.sigmoid(T.Z[0]) - (1 - q)), T.pi1 * (T.sigmoid(T.Z[1]) - (1 - q))])):
        assert identity("corrupted", "STAT-PI", derived, wrong).proven is False
