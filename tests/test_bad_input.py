"""Inputs a new user tripped over (issue 19, item 5): each is refused with one stderr line and exit 2
before any work, or does the right thing.

--p without --q; transition entries that underflow and 2-state chains equal to a refused (p, q); runs too
long or too large to finish (experiments' --seq-len/--steps/--seeds, the theorems' --sweep and
--scan-manifold), refused from the measured cost model; theory.latex --pdf without pdflatex; and the
text of ``python -m verify --list`` within a terminal's width.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import verify.__main__ as verify_all
from numerics.markov import FiniteChain, InvalidInputError, parse_number, parse_transition
from numerics.train import TrainConfig
from paper_refs import claims
from theory import latex
from verify import (
    cli,
    experiments,
    theorem_basins,
    theorem_global_min,
    theorem_local_min,
    theorem_manifold,
    theorem_saddle,
)
from verify.report import Check, Report

ROOT = Path(__file__).resolve().parents[1]
THEOREMS = [theorem_local_min.run, theorem_saddle.run, theorem_global_min.run, theorem_manifold.run]


def refused(command, argv: list[str], capsys) -> str:
    """Run ``command(argv)``: exit 2, nothing on stdout, one ``error:`` line on stderr; that line."""
    assert command(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    return captured.err


# --- --p without --q ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [*THEOREMS, verify_all.main, theorem_basins.run])
@pytest.mark.parametrize("flag", ["--p", "--q"])
def test_one_of_p_and_q_is_refused(command, flag, capsys):
    """Alone, --p 0.3 silently paired with the other's default (q = 0.8): a chain nobody named."""
    assert "give both --p and --q, or neither" in refused(command, [flag, "0.3", "--json"], capsys)


def test_one_of_p_and_q_is_refused_by_the_latex_command_too(tmp_path, capsys):
    assert "give both --p and --q" in refused(latex.main, ["--out", str(tmp_path / "d.tex"), "--p", "0.3"], capsys)


def test_one_of_p_and_q_is_refused_for_the_onehot_binary_chain(capsys):
    assert "give both" in refused(theorem_local_min.run, ["--embedding", "onehot", "--q", "0.3"], capsys)


def test_a_chain_given_twice_is_refused_whatever_the_embedding(capsys):
    """--embedding onehot used to let --p/--q through beside --transition and ignore them."""
    argv = ["--embedding", "onehot", "--transition", "0.3,0.7;0.5,0.5", "--p", "0.2", "--q", "0.4"]
    assert "not both" in refused(theorem_local_min.run, argv, capsys)


def test_both_or_neither_of_p_and_q_resolve_as_documented():
    assert cli.binary_pair(None, None, (0.5, 0.8)) == (0.5, 0.8)
    assert cli.binary_pair(0.3, 0.4, (0.5, 0.8)) == (0.3, 0.4)
    with pytest.raises(InvalidInputError, match="give both"):
        cli.binary_pair(0.3, None, (0.5, 0.8))


# --- numbers that are not the value written; chains equal to a refused binary input ----------------------

@pytest.mark.parametrize("text, message", [("1e-400", "underflows to 0"), ("-1e-400", "underflows to 0"),
                                           ("1e-310", "subnormal"), ("4.9e-324", "subnormal")])
