import json

import pytest
import torch

import numerics.population as population
import numerics.transformer as model
import verify.checks as checks
from numerics.primitives import softplus
from paper_refs import claims
from verify import theorem_global_min, theorem_local_min, theorem_saddle
from verify.__main__ import main as verify_all
from verify.__main__ import symbolic_report
from verify.experiments import EXPERIMENTS

REQUIRED = {"theorem", "inputs", "prediction", "verdict", "closed_form", "numeric", "checks"}
SMALL = ["--d", "2", "--seq-len", "4"]


def run(module, argv, capsys):
    code = module.run([*argv, "--json"])
    out = capsys.readouterr().out
    return code, (json.loads(out) if out.strip() else None)


@pytest.mark.parametrize("module, argv, prediction", [
    (theorem_local_min, [], "local minimum"),
    (theorem_local_min, ["--p", "0.2", "--q", "0.3"], "saddle point"),
    (theorem_local_min, ["--no-tying"], "saddle point"),
    (theorem_saddle, [], "saddle point"),
    (theorem_saddle, ["--no-tying", "--p", "0.7", "--q", "0.9"], "saddle point"),
    (theorem_global_min, [], "global minimum"),
    (theorem_global_min, ["--no-tying", "--p", "0.2", "--q", "0.3"], "global minimum"),
])
def test_theorems_are_confirmed_with_the_json_contract(module, argv, prediction, capsys):
    code, report = run(module, [*argv, *SMALL], capsys)
    assert code == 0 and report["verdict"] == "confirmed", report
    assert report.keys() >= REQUIRED and report["prediction"] == prediction
    assert set(report["inputs"]) == {"p", "q", "tying", "d", "seq_len", "device", "dtype"}
    assert {"loss", "grad_max_abs", "hessian_eigenvalues_nonzero", "min_eigenvalue",
            "null_space_dim"} <= report["numeric"].keys()
    for check in report["checks"]:
        assert {"name", "passed", "measured", "expected", "tolerance"} <= check.keys()


def test_local_min_spectrum_matches_closed_form(capsys):
    _, report = run(theorem_local_min, ["--p", "0.9", "--q", "0.6", *SMALL], capsys)
    pi0, pi1 = 0.6 / 1.5, 0.9 / 1.5
    expected = sorted([pi0 * pi1] + [2 * pi0 * pi1 * 0.5] * 2)
    assert report["closed_form"]["hessian_eigenvalues"] == pytest.approx(expected, rel=1e-12)
    assert report["numeric"]["hessian_eigenvalues_nonzero"] == pytest.approx(expected, rel=1e-9)


def test_near_p_plus_q_one_the_verdict_is_inconclusive(capsys):
    code, report = run(theorem_local_min, ["--p", "0.5", "--q", "0.5000000000001", *SMALL], capsys)
    assert code == 0 and report["verdict"] == "inconclusive"


def test_float32_path(capsys):
    code, report = run(theorem_local_min, ["--dtype", "float32", *SMALL], capsys)
    assert code == 0 and report["verdict"] == "confirmed"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_path(capsys):
    code, report = run(theorem_local_min, ["--device", "cuda"], capsys)
    assert code == 0 and report["inputs"]["device"] == "cuda"


@pytest.mark.parametrize("argv", [
    ["--p", "0"], ["--p", "1"], ["--q", "nan"], ["--q", "inf"], ["--p", "abc"], ["--d", "0"],
    ["--seq-len", "0"], ["--seq-len", "40"], ["--bogus"],
] + ([] if torch.cuda.is_available() else [["--device", "cuda"]]))
def test_bad_input_exits_2_with_one_line(argv, capsys):
    assert theorem_local_min.run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


# --- mutation tests: a corrupted model must make the verifiers say "contradicted" (exit 1) ---
# Each mutation is a small, plausible bug; MUTATION_CASES lists which checks must catch it, and
# test_every_check_is_caught_by_some_mutation makes sure no check is left untested.


def _ff_sign(mp):
    original = model.feed_forward
    mp.setattr(model, "feed_forward", lambda params, layer, y: -original(params, layer, y))


def _bias(mp):
    original = model.head
    mp.setattr(model, "head", lambda params, z, *, tying: original(params, z, tying=tying) + 0.05)


