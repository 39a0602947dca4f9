"""Claim MANIFOLD (theory.manifold): every identity is proven, a corrupted formula is not, and the symbolic
Hessian agrees with autograd on a concrete model."""

import itertools
import math
import re

import pytest
import sympy as sp
import torch

from theory import landscape as T
from theory import manifold as M
from theory import registry
from theory.latex import _title, document
from theory.markov import p, q


def _proven(expr: sp.Matrix, claimed: sp.Matrix) -> bool:
    """Would ``expr`` = ``claimed`` be proven?  Both sides reduced as ``theory.manifold`` reduces them."""
    return T.Result("mutant", M.CLAIM, expr, expr.applyfunc(M.collected), claimed.applyfunc(M.collected)).proven


@pytest.mark.parametrize("result", M.results(), ids=lambda r: r.name)
def test_every_manifold_identity_is_proven(result):
    assert result.claim == "MANIFOLD"
    assert result.proven is True


def test_the_identities_credit_every_manifold_result_once():
    names = [r.name for r in M.results()]
    assert len(set(names)) == len(names)
    assert [r.name for r in registry.identities() if r.claim == M.CLAIM] == names


@pytest.mark.parametrize(("length", "dim"), M.SIZES)
def test_omega_slopes_enter_the_per_sequence_hessian_then_drop_out(length, dim):
    """Not vacuous: z'_n = ∂F_n/∂ω is in every per-sequence Hessian and in the any-law block (times
    E[σ − x_{n+1}]), and not in the first-order chain's block."""
    slopes = {s for z in M.jet(length, dim).slope for s in z}
    for tying in (True, False):
        assert slopes <= set().union(*(h.free_symbols for h in M.sequence_hessian(length, dim, tying)))
        assert slopes <= M.moment_block(length, dim, tying).free_symbols
        assert not M.derived_block(length, dim, tying).free_symbols & slopes


def test_an_object_the_jet_does_not_name_stops_the_derivation(monkeypatch):
    """The guard of ``sequence_hessian``: a derivative of F left unnamed (here the Jacobians) raises."""
    length, dim = M.SIZES[0]
    named = M._jet_objects(length, dim)
    jacobians = {s for K in M.jet(length, dim).jacobian.values() for s in K}
    monkeypatch.setattr(M, "_jet_objects", lambda *size: {o: s for o, s in named.items() if s not in jacobians})
    with pytest.raises(ArithmeticError, match="more than z, K"):
        M.sequence_hessian.__wrapped__(length, dim, True)


@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize(("length", "dim"), M.SIZES)
def test_wrong_lag_power_is_not_proven(monkeypatch, length, dim, tying):
    """λ^{n−i} for λ^{n+1−i}: the closed form's lag one short."""
    assert M.block_identity(length, dim, tying).proven
    monkeypatch.setattr(M, "lag", lambda n, i: n - i)
    assert M.block_identity.__wrapped__(length, dim, tying).proven is False  # __wrapped__: the cache keeps the truth


def test_wrong_lag_power_breaks_the_moment_identity():
    length = M.moment_identity().expr.rows
    short = sp.Matrix(length, length, lambda r, c: -M.K_SYMBOL * M.LAMBDA_SYMBOL ** (r - c) if c <= r else 0)
    assert _proven(M.lag_moments(length), M.claimed_lag_moments(length))
    assert not _proven(M.lag_moments(length), short)


@pytest.mark.parametrize(("length", "dim"), M.SIZES)
def test_dropping_the_transpose_is_not_proven(length, dim):
    """H_ee = k M − A (K instead of K + Kᵀ) fails at every size."""
    claimed = M.closed_form(M.jet(length, dim), True)
    claimed[:dim, :dim] += M.lag_jacobian(M.jet(length, dim)).T
    assert not _proven(M.derived_block(length, dim, True), claimed)


@pytest.mark.parametrize(("length", "dim"), M.SIZES)
def test_only_d_2_tells_k_from_its_transpose(length, dim):
    """2K for K + Kᵀ (tied), or −A for −Aᵀ in the e–a block (untied), agrees at d = 1 and fails at d = 2:
    why the proofs include d = 2."""
    A = M.lag_jacobian(M.jet(length, dim))
    tied = M.closed_form(M.jet(length, dim), True)
    tied[:dim, :dim] += A.T - A  # k M − 2A
    untied = M.closed_form(M.jet(length, dim), False)
    untied[:dim, dim:2 * dim], untied[dim:2 * dim, :dim] = -A, -A.T
    assert _proven(M.derived_block(length, dim, True), tied) is (dim == 1)
    assert _proven(M.derived_block(length, dim, False), untied) is (dim == 1)


@pytest.mark.parametrize("bias", [sp.log(q) - sp.log(p), T.UNIGRAM_BIAS + sp.log(2)], ids=["log(q|p)", "log(p|q)+log2"])
@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
def test_wrong_bias_is_not_proven(bias, tying):
    """Off M_π (b = log(q/p), or log(p/q) + log 2) the Hessian is not the closed form."""
    length, dim = M.SIZES[0]
    claimed = M.closed_form(M.jet(length, dim), tying)
    assert _proven(M.derived_block(length, dim, tying), claimed)
    assert not _proven(M.derived_block(length, dim, tying, bias), claimed)


