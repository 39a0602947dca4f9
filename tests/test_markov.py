import itertools
import math

import pytest
import torch
from hypothesis import given

from numerics.markov import (
    InvalidInputError,
    MarkovChain,
    all_sequences,
    binary_entropy,
    prefix_tree,
)
from tests.strategies import pq


def test_reference_numbers_of_the_paper():
    chain = MarkovChain(0.5, 0.8)
    assert chain.unigram_loss() == pytest.approx(0.666278, abs=5e-7)
    assert chain.entropy_rate() == pytest.approx(0.619015, abs=5e-7)
    chain = MarkovChain(0.2, 0.3)
    assert chain.unigram_loss() == pytest.approx(0.673012, abs=5e-7)
    assert chain.entropy_rate() == pytest.approx(0.544587, abs=5e-7)


@given(pq)
def test_mutual_information_is_nonnegative_and_vanishes_only_on_iid(pq):
    chain = MarkovChain(*pq)
    assert chain.mutual_information() >= -1e-15
    if abs(chain.p + chain.q - 1) > 1e-3:
        assert chain.mutual_information() > 0


def test_iid_chain_has_equal_unigram_and_bigram_loss():
    chain = MarkovChain(0.3, 0.7)
    assert chain.mutual_information() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("length", [1, 2, 5, 9])
@pytest.mark.parametrize("p, q", [(0.5, 0.8), (0.2, 0.3), (1e-6, 1 - 1e-6)])
def test_prefix_probabilities_sum_to_one_per_length(p, q, length):
    tree = prefix_tree(MarkovChain(p, q), length)
    assert tree.symbols.shape == (2 ** (length + 1) - 2, length)
    for n in range(1, length + 1):
        mass = tree.log_prob[tree.length == n].exp().sum().item()
        assert mass == pytest.approx(1.0, abs=1e-12)


def test_prefix_rows_are_the_distinct_prefixes():
    tree = prefix_tree(MarkovChain(0.5, 0.8), 4)
    for n in range(1, 5):
        rows = tree.symbols[tree.length == n]
        assert torch.equal(rows[:, :n], torch.from_numpy(all_sequences(n)).double())
        assert torch.count_nonzero(rows[:, n:]) == 0
    assert torch.equal(tree.last, tree.symbols[torch.arange(len(tree.length)), tree.length - 1])


def test_prefix_probability_matches_a_direct_product():
    chain = MarkovChain(0.3, 0.6)
    kernel = [[0.7, 0.3], [0.6, 0.4]]
    tree = prefix_tree(chain, 3)
    for bits, n, log_prob in zip(tree.symbols.long().tolist(), tree.length.tolist(), tree.log_prob):
        prob = chain.pi[bits[0]]
        for a, b in itertools.pairwise(bits[:n]):
            prob *= kernel[a][b]
        assert math.isclose(log_prob.exp().item(), prob, rel_tol=1e-13)


def test_sampling_is_seeded_and_stationary():
    chain = MarkovChain(0.2, 0.3)
    a = chain.sample(4000, 50, seed=3)
    assert torch.equal(a, chain.sample(4000, 50, seed=3))
    assert not torch.equal(a, chain.sample(4000, 50, seed=4))
    # stationary at every position: P(x_n = 1) = π1 = 0.4 (4000 draws: sd ≈ 0.008)
    assert (a.mean(dim=0) - 0.4).abs().max() < 0.04
    switches_from_zero = ((a[:, :-1] == 0) & (a[:, 1:] == 1)).sum() / (a[:, :-1] == 0).sum()
    assert switches_from_zero.item() == pytest.approx(0.2, abs=0.01)


def test_binary_entropy_edges():
    assert binary_entropy(0.5) == pytest.approx(math.log(2))
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf"), "x", None, True])
def test_bad_probabilities_are_rejected(bad):
    with pytest.raises(InvalidInputError):
        MarkovChain(bad, 0.5)
    with pytest.raises(InvalidInputError):
        MarkovChain(0.5, bad)
