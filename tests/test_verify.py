import json
import math

import pytest
import torch

import numerics.manifold as manifold
import numerics.population as population
import numerics.transformer as model
import verify.checks as checks
from numerics.curvature import flatten, hessian, unflatten
from numerics.markov import MarkovChain
from numerics.population import population_loss
from numerics.primitives import softplus
from numerics.stationary_points import theta_star
from paper_refs import claims
from verify import theorem_global_min, theorem_local_min, theorem_manifold, theorem_saddle
from verify.__main__ import main as verify_all
from verify.__main__ import symbolic_report
from verify.cli import config_from, parser
from verify.experiments import EXPERIMENTS
from verify.report import Check, Report

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
    assert set(report["inputs"]) == {"p", "q", "tying", "d", "seq_len", "device", "dtype", "transition", "chain",
                                     "model"}
    assert report["inputs"]["transition"] == [[1 - report["inputs"]["p"], report["inputs"]["p"]],
                                              [report["inputs"]["q"], 1 - report["inputs"]["q"]]]
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
    assert code == 3 and report["verdict"] == "inconclusive"


def test_float32_path(capsys):
    code, report = run(theorem_local_min, ["--dtype", "float32", *SMALL], capsys)
    assert code == 0 and report["verdict"] == "confirmed"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_path(capsys):
    code, report = run(theorem_local_min, ["--device", "cuda"], capsys)
    assert code == 0 and report["inputs"]["device"] == "cuda"


