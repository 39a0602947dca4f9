"""Claims MULTI-STATE-PI, MULTI-STATE-LOCAL-MIN, MULTI-STATE-SADDLE-UNTIED (theory.multistate): every identity is
proven, each fails on a corrupted model or claim, and the closed-form spectrum agrees with autograd on an
independent one-hot bigram model written here."""

import math
import re

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from numerics.markov import PRESETS, InvalidInputError
from paper_refs import claims
from theory import landscape as T
from theory import multistate as MS
from theory.latex import _multistate_section
from theory.markov import p, q

#: b = log(2π_0, π_1, ..): the model off θ_π (the softmax no longer predicts π).
OFF = {2: (2, 1), 3: (2, 1, 1)}


def _proven(expr: sp.Matrix | sp.Expr, claimed: sp.Matrix | sp.Expr) -> bool:
    """Would ``expr`` = ``claimed`` be proven?  Both sides in a field's normal form, as theory.multistate has them."""
    return T.Result("mutant", MS.LOCAL_MIN_CLAIM, expr, expr, claimed).proven


@pytest.mark.parametrize("result", MS.results(), ids=lambda r: r.name)
def test_every_multistate_identity_is_proven(result):
    assert result.claim in MS.CLAIMS
    assert result.proven is True


def test_every_multistate_identity_is_registered_under_its_claim_once():
    """``paper_refs/claims.toml`` credits each identity to its own claim (test_verify checks the converse: every
    registered name is a check of ``python -m verify``, which runs ``theory.registry.identities``)."""
    names = [r.name for r in MS.results()]
    assert len(set(names)) == len(names)
    registered = {claim["id"]: claim["checks"] for claim in claims()}
    assert all(r.name in registered[r.claim] for r in MS.results())


# --- mutations: each proof fails on a corrupted model or claim -------------------------------------------------

@pytest.mark.parametrize("k", [2, 3])
def test_a_non_stationary_law_breaks_the_stationary_identity(k):
    F = MS.field(k)
    uniform = MS._matrix([[sp.Rational(1, k)] * k], F) if k == 3 else MS._matrix([[p / (p + q), q / (p + q)]], F)
    balance = (uniform * MS.transition(k, True) - uniform).to_Matrix()
    assert not _proven(balance, sp.zeros(1, k))


@pytest.mark.parametrize("k", [2, 3])
def test_bias_off_theta_pi_breaks_loss_and_gradient(k):
    assert MS.loss_identity(k).proven and MS.gradient_identity(k, 1).proven
    assert MS.loss_identity(k, OFF[k]).proven is False
    assert MS.gradient_identity(k, 1, OFF[k]).proven is False


@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize(("k", "d"), MS.SIZES)
def test_bias_off_theta_pi_breaks_the_hessian_and_the_pos_rows(k, d, tying):
    assert MS.hessian_identity(k, d, tying, OFF[k]).proven is False
    assert MS.position_identity(k, d, OFF[k]).proven is False


@pytest.mark.parametrize(("k", "d"), MS.SIZES)
def test_corrupted_tied_claims_are_not_proven(k, d):
    """M for M_s, −M_s (the factor 2 missing) and M built from Pᵀ fail: the proof is on the simplex, where M is not
    symmetric even for k = 2 (at the stationary law it is: see the next-but-one test)."""
    derived = MS.hessian_identity(k, d, True).expr
    M, C = MS.coupling(k), MS.softmax_curvature(k)
    minus_two = M.domain.convert(-2)

    def claim(embedding):
        return MS.assemble(d, True, embedding, C).to_Matrix()

    assert _proven(derived, claim(MS.symmetric_part(M) * minus_two))
    assert not _proven(derived, claim(M * minus_two))
    assert not _proven(derived, claim(-MS.symmetric_part(M)))
    transposed = MS.coupling_of(MS.law(k, False), MS.transition(k, False).transpose())
    assert not _proven(derived, claim(MS.symmetric_part(transposed) * minus_two))


