"""python -m verify.theorem_manifold: the command around the M_π closed form (claim MANIFOLD).

The checks themselves are made to fail by the mutation cases in tests/test_verify.py; here: the
routes (dense, Monte-Carlo), checkpoints, the atlas, the JSON contract and bad input.
"""

import contextlib
import io
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from distributed import LocalCluster

import numerics.transformer as model
from numerics.manifold import UNDECIDED, manifold_curvature, project_to_manifold, sampled_block
from numerics.markov import MarkovChain, SecondOrderChain
from numerics.released import read_state_dict, to_scalar
from numerics.transformer import init_params
from verify import theorem_manifold
from verify.atlas import atlas
from verify.cli import Config
from verify.manifold_checks import PILOT_SAMPLES, monte_carlo_block, sample_size, sampled_class_check
from verify.runner import RESULTS_FILE, load_results

SMALL = ["--d", "2", "--seq-len", "4"]
CONTRACT = {"theorem", "inputs", "prediction", "verdict", "closed_form", "numeric", "checks"}


def run(argv, capsys):
    code = theorem_manifold.run([*argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


def test_dense_route_follows_the_json_contract(capsys):
    code, report, _ = run(SMALL, capsys)
    assert code == 0 and report["verdict"] == "confirmed" and set(report) >= CONTRACT
    assert report["theorem"] == "theorem_manifold" and "MANIFOLD" in report["claims"]
    assert report["numeric"]["method"].startswith("dense")
    assert report["inputs"] | {"weight_std": 0.8, "pos_std": 0.8} == report["inputs"]
    # the formula's eigenvalues are the dense Hessian's nonzero spectrum, D - (d + 1) zeros besides
    assert report["numeric"]["hessian_eigenvalues_nonzero"] == pytest.approx(
        report["closed_form"]["hessian_eigenvalues"], abs=1e-9)
    assert report["numeric"]["null_space_dim"] == report["numeric"]["D"] - 3


def test_monte_carlo_route_above_twelve_says_which_check_ran(capsys):
    code, report, _ = run(["--d", "2", "--seq-len", "40", "--samples", "300", "--no-tying"], capsys)
    assert code == 0 and report["verdict"] == "confirmed"
    assert report["numeric"]["method"].startswith("Monte-Carlo")
    assert [c["name"] for c in report["checks"]] == ["M_π block = Monte-Carlo Hessian", "M_π class = Monte-Carlo class"]
    assert report["prediction"] == "saddle point"  # untied: H_ee = 0 next to a nonzero e-a block


def test_theta_pi_at_p_plus_q_one_is_inconclusive_not_confirmed(capsys):
    code, report, _ = run([*SMALL, "--weight-std", "0", "--pos-std", "0", "--p", "0.3", "--q", "0.7"], capsys)
    assert code == 3 and report["verdict"] == "inconclusive" and report["prediction"].startswith("undecided")
    assert report["closed_form"]["hessian_eigenvalues"] == pytest.approx([0.21])  # zeros are not listed


def test_a_chain_that_hardly_switches_leaves_the_monte_carlo_route_undecided(capsys):
    """Review finding: at q = 1e-6 all sampled sequences were alike, the standard errors 0, the
    verdict a false 'contradicted' although the closed form matches the exact Hessian to 1e-16."""
    code, report, _ = run(["--d", "2", "--seq-len", "14", "--p", "0.5", "--q", "1e-6", "--samples", "100"], capsys)
    assert code == 3 and report["verdict"] == "inconclusive"
    assert "change state only" in report["checks"][0]["detail"]


@pytest.mark.parametrize("argv", [["--dtype", "float32", "--seed", "5"], ["--p", "0.5", "--q", "1e-6", "--seed", "5"]])
def test_escape_direction_is_confirmed_where_second_differences_settle_late(argv, capsys):
    """Review finding: D(t) sat on a hump (or drowned in float32 rounding) above a ReLU bend and the
    step chosen by the old truncation estimate disagreed with the correct eigenvalue."""
    code, report, _ = run(["--d", "3", "--seq-len", "6", *argv], capsys)
    escape = next(c for c in report["checks"] if c["name"] == "descent along the escape direction")
    assert code == 0 and escape["passed"] is True and escape["measured"] == pytest.approx(escape["expected"], rel=1e-4)


def test_checkpoint_is_projected_and_classified(tmp_path, capsys):
    trained = init_params(3, 6, std=0.5, seed=5, tying=False)  # e, a, b off M_π: projected
    path = tmp_path / "theta.pt"
    torch.save(trained, path)
    code, report, _ = run(["--checkpoint", str(path)], capsys)
    assert code == 0 and report["verdict"] == "confirmed"
    assert report["inputs"]["d"] == 3 and report["inputs"]["seq_len"] == 6 and report["inputs"]["tying"] is False
    assert report["inputs"]["checkpoint"] == str(path) and report["inputs"]["weight_std"] is None


@pytest.mark.parametrize("content, argv, message", [
    (init_params(2, 4, layers=2, seed=1), [], "has 2 layer(s), but --layers 1 was given: pass --layers 2"),
    (init_params(2, 4, seed=1), ["--layers", "2"], "has 1 layer(s), but --layers 2 was given"),
    (init_params(3, 4, layer_norm=True, seed=1), [], "has layer norm (ln_1, ln_2, ln_f), but --layer-norm was not"),
    (init_params(2, 4, seed=1), ["--layer-norm"], "has no layer norm, but --layer-norm was given"),
    ([1, 2, 3], [], "not a dict of named tensors"),
    ({"e": torch.zeros(2)}, [], "lacks pos, b"),
    (init_params(2, 4, seed=1), ["--d", "3"], "cannot be combined with --checkpoint"),
    (None, [], "does not exist"),
    (init_params(3, 4, seed=1) | {"W_Q": torch.zeros(4, 4)}, [], "wrong shapes: W_Q (4, 4) (expected (3, 3))"),
    (init_params(2, 4, seed=1) | {"extra": torch.zeros(1)}, [], "unknown parameters: extra"),
    (init_params(2, 4, seed=1) | {"e": torch.tensor([float("nan"), 0.0])}, [], "not finite real numbers: e"),
    (init_params(2, 4, seed=1) | {"b": torch.tensor(1)}, [], "not finite real numbers: b"),
    (init_params(2, 4, seed=1) | {k: torch.full((2, 2), 1e200, dtype=torch.float64) for k in ("W_V", "W_O")}, [],
     "overflows"),
])
def test_bad_checkpoints_exit_2_with_one_line(content, argv, message, tmp_path, capsys):
    path = tmp_path / "theta.pt"
    if content is not None:
        torch.save(content, path)
    code, report, err = run(["--checkpoint", str(path), *argv], capsys)
    assert code == 2 and report is None
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["--seq-len", "5000"], ["--weight-std", "-1"], ["--weight-std", "1e300"], ["--samples", "29"], ["--p", "1.5"],
    ["--seq-len", "20", "--dtype", "float32"], ["--seq-len", "20", "--samples", "1000000000000"],
    ["--atlas-points", "0"], ["--latex", "/no/such/folder/x.tex"], ["--sweep", "3"],
])
def test_bad_input_exits_2_before_any_work(argv, capsys):
    code, report, err = run(argv, capsys)
    assert code == 2 and report is None and err.startswith("error:") and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
