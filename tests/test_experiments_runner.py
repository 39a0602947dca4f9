"""python -m verify.experiments on the task runner (verify/runner.py): the same records on one and two workers,
outputs built from the results file (a resumed or partial run, --report-only), failed and interrupted runs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from numerics.markov import MarkovChain, SecondOrderChain, preset
from numerics.train import TrainConfig
from numerics.train import train as real_train
from tests.runner_tasks import configs, default_sigint, spectrum
from verify import experiments, runner
from verify.runner import RESULTS_FILE, load_results

ROOT = Path(__file__).resolve().parents[1]
#: 4 short training tasks: the tying experiment's 4 settings, one seed each, 4 steps at N = 8.
TYING = ["tying", "--seeds", "1", "--steps", "4", "--seq-len", "8", "--json"]


def run(argv: list[str], out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = experiments.main([*argv, "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def records(folder: Path) -> dict[str, str]:
    """The records of a results file by the task's config (without its output folder), as JSON text: NaN
    compares equal to itself there."""
    out = {}
    for entry in load_results(folder).values():
        config = {k: v for k, v in entry["config"].items() if k != "checkpoints"}
        out[json.dumps(config, sort_keys=True)] = json.dumps(entry["record"], sort_keys=True)
    return out


def counting_train(monkeypatch, *, fail_seed_of_untied: int | None = None, stop_at: int | None = None) -> list:
    """Replace the training the tasks call (in this process: --workers 1) by one that counts its calls, fails
    the untied runs of one seed, or raises KeyboardInterrupt at call ``stop_at`` (a Ctrl-C mid-sweep)."""
    calls = []

    def train(source, config, **kwargs):
        calls.append(config)
        if stop_at is not None and len(calls) == stop_at:
            raise KeyboardInterrupt
        if not config.tying and config.seed == fail_seed_of_untied:
            raise RuntimeError("diverged on purpose\nsecond line")
        return real_train(source, config, **kwargs)

    monkeypatch.setattr(experiments, "train", train)
    return calls


def test_configs_are_json_and_read_back_to_the_same_sources_and_runs():
    for source in (MarkovChain(0.5, 0.8), SecondOrderChain.lagged(0.2, 0.3), preset("sticky5")):
        spec = json.loads(json.dumps(experiments.source_json(source)))
        again = experiments.source_from_json(spec)
        assert type(again) is type(source)
        assert experiments.reference_entropies(again) == experiments.reference_entropies(source)
    config = TrainConfig(seq_len=8, dtype=torch.float32, seed=3, memory=2)
    assert experiments.train_config_from_json(json.loads(json.dumps(experiments.train_config_json(config)))) == config


@pytest.mark.parametrize("argv", [TYING, ["escape", "--seeds", "1", "--steps", "4", "--seq-len", "6", "--json"]],
                         ids=["tying", "escape"])
def test_one_and_two_workers_give_the_same_records_and_outputs(argv, tmp_path, capsys):
    one = run(argv, tmp_path / "one", capsys, "--workers", "1")
    two = run(argv, tmp_path / "two", capsys, "--workers", "2")
    assert "in this process" in one[2] and "on 2 local worker processes" in two[2]
    assert one[0] == two[0]
    name = argv[0]
    mine = records(tmp_path / "one" / name)
    assert len(mine) == {"tying": 4, "escape": 2}[name] and mine == records(tmp_path / "two" / name)
    assert one[1] == two[1]  # the JSON summary, as text: a NaN (|cos(e, w)| at e = 0) equals itself there
    summaries = [(tmp_path / folder / name / "summary.json").read_bytes() for folder in ("one", "two")]
    assert summaries[0] == summaries[1]
    if name == "escape":  # the checkpoints, written by each task into its output folder
        saved = [torch.load(tmp_path / folder / "escape/params.pt") for folder in ("one", "two")]
        assert saved[0].keys() == saved[1].keys() == {"adamw, 1 layer, W=full", "sgd, 1 layer, W=full"}
        assert all(torch.equal(saved[0][o][0][at][k], saved[1][o][0][at][k])
                   for o in saved[0] for at in saved[0][o][0] for k in saved[0][o][0][at])


def test_a_stopped_run_resumes_to_the_outputs_of_an_uninterrupted_one_running_only_what_is_missing(
        tmp_path, capsys, monkeypatch):
    whole = run(TYING, tmp_path / "whole", capsys, "--workers", "1")
    calls = counting_train(monkeypatch, stop_at=3)
    code, out, err = run(TYING, tmp_path / "stopped", capsys, "--workers", "1")
    assert (code, out) == (130, "")
    assert "interrupted: 2/4 tasks recorded" in err and "--resume" in err and "--report-only" in err
    assert not (tmp_path / "stopped/tying/summary.json").exists()
    assert len(load_results(tmp_path / "stopped/tying")) == 2

    calls = counting_train(monkeypatch)  # the real training again, counted
    code, out, err = run(TYING, tmp_path / "stopped", capsys, "--workers", "1", "--resume")
    assert len(calls) == 2 and "running 2 tasks in this process (2 already recorded" in err
    assert (code, json.loads(out)) == (whole[0], json.loads(whole[1]))
    summaries = [(tmp_path / folder / "tying/summary.json").read_bytes() for folder in ("stopped", "whole")]
    assert summaries[0] == summaries[1]


def test_report_only_builds_the_outputs_from_a_partial_results_file(tmp_path, capsys):
    whole = run(TYING, tmp_path, capsys, "--workers", "1")
    summary = json.loads(whole[1])
    assert summary["missing"] == 0
    again = run(TYING, tmp_path, capsys, "--report-only")
    assert (again[0], json.loads(again[1])) == (whole[0], summary)
    assert "running" not in again[2]  # nothing trained

    results = tmp_path / "tying" / RESULTS_FILE
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])  # the last line cut short by a kill
    code, out, err = run(TYING, tmp_path, capsys, "--report-only")
    partial = json.loads(out)
    assert code == 1 and partial["missing"] == 1
    assert sum(row["seeds"] for row in partial["rows"]) == 3
    assert f"1 of 4 runs have no record in {results}" in err
    assert json.loads((tmp_path / "tying/summary.json").read_text()) == partial

    code, _, err = run(["tying", "--seeds", "1", "--steps", "5", "--seq-len", "8"], tmp_path, capsys, "--report-only")
    assert code == 2 and err.startswith("error: --report-only: no run of these flags") and err.count("\n") == 1


def test_a_failing_run_is_recorded_the_others_go_on_and_the_exit_code_is_1(tmp_path, capsys, monkeypatch):
    counting_train(monkeypatch, fail_seed_of_untied=0)
    code, out, err = run(TYING, tmp_path, capsys, "--workers", "1")
    assert code == 1
    assert "2/4 tasks failed (first: RuntimeError: diverged on purpose)" in err
    failed = [e for e in load_results(tmp_path / "tying").values() if e["status"] == "failed"]
    assert [e["error"] for e in failed] == ["RuntimeError: diverged on purpose"] * 2
    summary = json.loads(out)
    assert summary["missing"] == 2 and [row["variant"] for row in summary["rows"]] == ["tied, 1 layer"] * 2

    calls = counting_train(monkeypatch)
    code, out, _ = run(TYING, tmp_path, capsys, "--workers", "1", "--resume")
    assert len(calls) == 2 and all(not config.tying for config in calls)  # only the failed runs again
    whole = run(TYING, tmp_path / "whole", capsys, "--workers", "1")
    assert json.loads(out)["missing"] == 0
    assert (code, json.loads(out)) == (whole[0], json.loads(whole[1]))  # as if nothing had failed


def test_ctrl_c_on_the_command_keeps_finished_runs_under_keys_found_from_this_process(tmp_path, capsys):
    """The command as users start it (``python -m``, two workers), stopped by SIGINT after a run finished; the
    same flags here (--report-only) find its records: the task keys do not depend on how it started."""
    # runs of a few seconds each: the signal, sent once the first run is recorded, always finds others running
    argv = ["tying", "--seeds", "1", "--steps", "1500", "--seq-len", "16", "--out", str(tmp_path)]
    command = subprocess.Popen([sys.executable, "-m", "verify.experiments", *argv, "--workers", "2"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    results = tmp_path / "tying" / RESULTS_FILE
    deadline = time.monotonic() + 90
    while not (results.exists() and results.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    command.send_signal(signal.SIGINT)
    out, err = command.communicate(timeout=60)
    kept = len(load_results(tmp_path / "tying"))
    assert (command.returncode, out) == (130, ""), err
    assert "Traceback" not in err and "run the same command with --resume" in err and "--report-only" in err
    assert 1 <= kept < 4
    assert experiments.main([*argv, "--report-only", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["missing"] == 4 - kept


def test_workers_are_spawned_once_cuda_is_initialised(monkeypatch):
    """On a GPU the command reads the free GPU memory (``check_feasible``) before the pool starts, which
    initialises CUDA; forked workers could not use it, and every run would fail.  The spawned pool must then
    run the tasks for real: fresh interpreters that import the task by name give the in-process records."""
    assert runner._start_method() == ("fork" if sys.platform == "linux" else None)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert runner._start_method() == "spawn"
    work = configs(3)
    spawned = runner.run_tasks(spectrum, work, workers=2, progress=False)
    here = runner.run_tasks(spectrum, work, workers=1, progress=False)
    assert [e["status"] for e in spawned.entries] == ["ok"] * 3
    assert [e["record"] for e in spawned.entries] == [e["record"] for e in here.entries]