@pytest.mark.parametrize(("k", "d"), MS.SIZES)
def test_corrupted_untied_claims_are_not_proven(k, d):
    """The E–A block is −M (E rows, A columns): −Mᵀ and +M fail."""
    derived = MS.hessian_identity(k, d, False).expr
    M, C = MS.coupling(k), MS.softmax_curvature(k)
    assert _proven(derived, MS.assemble(d, False, -M, C).to_Matrix())
    assert not _proven(derived, MS.assemble(d, False, -M.transpose(), C).to_Matrix())
    assert not _proven(derived, MS.assemble(d, False, M, C).to_Matrix())


@pytest.mark.parametrize("k", [2, 3])
def test_two_state_coupling_is_symmetric_only_when_stationary(k):
    """At the stationary law M = Mᵀ for k = 2 (every 2-state chain is reversible), not for k = 3: why the proofs
    include k = 3 for the orientation of the E–A block."""
    M = MS.at_pi_matrix(MS.coupling(k), k)
    assert _proven(M.to_Matrix(), M.transpose().to_Matrix()) is (k == 2)


def test_a_non_stationary_law_breaks_the_kernel_identity():
    """1ᵀM = 0 needs πP = π: with π uniform (k = 3) it fails; M 1 = 0 holds for any π (rows of P sum to 1)."""
    F = MS.field(3)
    uniform = MS._matrix([[sp.Rational(1, 3)] * 3], F)
    M = MS.coupling_of(uniform, MS.transition(3, True))
    ones = MS.DomainMatrix.ones((3, 1), F)
    assert _proven((M * ones).to_Matrix(), sp.zeros(3, 1))
    assert not _proven((M.transpose() * ones).to_Matrix(), sp.zeros(3, 1))


@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
def test_wrong_binary_maps_are_not_proven(tying):
    """s = E1 + E0 (and untied t = A1 + A0) in place of the differences, or the model off θ_π, fail."""
    result = MS.binary_identity(tying)
    rows = MS.binary_map(tying).to_Matrix()
    rows[0, 0] = 1  # s = E0 + E1
    wrong = MS._matrix(rows.tolist(), MS.field(2))
    assert not _proven(result.expr, (wrong.transpose() * MS.scalar_hessian(tying) * wrong).to_Matrix())
    assert MS.binary_identity(tying, OFF[2]).proven is False


def test_the_binary_sign_needs_the_factor_two():
    """−2 M_s on 1^⊥ is twice the scalar eigenvalue 2π0π1(p+q−1) (|E1 − E0| = √2 on the unit vector)."""
    result = MS.binary_sign_identity()
    (repeated,) = [ev for ev, mult in T.spectrum_closed_form(True, 2) if mult == 2]
    assert not _proven(result.expr, MS.field(2).from_sympy(repeated).as_expr())
    assert _proven(result.expr, MS.field(2).from_sympy(4 * T.K * (p + q - 1)).as_expr())


def test_the_derivation_refuses_logits_it_does_not_cover():
    """``_taylor`` reads slopes and curvatures off a quadratic logit affine in b; anything else is an error."""
    model = MS.weights(2, 1, True)
    theta, bias = model.flat, tuple(model.b)
    e, b = model.E[0, 0], model.b[0]
    with pytest.raises(ArithmeticError, match="not quadratic"):
        MS._taylor(e**3 + b, theta, bias, MS.simplex_field(2))
    with pytest.raises(ArithmeticError, match="not affine in b"):
        MS._taylor(e * b, theta, bias, MS.simplex_field(2))


# --- closed form against an independent autograd computation ------------------------------------------------

def _stationary(P: np.ndarray) -> np.ndarray:
    """π from the eigenvector of Pᵀ for eigenvalue 1 (a route independent of the package's)."""
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return pi / pi.sum()