@pytest.mark.parametrize("out", ["atlas", "atlas/"], ids=["old prefix", "folder"])
def test_unwritable_atlas_output_is_refused_before_computing(out, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    code, _, err = run(["--atlas", "--out", str(folder / out)], capsys)
    assert code == 2 and "permission denied" in err


ATLAS = [*SMALL, "--atlas", "--atlas-points", "1"]


@pytest.fixture(scope="module")
def atlas_in_process(tmp_path_factory):
    """A 9 × 7 atlas with 1 point per cell at d = 2, N = 4, in this process: (its folder, the JSON printed)."""
    folder = tmp_path_factory.mktemp("atlas")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert theorem_manifold.run([*ATLAS, "--workers", "1", "--out", str(folder), "--json"]) == 0
    return folder, json.loads(out.getvalue())


def test_atlas_writes_its_folder_and_recovers_theta_pi_near_zero_weights(atlas_in_process):
    folder, printed = atlas_in_process
    assert sorted(f.name for f in folder.iterdir()) == ["atlas.json", "atlas.pdf", "atlas.png", RESULTS_FILE]
    data = json.loads((folder / "atlas.json").read_text())
    assert data == printed and (folder / "atlas.png").stat().st_size > 0 and (folder / "atlas.pdf").stat().st_size > 0
    assert len(load_results(folder)) == len(data["p_plus_q"]) * len(data["weight_scale"]) == 63  # a task per cell
    # at weight scale 0.02 every point is near θ_π: a local minimum iff p + q > 1 (claim LOCAL-MIN/SADDLE)
    near_theta_pi = data["fraction_minima"][data["weight_scale"].index(0.02)]
    assert near_theta_pi == [1.0 if s > 1 else 0.0 for s in data["p_plus_q"]]
    config = Config(0.5, 0.8, True, 2, 4, "cpu", "float64", 0)
    assert data == atlas(config, 1)  # the library function, cell after cell here


@pytest.fixture(scope="module")
def cluster() -> str:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local.scheduler_address


@pytest.mark.parametrize("runner", [["--workers", "2"], "dask"], ids=["2 workers", "LocalCluster"])
def test_atlas_records_are_the_same_on_one_worker_two_and_a_dask_cluster(runner, atlas_in_process, cluster,
                                                                          tmp_path, capsys):
    folder, printed = atlas_in_process
    flags = ["--scheduler", cluster] if runner == "dask" else runner
    code, data, _ = run([*ATLAS, *flags, "--out", str(tmp_path)], capsys)
    assert code == 0 and data == printed
    records = {k: e["record"] for k, e in load_results(tmp_path).items()}
    assert records == {k: e["record"] for k, e in load_results(folder).items()}


def test_atlas_resumes_from_its_results(atlas_in_process, tmp_path, capsys):
    folder, printed = atlas_in_process
    lines = (folder / RESULTS_FILE).read_text().splitlines()
    (tmp_path / RESULTS_FILE).write_text("\n".join(lines[:50]) + "\n")  # as if stopped after 50 of 63 cells
    assert theorem_manifold.run([*ATLAS, "--out", str(tmp_path), "--resume", "--workers", "1"]) == 0
    assert "running 13 tasks in this process (50 already recorded in" in capsys.readouterr().err
    assert json.loads((tmp_path / "atlas.json").read_text()) == printed


def test_atlas_default_folder_and_the_deprecated_prefix(atlas_in_process, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert theorem_manifold.run([*ATLAS, "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert (tmp_path / "manifold_atlas" / "atlas.json").exists() and "note:" not in err
    assert theorem_manifold.run([*ATLAS, "--out", "old", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    note = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "deprecated" in note[0] and "read as a file prefix" in note[0]
    assert captured.out.splitlines()[-1] == "wrote old.json, old.png, old.pdf"
    assert json.loads(Path("old.json").read_text()) == atlas_in_process[1]
    assert not Path("old").exists()
    assert theorem_manifold.run([*ATLAS, "--out", "new/", "--workers", "2"]) == 0
    assert "note:" not in capsys.readouterr().err and Path("new", RESULTS_FILE).exists()


def test_a_failed_atlas_cell_is_counted_and_no_atlas_is_written(tmp_path, capsys, monkeypatch):
    import verify.atlas

    def broken(params, p, q, **kwargs):
        if p > 0.8:
            raise FloatingPointError("cell broke")
        return manifold_curvature(params, p, q, **kwargs)

    monkeypatch.setattr(verify.atlas, "manifold_curvature", broken)
    assert theorem_manifold.run([*ATLAS, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "the atlas was not written: 14 of 63 cells failed" in err  # p + q = 1.9 and 1.7, every σ
    assert not (tmp_path / "atlas.json").exists()
    failed = [e for e in load_results(tmp_path).values() if e["status"] == "failed"]
    assert len(failed) == 14 and failed[0]["error"] == "FloatingPointError: cell broke"


def test_atlas_is_reproducible_and_untied_points_are_saddles():
    config = Config(0.5, 0.8, False, 2, 4, "cpu", "float64", 3)
    first = atlas(config, 3, sums=(0.5, 1.5), scales=(0.1, 1.0))
    assert first == atlas(config, 3, sums=(0.5, 1.5), scales=(0.1, 1.0))
    assert first["fraction_saddles"] == [[1.0, 1.0], [1.0, 1.0]]


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "--workers is for runs of many tasks (--atlas)"),
    (["--out", "x"], "--out is for runs of many tasks (--atlas)"),
    (["--atlas", "--resume", "--out", "PREFIX"], "--resume needs --out FOLDER"),
    (["--atlas", "--out", "FILE.json"], "is a file, not a folder"),
    (["--atlas", "--workers", "0"], "--workers must be a whole number >= 1"),
])
def test_bad_atlas_flags_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "FILE.json").write_text("")
    argv = [str(tmp_path / a) if a in ("PREFIX", "FILE.json") else a for a in argv]
    code, report, err = run([*SMALL, *argv], capsys)
    assert code == 2 and report is None and err.count("\n") == 1 and message in err
    assert sorted(tmp_path.iterdir()) == [tmp_path / "FILE.json"]


# --- the Monte-Carlo route (N > 12) ---

MONTE_CARLO = ["--d", "2", "--seq-len", "16", "--samples", "400"]


def _leaky_mask(mp):
    mp.setattr(model, "attention_mask", lambda n, memory=None, device="cpu":
               torch.ones(n, n, dtype=torch.bool, device=device))


def _feed_forward_sign(mp):
    original = model.feed_forward
    mp.setattr(model, "feed_forward", lambda params, layer, y: -original(params, layer, y))


def _head_sign(mp):
    original = model.head
    mp.setattr(model, "head", lambda params, z, *, tying: 2 * params["b"] - original(params, z, tying=tying))


@pytest.mark.parametrize("corrupt", [_leaky_mask, _feed_forward_sign, _head_sign])
@pytest.mark.parametrize("tying", [["--tying"], ["--no-tying"]])
def test_a_corrupted_model_fails_the_monte_carlo_block_check(corrupt, tying, monkeypatch, capsys):
    """The estimator runs the model's own functions: a model that sees the future, flips the sign of its
    feed-forward or of its head no longer matches the closed form, which computes its own."""
    code, report, _ = run([*MONTE_CARLO, *tying], capsys)
    assert code == 0
    corrupt(monkeypatch)
    code, report, _ = run([*MONTE_CARLO, *tying], capsys)
    block = next(c for c in report["checks"] if c["name"] == "M_π block = Monte-Carlo Hessian")
    assert code == 1 and report["verdict"] == "contradicted" and block["passed"] is False


def test_default_run_at_n_64_sizes_its_sample_and_says_why(capsys):
    code, report, err = run(["--seq-len", "64"], capsys)
    size = report["numeric"]["sample_size"]
    assert code in (0, 3) and err == ""  # --json: no stage lines, no progress bar
    assert size["rule"] == "pilot spread" and size["pilot"] == PILOT_SAMPLES and report["inputs"]["samples"] is None
    assert size["needed"] <= size["samples"] <= size["cap"] and size["samples"] % PILOT_SAMPLES == 0
    assert f"Monte-Carlo mean of {size['samples']} " in report["numeric"]["method"]
    forced = run(["--seq-len", "64", "--samples", "50"], capsys)[1]["numeric"]["sample_size"]
    assert forced["samples"] == 50 and forced["rule"] == "--samples"


def _pilot(tying: bool = True):
    p, q = 0.5, 0.8
    params = project_to_manifold(init_params(2, 20, std=0.8, seed=2, tying=tying), p, q, tying=tying)
    return manifold_curvature(params, p, q, tying=tying), sampled_block(params, p, q, tying=tying,
                                                                         samples=PILOT_SAMPLES, seed=0)


def test_the_automatic_sample_grows_as_lambda_min_shrinks():
    curvature, pilot = _pilot()
    sizes = [sample_size(replace(curvature, eigenvalues=torch.tensor([sign * lam, 1.0], dtype=torch.float64)),
                         pilot, cap=10**9) for lam in (0.3, 0.03, 0.003) for sign in (1, -1)]
    needed = [size.needed for size in sizes]
    assert needed[0] == needed[1] < needed[2] == needed[3] < needed[4] == needed[5]  # by |λ_min|, either sign
    assert needed[4] / needed[2] == pytest.approx(100, rel=0.01)  # (8 ‖σ‖₂ / |λ_min|)²
    assert all(size.needed <= size.samples < size.needed + PILOT_SAMPLES for size in sizes[2:])
    assert sizes[0].samples == PILOT_SAMPLES  # the pilot alone when it suffices


def test_a_sample_cut_by_its_budget_leaves_the_class_undecided():
    curvature, pilot = _pilot()
    small = replace(curvature, eigenvalues=torch.tensor([1e-4, 1.0], dtype=torch.float64))
    size = sample_size(small, pilot, cap=PILOT_SAMPLES + 1)  # in whole pilots: 100
    check = sampled_class_check(small, pilot, size)
    assert size.capped and size.samples == PILOT_SAMPLES and check.passed is None
    assert re.search(rf"rerun with --samples {size.needed}$", check.detail)
    uncut = sample_size(small, pilot, cap=10**9)
    assert not uncut.capped and uncut.samples >= uncut.needed == size.needed
    undecided = sample_size(replace(curvature, classification=UNDECIDED), pilot, cap=10**9)
    assert undecided.rule == "pilot only" and undecided.samples == PILOT_SAMPLES and undecided.needed is None


def test_monte_carlo_block_draws_a_pilot_then_the_rest_and_reports_each_pass():
    p, q = 0.5, 0.8
    params = project_to_manifold(init_params(2, 20, std=0.8, seed=2), p, q, tying=True)
    curvature = replace(manifold_curvature(params, p, q, tying=True),
                        eigenvalues=torch.tensor([0.01, 1.0], dtype=torch.float64))
    labels = []

    def progress(chunks, label):
        labels.append(label)
        return chunks

    sampled, size = monte_carlo_block(params, MarkovChain(p, q), curvature, tying=True, samples=None, seed=0,
                                      progress=progress)
    assert labels == ["pilot", "sampling"] and sampled.samples == size.samples > PILOT_SAMPLES
    labels.clear()
    sampled, size = monte_carlo_block(params, MarkovChain(p, q), curvature, tying=True, samples=40, seed=0,
                                      progress=progress)
    assert labels == ["sampling"] and sampled.samples == size.samples == 40 and size.rule == "--samples"


# --- any source, depth, memory and layer norm; the released code's checkpoints (MANIFOLD-GENERAL) ---

#: the smallest model with every new part: second-order source, two layers, a memory, layer norm (d = 3: at d = 2 a
#: layer norm's output takes two values only, its Jacobian is 0 and the block degenerate)
GENERAL = ["--source", "second-order", "--layers", "2", "--memory", "1", "--layer-norm", "--d", "3", "--seq-len", "4"]
GENERAL_MC = ["--source", "second-order", "--layers", "2", "--memory", "2", "--d", "2", "--seq-len", "16",
              "--samples", "400"]


def test_second_order_two_layers_memory_and_layer_norm_on_the_dense_route(capsys):
    code, report, _ = run(GENERAL, capsys)
    assert code == 0 and report["verdict"] == "confirmed", report["checks"]
    assert report["claims"] == ["MODEL", "MANIFOLD", "MANIFOLD-GENERAL"]
    inputs = report["inputs"]
    assert (inputs["p"], inputs["q"]) == (0.2, 0.3)  # the paper's lagged chain without --p, --q
    assert inputs["source"].startswith("second-order") and inputs["layers"] == 2 and inputs["layer_norm"] is True
    assert inputs["memory"] == 1 and inputs["attention"] == "the current symbol and the 1 before it"
    assert report["closed_form"]["route"] == "forward-mode" and report["numeric"]["method"].startswith("dense")
    names = {c["name"]: c["passed"] for c in report["checks"]}
    assert names["M_π block = dense Hessian"] is True and names["Hessian spectrum = M_π formula"] is True
    assert report["numeric"]["null_space_dim"] == report["numeric"]["D"] - 4
    # H(π) of the lagged chain is that of (p, q): the closed form's loss is the dense route's
    assert report["numeric"]["loss"] == pytest.approx(report["closed_form"]["loss"], abs=1e-13)


def test_second_order_two_layers_with_a_memory_on_the_monte_carlo_route(capsys):
    code, report, _ = run(GENERAL_MC, capsys)
    assert code in (0, 3) and report["numeric"]["method"].startswith("Monte-Carlo mean of 400")
    block = next(c for c in report["checks"] if c["name"] == "M_π block = Monte-Carlo Hessian")
    assert block["passed"] is True and report["closed_form"]["route"] == "forward-mode"
    assert report["inputs"]["memory"] == 2 and report["inputs"]["layers"] == 2


@pytest.mark.parametrize("argv, name", [([*GENERAL[:6], "--d", "2", "--seq-len", "4"], "M_π block = dense Hessian"),
                                        (GENERAL_MC, "M_π block = Monte-Carlo Hessian")], ids=["dense", "Monte-Carlo"])
def test_a_leaky_mask_fails_the_block_check_with_the_new_flags(argv, name, monkeypatch, capsys):
    """The forward-mode block sums c(n+1-i) K_{n,i} over the causal past only; the exact loss (or the sampled one)
    of a model that sees the future is not that, so the comparison must fail when the mask leaks."""
    _leaky_mask(monkeypatch)
    code, report, _ = run(argv, capsys)
    block = next(c for c in report["checks"] if c["name"] == name)
    assert code == 1 and report["verdict"] == "contradicted" and block["passed"] is False


def test_memory_beyond_the_sequence_is_full_attention(capsys):
    full = run(["--source", "second-order", *SMALL], capsys)[1]
    wide = run(["--source", "second-order", *SMALL, "--memory", "50"], capsys)[1]
    assert wide["inputs"]["attention"] == "full causal" and wide["inputs"]["memory"] == 50
    assert wide["closed_form"]["normal_block_eigenvalues"] == full["closed_form"]["normal_block_eigenvalues"]
    assert full["inputs"]["memory"] is None and full["claims"][-1] == "MANIFOLD-GENERAL"


def test_a_two_state_chain_is_classified_as_its_p_and_q(capsys):
    given = run([*SMALL, "--transition", "0.5,0.5;0.8,0.2"], capsys)[1]
    pair = run([*SMALL, "--p", "0.5", "--q", "0.8"], capsys)[1]
    assert (given["inputs"]["p"], given["inputs"]["q"]) == (0.5, 0.8) and given["verdict"] == "confirmed"
    assert given["closed_form"] == pair["closed_form"] and given["claims"] == ["MODEL", "MANIFOLD"]


def test_own_two_layer_and_layer_norm_checkpoints_are_accepted_with_matching_flags(tmp_path, capsys):
    gen = torch.Generator().manual_seed(4)
    norm = {k: v + 0.5 * torch.randn(v.shape, generator=gen, dtype=v.dtype) if k.startswith("ln_") else v
            for k, v in init_params(3, 4, layer_norm=True, std=0.5, seed=1).items()}
    for name, params, flags, shape in (("deep", init_params(2, 4, layers=2, std=0.5, seed=1), ["--layers", "2"],
                                        (2, False)),
                                       ("norm", norm, ["--layer-norm"], (1, True))):
        path = tmp_path / f"{name}.pt"
        torch.save(params, path)
        code, report, _ = run(["--checkpoint", str(path), *flags], capsys)
        assert code == 0 and report["verdict"] == "confirmed", (name, report["checks"])
        assert report["inputs"]["checkpoint_format"].startswith("numerics.transformer")
        assert (report["inputs"]["layers"], report["inputs"]["layer_norm"]) == shape


def test_untied_layer_norm_is_degenerate_along_the_ones_direction_of_e(capsys):
    """Untied, e enters the pre-norm blocks only through x̃, and every reader of the residual stream is a layer norm,
    which ignores a shift by c·1: e → e + t·1 is an exact symmetry, so S has a 0 eigenvalue (the class still follows
    from the e-a block: a saddle), and the spectrum check cannot resolve that eigenvalue's sign."""
    code, report, _ = run(["--no-tying", "--layer-norm", "--d", "3", "--seq-len", "4"], capsys)
    assert code == 3 and report["prediction"] == "saddle point"
    assert min(abs(v) for v in report["closed_form"]["schur_eigenvalues"]) < 1e-12
    spectrum = next(c for c in report["checks"] if c["name"] == "Hessian spectrum = M_π formula")
    assert spectrum["passed"] is None and "cannot be resolved" in spectrum["detail"]


def test_layer_norm_at_unit_gains_is_degenerate_along_the_ones_direction(tmp_path, capsys):
    """Pre-norm blocks ignore a shift of x̃ by c·1 and LN_f's output has mean 0: with gains 1 (the released code's
    initial layer norm) e ∝ 1 moves no logit but by a constant, which b absorbs, so S has an exact 0 eigenvalue:
    the class is undecided, not guessed."""
    path = tmp_path / "unit_gains.pt"
    torch.save(init_params(3, 4, layer_norm=True, std=0.5, seed=1), path)
    code, report, _ = run(["--checkpoint", str(path), "--layer-norm"], capsys)
    assert code == 3 and report["prediction"].startswith("undecided") and report["verdict"] == "inconclusive"
    assert min(abs(v) for v in report["closed_form"]["schur_eigenvalues"]) < 1e-12


def _released(tmp_path, k: int = 2, layers: int = 1, layer_norm: bool = False, seed: int = 3) -> Path:
    """A GPT-2-layout module of tests/test_released.py (d = 4, N = 7, ReLU), saved as the released code saves it."""
    from tests.test_released import TinyGPT

    path = tmp_path / "model.pt"
    torch.save(TinyGPT(k, layers, layer_norm=layer_norm, seed=seed).state_dict(), path)
    return path


def test_a_released_checkpoint_is_mapped_projected_and_classified(tmp_path, capsys):
    path = _released(tmp_path)
    code, report, _ = run(["--checkpoint", str(path), "--source", "second-order"], capsys)
    assert code == 0 and report["verdict"] == "confirmed", report["checks"]
    assert report["inputs"]["checkpoint_format"].startswith("released GPT-2")
    assert (report["inputs"]["d"], report["inputs"]["seq_len"], report["inputs"]["tying"]) == (4, 7, True)
    # the same block as the library computes on the mapped model: e = E1 - E0, pos + E0, b = b1 - b0, projected
    source = SecondOrderChain.lagged(0.2, 0.3)
    mapped = project_to_manifold(to_scalar(read_state_dict(path).params), tying=True, source=source)
    expected = manifold_curvature(mapped, tying=True, source=source).eigenvalues.tolist()
    assert report["closed_form"]["normal_block_eigenvalues"] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_a_released_layer_norm_checkpoint_needs_relu_and_the_flag(tmp_path, capsys):
    path = _released(tmp_path, layer_norm=True)
    for argv, message in ((["--layer-norm"], "activation is gelu"),
                          (["--activation", "relu"], "has layer norm (ln_1, ln_2, ln_f), but --layer-norm was not")):
        code, report, err = run(["--checkpoint", str(path), *argv], capsys)
        assert code == 2 and report is None and message in err and len(err.strip().splitlines()) == 1
    code, report, _ = run(["--checkpoint", str(path), "--activation", "relu", "--layer-norm"], capsys)
    assert code == 0 and report["verdict"] == "confirmed" and report["inputs"]["layer_norm"] is True


@pytest.mark.parametrize("k, layers, argv, message", [
    (2, 2, [], "has 2 layer(s), but --layers 1 was given: pass --layers 2"),
    (3, 1, [], "is a model of 3 symbols but a binary source (--p, --q) was given; give its chain with --chain"),
    (3, 1, ["--chain", "sticky5"], "is a model of 3 symbols but a 5-state chain was given"),
    (2, 1, ["--chain", "switching3"], "is a model of 2 symbols but a 3-state chain was given"),
])
def test_released_checkpoints_that_do_not_fit_are_one_line(k, layers, argv, message, tmp_path, capsys):
    code, report, err = run(["--checkpoint", str(_released(tmp_path, k, layers)), *argv], capsys)
    assert code == 2 and report is None and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--memory", "0"], "--memory 0: attention sees the current symbol and the W >= 1 before it"),
    (["--memory", "-3"], "--memory -3"),
    (["--layers", "0"], "--layers 0: the model has 1 to 16 blocks"),
    (["--transition", "0.9,0.1;0.2,0.8", "--source", "second-order"], "--source second-order takes the lagged"),
    (["--chain", "switching3", "--source", "second-order"], "--source second-order takes the lagged"),
    (["--embedding", "onehot", "--seq-len", "13"], "checked against the dense Hessian of its exact loss only"),
    (["--atlas", "--chain", "switching3"], "--atlas maps the first-order one-layer scalar model"),
    (["--activation", "relu"], "without one it has no use"),
    (["--atlas", "--layers", "2"], "--atlas maps the first-order one-layer scalar model"),
    (["--source", "second-order", "--seq-len", "1"], "needs --seq-len >= 2"),
    (["--source", "third-order"], "invalid choice"),
])
def test_bad_model_flags_exit_2_with_one_line(argv, message, capsys):
    code, report, err = run(argv, capsys)
    assert code == 2 and report is None and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["--chain", "switching3", "--layers", "2", "--memory", "1", "--d", "3"],
                                  ["--transition", "0.1,0.6,0.3;0.5,0.2,0.3;0.2,0.2,0.6", "--no-tying", "--d", "2",
                                   "--seq-len", "3"],
                                  ["--embedding", "onehot", "--d", "3", "--seq-len", "4", "--layer-norm"]],
                         ids=["switching3 deep", "untied", "k = 2 one-hot, layer norm"])
