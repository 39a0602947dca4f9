"""python -m verify.theorem_basins: the JSON contract, the basin agreement on a small grid, the registry,
the portrait, p + q = 1, a corrupted model, and bad input."""

import contextlib
import io
import json

import pytest
import sympy as sp

from numerics import dynamics as D
from paper_refs import claims
from theory import canonical as C
from verify import theorem_basins
from verify.figures import save_figure

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
    prefix = tmp_path / "portrait"
    assert theorem_basins.run([*TINY, "--plot", str(prefix)]) == 0
    captured = capsys.readouterr()
    assert "verdict: CONFIRMED" in captured.out and "Gaussian starts" in captured.out
    assert "done: profiled flow" in captured.err  # stage lines on stderr
    for suffix in (".png", ".pdf"):
        assert (prefix.with_suffix(suffix)).stat().st_size > 10_000
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
