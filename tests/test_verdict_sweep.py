"""benchmarks/verdict_sweep.py through the task runner: the same records and table on one worker, two and a
Dask LocalCluster; progress as the runs finish; --out and --resume; failed runs counted; bad flags."""

from __future__ import annotations

import pytest
from distributed import LocalCluster

import verify.analysis
from tests.test_benchmarks import load
from verify.runner import RESULTS_FILE, load_results

TINY = ["--d", "2", "--seq-len", "4"]


@pytest.fixture()
def sweep(monkeypatch):
    """The script with one hard input, p = q = 0.5: 8 runs (tied and untied, two dtypes, θ_π and θ_*)."""
    module = load("verdict_sweep")
    monkeypatch.setattr(module, "cases", lambda: [("p = q", 0.5, 0.5)])
    return module


def run(module, argv, capsys) -> tuple[int, str, str]:
    code = module.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(folder) -> dict:
    return {key: entry["record"] for key, entry in load_results(folder).items()}


@pytest.fixture(scope="module")
def cluster() -> str:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local.scheduler_address


def test_the_same_records_and_table_on_one_worker_two_and_a_dask_cluster(sweep, cluster, tmp_path, capsys):
    outputs = {}
    for name, flags in {"one": ["--workers", "1"], "two": ["--workers", "2"], "dask": ["--scheduler", cluster]}.items():
        code, out, err = run(sweep, [*TINY, *flags, "--out", str(tmp_path / name)], capsys)
        assert code == 0, out
        assert "tasks: 8/8 done, 0 failed, 0 running" in err  # progress as the runs finish
        outputs[name] = out
    assert outputs["one"] == outputs["two"] == outputs["dask"]
    assert "p = q            float64              4             0             0" in outputs["one"]
    assert "OK   runs contradicted: 0" in outputs["one"] and "OK   runs failed: 0" in outputs["one"]
    assert len(records(tmp_path / "one")) == 8
    assert records(tmp_path / "one") == records(tmp_path / "two") == records(tmp_path / "dask")


def test_resume_runs_only_what_is_not_recorded(sweep, tmp_path, capsys):
    code, whole, _ = run(sweep, [*TINY, "--workers", "2", "--out", str(tmp_path / "whole")], capsys)
    lines = (tmp_path / "whole" / RESULTS_FILE).read_text().splitlines()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / RESULTS_FILE).write_text("\n".join(lines[:3]) + "\n")  # as if killed after 3 runs
    again, out, err = run(sweep, [*TINY, "--workers", "2", "--out", str(tmp_path / "cut"), "--resume"], capsys)
    assert (code, again) == (0, 0) and out == whole
    assert "running 5 tasks on 2 local worker processes (3 already recorded in" in err
    assert records(tmp_path / "cut") == records(tmp_path / "whole")


def test_failed_runs_are_counted_and_miss(sweep, tmp_path, capsys, monkeypatch):
    def broken(config, theorem, scan=0):
        raise MemoryError("no room")

    monkeypatch.setattr(verify.analysis, "analyse_bigram", broken)
    code, out, err = run(sweep, [*TINY, "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "MISS runs failed: 4 (target <= 0)" in out and "OK   runs contradicted: 0" in out
    assert out.count("analyse_bigram: MemoryError: no room") == 4
    assert "4/8 tasks failed (first: MemoryError: no room)" in err
    assert sorted(e["status"] for e in load_results(tmp_path).values()) == ["failed"] * 4 + ["ok"] * 4


@pytest.mark.parametrize("argv, message", [
    (["--resume"], "--resume needs --out FOLDER"),
    (["--out", "FILE"], "is a file, not a folder"),
    (["--workers", "0"], "--workers must be a whole number >= 1"),
    (["--workers", "2", "--scheduler", "local:2"], "not both"),
])
def test_bad_flags_are_one_line_and_exit_2(sweep, argv, message, tmp_path, capsys):
    from _common import run as run_script

    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / a) if a == "FILE" else a for a in argv]
    assert run_script(sweep.main, [*TINY, *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