def test_the_one_hot_block_of_a_k_state_chain_is_confirmed_by_the_dense_hessian(argv, capsys):
    code, report, _ = run(argv, capsys)
    assert code == 0 and report["verdict"] == "confirmed", report["checks"]
    assert report["claims"] == ["MULTI-STATE", "MANIFOLD-GENERAL"] and report["inputs"]["model"].startswith("one-hot")
    names = {c["name"]: c["passed"] for c in report["checks"]}
    assert names["M_π block = dense Hessian"] is True and names["null-space dimension (M_π formula)"] is True
    assert report["closed_form"]["route"] == "forward-mode"


def test_a_released_three_symbol_checkpoint_is_classified_with_its_chain(tmp_path, capsys):
    path = _released(tmp_path, k=3)
    code, report, _ = run(["--checkpoint", str(path), "--chain", "switching3"], capsys)
    assert code == 0 and report["verdict"] == "confirmed", report["checks"]
    assert report["inputs"]["checkpoint_format"] == "released GPT-2 state dict (the one-hot model on k = 3 symbols)"
    assert (report["inputs"]["d"], report["inputs"]["seq_len"]) == (4, 7)


def test_help_explains_the_new_flags_with_examples(capsys):
    with pytest.raises(SystemExit):
        theorem_manifold.run(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for example in ("Example: --source second-order", "Example: --layers 2", "Example: --memory 2",
                    "Example: --layers 2 --layer-norm", "Example: --checkpoint model.pt",
                    "W >= N - 1 sees the whole past"):
        assert example in text
