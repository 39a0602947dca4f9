"""The commands as processes: ``python -m …`` ends through ``verify.cli.exit_now``, which skips the
interpreter's teardown; nothing printed may be lost and the exit code must survive."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = "from verify.cli import exit_now; print('x' * 200_000); exit_now(3)"


def test_main_command_as_a_process_prints_whole_json_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "verify.theorem_local_min", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verdict"] == "confirmed"
    assert done.stderr == ""


def test_exit_now_flushes_buffered_output_and_keeps_the_code():
    done = subprocess.run([sys.executable, "-c", SNIPPET], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout == "x" * 200_000 + "\n"


def test_exit_now_with_the_reader_gone_has_no_traceback():
    """The reader of stdout leaves before the final flush (``… | head`` that stopped early): the buffered
    line cannot be delivered, the code is kept and stderr stays clean."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # keep the line in the buffer
    snippet = "from verify.cli import exit_now; print('x' * 100); exit_now(3)"
    process = subprocess.Popen([sys.executable, "-c", snippet], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    assert process.wait(timeout=120) == 3
    assert b"Traceback" not in process.stderr.read()


def test_closed_stdout_keeps_the_exit_code():
    """``… >&-``: Python starts with sys.stdout = None; bad input still exits 2, with its line on stderr."""
    done = subprocess.run([sys.executable, "-m", "verify.theorem_local_min", "--p", "2"], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 2
    assert done.stderr.startswith("error: p must lie strictly between 0 and 1") and "Traceback" not in done.stderr


def test_sweep_json_with_merged_streams_parses():
    done = subprocess.run([sys.executable, "-m", "verify.theorem_local_min", "--sweep", "2", "--json"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert done.returncode in (0, 3) and len(json.loads(done.stdout)) == 2
