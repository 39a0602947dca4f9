"""The escape study: the M_π curvature along a run (numerics.escape) and the experiments CLI around it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.func import jacrev

from numerics import canonical_flow, escape
from numerics.autocovariance import Autocovariance
from numerics.escape import (
    EscapePoint,
    EscapeRecorder,
    SelfJacobian,
    attention_to_previous,
    curvature_parts,
    diagonal_jacobian,
    escape_outcome,
    lag_profile,
    measure_point,
    prediction,
    track_escape,
)
from numerics.manifold import LOCAL_MINIMUM, SADDLE_POINT, UNDECIDED, manifold_curvature, project_to_manifold
from numerics.markov import FiniteChain, InvalidInputError, MarkovChain, SecondOrderChain
from numerics.stationary_points import theta_pi, theta_star
from numerics.train import TrainConfig, train
from numerics.transformer import attention, attention_mask, block, feed_forward, init_params, keys_values
from verify import cli, experiments

P, Q = 0.5, 0.8
ROOT = Path(__file__).resolve().parents[1]


def _random_point(d: int = 3, seq_len: int = 7, seed: int = 3) -> dict:
    """A point of M_π with every other weight random and large enough that ReLUs, attention and W_O matter."""
    return project_to_manifold(init_params(d, seq_len, std=0.7, seed=seed), P, Q, tying=True)


def _brute_force(point: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All K_{n,i} = ∂z_n/∂x̃_i from jacrev of the model's forward pass, (N, d, N, d); and G_n = ∂z_n/∂y_n."""
    seq_len = point["pos"].shape[0]
    K = jacrev(lambda h: block(point, 0, h, attention_mask(seq_len)))(point["pos"])
    own = torch.stack([K[n, :, n, :] for n in range(seq_len)])
    # y_n at x̃ = pos, then the feed-forward's Jacobian there, position by position
    h = point["pos"]
    y = h + attention(point, 0, h, *keys_values(point, 0, h), attention_mask(seq_len))
    G = torch.stack([jacrev(lambda v: v + feed_forward(point, 0, v))(y[n]) for n in range(seq_len)])
    return K, own, G


