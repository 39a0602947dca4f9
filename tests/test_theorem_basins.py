"""python -m verify.theorem_basins: the JSON contract, the basin agreement on a small grid, the registry,
the portrait, p + q = 1, a corrupted model, and bad input."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from distributed import LocalCluster

from numerics import dynamics as D
from paper_refs import claims
from theory import canonical as C
from verify import theorem_basins
from verify.figures import save_figure
from verify.runner import RESULTS_FILE, load_results

SMALL = ["--grid", "6", "--starts", "6"]
TINY = ["--grid", "4", "--starts", "4"]
CONTRACT = {"theorem", "inputs", "prediction", "verdict", "closed_form", "numeric", "checks"}


def run(argv, capsys):
    code = theorem_basins.run([*argv, "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out.strip() else None), captured.err


@pytest.fixture(scope="module", params=[("0.5", "0.8"), ("0.2", "0.3")], ids=["p+q>1", "p+q<1"])
def small_run(request):
    """One --json run per (p, q) on a 6 × 6 grid, shared by the tests (capsys is per test): (exit code, report,
    stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = theorem_basins.run([*SMALL, "--p", request.param[0], "--q", request.param[1], "--json"])
    return code, json.loads(out.getvalue()), err.getvalue()


def test_small_grid_is_confirmed_with_the_json_contract(small_run):
    code, report, err = small_run
    assert code == 0 and report["verdict"] == "confirmed" and set(report) >= CONTRACT and err == ""
    assert report["claims"] == ["L2G-ENERGY", "L2G-BASINS", "L2G-GAUSS-INIT"]
    profiled, joint = report["numeric"]["profiled"], report["numeric"]["joint"]
    assert profiled["agreement"] >= 0.99 and profiled["kept"] + profiled["in_band"] == 36
    assert joint["agreement"] is not None and joint["labels"]["undecided"] == 0  # measured, not checked
    integration = report["numeric"]["integration"]
    assert integration == D.Integration().as_dict() and integration["method"] == "BDF"
    gaussian = {(row["p"], row["q"]): row["fraction_claimed"] for row in report["numeric"]["gaussian"]}
    assert set(gaussian) == {(0.5, 0.8), (0.9, 0.9), (0.2, 0.3), (0.1, 0.1)} and min(gaussian.values()) == 1.0


def test_every_check_is_registered_under_the_claims_it_tests(small_run):
    _, report, _ = small_run
    registered = {c["id"]: set(c.get("command_checks", [])) for c in claims() if c.get("command") == "theorem_basins"}
    assert set(registered) == set(report["claims"])
    assert {c["name"] for c in report["checks"]} == set().union(*registered.values())


def test_text_report_and_phase_portrait(tmp_path, capsys, monkeypatch):
    drawn = []

    def keep(fig, path, **kwargs):
        drawn.append(fig)
        return save_figure(fig, path, **kwargs)

    monkeypatch.setattr(theorem_basins, "save_figure", keep)
    assert theorem_basins.run([*TINY, "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "verdict: CONFIRMED" in captured.out and "Gaussian starts" in captured.out
    assert "done: profiled flow" in captured.err  # stage lines on stderr
    assert sorted(f.name for f in tmp_path.iterdir()) == ["portrait.pdf", "portrait.png", RESULTS_FILE, "summary.json"]
    for suffix in (".png", ".pdf"):
        assert (tmp_path / "portrait").with_suffix(suffix).stat().st_size > 10_000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["verdict"] == "confirmed" and summary["numeric"]["plot"] == [
        str(tmp_path / "portrait.png"), str(tmp_path / "portrait.pdf")]
    assert captured.out.splitlines()[-1] == "wrote " + ", ".join(
        [*summary["numeric"]["plot"], str(tmp_path / "summary.json"), str(tmp_path / RESULTS_FILE)])
    # the saddle's legend names its coordinates in the axes' order, and they are where its marker is drawn
    (ax,) = drawn[0].axes
    (text,) = [t.get_text() for t in ax.get_legend().get_texts() if t.get_text().startswith("saddle")]
    names, values = text.removeprefix("saddle ").split(" = ")
    assert names == f"({ax.get_xlabel()}, {ax.get_ylabel()})" == "(w, e)"
    point = [float(sp.sympify(v.replace("√2", "sqrt(2)"))) for v in values.strip("()").split(", ")]
    (marker,) = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert point == [marker.get_xdata()[0], marker.get_ydata()[0]] == [D.SADDLE_W, 0.0]
    assert point[0] == pytest.approx(-1 / 2**0.5)


def test_p_plus_q_one_is_inconclusive(capsys):
    code, report, _ = run([*TINY, "--p", "0.3", "--q", "0.7"], capsys)
    assert code == 3 and report["verdict"] == "inconclusive" and report["prediction"].startswith("undecided")


GAUSS_CHECKS = {f"Gaussian starts at ({p}, {q}): fraction ending at {'H(pi)' if p + q > 1 else 'H_rate'}"
                for p, q in [(0.5, 0.8), (0.9, 0.9), (0.2, 0.3), (0.1, 0.1)]}
ENERGY_CHECKS = {"profiled flow: max |E(t) - E(0)|", "joint flow: |E(T) - E(0) + 2 int e^2 db|"}
BASIN_CHECK = "profiled flow: endpoints in the energy's basins"
#: corrupted slopes κ(w) and the checks that must then fail; together they cover every check
MUTATIONS = [
    ("wrong sign of w|w|", lambda w_=C.w: 1 - 2 * w_ * sp.Abs(w_), ENERGY_CHECKS | {BASIN_CHECK}),
    # the feed-forward's sign flipped: E is still conserved (it sees κ only through ∇κ·∇E), the basins move
    ("slope negated", lambda w_=C.w: -(1 + 2 * w_ * sp.Abs(w_)), GAUSS_CHECKS | {BASIN_CHECK}),
]


@pytest.mark.parametrize("slope, failing", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_a_corrupted_model_is_contradicted(slope, failing, monkeypatch, capsys):
    monkeypatch.setattr(C, "slope", slope)
    D._compiled.cache_clear()
    try:
        code, report, _ = run(TINY, capsys)
    finally:
        monkeypatch.undo()
        D._compiled.cache_clear()
    failed = {c["name"] for c in report["checks"] if c["passed"] is False}
    assert code == 1 and report["verdict"] == "contradicted" and failing <= failed, failing - failed


def test_the_mutations_cover_every_check(small_run):
    assert {c["name"] for c in small_run[1]["checks"]} == set().union(*(m[2] for m in MUTATIONS))


@pytest.mark.parametrize("argv, message", [
    (["--p", "0"], "p must lie strictly between 0 and 1"),
    (["--q", "1"], "q must lie strictly between 0 and 1"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    (["--p", "nan"], "p must lie strictly between 0 and 1"),
    (["--p", "abc"], "not a number"),
    (["--grid", "1"], "--grid 1"),
    (["--grid", "100000"], "--grid 100000"),
    (["--grid", "2.5"], "invalid int value"),
    (["--extent", "0"], "--extent"),
    (["--extent", "inf"], "--extent"),
    (["--extent", "9"], "--extent"),
    (["--band", "-1"], "--band"),
    (["--band", "nan"], "--band"),
    (["--starts", "0"], "--starts"),
    (["--horizon", "0"], "--horizon"),
    (["--rtol", "0.5"], "--rtol"),
    (["--plot", "/no/such/folder/portrait"], "does not exist"),
    (["--out", "/dev/null"], "is a file, not a folder"),
    (["--out", "x", "--plot", "y"], "not both"),
    (["--resume"], "--resume needs --out FOLDER"),
    (["--resume", "--plot", "y"], "--resume needs --out FOLDER"),
    (["--workers", "0"], "--workers must be a whole number >= 1"),
    (["--workers", "2", "--scheduler", "local:2"], "not both"),
    (["--unknown"], "unrecognized arguments"),
])
def test_bad_input_is_one_line_and_exit_two(argv, message, capsys):
    assert theorem_basins.run(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert "Traceback" not in captured.err


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as stop:
        theorem_basins.run(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "separatrix" in out and "--band" in out and "Exit code" in out


# --- the flows as tasks of verify/runner.py ---

GRID = ["--grid", "3", "--starts", "3"]


def printed(argv) -> dict:
    """The JSON report of ``theorem_basins.run(argv)`` (exit 0), its run time and files left out."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert theorem_basins.run([*argv, "--json"]) == 0
    return without_run(json.loads(out.getvalue()))


def without_run(report: dict) -> dict:
    """``report`` without what differs between runs of the same inputs: the run time and the files written."""
    return report | {"numeric": {k: v for k, v in report["numeric"].items() if k not in ("runtime_s", "plot")}}


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> tuple[Path, dict]:
    """A 3 × 3 grid and 3 Gaussian starts in this process: (the --out folder, the report)."""
    folder = tmp_path_factory.mktemp("basins")
    return folder, printed([*GRID, "--workers", "1", "--out", str(folder)])


@pytest.fixture(scope="module")
def cluster() -> str:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local.scheduler_address


def records(folder: Path) -> dict:
    return {key: entry["record"] for key, entry in load_results(folder).items()}


@pytest.mark.parametrize("runner", [["--workers", "2"], "dask"], ids=["2 workers", "LocalCluster"])
def test_the_same_records_on_one_worker_two_and_a_dask_cluster(runner, one_worker, cluster, tmp_path):
    folder, report = one_worker
    flags = ["--scheduler", cluster] if runner == "dask" else runner
    other = printed([*GRID, *flags, "--out", str(tmp_path)])
    assert other == report and report["verdict"] == "confirmed"
    assert records(tmp_path) == records(folder) and len(records(folder)) == 2 + 4  # a batch per flow, 4 (p, q)


def test_a_task_per_batch_gives_the_numbers_of_one_integration(one_worker):
    _, report = one_worker
    e, w = D.grid(3, 3.0)
    flow = D.integrate(D.CanonicalModel(theorem_basins.MarkovChain(0.5, 0.8)),
                       np.column_stack([e, w, np.zeros_like(e)]), "profiled")
    assert report["numeric"]["profiled"]["labels"] == flow.counts
    assert report["numeric"]["profiled"]["max_energy_drift"] == float(np.nanmax(flow.energy_drift))


def test_resume_runs_only_what_is_not_recorded(one_worker, tmp_path, capsys):
    folder, report = one_worker
    lines = (folder / RESULTS_FILE).read_text().splitlines()
    (tmp_path / RESULTS_FILE).write_text("\n".join(lines[:4]) + "\n")
    assert theorem_basins.run([*GRID, "--out", str(tmp_path), "--resume", "--workers", "1"]) == 0
    assert "running 2 tasks in this process (4 already recorded in" in capsys.readouterr().err
    assert without_run(json.loads((tmp_path / "summary.json").read_text())) == report
    assert records(tmp_path) == records(folder)


def test_failed_tasks_are_recorded_counted_and_exit_1(tmp_path, capsys, monkeypatch):
    def broken(p, q, *args):
        raise ArithmeticError(f"({p}, {q}) broke")

    monkeypatch.setattr(theorem_basins, "gaussian_row", broken)
    assert theorem_basins.run([*GRID, "--out", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "no report: 4 of 6 tasks failed" in captured.err
    errors = sorted(e.get("error", "ok") for e in load_results(tmp_path).values())
    assert errors[:4] == [f"ArithmeticError: ({p}, {q}) broke" for p, q in sorted(theorem_basins.GAUSS_PAIRS)]
    assert not (tmp_path / "summary.json").exists()


def test_the_deprecated_plot_flag_still_draws_with_a_note(tmp_path, capsys):
    prefix = tmp_path / "old"
    assert theorem_basins.run([*GRID, "--plot", str(prefix)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0].startswith("note: --plot FILE is deprecated")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["old.pdf", "old.png"]
    assert captured.out.splitlines()[-1] == f"wrote {prefix}.png, {prefix}.pdf"


def test_the_json_printed_is_the_summary_written(tmp_path, capsys):
    code, report, _ = run([*GRID, "--workers", "1", "--out", str(tmp_path)], capsys)
    assert code == 0 and report == json.loads((tmp_path / "summary.json").read_text())
    assert report["numeric"]["plot"] == [str(tmp_path / "portrait.png"), str(tmp_path / "portrait.pdf")]
