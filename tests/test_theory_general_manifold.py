"""Claims MANIFOLD-GENERAL, AUTOCOV-SECOND-ORDER, SECOND-ORDER-DEGENERATE (theory.manifold, theory.autocovariance):
every identity is proven, a wrong lag index, moment or autocovariance is not, and the general block agrees with
autograd on a concrete model under the exact second-order source."""

import math

import pytest
import sympy as sp
import torch

from paper_refs import claims
from theory import autocovariance as AC
from theory import manifold as M
from theory import registry
from theory.markov import p, q

from .test_theory_manifold import concrete_hessian

CLAIMS = (M.GENERAL_CLAIM, M.DEGENERATE_CLAIM, AC.CLAIMS[2])
RESULTS = (*M.general_results(), *AC.results())
SIZES = [(n, d, tying) for tying in (True, False) for n, d in M.SIZES]


@pytest.mark.parametrize("result", RESULTS, ids=lambda r: r.name)
def test_every_general_identity_is_proven(result):
    assert result.claim in (*CLAIMS, "SRC")
    assert result.proven is True


def test_the_registry_and_the_claims_file_credit_each_identity_once_under_its_claim():
    names = [r.name for r in RESULTS]
    assert len(set(names)) == len(names)
    assert sorted(r.name for r in registry.identities() if r.name in names) == sorted(names)
    registered = {claim["id"]: set(claim["checks"]) for claim in claims()}
    assert all(r.name in registered[r.claim] for r in RESULTS)
    symbolic = {r.name for r in registry.identities()}  # the claim also lists the numeric checks of theorem_manifold
    assert {r.name for r in M.general_results() if r.claim == M.GENERAL_CLAIM} == registered[M.GENERAL_CLAIM] & symbolic


@pytest.mark.parametrize(("length", "dim", "tying"), SIZES)
def test_only_first_and_second_moments_with_the_next_symbol_enter(length, dim, tying):
    """The any-law block holds E[x_i] and E[x_i x_j] only (every pair (i, j), i < j, is (i, n+1) for n = j − 1),
    and the claimed moment form names exactly the moments the derivation used."""
    entering = M.entering_moments(length, dim, tying)
    assert entering and all(len(s) <= 2 for s in entering)
    claimed = M.law_identity(length, dim, tying).extra["expected"]
    assert {M.moment_symbol(s) for s in entering} == {s for s in claimed.free_symbols if s.name.startswith("E[")}


def test_a_stationary_source_knows_no_third_moment():
    with pytest.raises(ArithmeticError, match="3 symbols"):
        M.stationary_moment((1, 2, 3))
    assert M.stationary_moment((2, 5)) == M.PI1**2 + M.autocovariance_symbol(3)


def _difference(result) -> sp.Matrix:
    return result.form - result.expected


@pytest.mark.parametrize(("length", "dim", "tying"), SIZES)
def test_a_wrong_lag_index_is_not_proven(monkeypatch, length, dim, tying):
    """c(n − i) for c(n + 1 − i): the general block's difference is not 0 (``__wrapped__``: the cache keeps the
    truth)."""
    assert M.general_block_identity(length, dim, tying).proven
    monkeypatch.setattr(M, "lag", lambda n, i: n - i)
    mutant = M.general_block_identity.__wrapped__(length, dim, tying)
    assert mutant.proven is False
    assert any(entry != 0 for entry in _difference(mutant))


def test_a_wrong_lag_index_breaks_the_second_order_corollaries(monkeypatch):
    monkeypatch.setattr(M, "lag", lambda n, i: n - i)
    assert M.odd_lag_identity.__wrapped__().proven is False
    assert M.second_order_theta_pi_identity.__wrapped__().proven is False


