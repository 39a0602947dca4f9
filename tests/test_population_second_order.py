"""The exact population loss under the paper's second-order source and with an attention memory mask.

The reference here is written from scratch: all 2^N sequences with NumPy, each weighted by a pair law
found by iterating the pair chain built from the table (not ``SecondOrderChain.pair_law``), and the
expected cross-entropy at each position written out from the model's logits.
"""

import itertools

import numpy as np
import pytest
import torch

import numerics.transformer as model
from numerics import population
from numerics.markov import NO_SYMBOL, InvalidInputError, MarkovChain, SecondOrderChain, prefix_tree
from numerics.population import chain_loss, monte_carlo_loss
from numerics.transformer import init_params, logits, onehot_from_scalar

LAGGED = ((0.2, 0.2), (0.7, 0.7))  # SecondOrderChain.lagged(0.2, 0.3): x_{n+1} ~ P(· | x_{n-1})
GENERAL = ((0.1, 0.7), (0.4, 0.9))
TABLES = {"lagged": LAGGED, "general": GENERAL}


def pair_law_by_iteration(table: np.ndarray) -> np.ndarray:
    """μ[a, b] = P(x_{n-1} = a, x_n = b), from μ'[b, c] = Σ_a μ[a, b] P(c | a, b) iterated to its fixed point."""
    mu = np.full((2, 2), 0.25)
    for _ in range(5000):
        nxt = np.zeros((2, 2))
        for a, b in itertools.product(range(2), repeat=2):
            nxt[b, 1] += mu[a, b] * table[a, b]
            nxt[b, 0] += mu[a, b] * (1 - table[a, b])
        mu = nxt
    return mu


def brute_force_loss(params, table, *, tying, memory):
    """Σ_x P(x_1^N) (1/N) Σ_n E[-log P_θ(x_{n+1} | x_1^n) | x_1^n] over all 2^N sequences, by hand."""
    table = np.array(table)
    n_pos = params["pos"].shape[0]
    mu = pair_law_by_iteration(table)
    order_one = (mu * table).sum(axis=0) / mu.sum(axis=0)  # P(x_{n+1} = 1 | x_n = b)
    xs = np.array(list(itertools.product([0, 1], repeat=n_pos)))
    if n_pos == 1:
        prob = mu.sum(axis=1)[xs[:, 0]]
    else:
        prob = mu[xs[:, 0], xs[:, 1]].copy()
        for n in range(2, n_pos):
            p_one = table[xs[:, n - 2], xs[:, n - 1]]
            prob *= np.where(xs[:, n] == 1, p_one, 1 - p_one)
    ell = logits(params, torch.tensor(xs, dtype=torch.float64), tying=tying, memory=memory).detach().numpy()
    p_next = np.empty(xs.shape)
    p_next[:, 0] = order_one[xs[:, 0]]
    p_next[:, 1:] = table[xs[:, :-1], xs[:, 1:]]
    cross_entropy = p_next * np.logaddexp(0.0, -ell) + (1 - p_next) * np.logaddexp(0.0, ell)
    return float((prob * cross_entropy.mean(axis=1)).sum())


