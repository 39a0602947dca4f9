"""The task runner (verify/runner.py): the same records in this process, on local workers and on a Dask
cluster; durable results that a stopped sweep resumes from; failed tasks; dead workers; bad options."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import LocalCluster

from tests import runner_tasks
from tests.runner_tasks import configs, default_sigint, spectrum
from verify.runner import RESULTS_FILE, Progress, load_results, one_line, run_tasks

ROOT = Path(__file__).resolve().parents[1]


def runs_per_seed(log: Path) -> dict[int, int]:
    """How many times each task started (tests/runner_tasks.py writes one line per execution)."""
    return {int(f.stem): len(f.read_text().splitlines()) for f in log.glob("*.runs")}


@pytest.fixture(scope="module")
def cluster() -> str:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local.scheduler_address


def test_same_records_in_process_on_local_workers_and_on_a_dask_cluster(cluster, tmp_path):
    tasks = configs(5)
    options = {"in process": {"workers": 1}, "2 workers": {"workers": 2}, "dask": {"scheduler": cluster}}
    results = {name: run_tasks(spectrum, tasks, out=tmp_path / name.replace(" ", "-"), progress=False, **opts)
               for name, opts in options.items()}
    records = {name: result.records for name, result in results.items()}
    assert records["in process"] == records["2 workers"] == records["dask"]
    mine = records["dask"]
    assert [r["seed"] for r in mine] == [0, 1, 2, 3, 4]  # config order, whatever order they finished in
    assert {r["threads"] for r in mine} == {1}
    assert len({r["sum"] for r in mine}) == 5
    for name, result in results.items():
        assert (result.failed, result.exit_code, result.interrupted) == (0, 0, False)
        on_disk = load_results(tmp_path / name.replace(" ", "-"))
        assert [on_disk[e["key"]]["record"] for e in result.entries] == mine


def test_a_failing_task_is_recorded_and_counted_and_resume_runs_only_what_is_not_recorded_ok(tmp_path, capsys):
    log = tmp_path / "log"
    log.mkdir()
    tasks = configs(4, log=str(log))
    tasks[2] |= {"fail": True}
    first = run_tasks(spectrum, tasks, out=tmp_path, workers=2)
    assert (first.failed, first.exit_code) == (1, 1)
    assert first.entries[2]["status"] == "failed"
    assert first.entries[2]["error"] == "ValueError: task 2 fails on purpose"
    assert [r is None for r in first.records] == [False, False, True, False]  # the sweep went on
    err = capsys.readouterr().err
    assert "tasks: 4/4 done, 1 failed, 0 running" in err
    assert "1/4 tasks failed (first: ValueError: task 2 fails on purpose)" in err

    again = run_tasks(spectrum, tasks, out=tmp_path, workers=1, resume=True, progress=False)
    assert (again.resumed, again.failed) == (3, 1)
    assert again.records == first.records
    assert runs_per_seed(log) == {0: 1, 1: 1, 2: 2, 3: 1}  # only the failed task ran again

    fresh = run_tasks(spectrum, tasks, out=tmp_path, workers=1, progress=False)  # no --resume: start afresh
    assert fresh.resumed == 0
    assert runs_per_seed(log) == {0: 2, 1: 2, 2: 3, 3: 2}
    assert len((tmp_path / RESULTS_FILE).read_text().splitlines()) == 4


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_sweep_keeps_what_finished_and_resumes_to_the_uninterrupted_records(tmp_path, signum):
    out, log = tmp_path / "out", tmp_path / "log"
    log.mkdir()
    command = [sys.executable, "-m", "tests.runner_tasks", "--out", str(out), "--tasks", "8", "--sleep", "0.3",
               "--log", str(log), "--workers", "2"]
    sweep = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    results = out / RESULTS_FILE
    deadline = time.monotonic() + 60
    while not (results.exists() and results.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    sweep.send_signal(signum)
    err = sweep.communicate(timeout=30)[1]
    assert sweep.returncode == 130, err
    assert err.splitlines()[-1].startswith("interrupted: ")
    assert "--resume" in err.splitlines()[-1]
    recorded = load_results(out)
    assert 2 <= len(recorded) < 8

    assert runner_tasks.main([*command[3:], "--resume"]) == 0  # the same command, here (no second torch import)
    final = load_results(out)
    by_seed = {e["config"]["seed"]: e["record"] for e in final.values()}
    uninterrupted = run_tasks(spectrum, configs(8, sleep=0.0), workers=1, progress=False).records
    assert [by_seed[seed] for seed in range(8)] == uninterrupted
    runs = runs_per_seed(log)
    assert all(runs[e["config"]["seed"]] == 1 for e in recorded.values())  # never run again once recorded
    assert sorted(runs) == list(range(8))


@pytest.mark.filterwarnings("ignore:Port 8787 is already in use")  # another LocalCluster on this machine
def test_a_dask_worker_that_dies_inside_a_task_loses_nothing(tmp_path):
    tasks = configs(3)
    tasks[1] |= {"die_once": str(tmp_path / "died")}
    result = run_tasks(spectrum, tasks, out=tmp_path, scheduler="local:2", progress=False)
    assert (tmp_path / "died").exists()  # the first attempt did end its worker
    assert (result.failed, result.exit_code) == (0, 0)
    assert result.records == run_tasks(spectrum, configs(3), workers=1, progress=False).records


def test_a_local_worker_that_dies_fails_the_tasks_left_and_resume_finishes_them(tmp_path):
    tasks = configs(4)
    tasks[0] |= {"die_once": str(tmp_path / "died")}
    broken = run_tasks(spectrum, tasks, out=tmp_path, workers=2, progress=False)
    assert broken.failed >= 1
    assert {e["error"].split(":")[0] for e in broken.entries if e["status"] == "failed"} == {"BrokenProcessPool"}
    done = run_tasks(spectrum, tasks, out=tmp_path, workers=2, resume=True, progress=False)
    assert (done.failed, done.resumed) == (0, 4 - broken.failed)
    assert done.records == run_tasks(spectrum, configs(4), workers=1, progress=False).records


def test_a_line_cut_short_by_a_kill_is_skipped_and_closed(tmp_path):
    run_tasks(spectrum, configs(2), out=tmp_path, workers=1, progress=False)
    with (tmp_path / RESULTS_FILE).open("a") as stream:
        stream.write('{"key": "cut", "sta')
    result = run_tasks(spectrum, configs(3), out=tmp_path, workers=1, resume=True, progress=False)
    assert (result.resumed, result.failed) == (2, 0)
    lines = (tmp_path / RESULTS_FILE).read_text().splitlines()
    assert lines[2] == '{"key": "cut", "sta'
    assert json.loads(lines[3])["config"]["seed"] == 2
    assert len(load_results(tmp_path)) == 3


def test_records_and_configs_must_be_json_and_tasks_importable(tmp_path):
    result = run_tasks(set, [{"a": 1}], workers=1, progress=False)  # a set is no JSON record
    assert result.entries[0]["error"] == "TypeError: Object of type set is not JSON serializable"
    with pytest.raises(TypeError, match="JSON-serialisable"):
        run_tasks(spectrum, [{"seed": 0, "n": 3, "path": tmp_path}], workers=1)
    with pytest.raises(TypeError, match="module-level"):
        run_tasks(lambda config: config, [{"a": 1}], workers=1)


def test_an_unreachable_scheduler_is_one_line_and_exit_2_within_15_s(tmp_path, capsys):
    start = time.monotonic()
    code = runner_tasks.main(["--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert time.monotonic() - start < 15
    assert code == 2
    assert err.startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:1")
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing touched before the scheduler answered


@pytest.mark.parametrize(("flags", "message"), [
    (["--workers", "0"], "--workers must be a whole number >= 1"),
    (["--workers", "2", "--scheduler", "local:2"], "not both"),
    (["--scheduler", "local:0"], "worker count N >= 1"),
    (["--scheduler", "no-port"], "cannot reach the Dask scheduler at no-port"),
    (["--workers", "two"], "invalid int value"),
])
def test_bad_runner_flags_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    assert runner_tasks.main(["--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert not (tmp_path / RESULTS_FILE).exists()


def test_the_flags_are_documented(capsys):
    with pytest.raises(SystemExit):
        runner_tasks.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--workers N", "--scheduler ADDRESS", "--resume", "local:N", "results.jsonl"):
        assert flag in text



class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_otherwise():
    plain = io.StringIO()
    progress = Progress(20, 10, stream=plain)
    progress.update(True, running=2)
    assert plain.getvalue() == ""  # a line every tenth of the tasks (2) or 30 s
    for _ in range(9):
        progress.update(False, running=1)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("tasks: 12/20 done, 1 failed, 1 running, ")
    assert lines[-1].startswith("tasks: 20/20 done, 1 failed, 1 running, ")
    assert lines[-1].endswith("about 0 s left")

    terminal = _Terminal()
    bar = Progress(4, 0, stream=terminal)
    bar.update(True, running=2)
    bar.close()
    assert "tasks:  25%" in terminal.getvalue()
    assert "1 failed, 2 running" in terminal.getvalue()


def test_an_error_is_one_line_with_its_cause():
    err = RuntimeError("Error during deserialization of the task graph. This frequently\noccurs if")
    err.__cause__ = ModuleNotFoundError("No module named 'tests'")
    assert one_line(err) == ("RuntimeError: Error during deserialization of the task graph. This frequently "
                             "(caused by ModuleNotFoundError: No module named 'tests')")
    assert one_line(KeyError()) == "KeyError"
