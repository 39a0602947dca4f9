"""k-state chains and the one-hot model (claim MULTI-STATE): source, exact loss, θ_π and θ_*."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.func import grad

from numerics.markov import (
    PRESETS,
    FiniteChain,
    InvalidInputError,
    MarkovChain,
    num_prefixes,
    parse_transition,
    prefix_tree,
    preset,
)
from numerics.population import chain_loss
from numerics.stationary_points import onehot_theta_star, theta_pi
from numerics.transformer import init_params, onehot_from_scalar


@pytest.mark.parametrize("matrix, message", [
    ([[0.5, 0.5]], "square"),
    ([[1.0]], "k >= 2"),
    ([[0.5, 0.6], [0.5, 0.5]], "sums to"),
    ([[1.2, -0.2], [0.5, 0.5]], "in [0, 1]"),
    ([[math.nan, 1.0], [0.5, 0.5]], "finite"),
    ([[1.0, 0.0], [0.5, 0.5]], "reducible"),
    ([[0.0, 1.0], [1.0, 0.0]], "periodic"),
    ([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]], "periodic"),
    ("abc", "k×k"),
])
def test_bad_transition_matrices_are_refused_with_the_reason(matrix, message):
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FiniteChain(matrix)


@pytest.mark.parametrize("text, message", [("0.5,0.5;0.2", "different lengths"), ("a,b;c,d", "separated"),
                                           ("0.5,0.5;0.5,0.6", "sums to")])
def test_transition_text_errors(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_transition(text)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(InvalidInputError, match="sticky5"):
        preset("sticky7")


def test_paper_five_state_chain_numbers():
    """The paper's 5-state example: H(π) = ln 5 = 1.609438, bigram loss 0.463712 (its figure's line)."""
    chain = preset("sticky5")
    assert np.allclose(chain.pi, 0.2, rtol=0, atol=1e-15)
    assert chain.unigram_loss() == pytest.approx(math.log(5), rel=1e-14)
    assert chain.entropy_rate() == pytest.approx(0.463712, abs=5e-7)


@pytest.mark.parametrize("name", [*PRESETS, "dirichlet-4-0", "dirichlet-6-3"])
def test_stationary_law_and_entropies(name):
    chain = preset(name)
    P, pi = chain.transition, chain.pi
    assert np.abs(pi @ P - pi).max() < 1e-15 and pi.sum() == pytest.approx(1, abs=1e-15)
    by_hand = -sum(pi[i] * P[i, j] * math.log(P[i, j]) for i in range(chain.k) for j in range(chain.k) if P[i, j])
    assert chain.entropy_rate() == pytest.approx(by_hand, rel=1e-13)
    assert chain.entropy_rate() <= chain.unigram_loss() + 1e-15


def test_binary_chain_is_the_k2_case():
    chain, binary = FiniteChain.binary(0.2, 0.7), MarkovChain(0.2, 0.7)
    assert np.allclose(chain.pi, binary.pi, rtol=1e-15)
    assert chain.unigram_loss() == pytest.approx(binary.unigram_loss(), rel=1e-14)
    assert chain.entropy_rate() == pytest.approx(binary.entropy_rate(), rel=1e-14)


def test_sampling_matches_the_chain():
    chain = preset("rotating3")
    x = chain.sample(4000, 60, seed=3).long()
    assert torch.equal(x, chain.sample(4000, 60, seed=3).long())
    counts = torch.bincount(x.flatten(), minlength=3).double()
    assert np.abs(counts.numpy() / counts.sum().item() - chain.pi).max() < 0.01  # ~8 s.e.
    pairs = torch.zeros(3, 3, dtype=torch.float64)
    pairs.index_put_((x[:, :-1].flatten(), x[:, 1:].flatten()), torch.ones(1, dtype=torch.float64), accumulate=True)
    assert np.abs((pairs / pairs.sum(1, keepdim=True)).numpy() - chain.transition).max() < 0.02


def test_prefix_tree_over_k_symbols():
    chain = preset("switching3")
    tree = prefix_tree(chain, 4)
    assert tree.symbols.shape == (num_prefixes(3, 4), 4)
    for n in range(1, 5):
        assert tree.log_prob[tree.length == n].exp().sum().item() == pytest.approx(1, abs=1e-14)
    sparse = FiniteChain([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    pruned = prefix_tree(sparse, 4)  # prefixes through a zero transition are dropped
    assert len(pruned.length) == sum(3 * 2 ** (n - 1) for n in range(1, 5))
    assert torch.isfinite(pruned.log_prob).all()


def _plain_logits(params, xs, tying):
    """The one-hot model on one sequence, position by position, written out from SPEC §11."""
    E, pos, b = params["E"], params["pos"], params["b"]
    A = E if tying else params["A"]
    W_Q, W_K, W_V, W_O, W_1, W_2 = (params[k] for k in ("W_Q", "W_K", "W_V", "W_O", "W_1", "W_2"))
    embedded = [E[x] + pos[i] for i, x in enumerate(xs)]
    out = []
    for n, h in enumerate(embedded):
        scores = torch.stack([(W_Q @ h) @ (W_K @ embedded[i]) for i in range(n + 1)]) / math.sqrt(E.shape[1])
        weights = torch.softmax(scores, dim=0)
        y = h + W_O @ sum(w * (W_V @ embedded[i]) for i, w in enumerate(weights))
        z = y + W_2 @ torch.relu(W_1 @ y)
        out.append(A @ z + b)
    return out


def _brute_force_loss(params, chain, seq_len, tying):
    """Σ over all k^{N+1} sequences of P(x_1..x_{N+1}) (1/N) Σ_n -log softmax(logits_n)[x_{n+1}]."""
    P, pi = chain.transition, chain.pi
    total = 0.0
    for xs in itertools.product(range(chain.k), repeat=seq_len + 1):
        prob = pi[xs[0]] * math.prod(P[a, b] for a, b in itertools.pairwise(xs))
        logit_rows = _plain_logits(params, xs[:seq_len], tying)
        nll = sum(-torch.log_softmax(row, 0)[xs[n + 1]].item() for n, row in enumerate(logit_rows))
        total += prob * nll / seq_len
    return total


@pytest.mark.parametrize("k, seq_len", [(2, 5), (3, 3), (4, 2)])
@pytest.mark.parametrize("tying", [True, False])
def test_exact_loss_equals_brute_force_over_all_sequences(k, seq_len, tying):
    chain = FiniteChain.dirichlet(k, seed=k)
    params = init_params(3, seq_len, tying=tying, std=0.7, seed=10 + k, symbols=k)
    exact = chain_loss(params, chain, tying=tying).item()
    assert exact == pytest.approx(_brute_force_loss(params, chain, seq_len, tying), rel=1e-12)
    assert chain_loss(params, chain, tying=tying, method="naive").item() == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("tying", [True, False])
def test_onehot_k2_equals_scalar_model(tying):
    """The released code's parametrisation computes the theory's functions (map ``onehot_from_scalar``)."""
    params = init_params(4, 6, tying=tying, std=0.8, seed=5)
    scalar = chain_loss(params, MarkovChain(0.3, 0.85), tying=tying).item()
    onehot = onehot_from_scalar(params, tying=tying)
    assert chain_loss(onehot, FiniteChain.binary(0.3, 0.85), tying=tying).item() == pytest.approx(scalar, rel=1e-14)
    broken = dict(onehot, E=onehot["E"].flip(0))  # symbols swapped: a different function
    assert abs(chain_loss(broken, FiniteChain.binary(0.3, 0.85), tying=tying).item() - scalar) > 1e-3


def test_model_and_chain_sizes_must_agree():
    with pytest.raises(InvalidInputError, match="does not fit"):
        chain_loss(init_params(2, 3, symbols=3), preset("sticky5"), tying=True)
    with pytest.raises(InvalidInputError, match="does not fit"):
        chain_loss(init_params(2, 3), preset("switching3"), tying=True)


@pytest.mark.parametrize("name", ["sticky5", "switching3", "rotating3", "dirichlet-4-1"])
@pytest.mark.parametrize("tying", [True, False])
def test_theta_pi_and_theta_star_are_stationary_at_their_losses(name, tying):
    chain = preset(name)
    for point, target in ((theta_pi(chain, 3, 3, tying=tying), chain.unigram_loss()),
                          (onehot_theta_star(chain, chain.k, 3, tying=tying), chain.entropy_rate())):
        loss = lambda p: chain_loss(p, chain, tying=tying)  # noqa: E731
        assert loss(point).item() == pytest.approx(target, rel=1e-14)
        assert max(g.abs().max().item() for g in grad(loss)(point).values()) < 1e-13


def test_theta_star_needs_d_at_least_k_and_positive_transitions():
    with pytest.raises(InvalidInputError, match="d >= k"):
        onehot_theta_star(preset("sticky5"), 4, 3)
    with pytest.raises(InvalidInputError, match="> 0"):
        onehot_theta_star(FiniteChain([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]), 3, 3)


def test_multi_state_experiment_expects_what_the_k_state_theory_predicts():
    from verify import experiments

    settings = experiments.EXPERIMENTS["multi-state"]()
    expected = {(s.panel.split()[0], s.overrides["tying"]): s.expected for s in settings}
    assert expected == {("sticky5", True): "bigram", ("sticky5", False): "bigram",
                        ("switching3", True): "unigram", ("switching3", False): "bigram",
                        ("rotating3", True): "bigram", ("rotating3", False): "bigram"}
    assert all(s.overrides["embedding"] == "onehot" and s.claim == "TRAIN-MULTI-STATE" for s in settings)


def test_tying_with_the_onehot_embedding_trains_both_models_side_by_side(tmp_path, capsys):
    import json

    from verify import experiments

    code = experiments.main(["tying", "--embedding", "onehot", "--seeds", "1", "--steps", "3", "--seq-len", "6",
                             "--out", str(tmp_path), "--json"])
    summary = json.loads(capsys.readouterr().out)
    variants = [row["variant"] for row in summary["rows"]]
    assert variants.count("tied, 1 layer") == 2 and variants.count("tied, 1 layer, one-hot") == 2
    assert len(summary["trapped"]) == 8 and code in (0, 1)
    assert experiments.main(["depth", "--embedding", "onehot"]) == 2
    assert "applies to the tying experiment" in capsys.readouterr().err


@pytest.mark.parametrize("leave", [1e-17, 1e-12, 2.0**-30])
def test_stationary_law_keeps_full_relative_accuracy(leave):
    """π of [[1 - ε, ε], [q, 1 - q]] is (q, ε)/(q + ε): the tiny entry to ~1e-15 relative (GTH), where a
    linear solve of (Pᵀ - I)π = 0 lost it (negative π at ε = 1e-17 in a 3-state chain)."""
    q = 0.3
    pi = FiniteChain([[1 - leave, leave], [q, 1 - q]]).pi
    assert pi[1] == pytest.approx(leave / (q + leave), rel=1e-14) and pi[0] == pytest.approx(q / (q + leave), rel=1e-15)
    three = FiniteChain([[1 - 2e-17, 1e-17, 1e-17], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]]).pi
    assert (three > 0).all() and math.isfinite(FiniteChain([[1 - 2e-17, 1e-17, 1e-17], [0.3, 0.3, 0.4],
                                                            [0.2, 0.5, 0.3]]).unigram_loss())