def random_point(d, n_pos, *, layers, layer_norm, tying, seed, std=0.8):
    params = init_params(d, n_pos, layers=layers, layer_norm=layer_norm, tying=tying, std=std, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for name in [k for k in params if k.startswith("ln_")]:  # gains and biases away from 1 and 0
        params[name] = params[name] + 0.3 * torch.randn(params[name].shape, generator=gen, dtype=torch.float64)
    return params


def disagreement(params, chain, table, *, tying, memory):
    """max |exact - brute force|, |naive - brute force|: the check the mutation tests must break."""
    reference = brute_force_loss(params, table, tying=tying, memory=memory)
    return max(abs(chain_loss(params, chain, tying=tying, method=method, memory=memory).item() - reference)
               for method in ("exact", "naive"))


@pytest.mark.parametrize("table", TABLES, ids=list(TABLES))
@pytest.mark.parametrize("layer_norm", [False, True], ids=["plain", "layer-norm"])
@pytest.mark.parametrize("memory", [1, 2, None], ids=["W1", "W2", "full"])
@pytest.mark.parametrize("layers", [1, 2])
def test_exact_and_naive_equal_the_brute_force_loss(layers, memory, layer_norm, table):
    chain = SecondOrderChain(TABLES[table])
    for n_pos, tying in [(5, True), (4, False)]:
        params = random_point(2, n_pos, layers=layers, layer_norm=layer_norm, tying=tying, seed=3 + n_pos)
        assert disagreement(params, chain, TABLES[table], tying=tying, memory=memory) < 1e-12


@pytest.mark.parametrize("n_pos", [1, 2, 3])
def test_short_sequences_use_the_marginal_and_the_order_one_law(n_pos):
    params = random_point(3, n_pos, layers=1, layer_norm=False, tying=True, seed=n_pos)
    assert disagreement(params, SecondOrderChain(GENERAL), GENERAL, tying=True, memory=None) < 1e-12


def test_lagged_constructor_is_the_table_of_the_tests():
    assert SecondOrderChain.lagged(0.2, 0.3).table == LAGGED


def test_prefix_tree_is_weighted_by_the_pair_law_and_the_table():
    chain = SecondOrderChain(GENERAL)
    tree = prefix_tree(chain, 4)
    prob = tree.log_prob.exp()
    for n in range(1, 5):
        assert prob[tree.length == n].sum().item() == pytest.approx(1.0, abs=1e-14)
    mu = pair_law_by_iteration(np.array(GENERAL))
    rows = {tuple(int(s) for s in x[:n]): p for x, n, p in zip(tree.symbols.tolist(), tree.length.tolist(),
                                                               prob.tolist())}
    for a, b in itertools.product(range(2), repeat=2):
        assert rows[(a, b)] == pytest.approx(mu[a, b], rel=1e-12)
        assert rows[(a,)] == pytest.approx(mu[a].sum(), rel=1e-12)
        assert rows[(a, b, 1, 0)] == pytest.approx(mu[a, b] * GENERAL[a][b] * (1 - GENERAL[b][1]), rel=1e-12)
    previous = tree.previous
    assert (previous[tree.length == 1] == NO_SYMBOL).all()
    longer = tree.length > 1
    assert torch.equal(previous[longer], tree.symbols[longer].gather(1, (tree.length[longer] - 2)[:, None])[:, 0])


def test_next_probabilities_read_the_table_and_the_order_one_law_at_the_start():
    chain = SecondOrderChain(GENERAL)
    previous = torch.tensor([NO_SYMBOL, NO_SYMBOL, 0, 1, 1], dtype=torch.float64)
    current = torch.tensor([0, 1, 1, 0, 1], dtype=torch.float64)
    one, zero = chain.next_probabilities(previous, current)
    first = chain.conditional_one()
    assert one.tolist() == [first[0], first[1], 0.7, 0.4, 0.9]
    assert zero.tolist() == pytest.approx([1 - first[0], 1 - first[1], 0.3, 0.6, 0.1], abs=1e-15)


@pytest.mark.parametrize("layers, memory, layer_norm", [(1, 2, False), (2, None, False), (1, 1, True)])
def test_monte_carlo_agrees_with_exact_within_four_standard_errors(layers, memory, layer_norm):
    chain = SecondOrderChain.lagged(0.2, 0.3)
    params = random_point(3, 7, layers=layers, layer_norm=layer_norm, tying=True, seed=4, std=0.5)
    exact = chain_loss(params, chain, tying=True, memory=memory).item()
    estimate = monte_carlo_loss(params, chain, tying=True, num_samples=20000, seed=1, memory=memory)
    assert 0 < estimate.stderr < 0.02
    assert abs(estimate.mean.item() - exact) < 4 * estimate.stderr
    via_api = chain_loss(params, chain, tying=True, method="mc", num_samples=20000, seed=1, memory=memory)
    assert via_api.item() == estimate.mean.item()


def test_monte_carlo_at_one_position():
    chain = SecondOrderChain(GENERAL)
    params = random_point(2, 1, layers=1, layer_norm=False, tying=True, seed=0)
    estimate = monte_carlo_loss(params, chain, tying=True, num_samples=4000, seed=2)
    assert abs(estimate.mean.item() - chain_loss(params, chain, tying=True).item()) < 4 * estimate.stderr


@pytest.mark.parametrize("memory", [1, None])
def test_unigram_point_gives_the_order_zero_entropy(memory):
    chain = SecondOrderChain(GENERAL)
    marginal = chain.pair_law.sum(axis=0)
    for layers, layer_norm in [(1, False), (2, True)]:
        params = init_params(3, 6, layers=layers, layer_norm=layer_norm, std=0.0)
        params["b"] = torch.tensor(np.log(marginal[1] / marginal[0]), dtype=torch.float64)
        loss = chain_loss(params, chain, tying=True, memory=memory).item()
        assert loss == pytest.approx(chain.entropies()["order-0"], rel=1e-13)


def test_a_memory_of_the_whole_past_is_full_attention():
    chain = SecondOrderChain(GENERAL)
    params = random_point(2, 5, layers=1, layer_norm=False, tying=True, seed=9)
    full = chain_loss(params, chain, tying=True).item()
    assert chain_loss(params, chain, tying=True, memory=4).item() == full
    assert chain_loss(params, chain, tying=True, memory=50).item() == full
    assert chain_loss(params, chain, tying=True, memory=1).item() != full


def test_first_order_chain_with_a_memory_mask_matches_its_naive_enumeration():
    chain = MarkovChain(0.3, 0.6)
    params = random_point(3, 7, layers=1, layer_norm=False, tying=False, seed=2)
    for memory in (1, 3):
        exact = chain_loss(params, chain, tying=False, memory=memory)
        naive = chain_loss(params, chain, tying=False, memory=memory, method="naive")
        assert exact.item() == pytest.approx(naive.item(), abs=1e-13)
        assert exact.item() != chain_loss(params, chain, tying=False).item()
    assert population.population_loss(params, 0.3, 0.6, tying=False, memory=1).item() == \
        chain_loss(params, chain, tying=False, memory=1).item()


def flat(params):
    names = list(params)
    sizes = [params[k].numel() for k in names]
    theta = torch.cat([params[k].reshape(-1) for k in names])

    def rebuild(vector):
        return {k: v.reshape(params[k].shape) for k, v in zip(names, vector.split(sizes))}

    return theta, rebuild


@pytest.mark.parametrize("layers, memory", [(1, 1), (1, None), (2, 2), (2, None)])
def test_dense_hessian_of_the_exact_loss(layers, memory):
    """torch.func.hessian runs through the exact loss; one layer: the prefix route's Hessian equals the
    all-sequences route's; two layers: it matches central differences of the gradient."""
    chain = SecondOrderChain(GENERAL)
    params = init_params(2, 4, layers=layers, r=2, tying=True, std=0.6, seed=layers)
    theta, rebuild = flat(params)

    def loss(method):
        return lambda vector: chain_loss(rebuild(vector), chain, tying=True, method=method, memory=memory)

    H = torch.func.hessian(loss("exact"))(theta)
    assert torch.isfinite(H).all()
    torch.testing.assert_close(H, H.T, rtol=0, atol=1e-12)
    if layers == 1:
        torch.testing.assert_close(H, torch.func.hessian(loss("naive"))(theta), rtol=0, atol=1e-11)
        return
    direction = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = 1e-5
    grad = torch.func.grad(loss("exact"))
    difference = (grad(theta + step * direction) - grad(theta - step * direction)) / (2 * step)
    torch.testing.assert_close(H @ direction, difference, rtol=0, atol=1e-6)


# --- mutations: the comparison with the brute-force reference must notice each ---

def first_order_surrogate(chain):
    """The first-order chain with the source's order-1 law: same P(x_1) and P(x_1, x_2), wrong beyond."""
    one = chain.conditional_one()
    return MarkovChain(float(one[0]), float(1 - one[1]))


@pytest.mark.parametrize("table", TABLES, ids=list(TABLES))
def test_a_prefix_tree_weighted_by_the_first_order_chain_is_noticed(table, monkeypatch):
    chain = SecondOrderChain(TABLES[table])
    params = random_point(2, 5, layers=1, layer_norm=False, tying=True, seed=1)
    assert disagreement(params, chain, TABLES[table], tying=True, memory=None) < 1e-12
    original = population.prefix_tree
    monkeypatch.setattr(population, "prefix_tree", lambda source, length, **kw: original(
        first_order_surrogate(source), length, **kw))
    assert disagreement(params, chain, TABLES[table], tying=True, memory=None) > 1e-6


@pytest.mark.parametrize("layers", [1, 2])
def test_an_ignored_memory_mask_is_noticed(layers, monkeypatch):
    chain = SecondOrderChain(GENERAL)
    params = random_point(2, 5, layers=layers, layer_norm=False, tying=True, seed=2)
    reference = brute_force_loss(params, GENERAL, tying=True, memory=1)
    original = model.attention_mask
    monkeypatch.setattr(model, "attention_mask", lambda n, memory=None, device="cpu": original(n, None, device))
    for method in ("exact", "naive"):
        assert abs(chain_loss(params, chain, tying=True, method=method, memory=1).item() - reference) > 1e-6


def test_the_order_one_law_at_the_first_position_matters(monkeypatch):
    chain = SecondOrderChain(GENERAL)
    params = random_point(2, 4, layers=1, layer_norm=False, tying=True, seed=3)
    original = SecondOrderChain.next_probabilities
    # the first position read as if x_0 = 0 came before it
    monkeypatch.setattr(SecondOrderChain, "next_probabilities", lambda self, previous, current: original(
        self, previous.clamp(min=0), current))
    assert disagreement(params, chain, GENERAL, tying=True, memory=None) > 1e-6


# --- bad input ---

@pytest.mark.parametrize("memory", [0, -1, 1.5, True])
def test_memory_below_one_is_refused(memory):
    params = init_params(2, 3)
    with pytest.raises(InvalidInputError, match="memory") as err:
        chain_loss(params, SecondOrderChain(GENERAL), tying=True, memory=memory)
    assert "\n" not in str(err.value)


def test_the_one_hot_model_refuses_the_second_order_source():
    params = onehot_from_scalar(init_params(2, 3, tying=True), tying=True)
    with pytest.raises(InvalidInputError, match="SecondOrderChain") as err:
        chain_loss(params, SecondOrderChain(GENERAL), tying=True)
    assert "\n" not in str(err.value)


# --- the benchmark's second-order rows ---

def test_benchmark_times_the_second_order_source_and_reports_a_missed_target(capsys):
    from tests.test_benchmarks import load

    script = load("population_loss")  # puts benchmarks/ on sys.path, as running the script does
    import _common as common

    threads = torch.get_num_threads()  # the script sets its own (--threads)
    try:
        argv = ["--source", "second-order", "--seq-lens", "3", "--repeats", "1", "--memory", "1"]
        assert common.run(script.main, [*argv, "--target", "1e9"]) == 1
        out = capsys.readouterr().out
        assert "MISS exact loss speed-up over the naive one at N=3 (second-order source)" in out
        assert "first-order" not in out and "memory W = 1" in out
        assert common.run(script.main, [*argv, "--target", "1e-9"]) == 0
        assert "OK   exact loss speed-up over the naive one at N=3 (second-order source)" in capsys.readouterr().out
        assert common.run(script.main, ["--chain", "switching3", "--source", "both"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    finally:
        torch.set_num_threads(threads)