def _head_sign(mp):
    original = model.head
    mp.setattr(model, "head", lambda params, z, *, tying: 2 * params["b"] - original(params, z, tying=tying))


def _causal_mask(mp):
    mp.setattr(model, "attention_mask", lambda n, memory=None, device="cpu":
               torch.ones(n, n, dtype=torch.bool, device=device))


def _tying_ignored(mp):
    original = model.head
    mp.setattr(model, "head", lambda params, z, *, tying: original(params, z, tying=True))


def _softmax_scale(mp):
    original = model.attention
    mp.setattr(model, "attention", lambda params, layer, h, key, value, mask:
               original(params, layer, 2.0 * h, key, value, mask) / 2.0)


def _prefix_tree_offset(mp):
    original = population.prefix_logits
    mp.setattr(population, "prefix_logits", lambda params, tree, *, tying: original(params, tree, tying=tying) + 1e-3)


def _loss_wrapper(mp, extra):
    original = population.exact_loss
    mp.setattr(population, "exact_loss", lambda params, chain, *, tying: original(params, chain, tying=tying)
               + extra(params))


def _quartic_dip(mp):  # invisible to gradient and Hessian at pos = 0, felt at finite steps
    _loss_wrapper(mp, lambda params: -(params["pos"] ** 2).sum() ** 2)


def _quadratic_bump(mp):  # curvature in directions the theory says are flat
    _loss_wrapper(mp, lambda params: (params["pos"] ** 2).sum())


def _tangent_dip(mp):  # negative curvature along M_π (pos): a descent direction at θ_π
    _loss_wrapper(mp, lambda params: -0.01 * (params["pos"] ** 2).sum())


def _hidden_negative_curvature(mp):  # same value and gradient, Hessian lowered by 2 on e
    _loss_wrapper(mp, lambda params: -((params["e"] - params["e"].detach()) ** 2).sum())


def _dip_below_minimum(mp):  # lowers the loss away from θ_π by a small quadratic in e
    _loss_wrapper(mp, lambda params: -0.01 * (params["e"] ** 2).sum())


def _half_cross_entropy(mp):
    mp.setattr(population, "expected_cross_entropy",
               lambda logit, p_one, p_zero: 0.5 * p_one * softplus(-logit) + p_zero * softplus(logit))


def _kinked_softplus(mp):  # the audit's bug: autograd of clamp and |x| gives σ(0) = 1, σ'(0) = 0
    mp.setattr(population, "softplus", lambda x: x.clamp(min=0) + torch.log1p(torch.exp(-x.abs())))


def _temperature(mp):  # 1/√d → 1/d in the model and its reference together
    mp.setattr(model, "queries", lambda params, layer, h: h @ params[model.layer_key("W_Q", layer)].T / h.shape[-1])
    _reference_follows_model(mp)


def _reference_follows_model(mp):
    mp.setattr(checks, "reference_logits", lambda params, x, *, tying: model.logits(
        params, torch.tensor([x], dtype=torch.float64), tying=tying)[0].tolist())


def _leaky_mask(mp):  # attention sees the future, in the model and its reference together
    _causal_mask(mp)
    _reference_follows_model(mp)