def test_a_moment_without_its_mean_square_is_not_proven(monkeypatch):
    """E[x_i x_j] = c_{j−i} (the covariance taken for the second moment) breaks the stationary block."""
    length, dim, tying = SIZES[0]
    monkeypatch.setattr(M, "stationary_block", M.stationary_block.__wrapped__)  # derived afresh, not from the cache
    monkeypatch.setattr(M, "stationary_moment",
                        lambda s: M.PI1 if len(s) == 1 else M.autocovariance_symbol(s[1] - s[0]))
    assert M.general_block_identity.__wrapped__(length, dim, tying).proven is False


def test_the_corollaries_hold_only_for_their_own_source(monkeypatch):
    """At the first-order c(m) θ_π is not degenerate (S = 2k(p+q−1) I), and the second-order c(m) is not §10's."""
    values = AC.values
    monkeypatch.setattr(AC, "values", lambda order, count: values(3 - order, count))
    assert M.second_order_theta_pi_identity.__wrapped__().proven is False
    assert M.first_order_case_identity.__wrapped__(True).proven is False


def test_the_own_position_enters_on_the_first_order_chain_only():
    """Not vacuous: S holds K_{n,n} on the first-order chain and loses it on the second-order one."""
    model = M.jet(*M.SPECIAL_SIZE)
    own = {s for n in range(1, model.length + 1) for s in model.jacobian[n, n]}
    first = M.schur_complement(M.closed_form(model, True), model.dim)
    assert own <= first.free_symbols
    assert not own & M.second_order_schur(model).free_symbols


@pytest.mark.parametrize("order", AC.ORDERS)
def test_a_wrong_step_or_autocovariance_is_not_proven(monkeypatch, order):
    chain = AC.source(order)
    monkeypatch.setattr(AC, "source", lambda o: AC.Source(chain.order, chain.kernel, chain.law, chain.observable,
                                                           step=3 - chain.step))
    assert AC.recursion_identity.__wrapped__(order).proven is False
    assert AC.step_identity.__wrapped__(order).proven is False
    monkeypatch.setattr(AC, "claimed", lambda o, m: AC.K * AC.LAMBDA ** sp.Rational(m, order))  # no zero lags
    assert AC.lag_identity.__wrapped__(order).proven is (order == 1)


def test_the_pair_chain_is_refused_for_an_unknown_order():
    with pytest.raises(ValueError, match="no source of order 3"):
        AC.source(3)


def _second_order_probability(seq: tuple[int, ...], pv: float, qv: float) -> float:
    """ρ(x_1, x_2) Π_t P[x_{t−1}, x_{t+1}] with ρ = π ⊗ π: the second-order source's law of one sequence."""
    pi, P = (qv / (pv + qv), pv / (pv + qv)), ((1 - pv, pv), (qv, 1 - qv))
    return pi[seq[0]] * pi[seq[1]] * math.prod(P[seq[t - 1]][seq[t + 1]] for t in range(1, len(seq) - 1))


@pytest.mark.parametrize("tying", [True, False], ids=["tied", "untied"])
def test_general_block_equals_autograd_under_the_second_order_source(tying):
    """Independent of SymPy: the exact loss of a concrete causal model under the second-order source (all 2^{N+1}
    sequences), its Hessian in (e, [a], b, ω) by autograd on M_π, against ``stationary_block`` at that model's
    z_n, K_{n,i} with π1 and c_m the source's."""
    length, dim = 2, 2
    pv, qv = 0.2, 0.3
    autograd, values = concrete_hessian(length, dim, tying, lambda s: _second_order_probability(s, pv, qv),
                                        math.log(pv / qv))
    values |= {p: pv, q: qv, M.PI1: pv / (pv + qv)}
    values |= {M.autocovariance_symbol(m): c for m, c in enumerate(AC.values(2, length), 1)}
    symbolic = M.stationary_block(length, dim, tying).subs(values).subs(values)  # c_m → p, q → numbers
    torch.testing.assert_close(torch.tensor(symbolic.tolist(), dtype=torch.float64), autograd,
                               rtol=1e-10, atol=1e-12)
    assert autograd[-1].abs().max() < 1e-12  # the ω row: flat in every other direction
