"""Training, the second-order source, the attention memory mask and the experiments CLI."""

import itertools
import json
import math
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import OneCycleLR

from numerics.dynamics import CanonicalModel
from numerics.markov import InvalidInputError, MarkovChain, SecondOrderChain, preset
from numerics.population import expected_cross_entropy, population_loss
from numerics.stationary_points import canonical_point, theta_pi, theta_star
from numerics.train import (
    DEFAULT_LR,
    TrainConfig,
    TrainResult,
    _optimizer,
    _step_seed,
    add_beta_loss,
    count_transitions,
    excess_by_position,
    initial_params,
    lr_factor,
    next_distribution,
    rank_one_params,
    reference_entropies,
    train,
    warmup_steps,
)
from numerics.transformer import init_params, logits, prefix_logits
from verify import cli, experiments

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
    one = chain.next_one_probability(test_x[:, :-1])
    loss = add_beta_loss(counts, test_x, next_distribution(chain, test_x[:, :-1]))
    kernel_loss = (-(one * one.log() + (1 - one) * (1 - one).log())).mean().item()
    assert kernel_loss <= loss < kernel_loss + 1e-4


def test_onehot_training_on_a_k_state_chain_learns_the_kernel():
    """The released code's model on the paper's 5-state chain: the test loss falls from about ln 5 to near the
    entropy rate, and the add-β estimate of the same samples sits just above the rate."""
    chain = preset("sticky5")
    result = train(chain, TrainConfig(d=5, seq_len=16, steps=150, eval_every=50, eval_sequences=64, lr=1e-2,
                                      embedding="onehot"))
    assert result.test_loss[0] > 1.55 and result.final_loss < chain.unigram_loss() - 0.5
    assert set(result.reference_test_loss) == {"unigram", "bigram"} and result.exact_loss is None
    assert chain.entropy_rate() - 0.05 < result.add_beta_loss < chain.entropy_rate() + 0.05
    with pytest.raises(InvalidInputError, match="one-hot"):
        train(chain, TrainConfig(steps=1))


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
    assert {p.name for p in (tmp_path / "tying").iterdir()} == {"summary.json", "curves.png", "curves.pdf",
                                                               "results.jsonl"}
    # the dtype as the flag spells it (was "torch.float64"), the optimiser and its resolved rate
    assert summary["settings"]["dtype"] == "float64"
    assert (summary["settings"]["optimizer"], summary["settings"]["lr"]) == ("adamw", DEFAULT_LR["adamw"])


@pytest.mark.parametrize("argv", [["nonsense"], ["tying", "--seeds", "0"], ["tying", "--steps", "-3"],
                                  ["tying", "--device", "cuda"]])