@pytest.mark.parametrize("argv", [
    ["--p", "0"], ["--p", "1"], ["--q", "nan"], ["--q", "inf"], ["--p", "abc"], ["--d", "0"],
    ["--seq-len", "0"], ["--seq-len", "40"], ["--bogus"], ["--p", "1e-200", "--q", "0.5"],
    ["--q", "1e-12", "--p", "0.5", "--dtype", "float32"],
    ["--d", "16", "--seq-len", "16"],  # the dense Hessian would need ~2 TB: refused before it starts
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
    mp.setattr(population, "prefix_logits", lambda *args, **kw: original(*args, **kw) + 1e-3)


def _loss_wrapper(mp, extra):
    original = population.exact_loss
    mp.setattr(population, "exact_loss", lambda params, *args, **kw: original(params, *args, **kw)
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


def _deep_dip(mp):  # e-curvature lowered by 0.2: a local minimum of M_π (λ_min 0.07) turns into a saddle
    _loss_wrapper(mp, lambda params: -0.1 * (params["e"] ** 2).sum())


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


def _lag_power(mp):  # λ^{n-i} for λ^{n+1-i} in the closed form's lag weights
    original = manifold.lag_powers
    mp.setattr(manifold, "lag_powers", lambda lam, seq_len, **kw: original(lam, seq_len, **kw) / lam)


def _dropped_transpose(mp):  # Σ λ^m K_{n,i} for Σ λ^m (K_{n,i} + K_{n,i}ᵀ)
    mp.setattr(manifold, "symmetric_lag", lambda A: A)


def _flipped_class(mp):  # the closed form's verdict read the wrong way round
    original = manifold._classify
    swap = {manifold.LOCAL_MINIMUM: manifold.SADDLE_POINT, manifold.SADDLE_POINT: manifold.LOCAL_MINIMUM}
    mp.setattr(manifold, "_classify", lambda values, bound: (swap.get(original(values, bound)[0], "undecided"), ""))


def _wrong_unigram_bias(mp):  # M_π placed at b = log(p/q) + 0.05, in the projection and its check alike
    original = MarkovChain.unigram_logit
    mp.setattr(MarkovChain, "unigram_logit", lambda self: original(self) + 0.05)


LOCAL, SADDLE, GLOBAL, MANIFOLD = theorem_local_min, theorem_saddle, theorem_global_min, theorem_manifold
IID = ["--p", "0.3", "--q", "0.7"]
# points of M_π (d = 2, N = 4 from SMALL): seed 0 tied is a local minimum, seed 1 tied a saddle;
# N = 14 > 12 takes the Monte-Carlo route
MANIFOLD_SADDLE, MANIFOLD_MC = ["--seed", "1"], ["--seq-len", "14", "--samples", "400"]
MUTATION_CASES = [
    (LOCAL, [], _ff_sign, {"forward = paper's equations"}),
    (GLOBAL, [], _ff_sign, {"loss = H_rate", "full model on φ(ρ) = reduced L(ρ)"}),
    (LOCAL, [], _bias, {"stationary: max |dL/dθ|", "loss = H(pi)"}),
    (LOCAL, [], _causal_mask, {"forward = paper's equations"}),
    (SADDLE, ["--no-tying"], _tying_ignored, {"forward = paper's equations"}),
    (SADDLE, [], _softmax_scale, {"forward = paper's equations", "prefix-tree loss = all-sequence loss"}),
    (LOCAL, [], _prefix_tree_offset, {"prefix-tree loss = all-sequence loss"}),
    (LOCAL, [], _head_sign, {"Hessian spectrum = closed form"}),
    (MANIFOLD, [], _head_sign, {
        "M_π Schur block = π0π1[Cov+2(p+q-1)I] (small spread)",
        "M_π Schur block = π0π1[Cov+2(p+q-1)I] (large spread)",
        "M_π point class follows λ_min(Cov)+2(p+q-1) (small spread)"}),
    (SADDLE, ["--p", "0.2", "--q", "0.3"], _head_sign, {"descent along negative curvature"}),
    (SADDLE, ["--p", "0.2", "--q", "0.3"], _hidden_negative_curvature, {"Hessian spectrum = closed form"}),
    (MANIFOLD, ["--p", "0.2", "--q", "0.3"], _hidden_negative_curvature, {
        "M_π Schur block = π0π1[Cov+2(p+q-1)I] (large spread)",
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
    (MANIFOLD, [], _temperature, {"M_π block = dense Hessian"}),
    (MANIFOLD, [], _leaky_mask, {"M_π block = dense Hessian"}),
    (MANIFOLD, [], _lag_power, {"M_π block = dense Hessian", "Hessian spectrum = M_π formula"}),
    (MANIFOLD, MANIFOLD_SADDLE, _dropped_transpose, {"M_π block = dense Hessian", "Hessian spectrum = M_π formula"}),
    (MANIFOLD, MANIFOLD_MC, _lag_power, {"M_π block = Monte-Carlo Hessian"}),
    (MANIFOLD, MANIFOLD_MC, _dropped_transpose, {"M_π block = Monte-Carlo Hessian"}),
    (MANIFOLD, MANIFOLD_MC, _flipped_class, {"M_π class = Monte-Carlo class"}),
    (MANIFOLD, [], _wrong_unigram_bias, {"stationary: max |dL/dθ|", "loss = H(pi)", "M_π block = dense Hessian"}),
    (MANIFOLD, MANIFOLD_SADDLE, _dip_below_minimum, {
        "M_π block = dense Hessian", "Hessian spectrum = M_π formula", "descent along the escape direction"}),
    (MANIFOLD, [], _quadratic_bump, {"null-space dimension (M_π formula)", "M_π block = dense Hessian"}),
    (MANIFOLD, [], _quartic_dip, {"flat along the manifold M_π"}),
    (MANIFOLD, [], _deep_dip, {"no descent among nearby perturbations", "M_π block = dense Hessian"}),
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
                         (theorem_global_min, []), (theorem_local_min, IID), (theorem_manifold, []),
                         (theorem_manifold, MANIFOLD_SADDLE), (theorem_manifold, MANIFOLD_MC)]:
        _, report = run(module, [*SMALL, *argv], capsys)
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


# --- regressions of the audit: hard inputs, honest bookkeeping, NaN ---


def test_p_equal_q_has_the_closed_form_spectrum(capsys):
    """Every logit of θ_π is 0 at p = q: the kinked softplus gave [0.8 ×2] for [0.25, 0.4 ×2]."""
    code, report = run(theorem_local_min, ["--p", "0.9", "--q", "0.9", *SMALL], capsys)
    assert code == 0 and report["verdict"] == "confirmed"
    assert report["numeric"]["hessian_eigenvalues_nonzero"] == pytest.approx([0.25, 0.4, 0.4], rel=1e-12)


def test_p_plus_q_equal_one_is_a_degenerate_global_minimum(capsys):
    code, report = run(theorem_local_min, ["--p", "0.3", "--q", "0.7", *SMALL], capsys)
    assert code == 0 and report["verdict"] == "confirmed", report
    assert report["prediction"].startswith("global minimum (degenerate")
    names = {c["name"] for c in report["checks"]}
    assert "no perturbation below the global minimum" in names and "gradient descent returns to H(pi)" not in names


HARD = [(0.5, 0.501), (0.5, 0.4999), (0.5, 0.49999), (0.5, 0.5 + 1e-8), (1e-6, 1e-6), (0.5, 1e-6), (0.999999, 1e-6)]


@pytest.mark.parametrize("tying, dtype", [("--tying", "float64"), ("--no-tying", "float32")])
@pytest.mark.parametrize("p, q", HARD)
def test_proven_statements_are_never_contradicted_at_hard_inputs(p, q, tying, dtype, capsys):
    """The full sweep (both tyings × both dtypes × ten decades) is benchmarks/verdict_sweep.py."""
    for module in (theorem_local_min, theorem_global_min) if min(p, q) < 1e-3 else (theorem_local_min,):
        code, report = run(module, ["--p", str(p), "--q", str(q), tying, "--dtype", dtype, *SMALL], capsys)
        assert (code, report["verdict"]) in ((0, "confirmed"), (3, "inconclusive")), [
            (c["name"], c["measured"], c["detail"]) for c in report["checks"] if c["passed"] is False]
        assert all(c["detail"] for c in report["checks"] if c["passed"] is None)  # undecided says why


def _independent_loss(params, p, q):
    """All 2^N sequences, every position, softplus as logaddexp: shares no loss code with the package."""
    n = params["pos"].shape[0]
    x = torch.tensor([[(i >> (n - 1 - j)) & 1 for j in range(n)] for i in range(2**n)], dtype=torch.float64)
    z = model.logits(params, x, tying=True)
    p, q = torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)
    pi1 = p / (p + q)
    prob = torch.where(x[:, 0] > 0, pi1, 1 - pi1) * torch.prod(torch.where(
        x[:, 1:] > 0, torch.where(x[:, :-1] > 0, 1 - q, p), torch.where(x[:, :-1] > 0, q, 1 - p)), dim=1)
    one = torch.where(x > 0, 1 - q, p)
    zero = torch.zeros_like(z)
    ce = one * torch.logaddexp(zero, -z) + (1 - one) * torch.logaddexp(zero, z)
    return (prob * ce.mean(dim=1)).sum()


def test_theta_star_hessian_with_a_zero_logit_matches_an_independent_hessian():
    """p = 1/2 puts a logit exactly at 0 (d = 4: r = 16, v = 1/4 exactly): the kinked softplus
    gave eigenvalues [0.0107 ×7, 2.787] for [0.0373 ×7, 0.0629, 4.125] at the default run."""
    chain = MarkovChain(0.5, 0.8)
    params = theta_star(chain, 4, 4)
    ours = hessian(lambda P: population_loss(P, 0.5, 0.8, tying=True), params)
    theta, layout = flatten(params)
    other = torch.func.hessian(lambda th: _independent_loss(unflatten(th, layout), 0.5, 0.8))(theta)
    torch.testing.assert_close(ours, other, rtol=1e-10, atol=1e-12)


def test_claims_are_credited_only_by_runs_that_test_them(capsys):
    assert verify_all([*SMALL, "--no-tying", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert all(r["inputs"]["tying"] is False for r in data["reports"] if r["theorem"] != "symbolic identities")
    status = {row["id"]: row for row in data["claims"]}
    assert status["LOCAL-MIN"]["points"] == [] and status["SADDLE"]["points"] == []
    assert status["SADDLE-UNTIED"]["points"] and all("untied" in pt for pt in status["SADDLE-UNTIED"]["points"])
    assert verify_all([*SMALL, "--p", "0.2", "--q", "0.3", "--json"]) == 0
    status = {row["id"]: row for row in json.loads(capsys.readouterr().out)["claims"]}
    assert status["SADDLE"]["points"] == ["(p=0.2, q=0.3, tied, float64)"] and status["LOCAL-MIN"]["points"] == []


def test_verify_refuses_flags_it_cannot_honour(capsys):
    assert verify_all(["--sweep", "2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_json_output_is_alone_on_both_streams_and_text_runs_report_stages(capsys):
    """--json is for machines, which may merge stderr into stdout: no stage lines then."""
    assert theorem_local_min.run([*SMALL, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["verdict"] == "confirmed" and captured.err == ""
    assert theorem_local_min.run(SMALL) == 0
    assert "done: θ_π" in capsys.readouterr().err


def test_text_report_states_each_test_and_keeps_its_columns():
    long_name = "a check whose name is much longer than the name column of the table"
    report = Report("t", [], {"p": 0.5}, "x", {"loss": 1.0, "hessian_eigenvalues": None}, {}, [
        Check("no descent", True, 5.8e-11, 0.0, 1e-11, comparison="m >= -tol"),
        Check(long_name, True, 1.0, 1.0, 0.0),
        Check("spectrum", True, [float(i) for i in range(40)], [float(i) for i in range(40)], 1e-9)])
    lines = report.to_text().splitlines()
    row = next(line for line in lines if line.lstrip().startswith("no descent"))
    assert "m >= -tol" in row and "pass" in row
    assert any(line.strip() == long_name for line in lines)  # on a line of its own, not in the columns
    assert "(40 values)" in report.to_text() and "39" in report.to_text() and "20" not in report.to_text()


def test_nan_fails_its_check_and_is_null_in_json():
    check = Check("x", True, float("nan"), 0.0, 1.0)
    assert check.passed is False and "not finite" in check.detail
    report = Report("t", [], {"p": 0.5, "q": 0.8, "tying": True, "dtype": "float64"}, "p", {"loss": math.inf}, {},
                    [check])
    data = json.loads(report.to_json())
    assert data["verdict"] == "contradicted" and data["closed_form"]["loss"] is None
    assert set(data["nonfinite"]) == {"closed_form.loss", "checks[0].measured"}
    assert "nan" not in report.to_json().lower().replace("nonfinite", "")


def test_a_nan_loss_is_never_dropped_from_the_minimum(monkeypatch):
    original = checks.chain_loss

    def sometimes_nan(params, *args, **kwargs):
        value = original(params, *args, **kwargs)
        return value * math.nan if params["e"].abs().max() > 1.0 else value

    monkeypatch.setattr(checks, "chain_loss", sometimes_nan)
    config = config_from(parser("", {}).parse_args(SMALL))
    (check,) = checks.below_entropy_rate_check(config)
    assert check.passed is False