def test_a_number_that_is_not_the_value_written_is_refused(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_number(text)


@pytest.mark.parametrize("text, value", [("0", 0.0), ("0.000e-400", 0.0), ("-0.0", 0.0), ("2.3e-308", 2.3e-308),
                                         ("0.25", 0.25), ("nan", math.nan)])
def test_numbers_that_keep_their_value_pass(text, value):
    assert parse_number(text) == value or (math.isnan(value) and math.isnan(parse_number(text)))


def test_not_a_number_stays_a_value_error():
    with pytest.raises(ValueError, match="could not convert"):
        parse_number("abc")


@pytest.mark.parametrize("text, message", [("1e-400,1;0.5,0.5", "underflows to 0"),
                                           ("1e-310,1;0.5,0.5", "subnormal"),
                                           ("0.2,0.8,1e-400;0.3,0.3,0.4;0.5,0.25,0.25", "underflows to 0")])
def test_transition_entries_that_underflow_are_refused(text, message):
    with pytest.raises(InvalidInputError, match=f"--transition: an entry .*{message}"):
        parse_transition(text)


def test_a_subnormal_transition_entry_is_refused_however_it_is_built():
    with pytest.raises(InvalidInputError, match=r"entry \[0, 1\] .* subnormal"):
        FiniteChain(np.array([[1.0 - 1e-16, 1e-310], [0.5, 0.5]]))


def test_the_audits_transition_is_refused_not_confirmed_as_p_equal_1(capsys):
    assert "underflows to 0" in refused(theorem_local_min.run, ["--transition", "1e-400,1;0.5,0.5", "--json"], capsys)


@pytest.mark.parametrize("command", THEOREMS[:3])
@pytest.mark.parametrize("rows, binary, message", [
    ("0,1;0.5,0.5", ["--p", "1", "--q", "0.5"], "p = P[0,1] must lie strictly between 0 and 1, got 1.0"),
    ("0.5,0.5;1,0", ["--p", "0.5", "--q", "1"], "q = P[1,0] must lie strictly between 0 and 1, got 1.0"),
    ("1,1e-90;0.5,0.5", ["--p", "1e-90", "--q", "0.5"], "must be at least 1.2e-77 in float64"),
])
def test_a_two_state_chain_is_refused_where_its_binary_input_is(command, rows, binary, message, capsys):
    """A 2-state chain is the binary (p, q) = (P[0,1], P[1,0]): refused as --p/--q would be, same words."""
    chain = refused(command, ["--transition", rows, "--json"], capsys)
    scalar = refused(command, ["--transition", rows, "--embedding", "scalar", "--json"], capsys)
    plain = refused(command, [*binary, "--json"], capsys)
    words = message[message.index("must"):]
    assert message in chain and words in scalar and words in plain


def test_a_two_state_chain_below_the_float32_floor_is_refused_in_float32_only(capsys):
    rows = "0.999999999999,1e-12;0.5,0.5"
    assert "in float32" in refused(theorem_local_min.run, ["--transition", rows, "--dtype", "float32"], capsys)
    assert "in float32" in refused(theorem_local_min.run, ["--p", "1e-12", "--q", "0.5", "--dtype", "float32"],
                                   capsys)
    args = cli.parser("", {}).parse_args(["--transition", rows])
    assert cli.config_from(args).p == 1e-12


def test_p_that_underflows_is_refused_by_name(capsys):
    assert "argument --p: 1e-400 underflows to 0" in refused(theorem_local_min.run, ["--p", "1e-400", "--q", "0.5"],
                                                             capsys)


# --- runs that cannot finish: the theorems' --sweep and --scan-manifold -----------------------------------

def _config(**changes) -> cli.Config:
    return cli.Config(**({"p": 0.5, "q": 0.8, "tying": True, "d": 4, "seq_len": 8, "device": "cpu",
                          "dtype": "float64", "seed": 0} | changes))


def test_a_sweep_point_costs_the_measured_floor_at_the_defaults_and_grows_with_d_and_n():
    assert cli.point_seconds(_config()) == cli.POINT_SECONDS
    assert cli.point_seconds(_config(seq_len=4)) == cli.POINT_SECONDS  # the floor, not less
    costs = [cli.point_seconds(_config(d=d, seq_len=n)) for d, n in ((4, 10), (4, 12), (8, 12))]
    assert costs == sorted(costs) and costs[0] > cli.POINT_SECONDS
    # the fit reproduces the measurements it came from (59 s at d=4, N=12; 81 s at d=8, N=10) within 15 %
    assert cli.point_seconds(_config(seq_len=12)) == pytest.approx(59, rel=0.15)
    assert cli.point_seconds(_config(d=8, seq_len=10)) == pytest.approx(81, rel=0.15)
    assert cli.point_seconds(_config(d=8, seq_len=12, device="cuda")) == cli.POINT_SECONDS


def test_the_sweep_limit_is_exactly_the_estimate_against_max_hours():
    most = int(cli.MAX_HOURS * 3600 / cli.POINT_SECONDS)
    cli.check_duration(_config(), most, 0)
    with pytest.raises(InvalidInputError, match=f"--sweep {most + 1} would take about 24 h .* 24 h limit; lower "
                                                "--sweep$"):
        cli.check_duration(_config(), most + 1, 0)
    with pytest.raises(InvalidInputError, match=r"lower --scan-manifold$"):
        cli.check_duration(_config(), 0, int(cli.MAX_HOURS * 3600 / cli.SCAN_POINT_SECONDS) + 1)
    with pytest.raises(InvalidInputError, match=r"this run would take .* lower --d or --seq-len$"):
        cli.check_duration(_config(d=16, seq_len=16), 0, 0)


@pytest.mark.parametrize("command, argv", [(theorem_local_min.run, ["--sweep", "100000000"]),
                                           (theorem_global_min.run, ["--sweep", "100000000", "--json"]),
                                           (theorem_saddle.run, ["--scan-manifold", "100000000"]),
                                           (verify_all.main, ["--scan-manifold", "10000000"])])
def test_a_sweep_or_scan_that_cannot_finish_is_refused_at_once(command, argv, capsys):
    err = refused(command, argv, capsys)
    assert "would take about" in err and "24 h limit" in err


def test_a_json_sweep_shows_progress_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert cli.sweep_progress(True, Terminal()) and cli.sweep_progress(False, io.StringIO())
    assert not cli.sweep_progress(True, io.StringIO())  # merged into a pipe: the JSON must parse


# --- runs that cannot finish: the experiments ------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["tying", "--seq-len", "100000000"], "more than the memory budget"),
    (["init", "--seq-len", "100000"], "init holds about"),
    (["tying", "--steps", "100000000"], "24 h limit"),
    (["escape", "--seeds", "100000"], "24 h limit"),
    (["all", "--seeds", "100000", "--quick"], "24 h limit"),
])
def test_an_experiment_that_cannot_finish_is_refused_before_any_folder(argv, message, tmp_path, capsys):
    err = refused(experiments.main, [*argv, "--out", str(tmp_path / "runs")], capsys)
    assert message in err
    assert not (tmp_path / "runs").exists()


