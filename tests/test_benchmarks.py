"""The benchmark scripts' command-line contract: --help explains every flag, bad input is one line and
exit 2 (no traceback), a missed target prints MISS with the target and exits 1, a met one OK and 0."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ("hessian", "population_loss", "verdict_sweep", "derivations")


def on_path() -> None:
    """benchmarks/ on sys.path, as ``python benchmarks/x.py`` puts it: the scripts import ``_common``."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))


def load(name: str) -> ModuleType:
    """A benchmark script as a module."""
    on_path()
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts() -> dict[str, ModuleType]:
    return {name: load(name) for name in SCRIPTS}


@pytest.fixture(scope="module")
def common() -> ModuleType:
    on_path()
    import _common

    return _common


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The scripts set torch's thread count (--threads); later tests get the session's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_0_and_explains_every_flag(name, scripts, capsys):
    ap = scripts[name].build_parser()
    undocumented = [a.option_strings for a in ap._actions if not a.help]
    assert undocumented == []
    with pytest.raises(SystemExit) as exit_:
        scripts[name].main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python benchmarks/{name}.py")
    assert all(a.option_strings[-1] in out for a in ap._actions)


BAD = {
    "hessian": [["--d", "-1"], ["--seq-len", "0"], ["--d", "four"], ["--repeats", "-2"], ["--lanczos-steps", "0"],
                ["--target", "nan"], ["--target", "-1"], ["--threads", "0"], ["--seq-len", "40"], ["--bogus"]],
    "population_loss": [["--d", "-1"], ["--seq-lens", "10", "-3"], ["--seq-lens", "x"], ["--repeats", "0"],
                        ["--chain", "nope"], ["--seq-lens", "40"], ["--target", "inf"], ["--threads", "-1"],
                        ["--dtype", "float16"]],
    "verdict_sweep": [["--d", "-1"], ["--seq-len", "0"], ["--seq-len", "1.5"], ["--seq-len", "40"], ["--d", "99"]],
    "derivations": [["--repeats", "-1"], ["--repeats", "0"], ["--repeats", "two"], ["--target", "0"]],
}


@pytest.mark.parametrize(("name", "argv"), [(name, argv) for name, cases in BAD.items() for argv in cases])
def test_bad_input_is_one_line_and_exit_2(name, argv, scripts, common, capsys):
    assert common.run(scripts[name].main, argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert captured.err.count("\n") == 1


COMMAND_LINE_BAD = [("hessian", ["--d", "-1"]), ("population_loss", ["--seq-lens", "x"]),
                    ("verdict_sweep", ["--seq-len", "0"]), ("derivations", ["--repeats", "-1"])]


@pytest.mark.parametrize(("name", "argv"), COMMAND_LINE_BAD)
def test_bad_input_from_the_command_line_has_no_traceback(name, argv):
    done = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *argv], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_hessian_missed_target_prints_miss_and_exits_1(scripts, common, capsys):
    argv = ["--d", "1", "--seq-len", "2", "--repeats", "1", "--lanczos-steps", "4", "--target", "1e9"]
    assert common.run(scripts["hessian"].main, argv) == 1
    out = capsys.readouterr().out
    assert "MISS Hessian speed-up over torch.func.hessian of the naive loss, wall clock" in out
    assert "MISS Hessian speed-up over torch.func.hessian of the naive loss, CPU time" in out
    assert "(target >= 1e+09x)" in out


def test_population_loss_missed_and_met_targets(scripts, common, capsys):
    assert common.run(scripts["population_loss"].main, ["--seq-lens", "2", "--repeats", "1", "--target", "1e9"]) == 1
    assert "MISS exact loss speed-up over the naive one at N=2" in capsys.readouterr().out
    assert common.run(scripts["population_loss"].main, ["--seq-lens", "2", "--repeats", "1", "--target", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert "OK   exact loss speed-up over the naive one at N=2" in out
    assert "MISS" not in out


def test_derivations_ratio_target(scripts, common, capsys):
    slow = scripts["derivations"].ratio_target(chain_rule_s=1.0, direct_s=2.0, limit=5.0)
    fast = scripts["derivations"].ratio_target(chain_rule_s=0.1, direct_s=2.0, limit=5.0)
    assert (slow.value, slow.met, fast.met) == (2.0, False, True)
    assert common.report([fast, slow]) == 1
    out = capsys.readouterr().out
    assert "OK   chain rule's speed-up over direct sp.diff: 20x (target >= 5x)" in out
    assert "MISS chain rule's speed-up over direct sp.diff: 2x (target >= 5x)" in out


def test_verdict_sweep_target_is_no_contradiction(scripts, common, capsys):
    target = scripts["verdict_sweep"].contradiction_target
    assert common.report([target(Counter(confirmed=230, inconclusive=2))]) == 0
    assert "OK   runs contradicted: 0 (target <= 0)" in capsys.readouterr().out
    assert common.report([target(Counter(confirmed=231, contradicted=1))]) == 1
    assert "MISS runs contradicted: 1 (target <= 0)" in capsys.readouterr().out


def test_verdict_sweep_checks_sizes_as_the_theorem_commands_do(scripts):
    config = scripts["verdict_sweep"].base_config(3, 5)
    assert (config.d, config.seq_len, config.device) == (3, 5, "cpu")


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(common, capsys, monkeypatch):
    monkeypatch.setattr(common, "PROGRESS_INTERVAL_S", 0.0)
    assert list(common.progress(["a", "b", "c"], "stage")) == ["a", "b", "c"]
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0].strip() for line in lines] == ["stage: 1/3", "stage: 2/3", "stage: 3/3"]


def test_progress_lines_are_throttled(common, capsys, monkeypatch):
    monkeypatch.setattr(common, "PROGRESS_INTERVAL_S", 3600.0)
    assert list(common.progress(range(50), "stage")) == list(range(50))
    assert [line.split(",")[0].strip() for line in capsys.readouterr().err.splitlines()] == ["stage: 50/50"]


def test_threads_apply_to_torch(common):
    assert common.set_threads(1) == 1 == torch.get_num_threads()
    assert common.set_threads(None) == 1