def _bigram_hessian(P: np.ndarray, d: int, tying: bool) -> np.ndarray:
    """Autograd Hessian at θ_π of L = Σ_i π_i Σ_j P_ij [−log softmax(A(E[i] + pos) + b)_j] in (E, [A], pos, b),
    E and A row by row: the one-hot model at second order, written from its definition."""
    k = P.shape[0]
    pi = torch.tensor(_stationary(P))
    weights = pi[:, None] * torch.tensor(P)
    sizes = [k * d] * (1 if tying else 2) + [d, k]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        E = parts[0].reshape(k, d)
        A = E if tying else parts[1].reshape(k, d)
        pos, b = parts[-2], parts[-1]
        logits = (E + pos) @ A.T + b  # row i: the logits after symbol i
        return -(weights * torch.log_softmax(logits, dim=1)).sum()

    theta = torch.zeros(sum(sizes), dtype=torch.float64)
    theta[-k:] = torch.log(pi)
    return torch.autograd.functional.hessian(loss, theta).numpy()


def _claimed(P: np.ndarray, d: int, tying: bool) -> np.ndarray:
    """SPEC §11 as a matrix in the order of ``_bigram_hessian``, from ``coupling_matrix``."""
    k = P.shape[0]
    pi = _stationary(P)
    M = MS.coupling_matrix(P)
    zero = np.zeros((k * d, k * d))
    embedding = -np.kron(M + M.T, np.eye(d)) if tying else \
        np.block([[zero, -np.kron(M, np.eye(d))], [-np.kron(M.T, np.eye(d)), zero]])
    size = embedding.shape[0]
    out = np.zeros((size + d + k, size + d + k))
    out[:size, :size] = embedding
    out[-k:, -k:] = np.diag(pi) - np.outer(pi, pi)
    return out


@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize(("k", "seed"), [(3, 0), (3, 1), (4, 2), (4, 3)])
def test_closed_form_matches_autograd_on_dirichlet_chains(k, seed, d, tying):
    P = np.random.default_rng(seed).dirichlet(np.ones(k), size=k)
    hessian = _bigram_hessian(P, d, tying)
    np.testing.assert_allclose(hessian, _claimed(P, d, tying), atol=1e-14)
    eigenvalues = np.linalg.eigvalsh(hessian)
    nonzero = np.sort(eigenvalues[np.abs(eigenvalues) > 1e-10])
    np.testing.assert_allclose(MS.closed_form_spectrum(P, d, tying), nonzero, atol=1e-12)


@given(st.floats(0.02, 0.98), st.floats(0.02, 0.98))
def test_two_states_have_twice_the_scalar_spectrum_and_its_class(pv, qv):
    """One-hot k = 2 against the scalar model (``theory.landscape.numeric_spectrum``): every nonzero eigenvalue
    doubled, same multiplicities; tied local minimum iff p + q > 1; normal matrix 2π0π1(1 − p − q)."""
    P = np.array([[1 - pv, pv], [qv, 1 - qv]])
    margin = pv + qv - 1
    for tying in (True, False):
        fn, per_d = T.numeric_spectrum(tying)
        scalar = np.sort(np.concatenate([np.repeat(fn(pv, qv), [2 if flag else 1 for flag in per_d])]))
        expected = 2 * scalar[np.abs(scalar) > 1e-12]
        np.testing.assert_allclose(MS.closed_form_spectrum(P, 2, tying), np.sort(expected), atol=1e-12)
    pi0, pi1 = qv / (pv + qv), pv / (pv + qv)
    assert MS.normal_matrix(P)[0, 0] == pytest.approx(-2 * pi0 * pi1 * margin, abs=1e-14)
    if abs(margin) > 1e-9:
        assert MS.predicted_class(P) == ("local minimum" if margin > 0 else "saddle")


