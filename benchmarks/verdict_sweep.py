"""Verdicts at the hard inputs: no proven statement may come out "contradicted".

Runs the θ_π analysis (local minimum, saddle or degenerate, as the theory predicts) and the θ_*
analysis at |p + q - 1| = 1e-1 .. 1e-10 on both sides, at p = q (five values) and with p or q
at 1e-6, each tied and untied, in float64 and float32 (232 runs), and prints the count of
confirmed / inconclusive / contradicted per band and dtype, then every run that was not confirmed
with the checks that were not passed and why.  Targets: no run contradicted, no run failed.  Exit 0:
both met; 1: a miss (MISS); 2: bad input (--d and --seq-len are checked as the theorem commands check
them); 130: interrupted (what finished is kept in --out; --resume runs the rest).
Each run is a task of verify/runner.py on one torch thread (about 4 s a run on 2 busy cores, 5x faster than
two threads): --workers N local processes (default: one per core) or --scheduler a Dask cluster;
--out FOLDER keeps each run in FOLDER/results.jsonl as it finishes.  Progress (runs done, failed, running,
an estimate of the time left) goes to stderr as the runs finish.
Run:  python benchmarks/verdict_sweep.py [--d 4] [--seq-len 8] [--workers N] [--out FOLDER [--resume]]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from _common import Target, entry, parser, positive_int, report

from numerics.markov import InvalidInputError
from verify.analysis import analyse_bigram, analyse_unigram
from verify.cli import (
    RESUME_WITHOUT_OUT,
    Config,
    check_folder,
    config_from,
    report_from_record,
    sweep_task,
    theorem_task,
)
from verify.cli import parser as theorem_parser
from verify.runner import RESULTS_FILE, add_runner_flags, run_with_args

VERDICTS = ("confirmed", "inconclusive", "contradicted")


def cases() -> list[tuple[str, float, float]]:
    """(band, p, q) for every hard input of the sweep."""
    out = [(f"|p+q-1|=1e-{k}", 0.5, 0.5 + side * 10.0**-k) for k in range(1, 11) for side in (1, -1)]
    out += [("p = q", v, v) for v in (1e-3, 0.1, 0.5, 0.9, 0.999)]
    out += [("p or q = 1e-6", p, q) for p, q in ((1e-6, 1e-6), (0.5, 1e-6), (1e-6, 0.5), (0.999999, 1e-6))]
    return out


def base_config(d: int, seq_len: int) -> Config:
    """The sweep's d and N validated by the theorem commands' own rules (sizes the dense Hessian can take)."""
    return config_from(theorem_parser("", {}).parse_args(["--d", str(d), "--seq-len", str(seq_len), "--device", "cpu"]))


def contradiction_target(verdicts: Counter) -> Target:
    """No run may be contradicted."""
    return Target("runs contradicted", verdicts["contradicted"], 0, at_least=False)


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__doc__, prog="python benchmarks/verdict_sweep.py")
    ap.add_argument("--d", type=positive_int, default=4, help="embedding dimension d of every run (default 4)")
    ap.add_argument("--seq-len", type=positive_int, default=8, help="sequence length N of every run (default 8)")
    ap.add_argument("--out", metavar="FOLDER",
                    help=f"write each run to FOLDER/{RESULTS_FILE} as it finishes (made if missing); without it "
                         "nothing is written")
    add_runner_flags(ap)
    return ap


def runs(base: Config) -> list[tuple[str, Config, object]]:
    """(band, config, analysis) of every run of the sweep."""
    return [(band, replace(base, p=p, q=q, tying=tying, dtype=dtype), analyse) for band, p, q in cases()
            for tying in (True, False) for dtype in ("float64", "float32")
            for analyse in (analyse_unigram, analyse_bigram)]


def tally(sweep: list[tuple[str, Config, object]], entries: list[dict]) -> tuple[Counter, list[str]]:
    """Counts per (band, dtype, verdict or "failed") and a line for each run that was not confirmed (the checks
    it did not pass and why, or its task's error), from the results-file entries of the sweep's runs."""
    counts: Counter = Counter()
    unconfirmed = []
    for (band, config, analyse), line in zip(sweep, entries):
        verdict = "failed" if line["status"] == "failed" else line["record"]["verdict"]
        counts[band, config.dtype, verdict] += 1
        if verdict == "confirmed":
            continue
        why = line["error"] if verdict == "failed" else "; ".join(
            f"{c.name}: {c.detail.split(';')[-1].strip()}" for c in report_from_record(line["record"]).checks
            if c.passed is not True)
        unconfirmed.append(f"{verdict:<12} p={config.p:<12g} q={config.q:<12g} tying={config.tying!s:<5} "
                           f"{config.dtype} {analyse.__name__}: {why}")
    return counts, unconfirmed


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base = base_config(args.d, args.seq_len)
    if args.resume and args.out is None:
        raise InvalidInputError(RESUME_WITHOUT_OUT)
    out = None if args.out is None else check_folder(args.out)
    sweep = runs(base)
    tasks = [theorem_task(analyse, analyse.__name__, config) for _, config, analyse in sweep]
    result = run_with_args(sweep_task, tasks, args, out=out)
    if result.interrupted:  # the runner said how to resume
        return result.exit_code
    counts, unconfirmed = tally(sweep, result.entries)
    shown = VERDICTS + (("failed",) if result.failed else ())
    bands = list(dict.fromkeys(band for band, *_ in cases()))
    print(f"\n{'inputs':<16} {'dtype':<8} " + " ".join(f"{v:>13}" for v in shown))
    for band in bands:
        for dtype in ("float64", "float32"):
            print(f"{band:<16} {dtype:<8} " + " ".join(f"{counts[band, dtype, v]:>13}" for v in shown))
    total = Counter(v for (_, _, v), n in counts.items() for _ in range(n))
    print("total: " + ", ".join(f"{v} {total[v]}" for v in shown))
    print("\nnot confirmed:\n" + "\n".join(unconfirmed))
    return report([contradiction_target(total), Target("runs failed", result.failed, 0, at_least=False)])


if __name__ == "__main__":
    entry(main)