def test_bessel_corrected_covariance_is_not_proven():
    """The W_O = W_1 = W_2 = 0 Schur complement has Cov with weights 1/N; 1/(N − 1) fails."""
    result = M.position_schur_identity()
    length, dim = M.SPECIAL_SIZE
    bessel = M.K_SYMBOL * (M.covariance(M.position_symbols(length, dim)) * sp.Rational(length, length - 1)
                           + 2 * (p + q - 1) * sp.eye(dim))
    assert not _proven(result.expr, bessel)


def _concrete_model(length: int, dim: int):
    """A smooth causal map F_n = tanh(Σ_{i≤n} W_{n,i} x̃_i), positions, and a direction ω moves them along."""
    gen = torch.Generator().manual_seed(length * 10 + dim)
    mix = torch.randn(length, length, dim, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
    pos = torch.randn(length, dim, generator=gen, dtype=torch.float64)
    direction = torch.randn(length, dim, generator=gen, dtype=torch.float64)

    def hidden(xt: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.tanh(sum(mix[n, i] @ xt[i] for i in range(n + 1))) for n in range(length)])

    return hidden, pos, direction


def concrete_hessian(length: int, dim: int, tying: bool, law, bias: float) -> tuple[torch.Tensor, dict]:
    """The exact loss of ``_concrete_model`` under ``law`` (the probability of one sequence x_1..x_{N+1}), its Hessian
    in (e, [a], b, ω) by autograd at e = a = ω = 0, b = ``bias``, and the values of that model's z_n and K_{n,i}
    as substitutions for ``M.jet(length, dim)``'s symbols."""
    hidden, pos, direction = _concrete_model(length, dim)
    sequences = list(itertools.product((0, 1), repeat=length + 1))
    weights = [law(s) for s in sequences]

    def loss(theta: torch.Tensor) -> torch.Tensor:
        e, b, omega = theta[:dim], theta[-2], theta[-1]
        head = e if tying else theta[dim:2 * dim]
        total = torch.zeros((), dtype=torch.float64)
        for seq, weight in zip(sequences, weights):
            x = torch.tensor(seq, dtype=torch.float64)
            ell = hidden(x[:length, None] * e + pos + omega * direction) @ head + b
            total = total + weight * (torch.nn.functional.softplus(ell) - x[1:] * ell).mean()
        return total

    theta = torch.zeros(dim * (1 if tying else 2) + 2, dtype=torch.float64)
    theta[-2] = bias
    autograd = torch.autograd.functional.hessian(loss, theta)
    z = hidden(pos)
    jac = torch.autograd.functional.jacobian(hidden, pos)  # [n, j, i, c] = ∂F_n,j/∂x̃_i,c
    model = M.jet(length, dim)
    values = {}
    for n in range(1, length + 1):
        values |= dict(zip(model.hidden[n - 1], z[n - 1].tolist()))
        for i in range(1, n + 1):
            values |= dict(zip(model.jacobian[n, i], jac[n - 1, :, i - 1, :].flatten().tolist()))
    return autograd, values


@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize(("length", "dim"), M.SIZES)
def test_derived_block_equals_autograd_on_a_concrete_model(length, dim, tying):
    """Independent of SymPy's differentiation: the exact loss (all 2^{N+1} sequences) of a concrete model, its
    Hessian in (e, [a], b, ω) by autograd on M_π, against ``derived_block`` at that model's z_n, K_{n,i}."""
    pv, qv = 0.3, 0.55
    pi, P = (qv / (pv + qv), pv / (pv + qv)), ((1 - pv, pv), (qv, 1 - qv))
    autograd, values = concrete_hessian(length, dim, tying, lambda s: pi[s[0]] * math.prod(
        P[a][b] for a, b in itertools.pairwise(s)), math.log(pv / qv))
    values |= {p: pv, q: qv}
    symbolic = torch.tensor(M.derived_block(length, dim, tying).subs(values).tolist(), dtype=torch.float64)
    torch.testing.assert_close(symbolic, autograd, rtol=1e-10, atol=1e-12)
    assert autograd[-1].abs().max() < 1e-12  # the ω row: flat in every other direction


def test_latex_section_shows_every_identity_proven_and_is_balanced():
    text = document()
    start = text.index("\\section{The critical manifold}")
    section = text[start:text.index("\\section{", start + 1)]  # up to the next section
    assert section.count("the difference reduced to exactly $0$") == 9 and "did NOT" not in section  # 9 displays
    for result in M.results():
        assert f"{M.CLAIM}, proven" in text.split(f"\\paragraph{{{_title(result.statement)}}}")[-1][:40]
    unescaped = re.sub(r"\\[{}]", "", text)
    assert unescaped.count("{") == unescaped.count("}")
    for env in set(re.findall(r"\\begin\{(\w+)\}", text)):
        assert text.count(f"\\begin{{{env}}}") == text.count(f"\\end{{{env}}}"), env
    for symbol in ("k = \\pi_0 \\pi_1", "\\lambda = 1 - p - q", "K_{n,i} = \\partial F_n", "A = \\frac1N"):
        assert symbol in section
