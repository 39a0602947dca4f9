"""numerics/dynamics.py: the canonical model's numeric loss and derivatives against the symbolic ones, the
flows' energy law on random starts (Hypothesis), the energy's basins, and the flows on corrupted models."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from numerics import dynamics as D
from numerics.markov import MarkovChain
from theory import canonical as C
from theory.markov import p, q

SHORT = D.Integration(horizon=10.0)  # the energy law holds at every t: no need to wait for convergence


@pytest.fixture
def corrupt(monkeypatch):
    """Replace a function of theory.canonical for the numerics (their lambdified cache rebuilt on both sides)."""
    def apply(name, replacement):
        monkeypatch.setattr(C, name, replacement)
        D._compiled.cache_clear()
    yield apply
    monkeypatch.undo()
    D._compiled.cache_clear()


def test_numeric_loss_gradient_hessian_match_the_symbolic_ones():
    """Against sp.diff of the whole symbolic loss (κ = 1 + 2w|w|), lambdified: not the numerics' chain rule."""
    L = C.loss(C.slope())
    grad = [sp.diff(L, c) for c in C.COORDS]
    hess = [[sp.diff(g, c).replace(sp.DiracDelta, lambda *_: 0) for c in C.COORDS] for g in grad]
    loss, grad, hess = (sp.lambdify((p, q, *C.COORDS), f, modules="numpy") for f in (L, grad, hess))
    rng = np.random.default_rng(1)
    e, w, b = rng.uniform(-1.5, 1.5, (3, 6))
    for pq in [(0.5, 0.8), (0.2, 0.3), (0.9, 0.05)]:
        model = D.CanonicalModel(MarkovChain(*pq))
        np.testing.assert_allclose(model.loss(e, w, b), loss(*pq, e, w, b), rtol=1e-13)
        np.testing.assert_allclose(model.gradient(e, w, b), np.array(grad(*pq, e, w, b), dtype=float),
                                   rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(model.hessian(e, w, b), np.array(hess(*pq, e, w, b), dtype=float),
                                   rtol=1e-10, atol=1e-13)


def test_optimal_bias_zeroes_db_and_the_profiled_hessian_is_the_derivative_of_the_profiled_gradient():
    for pq in [(0.5, 0.8), (0.2, 0.3), (0.3, 0.1)]:
        model = D.CanonicalModel(MarkovChain(*pq))
        e, w = np.array([0.3, -1.2, 2.0, 0.8]), np.array([-0.4, 1.1, -2.5, 0.2])
        b = model.optimal_bias(e, w)
        assert np.max(np.abs(model.gradient(e, w, b)[2])) < 1e-15
        h = 1e-6
        for i, (de, dw) in enumerate([(h, 0), (0, h)]):
            central = (model.profiled_gradient(e + de, w + dw) - model.profiled_gradient(e - de, w - dw)) / (2 * h)
            np.testing.assert_allclose(model.profiled_hessian(e, w)[:, i], central, rtol=1e-6, atol=1e-8)


def test_extreme_chains_and_large_logits_stay_finite():
    for pq in [(1e-6, 0.5), (1 - 1e-6, 1e-6), (0.5, 1 - 1e-6)]:
        model = D.CanonicalModel(MarkovChain(*pq))
        e, w = np.array([0.0, 4.0, -4.0, 1e-3]), np.array([4.0, 4.0, -4.0, -1e-3])
        b = model.optimal_bias(e, w)
        for value in (b, model.loss(e, w, b), model.gradient(e, w, b), model.profiled_hessian(e, w)):
            assert np.all(np.isfinite(value))
        assert np.max(np.abs(model.gradient(e, w, b)[2])) < 1e-12


@given(pv=st.floats(0.05, 0.95), qv=st.floats(0.05, 0.95), e0=st.floats(-2, 2), w0=st.floats(-2, 2))
def test_the_profiled_flow_conserves_the_energy_and_the_joint_flow_follows_its_law(pv, qv, e0, w0):
    """On random starts: max_t |E(t) − E(0)| and |E(T) − E(0) + 2∫e² db| within the CLI's allowance."""
    if abs(w0) < 1e-3:  # E is undefined on w = 0 (the invariant line)
        w0 = 0.5
    model = D.CanonicalModel(MarkovChain(pv, qv))
    start = np.array([[e0, w0, 0.0]])
    allowance = 1e3 * SHORT.rtol * (1 + abs(float(D.energy(np.array(e0), np.array(w0)))))
    profiled, joint = (D.integrate(model, start, mode, SHORT) for mode in D.MODES)
    assert profiled.energy_drift[0] <= allowance and joint.joint_residual[0] <= allowance
    assert not profiled.failures and not joint.failures


@pytest.mark.parametrize("name, replacement", [
    ("slope", lambda w_=C.w: 1 - 2 * w_ * sp.Abs(w_)),  # the wrong sign of w|w|
    ("optimal_bias", lambda k=C.kappa, rationalised=False: C.e**2 / 2 + sp.log(2) + sp.log(
        (C.bias_root_rationalised if rationalised else C.bias_root)(sp.exp(k * C.e**2)))),  # b* off by log 2
])
def test_a_corrupted_model_does_not_conserve_the_energy(name, replacement, corrupt):
    corrupt(name, replacement)
    model = D.CanonicalModel(MarkovChain(0.5, 0.8))
    flow = D.integrate(model, np.array([[1.0, -1.5, 0.0], [0.7, 0.6, 0.0]]), "profiled", D.Integration(horizon=3.0))
    assert np.max(flow.energy_drift) > 1e-2


def test_the_energy_with_the_wrong_sign_of_the_log_breaks_the_joint_law(corrupt):
    corrupt("energy", lambda e_=C.e, w_=C.w: e_**2 - w_**2 + sp.sign(w_) * sp.log(sp.Abs(w_)))
    model = D.CanonicalModel(MarkovChain(0.2, 0.3))
    flow = D.integrate(model, np.array([[1.0, -1.5, 0.0], [0.7, 0.6, 0.0]]), "joint", D.Integration(horizon=3.0))
    assert np.max(flow.joint_residual) > 1e-2


@pytest.mark.parametrize("pq, e, w, expected", [
    ((0.5, 0.8), 0.1, 0.5, "unigram"),     # p + q > 1: every w > 0
    ((0.5, 0.8), 0.1, -0.3, "unigram"),    # E = 0.01 - 0.09 + log 0.3 < E_s on -1/√2 < w < 0
    ((0.5, 0.8), 2.0, -0.3, "global"),     # E > E_s there
    ((0.5, 0.8), 0.1, -2.0, "global"),     # w < -1/√2
    ((0.2, 0.3), 0.1, -2.0, "unigram"),    # p + q < 1: E = 0.01 - 4 + log 2 < E_s
    ((0.2, 0.3), 2.0, -2.0, "global"),     # E = log 2 > E_s
    ((0.2, 0.3), 0.1, 0.5, "global"),      # w > -1/√2
    ((0.3, 0.7), 0.1, -2.0, "undecided"),  # p + q = 1: H(π) = H_rate
])
def test_energy_basins(pq, e, w, expected):
    assert D.predicted_basin(MarkovChain(*pq), np.array([e]), np.array([w]))[0] == expected


def test_endpoints_are_labelled_by_their_loss_and_undecided_near_p_plus_q_one():
    model = D.CanonicalModel(MarkovChain(0.5, 0.8))
    flow = D.integrate(model, np.array([[0.5, 1.0, 0.0], [1.5, -2.0, 0.0]]), "joint")
    assert list(flow.labels) == ["unigram", "global"]
    assert flow.loss == pytest.approx([0.666278, 0.619015], abs=1e-6)  # paper-notes' H(π), H_rate
    near = D.CanonicalModel(MarkovChain(0.5, 0.5 + 1e-9))
    flow = D.integrate(near, np.array([[0.5, 1.0, 0.0]]), "joint", SHORT)
    assert list(flow.labels) == ["undecided"]


def test_gaussian_starts_are_seeded_and_the_grid_is_of_cell_centres():
    assert np.array_equal(D.gaussian_starts(5, 0.1, 3), D.gaussian_starts(5, 0.1, 3))
    assert D.gaussian_starts(2000, 0.1, 0).std() == pytest.approx(0.1, rel=0.05)
    e, w = D.grid(4, 3.0)
    assert sorted(set(e)) == [-2.25, -0.75, 0.75, 2.25] and len(w) == 16
