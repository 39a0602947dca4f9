import json

import pytest
import torch

import numerics.transformer as model
from paper_refs import claims
from verify import theorem_global_min, theorem_local_min, theorem_saddle
from verify.__main__ import main as verify_all
from verify.__main__ import symbolic_report

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

def _corrupt_ff_sign(monkeypatch):
    original = model.feed_forward
    monkeypatch.setattr(model, "feed_forward", lambda params, layer, y: -original(params, layer, y))


def _corrupt_bias(monkeypatch):
    original = model.head
    monkeypatch.setattr(model, "head", lambda params, z, *, tying: original(params, z, tying=tying) + 0.05)


def _corrupt_causal_mask(monkeypatch):
    monkeypatch.setattr(model.torch.Tensor, "tril", lambda self, *a, **k: torch.ones_like(self))


def _corrupt_tying(monkeypatch):
    original = model.head
    monkeypatch.setattr(model, "head", lambda params, z, *, tying: original(params, z, tying=True))


def _corrupt_softmax_scale(monkeypatch):
    original = model.attention
    monkeypatch.setattr(model, "attention", lambda params, layer, h, key, value, mask:
                        original(params, layer, 2.0 * h, key, value, mask) / 2.0)


@pytest.mark.parametrize("module, argv, corrupt, failing", [
    (theorem_local_min, [], _corrupt_ff_sign, "forward = paper's equations"),
    (theorem_global_min, [], _corrupt_ff_sign, "loss = H_rate"),
    (theorem_local_min, [], _corrupt_bias, "stationary: max |dL/dθ|"),
    (theorem_global_min, [], _corrupt_bias, "loss = H_rate"),
    (theorem_local_min, [], _corrupt_causal_mask, "forward = paper's equations"),
    (theorem_saddle, ["--no-tying"], _corrupt_tying, "forward = paper's equations"),
    (theorem_global_min, ["--no-tying"], _corrupt_tying, "loss = H_rate"),
    (theorem_saddle, [], _corrupt_softmax_scale, "forward = paper's equations"),
])
def test_a_corrupted_model_is_contradicted(module, argv, corrupt, failing, monkeypatch, capsys):
    corrupt(monkeypatch)
    code, report = run(module, [*argv, *SMALL], capsys)
    assert code == 1 and report["verdict"] == "contradicted"
    failed = {c["name"] for c in report["checks"] if c["passed"] is False}
    assert failing in failed, failed


def test_every_claim_has_checks_and_every_check_a_claim(capsys):
    names = set()
    for module, argv in [(theorem_local_min, []), (theorem_saddle, []), (theorem_saddle, ["--no-tying"]),
                         (theorem_global_min, [])]:
        _, report = run(module, [*argv, *SMALL], capsys)
        names |= {c["name"] for c in report["checks"]}
    names |= {c.name for c in symbolic_report().checks}
    registered = {name for claim in claims() for name in claim["checks"]}
    assert all(claim["checks"] for claim in claims())
    assert names - registered == set(), "checks without a claim"
    assert registered - names == set(), "claims pointing at checks that do not exist"


def test_verify_all_and_list(capsys):
    assert verify_all([*SMALL, "--list"]) == 0
    out = capsys.readouterr().out
    assert "theorem_local_min" in out and "LOCAL-MIN" in out and "contradicted" not in out