LOCAL, SADDLE, GLOBAL = theorem_local_min, theorem_saddle, theorem_global_min
IID = ["--p", "0.3", "--q", "0.7"]
MUTATION_CASES = [
    (LOCAL, [], _ff_sign, {"forward = paper's equations"}),
    (GLOBAL, [], _ff_sign, {"loss = H_rate", "full model on φ(ρ) = reduced L(ρ)"}),
    (LOCAL, [], _bias, {"stationary: max |dL/dθ|", "loss = H(pi)"}),
    (LOCAL, [], _causal_mask, {"forward = paper's equations"}),
    (SADDLE, ["--no-tying"], _tying_ignored, {"forward = paper's equations"}),
    (SADDLE, [], _softmax_scale, {"forward = paper's equations", "prefix-tree loss = all-sequence loss"}),
    (LOCAL, [], _prefix_tree_offset, {"prefix-tree loss = all-sequence loss"}),
    (LOCAL, [], _head_sign, {
        "Hessian spectrum = closed form",
        "M_π Schur block = π0π1[Cov+2(p+q-1)I] (small spread)",
        "M_π Schur block = π0π1[Cov+2(p+q-1)I] (large spread)",
        "M_π point class follows λ_min(Cov)+2(p+q-1) (small spread)"}),
    (SADDLE, ["--p", "0.2", "--q", "0.3"], _head_sign, {"descent along negative curvature"}),
    (SADDLE, ["--p", "0.2", "--q", "0.3"], _hidden_negative_curvature, {
        "Hessian spectrum = closed form", "M_π Schur block = π0π1[Cov+2(p+q-1)I] (large spread)",
        "M_π point class follows λ_min(Cov)+2(p+q-1) (large spread)"}),
    (LOCAL, [], _quadratic_bump, {"Hessian spectrum = closed form", "null-space dimension",
                                  "Lanczos extremes = closed form"}),
    (LOCAL, [], _quartic_dip, {"flat along the manifold M_π", "gradient descent returns to H(pi)"}),
    (LOCAL, [], _tangent_dip, {"no descent among nearby perturbations", "Hessian spectrum = closed form"}),
    (LOCAL, IID, _dip_below_minimum, {"no perturbation below the global minimum"}),
    (GLOBAL, [], _hidden_negative_curvature, {"Hessian positive semidefinite", "Hessian = Gauss-Newton Gram matrix"}),
    (GLOBAL, ["--d", "4"], _kinked_softplus, {"Hessian = Gauss-Newton Gram matrix"}),  # r = 16: a logit exactly 0
    (LOCAL, ["--p", "0.9", "--q", "0.9"], _kinked_softplus, {"Hessian spectrum = closed form"}),
    (GLOBAL, [], _half_cross_entropy, {"no random θ below H_rate"}),
    (LOCAL, [], _temperature, {"M_π Hessian = closed form (attention on)"}),
    (LOCAL, [], _leaky_mask, {"M_π Hessian = closed form (attention on)"}),
]


@pytest.mark.parametrize("module, argv, corrupt, failing", MUTATION_CASES,
                         ids=[f"{m.THEOREM}-{c.__name__.strip('_')}" for m, _, c, _ in MUTATION_CASES])
def test_a_corrupted_model_is_contradicted(module, argv, corrupt, failing, monkeypatch, capsys):
    corrupt(monkeypatch)
    code, report = run(module, [*SMALL, *argv], capsys)
    assert code == 1 and report["verdict"] == "contradicted"
    failed = {c["name"] for c in report["checks"] if c["passed"] is False}
    assert failing <= failed, failing - failed


def _all_numeric_checks(capsys) -> set[str]:
    names = set()
    for module, argv in [(theorem_local_min, []), (theorem_saddle, []), (theorem_saddle, ["--no-tying"]),
                         (theorem_global_min, []), (theorem_local_min, IID)]:
        _, report = run(module, [*argv, *SMALL], capsys)
        names |= {c["name"] for c in report["checks"]}
    return names


def test_every_check_is_caught_by_some_mutation(capsys):
    caught = set().union(*(failing for *_, failing in MUTATION_CASES))
    assert _all_numeric_checks(capsys) - caught == set()


def test_every_claim_has_checks_and_every_check_a_claim(capsys):
    names = _all_numeric_checks(capsys) | {c.name for c in symbolic_report().checks}
    registered = {name for claim in claims() for name in claim["checks"]}
    assert all(claim["checks"] or claim.get("experiment") in EXPERIMENTS for claim in claims())
    trained = {claim["id"]: claim.get("experiment") for claim in claims() if not claim["checks"]}
    settings = [s for make in EXPERIMENTS.values() for s in make()]
    assert all(trained.get(s.claim) == s.experiment for s in settings), "settings pointing at the wrong claim"
    assert set(trained.values()) == set(EXPERIMENTS), "experiments without a claim"
    assert names - registered == set(), "checks without a claim"
    assert registered - names == set(), "claims pointing at checks that do not exist"


def test_verify_all_and_list(capsys):
    assert verify_all([*SMALL, "--list"]) == 0
    out = capsys.readouterr().out
    assert "theorem_local_min" in out and "LOCAL-MIN" in out and "contradicted" not in out
