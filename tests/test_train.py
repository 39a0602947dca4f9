"""Training, the second-order source, the attention memory mask and the experiments CLI."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from numerics.markov import InvalidInputError, MarkovChain, SecondOrderChain
from numerics.population import population_loss
from numerics.train import (
    TrainConfig,
    TrainResult,
    add_beta_loss,
    count_transitions,
    reference_entropies,
    train,
)
from numerics.transformer import init_params, logits, prefix_logits
from verify import experiments

SMALL = TrainConfig(d=4, seq_len=32, steps=200, eval_every=50, eval_sequences=256, lr=1e-2)


def _label(source, config):
    return experiments.label(train(source, config), reference_entropies(source))


def test_untied_model_learns_the_kernel_and_tied_model_stays_at_unigram():
    assert _label(MarkovChain(0.2, 0.2), replace(SMALL, tying=False)) == "bigram"
    assert _label(MarkovChain(0.5, 0.8), SMALL) == "unigram"


def test_a_model_that_has_not_trained_is_labelled_other():
    assert _label(MarkovChain(0.5, 0.8), TrainConfig(d=4, seq_len=32, steps=1, eval_sequences=256)) == "other"


def test_same_seed_same_numbers_and_another_seed_differs():
    config = TrainConfig(d=4, seq_len=16, steps=20, eval_every=5)
    first, again = train(MarkovChain(0.3, 0.6), config), train(MarkovChain(0.3, 0.6), config)
    assert first.test_loss == again.test_loss and first.final_loss == again.final_loss
    assert all(torch.equal(first.params[k], again.params[k]) for k in first.params)
    other = train(MarkovChain(0.3, 0.6), TrainConfig(d=4, seq_len=16, steps=20, eval_every=5, seed=1))
    assert other.final_loss != first.final_loss


def test_test_loss_estimates_the_exact_population_loss():
    result = train(MarkovChain(0.3, 0.6), TrainConfig(d=4, seq_len=8, steps=30, eval_sequences=4000))
    assert result.exact_loss is not None
    assert abs(result.final_loss - result.exact_loss) < 4 * result.final_stderr


def test_lagged_chain_entropies_are_the_first_order_closed_forms():
    chain, first = SecondOrderChain.lagged(0.2, 0.3), MarkovChain(0.2, 0.3)
    H = chain.entropies()
    assert H["order-0"] == pytest.approx(first.unigram_loss(), abs=1e-12)
    assert H["order-1"] == pytest.approx(first.unigram_loss(), abs=1e-12)  # x_n says nothing about x_{n+1}
    assert H["order-2"] == pytest.approx(first.entropy_rate(), abs=1e-12)


def test_second_order_pair_law_is_stationary_and_entropies_match_a_long_sample():
    chain = SecondOrderChain(((0.1, 0.7), (0.4, 0.9)))
    mu = chain.pair_law
    T = np.array(chain.table)
    next_mu = np.zeros((2, 2))
    for a in range(2):
        for b in range(2):
            next_mu[b, 1] += mu[a, b] * T[a, b]
            next_mu[b, 0] += mu[a, b] * (1 - T[a, b])
    np.testing.assert_allclose(next_mu, mu, atol=1e-12)
    x = chain.sample(200, 2000, seed=3).long().numpy()
    windows = np.lib.stride_tricks.sliding_window_view(x, 3, axis=1).reshape(-1, 3)
    counts = np.zeros((2, 2, 2))
    np.add.at(counts, tuple(windows.T), 1)
    empirical = (counts / counts.sum()).sum(axis=2)
    np.testing.assert_allclose(empirical, mu, atol=5e-3)
    plug_in = -(counts / counts.sum() * np.log(counts / counts.sum(axis=2, keepdims=True))).sum()
    assert plug_in == pytest.approx(chain.entropies()["order-2"], abs=5e-3)


def test_memory_mask_hides_symbols_older_than_w():
    params = init_params(4, 12, layers=2, std=0.5, seed=0)
    x = (torch.rand(1, 12, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    n, memory = 10, 2
    older, inside = x.clone(), x.clone()
    older[0, : n - memory] = 1 - older[0, : n - memory]  # flip everything before the window
    inside[0, n - memory] = 1 - inside[0, n - memory]  # flip the oldest visible symbol
    z = logits(params, x, tying=True, memory=memory)
    # two layers: position n sees n-2W .. n, so compare at one layer's reach, then at two
    one_layer = {k: v for k, v in params.items() if "." not in k}
    z1 = logits(one_layer, x, tying=True, memory=memory)
    assert torch.equal(logits(one_layer, older, tying=True, memory=memory)[0, n], z1[0, n])
    assert not torch.isclose(logits(one_layer, inside, tying=True, memory=memory)[0, n], z1[0, n])
    reach = x.clone()
    reach[0, : n - 2 * memory] = 1 - reach[0, : n - 2 * memory]
    assert torch.equal(logits(params, reach, tying=True, memory=memory)[0, n], z[0, n])


def test_layer_norm_is_applied_and_the_loss_routes_to_the_naive_enumeration():
    params = init_params(4, 6, layer_norm=True, std=0.5, seed=1)
    x = torch.tensor([[0.0, 1, 1, 0, 1, 0]])
    doubled = dict(params, **{"ln_f.gain": 2.0 * params["ln_f.gain"]})
    # the head reads LN_f(z): doubling its gain doubles the logit minus the bias
    torch.testing.assert_close(logits(doubled, x, tying=True) - params["b"],
                               2.0 * (logits(params, x, tying=True) - params["b"]))
    with pytest.raises(ValueError):
        prefix_logits(params, None, tying=True)
    assert math.isfinite(population_loss(params, 0.3, 0.6, tying=True).item())


def test_add_beta_estimate_approaches_the_kernel_and_never_beats_it():
    chain = MarkovChain(0.5, 0.8)
    x = chain.sample(400, 501, seed=1)
    counts = count_transitions(x, 1)
    assert counts[1].sum() == 400 * 500
    test_x = chain.sample(200, 101, seed=2)
    truth = chain.next_one_probability(test_x[:, :-1])
    loss = add_beta_loss(counts, test_x, truth)
    kernel_loss = (-(truth * truth.log() + (1 - truth) * (1 - truth).log())).mean().item()
    assert kernel_loss <= loss < kernel_loss + 1e-4


def test_label_picks_the_nearest_reference_within_tolerance():
    refs = {"unigram": 0.6663, "bigram": 0.6190}
    result = TrainResult(TrainConfig())
    result.gap = {"unigram": (0.0004, 0.0002), "bigram": (0.0477, 0.0002)}
    assert experiments.label(result, refs) == "unigram"
    result.gap = {"unigram": (0.03, 0.0002), "bigram": (-0.017, 0.0002)}
    assert experiments.label(result, refs) == "other"
    assert experiments.tolerance(refs, 0.0) == pytest.approx(0.01)


def test_bad_training_input_is_refused():
    with pytest.raises(InvalidInputError):
        TrainConfig(memory=0)
    with pytest.raises(InvalidInputError):
        SecondOrderChain(((0.1, 1.0), (0.5, 0.5)))


def test_experiments_cli_writes_summary_plots_and_json(tmp_path, capsys):
    code = experiments.main(["tying", "--quick", "--steps", "20", "--seq-len", "16", "--seeds", "1",
                             "--out", str(tmp_path), "--json"])
    assert code in (0, 1)
    summary = json.loads(capsys.readouterr().out)
    assert {row["variant"] for row in summary["rows"]} == {"tied, 1 layer", "untied, 1 layer"}
    for row in summary["rows"]:
        assert set(row["labels"]) <= {"unigram", "bigram", "other"} and sum(row["labels"].values()) == 1
        assert row["agrees"] is (row["labels"].get(row["expected"], 0) > 0.5)
        assert len(row["runs"][0]["test_loss"]) == len(row["runs"][0]["steps"])
    assert code == (0 if all(row["agrees"] for row in summary["rows"]) else 1)
    assert {p.name for p in (tmp_path / "tying").iterdir()} == {"summary.json", "curves.png", "curves.pdf"}


@pytest.mark.parametrize("argv", [["nonsense"], ["tying", "--seeds", "0"], ["tying", "--steps", "-3"],
                                  ["tying", "--device", "cuda"]])
def test_experiments_cli_bad_input_exits_2(argv, capsys):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert experiments.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