@pytest.mark.parametrize("seed", [3, 4])
def test_diagonal_jacobian_equals_brute_force_jacrev(seed):
    point = _random_point(seed=seed)
    _, own, G = _brute_force(point)
    mine = diagonal_jacobian(point)
    assert own.abs().max() > 1.5  # the attention and FF paths are far from the identity here
    torch.testing.assert_close(mine.total, own, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(mine.feed_forward, G, rtol=1e-12, atol=1e-13)


def _lag_split(point: dict, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A_att = mean_n Σ_{i<n} λ^{n+1-i} K_{n,i} and A_diag = λ mean_n K_{n,n} from the brute-force Jacobians."""
    K, own, _ = _brute_force(point)
    seq_len = own.shape[0]
    att = sum(lam ** (n + 1 - i) * K[n, :, i, :] for n in range(seq_len) for i in range(n)) / seq_len
    return att, lam * own.mean(dim=0)


def test_curvature_parts_sum_to_lambda_min_and_match_brute_force():
    point = _random_point()
    curvature = manifold_curvature(point, P, Q, tying=True)
    parts = curvature_parts(point, curvature)
    k, lam, w = curvature.k, curvature.lam, parts.vector
    att, diag = _lag_split(point, lam)
    _, own, G = _brute_force(point)
    torch.testing.assert_close(att + diag, curvature.lag_jacobian, rtol=1e-12, atol=1e-14)  # the split is all of A
    total = parts.covariance + parts.baseline + parts.attention + parts.self_attention + parts.feed_forward
    assert total == pytest.approx(curvature.schur_eigenvalues[0].item(), abs=1e-13)
    assert parts.eigenvalue == pytest.approx(curvature.schur_eigenvalues[0].item(), abs=1e-13)
    assert parts.attention == pytest.approx(-2 * k * (w @ att @ w).item(), abs=1e-13)
    assert parts.feed_forward == pytest.approx(-2 * k * lam * (w @ (G.mean(0) - torch.eye(3)) @ w).item(), abs=1e-13)
    assert parts.self_attention == pytest.approx(-2 * k * lam * (w @ (own - G).mean(0) @ w).item(), abs=1e-13)
    assert parts.baseline == pytest.approx(2 * k * (P + Q - 1))
    assert parts.covariance >= 0 and abs(parts.attention) > 1e-3 and abs(parts.diagonal) > 1e-3
    assert parts.driver == ("attention" if parts.attention < parts.diagonal else "diagonal")


def test_a_self_jacobian_without_its_attention_path_is_noticed(monkeypatch):
    """Mutation: dropping W_O J_n from K_{n,n} keeps the parts' sum (A_att absorbs it) but not the brute force."""
    point = _random_point()
    curvature = manifold_curvature(point, P, Q, tying=True)
    att, _ = _lag_split(point, curvature.lam)
    good = curvature_parts(point, curvature)
    real = escape.diagonal_jacobian

    def without_attention_path(params, dtype, memory=None):
        G = real(params, dtype, memory).feed_forward
        return SelfJacobian(total=G, feed_forward=G)

    monkeypatch.setattr(escape, "diagonal_jacobian", without_attention_path)
    bad = curvature_parts(point, curvature)
    w = bad.vector
    brute = -2 * curvature.k * (w @ att @ w).item()
    assert bad.attention != pytest.approx(brute, abs=1e-6) and bad.self_attention == 0.0
    assert good.attention == pytest.approx(brute, abs=1e-13)


def test_theta_pi_parts_are_the_baseline_alone():
    theta_pi = project_to_manifold(init_params(4, 6, std=0.0), P, Q, tying=True)
    parts = curvature_parts(theta_pi, manifold_curvature(theta_pi, P, Q, tying=True))
    k = MarkovChain(P, Q).pi[0] * MarkovChain(P, Q).pi[1]
    assert parts.eigenvalue == pytest.approx(2 * k * (P + Q - 1), abs=1e-15) == parts.baseline
    assert parts.covariance == parts.attention == parts.self_attention == parts.feed_forward == 0.0


def test_a_flipped_lambda_sign_changes_the_measurement(monkeypatch):
    """Mutation: λ = p + q - 1 instead of 1 - p - q turns θ_π's λ_min(S) = 2k(p+q-1) > 0 negative."""
    theta_pi = init_params(4, 6, std=0.0)
    good = measure_point(theta_pi, MarkovChain(P, Q), 0, 0.0)
    monkeypatch.setattr(MarkovChain, "eigenvalue", property(lambda self: self.p + self.q - 1.0))
    bad = measure_point(theta_pi, MarkovChain(P, Q), 0, 0.0)
    assert good.lambda_min == pytest.approx(0.1420118343, abs=1e-9) and prediction(good) == "trapped"
    assert bad.lambda_min == pytest.approx(-0.1420118343, abs=1e-9) and prediction(bad) == "escapes"


def test_recorder_measures_the_projection_of_every_evaluation():
    config = TrainConfig(d=3, seq_len=6, steps=6, eval_every=3, eval_sequences=8, lr=2e-2)
    recorder = EscapeRecorder(MarkovChain(P, Q))
    result = train(MarkovChain(P, Q), config, on_eval=recorder)
    assert [pt.step for pt in recorder.points] == result.steps == [0, 3, 6]
    assert [pt.test_loss for pt in recorder.points] == result.test_loss
    start = init_params(3, 6, std=config.init_std, seed=config.seed)
    at_init = manifold_curvature(project_to_manifold(start, P, Q, tying=True), P, Q, tying=True)
    assert recorder.points[0].lambda_min == at_init.schur_eigenvalues[0].item()
    assert recorder.points[0].classification == at_init.classification
    assert recorder.points[0].e_norm == pytest.approx(torch.linalg.vector_norm(start["e"]).item())
    assert all(torch.equal(recorder.snapshots[0][k], start[k]) for k in start)
    assert all(torch.equal(recorder.snapshots[-1][k], result.params[k]) for k in start)
    assert recorder.points[-1].lambda_min != recorder.points[0].lambda_min  # it is measured, not copied
    w = curvature_parts(project_to_manifold(start, P, Q, tying=True), at_init).vector
    cosine = abs(torch.dot(start["e"], w).item()) / start["e"].norm().item()
    assert recorder.points[0].alignment == pytest.approx(cosine)
    assert recorder.points[0].drift == {"pos": 0.0, "attention": 0.0, "feed_forward": 0.0}
    moved = torch.cat([(result.params[k] - start[k]).flatten() for k in ("W_1", "W_2")]).norm().item()
    assert recorder.points[-1].drift["feed_forward"] == pytest.approx(moved, rel=1e-12) and moved > 0


def _point(step: int, loss: float, classification: str = LOCAL_MINIMUM) -> EscapePoint:
    return EscapePoint(step, loss, 0.0, classification, 0.0, 0.0, None)


def test_escape_outcome_definitions():
    U, band = 0.666, 0.01
    losses = [0.693, 0.670, 0.667, 0.6655, 0.6601, 0.664, 0.650, 0.62]  # a dip within the band is no escape
    kinds = [LOCAL_MINIMUM] * 3 + [UNDECIDED, SADDLE_POINT, LOCAL_MINIMUM, SADDLE_POINT, SADDLE_POINT]
    points = [_point(20 * i, loss, kind) for i, (loss, kind) in enumerate(zip(losses, kinds))]
    out = escape_outcome(points, U, band)
    assert (out.escape, out.first_plateau, out.plateau, out.last_plateau, out.crossing) == (6, 1, 3, 5, 4)
    assert [prediction(points[i]) for i in (2, 3, 4)] == ["trapped", "undecided", "escapes"]
    trapped = escape_outcome(points[:6], U, band)  # never below U - band: plateau over all, last = the end
    assert (trapped.escape, trapped.plateau, trapped.last_plateau) == (None, 3, 5)
    away = escape_outcome([_point(0, 0.693), _point(20, 0.64)], U, band)  # never on the plateau
    assert (away.escape, away.first_plateau, away.plateau, away.last_plateau) == (1, None, None, None)
    with pytest.raises(InvalidInputError):
        escape_outcome(points, U, 0.0)


def test_track_escape_refuses_models_the_formula_does_not_cover():
    """Untied, one-hot or a source with more than two symbols: refused before any training step."""
    for source, config in ((MarkovChain(P, Q), TrainConfig(tying=False)),
                           (MarkovChain(P, Q), TrainConfig(embedding="onehot")),
                           (FiniteChain.dirichlet(3, 0), TrainConfig())):
        with pytest.raises(InvalidInputError):
            track_escape(source, config, 0.01)


def test_escape_cli_writes_table_json_plot_and_parameters(tmp_path, capsys):
    code = experiments.main(["escape", "--seeds", "1", "--steps", "6", "--seq-len", "6", "--out", str(tmp_path),
                             "--json"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "tasks: 2/2 done" in captured.err  # the runner's progress lines on a non-terminal stderr
    adamw, sgd = "adamw, 1 layer, W=full", "sgd, 1 layer, W=full"
    assert set(summary["variants"]) == {adamw, sgd} and summary["settings"]["dtype"] == "float64"
    assert summary["settings"]["lr"] == {adamw: 2e-3, sgd: 1.0} and summary["band"] == pytest.approx(0.01)
    decided = []
    for mine in summary["variants"].values():
        (row,) = mine["runs"]
        assert [pt["step"] for pt in row["trajectory"]] == [0, 6]
        assert row["label"] in {"unigram", "bigram", "other"} and row["observed"] in {"escaped", "trapped"}
        assert mine["match"]["last_plateau"]["runs"] == 1
        if row["last_plateau"] and row["last_plateau"]["matches"] is not None:
            decided.append(row["last_plateau"]["matches"])
    assert code == (0 if all(decided) else 1)
    folder = tmp_path / "escape"
    assert {p.name for p in folder.iterdir()} == {"summary.json", "params.pt", "escape.png", "escape.pdf",
                                                  "results.jsonl", "checkpoints"}
    assert len(list((folder / "checkpoints").iterdir())) == 2  # one file per run, named by its task key
    saved = torch.load(folder / "params.pt")
    assert set(saved) == {adamw, sgd} and "end" in saved[sgd][0]
    text = experiments.escape_table(summary["variants"])
    assert f"{adamw} (lr 0.002):" in text and f"{sgd} (lr 1):" in text and text.count("matches the outcome") == 6


def test_escape_study_over_depth_and_memory_on_the_second_order_chain(tmp_path, capsys):
    """Variants = depth × memory; layer norm on by default for the second-order source; escape step vs W plotted."""
    code = experiments.main(["escape", "--source", "second-order", "--layers", "1", "2", "--memory", "2", "full",
                             "--optimizer", "adamw", "--seeds", "1", "--steps", "4", "--seq-len", "8", "--out",
                             str(tmp_path), "--json", "--workers", "1"])
    summary = json.loads(capsys.readouterr().out)
    assert code in (0, 1)
    assert set(summary["variants"]) == {f"adamw, {n} layer{'s' * (n > 1)}, W={w}" for n in (1, 2) for w in (2, "full")}
    assert summary["settings"]["layer_norm"] is True and summary["source"] == {"table": [[0.2, 0.2], [0.7, 0.7]]}
    for variant in summary["variants"].values():
        (row,) = variant["runs"]
        assert len(row["end"]["attention_previous"]) == variant["layers"]
        assert row["end"]["profile"]["eigenvalue"] == row["end"]["lambda_min"]
    assert (tmp_path / "escape" / "memory.png").exists()


@pytest.mark.parametrize("argv", [["escape", "--memory", "0"], ["escape", "--memory", "x"], ["escape", "--layers", "0"],
                                  ["escape", "--p", "0.3"], ["escape", "--p", "1.5", "--q", "0.3"]])
def test_bad_escape_flags_exit_2_with_one_line(argv, capsys):
    assert experiments.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["tying", "--steps", "0"], ["tying", "--seq-len", "0"], ["escape", "--seeds", "0"],
                                  ["tying", "--optimizer", "adam"],
                                  ["init", "--seeds", "0"], ["init", "--steps", "-1"], ["init", "--seq-len", "0"],
                                  ["init", "--seeds", "x"]])
def test_zero_and_bad_flags_exit_2_with_one_line(argv, capsys):
    assert experiments.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_unwritable_out_exits_2_before_training(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("trained before checking --out"))
    monkeypatch.setattr(experiments, "track_escape", lambda *a, **k: pytest.fail("trained before checking --out"))
    for name in ("tying", "escape", "init"):
        assert experiments.main([name, "--out", str(blocker / "sub")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: cannot write to --out") and err.count("\n") == 1


def test_command_line_zero_steps_has_no_traceback():
    done = subprocess.run([sys.executable, "-m", "verify.experiments", "tying", "--steps", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: steps must be") and done.stderr.count("\n") == 1


def test_init_cli_writes_table_json_plot_and_the_embedding_measurement(tmp_path, capsys):
    code = experiments.main(["init", "--seeds", "1", "--steps", "4", "--seq-len", "6", "--out", str(tmp_path),
                             "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert [row["variant"] for row in summary["rows"]] == ["rank-one", "Gaussian 0.002", "Gaussian 0.02 (std)",
                                                           "Gaussian 0.2"]
    assert [row["expected"] for row in summary["rows"]] == ["bigram", None, "unigram", None]
    positions = summary["positions"]
    assert list(positions) == [row["variant"] for row in summary["rows"]]
    assert all(set(parts) == {"head", "bulk", "trapped"} and parts["trapped"] in (0.0, 1.0)
               for parts in positions.values())
    assert summary["rows"][0]["runs"][0]["test_loss"][0] > 5  # the rank-one start: slope -254 at d = 8
    embedding = summary["embedding"]
    assert len(embedding) == experiments.EMBEDDING_POINTS and experiments.embedding_exact(embedding)
    assert all(0.1 < row["normal_fraction"] <= 1 and row["normal_blocks"]["W_O"] > 0 for row in embedding)
    assert code == (0 if all(row["agrees"] is not False for row in summary["rows"]) else 1)
    assert {p.name for p in (tmp_path / "init").iterdir()} == {"summary.json", "curves.png", "curves.pdf",
                                                              "results.jsonl"}
    text = experiments.init_text(summary)
    assert "within the label tolerance): rank-one" in text and "The family is not invariant" in text


def test_a_corrupted_embedding_fails_the_exactness_check(monkeypatch):
    """Mutation: pos_n = -(e/3) α in the embedding; the init experiment's exactness check then fails."""
    chain = MarkovChain(P, Q)
    good = experiments.embedding_rows(canonical_flow.random_tangencies(chain, 1, 3, 4))
    real = canonical_flow.canonical_point

    def corrupted(*args, **kwargs):
        params = real(*args, **kwargs)
        return params | {"pos": params["pos"] * 2 / 3}

    monkeypatch.setattr(canonical_flow, "canonical_point", corrupted)
    bad = experiments.embedding_rows(canonical_flow.random_tangencies(chain, 1, 3, 4))
    assert experiments.embedding_exact(good) and not experiments.embedding_exact(bad)


def test_init_has_its_own_run_sizes_and_the_flags_override_them():
    args = experiments._parser().parse_args(["init", "--quick"])
    base, seeds = experiments._sizes(args, "init")
    assert (base.seq_len, base.steps, seeds) == (64, 400, 2)
    base, seeds = experiments._sizes(args, "tying")
    assert (base.seq_len, base.steps, seeds) == (128, 600, 2)
    base, seeds = experiments._sizes(experiments._parser().parse_args(["init"]), "init")
    assert (base.seq_len, base.steps, seeds) == (64, 800, 4)
    args = experiments._parser().parse_args(["all", "--seeds", "5", "--steps", "7"])
    assert all(experiments._sizes(args, name)[0].steps == 7 and experiments._sizes(args, name)[1] == 5
               for name in experiments.EXPERIMENTS)


def test_training_runs_on_one_cpu_thread_and_restores_the_count():
    before = torch.get_num_threads()
    with cli.cpu_threads("cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cli.cpu_threads("cuda"):
        assert torch.get_num_threads() == before


def test_trapped_means_predicting_the_stationary_law_beyond_the_first_positions():
    """θ_π (the unigram predictor) counts as trapped, θ_* (the kernel) does not; both at N = 12."""
    chain, config = MarkovChain(P, Q), TrainConfig(d=3, seq_len=12)
    unigram, kernel = (experiments.run_positions(point, chain, config)
                       for point in (theta_pi(chain, 3, 12), theta_star(chain, 3, 12)))
    assert unigram["trapped"] == 1.0 and kernel["trapped"] == 0.0
    assert kernel["head"] == pytest.approx(0.0, abs=1e-12) and kernel["bulk"] == pytest.approx(0.0, abs=1e-12)
    assert unigram["bulk"] == pytest.approx(chain.mutual_information(), abs=0.01)
    rows = [{"variant": "v", "runs": [{"positions": unigram}, {"positions": kernel}]}]
    assert experiments.position_summary(rows) == {"v": {part: (unigram[part] + kernel[part]) / 2
                                                        for part in ("head", "bulk", "trapped")}}


@pytest.mark.parametrize("layers, layer_norm, memory", [(1, False, None), (2, True, 3), (2, False, None)])
@pytest.mark.parametrize("source", [MarkovChain(P, Q), SecondOrderChain.lagged(0.2, 0.3)])
def test_lag_profile_adds_up_to_the_bottom_eigenvalue(layers, layer_norm, memory, source):
    """covariance + Σ_m part(m) = λ_min(S) for any depth, mask and layer norm; the second-order source's lag 1 is 0."""
    point = project_to_manifold(init_params(3, 12, layers=layers, layer_norm=layer_norm, std=0.6, seed=2),
                                tying=True, source=source)
    curvature = manifold_curvature(point, tying=True, source=source, memory=memory)
    profile = lag_profile(point, curvature, source, memory, lags=4)
    total = profile["covariance"] + sum(profile["lags"]) + profile["beyond"]
    assert total == pytest.approx(curvature.schur_eigenvalues[0].item(), abs=1e-12)
    if isinstance(source, SecondOrderChain):
        assert abs(profile["lags"][0]) <= 1e-14 and abs(profile["lags"][2]) <= 1e-14
    if memory is not None:
        assert all(part == 0.0 for part in profile["lags"][layers * memory + 1:])


def test_lag_profile_fails_with_a_shifted_autocovariance(monkeypatch):
    """Mutation: c(m + 1) in place of c(m) no longer adds up to λ_min(S)."""
    source = SecondOrderChain.lagged(0.2, 0.3)
    point = project_to_manifold(init_params(3, 12, layers=2, std=0.6, seed=2), tying=True, source=source)
    curvature = manifold_curvature(point, tying=True, source=source)
    original = Autocovariance.scalar
    monkeypatch.setattr(Autocovariance, "scalar", lambda self, lags: original(self, lags + 1)[1:])
    profile = lag_profile(point, curvature, source, None, lags=4)
    total = profile["covariance"] + sum(profile["lags"]) + profile["beyond"]
    assert abs(total - curvature.schur_eigenvalues[0].item()) > 1e-6


def test_attention_to_previous_is_uniform_at_zero_scores():
    """W_Q = 0: uniform attention, mass 1/(min(n, W) + 1) on x_{n-1} (the dilution SPEC §12 predicts)."""
    point = init_params(2, 10, std=0.3, seed=0)
    point["W_Q"] = torch.zeros_like(point["W_Q"])
    for memory, expected in ((2, (1 / 2 + 8 / 3) / 9), (None, sum(1 / (n + 1) for n in range(1, 10)) / 9)):
        assert attention_to_previous(point, memory)[0] == pytest.approx(expected, rel=1e-12)


def test_escape_tracks_a_deep_masked_run_on_the_second_order_chain():
    source = SecondOrderChain.lagged(0.2, 0.3)
    config = TrainConfig(d=3, seq_len=8, steps=4, eval_every=2, eval_sequences=8, layers=2, memory=2,
                         layer_norm=True, lr=2e-2)
    run = track_escape(source, config, band=0.01)
    record = run.as_dict()
    assert [point["step"] for point in record["trajectory"]] == [0, 2, 4]
    assert record["end"]["profile"]["eigenvalue"] == record["end"]["lambda_min"]
    assert record["end"]["parts"] is None and len(record["end"]["attention_previous"]) == 2