def test_experiments_cli_bad_input_exits_2(argv, capsys):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert experiments.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def _rates(config: TrainConfig) -> list[float]:
    """The learning rate of every update of a run, read from the optimiser as training would see it."""
    params = init_params(2, 4, seed=0)
    for value in params.values():
        value.requires_grad_(True)
    optimizer, schedule = _optimizer(params, config)
    rates = []
    for _ in range(config.steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: moves nothing, but the schedule's bookkeeping runs as in training
        if schedule is not None:
            schedule.step()
    return rates


@pytest.mark.parametrize("steps", [1, 2, 50, 800])
def test_schedule_warms_up_from_lr_over_100_then_decays_to_lr_over_5(steps):
    config = TrainConfig(steps=steps, lr=1e-2)
    rates = _rates(config)
    ramp = warmup_steps(steps, config.warmup)
    assert ramp == max(1, round(0.02 * steps))
    assert rates[0] == pytest.approx(1e-4)  # lr / 100
    assert rates == pytest.approx([1e-2 * lr_factor(s, steps, config.warmup) for s in range(steps)])
    if steps > ramp:  # the peak is reached at the end of the warm-up
        assert rates[ramp] == pytest.approx(1e-2) and max(rates) == pytest.approx(1e-2)
    if steps - 1 > ramp:  # then cosine down to lr / 5 at the last update, never below
        assert rates[-1] == pytest.approx(2e-3) and min(rates[ramp:]) == pytest.approx(2e-3)
        assert all(a >= b for a, b in pairwise(rates[ramp:]))
    assert all(a <= b for a, b in pairwise(rates[: ramp + 1]))


@pytest.mark.parametrize("steps", [1, 2, 50])
def test_short_runs_train_without_error(steps):
    # OneCycleLR divided by zero for fewer than ~2/warmup steps (50 at 2 % warm-up)
    result = train(MarkovChain(0.5, 0.8), TrainConfig(d=2, seq_len=4, steps=steps, eval_every=25, eval_sequences=8))
    assert result.steps[-1] == steps and all(math.isfinite(v) for v in result.test_loss)


def _decayed(params, config: TrainConfig) -> set[str]:
    """The names of the parameters AdamW decays, at ``config.weight_decay``; the rest are in a group without decay."""
    optimizer, _ = _optimizer(params, config)
    decayed, others = optimizer.param_groups
    assert (decayed["weight_decay"], others["weight_decay"]) == (config.weight_decay, 0.0)
    assert len(decayed["params"]) + len(others["params"]) == len(params)
    return {name for name, value in params.items() if any(value is p for p in decayed["params"])}


@pytest.mark.parametrize(("embedding", "tying"), list(itertools.product(("scalar", "onehot"), (True, False))))
def test_released_recipe_decays_the_linear_weights_but_not_the_token_embedding(embedding, tying):
    config = TrainConfig(d=2, seq_len=4, layers=2, tying=tying, embedding=embedding, layer_norm=True)
    params = initial_params(config, 2 if embedding == "onehot" else None)
    token, head = ("E", "A") if embedding == "onehot" else ("e", "a")
    linear = {f"{name}{layer}" for name in ("W_Q", "W_K", "W_V", "W_O", "W_1", "W_2") for layer in ("", ".1")}
    linear |= set() if tying else {head}
    assert _decayed(params, replace(config, recipe="released")) == linear
    assert _decayed(params, config) == linear | {token}  # the package also decays the embedding


@pytest.mark.parametrize(("layers", "embedding"), [(1, "scalar"), (2, "onehot")])
def test_released_recipe_scales_w_o_and_w_2_and_zeroes_the_head_bias_and_nothing_else(layers, embedding):
    config = TrainConfig(d=3, seq_len=5, layers=layers, embedding=embedding, layer_norm=True, tying=False, seed=4)
    k = 3 if embedding == "onehot" else None
    package, released = initial_params(config, k), initial_params(replace(config, recipe="released"), k)
    assert set(released) == set(package) and bool(package["b"].abs().min() > 0)
    for name, value in package.items():
        if name.split(".")[0] in ("W_O", "W_2"):
            assert torch.equal(released[name], value / math.sqrt(2 * layers)), name
        elif name == "b":
            assert torch.equal(released[name], torch.zeros_like(value))
        else:
            assert torch.equal(released[name], value), name
    rank_one = TrainConfig(d=3, seq_len=5, init="rank-one", seed=4)
    start = initial_params(replace(rank_one, recipe="released"))
    assert all(torch.equal(start[k], v) for k, v in initial_params(rank_one).items())


def test_released_recipe_draws_w_2_at_gpt2s_scale():
    """0.02/√(2·layers): 0.01 at two layers, measured on 2·64·256 draws (standard error 0.3 %)."""
    config = TrainConfig(d=64, seq_len=2, layers=2, recipe="released", seed=1)
    params = initial_params(config)
    spread = torch.cat([params["W_2"].flatten(), params["W_2.1"].flatten()]).std().item()
    assert spread == pytest.approx(0.01, rel=0.02)


def _one_cycle_rates(steps: int, lr: float, warmup: float) -> list[float]:
    """The released code's schedule as torch computes it (Markov-Simple/src/main.py's OneCycleLR arguments)."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=lr)
    cycle = OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=warmup, anneal_strategy="cos",
                       cycle_momentum=False, div_factor=1e2, final_div_factor=0.05)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        cycle.step()
    return rates


@pytest.mark.parametrize("steps", [1, 2, 7, 100, 400, 800, 1000])
def test_released_schedule_is_torchs_one_cycle_with_the_released_arguments(steps):
    config = TrainConfig(steps=steps, lr=2e-3, recipe="released")
    rates = _rates(config)
    assert rates == pytest.approx(_one_cycle_rates(steps, 2e-3, config.warmup), rel=1e-12, abs=0)
    if steps == 800:  # a 15-step cosine warm-up: lr/100 at 0, the peak at 15, above the package's linear ramp
        assert rates[0] == pytest.approx(2e-5) and rates[15] == pytest.approx(2e-3) and max(rates) == rates[15]
        assert rates[8] == pytest.approx(2e-3 * (0.01 + 0.99 * (1 - math.cos(math.pi * 8 / 15)) / 2))
        assert rates[8] > 2e-3 * lr_factor(8, 800, config.warmup) + 1e-5
        assert rates[-1] == pytest.approx(4e-4)


@pytest.mark.parametrize("steps", [1, 2, 50])
def test_released_schedule_trains_short_runs_and_peaks_at_step_0_at_one_over_warmup_steps(steps):
    """At 50 steps OneCycleLR's warm-up ends at step 0 and it divides by zero; the written-out schedule is its
    limit from a warm-up fraction just below 2 %: lr at step 0, then the decay."""
    if steps == 50:
        rates = _rates(TrainConfig(steps=50, lr=2e-3, recipe="released"))
        assert rates[0] == 2e-3 and rates == pytest.approx(_one_cycle_rates(50, 2e-3, 0.02 - 1e-15), rel=1e-9)
    result = train(MarkovChain(0.5, 0.8), TrainConfig(d=2, seq_len=4, steps=steps, eval_every=25, eval_sequences=8,
                                                      recipe="released", embedding="onehot"))
    assert result.steps[-1] == steps and all(math.isfinite(v) for v in result.test_loss)


def test_a_released_run_starts_from_the_released_initialisation():
    config = TrainConfig(d=2, seq_len=4, steps=1, eval_sequences=8, recipe="released", embedding="onehot", seed=2)
    seen = []
    train(MarkovChain(0.5, 0.8), config, on_eval=lambda step, params, loss: seen.append(params["W_O"].clone()))
    assert torch.equal(seen[0], initial_params(config, 2)["W_O"])


@pytest.mark.parametrize("bad", [{"recipe": "paper"}, {"recipe": "released", "optimizer": "sgd"}])
def test_bad_recipes_are_refused(bad):
    with pytest.raises(InvalidInputError, match="recipe"):
        TrainConfig(**bad)


def test_sgd_is_plain_and_constant():
    config = TrainConfig(d=2, seq_len=4, steps=30, optimizer="sgd")
    assert config.learning_rate == 1.0 and _rates(config) == [1.0] * 30
    params = init_params(2, 4, seed=1)
    optimizer, schedule = _optimizer(params, config)
    assert isinstance(optimizer, torch.optim.SGD) and schedule is None
    assert all(group["momentum"] == 0 and group["weight_decay"] == 0 for group in optimizer.param_groups)
    assert TrainConfig(optimizer="sgd", lr=0.5).learning_rate == 0.5
    with pytest.raises(InvalidInputError):
        TrainConfig(optimizer="adam")
    with pytest.raises(InvalidInputError):
        TrainConfig(lr=0.0)


def test_sgd_training_takes_gradient_steps():
    """One SGD update at lr 0.5 moves every parameter by exactly -0.5 times the batch gradient."""
    chain, config = MarkovChain(0.5, 0.8), TrainConfig(d=2, seq_len=4, steps=1, optimizer="sgd", lr=0.5)
    start = init_params(2, 4, std=config.init_std, seed=0)
    moved = train(chain, config).params
    x = chain.sample(config.batch, 5, seed=_step_seed(0, 1))
    params = {k: v.clone().requires_grad_(True) for k, v in start.items()}
    expected_cross_entropy(logits(params, x[:, :-1], tying=True), x[:, 1:]).mean().backward()
    for name, value in start.items():
        torch.testing.assert_close(moved[name], value - 0.5 * params[name].grad, rtol=1e-12, atol=1e-15)


def test_on_eval_sees_every_evaluation_with_its_loss_and_parameters():
    seen = []
    config = TrainConfig(d=2, seq_len=4, steps=7, eval_every=3, eval_sequences=8)
    result = train(MarkovChain(0.5, 0.8), config,
                   on_eval=lambda step, params, loss: seen.append((step, loss, params["e"].clone())))
    assert [s for s, _, _ in seen] == result.steps == [0, 3, 6, 7]
    assert [loss for _, loss, _ in seen] == result.test_loss
    torch.testing.assert_close(seen[0][2], init_params(2, 4, std=config.init_std, seed=0)["e"])
    torch.testing.assert_close(seen[-1][2], result.params["e"])


def test_rank_one_init_is_the_authors_constants_and_a_canonical_point():
    """wte = 0.5, wpe = -0.25, c_fc = 1, c_proj = -1, b = 0; attention as the Gaussian draw (L2G-INIT)."""
    d, seq_len = 8, 5
    params, gaussian = rank_one_params(d, seq_len, seed=3), init_params(d, seq_len, std=0.02, seed=3)
    for name, value in (("e", 0.5), ("pos", -0.25), ("W_1", 1.0), ("W_2", -1.0), ("b", 0.0)):
        assert params[name].shape == gaussian[name].shape and torch.all(params[name] == value), name
    assert params["W_1"].shape == (32, 8)
    assert all(torch.equal(params[k], gaussian[k]) for k in ("W_Q", "W_K", "W_V", "W_O"))
    # without W_O: the canonical model at (e, w, b) = (√d/2, -d, 0)
    canonical = canonical_point(math.sqrt(d) / 2, -d, 0.0, d, seq_len, attention_std=0.02, seed=3)
    assert all(torch.allclose(params[k], canonical[k], rtol=0, atol=1e-15) for k in canonical if k != "W_O")
    loss = population_loss(params | {"W_O": canonical["W_O"]}, 0.5, 0.8, tying=True).item()
    canonical_value = float(CanonicalModel(MarkovChain(0.5, 0.8)).loss(math.sqrt(d) / 2, -d, 0.0))
    assert loss == pytest.approx(canonical_value, abs=1e-12)


@pytest.mark.parametrize("init", [("rank-one", 0.02), ("gaussian", 0.2)])
def test_training_starts_from_the_configured_initialisation(init):
    name, std = init
    config = TrainConfig(d=2, seq_len=4, steps=1, eval_sequences=8, init=name, init_std=std, seed=5)
    seen = []
    train(MarkovChain(0.5, 0.8), config,
          on_eval=lambda step, params, loss: seen.append({k: v.clone() for k, v in params.items()}))
    start = rank_one_params(2, 4, std=std, seed=5) if name == "rank-one" else init_params(2, 4, std=std, seed=5)
    assert all(torch.equal(seen[0][k], start[k]) for k in start)


@pytest.mark.parametrize("bad", [{"init": "good"}, {"init_std": -0.1}, {"init_std": math.nan},
                                 {"init": "rank-one", "tying": False}, {"init": "rank-one", "layers": 2}])
def test_bad_initialisations_are_refused(bad):
    with pytest.raises(InvalidInputError):
        TrainConfig(**bad)


def test_excess_by_position_is_zero_at_the_kernel_and_the_mutual_information_at_the_unigram():
    chain, config = MarkovChain(0.5, 0.8), TrainConfig(d=4, seq_len=6)
    at_kernel = excess_by_position(theta_star(chain, 4, 6), chain, config)
    torch.testing.assert_close(at_kernel, torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    at_unigram = excess_by_position(theta_pi(chain, 4, 6), chain, config, sequences=4000)
    assert at_unigram.shape == (6,) and at_unigram.mean().item() == pytest.approx(chain.mutual_information(), abs=5e-3)


def test_rank_one_init_reaches_the_bigram_where_the_standard_init_stays_at_the_unigram():
    """L2G-INIT where the comparison is well separated in a short run: d = 2, whose rank-one start has
    canonical slope e²(1 + 2w|w|) = -3.5 (at d = 8 it is -254 and the descent takes hundreds of steps)."""
    config = TrainConfig(d=2, seq_len=16, steps=100, eval_every=50, eval_sequences=256, lr=1e-2)
    with cli.cpu_threads("cpu"):  # as the experiments train: a second thread only stalls on busy cores
        assert _label(MarkovChain(0.5, 0.8), replace(config, init="rank-one")) == "bigram"
        assert _label(MarkovChain(0.5, 0.8), config) == "unigram"