def test_the_memory_cap_names_the_largest_n_that_fits(monkeypatch):
    monkeypatch.setattr(experiments, "memory_budget_bytes", lambda device: 2**30)
    # 64 test sequences hold 2 N × N matrices each, 8 bytes a number: N ≤ sqrt(2^30 / 1024) = 1024
    with pytest.raises(InvalidInputError, match=r"use --seq-len <= 1024$"):
        experiments.check_feasible([("tying", TrainConfig(seq_len=1025, steps=1), 1)])
    experiments.check_feasible([("tying", TrainConfig(seq_len=1024, steps=1), 1)])
    with pytest.raises(InvalidInputError, match=r"use --seq-len <= 512$"):  # 256 sequences for init
        experiments.check_feasible([("init", TrainConfig(seq_len=1024, steps=1), 1)])


def test_the_time_cap_is_the_step_estimate_against_max_hours():
    config = TrainConfig(seq_len=256, steps=1)
    step = experiments.SAMPLE_SECONDS * 257 + experiments.ATTENTION_SECONDS * 256**2
    assert experiments.step_seconds(config) == pytest.approx(step)
    most = int(experiments.MAX_HOURS * 3600 / step)
    experiments.check_feasible([("tying", config, most)])
    with pytest.raises(InvalidInputError, match="would take about 24 h"):
        experiments.check_feasible([("tying", config, most + 1)])
    two_layers = TrainConfig(seq_len=256, steps=1, layers=2)
    assert experiments.step_seconds(two_layers) > experiments.step_seconds(config)


def test_on_a_gpu_the_step_estimate_is_the_sampling_floor_and_says_at_least(monkeypatch):
    monkeypatch.setattr(experiments, "memory_budget_bytes", lambda device: 2**40)  # no GPU needed
    gpu = TrainConfig(seq_len=256, steps=10**9, device="cuda")
    assert experiments.step_seconds(gpu) == pytest.approx(experiments.SAMPLE_SECONDS * 257)
    with pytest.raises(InvalidInputError, match="at least"):
        experiments.check_feasible([("tying", gpu, 1)])