def test_preset_chains_classes_and_normal_eigenvalues():
    """sticky5: P = 0.875 I + 0.025 11ᵀ, M_s = 0.175 on 1^⊥: a saddle.  switching3: M_s negative definite:
    a local minimum.  rotating3: P's other eigenvalues complex with negative real part, yet M_s indefinite: a
    saddle.  uniform3 (P = 1πᵀ): degenerate.  Untied: a saddle but for uniform3."""
    expected = {"sticky5": ("saddle", [0.175] * 4), "switching3": ("local minimum", [-0.18041192, -0.1053997]),
                "rotating3": ("saddle", [-0.06675843, 0.0334003]), "uniform3": ("degenerate", [0.0, 0.0])}
    for name, (kind, normal) in expected.items():
        P = PRESETS[name][1]
        assert MS.predicted_class(P) == kind
        np.testing.assert_allclose(np.linalg.eigvalsh(MS.normal_matrix(P)), normal, atol=1e-8)
        assert MS.predicted_class(P, tying=False) == ("degenerate" if name == "uniform3" else "saddle")
    others = np.linalg.eigvals(PRESETS["rotating3"][1])
    others = others[np.abs(others - 1) > 1e-9]
    assert np.all(others.real < 0) and np.all(np.abs(others.imag) > 0.3)
    np.testing.assert_allclose(MS.closed_form_spectrum(PRESETS["sticky5"][1], 1, True), [-0.35] * 4 + [0.2] * 4)
    assert MS.predicted_class(PRESETS["switching3"][1], tol=0.2) == "degenerate"  # |λ_max| = 0.105 within tol


@pytest.mark.parametrize(("name", "descends"), [("rotating3", True), ("sticky5", True), ("switching3", False)])
def test_the_class_shows_in_the_loss(name, descends):
    """Along E = t u wᵀ (u ⊥ 1, w a unit vector) the tied bigram loss drops below H(π) for u the top eigenvector of
    M_s on 1^⊥ when it is positive, and rises in every direction u when M_s is negative definite."""
    P = PRESETS[name][1]
    k = P.shape[0]
    pi = _stationary(P)
    entropy = -(pi * np.log(pi)).sum()
    _, vectors = np.linalg.eigh(MS.normal_matrix(P))
    Q = MS.complement_basis(k)
    directions = [Q @ vectors[:, -1]] if descends else [Q @ v for v in np.random.default_rng(0).normal(size=(5, k - 1))]
    w = np.array([0.6, 0.8])
    for u in directions:
        E = 1e-2 * np.outer(u / np.linalg.norm(u), w)
        logits = E @ E.T + np.log(pi)
        loss = -(pi[:, None] * P * (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))).sum()
        assert bool(loss < entropy) is descends and not math.isclose(loss, entropy, rel_tol=1e-12)


def test_bad_inputs_are_refused():
    P = PRESETS["switching3"][1]
    for d in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="d must be a positive integer"):
            MS.closed_form_spectrum(P, d, True)
    with pytest.raises(InvalidInputError):
        MS.normal_matrix(np.array([[0.5, 0.6], [0.5, 0.5]]))


def test_complement_basis_is_orthonormal_and_orthogonal_to_one():
    for k in (2, 3, 5):
        Q = MS.complement_basis(k)
        np.testing.assert_allclose(Q.T @ Q, np.eye(k - 1), atol=1e-15)
        np.testing.assert_allclose(Q.T @ np.ones(k), 0, atol=1e-15)


def test_latex_section_defines_the_notation_and_shows_every_identity_proven():
    """The section alone (``document()`` derives every identity of the package; test_theory compiles it)."""
    section = "\n".join(_multistate_section())
    assert "did NOT" not in section and "NOT proven" not in section
    assert section.count(": proven") == len(MS.results())
    for symbol in ("D_\\pi = \\mathrm{diag}(\\pi)", "M = D_\\pi (P - \\mathbf{1}", "M_s = \\tfrac12 (M + M^\\top)",
                   "-2 M_s \\otimes I_d", "-M \\otimes I_d"):
        assert symbol in section, symbol
    unescaped = re.sub(r"\\[{}]", "", section)
    assert unescaped.count("{") == unescaped.count("}")
    for env in set(re.findall(r"\\begin\{(\w+)\}", section)):
        assert section.count(f"\\begin{{{env}}}") == section.count(f"\\end{{{env}}}"), env
