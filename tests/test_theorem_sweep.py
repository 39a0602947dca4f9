"""The theorem commands' --sweep K and --scan-manifold K through the task runner (verify/runner.py): the same
records on one worker, two and a Dask LocalCluster; --out FOLDER with results.jsonl; --resume; failed tasks
counted; bad flag combinations."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from distributed import LocalCluster

from verify import analysis, theorem_global_min, theorem_local_min
from verify.cli import config_from, parser
from verify.runner import RESULTS_FILE, load_results

TINY = ["--d", "2", "--seq-len", "4"]
SWEEP = [*TINY, "--sweep", "4", "--scan-manifold", "1"]


def records(folder) -> dict:
    """The results file's records by task key."""
    return {key: entry["record"] for key, entry in load_results(folder).items()}


def run_json(command, argv, capsys) -> tuple[int, object, str]:
    code = command([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else None, captured.err


@pytest.fixture(scope="module")
def cluster() -> str:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local.scheduler_address


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory) -> tuple:
    """--sweep 4 --scan-manifold 1 at d = 2, N = 4 in this process: (the printed JSON, the results folder)."""
    folder = tmp_path_factory.mktemp("one")
    out = json.loads(_printed(theorem_local_min.run, [*SWEEP, "--workers", "1", "--out", str(folder), "--json"]))
    return out, folder


def _printed(command, argv) -> str:
    """What ``command(argv)`` prints on stdout; it must exit 0."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        assert command(argv) == 0
    return stdout.getvalue()


@pytest.mark.parametrize("runner", [["--workers", "2"], "dask"], ids=["2 workers", "LocalCluster"])
def test_same_records_on_one_worker_two_and_a_dask_cluster(runner, one_worker, cluster, tmp_path, capsys):
    printed, folder = one_worker
    flags = ["--scheduler", cluster] if runner == "dask" else runner
    code, other, err = run_json(theorem_local_min.run, [*SWEEP, *flags, "--out", str(tmp_path)], capsys)
    assert code == 0 and err == ""  # --json off a terminal: no progress lines
    assert other == printed
    assert records(tmp_path) == records(folder) and len(records(folder)) == 8  # 4 runs, 4 scanned points
    assert [r["inputs"]["p"] for r in printed] == [r["inputs"]["p"] for r in other]
    assert all(r["numeric"]["manifold_scan"]["points"] == 1 for r in printed)
    assert all("scan of M_π" in r["notes"][-1] for r in printed)


def test_the_table_is_built_from_the_records_and_nothing_is_written_without_out(one_worker, tmp_path, capsys,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert theorem_local_min.run([*TINY, "--sweep", "4", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[-1] == "confirmed: 4, inconclusive: 0, contradicted: 0" and len(lines) == 6
    printed, _ = one_worker
    for line, report in zip(lines[1:5], printed):
        assert line.split()[:2] == [f"{report['inputs']['p']:.4f}", f"{report['inputs']['q']:.4f}"]
        assert line.endswith(report["verdict"])
    assert "running 4 tasks on 2 local worker processes" in captured.err
    assert list(tmp_path.iterdir()) == []


def test_resume_runs_only_what_is_not_recorded(one_worker, tmp_path, capsys):
    printed, folder = one_worker
    lines = (folder / RESULTS_FILE).read_text().splitlines()
    (tmp_path / RESULTS_FILE).write_text("\n".join(lines[:5]) + "\n")  # as if stopped after 5 of 8 tasks
    assert theorem_local_min.run([*SWEEP, "--out", str(tmp_path), "--resume", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "running 3 tasks in this process (5 already recorded in" in err
    code, again, _ = run_json(theorem_local_min.run, [*SWEEP, "--out", str(tmp_path), "--resume"], capsys)
    assert code == 0 and again == printed and records(tmp_path) == records(folder)


def test_a_scan_of_one_run_goes_through_the_runner_and_prints_one_report(capsys):
    code, report, _ = run_json(theorem_global_min.run, [*TINY, "--scan-manifold", "2", "--workers", "2"], capsys)
    assert code == 0 and report["theorem"] == "theorem_global_min"
    assert [c["class"] for c in report["numeric"]["manifold_scan"]["classes"]] == [
        analysis.scan_point(config_from(parser("", {}).parse_args([*TINY, "--device", "cpu"])), i)["class"]
        for i in range(2)]


def test_a_failing_task_is_recorded_counted_and_exits_1(tmp_path, capsys, monkeypatch):
    def broken(config, index):
        raise RuntimeError(f"scan point {index} broke")

    monkeypatch.setattr(analysis, "scan_point", broken)
    code = theorem_local_min.run([*TINY, "--sweep", "2", "--scan-manifold", "1", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.count("task failed: RuntimeError: scan point 0 broke") == 2
    assert captured.out.splitlines()[-1] == "confirmed: 0, inconclusive: 0, contradicted: 0, failed: 2"
    assert "2/4 tasks failed (first: RuntimeError: scan point 0 broke)" in captured.err
    status = sorted(e["status"] for e in load_results(tmp_path).values())
    assert status == ["failed", "failed", "ok", "ok"]


@pytest.mark.parametrize("argv, message", [
    (["--resume", "--sweep", "2"], "--resume needs --out FOLDER"),
    (["--out", "OUT"], "--out is for runs of many tasks"),
    (["--workers", "2", "--resume"], "--workers, --resume are for runs of many tasks"),
    (["--sweep", "2", "--out", "FILE"], "is a file, not a folder"),
    (["--sweep", "2", "--workers", "0"], "--workers must be a whole number >= 1"),
    (["--sweep", "2", "--workers", "2", "--scheduler", "local:2"], "not both"),
    (["--sweep", "2", "--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
])
def test_bad_flag_combinations_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "FILE").write_text("")
    argv = [str(tmp_path / a) if a in ("OUT", "FILE") else a for a in argv]
    assert theorem_local_min.run([*TINY, *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and message in captured.err
    assert not (tmp_path / "OUT").exists()


def test_the_flags_are_documented(capsys):
    with pytest.raises(SystemExit):
        theorem_local_min.run(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--out FOLDER", RESULTS_FILE, "--workers N", "--scheduler ADDRESS", "--resume"):
        assert words in text


def test_python_m_verify_scans_through_the_runner(monkeypatch):
    """``python -m verify --scan-manifold`` runs each point as a runner task in this process (no loop of its own),
    with the records the theorem commands get."""
    import verify.runner
    from verify.analysis import scan_manifold, scan_point
    from verify.cli import Config

    calls = []
    original = verify.runner.run_tasks
    monkeypatch.setattr(verify.runner, "run_tasks", lambda *a, **k: calls.append(k) or original(*a, **k))
    config = Config(0.5, 0.8, True, 2, 4, "cpu", "float64", 0)
    summary = scan_manifold(config, 3)
    assert calls == [{"workers": 1, "progress": True}]
    assert summary["points"] == 3 and summary["classes"] == [scan_point(config, i) for i in range(3)]