def test_the_experiments_default_runs_pass_the_checks():
    """Every experiment at its own defaults (and --quick) is estimated well within the limits."""
    for quick in ([], ["--quick"]):
        args = experiments._parser().parse_args(["all", *quick])
        sizes = {name: experiments._sizes(args, name) for name in experiments.EXPERIMENTS}
        settings = {name: make() for name, make in experiments.EXPERIMENTS.items()}
        experiments.check_feasible(experiments._plan(args, sizes, settings))
        escape = experiments._parser().parse_args(["escape", *quick])
        experiments.check_feasible(experiments._plan(escape, {"escape": experiments._sizes(escape, "escape")}, {}))


def test_the_hang_of_the_issue_is_an_error_line_from_the_real_entry_point(tmp_path):
    """``python -m verify.experiments --seq-len 100000000`` hung without a word."""
    done = subprocess.run([sys.executable, "-m", "verify.experiments", "tying", "--seq-len", "100000000",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --seq-len 100000000") and done.stderr.count("\n") == 1


def test_a_lone_p_is_refused_by_the_manifold_benchmark_too():
    """Review: benchmarks/manifold.py let --p silently pair with the default --q."""
    done = subprocess.run([sys.executable, "benchmarks/manifold.py", "--p", "0.3"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == "error: give both --p and --q, or neither\n"


# --- theory.latex --pdf without pdflatex ------------------------------------------------------------------

def test_pdf_flag_without_pdflatex_writes_the_tex_then_exits_2(tmp_path, capsys, monkeypatch):
    """The .tex is the work and is kept; one stderr line says the PDF was not made (exit 2)."""
    monkeypatch.setattr(latex.shutil, "which", lambda name: None)
    monkeypatch.setattr(latex, "document", lambda p, q: "\\documentclass{article}\n")  # the real one takes ~18 s
    out = tmp_path / "d.tex"
    assert latex.main(["--out", str(out), "--pdf"]) == 2
    captured = capsys.readouterr()
    assert captured.out == f"wrote {out}\n"
    assert captured.err.startswith("error: the PDF was not made: --pdf needs pdflatex")
    assert captured.err.count("\n") == 1
    assert out.read_text() == "\\documentclass{article}\n" and not (tmp_path / "d.pdf").exists()


# --- python -m verify --list within a terminal's width ----------------------------------------------------

def _words(text: str) -> list[str]:
    return text.split()


def test_the_claims_table_wraps_within_the_width_and_keeps_every_word():
    names = ", ".join(f"identity number {i} (tied, N={i}, d=2)" for i in range(60))  # 2,000+ characters
    status = [{"id": claim["id"], "checks": 60, "status": f"identities proven for all p, q: {names}",
               "where": claim["where"]} for claim in claims()]
    text = verify_all.claims_text(status)
    assert max(len(line) for line in text.splitlines()) <= verify_all.LINE_WIDTH
    expected = _words("claim checks status (where in the paper)") + [
        word for row in status for word in [row["id"], "60", *_words(row["status"]), *_words(f"({row['where']})")]]
    assert _words(text) == expected


def test_the_runs_table_shows_a_long_measurement_by_its_ends_within_the_width():
    failing = Check("spectrum " * 30, False, [float(i) for i in range(1000)], 0.0, 1e-9)
    report = Report("theorem_local_min", ["LOCAL-MIN"], {"p": 0.5, "q": 0.8, "tying": True}, "local minimum",
                    {"loss": 0.6, "hessian_eigenvalues": []}, {}, [failing])
    symbolic = Report(verify_all.SYMBOLIC, [], {"p": "symbol in (0, 1)", "q": "symbol in (0, 1)",
                                                "tying": "tied and untied"}, "identities hold", {}, {}, [])
    text = verify_all.runs_text([symbolic, report])
    assert max(len(line) for line in text.splitlines()) <= verify_all.LINE_WIDTH
    assert "(1000 values)" in text and "FAIL: spectrum" in text and "all p, q in (0, 1)" in text
